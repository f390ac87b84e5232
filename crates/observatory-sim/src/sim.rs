//! The simulation: many peers, one virtual clock, a simulated network.
//!
//! Every peer is a real [`FlowState`] driven by the real sans-IO state machines of a peer
//! process: the anti-entropy [`Protocol`], the [`PeerBook`] (dials, redial backoff,
//! shunning) and the [`CommitQueue`] (group commit: which acks wait for which flush). All
//! IO is simulated: messages are encoded with the real wire format (for their size) and
//! delivered after a sampled delay, unless the network model loses them; a dial the book
//! asks for succeeds at once when both peers are up, linked by the topology and not cut
//! apart; a peer's disk is a second `FlowState` that takes the peer's state at every flush
//! the commit queue asks for. Peers know their topology links from the start (the book's
//! lists of peers for other peers are not delivered, so a random topology stays as the
//! scenario says). Everything happens in the order of
//! a single event queue keyed by `(virtual time, order of scheduling)`, and every random
//! choice comes from RNGs seeded by the run's seed, so a run is reproducible bit for bit.
//!
//! An oracle keeps the truth: the state every origin really wrote. The checks in
//! [`crate::check`] compare peers against it while the run goes on and at the end.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use observatory_core::commit::{Changes, CommitConfig, CommitOutput, CommitQueue, Write};
use observatory_core::{
    Edge, Event, FlowState, Limits, MergeError, MergeOutcome, NodeName, Origin, OriginDelta, Resolution,
    Settings, Transfer,
};
use observatory_sync::protocol::{Action, Message, Protocol, ProtocolConfig, Replica, merge_pages_into};
use observatory_sync::wire::{self, MeshMessage};
use observatory_sync::{BookOutput, PeerBook, PeerBookConfig};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::alerting::{self, Alerting, PeerAlerting};
use crate::check::{self, Violation};
use crate::network::mix_seed;
use crate::report::{self, FaultMark, Report};
use crate::scenario::{AckMode, Delay, Disk, Fault, PeerSet, Scenario, Timestamps};

/// Virtual time at the start: ms since the Unix epoch (2027-01-15 08:00 UTC, on the hour).
pub const START_MS: i64 = 1_800_000_000_000;

/// Peers are named by their index in order of creation.
pub type PeerIx = u32;

/// How far a run has got, for progress displays.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Simulated milliseconds since the start.
    pub elapsed_ms: i64,
    /// The latest the run may go on to (it usually ends earlier).
    pub horizon_ms: i64,
    /// Peers up.
    pub peers_up: usize,
    /// Of those, peers whose global view is exact.
    pub peers_converged: usize,
}

#[derive(Debug)]
enum What {
    /// A message as its wire bytes (shared by duplicates), decoded on delivery.
    Deliver {
        from: PeerIx,
        to: PeerIx,
        link_generation: u64,
        bytes: std::rc::Rc<[u8]>,
    },
    Tick(PeerIx),
    Ingest,
    Fault(usize),
    LinkTimeout {
        a: PeerIx,
        b: PeerIx,
        link_generation: u64,
    },
    Sample,
    Check,
    /// A peer's evaluator or alert sender is due.
    Evaluate(PeerIx),
    /// The oracle evaluates the truth.
    OracleEvaluate,
    /// A batch of alerts reaches the sink.
    SinkDeliver {
        from: PeerIx,
        process: u64,
        id: u64,
        alerts: Vec<observatory_objectives::OutAlert>,
    },
}

#[derive(Debug)]
struct Scheduled {
    at_ms: i64,
    order: u64,
    what: What,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at_ms, self.order) == (other.at_ms, other.order)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Reversed, so that the max-heap pops the earliest first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at_ms, other.order).cmp(&(self.at_ms, self.order))
    }
}

/// One simulated peer process.
#[derive(Debug)]
pub(crate) struct SimPeer {
    pub(crate) up: bool,
    /// Decommissioning: takes no events, leaves once its writes are held elsewhere.
    leaving: bool,
    /// Left for good (removed, or crashed and never restarted counts as down, not left).
    left: bool,
    /// Which settings it runs with (index into the truths).
    pub(crate) group: usize,
    /// Bumped when its disk is lost: a new identity.
    generation: u32,
    incarnation: u32,
    skew_ms: i64,
    pub(crate) state: FlowState,
    protocol: Protocol<PeerIx>,
    /// The peers it knows and when to dial them (peers are named by index, which is
    /// their address too).
    book: PeerBook<PeerIx, PeerIx>,
    /// Group commit of its writer.
    commit: CommitQueue<()>,
    /// What it has flushed (only kept when the scenario crashes peers).
    disk: Option<FlowState>,
    tick_at_ms: Option<i64>,
    /// Its version vector may have changed since the last convergence sample.
    dirty: bool,
    pub(crate) converged_since_ms: Option<i64>,
    ingest_carry: f64,
    ingests: bool,
    /// Per flow of the workload: the fractions of an event and of an error carried to
    /// the next turn.
    flow_carry: Vec<(f64, f64)>,
    /// Its evaluator and alert sender, when the scenario has objectives.
    pub(crate) alerting: Option<PeerAlerting>,
}

impl SimPeer {
    fn now(&self, true_ms: i64) -> i64 {
        true_ms + self.skew_ms
    }

    fn origin(&self) -> Origin {
        self.state.local_origin().cloned().expect("every simulated peer has a local origin")
    }
}

/// A flow of the workload as it runs now (the timeline's `traffic` changes it).
#[derive(Debug, Clone)]
struct RunningFlow {
    edge: Edge,
    rate: f64,
    error_ratio: f64,
    latency: Delay,
}

#[derive(Debug, Clone)]
struct Link {
    up: bool,
    generation: u64,
}

/// The protocol's view of a simulated peer's state: merges go through the commit queue,
/// as a peer's go through its writer. The simulated disk takes the whole state at every
/// flush, so a merge hands the queue only its origins (enough to ask for a flush).
struct SimReplica<'a> {
    state: &'a mut FlowState,
    commit: &'a mut CommitQueue<()>,
}

