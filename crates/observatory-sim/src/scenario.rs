//! Scenarios: what a simulation runs, read from YAML (`simulations/*.yaml`).
//!
//! [`Scenario::load`] reads and checks a file; [`Scenario::from_yaml`] does the same for
//! text. Every error names the key and the reason. `simulations/README.md` documents
//! every key with its default.

use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Yaml};
use serde::{Deserialize, Serialize};

/// Most peers a scenario may run (at any time).
pub const PEERS_MAX: usize = 100_000;
/// Most peers in a full mesh (without `topology.degree`).
pub const FULL_MESH_PEERS_MAX: usize = 5_000;
/// Most services a workload may draw edges among.
pub const SERVICES_MAX: usize = 1_000;
/// Longest a run may last, with every clock skew added: below the finest retention
/// (1 h), so that no peer, however skewed, expires a cell the oracle still counts.
pub const SPAN_MAX_MS: i64 = 50 * 60 * 1000;

/// One failure simulation.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, shown in the report.
    pub name: String,
    /// What the scenario shows, in words.
    #[serde(default)]
    pub description: String,
    /// Peers at the start.
    pub peers: usize,
    /// Seed used when the command line gives none.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Who connects to whom.
    #[serde(default)]
    pub topology: Topology,
    /// The protocol's settings.
    #[serde(default)]
    pub sync: SyncSettings,
    /// How peers take and persist events.
    #[serde(default)]
    pub ingest: IngestSettings,
    /// The simulated network.
    #[serde(default)]
    pub network: NetworkModel,
    /// The events clients send.
    #[serde(default)]
    pub workload: Workload,
    /// Peers that run with other mesh-wide settings (finest resolution 5 s instead of
    /// 10 s): the mesh must never merge their state with the others'.
    #[serde(default)]
    pub different_settings: Option<PeerSet>,
    /// Objectives every peer evaluates (as in an objectives file); with some, peers send
    /// alerts to a simulated Alertmanager and the objective invariants are checked.
    #[serde(default)]
    pub objectives: Vec<observatory_objectives::ObjectiveSpec>,
    /// How objectives are evaluated and alerts sent.
    #[serde(default)]
    pub alerting: Alerting,
    /// Faults at given times.
    #[serde(default)]
    pub timeline: Vec<TimelineEntry>,
    /// How the end is reached and checked.
    #[serde(default)]
    pub quiesce: Quiesce,
}

fn default_seed() -> u64 {
    1
}

/// Who connects to whom.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Links per peer in a random graph (each peer links to this many others chosen by the
    /// seed, so most have about twice as many). Absent: every peer links to every other,
    /// as real peers do below their connection limit.
    #[serde(default)]
    pub degree: Option<usize>,
}

/// The protocol's settings (`mesh.*` in a peer's config).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSettings {
    /// Time between rounds.
    #[serde(with = "humantime_serde", default = "default_interval")]
    pub interval: Duration,
    /// Peers per round.
    #[serde(default = "default_fanout")]
    pub fanout: usize,
    /// Largest message in bytes.
    #[serde(default = "default_message_bytes_max")]
    pub message_bytes_max: usize,
}

// The peer's own settings default as a peer's do: from the documented configuration.
fn defaults() -> &'static observatory_config::Config {
    observatory_config::Config::defaults()
}
fn default_interval() -> Duration {
    defaults().mesh.sync_interval
}
fn default_fanout() -> usize {
    defaults().mesh.fanout
}
fn default_message_bytes_max() -> usize {
    defaults().mesh.message_bytes_max
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self {
            interval: default_interval(),
            fanout: default_fanout(),
            message_bytes_max: default_message_bytes_max(),
        }
    }
}

/// When a client's event counts as accepted (`ingest.ack`): `durable`, after the batch
/// holding it is on disk (a crash loses nothing accepted), or `accepted`, at once (the
/// last flush interval of a crashed peer may be lost, unless it reached another peer).
pub use observatory_core::commit::AckMode;

fn default_ack() -> AckMode {
    defaults().ingest.ack
}

/// How peers take and persist events.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    /// When an event counts as accepted.
    #[serde(default = "default_ack")]
    pub ack: AckMode,
    /// Group commit: events are applied and written in batches this far apart.
    #[serde(with = "humantime_serde", default = "default_flush_interval")]
    pub flush_interval: Duration,
}

fn default_flush_interval() -> Duration {
    Duration::from_millis(100)
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self { ack: default_ack(), flush_interval: default_flush_interval() }
    }
}

