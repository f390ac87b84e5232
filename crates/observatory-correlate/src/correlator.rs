//! The correlator: pairs halves of calls, holds the unpaired ones for a while, and turns
//! token sightings into edges once a token has gone quiet.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};

use observatory_core::{Edge, EdgeKind, Event, NodeName, VirtualSide};
use rustc_hash::FxHashMap;

use crate::owner::owner;
use crate::span::{Remote, Sighting, Span, SpanKind};

/// How the correlator pairs and how much it may hold (`correlation.*` in the
/// configuration, which holds the defaults).
#[derive(Debug, Clone)]
pub struct CorrelationConfig {
    /// How long an unpaired half waits for its other half.
    pub pending_ttl_ms: i64,
    /// Most halves waiting at once; beyond, the oldest are given up early (counted).
    pub pending_spans_max: usize,
    /// The node that calls root SERVER spans (the outside world).
    pub entry_node: NodeName,
    /// How long a token must be quiet before its sightings become edges.
    pub idle_ms: i64,
    /// Most tokens tracked at once; beyond, the quietest are turned into edges early.
    pub tokens_max: usize,
    /// Most sightings kept per token; later ones are dropped (counted).
    pub sightings_per_token_max: usize,
    /// Spans remembered (by trace, span id and kind) so that a retried export counts once;
    /// the oldest are forgotten first. About 48 bytes each (a hash set and a queue of 8-byte keys).
    pub recent_spans_max: usize,
    /// The node a CLIENT half nobody answered goes to when its attributes name nothing
    /// (the Collector's `unknown`); `None` counts such halves as unpaired (Tempo).
    pub unknown_node: Option<NodeName>,
}

/// What the correlator did since start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorrelationCounters {
    /// Spans taken from clients (not handoffs).
    pub spans_in: u64,
    /// INTERNAL spans, which are never edges.
    pub spans_internal: u64,
    /// Spans seen before (same trace, span id and kind, among the last
    /// `recent_spans_max` taken or handed in): exporters retry. Ignored.
    pub spans_duplicate: u64,
    /// Edges from a caller half paired with its callee half.
    pub edges_paired: u64,
    /// Edges from a root SERVER span (from the entry node).
    pub edges_root: u64,
    /// Edges to or from a virtual node (a database, an uninstrumented service, a queue).
    pub edges_virtual: u64,
    /// Edges to `unknown_node` from CLIENT halves nobody answered that named nothing
    /// (also counted in `edges_virtual`).
    pub edges_unknown: u64,
    /// Halves given up with nothing to name the other side: lost to the graph.
    pub spans_unpaired: u64,
    /// Sampled CLIENT and PRODUCER halves given up whose other side is a service that
    /// reports spans: a stricter sampler there dropped the other half, and the pairs that
    /// were kept (weighted by the stricter probability) already count these calls.
    pub spans_unpaired_sampled: u64,
    /// Edges counted from sampled halves (weighted by their adjusted count).
    pub edges_estimated: u64,
    /// Halves given up before their time because the pending store was full.
    pub spans_evicted: u64,
    /// Halves waiting now.
    pub spans_pending: u64,
    /// Halves the previous run of this peer was holding when it crashed (as of its last
    /// record, written at most a second before): lost to the graph.
    pub spans_lost_in_crash: u64,
    /// Halves sent to their trace's owner.
    pub spans_handed_off: u64,
    /// Halves received from other peers as their trace's owner.
    pub spans_handed_in: u64,
    /// Halves of handoffs their owner did not acknowledge (it went away or was busy),
    /// sent on to the next owner or held here.
    pub spans_rerouted: u64,
    /// Sightings taken from clients.
    pub sightings_in: u64,
    /// Sightings received from other peers as their token's owner.
    pub sightings_handed_in: u64,
    /// Sightings sent to their token's owner.
    pub sightings_handed_off: u64,
    /// Sightings beyond `sightings_per_token_max`.
    pub sightings_dropped: u64,
    /// Edges from consecutive sightings of a token.
    pub edges_from_tokens: u64,
    /// Tokens turned into edges early because `tokens_max` was reached.
    pub tokens_evicted: u64,
    /// Tokens tracked now.
    pub tokens_pending: u64,
}