impl Replica for SimReplica<'_> {
    fn read<T>(&self, read: impl FnOnce(&FlowState) -> T) -> T {
        read(self.state)
    }

    fn merge_pages(
        &mut self,
        now_ms: i64,
        pages: Vec<OriginDelta>,
        transfer: &mut Transfer,
    ) -> Result<Vec<MergeOutcome>, MergeError> {
        let origins: Vec<Origin> = pages.iter().map(|p| p.origin.clone()).collect();
        let outcomes = merge_pages_into(self.state, now_ms, pages, transfer)?;
        let mut changes = Changes::default();
        for (origin, outcome) in origins.into_iter().zip(&outcomes) {
            if !outcome.changed.is_empty() || outcome.advanced {
                let seq = self.state.origin_seq(&origin);
                let changed_at_ms = self.state.origin_changed_at_ms(&origin);
                changes.origins.push((origin, seq, changed_at_ms));
            }
        }
        self.commit.persist(changes);
        Ok(outcomes)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Totals {
    pub(crate) messages_sent: u64,
    pub(crate) messages_delivered: u64,
    pub(crate) messages_lost: u64,
    pub(crate) messages_duplicated: u64,
    pub(crate) messages_oversized: u64,
    pub(crate) messages_undeliverable: u64,
    pub(crate) bytes_sent: u64,
    pub(crate) hello_bytes_sent: u64,
    pub(crate) max_message_bytes: u64,
    pub(crate) rounds: u64,
    pub(crate) events_accepted: u64,
    pub(crate) events_rejected: BTreeMap<String, u64>,
}

/// A running simulation. Build it with [`Simulation::new`], then [`Simulation::run`].
#[derive(Debug)]
pub struct Simulation {
    scenario: Scenario,
    seed: u64,
    faults: Vec<(i64, Fault)>,
    net_rng: StdRng,
    load_rng: StdRng,
    pub(crate) now_ms: i64,
    queue: BinaryHeap<Scheduled>,
    order: u64,
    pub(crate) peers: Vec<SimPeer>,
    neighbours: Vec<BTreeSet<PeerIx>>,
    links: BTreeMap<(PeerIx, PeerIx), Link>,
    /// Per peer, its group while the network is cut; peers in no group (and peers added
    /// during the cut) share the group after the named ones.
    partition: Option<Vec<usize>>,
    /// Groups named by the current partition.
    partition_groups: usize,
    settings: Vec<Settings>,
    edges: Vec<Edge>,
    /// Per settings group, every change every origin made (the oracle).
    pub(crate) truth: Vec<FlowState>,
    /// Which peer writes each origin, and with which settings.
    pub(crate) origin_writer: BTreeMap<Origin, (PeerIx, usize)>,
    /// Per settings group, per origin: the seq a converged peer holds (the truth for
    /// origins whose writer is up; otherwise the most any up peer holds).
    target: Vec<BTreeMap<Origin, u64>>,
    target_changed: bool,
    /// Origins whose events may be lost by design (see [`crate::check`]).
    pub(crate) lossy_origins: BTreeSet<Origin>,
    pub(crate) totals: Totals,
    pub(crate) violations: Vec<Violation>,
    check_cursor: usize,
    last_write_ms: i64,
    last_fault_ms: i64,
    horizon_ms: i64,
    all_converged_since_ms: Option<i64>,
    pub(crate) series: Vec<(i64, f64)>,
    pub(crate) marks: Vec<FaultMark>,
    keep_disks: bool,
    sample_ms: i64,
    ended: bool,
    flows: Vec<RunningFlow>,
    flow_rng: StdRng,
    /// Objectives, the oracle's evaluation of them and the sink, when the scenario has
    /// objectives.
    pub(crate) alerting: Option<Alerting>,
    sink_rng: StdRng,
    /// Peers whose final objective states were compared with the oracle's.
    pub(crate) compared_peers: usize,
}

const NODE_NAME_BYTES_MAX: usize = 256;
/// Cells one sampled check (one per simulated second) may visit: bounds the cost of
/// checking during the run. Every up peer is checked in full at the end.
const CHECK_CELLS_PER_SAMPLE: usize = 50_000;

fn link_key(a: PeerIx, b: PeerIx) -> (PeerIx, PeerIx) {
    (a.min(b), a.max(b))
}

/// The limits of every simulated peer: a peer's defaults.
fn limits() -> Limits {
    observatory_config::Config::defaults().core_limits()
}

/// The settings of peers in `different_settings`: the finest resolution is 5 s, so their
/// fingerprint differs from the default one.
fn different_settings() -> Settings {
    let r = Resolution::bucketed;
    Settings::new(vec![r("5s", 5, 3600), r("1m", 60, 48 * 3600), r("1h", 3600, 35 * 24 * 3600)])
        .expect("valid resolutions")
}

impl Simulation {
    /// Sets up the peers, links and timeline of `scenario` with `seed`.
    pub fn new(scenario: &Scenario, seed: u64) -> Self {
        let faults: Vec<(i64, Fault)> = scenario
            .faults()
            .into_iter()
            .map(|(at, fault)| (START_MS + at.as_millis() as i64, fault))
            .collect();
        let keep_disks = faults.iter().any(|(_, f)| matches!(f, Fault::Crash(_)));
        let interval_ms = scenario.sync.interval.as_millis() as i64;
        let mut load_rng = StdRng::seed_from_u64(mix_seed(seed, 1, 0));
        let edges = pick_edges(scenario.workload.services, scenario.workload.edges, &mut load_rng);
        let workload_end_ms =
            START_MS + (scenario.workload.start + scenario.workload.duration).as_millis() as i64;
        let last_fault_ms = faults.last().map_or(START_MS, |(at, _)| *at);
        let horizon_ms = workload_end_ms.max(last_fault_ms) + scenario.quiesce.max.as_millis() as i64;
        let mut sim = Simulation {
            scenario: scenario.clone(),
            seed,
            faults,
            net_rng: StdRng::seed_from_u64(mix_seed(seed, 2, 0)),
            load_rng,
            now_ms: START_MS,
            queue: BinaryHeap::new(),
            order: 0,
            peers: Vec::new(),
            neighbours: Vec::new(),
            links: BTreeMap::new(),
            partition: None,
            partition_groups: 0,
            settings: vec![
                observatory_config::Config::defaults().settings().expect("the default settings are valid"),
                different_settings(),
            ],
            edges,
            truth: Vec::new(),
            origin_writer: BTreeMap::new(),
            target: vec![BTreeMap::new(), BTreeMap::new()],
            target_changed: true,
            lossy_origins: BTreeSet::new(),
            totals: Totals::default(),
            violations: Vec::new(),
            check_cursor: 0,
            last_write_ms: START_MS,
            last_fault_ms: START_MS,
            horizon_ms,
            all_converged_since_ms: None,
            series: Vec::new(),
            marks: Vec::new(),
            keep_disks,
            sample_ms: (interval_ms / 10).clamp(1, 100),
            ended: false,
            flows: scenario
                .workload
                .flows
                .iter()
                .map(|flow| RunningFlow {
                    edge: flow_edge(flow),
                    rate: flow.rate,
                    error_ratio: flow.error_ratio,
                    latency: flow.latency.clone().unwrap_or_else(|| scenario.workload.latency.clone()),
                })
                .collect(),
            flow_rng: StdRng::seed_from_u64(mix_seed(seed, 5, 0)),
            alerting: (!scenario.objectives.is_empty()).then(|| {
                let config = observatory_config::Config::defaults();
                let eval = observatory_objectives::EvalConfig {
                    eval_interval_ms: scenario.alerting.eval_interval.as_millis() as i64,
                    ..config.evaluation()
                };
                let sender = observatory_objectives::SenderConfig {
                    targets: 1,
                    resend_interval_ms: scenario.alerting.resend_interval.as_millis() as i64,
                    ..config.sender()
                };
                Alerting::new(scenario.objective_set().expect("validated"), eval, sender)
            }),
            sink_rng: StdRng::seed_from_u64(mix_seed(seed, 6, 0)),
            compared_peers: 0,
        };
        sim.truth = sim.settings.iter().map(|s| FlowState::new(s.clone(), limits())).collect();
        let different: BTreeSet<usize> = scenario
            .different_settings
            .as_ref()
            .map(|set| set.resolve(scenario.peers).expect("validated").into_iter().collect())
            .unwrap_or_default();
        let ingesters: BTreeSet<usize> = match &scenario.workload.ingesters {
            set if *set == PeerSet::all() => (0..scenario.peers_max()).collect(),
            set => set.resolve(scenario.peers).expect("validated").into_iter().collect(),
        };
        for ix in 0..scenario.peers {
            sim.add_peer(usize::from(different.contains(&ix)), ingesters.contains(&ix));
        }
        sim.wire_topology(0..scenario.peers);
        for (i, (at, _)) in sim.faults.clone().iter().enumerate() {
            sim.schedule(*at, What::Fault(i));
        }
        sim.schedule(START_MS, What::Ingest);
        sim.schedule(START_MS, What::Sample);
        sim.schedule(START_MS + 1000, What::Check);
        if sim.alerting.is_some() {
            sim.schedule(START_MS, What::OracleEvaluate);
        }
        sim
    }

    fn schedule(&mut self, at_ms: i64, what: What) {
        self.order += 1;
        self.queue.push(Scheduled { at_ms, order: self.order, what });
    }

    fn interval_ms(&self) -> i64 {
        self.scenario.sync.interval.as_millis() as i64
    }

    fn protocol_for(&self, ix: PeerIx, generation: u32, incarnation: u32, group: usize) -> Protocol<PeerIx> {
        let config = ProtocolConfig {
            sync_interval_ms: self.interval_ms(),
            fanout: self.scenario.sync.fanout,
            message_bytes_max: self.scenario.sync.message_bytes_max,
            ..observatory_config::Config::defaults().protocol()
        };
        let settings = &self.settings[group];
        let seed =
            mix_seed(self.seed, 3 + u64::from(ix), (u64::from(generation) << 32) | u64::from(incarnation));
        let mut protocol = Protocol::new(config, settings.fingerprint(), settings.canonical(), seed);
        if let Some(alerting) = &self.alerting {
            protocol.set_objectives(alerting.fingerprint.clone());
        }
        protocol
    }

    /// A new process's peer book: it knows its topology links and dials them at once.
    fn book_for(&self, ix: PeerIx) -> PeerBook<PeerIx, PeerIx> {
        let network = &self.scenario.network;
        let config = PeerBookConfig {
            redial_min_ms: network.redial_min.as_millis() as i64,
            redial_max_ms: network.redial_max.as_millis() as i64,
            ..observatory_config::Config::defaults().peer_book()
        };
        let mut book = PeerBook::new(config, ix);
        let now = self.peers.get(ix as usize).map_or(self.now_ms, |p| p.now(self.now_ms));
        for &other in self.neighbours.get(ix as usize).into_iter().flatten() {
            book.learn_pinned(now, other, vec![other]);
        }
        book
    }

    fn commit_queue(&self) -> CommitQueue<()> {
        CommitQueue::new(CommitConfig {
            ack: self.scenario.ingest.ack,
            flush_interval_ms: self.scenario.ingest.flush_interval.as_millis() as i64,
            ..observatory_config::Config::defaults().commit()
        })
    }

    fn origin_name(ix: PeerIx, generation: u32) -> String {
        if generation == 0 { format!("p{ix}") } else { format!("p{ix}.{generation}") }
    }

    /// Starts a new peer (not yet linked to anyone).
    fn add_peer(&mut self, group: usize, ingests: bool) -> PeerIx {
        let ix = self.peers.len() as PeerIx;
        let mut state = FlowState::new(self.settings[group].clone(), limits());
        let origin = Origin::new(&Self::origin_name(ix, 0), 1);
        state.set_local(origin.clone());
        self.origin_writer.insert(origin, (ix, group));
        let disk = self.keep_disks.then(|| FlowState::new(self.settings[group].clone(), limits()));
        let protocol = self.protocol_for(ix, 0, 1, group);
        let book = self.book_for(ix);
        let commit = self.commit_queue();
        self.peers.push(SimPeer {
            up: true,
            leaving: false,
            left: false,
            group,
            generation: 0,
            incarnation: 1,
            skew_ms: 0,
            state,
            protocol,
            book,
            commit,
            disk,
            tick_at_ms: None,
            dirty: true,
            converged_since_ms: None,
            ingest_carry: 0.0,
            ingests,
            flow_carry: vec![(0.0, 0.0); self.flows.len()],
            alerting: self.alerting.as_mut().map(Alerting::for_process),
        });
        self.neighbours.push(BTreeSet::new());
        self.schedule_tick(ix);
        self.schedule_alerting(ix);
        ix
    }

    /// Links the peers in `new` by the topology (to each other and to the peers before
    /// them), and dials every new link at once.
    fn wire_topology(&mut self, new: std::ops::Range<usize>) {
        let mut pairs = Vec::new();
        match self.scenario.topology.degree {
            None => {
                for b in new.clone() {
                    for a in 0..b {
                        if !self.peers[a].left {
                            pairs.push((a as PeerIx, b as PeerIx));
                        }
                    }
                }
            }
            Some(degree) => {
                let mut rng = StdRng::seed_from_u64(mix_seed(self.seed, 4, new.start as u64));
                for b in new.clone() {
                    let mut others: Vec<usize> =
                        (0..new.end).filter(|&a| a != b && !self.peers[a].left).collect();
                    others.shuffle(&mut rng);
                    for a in others.into_iter().take(degree) {
                        pairs.push((a as PeerIx, b as PeerIx));
                    }
                }
            }
        }
        for (a, b) in pairs {
            if self.neighbours[a as usize].insert(b) {
                self.neighbours[b as usize].insert(a);
                self.links.insert(link_key(a, b), Link { up: false, generation: 0 });
                // Both learn the other and dial it at once.
                for (x, y) in [(a, b), (b, a)] {
                    let peer = &mut self.peers[x as usize];
                    let now = peer.now(self.now_ms);
                    peer.book.learn_pinned(now, y, vec![y]);
                    peer.tick_at_ms = None;
                    self.schedule_tick(x);
                }
            }
        }
    }

    fn reachable(&self, a: PeerIx, b: PeerIx) -> bool {
        self.partition.as_ref().is_none_or(|groups| groups[a as usize] == groups[b as usize])
    }

    /// Schedules the peer's next tick at its protocol's timeout, unless one is pending:
    /// the pending tick asks again, and nothing makes the protocol need work before its
    /// next round, which a pending tick is at (hellos are re-sent five intervals late).
    fn schedule_tick(&mut self, ix: PeerIx) {
        let peer = &self.peers[ix as usize];
        if !peer.up || peer.tick_at_ms.is_some() {
            return;
        }
        let wanted = peer.protocol.poll_timeout().min(peer.book.poll_timeout());
        let at_ms = if wanted == i64::MIN { self.now_ms } else { (wanted - peer.skew_ms).max(self.now_ms) };
        self.peers[ix as usize].tick_at_ms = Some(at_ms);
        self.schedule(at_ms, What::Tick(ix));
    }

    /// Sends what the peer's protocol queued and carries out its actions.
    ///
    /// It does not reschedule the peer's tick: only ticks and new connections move the
    /// protocol's next timeout earlier (a message never needs work sooner than the next
    /// round, which is always at most one interval away).
    fn drain(&mut self, ix: PeerIx) {
        while let Some((to, message)) = self.peers[ix as usize].protocol.poll_transmit() {
            self.send(ix, to, message);
        }
        while let Some(action) = self.peers[ix as usize].protocol.poll_action() {
            match action {
                Action::Shun { peer, until_ms } => {
                    let now = self.peers[ix as usize].now(self.now_ms);
                    self.peers[ix as usize].book.shun(now, peer, until_ms);
                    self.link_down(ix, peer);
                }
            }
        }
        while let Some(output) = self.peers[ix as usize].book.poll_output() {
            match output {
                BookOutput::Dial { peer, .. } => self.dial(ix, peer),
                BookOutput::Disconnect(peer) => self.link_down(ix, peer),
                BookOutput::Forgotten(peer) => self.peers[ix as usize].protocol.forget(&peer),
                // Peers know their links from the start; the simulated disk keeps no book.
                BookOutput::Gossip { .. } | BookOutput::Save(_) | BookOutput::DialAddress(_) => {}
            }
        }
    }

    fn send(&mut self, from: PeerIx, to: PeerIx, message: Message) {
        let Some(link) = self.links.get(&link_key(from, to)).filter(|l| l.up) else {
            self.totals.messages_undeliverable += 1;
            return;
        };
        let link_generation = link.generation;
        let hello = matches!(message, Message::Hello(_));
        let encoded: std::rc::Rc<[u8]> = wire::encode(message).into();
        let bytes = encoded.len();
        self.totals.messages_sent += 1;
        self.totals.bytes_sent += bytes as u64;
        if hello {
            self.totals.hello_bytes_sent += bytes as u64;
        }
        self.totals.max_message_bytes = self.totals.max_message_bytes.max(bytes as u64);
        self.peers[from as usize].protocol.note_bytes(&to, false, bytes);
        if bytes > self.scenario.sync.message_bytes_max {
            // The real codec refuses to write it; the receiver never sees it.
            self.totals.messages_oversized += 1;
            return;
        }
        let network = &self.scenario.network;
        if self.net_rng.random_bool(network.loss) {
            self.totals.messages_lost += 1;
            return;
        }
        let copies = if self.net_rng.random_bool(network.duplicate) { 2 } else { 1 };
        let delays_ms: Vec<i64> = (0..copies)
            .map(|_| {
                let delay_ms = network.latency.sample_ms(&mut self.net_rng, 0);
                let held_ms = if self.net_rng.random_bool(network.reorder) {
                    self.net_rng.random_range(0..=network.reorder_delay.as_millis() as i64)
                } else {
                    0
                };
                delay_ms + held_ms
            })
            .collect();
        self.totals.messages_duplicated += copies - 1;
        for delay_ms in delays_ms {
            let bytes = encoded.clone();
            self.schedule(self.now_ms + delay_ms, What::Deliver { from, to, link_generation, bytes });
        }
    }

    /// A connection comes up, unless one side's book refuses it (a shunned peer).
    fn link_up(&mut self, a: PeerIx, b: PeerIx) {
        let mut refused = false;
        for (x, y) in [(a, b), (b, a)] {
            let peer = &mut self.peers[x as usize];
            let now = peer.now(self.now_ms);
            refused |= !peer.book.connected(now, y, Vec::new(), 1);
        }
        if refused {
            for (x, y) in [(a, b), (b, a)] {
                let peer = &mut self.peers[x as usize];
                let now = peer.now(self.now_ms);
                peer.book.disconnected(now, &y, 0);
                peer.tick_at_ms = None;
                // Its Disconnect finds no link; dials queued beside it go out.
                self.drain(x);
                self.schedule_tick(x);
            }
            return;
        }
        let link = self.links.get_mut(&link_key(a, b)).expect("links exist");
        link.up = true;
        link.generation += 1;
        self.membership_changed();
        for (x, y) in [(a, b), (b, a)] {
            let now = self.peers[x as usize].now(self.now_ms);
            self.peers[x as usize].protocol.peer_connected(now, y);
            self.drain(x);
            self.schedule_tick(x);
        }
    }

    fn link_down(&mut self, a: PeerIx, b: PeerIx) {
        let Some(link) = self.links.get_mut(&link_key(a, b)) else { return };
        if !link.up {
            return;
        }
        link.up = false;
        link.generation += 1;
        self.membership_changed();
        // Whoever is still up redials, with its book's backoff.
        for (x, y) in [(a, b), (b, a)] {
            let peer = &mut self.peers[x as usize];
            if peer.up {
                let now = peer.now(self.now_ms);
                peer.protocol.peer_disconnected(now, y);
                peer.book.disconnected(now, &y, 0);
                peer.tick_at_ms = None;
                self.schedule_tick(x);
            }
        }
    }

    /// Runs to the end and reports. `progress` is called after every convergence sample.
    pub fn run(mut self, progress: &mut dyn FnMut(&Progress)) -> Report {
        self.advance(i64::MAX, progress);
        self.finish()
    }

    /// Handles scheduled events up to virtual time `until_ms`, the horizon or the end.
    fn advance(&mut self, until_ms: i64, progress: &mut dyn FnMut(&Progress)) {
        while let Some(next) = self.queue.peek() {
            if next.at_ms > until_ms.min(self.horizon_ms) || self.ended {
                break;
            }
            let next = self.queue.pop().expect("peeked");
            self.now_ms = next.at_ms;
            self.step(next.what, progress);
        }
    }

    fn step(&mut self, what: What, progress: &mut dyn FnMut(&Progress)) {
        match what {
            What::Deliver { from, to, link_generation, bytes } => {
                self.deliver(from, to, link_generation, &bytes)
            }
            What::Tick(ix) => {
                let peer = &mut self.peers[ix as usize];
                if !peer.up || peer.tick_at_ms != Some(self.now_ms) {
                    return;
                }
                peer.tick_at_ms = None;
                let now = peer.now(self.now_ms);
                let rounds_before = peer.protocol.counters().rounds;
                peer.protocol.handle_tick(now, &peer.state);
                peer.book.handle_tick(now);
                self.totals.rounds += peer.protocol.counters().rounds - rounds_before;
                self.drain(ix);
                self.schedule_tick(ix);
            }
            What::Ingest => self.ingest(),
            What::Fault(i) => {
                let (_, fault) = self.faults[i].clone();
                self.apply_fault(fault);
            }
            What::LinkTimeout { a, b, link_generation } => {
                let current =
                    self.links.get(&link_key(a, b)).is_some_and(|l| l.up && l.generation == link_generation);
                if current && !self.reachable(a, b) {
                    self.link_down(a, b);
                }
            }
            What::Sample => {
                let (up, converged) = self.sample();
                progress(&Progress {
                    elapsed_ms: self.now_ms - START_MS,
                    horizon_ms: self.horizon_ms - START_MS,
                    peers_up: up,
                    peers_converged: converged,
                });
                self.maybe_end();
                self.schedule(self.now_ms + self.sample_ms, What::Sample);
            }
            What::Check => {
                self.sampled_check();
                self.schedule(self.now_ms + 1000, What::Check);
            }
            What::Evaluate(ix) => {
                let peer = &mut self.peers[ix as usize];
                let Some(alerting) = peer.alerting.as_mut() else { return };
                if !peer.up || alerting.wake_at_ms != Some(self.now_ms) {
                    return;
                }
                alerting.wake_at_ms = None;
                self.evaluate_peer(ix, false);
                self.schedule_alerting(ix);
            }
            What::OracleEvaluate => {
                let Some(alerting) = self.alerting.as_mut() else { return };
                alerting.evaluate_oracle(self.now_ms, &mut self.truth[0]);
                let interval = alerting.eval.eval_interval_ms;
                self.schedule(self.now_ms + interval, What::OracleEvaluate);
            }
            What::SinkDeliver { from, process, id, alerts } => {
                let delivered = self.alerting.as_mut().is_some_and(|alerting| {
                    if alerting.sink_up {
                        alerting.deliver(self.now_ms, from, &alerts);
                    } else {
                        alerting.refused += 1;
                    }
                    alerting.sink_up
                });
                let peer = &mut self.peers[from as usize];
                let now = peer.now(self.now_ms);
                if let Some(mine) = peer.alerting.as_mut().filter(|a| a.process == process) {
                    mine.sender.handle_result(now, id, delivered, alerts.len());
                    self.schedule_alerting(from);
                }
            }
        }
    }

    /// Schedules the peer's next wake of its evaluator or sender, unless an earlier one
    /// is pending.
    fn schedule_alerting(&mut self, ix: PeerIx) {
        let peer = &self.peers[ix as usize];
        let Some(alerting) = peer.alerting.as_ref().filter(|_| peer.up) else { return };
        let wanted = alerting.evaluator.poll_timeout().min(alerting.sender.poll_timeout());
        let at_ms = if wanted == i64::MIN { self.now_ms } else { (wanted - peer.skew_ms).max(self.now_ms) };
        if alerting.wake_at_ms.is_some_and(|pending| pending <= at_ms) || wanted == i64::MAX {
            return;
        }
        self.peers[ix as usize].alerting.as_mut().expect("checked").wake_at_ms = Some(at_ms);
        self.schedule(at_ms, What::Evaluate(ix));
    }

    /// The peer's mesh status, as its driver would publish it.
    fn mesh_status(&self, ix: PeerIx) -> observatory_sync::MeshStatus {
        let peer = &self.peers[ix as usize];
        let now = peer.now(self.now_ms);
        let local = observatory_sync::status::Local {
            peer_id: ix.to_string(),
            objectives: peer.protocol.objectives().to_string(),
            listen: Vec::new(),
            counters: peer.protocol.counters(),
        };
        let reports: Vec<_> = peer.protocol.peer_reports(now, &peer.state);
        let book = peer.book.peers().map(|(p, _, connected)| (*p, Vec::new(), connected));
        observatory_sync::MeshStatus::assemble(now, local, reports, book)
    }

    /// Evaluates the peer's objectives if a step is due (or `force`), as its objectives
    /// task does, hands the alerts to its sender and posts what the sender gives out.
    fn evaluate_peer(&mut self, ix: PeerIx, force: bool) {
        let status = self.mesh_status(ix);
        let interval = self.interval_ms();
        let origin_writer = &self.origin_writer;
        let peer = &mut self.peers[ix as usize];
        let now = peer.now(self.now_ms);
        let Some(alerting) = peer.alerting.as_mut() else { return };
        if force || now >= alerting.evaluator.poll_timeout() {
            let changes = peer.state.take_changes();
            let coverage = observatory_objectives::Coverage::of_missing(
                &status.missing_peers(interval),
                &peer.state,
                |origin| origin_writer.get(origin).map_or_else(String::new, |(writer, _)| writer.to_string()),
            );
            let evaluation = alerting.evaluator.evaluate(now, &peer.state, &changes, &coverage);
            let alerts = observatory_objectives::alerts_of(&evaluation);
            alerting.sender.update(now, alerts, &status.alert_peers(), &ix.to_string());
            alerting.latest = Some(evaluation);
        }
        let process = alerting.process;
        let mut batches = Vec::new();
        while let Some(batch) = alerting.sender.poll_transmit(now) {
            batches.push(batch);
        }
        for batch in batches {
            let latency = &self.scenario.alerting.sink_latency;
            let delay_ms = latency.sample_ms(&mut self.sink_rng, 1);
            let what = What::SinkDeliver { from: ix, process, id: batch.id, alerts: batch.alerts };
            self.schedule(self.now_ms + delay_ms, what);
        }
    }

    fn membership_changed(&mut self) {
        if let Some(alerting) = self.alerting.as_mut() {
            alerting.membership_changes.push(self.now_ms);
        }
    }

    fn deliver(&mut self, from: PeerIx, to: PeerIx, link_generation: u64, bytes: &[u8]) {
        let current =
            self.links.get(&link_key(from, to)).is_some_and(|l| l.up && l.generation == link_generation);
        if !current || !self.peers[to as usize].up || !self.reachable(from, to) {
            self.totals.messages_undeliverable += 1;
            return;
        }
        self.totals.messages_delivered += 1;
        let peer = &mut self.peers[to as usize];
        let now = peer.now(self.now_ms);
        peer.protocol.note_bytes(&from, true, bytes.len());
        match wire::decode(bytes) {
            Ok(MeshMessage::Protocol(message)) => {
                let carries_pages = matches!(&message, Message::Sync(_, pages) if !pages.is_empty());
                let SimPeer { protocol, state, commit, .. } = peer;
                protocol.handle_message(now, from, message, &mut SimReplica { state, commit });
                if carries_pages {
                    peer.dirty = true;
                }
            }
            // The simulator sends neither peer lists nor handoffs.
            Ok(MeshMessage::Peers(_) | MeshMessage::Handoff(_)) => {}
            Err(error) => peer.protocol.handle_malformed(now, from, &error.to_string()),
        }
        self.carry_out_commit(to as usize);
        self.drain(to);
    }

    /// `a`'s book dials `b`: the connection comes up at once when both are up, linked by
    /// the topology and not cut apart; otherwise the dial fails (the book has already
    /// scheduled the next one, with backoff).
    fn dial(&mut self, a: PeerIx, b: PeerIx) {
        let Some(link) = self.links.get(&link_key(a, b)) else { return };
        if link.up {
            return;
        }
        let (pa, pb) = (&self.peers[a as usize], &self.peers[b as usize]);
        if pa.up && pb.up && !pa.left && !pb.left && self.reachable(a, b) {
            self.link_up(a, b);
        }
    }

    // -----------------------------------------------------------------------------------
    // Workload and persistence
    // -----------------------------------------------------------------------------------

    /// Every flush interval, each up peer's writer takes a turn: the events clients sent
    /// it since the last turn (if it takes events), and whatever its commit queue has due
    /// (a timed flush, maintenance).
    fn ingest(&mut self) {
        let flush_ms = self.scenario.ingest.flush_interval.as_millis() as i64;
        self.schedule(self.now_ms + flush_ms, What::Ingest);
        let workload = &self.scenario.workload;
        let start_ms = START_MS + workload.start.as_millis() as i64;
        let end_ms = start_ms + workload.duration.as_millis() as i64;
        let sending = self.now_ms > start_ms && self.now_ms <= end_ms;
        for ix in 0..self.peers.len() {
            if !self.peers[ix].up {
                continue;
            }
            if sending && self.peers[ix].ingests && !self.peers[ix].leaving {
                let mut events = self.events_for(ix, flush_ms);
                events.extend(self.flow_events_for(ix, flush_ms));
                if !events.is_empty() {
                    self.peers[ix].commit.submit((), events);
                }
            }
            let peer = &mut self.peers[ix];
            let now = peer.now(self.now_ms);
            peer.commit.handle_tick(now, &mut peer.state);
            self.carry_out_commit(ix);
        }
    }

    fn events_for(&mut self, ix: usize, flush_ms: i64) -> Vec<Event> {
        let workload = &self.scenario.workload;
        let peer = &mut self.peers[ix];
        peer.ingest_carry += workload.rate * flush_ms as f64 / 1000.0;
        let n = peer.ingest_carry.floor();
        peer.ingest_carry -= n;
        let peer_now = peer.now(self.now_ms);
        (0..n as usize)
            .map(|_| {
                let edge = self.edges[self.load_rng.random_range(0..self.edges.len())].clone();
                let ts_ms = match workload.timestamps {
                    Timestamps::Client => self.now_ms - self.load_rng.random_range(0..flush_ms.max(1)),
                    Timestamps::Receive => peer_now,
                };
                Event {
                    edge,
                    ts_ms,
                    latency_us: Some(workload.latency.sample_us(&mut self.load_rng).max(1)),
                    error: self.load_rng.random_bool(workload.error_ratio),
                    bytes: self.load_rng.random_range(100..2000),
                    count: 1,
                }
            })
            .collect()
    }

    /// The events of the workload's flows one peer takes in a turn: the rate's share of
    /// the turn, every `1/error_ratio`-th failed, all stamped just before now (true
    /// time), so that every peer's buckets get the same counts.
    fn flow_events_for(&mut self, ix: usize, flush_ms: i64) -> Vec<Event> {
        let mut events = Vec::new();
        for (f, flow) in self.flows.iter().enumerate() {
            let carry = &mut self.peers[ix].flow_carry[f];
            carry.0 += flow.rate * flush_ms as f64 / 1000.0;
            let n = carry.0.floor();
            carry.0 -= n;
            for _ in 0..n as u64 {
                carry.1 += flow.error_ratio;
                let error = carry.1 >= 1.0;
                if error {
                    carry.1 -= 1.0;
                }
                events.push(Event {
                    edge: flow.edge.clone(),
                    ts_ms: self.now_ms - 1,
                    latency_us: Some(flow.latency.sample_us(&mut self.flow_rng).max(1)),
                    error,
                    bytes: 0,
                    count: 1,
                });
            }
        }
        events
    }

    /// Carries out what a peer's commit queue asks: a write of its own changes goes into
    /// the truth, a flush makes the disk hold the state, replies are counted.
    fn carry_out_commit(&mut self, ix: usize) {
        while let Some(output) = self.peers[ix].commit.poll_output() {
            match output {
                CommitOutput::Write(Write::Local { origin, keys, seq, changed_at_ms }) => {
                    self.record_truth(ix, origin, &keys, seq, changed_at_ms)
                }
                // The disk takes the whole state at the next flush.
                CommitOutput::Write(Write::Merged(_)) => {}
                CommitOutput::Flush { upto } => {
                    self.flush(ix);
                    self.peers[ix].commit.flushed(upto);
                }
                CommitOutput::Reply((), applied) => {
                    // Every simulated event stands for one call.
                    self.totals.events_accepted += applied.accepted as u64;
                    for (_, rejection) in &applied.rejected {
                        *self
                            .totals
                            .events_rejected
                            .entry(rejection.reason_code().to_string())
                            .or_default() += 1;
                    }
                }
                CommitOutput::Maintain { now_ms } => {
                    let peer = &mut self.peers[ix];
                    if !peer.state.expire(now_ms).is_empty() {
                        peer.commit.written_outside();
                    }
                }
            }
        }
    }

    /// Records a turn of a peer's own writes in the truth: the changed cells, from the
    /// seq the truth held of the origin up to `seq`.
    fn record_truth(
        &mut self,
        ix: usize,
        origin: Origin,
        keys: &[observatory_core::CellKey],
        seq: u64,
        changed_at_ms: Option<i64>,
    ) {
        let peer = &mut self.peers[ix];
        peer.dirty = true;
        let group = peer.group;
        let cells = keys
            .iter()
            .map(|key| (key.clone(), peer.state.cell(&origin, key).expect("changed cells exist").clone()))
            .collect();
        let delta = OriginDelta {
            after_seq: self.truth[group].origin_seq(&origin),
            upto_seq: seq,
            complete: true,
            to_seq: seq,
            changed_at_ms,
            cells,
            sender: None,
            origin: origin.clone(),
        };
        self.truth[group]
            .merge_delta(self.now_ms, delta, &mut Transfer::default())
            .expect("an origin's own changes always merge into the truth");
        self.target[group].insert(origin, seq);
        self.target_changed = true;
        self.last_write_ms = self.now_ms;
    }

    /// Writes what the peer changed since its last flush to its disk.
    fn flush(&mut self, ix: usize) {
        let peer = &mut self.peers[ix];
        let Some(disk) = peer.disk.as_mut() else { return };
        let request = disk.sync_request(&Transfer::default());
        let pages = peer.state.delta_since(&request, usize::MAX);
        let mut transfer = Transfer::default();
        for page in pages {
            disk.merge_delta(self.now_ms, page, &mut transfer)
                .expect("a peer's own state merges into its disk");
        }
    }

    // -----------------------------------------------------------------------------------
    // Faults
    // -----------------------------------------------------------------------------------

    fn apply_fault(&mut self, fault: Fault) {
        self.last_fault_ms = self.now_ms;
        self.marks.push(FaultMark { at_s: report::seconds(self.now_ms - START_MS), label: fault.label() });
        let count = self.peers.len();
        let resolve = |set: &PeerSet| set.resolve(count).expect("validated against the peer count");
        match fault {
            Fault::Partition(groups) => {
                let mut group_of = vec![groups.len(); count];
                for (g, set) in groups.iter().enumerate() {
                    for ix in resolve(set) {
                        group_of[ix] = g;
                    }
                }
                self.partition = Some(group_of);
                self.partition_groups = groups.len();
                if let Some(alerting) = self.alerting.as_mut()
                    && alerting.partitions.last().is_none_or(|p| p.1.is_some())
                {
                    alerting.partitions.push((self.now_ms, None));
                }
                let detect_ms = self.scenario.network.failure_detect.as_millis() as i64;
                let cut: Vec<((PeerIx, PeerIx), u64)> = self
                    .links
                    .iter()
                    .filter(|((a, b), l)| l.up && !self.reachable(*a, *b))
                    .map(|(k, l)| (*k, l.generation))
                    .collect();
                for ((a, b), link_generation) in cut {
                    self.schedule(self.now_ms + detect_ms, What::LinkTimeout { a, b, link_generation });
                }
            }
            Fault::Heal => {
                self.partition = None;
                if let Some(alerting) = self.alerting.as_mut()
                    && let Some(open) = alerting.partitions.last_mut()
                {
                    open.1.get_or_insert(self.now_ms);
                }
            }
            Fault::Sink(state) => {
                if let Some(alerting) = self.alerting.as_mut() {
                    alerting.sink_up = state == crate::scenario::SinkState::Up;
                }
            }
            Fault::Traffic(traffic) => {
                let mut changed = Vec::new();
                for flow in
                    self.flows.iter_mut().filter(|f| traffic.names(f.edge.from.as_str(), f.edge.to.as_str()))
                {
                    if let Some(rate) = traffic.rate {
                        flow.rate = rate;
                    }
                    if let Some(ratio) = traffic.error_ratio {
                        flow.error_ratio = ratio;
                    }
                    if let Some(latency) = &traffic.latency {
                        flow.latency = latency.clone();
                    }
                    changed.push(flow.edge.clone());
                }
                if let Some(alerting) = self.alerting.as_mut() {
                    alerting.traffic.push((self.now_ms, changed));
                }
            }
            Fault::Crash(set) => {
                for ix in resolve(&set) {
                    self.crash(ix);
                }
                self.recompute_targets();
            }
            Fault::Restart(restart) => {
                for ix in resolve(&restart.peers) {
                    self.restart(ix, restart.disk);
                }
                self.recompute_targets();
            }
            Fault::Skew(set, by_ms) => {
                for ix in resolve(&set) {
                    self.peers[ix].skew_ms += by_ms;
                    self.peers[ix].tick_at_ms = None;
                    self.schedule_tick(ix as PeerIx);
                }
            }
            Fault::Add(n) => {
                let first = self.peers.len();
                let ingest_all = self.scenario.workload.ingesters == PeerSet::all();
                for _ in 0..n {
                    self.add_peer(0, ingest_all);
                }
                let no_group = self.partition_groups;
                if let Some(groups) = self.partition.as_mut() {
                    groups.resize(first + n, no_group);
                }
                self.wire_topology(first..first + n);
                self.target_changed = true;
            }
            Fault::Remove(set) => {
                for ix in resolve(&set) {
                    if self.peers[ix].up {
                        self.peers[ix].leaving = true;
                    }
                }
            }
        }
    }

    fn crash(&mut self, ix: usize) {
        if !self.peers[ix].up {
            return;
        }
        if self.scenario.ingest.ack == AckMode::Accepted && !self.peers[ix].leaving {
            // Its last flush interval is gone, unless it had passed it on.
            self.mark_lossy(ix);
        }
        self.peers[ix].up = false;
        self.peers[ix].alerting = None;
        self.membership_changed();
        // A decommissioned peer that crashes is simply down.
        self.peers[ix].leaving = false;
        self.peers[ix].converged_since_ms = None;
        self.peers[ix].tick_at_ms = None;
        let neighbours: Vec<PeerIx> = self.neighbours[ix].iter().copied().collect();
        for other in neighbours {
            self.link_down(ix as PeerIx, other);
        }
    }

    fn restart(&mut self, ix: usize, disk: Disk) {
        let peer = &self.peers[ix];
        if peer.up || peer.left {
            return;
        }
        let group = peer.group;
        let settings = self.settings[group].clone();
        if disk == Disk::Lost {
            self.mark_lossy(ix);
        }
        let peer = &self.peers[ix];
        let (generation, incarnation, mut state) = match (disk, &peer.disk) {
            (Disk::Kept, Some(disk)) => (peer.generation, peer.incarnation + 1, disk.clone()),
            _ => (peer.generation + 1, 1, FlowState::new(settings.clone(), limits())),
        };
        // The disk writes no origin of its own: it takes the peer's changes as deltas.
        let disk_state = self.keep_disks.then(|| state.clone());
        let origin = Origin::new(&Self::origin_name(ix as PeerIx, generation), incarnation);
        state.set_local(origin.clone());
        self.origin_writer.insert(origin, (ix as PeerIx, group));
        let protocol = self.protocol_for(ix as PeerIx, generation, incarnation, group);
        // A restarted process: a new book (which dials the peers it knows at once) and an
        // empty commit queue.
        let book = self.book_for(ix as PeerIx);
        let commit = self.commit_queue();
        let peer = &mut self.peers[ix];
        peer.up = true;
        peer.generation = generation;
        peer.incarnation = incarnation;
        peer.state = state;
        peer.protocol = protocol;
        peer.book = book;
        peer.commit = commit;
        peer.disk = disk_state;
        peer.tick_at_ms = None;
        peer.dirty = true;
        peer.alerting = self.alerting.as_mut().map(Alerting::for_process);
        self.membership_changed();
        self.schedule_tick(ix as PeerIx);
        self.schedule_alerting(ix as PeerIx);
    }

    /// The peer's replica is destroyed (beyond its disk): what only it held of its own
    /// origins, or of origins whose writer is already gone, may be lost.
    fn mark_lossy(&mut self, ix: usize) {
        let orphans: Vec<Origin> = self
            .origin_writer
            .iter()
            .filter(|(origin, (writer, _))| *writer as usize == ix || !self.writer_up(origin))
            .map(|(origin, _)| origin.clone())
            .collect();
        self.lossy_origins.extend(orphans);
    }

    // -----------------------------------------------------------------------------------
    // Convergence
    // -----------------------------------------------------------------------------------

    /// Whether the origin's writer is up and still writing it.
    pub(crate) fn writer_up(&self, origin: &Origin) -> bool {
        self.origin_writer.get(origin).is_some_and(|&(ix, _)| {
            let peer = &self.peers[ix as usize];
            peer.up && peer.state.local_origin() == Some(origin)
        })
    }

    /// Targets from scratch: the truth where the writer is up, otherwise the most any up
    /// peer holds (what the writer had not passed on before it went is out of reach).
    fn recompute_targets(&mut self) {
        for group in 0..self.truth.len() {
            let mut target = BTreeMap::new();
            for (origin, seq) in self.truth[group].version_vector().dots {
                let reachable = if self.writer_up(&origin) {
                    seq
                } else {
                    self.peers
                        .iter()
                        .filter(|p| p.up && p.group == group)
                        .map(|p| p.state.origin_seq(&origin))
                        .max()
                        .unwrap_or(0)
                };
                target.insert(origin, reachable);
            }
            self.target[group] = target;
        }
        self.target_changed = true;
    }

    fn is_converged(&self, peer: &SimPeer) -> bool {
        let target = &self.target[peer.group];
        let held = peer.state.coverage().iter().filter(|c| c.seq > 0).count();
        held == target.values().filter(|&&s| s > 0).count()
            && target.iter().all(|(origin, &seq)| peer.state.origin_seq(origin) == seq)
    }

    /// Updates who is converged; returns how many peers are up and how many converged.
    fn sample(&mut self) -> (usize, usize) {
        // Peers that left or are decommissioned and fully replicated leave now.
        self.settle_leavers();
        let all = std::mem::take(&mut self.target_changed);
        for ix in 0..self.peers.len() {
            let peer = &self.peers[ix];
            if !peer.up || !(all || peer.dirty) {
                continue;
            }
            // An up peer may hold more of an orphaned origin than the target, from a
            // message in flight when its writer went: raise the target.
            for coverage in peer.state.coverage() {
                if let Some(target) = self.target[peer.group].get_mut(&coverage.origin)
                    && coverage.seq > *target
                {
                    *target = coverage.seq;
                    self.target_changed = true;
                }
            }
        }
        let all = all || std::mem::take(&mut self.target_changed);
        for ix in 0..self.peers.len() {
            if !self.peers[ix].up || !(all || self.peers[ix].dirty) {
                continue;
            }
            let converged = self.is_converged(&self.peers[ix]);
            let peer = &mut self.peers[ix];
            peer.dirty = false;
            match (converged, peer.converged_since_ms) {
                (true, None) => peer.converged_since_ms = Some(self.now_ms),
                (false, Some(_)) => peer.converged_since_ms = None,
                _ => {}
            }
        }
        let up = self.peers.iter().filter(|p| p.up).count();
        let converged = self.peers.iter().filter(|p| p.up && p.converged_since_ms.is_some()).count();
        let share = if up == 0 { 0.0 } else { converged as f64 / up as f64 };
        if self.series.last().is_none_or(|&(_, last)| last != share) || self.series.len() < 2 {
            self.series.push((self.now_ms - START_MS, share));
        }
        self.all_converged_since_ms = match (up > 0 && converged == up, self.all_converged_since_ms) {
            (true, None) => Some(self.now_ms),
            (true, since) => since,
            (false, _) => None,
        };
        (up, converged)
    }

    fn settle_leavers(&mut self) {
        let quiesce_ms = self.scenario.quiesce.max.as_millis() as i64;
        for ix in 0..self.peers.len() {
            let peer = &self.peers[ix];
            if !peer.leaving || peer.left || !peer.up {
                continue;
            }
            let origin = peer.origin();
            let seq = peer.state.origin_seq(&origin);
            let replicated = seq == 0
                || self
                    .peers
                    .iter()
                    .enumerate()
                    .any(|(j, p)| j != ix && p.up && !p.leaving && p.state.origin_seq(&origin) >= seq);
            let overdue = self.now_ms - self.last_fault_ms > quiesce_ms;
            if replicated || overdue {
                self.crash(ix);
                self.peers[ix].left = true;
                self.peers[ix].leaving = false;
                self.last_fault_ms = self.now_ms;
                self.marks.push(FaultMark {
                    at_s: report::seconds(self.now_ms - START_MS),
                    label: format!("p{ix} left"),
                });
                self.recompute_targets();
            }
        }
    }

    fn maybe_end(&mut self) {
        let workload_end_ms =
            START_MS + (self.scenario.workload.start + self.scenario.workload.duration).as_millis() as i64;
        let faults_done = self.faults.last().is_none_or(|(at, _)| *at <= self.now_ms);
        let leaving = self.peers.iter().any(|p| p.leaving && !p.left);
        let hold_ms = self.scenario.quiesce.hold.as_millis() as i64;
        // A fault that disturbs nothing (a skew, a peer leaving) must not keep the run going.
        let settled = self
            .all_converged_since_ms
            .is_some_and(|since| self.now_ms - since.max(self.settle_from_ms()) >= hold_ms);
        // Alerts changed lately may still be on their way to the sink.
        let alerts_settled = self.alerting.as_ref().is_none_or(|a| {
            self.now_ms - a.last_transition_ms >= 2 * a.eval.eval_interval_ms + 2 * self.interval_ms() + 1000
        });
        if self.now_ms > workload_end_ms && faults_done && !leaving && settled && alerts_settled {
            self.ended = true;
        }
    }

    /// When the last write or fault happened: convergence is measured from there.
    pub(crate) fn settle_from_ms(&self) -> i64 {
        self.last_write_ms.max(self.last_fault_ms)
    }

    fn sampled_check(&mut self) {
        let up: Vec<usize> = (0..self.peers.len()).filter(|&i| self.peers[i].up).collect();
        if up.is_empty() {
            return;
        }
        let cells = self.truth.iter().map(|t| t.stats().cells + t.stats().global_cells).sum::<usize>().max(1);
        let take = (CHECK_CELLS_PER_SAMPLE / cells).clamp(1, up.len());
        for k in 0..take {
            let ix = up[(self.check_cursor + k) % up.len()];
            let found = check::peer_violations(self, ix);
            self.record(found);
        }
        self.check_cursor = (self.check_cursor + take) % up.len();
    }

    pub(crate) fn record(&mut self, found: Vec<Violation>) {
        for mut violation in found {
            violation.at_s = report::seconds(self.now_ms - START_MS);
            self.violations.push(violation);
        }
    }

    fn finish(mut self) -> Report {
        self.sample();
        for ix in 0..self.peers.len() {
            if self.peers[ix].up {
                let found = check::peer_violations(&self, ix);
                self.record(found);
            }
        }
        let outcome = check::final_checks(&self);
        self.objective_checks();
        report::build(&self, outcome)
    }

    /// The objective invariants at the end (see [`crate::alerting`]).
    fn objective_checks(&mut self) {
        if self.alerting.is_none() {
            return;
        }
        let interval = self.interval_ms();
        let comparable: Vec<PeerIx> = (0..self.peers.len() as PeerIx)
            .filter(|&ix| {
                let peer = &self.peers[ix as usize];
                peer.up
                    && peer.skew_ms == 0
                    && self.is_converged(peer)
                    && self.scenario.loss_reason().is_none()
            })
            .filter(|&ix| self.mesh_status(ix).missing_peers(interval).is_empty())
            .collect();
        for &ix in &comparable {
            self.evaluate_peer(ix, true);
        }
        let alerting = self.alerting.as_mut().expect("checked");
        let oracle = alerting.evaluate_oracle(self.now_ms, &mut self.truth[0]);
        let finals: Vec<alerting::Final<'_>> = comparable
            .iter()
            .filter_map(|&ix| {
                let evaluation = self.peers[ix as usize].alerting.as_ref()?.latest.as_ref()?;
                Some(alerting::Final { ix, evaluation })
            })
            .collect();
        let alerting = self.alerting.as_ref().expect("checked");
        let resend_ms = self.scenario.alerting.resend_interval.as_millis() as i64;
        let found = alerting::final_checks(alerting, &finals, &oracle, self.now_ms, resend_ms);
        self.compared_peers = finals.len();
        self.record(found);
    }

    /// The scenario being run.
    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// The run's seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// A peer's state, to change behind the protocol's back: for tests that prove the
    /// checks catch what they should (a forged cell must show up as a violation).
    pub fn peer_state_mut(&mut self, ix: usize) -> Option<&mut FlowState> {
        self.peers.get_mut(ix).map(|p| &mut p.state)
    }

    /// Runs until virtual time `elapsed_ms` after the start (or the end of the run), then
    /// returns; [`Simulation::run`] goes on from there.
    pub fn run_until(&mut self, elapsed_ms: i64) {
        self.advance(START_MS + elapsed_ms, &mut |_| {});
    }

    pub(crate) fn peers_down_at_end(&self) -> Vec<usize> {
        (0..self.peers.len()).filter(|&i| !self.peers[i].up && !self.peers[i].left).collect()
    }

    pub(crate) fn interval_s(&self) -> f64 {
        self.interval_ms() as f64 / 1000.0
    }
}

/// A workload flow's edge.
fn flow_edge(flow: &crate::scenario::Flow) -> Edge {
    let name = |n: &str| NodeName::new(n, NODE_NAME_BYTES_MAX).expect("checked with the scenario");
    let kind = flow
        .kind
        .as_deref()
        .and_then(observatory_core::EdgeKind::from_name)
        .unwrap_or(observatory_core::EdgeKind::Request);
    Edge::with_kind(name(&flow.from), name(&flow.to), kind)
}

/// `edges` distinct ordered pairs of `services` services, drawn by the seed.
fn pick_edges(services: usize, edges: usize, rng: &mut StdRng) -> Vec<Edge> {
    let names: Vec<NodeName> = (0..services)
        .map(|i| NodeName::new(&format!("svc-{i:02}"), NODE_NAME_BYTES_MAX).expect("valid node name"))
        .collect();
    let mut pairs: Vec<(usize, usize)> =
        (0..services).flat_map(|a| (0..services).filter(move |&b| b != a).map(move |b| (a, b))).collect();
    pairs.shuffle(rng);
    pairs.truncate(edges);
    pairs.sort_unstable();
    pairs.into_iter().map(|(a, b)| Edge::new(names[a].clone(), names[b].clone())).collect()
}