/// A distribution of delays.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Delay {
    /// Always the same.
    Constant {
        /// The delay.
        #[serde(with = "humantime_serde")]
        value: Duration,
    },
    /// Uniform between `min` and `max`.
    Uniform {
        /// Shortest.
        #[serde(with = "humantime_serde")]
        min: Duration,
        /// Longest.
        #[serde(with = "humantime_serde")]
        max: Duration,
    },
    /// Normal, cut at zero.
    Normal {
        /// Mean.
        #[serde(with = "humantime_serde")]
        mean: Duration,
        /// Standard deviation.
        #[serde(with = "humantime_serde")]
        stddev: Duration,
    },
    /// Log-normal: `median` times e to a normal with standard deviation `sigma` (a long
    /// right tail, like real networks and services).
    Lognormal {
        /// Median.
        #[serde(with = "humantime_serde")]
        median: Duration,
        /// Spread (0.5 is moderate, 1.0 is heavy).
        sigma: f64,
    },
}

impl Delay {
    fn check(&self, key: &str) -> Result<(), ScenarioError> {
        match self {
            Delay::Uniform { min, max } if min > max => {
                Err(ScenarioError::invalid(key, format!("min {min:?} is above max {max:?}")))
            }
            Delay::Lognormal { sigma, .. } if !(0.0..=5.0).contains(sigma) => {
                Err(ScenarioError::invalid(key, format!("sigma {sigma} is outside 0..=5")))
            }
            _ => Ok(()),
        }
    }
}

/// The simulated network.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkModel {
    /// One-way delay of a message.
    #[serde(default = "default_latency")]
    pub latency: Delay,
    /// Probability that a message is lost.
    #[serde(default)]
    pub loss: f64,
    /// Probability that a message is delivered twice.
    #[serde(default)]
    pub duplicate: f64,
    /// Probability that a message is held back by up to `reorder_delay` (so later
    /// messages overtake it).
    #[serde(default)]
    pub reorder: f64,
    /// See `reorder`.
    #[serde(with = "humantime_serde", default = "default_reorder_delay")]
    pub reorder_delay: Duration,
    /// How long a cut connection takes to be noticed and closed (the peer closes a
    /// connection whose request goes unanswered for max(10 s, 5 sync intervals)).
    #[serde(with = "humantime_serde", default = "default_failure_detect")]
    pub failure_detect: Duration,
    /// First redial delay after a connection is lost; doubles up to `redial_max`.
    #[serde(with = "humantime_serde", default = "default_redial_min")]
    pub redial_min: Duration,
    /// See `redial_min`.
    #[serde(with = "humantime_serde", default = "default_redial_max")]
    pub redial_max: Duration,
}

fn default_latency() -> Delay {
    Delay::Uniform { min: Duration::from_millis(1), max: Duration::from_millis(10) }
}
fn default_reorder_delay() -> Duration {
    Duration::from_millis(50)
}
fn default_failure_detect() -> Duration {
    defaults().mesh.request_timeout
}
fn default_redial_min() -> Duration {
    defaults().mesh.redial_min
}
fn default_redial_max() -> Duration {
    defaults().mesh.redial_max
}

impl Default for NetworkModel {
    fn default() -> Self {
        Self {
            latency: default_latency(),
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: default_reorder_delay(),
            failure_detect: default_failure_detect(),
            redial_min: default_redial_min(),
            redial_max: default_redial_max(),
        }
    }
}

/// How objectives are evaluated and alerts sent (`objectives.*` and `alerts.*` in a
/// peer's config).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Alerting {
    /// Time between evaluation steps.
    #[serde(with = "humantime_serde", default = "default_eval_interval")]
    pub eval_interval: Duration,
    /// How often every alert is sent again.
    #[serde(with = "humantime_serde", default = "default_resend_interval")]
    pub resend_interval: Duration,
    /// How long a post to the Alertmanager takes.
    #[serde(default = "default_sink_latency")]
    pub sink_latency: Delay,
}

fn default_eval_interval() -> Duration {
    defaults().objectives.eval_interval
}
fn default_resend_interval() -> Duration {
    defaults().alerts.resend_interval
}
fn default_sink_latency() -> Delay {
    Delay::Uniform { min: Duration::from_millis(1), max: Duration::from_millis(20) }
}

impl Default for Alerting {
    fn default() -> Self {
        Self {
            eval_interval: default_eval_interval(),
            resend_interval: default_resend_interval(),
            sink_latency: default_sink_latency(),
        }
    }
}

/// A flow the workload sends besides its random edges: every ingesting peer sends
/// `rate` events a second on it, stamped deterministically, so every peer's share of
/// errors is the same and objectives cross their thresholds at the same step everywhere.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    /// The sender's name.
    pub from: String,
    /// The receiver's name.
    pub to: String,
    /// `request` (the default), `messaging` or `database`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Events per second per ingesting peer.
    pub rate: f64,
    /// Share of them that fail (every 1/ratio-th, not at random).
    #[serde(default)]
    pub error_ratio: f64,
    /// Latency they report (default: the workload's).
    #[serde(default)]
    pub latency: Option<Delay>,
}