/// Halves and sightings for one other peer, the owner of their traces and tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Handoff {
    /// Spans to pair there.
    pub spans: Vec<Span>,
    /// Sightings to correlate there.
    pub sightings: Vec<Sighting>,
}

/// What an input produced: events to apply here, and handoffs per owner peer.
#[derive(Debug, Default)]
pub struct Output {
    /// Flow to apply to the local state.
    pub events: Vec<Event>,
    /// `(peer, handoff)`: what to send to which owner.
    pub handoffs: Vec<(String, Handoff)>,
}

type Key = (u128, u64);

#[derive(Debug)]
enum Half {
    /// A CLIENT or PRODUCER span, keyed by its own id. A producer stays after pairing, for
    /// more consumers of the same message, until its time is up.
    Caller { span: Span, paired: bool },
    /// SERVER or CONSUMER spans, keyed by their parent's id, waiting for it.
    Callees(Vec<Span>),
}

#[derive(Debug)]
struct Pending {
    half: Half,
    generation: u64,
}

#[derive(Debug)]
struct Token {
    sightings: Vec<Sighting>,
    generation: u64,
}

/// The correlator of one peer. See the crate docs for how to drive it.
#[derive(Debug)]
pub struct Correlator {
    config: CorrelationConfig,
    pending: FxHashMap<Key, Pending>,
    /// `(expires at, key, generation)` in arrival order; the TTL is the same for all, so
    /// this is expiry order. Entries whose generation moved on are skipped.
    expiries: VecDeque<(i64, Key, u64)>,
    tokens: FxHashMap<String, Token>,
    /// `(idle at, token, generation)`: a new sighting pushes a new entry.
    token_idles: VecDeque<(i64, String, u64)>,
    next_generation: u64,
    counters: CorrelationCounters,
    /// Hashes of the spans taken lately, and their order for forgetting.
    recent: rustc_hash::FxHashSet<u64>,
    recent_order: VecDeque<u64>,
    /// Services that reported spans here (up to [`SERVICES_MAX`]): no virtual nodes.
    services: rustc_hash::FxHashSet<NodeName>,
    /// Of those, the ones that reported sampled spans: a caller half of any probability
    /// that names one and waited in vain lost its other half to that sampler.
    sampled_services: rustc_hash::FxHashSet<NodeName>,
}

/// Most services remembered as reporting spans.
const SERVICES_MAX: usize = 65_536;

fn callee_fits(caller: SpanKind, callee: SpanKind) -> bool {
    matches!(
        (caller, callee),
        (SpanKind::Client, SpanKind::Server) | (SpanKind::Producer, SpanKind::Consumer)
    )
}

fn is_caller(kind: SpanKind) -> bool {
    matches!(kind, SpanKind::Client | SpanKind::Producer)
}

/// The key under which a span meets its other half, if it has one to meet.
fn meeting_key(span: &Span) -> Option<Key> {
    match span.kind {
        SpanKind::Client | SpanKind::Producer => Some((span.trace_id, span.span_id)),
        SpanKind::Server | SpanKind::Consumer => span.parent_span_id.map(|parent| (span.trace_id, parent)),
        SpanKind::Internal => None,
    }
}

impl Correlator {
    /// An empty correlator.
    pub fn new(config: CorrelationConfig) -> Self {
        Self {
            config,
            pending: FxHashMap::default(),
            expiries: VecDeque::new(),
            tokens: FxHashMap::default(),
            token_idles: VecDeque::new(),
            next_generation: 0,
            counters: CorrelationCounters::default(),
            recent: rustc_hash::FxHashSet::default(),
            recent_order: VecDeque::new(),
            services: rustc_hash::FxHashSet::default(),
            sampled_services: rustc_hash::FxHashSet::default(),
        }
    }