/// `traffic:` in the timeline: changes the flows it names (`*` patterns), from then on.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    /// Flows from this sender (`*` patterns).
    pub from: String,
    /// To this receiver.
    pub to: String,
    /// A new rate (0 stops the flow).
    #[serde(default)]
    pub rate: Option<f64>,
    /// A new share of errors.
    #[serde(default)]
    pub error_ratio: Option<f64>,
    /// A new latency.
    #[serde(default)]
    pub latency: Option<Delay>,
}

impl Traffic {
    /// Whether it names the flow `from -> to`.
    pub fn names(&self, from: &str, to: &str) -> bool {
        let matches = |pattern: &str, name: &str| {
            observatory_objectives::model::Pattern::parse("traffic", pattern).is_ok_and(|p| p.matches(name))
        };
        matches(&self.from, from) && matches(&self.to, to)
    }
}

/// Where an event's timestamp comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Timestamps {
    /// The client stamps the event (with the true time).
    #[default]
    Client,
    /// No timestamp: the peer uses its own (possibly skewed) clock.
    Receive,
}

/// The events clients send.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Peers that take events.
    #[serde(default = "PeerSet::all")]
    pub ingesters: PeerSet,
    /// Distinct services (nodes) the edges are drawn from.
    #[serde(default = "default_services")]
    pub services: usize,
    /// Distinct edges.
    #[serde(default = "default_edges")]
    pub edges: usize,
    /// Events per second per ingesting peer.
    #[serde(default = "default_rate")]
    pub rate: f64,
    /// When clients start sending.
    #[serde(with = "humantime_serde", default)]
    pub start: Duration,
    /// For how long they send.
    #[serde(with = "humantime_serde", default = "default_workload_duration")]
    pub duration: Duration,
    /// Share of events that failed.
    #[serde(default = "default_error_ratio")]
    pub error_ratio: f64,
    /// Latency the events report.
    #[serde(default = "default_event_latency")]
    pub latency: Delay,
    /// Where timestamps come from.
    #[serde(default)]
    pub timestamps: Timestamps,
    /// Flows sent besides the random edges.
    #[serde(default)]
    pub flows: Vec<Flow>,
}

fn default_services() -> usize {
    10
}
fn default_edges() -> usize {
    20
}
fn default_rate() -> f64 {
    20.0
}
fn default_workload_duration() -> Duration {
    Duration::from_secs(20)
}
fn default_error_ratio() -> f64 {
    0.02
}
fn default_event_latency() -> Delay {
    Delay::Lognormal { median: Duration::from_millis(20), sigma: 0.6 }
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            ingesters: PeerSet::all(),
            services: default_services(),
            edges: default_edges(),
            rate: default_rate(),
            start: Duration::ZERO,
            duration: default_workload_duration(),
            error_ratio: default_error_ratio(),
            latency: default_event_latency(),
            timestamps: Timestamps::default(),
            flows: Vec::new(),
        }
    }
}

/// A set of peers, by index (0-based, in order of creation).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum PeerSet {
    /// `all`: every peer there is at the time.
    Keyword(PeerSetKeyword),
    /// `[0, 3, 7]`: these peers.
    List(Vec<usize>),
    /// `{share: [0.0, 0.5]}`: the peers from 0 % to (not including) 50 % of the count,
    /// which keeps a scenario meaningful at any size.
    Share {
        /// From and to, as fractions of the peer count.
        share: [f64; 2],
    },
    /// `{range: [10, 20]}`: peers 10 to 19.
    Range {
        /// First and one past the last.
        range: [usize; 2],
    },
}

/// The one keyword a [`PeerSet`] may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerSetKeyword {
    /// Every peer.
    All,
}

impl PeerSet {
    /// Every peer.
    pub fn all() -> Self {
        PeerSet::Keyword(PeerSetKeyword::All)
    }

    /// The indices this set names among `peers` peers, sorted, or why it names none
    /// that exist.
    pub fn resolve(&self, peers: usize) -> Result<Vec<usize>, String> {
        let indices: Vec<usize> = match self {
            PeerSet::Keyword(PeerSetKeyword::All) => (0..peers).collect(),
            PeerSet::List(list) => {
                if let Some(bad) = list.iter().find(|&&i| i >= peers) {
                    return Err(format!("peer {bad} does not exist (there are {peers})"));
                }
                let mut list = list.clone();
                list.sort_unstable();
                list.dedup();
                list
            }
            PeerSet::Share { share: [from, to] } => {
                if !(0.0..=1.0).contains(from) || !(0.0..=1.0).contains(to) || from > to {
                    return Err(format!("share [{from}, {to}] must be two fractions from 0 to 1, in order"));
                }
                let at = |f: f64| ((f * peers as f64).round() as usize).min(peers);
                (at(*from)..at(*to)).collect()
            }
            PeerSet::Range { range: [from, to] } => {
                if from > to || *to > peers {
                    return Err(format!("range [{from}, {to}] is not within the {peers} peers"));
                }
                (*from..*to).collect()
            }
        };
        Ok(indices)
    }

    fn check(&self, key: &str, peers: usize) -> Result<(), ScenarioError> {
        self.resolve(peers).map(|_| ()).map_err(|reason| ScenarioError::invalid(key, reason))
    }
}

/// Whether a restarted peer keeps its data dir.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Disk {
    /// It restarts from what it had flushed, under a new incarnation.
    #[default]
    Kept,
    /// Its data dir is gone: it starts empty with a new identity and re-learns the graph.
    Lost,
}

/// `restart:` in the timeline.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Restart {
    /// Which peers (those that are down; others are left alone).
    pub peers: PeerSet,
    /// Whether they keep their data dir.
    #[serde(default)]
    pub disk: Disk,
}

/// `skew:` in the timeline.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Skew {
    /// Which peers.
    pub peers: PeerSet,
    /// How far their clocks jump: `+30s` ahead, `-2m` behind (adds to earlier skews).
    pub by: String,
}

impl Skew {
    /// The jump in milliseconds, or why `by` is not a signed duration.
    pub fn by_ms(&self) -> Result<i64, String> {
        let text = self.by.trim();
        let (sign, rest) = match text.strip_prefix('-') {
            Some(rest) => (-1, rest),
            None => (1, text.strip_prefix('+').unwrap_or(text)),
        };
        let duration = humantime::parse_duration(rest.trim())
            .map_err(|e| format!("{text:?} is not a duration like +30s or -2m: {e}"))?;
        Ok(sign * duration.as_millis() as i64)
    }
}

/// One entry of the timeline: at a time, exactly one fault.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineEntry {
    /// When, from the start of the simulation.
    #[serde(with = "humantime_serde")]
    pub at: Duration,
    /// Cut the network into these groups; peers in no group form one more group. Links
    /// across groups carry nothing until `heal`.
    #[serde(default)]
    pub partition: Option<Vec<PeerSet>>,
    /// `heal: true` ends the partition.
    #[serde(default)]
    pub heal: Option<bool>,
    /// Kill these peers (like SIGKILL: what was not flushed is gone).
    #[serde(default)]
    pub crash: Option<PeerSet>,
    /// Start crashed peers again.
    #[serde(default)]
    pub restart: Option<Restart>,
    /// Make these peers' clocks jump.
    #[serde(default)]
    pub skew: Option<Skew>,
    /// Start this many new peers, which join by the topology.
    #[serde(default)]
    pub add: Option<usize>,
    /// Decommission these peers: they stop taking events, stay until another live peer
    /// holds all they wrote (at most `quiesce.max`), then leave for good.
    #[serde(default)]
    pub remove: Option<PeerSet>,
    /// Change the workload's flows (a breach, a recovery, a stopped flow).
    #[serde(default)]
    pub traffic: Option<Traffic>,
    /// `down` makes the simulated Alertmanager refuse every post (peers retry with
    /// backoff); `up` brings it back.
    #[serde(default)]
    pub sink: Option<SinkState>,
}

/// `sink:` in the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkState {
    /// It refuses every post.
    Down,
    /// It takes posts again.
    Up,
}

/// One fault, as [`TimelineEntry`] holds it.
#[derive(Debug, Clone)]
pub enum Fault {
    /// See [`TimelineEntry::partition`].
    Partition(Vec<PeerSet>),
    /// See [`TimelineEntry::heal`].
    Heal,
    /// See [`TimelineEntry::crash`].
    Crash(PeerSet),
    /// See [`TimelineEntry::restart`].
    Restart(Restart),
    /// See [`TimelineEntry::skew`]; the jump in milliseconds.
    Skew(PeerSet, i64),
    /// See [`TimelineEntry::add`].
    Add(usize),
    /// See [`TimelineEntry::remove`].
    Remove(PeerSet),
    /// See [`TimelineEntry::traffic`].
    Traffic(Traffic),
    /// See [`TimelineEntry::sink`].
    Sink(SinkState),
}