    /// Whether `span` was taken lately (a retried export); remembers it if not. A 64-bit
    /// hash stands for the span: two different spans share one with odds of about
    /// `recent_spans_max` in 2^64, far below any other loss.
    fn seen_lately(&mut self, span: &Span) -> bool {
        if self.services.len() < SERVICES_MAX && !self.services.contains(&span.service) {
            self.services.insert(span.service.clone());
        }
        if span.sampling_threshold > 0
            && self.sampled_services.len() < SERVICES_MAX
            && !self.sampled_services.contains(&span.service)
        {
            self.sampled_services.insert(span.service.clone());
        }
        if self.config.recent_spans_max == 0 || span.kind == SpanKind::Internal {
            return false;
        }
        let key = recent_key(span);
        if !self.recent.insert(key) {
            self.counters.spans_duplicate += 1;
            return true;
        }
        self.recent_order.push_back(key);
        while self.recent_order.len() > self.config.recent_spans_max {
            if let Some(old) = self.recent_order.pop_front() {
                self.recent.remove(&old);
            }
        }
        false
    }

    /// Counters since start.
    pub fn counters(&self) -> CorrelationCounters {
        CorrelationCounters {
            spans_pending: self.pending_spans() as u64,
            tokens_pending: self.tokens.len() as u64,
            ..self.counters.clone()
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CorrelationConfig {
        &self.config
    }

    fn pending_spans(&self) -> usize {
        self.counters.spans_pending as usize
    }

    /// When [`Correlator::handle_tick`] has something to do next.
    pub fn poll_timeout(&self) -> Option<i64> {
        let spans = self.expiries.front().map(|e| e.0);
        let tokens = self.token_idles.front().map(|e| e.0);
        spans.into_iter().chain(tokens).min()
    }

    /// Spans reported to this peer. `local` is this peer and `peers` every live peer
    /// (this one included); a half that neither pairs within `spans` nor with a half held
    /// here goes to its trace's owner among `peers`, or stays here if that is us.
    pub fn handle_spans(&mut self, now_ms: i64, spans: Vec<Span>, local: &str, peers: &[String]) -> Output {
        self.counters.spans_in += spans.len() as u64;
        let mut out = Output::default();
        // Callers in this batch by meeting key: halves that arrive together pair here.
        let mut callers: FxHashMap<Key, (usize, bool)> = FxHashMap::default();
        let mut halves = Vec::with_capacity(spans.len());
        for span in spans {
            if self.seen_lately(&span) || self.take_immediate(&span, &mut out.events) {
                continue;
            }
            if is_caller(span.kind) {
                let key = (span.trace_id, span.span_id);
                callers.entry(key).or_insert((halves.len(), false));
            }
            halves.push(Some(span));
        }
        if !callers.is_empty() {
            for i in 0..halves.len() {
                let Some(callee) = halves[i].as_ref().filter(|s| !is_caller(s.kind)) else { continue };
                let Some(key) = meeting_key(callee) else { continue };
                let Some(&(at, _)) = callers.get(&key) else { continue };
                let (Some(caller), Some(callee)) = (halves[at].as_ref(), halves[i].as_ref()) else {
                    continue;
                };
                if !callee_fits(caller.kind, callee.kind) {
                    continue;
                }
                let caller_kind = caller.kind;
                self.paired_events(caller, callee, &mut out.events);
                halves[i] = None;
                if caller_kind == SpanKind::Client {
                    halves[at] = None;
                } else if let Some(entry) = callers.get_mut(&key) {
                    entry.1 = true;
                }
            }
        }
        let mut by_owner: FxHashMap<&str, Handoff> = FxHashMap::default();
        for (i, span) in halves.into_iter().enumerate() {
            let Some(span) = span else { continue };
            let key = meeting_key(&span).expect("immediate spans were taken above");
            // A producer that met a consumer here keeps waiting here for more.
            let paired_here =
                is_caller(span.kind) && callers.get(&key).is_some_and(|&(at, paired)| at == i && paired);
            let owner = owner(&span.trace_id.to_le_bytes(), peers).map_or(local, String::as_str);
            if paired_here || owner == local || self.pending.contains_key(&key) {
                self.take_owned(now_ms, span, paired_here, &mut out.events);
            } else {
                by_owner.entry(owner).or_default().spans.push(span);
            }
        }
        for (peer, handoff) in by_owner {
            self.counters.spans_handed_off += handoff.spans.len() as u64;
            out.handoffs.push((peer.to_string(), handoff));
        }
        self.evict(&mut out.events);
        out
    }

    /// Halves and sightings another peer handed to us as their owner. They are held
    /// here whatever our own view of the owner is, so nothing travels in circles.
    pub fn handle_handoff(&mut self, now_ms: i64, handoff: Handoff) -> Vec<Event> {
        self.counters.spans_handed_in += handoff.spans.len() as u64;
        self.counters.sightings_handed_in += handoff.sightings.len() as u64;
        self.take_handoff(now_ms, handoff, true)
    }

    /// A handoff this peer made that could not be sent (the mesh's queue was full or
    /// closed): correlated here after all. Its spans were remembered when they were
    /// taken, so they are not taken for retries now.
    pub fn take_back(&mut self, now_ms: i64, handoff: Handoff) -> Vec<Event> {
        self.counters.spans_handed_off -= (handoff.spans.len() as u64).min(self.counters.spans_handed_off);
        self.counters.sightings_handed_off -=
            (handoff.sightings.len() as u64).min(self.counters.sightings_handed_off);
        self.take_handoff(now_ms, handoff, false)
    }

    /// The keys under which [`Correlator::handle_spans`] remembers `spans`, for
    /// [`Correlator::forget`].
    pub fn recent_keys(spans: &[Span]) -> Vec<u64> {
        spans.iter().filter(|s| s.kind != SpanKind::Internal).map(recent_key).collect()
    }

    /// Forgets spans taken lately whose events could not be applied (the writer refused
    /// them): the client is told to retry, and the retry must count.
    pub fn forget(&mut self, keys: &[u64]) {
        for key in keys {
            self.recent.remove(key);
        }
    }

    fn take_handoff(&mut self, now_ms: i64, handoff: Handoff, check_recent: bool) -> Vec<Event> {
        let mut events = Vec::new();
        for span in handoff.spans {
            if check_recent && self.seen_lately(&span) {
                continue;
            }
            if !self.take_immediate(&span, &mut events) {
                self.take_owned(now_ms, span, false, &mut events);
            }
        }
        for sighting in handoff.sightings {
            self.take_sighting(now_ms, sighting);
        }
        self.evict(&mut events);
        events
    }

    /// A handoff this peer sent that `failed` did not take (it went away before
    /// acknowledging it, or was too busy): each half and sighting goes to its owner among
    /// `peers` without `failed`, or is held here if that is us. Already remembered, so not
    /// taken for retries.
    pub fn reroute(
        &mut self,
        now_ms: i64,
        handoff: Handoff,
        failed: &str,
        local: &str,
        peers: &[String],
    ) -> Output {
        self.counters.spans_rerouted += handoff.spans.len() as u64;
        self.counters.spans_handed_off -= (handoff.spans.len() as u64).min(self.counters.spans_handed_off);
        self.counters.sightings_handed_off -=
            (handoff.sightings.len() as u64).min(self.counters.sightings_handed_off);
        let peers: Vec<String> = peers.iter().filter(|p| p.as_str() != failed).cloned().collect();
        let mut out = Output::default();
        let mut by_owner: FxHashMap<&str, Handoff> = FxHashMap::default();
        let mut here = Handoff::default();
        for span in handoff.spans {
            let owner = owner(&span.trace_id.to_le_bytes(), &peers).map_or(local, String::as_str);
            if owner == local || meeting_key(&span).is_some_and(|key| self.pending.contains_key(&key)) {
                here.spans.push(span);
            } else {
                by_owner.entry(owner).or_default().spans.push(span);
            }
        }
        for sighting in handoff.sightings {
            let owner = owner(sighting.token.as_bytes(), &peers).map_or(local, String::as_str);
            if owner == local || self.tokens.contains_key(&sighting.token) {
                here.sightings.push(sighting);
            } else {
                by_owner.entry(owner).or_default().sightings.push(sighting);
            }
        }
        out.events = self.take_handoff(now_ms, here, false);
        for (peer, handoff) in by_owner {
            self.counters.spans_handed_off += handoff.spans.len() as u64;
            self.counters.sightings_handed_off += handoff.sightings.len() as u64;
            out.handoffs.push((peer.to_string(), handoff));
        }
        out
    }

    /// Sightings reported to this peer: kept here if we own their token, else handed off.
    pub fn handle_sightings(
        &mut self,
        now_ms: i64,
        sightings: Vec<Sighting>,
        local: &str,
        peers: &[String],
    ) -> Output {
        self.counters.sightings_in += sightings.len() as u64;
        let mut out = Output::default();
        let mut by_owner: FxHashMap<&str, Handoff> = FxHashMap::default();
        for sighting in sightings {
            let owner = owner(sighting.token.as_bytes(), peers).map_or(local, String::as_str);
            if owner == local || self.tokens.contains_key(&sighting.token) {
                self.take_sighting(now_ms, sighting);
            } else {
                by_owner.entry(owner).or_default().sightings.push(sighting);
            }
        }
        for (peer, handoff) in by_owner {
            self.counters.sightings_handed_off += handoff.sightings.len() as u64;
            out.handoffs.push((peer.to_string(), handoff));
        }
        self.evict(&mut out.events);
        out
    }

    /// Counts `spans` halves the previous run held when it crashed.
    pub fn note_lost_in_crash(&mut self, spans: u64) {
        self.counters.spans_lost_in_crash += spans;
    }

    /// Gives up halves whose time is up (virtual-node edges where their attributes name
    /// the other side) and turns quiet tokens into edges.
    pub fn handle_tick(&mut self, now_ms: i64) -> Vec<Event> {
        let mut events = Vec::new();
        while let Some(&(at, key, generation)) = self.expiries.front() {
            if at > now_ms {
                break;
            }
            self.expiries.pop_front();
            self.expire(key, generation, &mut events);
        }
        while let Some((at, _, _)) = self.token_idles.front() {
            if *at > now_ms {
                break;
            }
            let (_, token, generation) = self.token_idles.pop_front().expect("front exists");
            if self.tokens.get(&token).is_some_and(|t| t.generation == generation) {
                self.flush_token(&token, &mut events);
            }
        }
        events
    }

    /// Spans that are edges on their own, wherever they land. Returns whether taken.
    fn take_immediate(&mut self, span: &Span, events: &mut Vec<Event>) -> bool {
        match (span.kind, span.parent_span_id, &span.remote) {
            (SpanKind::Internal, ..) => {
                self.counters.spans_internal += 1;
                true
            }
            (SpanKind::Server, None, _) => {
                self.counters.edges_root += 1;
                let edge = Edge::new(self.config.entry_node.clone(), span.service.clone())
                    .with_virtual(VirtualSide::Client);
                one_sided(&mut self.counters, edge, span, Some(span.duration_us()), events);
                true
            }
            (SpanKind::Consumer, None, remote) => {
                self.consumer_without_producer(span, remote.as_ref(), events);
                true
            }
            // Databases are not instrumented: no SERVER span will come.
            (SpanKind::Client, _, Some(Remote { node, kind: EdgeKind::Database })) => {
                self.counters.edges_virtual += 1;
                let edge = Edge::with_kind(span.service.clone(), node.clone(), EdgeKind::Database)
                    .with_virtual(VirtualSide::Server);
                one_sided(&mut self.counters, edge, span, Some(span.duration_us()), events);
                true
            }
            _ => false,
        }
    }

    fn consumer_without_producer(&mut self, span: &Span, remote: Option<&Remote>, events: &mut Vec<Event>) {
        match remote {
            Some(remote) => {
                self.counters.edges_virtual += 1;
                let edge = Edge::with_kind(remote.node.clone(), span.service.clone(), EdgeKind::Messaging)
                    .with_virtual(VirtualSide::Client);
                one_sided(&mut self.counters, edge, span, None, events);
            }
            None => self.counters.spans_unpaired += 1,
        }
    }

    /// The edge of a caller and its callee. Under consistent sampling (a trace's halves
    /// kept by one random value against each service's threshold) a pair is kept with the
    /// stricter of its halves' probabilities, so it stands for the larger adjusted count.
    fn paired_events(&mut self, caller: &Span, callee: &Span, events: &mut Vec<Event>) {
        self.counters.edges_paired += 1;
        let adjusted = caller.adjusted_count().max(callee.adjusted_count());
        // Failed if either half failed, for every kind (as Tempo and the Collector).
        let error = callee.error || caller.error;
        if caller.kind == SpanKind::Producer {
            let edge = Edge::with_kind(caller.service.clone(), callee.service.clone(), EdgeKind::Messaging);
            let transit_us = callee.start_ns.saturating_sub(caller.end_ns) / 1_000;
            weighted(
                &mut self.counters,
                edge,
                caller,
                callee.start_ms(),
                Some(transit_us),
                error,
                adjusted,
                events,
            );
        } else {
            let edge = Edge::new(caller.service.clone(), callee.service.clone());
            weighted(
                &mut self.counters,
                edge,
                caller,
                callee.start_ms(),
                Some(callee.duration_us()),
                error,
                adjusted,
                events,
            );
        }
    }

    /// A half whose trace we own: pair it with what waits here, or make it wait.
    fn take_owned(&mut self, now_ms: i64, span: Span, already_paired: bool, events: &mut Vec<Event>) {
        let key = meeting_key(&span).expect("only halves come here");
        let Some(pending) = self.pending.get_mut(&key) else {
            let half = if is_caller(span.kind) {
                Half::Caller { span, paired: already_paired }
            } else {
                Half::Callees(vec![span])
            };
            self.hold(now_ms, key, half);
            return;
        };
        match (&mut pending.half, is_caller(span.kind)) {
            (Half::Caller { .. }, true) => self.counters.spans_duplicate += 1,
            (Half::Caller { span: caller, paired }, false) => {
                if !callee_fits(caller.kind, span.kind) {
                    self.counters.spans_unpaired += 1;
                    return;
                }
                let caller_kind = caller.kind;
                *paired = true;
                let caller = caller.clone();
                self.paired_events(&caller, &span, events);
                if caller_kind == SpanKind::Client {
                    self.release(key);
                }
            }
            (Half::Callees(callees), false) => {
                if callees.iter().any(|c| c.span_id == span.span_id) {
                    self.counters.spans_duplicate += 1;
                } else {
                    callees.push(span);
                    self.counters.spans_pending += 1;
                }
            }
            (Half::Callees(_), true) => {
                let Some(Pending { half: Half::Callees(callees), .. }) = self.pending.remove(&key) else {
                    unreachable!("matched above")
                };
                self.counters.spans_pending -= callees.len() as u64;
                let mut paired = false;
                for callee in &callees {
                    if callee_fits(span.kind, callee.kind) {
                        self.paired_events(&span, callee, events);
                        paired = true;
                    } else {
                        self.counters.spans_unpaired += 1;
                    }
                }
                if span.kind == SpanKind::Producer || !paired {
                    // Producers wait for more consumers; a client whose callees did not
                    // fit still waits for its own.
                    self.hold(now_ms, key, Half::Caller { span, paired });
                }
            }
        }
    }

    fn hold(&mut self, now_ms: i64, key: Key, half: Half) {
        let generation = self.next_generation;
        self.next_generation += 1;
        self.counters.spans_pending += match &half {
            Half::Caller { .. } => 1,
            Half::Callees(callees) => callees.len() as u64,
        };
        self.pending.insert(key, Pending { half, generation });
        self.expiries.push_back((now_ms.saturating_add(self.config.pending_ttl_ms), key, generation));
    }

    /// Forgets a pending entry that was paired (its expiry entry goes stale).
    fn release(&mut self, key: Key) {
        if let Some(pending) = self.pending.remove(&key) {
            self.counters.spans_pending -= match pending.half {
                Half::Caller { .. } => 1,
                Half::Callees(callees) => callees.len() as u64,
            };
        }
    }

    /// Gives up a pending entry: virtual-node edges where the attributes allow.
    fn expire(&mut self, key: Key, generation: u64, events: &mut Vec<Event>) {
        if self.pending.get(&key).is_none_or(|p| p.generation != generation) {
            return;
        }
        let pending = self.pending.remove(&key).expect("checked above");
        match pending.half {
            Half::Caller { paired: true, .. } => self.counters.spans_pending -= 1,
            Half::Caller { span, paired: false } => {
                self.counters.spans_pending -= 1;
                match &span.remote {
                    // A service that reports spans is no virtual node: a stricter sampler
                    // there dropped the other half.
                    Some(remote)
                        if (span.adjusted_count() > 1.0 && self.services.contains(&remote.node))
                            || self.sampled_services.contains(&remote.node) =>
                    {
                        self.counters.spans_unpaired_sampled += 1;
                    }
                    Some(remote) => {
                        self.counters.edges_virtual += 1;
                        let (kind, latency_us) = match span.kind {
                            SpanKind::Producer => (EdgeKind::Messaging, None),
                            _ => (remote.kind, Some(span.duration_us())),
                        };
                        let edge = Edge::with_kind(span.service.clone(), remote.node.clone(), kind)
                            .with_virtual(VirtualSide::Server);
                        one_sided(&mut self.counters, edge, &span, latency_us, events);
                    }
                    // A sampled half naming nothing: its callee's sampler likely dropped the
                    // other half; the kept pairs count these calls.
                    None if span.adjusted_count() > 1.0 => self.counters.spans_unpaired_sampled += 1,
                    None => match (&self.config.unknown_node, span.kind) {
                        (Some(unknown), SpanKind::Client) => {
                            self.counters.edges_virtual += 1;
                            self.counters.edges_unknown += 1;
                            let edge = Edge::new(span.service.clone(), unknown.clone())
                                .with_virtual(VirtualSide::Server);
                            one_sided(&mut self.counters, edge, &span, Some(span.duration_us()), events);
                        }
                        _ => self.counters.spans_unpaired += 1,
                    },
                }
            }
            Half::Callees(callees) => {
                self.counters.spans_pending -= callees.len() as u64;
                for callee in callees {
                    match callee.kind {
                        SpanKind::Consumer => {
                            self.consumer_without_producer(&callee, callee.remote.as_ref(), events)
                        }
                        _ => self.counters.spans_unpaired += 1,
                    }
                }
            }
        }
    }

    /// Gives up the oldest halves and tokens while over the limits.
    fn evict(&mut self, events: &mut Vec<Event>) {
        while self.pending_spans() > self.config.pending_spans_max {
            let Some((_, key, generation)) = self.expiries.pop_front() else { break };
            if self.pending.get(&key).is_some_and(|p| p.generation == generation) {
                let before = self.pending_spans();
                self.expire(key, generation, events);
                self.counters.spans_evicted += (before - self.pending_spans()) as u64;
            }
        }
        while self.tokens.len() > self.config.tokens_max {
            let Some((_, token, generation)) = self.token_idles.pop_front() else { break };
            if self.tokens.get(&token).is_some_and(|t| t.generation == generation) {
                self.counters.tokens_evicted += 1;
                self.flush_token(&token, events);
            }
        }
    }

    fn take_sighting(&mut self, now_ms: i64, sighting: Sighting) {
        let generation = self.next_generation;
        self.next_generation += 1;
        let limit = self.config.sightings_per_token_max;
        let token = self
            .tokens
            .entry(sighting.token.clone())
            .or_insert_with(|| Token { sightings: Vec::new(), generation });
        if token.sightings.len() >= limit {
            self.counters.sightings_dropped += 1;
            return;
        }
        token.generation = generation;
        let name = sighting.token.clone();
        token.sightings.push(sighting);
        self.token_idles.push_back((now_ms.saturating_add(self.config.idle_ms), name, generation));
        // Stale idle entries pile up for busy tokens; compact when they dominate.
        if self.token_idles.len() > 4 * self.tokens.len() + 1024 {
            let tokens = &self.tokens;
            self.token_idles.retain(|(_, t, g)| tokens.get(t).is_some_and(|e| e.generation == *g));
        }
    }

    /// A quiet token: edges between consecutive nodes in time order.
    fn flush_token(&mut self, token: &str, events: &mut Vec<Event>) {
        let Some(Token { mut sightings, .. }) = self.tokens.remove(token) else { return };
        sightings.sort_by(|a, b| a.ts_ms.cmp(&b.ts_ms).then_with(|| a.node.cmp(&b.node)));
        for pair in sightings.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            if a.node == b.node {
                continue;
            }
            self.counters.edges_from_tokens += 1;
            let edge = Edge::with_kind(a.node.clone(), b.node.clone(), b.kind);
            let transit_us = (b.ts_ms - a.ts_ms).max(0) as u64 * 1_000;
            events.push(event(edge, b.ts_ms, Some(transit_us), b.error));
        }
    }
}

/// The key a span is remembered under: a 64-bit hash of trace, span id and kind.
fn recent_key(span: &Span) -> u64 {
    let mut hasher = rustc_hash::FxHasher::default();
    (span.trace_id, span.span_id, span.kind as u8).hash(&mut hasher);
    // FxHash mixes little; spread the bits before using them as a set key.
    hasher.finish().wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29)
}