impl Fault {
    /// A short label for charts and logs.
    pub fn label(&self) -> String {
        match self {
            Fault::Partition(groups) => format!("partition into {}", groups.len()),
            Fault::Heal => "heal".into(),
            Fault::Crash(_) => "crash".into(),
            Fault::Restart(r) if r.disk == Disk::Lost => "restart, disk lost".into(),
            Fault::Restart(_) => "restart".into(),
            Fault::Skew(_, ms) => format!(
                "skew {}{}",
                if *ms >= 0 { "+" } else { "-" },
                humantime::format_duration(Duration::from_millis(ms.unsigned_abs()))
            ),
            Fault::Add(n) => format!("add {n}"),
            Fault::Remove(_) => "remove".into(),
            Fault::Traffic(t) => {
                let mut changes = Vec::new();
                if let Some(rate) = t.rate {
                    changes.push(format!("rate {rate}/s"));
                }
                if let Some(ratio) = t.error_ratio {
                    changes.push(format!("errors {}%", ratio * 100.0));
                }
                if t.latency.is_some() {
                    changes.push("latency".to_string());
                }
                format!("{} -> {}: {}", t.from, t.to, changes.join(", "))
            }
            Fault::Sink(SinkState::Down) => "alertmanager down".into(),
            Fault::Sink(SinkState::Up) => "alertmanager up".into(),
        }
    }
}

impl TimelineEntry {
    /// The one fault this entry names, or why it names none or several.
    pub fn fault(&self) -> Result<Fault, String> {
        let mut faults = Vec::new();
        if let Some(groups) = &self.partition {
            faults.push(Fault::Partition(groups.clone()));
        }
        if let Some(heal) = self.heal {
            if !heal {
                return Err("heal: false does nothing; leave the entry out".into());
            }
            faults.push(Fault::Heal);
        }
        if let Some(set) = &self.crash {
            faults.push(Fault::Crash(set.clone()));
        }
        if let Some(restart) = &self.restart {
            faults.push(Fault::Restart(restart.clone()));
        }
        if let Some(skew) = &self.skew {
            faults.push(Fault::Skew(skew.peers.clone(), skew.by_ms().map_err(|e| format!("skew.by: {e}"))?));
        }
        if let Some(n) = self.add {
            faults.push(Fault::Add(n));
        }
        if let Some(set) = &self.remove {
            faults.push(Fault::Remove(set.clone()));
        }
        if let Some(traffic) = &self.traffic {
            faults.push(Fault::Traffic(traffic.clone()));
        }
        if let Some(sink) = self.sink {
            faults.push(Fault::Sink(sink));
        }
        match faults.len() {
            1 => Ok(faults.pop().expect("one fault")),
            0 => Err(
                "names no fault: give one of partition, heal, crash, restart, skew, add, remove, traffic, sink"
                    .into()
            ),
            _ => Err("names several faults: give one per entry".into()),
        }
    }
}

/// How the end is reached.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Quiesce {
    /// After the last write and the last fault, the longest the mesh may take to
    /// converge; the invariants are checked then, converged or not.
    #[serde(with = "humantime_serde", default = "default_quiesce_max")]
    pub max: Duration,
    /// How long every live peer must stay exact before the run ends early.
    #[serde(with = "humantime_serde", default = "default_quiesce_hold")]
    pub hold: Duration,
}

fn default_quiesce_max() -> Duration {
    Duration::from_secs(120)
}
fn default_quiesce_hold() -> Duration {
    Duration::from_secs(3)
}

impl Default for Quiesce {
    fn default() -> Self {
        Self { max: default_quiesce_max(), hold: default_quiesce_hold() }
    }
}