/// The event of one call, or of the `adjusted` calls a sampled one stands for: rounded up
/// or down at random, seeded by the call's trace and span ids (so every peer and every
/// retry rounds the same way), as an estimated edge, with one latency sample per sampled
/// call.
#[allow(clippy::too_many_arguments)]
fn weighted(
    counters: &mut CorrelationCounters,
    edge: Edge,
    call: &Span,
    ts_ms: i64,
    latency_us: Option<u64>,
    error: bool,
    adjusted: f64,
    events: &mut Vec<Event>,
) {
    if adjusted <= 1.0 {
        events.push(event(edge, ts_ms, latency_us, error));
        return;
    }
    counters.edges_estimated += 1;
    let count = stochastic_round(adjusted, call.trace_id, call.span_id);
    let edge = edge.with_estimated(true);
    events.push(event(edge.clone(), ts_ms, latency_us, error));
    if count > 1 {
        events.push(Event { count: count - 1, ..event(edge, ts_ms, None, error) });
    }
}

/// The event of a call counted from one half alone: at the span's start, failed if it
/// failed, weighted by its own adjusted count.
fn one_sided(
    counters: &mut CorrelationCounters,
    edge: Edge,
    span: &Span,
    latency_us: Option<u64>,
    events: &mut Vec<Event>,
) {
    weighted(counters, edge, span, span.start_ms(), latency_us, span.error, span.adjusted_count(), events);
}

/// `x` rounded down or up, up with probability `x - floor(x)`, by a uniform draw that
/// the ids determine (splitmix64 of the trace and span ids).
fn stochastic_round(x: f64, trace_id: u128, span_id: u64) -> u64 {
    let mut z = (trace_id as u64)
        ^ ((trace_id >> 64) as u64).rotate_left(17)
        ^ span_id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let uniform = (z >> 11) as f64 / (1u64 << 53) as f64;
    let floor = x.floor();
    floor as u64 + u64::from(uniform < x - floor)
}

fn event(edge: Edge, ts_ms: i64, latency_us: Option<u64>, error: bool) -> Event {
    Event { edge, ts_ms, latency_us, error, bytes: 0, count: 1 }
}