/// Why a scenario cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read or parsed.
    #[error("{0}")]
    Parse(String),
    /// A value is out of range or inconsistent.
    #[error("{key}: {reason}")]
    Invalid {
        /// The key, e.g. `timeline[2].crash`.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

impl ScenarioError {
    fn invalid(key: &str, reason: impl Into<String>) -> Self {
        ScenarioError::Invalid { key: key.to_string(), reason: reason.into() }
    }
}

fn describe(error: &figment::Error) -> String {
    let key = if error.path.is_empty() { "(top level)".to_string() } else { error.path.join(".") };
    format!("{key}: {}", error.kind)
}

impl Scenario {
    fn check_traffic(&self, key: &str, traffic: &Traffic) -> Result<(), ScenarioError> {
        if !self.workload.flows.iter().any(|f| traffic.names(&f.from, &f.to)) {
            return Err(ScenarioError::invalid(key, "names no flow of workload.flows"));
        }
        if let Some(rate) = traffic.rate
            && !(0.0..=100_000.0).contains(&rate)
        {
            return Err(ScenarioError::invalid(
                &format!("{key}.rate"),
                "must be from 0 to 100000 events per second",
            ));
        }
        if let Some(ratio) = traffic.error_ratio
            && !(0.0..=1.0).contains(&ratio)
        {
            return Err(ScenarioError::invalid(
                &format!("{key}.error_ratio"),
                format!("{ratio} is not a share from 0 to 1"),
            ));
        }
        if let Some(latency) = &traffic.latency {
            latency.check(&format!("{key}.latency"))?;
        }
        Ok(())
    }

    /// The objectives, checked as a peer checks them (with the documented defaults).
    pub fn objective_set(&self) -> Result<observatory_objectives::ObjectiveSet, ScenarioError> {
        let defaults = defaults().objective_defaults();
        let objectives = self
            .objectives
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                observatory_objectives::Objective::from_spec(spec, defaults).map_err(|e| {
                    ScenarioError::invalid(
                        &format!("objectives[{i}].{}", e.key),
                        format!("({}) {}", spec.name, e.reason),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        observatory_objectives::ObjectiveSet::new(objectives)
            .map_err(|e| ScenarioError::invalid("objectives", e.to_string()))
    }

    fn check_objectives(&self) -> Result<(), ScenarioError> {
        for (i, flow) in self.workload.flows.iter().enumerate() {
            let key = format!("workload.flows[{i}]");
            for (name, value) in [("from", &flow.from), ("to", &flow.to)] {
                if value.is_empty() || value.contains('*') || value.len() > 128 {
                    return Err(ScenarioError::invalid(
                        &format!("{key}.{name}"),
                        "must be a name of 1 to 128 bytes without `*`",
                    ));
                }
            }
            if let Some(kind) = &flow.kind
                && observatory_core::EdgeKind::from_name(kind).is_none()
            {
                return Err(ScenarioError::invalid(
                    &format!("{key}.kind"),
                    format!("must be request, messaging or database, got `{kind}`"),
                ));
            }
            if !(0.0..=100_000.0).contains(&flow.rate) {
                return Err(ScenarioError::invalid(
                    &format!("{key}.rate"),
                    "must be from 0 to 100000 events per second",
                ));
            }
            if !(0.0..=1.0).contains(&flow.error_ratio) {
                return Err(ScenarioError::invalid(
                    &format!("{key}.error_ratio"),
                    "must be a share from 0 to 1",
                ));
            }
            if let Some(latency) = &flow.latency {
                latency.check(&format!("{key}.latency"))?;
            }
        }
        if self.objectives.is_empty() {
            return Ok(());
        }
        let set = self.objective_set()?;
        let settings =
            defaults().settings().map_err(|e| ScenarioError::invalid("objectives", e.to_string()))?;
        let mut eval = defaults().evaluation();
        eval.eval_interval_ms = self.alerting.eval_interval.as_millis() as i64;
        observatory_objectives::Evaluator::new(set, &settings, eval)
            .map_err(|e| ScenarioError::invalid(&format!("objectives.{}", e.key), e.reason))?;
        let eval_ms = self.alerting.eval_interval.as_millis();
        if !(1000..=600_000).contains(&eval_ms) || !eval_ms.is_multiple_of(10_000) {
            return Err(ScenarioError::invalid(
                "alerting.eval_interval",
                "must be a multiple of 10s (the finest resolution) up to 10m",
            ));
        }
        if !(1000..=3_600_000).contains(&self.alerting.resend_interval.as_millis()) {
            return Err(ScenarioError::invalid("alerting.resend_interval", "must be from 1s to 1h"));
        }
        self.alerting.sink_latency.check("alerting.sink_latency")?;
        if self.different_settings.is_some() {
            return Err(ScenarioError::invalid(
                "different_settings",
                "cannot be combined with objectives: the oracle evaluates the default settings' view",
            ));
        }
        Ok(())
    }

    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ScenarioError::Parse(format!("cannot read {}: {e}", path.display())))?;
        Self::from_yaml(&text).map_err(|e| match e {
            ScenarioError::Parse(reason) => ScenarioError::Parse(format!("{}: {reason}", path.display())),
            other => other,
        })
    }

    /// Parses and checks a scenario.
    pub fn from_yaml(text: &str) -> Result<Self, ScenarioError> {
        let scenario: Scenario = Figment::from(Yaml::string(text)).extract().map_err(|e| {
            ScenarioError::Parse(e.into_iter().map(|e| describe(&e)).collect::<Vec<_>>().join("; "))
        })?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// The same scenario with `peers` peers at the start (peer sets given as shares scale
    /// with it; lists and ranges must still fit).
    pub fn with_peers(&self, peers: usize) -> Result<Self, ScenarioError> {
        let scenario = Scenario { peers, ..self.clone() };
        scenario.validate()?;
        Ok(scenario)
    }

    /// Peers there are after every `add` of the timeline.
    pub fn peers_max(&self) -> usize {
        self.timeline.iter().filter_map(|e| e.add).fold(self.peers, usize::saturating_add)
    }

    /// The timeline's faults in time order (entries at the same time keep file order).
    pub fn faults(&self) -> Vec<(Duration, Fault)> {
        let mut faults: Vec<(Duration, Fault)> =
            self.timeline.iter().map(|e| (e.at, e.fault().expect("validated"))).collect();
        faults.sort_by_key(|(at, _)| *at);
        faults
    }

    /// Why events may be lost by design in this scenario (`None`: nothing may be lost).
    /// Peers still down at the end add a reason of their own, found by the simulator.
    pub fn loss_reason(&self) -> Option<&'static str> {
        let faults = self.faults();
        if faults.iter().any(|(_, f)| matches!(f, Fault::Restart(r) if r.disk == Disk::Lost)) {
            Some("a peer lost its disk: what it accepted and had not yet synced is gone")
        } else if self.ingest.ack == AckMode::Accepted
            && faults.iter().any(|(_, f)| matches!(f, Fault::Crash(_)))
        {
            Some("ack: accepted with crashes: a crashed peer's last flush interval may be gone")
        } else {
            None
        }
    }

    fn check_time_span(&self) -> Result<(), ScenarioError> {
        let ms = |d: &Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let fits = |key: &str, d: &Duration| {
            if ms(d) > SPAN_MAX_MS {
                Err(ScenarioError::invalid(key, format!("must be at most {} minutes", SPAN_MAX_MS / 60_000)))
            } else {
                Ok(())
            }
        };
        fits("workload.start", &self.workload.start)?;
        fits("workload.duration", &self.workload.duration)?;
        fits("quiesce.max", &self.quiesce.max)?;
        fits("quiesce.hold", &self.quiesce.hold)?;
        fits("network.reorder_delay", &self.network.reorder_delay)?;
        fits("network.failure_detect", &self.network.failure_detect)?;
        fits("network.redial_max", &self.network.redial_max)?;
        let mut skew_ms: i64 = 0;
        for (i, entry) in self.timeline.iter().enumerate() {
            fits(&format!("timeline[{i}].at"), &entry.at)?;
            if let Some(skew) = &entry.skew {
                let by =
                    skew.by_ms().map_err(|e| ScenarioError::invalid(&format!("timeline[{i}].skew.by"), e))?;
                skew_ms = skew_ms.saturating_add(by.saturating_abs());
            }
        }
        let last_fault = self.timeline.iter().map(|e| ms(&e.at)).max().unwrap_or(0);
        let span =
            (ms(&self.workload.start) + ms(&self.workload.duration)).max(last_fault) + ms(&self.quiesce.max);
        if span.saturating_add(skew_ms) > SPAN_MAX_MS {
            return Err(ScenarioError::invalid(
                "quiesce.max",
                format!(
                    "the run may last {} s plus {} s of clock skew, more than the {} minutes that stay within the finest retention",
                    span / 1000,
                    skew_ms / 1000,
                    SPAN_MAX_MS / 60_000
                ),
            ));
        }
        Ok(())
    }

    /// Checks ranges and consistency; the error names the key.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        if self.peers == 0 || self.peers_max() > PEERS_MAX {
            return Err(ScenarioError::invalid(
                "peers",
                format!(
                    "{} peers at the start and {} at most; allowed 1 to {PEERS_MAX}",
                    self.peers,
                    self.peers_max()
                ),
            ));
        }
        if self.name.trim().is_empty() {
            return Err(ScenarioError::invalid("name", "must not be empty"));
        }
        if let Some(degree) = self.topology.degree
            && degree == 0
        {
            return Err(ScenarioError::invalid("topology.degree", "must be at least 1"));
        }
        let interval = self.sync.interval.as_millis();
        if !(10..=3_600_000).contains(&interval) {
            return Err(ScenarioError::invalid("sync.interval", "must be from 10ms to 1h"));
        }
        if self.sync.fanout == 0 {
            return Err(ScenarioError::invalid("sync.fanout", "must be at least 1"));
        }
        if self.sync.message_bytes_max < 64 * 1024 {
            return Err(ScenarioError::invalid("sync.message_bytes_max", "must be at least 65536 bytes"));
        }
        let flush = self.ingest.flush_interval.as_millis();
        if !(1..=60_000).contains(&flush) {
            return Err(ScenarioError::invalid("ingest.flush_interval", "must be from 1ms to 1m"));
        }
        for (key, p) in [
            ("network.loss", self.network.loss),
            ("network.duplicate", self.network.duplicate),
            ("network.reorder", self.network.reorder),
            ("workload.error_ratio", self.workload.error_ratio),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(ScenarioError::invalid(key, format!("{p} is not a probability from 0 to 1")));
            }
        }
        if self.network.loss >= 1.0 {
            return Err(ScenarioError::invalid(
                "network.loss",
                "1 loses every message; nothing could converge",
            ));
        }
        if self.network.redial_min.is_zero() || self.network.redial_min > self.network.redial_max {
            return Err(ScenarioError::invalid(
                "network.redial_min",
                "must be above zero and at most redial_max",
            ));
        }
        self.network.latency.check("network.latency")?;
        self.workload.latency.check("workload.latency")?;
        // Resolved against the peers at the start; added peers take events with `all`.
        self.workload.ingesters.check("workload.ingesters", self.peers)?;
        if !(2..=SERVICES_MAX).contains(&self.workload.services) {
            return Err(ScenarioError::invalid(
                "workload.services",
                format!("must be from 2 to {SERVICES_MAX} (an edge needs two)"),
            ));
        }
        if self.topology.degree.is_none() && self.peers_max() > FULL_MESH_PEERS_MAX {
            return Err(ScenarioError::invalid(
                "topology.degree",
                format!(
                    "a full mesh of more than {FULL_MESH_PEERS_MAX} peers is too large to simulate; give a degree"
                ),
            ));
        }
        if self.different_settings.is_some() && self.topology.degree.is_some() {
            return Err(ScenarioError::invalid(
                "different_settings",
                "needs a full mesh (no topology.degree): random links may leave those peers unlinked from each other",
            ));
        }
        self.check_time_span()?;
        let pairs = self.workload.services * (self.workload.services - 1);
        if self.workload.edges == 0 || self.workload.edges > pairs.min(100_000) {
            return Err(ScenarioError::invalid(
                "workload.edges",
                format!(
                    "must be from 1 to {} ({} services have {pairs} ordered pairs)",
                    pairs.min(100_000),
                    self.workload.services
                ),
            ));
        }
        if !(0.0..=1_000_000.0).contains(&self.workload.rate) {
            return Err(ScenarioError::invalid(
                "workload.rate",
                "must be from 0 to 1000000 events per second",
            ));
        }
        if let Some(set) = &self.different_settings {
            set.check("different_settings", self.peers)?;
        }
        let mut peers_now = self.peers;
        let mut entries: Vec<(usize, &TimelineEntry)> = self.timeline.iter().enumerate().collect();
        entries.sort_by_key(|(_, e)| e.at);
        for (i, entry) in entries {
            let key = format!("timeline[{i}]");
            let fault = entry.fault().map_err(|reason| ScenarioError::invalid(&key, reason))?;
            match &fault {
                Fault::Partition(groups) => {
                    if groups.is_empty() {
                        return Err(ScenarioError::invalid(
                            &format!("{key}.partition"),
                            "needs at least one group",
                        ));
                    }
                    let mut seen = vec![false; peers_now];
                    for (g, set) in groups.iter().enumerate() {
                        let group_key = format!("{key}.partition[{g}]");
                        let members = set
                            .resolve(peers_now)
                            .map_err(|reason| ScenarioError::invalid(&group_key, reason))?;
                        for m in members {
                            if std::mem::replace(&mut seen[m], true) {
                                return Err(ScenarioError::invalid(
                                    &group_key,
                                    format!("peer {m} is in two groups"),
                                ));
                            }
                        }
                    }
                }
                Fault::Crash(set) | Fault::Remove(set) | Fault::Skew(set, _) => {
                    let name = match fault {
                        Fault::Crash(_) => "crash",
                        Fault::Remove(_) => "remove",
                        _ => "skew.peers",
                    };
                    set.check(&format!("{key}.{name}"), peers_now)?;
                }
                Fault::Restart(restart) => restart.peers.check(&format!("{key}.restart.peers"), peers_now)?,
                Fault::Add(n) => {
                    if *n == 0 || peers_now.saturating_add(*n) > PEERS_MAX {
                        return Err(ScenarioError::invalid(
                            &format!("{key}.add"),
                            format!("must add at least one peer, and at most {PEERS_MAX} in all"),
                        ));
                    }
                    peers_now += n;
                }
                Fault::Heal => {}
                Fault::Traffic(traffic) => self.check_traffic(&format!("{key}.traffic"), traffic)?,
                Fault::Sink(_) if self.objectives.is_empty() => {
                    return Err(ScenarioError::invalid(
                        &format!("{key}.sink"),
                        "there is no Alertmanager without objectives",
                    ));
                }
                Fault::Sink(_) => {}
            }
        }
        self.check_objectives()?;
        if self.quiesce.max < self.sync.interval {
            return Err(ScenarioError::invalid("quiesce.max", "must be at least one sync interval"));
        }
        Ok(())
    }
}
