//! The flow-graph CRDT: per-origin cells stamped with seqs, and the global view.
//!
//! # Driving contract
//! `FlowState` performs no IO and never reads the clock: every operation that depends on
//! time takes `now_ms` (milliseconds since the Unix epoch) from the caller.
//!
//! - Restore what was persisted with [`FlowState::restore_origin`], then take a fresh
//!   incarnation with [`FlowState::set_local`] before the first write.
//! - Feed client events with [`FlowState::apply_local`]; persist the cells it names as
//!   changed (read them back with [`FlowState::cell`]).
//! - Sync: send [`FlowState::version_vector`], answer with [`FlowState::delta_since`],
//!   take peers' deltas with [`FlowState::merge_delta`] (it rejects corrupt ones whole).
//! - Call [`FlowState::expire`] now and then; delete the cells it returns.
//! - Read the global view with the queries in [`crate::query`].

use std::collections::{BTreeMap, BTreeSet, btree_map};
use std::ops::Bound::{Excluded, Unbounded};

use crdts::{CvRDT, VClock};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use crate::histogram::COUNT_MAX;
use crate::model::{Cell, CellData, CellKey, Edge, Event, NodeName, Origin};
use crate::settings::{Limits, Settings, human_ms};

/// Highest seq an origin may reach (2^48): a peer's delta claiming more is refused.
pub const SEQ_MAX: u64 = 1 << 48;

/// `origin -> seq`: "I hold every change of that origin up to this seq".
pub type VersionVector = VClock<Origin>;

/// One page of one origin's cells, in the wire-neutral form used by sync and by full
/// merges.
///
/// A page holds every cell of the origin whose latest seq at the sender lies above
/// `after_seq`, up to the page's end. A `complete` page holds all of them; its receiver
/// then holds every change of the origin up to `to_seq` (the sender's version vector
/// entry), provided the page starts at or below the receiver's own entry or continues a
/// chain of pages the receiver took from the same sender (see [`Transfer`]). A page cut
/// short claims nothing by itself: a cell changed below the cut and again above it is
/// only in a later page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OriginDelta {
    /// Whose cells these are.
    pub origin: Origin,
    /// The page holds cells whose latest seq lies above this one.
    pub after_seq: u64,
    /// Where the next page of a cut transfer starts (the cut point; at most the sender's
    /// own version vector entry, so changes the sender learns later lie above it).
    pub upto_seq: u64,
    /// Whether the page holds every cell of the sender above `after_seq`.
    pub complete: bool,
    /// The sender's version vector entry for the origin.
    pub to_seq: u64,
    /// The origin's own clock at its newest change, if known (complete pages only).
    pub changed_at_ms: Option<i64>,
    /// The cells, each at its latest version at the sender.
    pub cells: Vec<(CellKey, Cell)>,
    /// The sender's own origin (its current run), if it has one. Resume points are only
    /// valid with the run that cut the transfer: a restarted sender may hold less.
    pub sender: Option<Origin>,
}

impl OriginDelta {
    /// Every cell of an origin, claiming `seq`.
    pub fn whole(origin: Origin, seq: u64, changed_at_ms: Option<i64>, cells: Vec<(CellKey, Cell)>) -> Self {
        let upto_seq = cells.iter().map(|(_, c): &(CellKey, Cell)| c.seq).max().unwrap_or(0).max(seq);
        OriginDelta {
            origin,
            after_seq: 0,
            upto_seq,
            complete: true,
            to_seq: seq,
            changed_at_ms,
            cells,
            sender: None,
        }
    }
}

/// The receiving side of paged transfers from one peer: where each cut transfer resumes.
///
/// Keep one per peer for as long as that peer runs (start afresh when it restarts or
/// reconnects), send [`Transfer::resume_points`] along with the version vector, and pass
/// it to [`FlowState::merge_delta`] with every page from that peer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    resume: BTreeMap<Origin, u64>,
    /// Per cut transfer, the highest seq its pages so far can vouch for (see
    /// [`FlowState::merge_delta`]); absent means no limit.
    claim_max: BTreeMap<Origin, u64>,
    sender: Option<Origin>,
}

impl Transfer {
    /// Per origin, the seq after which the sender should continue.
    pub fn resume_points(&self) -> &BTreeMap<Origin, u64> {
        &self.resume
    }
}

/// What a receiver tells a sender it holds, built by [`FlowState::sync_request`].
///
/// Besides the version vector and the resume points of cut transfers, it carries per
/// origin a digest of the cells held *above* the version vector entry (cells from
/// transfers that were cut and never finished). A sender whose cells above that entry
/// have the same digest has nothing to add, so such cells are not sent back and forth
/// for ever; they spread until every peer holds the same set, and then stop.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// The receiver's version vector.
    pub known: VersionVector,
    /// Where cut transfers from this sender resume (see [`Transfer`]).
    pub resume: BTreeMap<Origin, u64>,
    /// Per origin, the digest of the `(key, seq)` of the cells held above `known`
    /// (absent when there are none).
    pub above: BTreeMap<Origin, u64>,
}

/// Why an event from a client was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The timestamp lies too far in the future.
    #[error("{} in the future, more than ingest.max_clock_skew ({})", human_ms(*ahead_ms), human_ms(*limit_ms))]
    InFuture {
        /// How far ahead of the peer's clock.
        ahead_ms: i64,
        /// The configured limit.
        limit_ms: i64,
    },
    /// The timestamp lies too far in the past.
    #[error("{} in the past, more than ingest.max_lateness ({})", human_ms(*behind_ms), human_ms(*limit_ms))]
    TooLate {
        /// How far behind the peer's clock.
        behind_ms: i64,
        /// The configured limit.
        limit_ms: i64,
    },
    /// The event would add a node beyond `limits.nodes_max`.
    #[error("would add a node beyond limits.nodes_max ({0})")]
    NodesMax(usize),
    /// The event would add an edge beyond `limits.edges_max`.
    #[error("would add an edge beyond limits.edges_max ({0})")]
    EdgesMax(usize),
    /// A counter of the edge would overflow: the calls (field `count`) or the bytes.
    #[error("the edge's {field} counter would overflow")]
    Overflow {
        /// The field whose counter would overflow.
        field: &'static str,
    },
}

impl Rejection {
    /// The event field the rejection is about.
    pub fn field(&self) -> &'static str {
        match self {
            Rejection::InFuture { .. } | Rejection::TooLate { .. } => "ts",
            Rejection::NodesMax(_) | Rejection::EdgesMax(_) => "to",
            Rejection::Overflow { field } => field,
        }
    }

    /// A short stable name for counting rejections by reason.
    pub fn reason_code(&self) -> &'static str {
        match self {
            Rejection::InFuture { .. } => "ts_in_future",
            Rejection::TooLate { .. } => "ts_too_late",
            Rejection::NodesMax(_) => "nodes_max",
            Rejection::EdgesMax(_) => "edges_max",
            Rejection::Overflow { .. } => "overflow",
        }
    }
}

/// What [`FlowState::apply_local`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LocalOutcome {
    /// Events applied.
    pub accepted: usize,
    /// Events whose flow was new beyond `limits.flows_max`, applied in [`OTHER_FLOW`].
    pub flows_folded: usize,
    /// Events not applied, by index in the input, with the reason.
    pub rejected: Vec<(usize, Rejection)>,
    /// Keys of the local origin's cells that changed (sorted, without duplicates).
    pub changed: Vec<CellKey>,
}

/// Why a peer's delta (or a whole state) was refused; nothing of it was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    /// The two states use different mesh-wide settings.
    #[error("settings differ (fingerprint {ours} here, {theirs} there)")]
    SettingsMismatch {
        /// Our fingerprint.
        ours: String,
        /// Theirs.
        theirs: String,
    },
    /// The delta claims changes of our own origin that we never made.
    #[error("claims seq {claimed} of our own origin {origin}, which is only at {ours}")]
    OwnOrigin {
        /// Our origin.
        origin: Origin,
        /// The seq claimed.
        claimed: u64,
        /// Our seq.
        ours: u64,
    },
    /// The page's range is inverted, or a cell lies at or below its start.
    #[error(
        "origin {origin}: cell seq {seq} not above the page's start {after}, or the page ends before it starts ({upto})"
    )]
    SeqOutOfRange {
        /// The origin.
        origin: Origin,
        /// The offending cell's seq (or the page's end).
        seq: u64,
        /// The page's start.
        after: u64,
        /// The page's end.
        upto: u64,
    },
    /// A cell key names a resolution we do not have or a misaligned bucket.
    #[error("origin {origin}: bad cell key {key:?}: {reason}")]
    BadKey {
        /// The origin.
        origin: Origin,
        /// The key (boxed: keys are large, errors rare).
        key: Box<CellKey>,
        /// What is wrong.
        reason: &'static str,
    },
    /// A cell is corrupt: inconsistent, or changed without a new seq, or went down.
    #[error("origin {origin}: corrupt cell {key:?} at seq {seq}: {reason}")]
    CorruptCell {
        /// The origin.
        origin: Origin,
        /// The key (boxed: keys are large, errors rare).
        key: Box<CellKey>,
        /// The cell's seq.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
}

/// What [`FlowState::merge_delta`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergeOutcome {
    /// Cells that were newer than ours and replaced them (these need persisting).
    pub changed: Vec<CellKey>,
    /// Cells skipped because their bucket has expired here.
    pub expired: usize,
    /// Whether our version vector entry for the origin advanced.
    pub advanced: bool,
}

#[derive(Debug, Clone, Default)]
struct OriginState {
    seq: u64,
    changed_at_ms: Option<i64>,
    cells: FxHashMap<CellKey, Cell>,
    by_seq: BTreeMap<u64, Vec<CellKey>>,
}

impl OriginState {
    fn unindex(&mut self, seq: u64, key: &CellKey) {
        if let btree_map::Entry::Occupied(mut entry) = self.by_seq.entry(seq) {
            let keys = entry.get_mut();
            if let Some(at) = keys.iter().position(|k| k == key) {
                keys.swap_remove(at);
            }
            if keys.is_empty() {
                entry.remove();
            }
        }
    }

    fn index(&mut self, seq: u64, key: CellKey) {
        self.by_seq.entry(seq).or_default().push(key);
    }

    /// An order-independent digest of the `(key, seq)` of the cells above `seq` (0 for none).
    fn digest_above(&self, seq: u64) -> u64 {
        let mut buffer = Vec::new();
        let mut digest = 0u64;
        for (&cell_seq, keys) in self.by_seq.range((Excluded(seq), Unbounded)) {
            for key in keys {
                buffer.clear();
                for part in [key.edge.from.as_str().as_bytes(), b"\0", key.edge.to.as_str().as_bytes(), b"\0"]
                {
                    buffer.extend_from_slice(part);
                }
                buffer.push(key.edge.kind.code());
                buffer.push(key.resolution);
                buffer.extend_from_slice(&key.bucket_start_ms.to_le_bytes());
                buffer.extend_from_slice(&cell_seq.to_le_bytes());
                // Flows and marks are part of the key; edges without them hash as they
                // always did, so that peers agree on digests of such cells.
                if !key.edge.is_base() {
                    buffer.push(0xff);
                    if let Some(flow) = &key.edge.flow {
                        buffer.extend_from_slice(flow.as_str().as_bytes());
                    }
                    buffer.push(0);
                    buffer.push(key.edge.marks_code());
                }
                digest = digest.wrapping_add(xxhash_rust::xxh3::xxh3_64(&buffer));
            }
        }
        digest
    }
}

/// Per edge, per resolution: bucket start -> summed figures over all origins.
#[derive(Debug, Clone, Default)]
pub(crate) struct EdgeCells {
    pub(crate) per_resolution: Vec<BTreeMap<i64, CellData>>,
    /// Per resolution, the start of the earliest bucket that changed since
    /// [`FlowState::take_changes`] last looked; `i64::MAX` where none did.
    changed_from_ms: Vec<i64>,
}

impl PartialEq for EdgeCells {
    /// The figures only: what changed since someone looked is no part of the state.
    fn eq(&self, other: &Self) -> bool {
        self.per_resolution == other.per_resolution
    }
}

/// The flow that events of flows beyond `limits.flows_max` are counted in.
pub const OTHER_FLOW: &str = "other";

/// What changed in the global view since [`FlowState::take_changes`] was last called.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GlobalChanges {
    /// Each edge with a changed cell, and per resolution the start of the earliest bucket
    /// that changed (`i64::MAX` where none did).
    pub edges: Vec<(Edge, Vec<i64>)>,
    /// Bumped whenever an edge appears in or leaves the global view.
    pub edge_set_generation: u64,
}

/// Counts describing the size of a state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateStats {
    /// Distinct nodes.
    pub nodes: usize,
    /// Distinct flows.
    pub flows: usize,
    /// Distinct edges.
    pub edges: usize,
    /// Cells over all origins.
    pub cells: usize,
    /// Cells of the global view.
    pub global_cells: usize,
    /// Origins known.
    pub origins: usize,
}

/// How complete and fresh one origin's contribution is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginCoverage {
    /// The origin.
    pub origin: Origin,
    /// Highest seq of it we hold every change up to.
    pub seq: u64,
    /// The origin's clock at its newest change we hold, if known.
    pub changed_at_ms: Option<i64>,
    /// Whether this is our own current origin.
    pub local: bool,
}

/// The whole flow graph as a state-based CRDT. See the module docs for the contract.
#[derive(Debug, Clone)]
pub struct FlowState {
    settings: Settings,
    limits: Limits,
    local: Option<Origin>,
    origins: BTreeMap<Origin, OriginState>,
    pub(crate) global: FxHashMap<Edge, EdgeCells>,
    nodes: FxHashMap<NodeName, u32>,
    /// Distinct flows, each with the number of edges in it.
    flows: FxHashMap<NodeName, u32>,
    /// Bumped whenever an edge appears in or leaves the global view.
    edge_set_generation: u64,
}

impl PartialEq for FlowState {
    /// Two states are equal when they hold the same cells at the same seqs, with the same
    /// version vector and global view; which origin writes locally does not matter.
    fn eq(&self, other: &Self) -> bool {
        // An origin at seq 0 without cells holds nothing: `set_local` and full merges
        // register such origins, but delta sync never sends them and the version vector
        // leaves them out. Comparing them would tell apart states that hold the same.
        fn held(state: &FlowState) -> impl Iterator<Item = (&Origin, u64, &FxHashMap<CellKey, Cell>)> {
            state
                .origins
                .iter()
                .filter(|(_, s)| s.seq > 0 || !s.cells.is_empty())
                .map(|(origin, s)| (origin, s.seq, &s.cells))
        }
        self.settings == other.settings && held(self).eq(held(other)) && self.global == other.global
    }
}

impl FlowState {
    /// An empty state with no local origin yet.
    pub fn new(settings: Settings, limits: Limits) -> Self {
        Self {
            settings,
            limits,
            local: None,
            origins: BTreeMap::new(),
            global: FxHashMap::default(),
            edge_set_generation: 0,
            nodes: FxHashMap::default(),
            flows: FxHashMap::default(),
        }
    }

    /// The mesh-wide settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The local limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Our current origin, once set.
    pub fn local_origin(&self) -> Option<&Origin> {
        self.local.as_ref()
    }

    /// Makes `origin` the one local writes go to. It must be new: an incarnation is taken
    /// once and never reused.
    pub fn set_local(&mut self, origin: Origin) {
        assert!(
            !self.origins.contains_key(&origin),
            "incarnation {origin} was already used; incarnations must be fresh"
        );
        self.origins.insert(origin.clone(), OriginState::default());
        self.local = Some(origin);
    }

    /// Loads one origin's persisted cells and seq (at startup, before `set_local`).
    pub fn restore_origin(
        &mut self,
        origin: Origin,
        seq: u64,
        changed_at_ms: Option<i64>,
        cells: Vec<(CellKey, Cell)>,
    ) -> Result<MergeOutcome, MergeError> {
        let delta = OriginDelta::whole(origin, seq, changed_at_ms, cells);
        self.validate_delta(&delta)?;
        Ok(self.merge_validated(None, delta, &mut Transfer::default()))
    }

    /// The version vector: for each origin, the seq we hold every change up to.
    pub fn version_vector(&self) -> VersionVector {
        let mut vv = VClock::new();
        for (origin, state) in &self.origins {
            if state.seq > 0 {
                vv.dots.insert(origin.clone(), state.seq);
            }
        }
        vv
    }

    /// The seq we hold of `origin` (0 if unknown).
    pub fn origin_seq(&self, origin: &Origin) -> u64 {
        self.origins.get(origin).map_or(0, |s| s.seq)
    }

    /// The origin's clock at its newest change we hold.
    pub fn origin_changed_at_ms(&self, origin: &Origin) -> Option<i64> {
        self.origins.get(origin).and_then(|s| s.changed_at_ms)
    }

    /// One origin's cell.
    pub fn cell(&self, origin: &Origin, key: &CellKey) -> Option<&Cell> {
        self.origins.get(origin)?.cells.get(key)
    }

    /// Every cell of one origin, in no particular order.
    pub fn origin_cells(&self, origin: &Origin) -> impl Iterator<Item = (&CellKey, &Cell)> {
        self.origins.get(origin).into_iter().flat_map(|s| s.cells.iter())
    }

    /// The global view cell by cell: each key with the figures summed over all origins,
    /// in no particular order.
    pub fn global_cells(&self) -> impl Iterator<Item = (CellKey, &CellData)> + '_ {
        self.global.iter().flat_map(|(edge, cells)| {
            cells.per_resolution.iter().enumerate().flat_map(move |(resolution, buckets)| {
                buckets.iter().map(move |(&bucket_start_ms, data)| {
                    let key = CellKey { edge: edge.clone(), resolution: resolution as u8, bucket_start_ms };
                    (key, data)
                })
            })
        })
    }

    /// Every edge of the global view, in no particular order.
    pub fn edges(&self) -> impl Iterator<Item = &Edge> + '_ {
        self.global.keys()
    }

    /// The global view's cells of `edge` at `resolution` whose buckets start in `range`,
    /// oldest first.
    pub fn edge_buckets(
        &self,
        edge: &Edge,
        resolution: u8,
        range: std::ops::Range<i64>,
    ) -> impl Iterator<Item = (i64, &CellData)> + '_ {
        self.global
            .get(edge)
            .and_then(|cells| cells.per_resolution.get(usize::from(resolution)))
            .into_iter()
            .flat_map(move |buckets| buckets.range(range.clone()).map(|(&start, data)| (start, data)))
    }

    /// The edges `origin` holds cells of.
    pub fn edges_of_origin(&self, origin: &Origin) -> BTreeSet<Edge> {
        self.origins.get(origin).map(|s| s.cells.keys().map(|k| k.edge.clone()).collect()).unwrap_or_default()
    }

    /// What changed in the global view since the last call (for one consumer, which
    /// keeps derived figures up to date): edges with the earliest bucket that changed,
    /// and whether the set of edges changed.
    pub fn take_changes(&mut self) -> GlobalChanges {
        let mut edges = Vec::new();
        for (edge, cells) in &mut self.global {
            if cells.changed_from_ms.iter().any(|&from| from != i64::MAX) {
                let fresh = vec![i64::MAX; cells.changed_from_ms.len()];
                edges.push((edge.clone(), std::mem::replace(&mut cells.changed_from_ms, fresh)));
            }
        }
        edges.sort_unstable();
        GlobalChanges { edges, edge_set_generation: self.edge_set_generation }
    }

    /// Bumped whenever an edge appears in or leaves the global view.
    pub fn edge_set_generation(&self) -> u64 {
        self.edge_set_generation
    }

    /// One cell of the global view.
    pub fn global_cell(&self, key: &CellKey) -> Option<&CellData> {
        self.global.get(&key.edge)?.per_resolution.get(usize::from(key.resolution))?.get(&key.bucket_start_ms)
    }

    /// Every origin we hold, with its seq and freshness.
    pub fn coverage(&self) -> Vec<OriginCoverage> {
        self.origins
            .iter()
            .map(|(origin, s)| OriginCoverage {
                origin: origin.clone(),
                seq: s.seq,
                changed_at_ms: s.changed_at_ms,
                local: self.local.as_ref() == Some(origin),
            })
            .collect()
    }

    /// Size of the state.
    pub fn stats(&self) -> StateStats {
        StateStats {
            nodes: self.nodes.len(),
            flows: self.flows.len(),
            edges: self.global.len(),
            cells: self.origins.values().map(|s| s.cells.len()).sum(),
            global_cells: self
                .global
                .values()
                .map(|e| e.per_resolution.iter().map(BTreeMap::len).sum::<usize>())
                .sum(),
            origins: self.origins.len(),
        }
    }

    /// Applies a batch of client events to the local origin.
    ///
    /// Events outside the time window or beyond the node and edge limits are rejected one
    /// by one; the rest are applied. The batch takes the next seq (several, when it
    /// touches more than `limits.cells_per_seq_max` cells).
    ///
    /// # Panics
    /// If no local origin was set: writing without an incarnation is a bug.
    pub fn apply_local(&mut self, now_ms: i64, events: &[Event]) -> LocalOutcome {
        let local = self.local.clone().expect("apply_local before set_local");
        let mut outcome = LocalOutcome::default();
        let finest = self.settings.resolutions()[0].clone();

        // Pass 1: validate and aggregate by (edge, finest bucket).
        let mut groups: FxHashMap<(Edge, i64), (CellData, Vec<u32>)> = FxHashMap::default();
        let mut new_edges: FxHashSet<Edge> = FxHashSet::default();
        let mut new_nodes: FxHashSet<NodeName> = FxHashSet::default();
        let mut new_flows: FxHashSet<NodeName> = FxHashSet::default();
        for (index, event) in events.iter().enumerate() {
            let folded;
            let (event, was_folded) = match self.fold_flow(event, &new_flows) {
                Some(with_other) => {
                    folded = with_other;
                    (&folded, true)
                }
                None => (event, false),
            };
            if let Err(rejection) = self.admit(now_ms, event, &mut new_edges, &mut new_nodes) {
                outcome.rejected.push((index, rejection));
                continue;
            }
            // Only an admitted event takes a flow's place.
            outcome.flows_folded += usize::from(was_folded);
            if let Some(flow) = &event.edge.flow
                && !self.flows.contains_key(flow)
            {
                new_flows.insert(flow.clone());
            }
            let group_key = (event.edge.clone(), finest.bucket_start(event.ts_ms));
            let (data, indices) = groups.entry(group_key).or_default();
            if data.calls.checked_add(event.count).is_none_or(|c| c > COUNT_MAX) {
                outcome.rejected.push((index, Rejection::Overflow { field: "count" }));
                continue;
            }
            if data.bytes.checked_add(event.bytes).is_none() {
                outcome.rejected.push((index, Rejection::Overflow { field: "bytes" }));
                continue;
            }
            data.calls += event.count;
            if event.error {
                data.errors += event.count;
            }
            data.bytes += event.bytes;
            if let Some(latency_us) = event.latency_us {
                data.latency.record(latency_us, event.count).expect("count fits below COUNT_MAX");
            }
            indices.push(index as u32);
        }

        // Pass 2: add each group to every resolution's cell, locally and globally.
        let mut groups: Vec<_> = groups.into_iter().collect();
        groups.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let Self { settings, limits, origins, global, nodes, flows, edge_set_generation, .. } = self;
        let origin_state = origins.get_mut(&local).expect("local origin is registered");
        let mut seq = origin_state.seq + 1;
        let mut touched_in_seq = 0;
        let mut applied_any = false;
        for ((edge, fine_bucket), (data, indices)) in groups {
            let keys: Vec<CellKey> = (0..settings.resolutions().len())
                .map(|r| CellKey {
                    edge: edge.clone(),
                    resolution: r as u8,
                    bucket_start_ms: settings.resolutions()[r].bucket_start(fine_bucket),
                })
                .collect();
            // Only our own cells must not overflow; the global view saturates instead.
            let overflowing = keys.iter().find_map(|key| {
                let cell = &origin_state.cells.get(key)?.data;
                if cell.calls.checked_add(data.calls).is_none_or(|c| c > COUNT_MAX) {
                    Some("count")
                } else if cell.bytes.checked_add(data.bytes).is_none() {
                    Some("bytes")
                } else {
                    None
                }
            });
            if let Some(field) = overflowing {
                outcome.rejected.extend(indices.iter().map(|&i| (i as usize, Rejection::Overflow { field })));
                continue;
            }
            for key in keys {
                let cell = origin_state
                    .cells
                    .entry(key.clone())
                    .or_insert_with(|| Cell { seq: 0, data: CellData::default() });
                if cell.seq != seq {
                    if touched_in_seq == limits.cells_per_seq_max {
                        seq += 1;
                        touched_in_seq = 0;
                    }
                    let old_seq = std::mem::replace(&mut cell.seq, seq);
                    cell.data.add(&data).expect("checked above: our own cell cannot overflow");
                    origin_state.unindex(old_seq, &key);
                    origin_state.index(seq, key.clone());
                    touched_in_seq += 1;
                } else {
                    cell.data.add(&data).expect("checked above: our own cell cannot overflow");
                }
                global_add(global, nodes, flows, edge_set_generation, settings, &key, &data);
                outcome.changed.push(key);
            }
            outcome.accepted += indices.len();
            applied_any = true;
        }
        if applied_any {
            origin_state.seq = seq;
            origin_state.changed_at_ms = Some(now_ms);
        }
        outcome.changed.sort_unstable();
        outcome.changed.dedup();
        outcome.rejected.sort_unstable_by_key(|(i, _)| *i);
        outcome
    }

    /// The event with its flow folded into [`OTHER_FLOW`] when its flow is new and
    /// `limits.flows_max` flows exist already; `None` when it stays as it is.
    fn fold_flow(&self, event: &Event, new_flows: &FxHashSet<NodeName>) -> Option<Event> {
        let flow = event.edge.flow.as_ref()?;
        if self.flows.contains_key(flow) || new_flows.contains(flow) {
            return None;
        }
        if self.flows.len() + new_flows.len() < self.limits.flows_max {
            return None;
        }
        let other = NodeName::new(OTHER_FLOW, OTHER_FLOW.len()).expect("a valid name");
        let mut folded = event.clone();
        folded.edge.flow = Some(other);
        Some(folded)
    }

    fn admit(
        &self,
        now_ms: i64,
        event: &Event,
        new_edges: &mut FxHashSet<Edge>,
        new_nodes: &mut FxHashSet<NodeName>,
    ) -> Result<(), Rejection> {
        let limits = &self.limits;
        let ahead = event.ts_ms.saturating_sub(now_ms);
        if ahead > limits.max_clock_skew_ms {
            return Err(Rejection::InFuture { ahead_ms: ahead, limit_ms: limits.max_clock_skew_ms });
        }
        let behind = now_ms.saturating_sub(event.ts_ms);
        if behind > limits.max_lateness_ms {
            return Err(Rejection::TooLate { behind_ms: behind, limit_ms: limits.max_lateness_ms });
        }
        if self.global.contains_key(&event.edge) || new_edges.contains(&event.edge) {
            return Ok(());
        }
        let mut fresh: Vec<&NodeName> = [&event.edge.from, &event.edge.to]
            .into_iter()
            .filter(|n| !self.nodes.contains_key(*n) && !new_nodes.contains(*n))
            .collect();
        fresh.dedup();
        if self.nodes.len() + new_nodes.len() + fresh.len() > limits.nodes_max {
            return Err(Rejection::NodesMax(limits.nodes_max));
        }
        if self.global.len() + new_edges.len() + 1 > limits.edges_max {
            return Err(Rejection::EdgesMax(limits.edges_max));
        }
        new_nodes.extend(fresh.into_iter().cloned());
        new_edges.insert(event.edge.clone());
        Ok(())
    }

    /// What to ask a sender for: our version vector, the resume points of cut transfers
    /// from that sender (`transfer`), and digests of the cells we hold above our entries.
    pub fn sync_request(&self, transfer: &Transfer) -> SyncRequest {
        let above = self
            .origins
            .iter()
            .map(|(origin, state)| (origin.clone(), state.digest_above(state.seq)))
            .filter(|(_, digest)| *digest != 0)
            .collect();
        SyncRequest { known: self.version_vector(), resume: transfer.resume.clone(), above }
    }

    /// One page of what a receiver lacks: per origin, the cells whose latest seq lies
    /// above the receiver's version vector entry (or above its resume point, when that is
    /// higher), in seq order, at most `cells_max` cells in all. The page is cut only
    /// between seqs, so its first seq may exceed `cells_max` on its own.
    ///
    /// The receiver merges the page with [`FlowState::merge_delta`] and asks again with a
    /// new [`FlowState::sync_request`] until a page teaches it nothing.
    pub fn delta_since(&self, request: &SyncRequest, cells_max: usize) -> Vec<OriginDelta> {
        self.delta_within(request, cells_max, |_, _| 1)
    }

    /// Like [`FlowState::delta_since`], but the page's budget is `budget` in units of
    /// `cost` (say, estimated bytes on the wire: see [`Cell::wire_size_hint`]). The first
    /// seq of the page is taken whatever it costs, so a page is never empty while the
    /// receiver lacks something.
    pub fn delta_within(
        &self,
        request: &SyncRequest,
        budget: usize,
        cost: impl Fn(&CellKey, &Cell) -> usize,
    ) -> Vec<OriginDelta> {
        let mut deltas = Vec::new();
        let mut budget = budget;
        for (origin, state) in &self.origins {
            let known_seq = request.known.get(origin);
            let resume = request.resume.get(origin).copied().filter(|&r| r > known_seq);
            let after_seq = resume.unwrap_or(known_seq);
            if resume.is_none()
                && state.digest_above(known_seq) == request.above.get(origin).copied().unwrap_or(0)
            {
                // The receiver holds exactly our cells above its entry: at most our claim is news.
                if state.seq > known_seq {
                    deltas.push(OriginDelta {
                        origin: origin.clone(),
                        after_seq,
                        upto_seq: after_seq,
                        complete: true,
                        to_seq: state.seq,
                        changed_at_ms: state.changed_at_ms,
                        cells: Vec::new(),
                        sender: self.local.clone(),
                    });
                }
                continue;
            }
            let mut groups = state.by_seq.range((Excluded(after_seq), Unbounded)).peekable();
            if groups.peek().is_none() && state.seq <= known_seq {
                continue;
            }
            let page_started = !deltas.is_empty();
            let mut cells = Vec::new();
            let mut last_seq = after_seq;
            let mut complete = true;
            for (&seq, keys) in groups {
                let group_cost: usize = keys.iter().map(|k| cost(k, &state.cells[k])).sum();
                if (page_started || !cells.is_empty()) && group_cost > budget {
                    complete = false;
                    break;
                }
                budget = budget.saturating_sub(group_cost);
                cells.extend(keys.iter().map(|k| (k.clone(), state.cells[k].clone())));
                last_seq = seq;
            }
            if !complete && cells.is_empty() {
                break; // Nothing of this origin fits; the next page starts with it.
            }
            // A cut may lie above our own entry (cells we hold from a transfer that is
            // itself unfinished): the receiver then vouches for no more than our entry
            // through this page (see `merge_validated`), since changes below the cut we
            // learn later would not come in the pages after it.
            deltas.push(OriginDelta {
                origin: origin.clone(),
                after_seq,
                upto_seq: last_seq,
                complete,
                to_seq: state.seq,
                changed_at_ms: if complete { state.changed_at_ms } else { None },
                cells,
                sender: self.local.clone(),
            });
            if !complete {
                break;
            }
        }
        deltas
    }

    /// How far `known` lags behind this state: the seqs it lacks, summed over origins,
    /// and the cells held here whose latest seq lies above its entries.
    pub fn lag_behind(&self, known: &VersionVector) -> (u64, u64) {
        let mut seqs = 0u64;
        let mut cells = 0u64;
        for (origin, state) in &self.origins {
            let entry = known.get(origin);
            seqs = seqs.saturating_add(state.seq.saturating_sub(entry));
            let above: usize = state.by_seq.range((Excluded(entry), Unbounded)).map(|(_, k)| k.len()).sum();
            cells = cells.saturating_add(above as u64);
        }
        (seqs, cells)
    }

    /// Checks one page from a peer the way [`FlowState::merge_delta`] does, without
    /// applying it.
    pub fn check_delta(&self, delta: &OriginDelta) -> Result<(), MergeError> {
        self.validate_delta(delta)
    }

    /// Validates and applies one page from a peer. A corrupt page is refused whole and
    /// leaves the state unchanged. Cells whose bucket expired are ignored. `transfer` is
    /// the receiving side of paged transfers from that peer (see [`Transfer`]).
    pub fn merge_delta(
        &mut self,
        now_ms: i64,
        delta: OriginDelta,
        transfer: &mut Transfer,
    ) -> Result<MergeOutcome, MergeError> {
        self.validate_delta(&delta)?;
        Ok(self.merge_validated(Some(now_ms), delta, transfer))
    }

    fn validate_delta(&self, delta: &OriginDelta) -> Result<(), MergeError> {
        let origin = &delta.origin;
        // Seqs count batches; one far beyond what any origin can reach is garbage, and
        // would leave our version vector claiming it for ever.
        let highest =
            delta.cells.iter().map(|(_, c)| c.seq).chain([delta.to_seq, delta.upto_seq]).max().unwrap_or(0);
        if highest > SEQ_MAX {
            return Err(MergeError::SeqOutOfRange {
                origin: origin.clone(),
                seq: highest,
                after: delta.after_seq,
                upto: delta.upto_seq,
            });
        }
        if let Some(local) = &self.local
            && local.peer == origin.peer
            && origin.incarnation > local.incarnation
        {
            return Err(MergeError::OwnOrigin { origin: origin.clone(), claimed: delta.to_seq, ours: 0 });
        }
        if self.local.as_ref() == Some(origin) {
            let ours = self.origin_seq(origin);
            let claimed = delta.cells.iter().map(|(_, c)| c.seq).chain([delta.to_seq]).max().unwrap_or(0);
            if claimed > ours {
                return Err(MergeError::OwnOrigin { origin: origin.clone(), claimed, ours });
            }
        }
        if delta.upto_seq < delta.after_seq {
            return Err(MergeError::SeqOutOfRange {
                origin: origin.clone(),
                seq: delta.upto_seq,
                after: delta.after_seq,
                upto: delta.upto_seq,
            });
        }
        let existing = self.origins.get(origin);
        let resolutions = self.settings.resolutions();
        let mut seen: FxHashSet<&CellKey> = FxHashSet::default();
        for (key, cell) in &delta.cells {
            if cell.seq <= delta.after_seq {
                return Err(MergeError::SeqOutOfRange {
                    origin: origin.clone(),
                    seq: cell.seq,
                    after: delta.after_seq,
                    upto: delta.upto_seq,
                });
            }
            let bad_key =
                |reason| MergeError::BadKey { origin: origin.clone(), key: Box::new(key.clone()), reason };
            let resolution =
                resolutions.get(usize::from(key.resolution)).ok_or_else(|| bad_key("unknown resolution"))?;
            if resolution.bucket_start(key.bucket_start_ms) != key.bucket_start_ms {
                return Err(bad_key("bucket start not aligned to the resolution"));
            }
            let corrupt = |reason: String| MergeError::CorruptCell {
                origin: origin.clone(),
                key: Box::new(key.clone()),
                seq: cell.seq,
                reason,
            };
            if cell.data.calls > COUNT_MAX {
                return Err(corrupt(format!("calls above {COUNT_MAX}")));
            }
            cell.data.check_consistent().map_err(|e| corrupt(e.to_string()))?;
            // A delta holds each cell once, at its latest version. Two versions of one
            // cell need not contain each other, and merging both in turn would then make
            // the figures go down (and panic in `merge_validated`), so refuse them.
            if !seen.insert(key) {
                return Err(corrupt("the delta holds this cell twice".into()));
            }
            let old = existing.and_then(|s| s.cells.get(key));
            if let Some(old) = old {
                if cell.seq == old.seq && cell.data != old.data {
                    return Err(corrupt("same seq as ours but different figures".into()));
                }
                if cell.seq > old.seq {
                    cell.data.check_contains(&old.data).map_err(|e| corrupt(e.to_string()))?;
                }
                // An older version with higher figures than ours is just as corrupt as a
                // newer one with lower figures. Checking both ways also keeps
                // `validate_merge` symmetric: a and b conflict exactly when b and a do.
                if cell.seq < old.seq {
                    old.data
                        .check_contains(&cell.data)
                        .map_err(|e| corrupt(format!("older than ours, but {e}")))?;
                }
            }
        }
        Ok(())
    }

    fn merge_validated(
        &mut self,
        now_ms: Option<i64>,
        delta: OriginDelta,
        transfer: &mut Transfer,
    ) -> MergeOutcome {
        let mut outcome = MergeOutcome::default();
        let Self { settings, origins, global, nodes, flows, local, edge_set_generation, .. } = self;
        let is_local = local.as_ref() == Some(&delta.origin);
        let state = origins.entry(delta.origin.clone()).or_default();
        for (key, cell) in delta.cells {
            if is_local {
                break; // We are the authority on our own cells; nothing newer can exist.
            }
            let resolution = &settings.resolutions()[usize::from(key.resolution)];
            if now_ms.is_some_and(|now| resolution.is_expired(key.bucket_start_ms, now)) {
                outcome.expired += 1;
                continue;
            }
            let old_seq = state.cells.get(&key).map_or(0, |c| c.seq);
            if cell.seq <= old_seq {
                continue;
            }
            let mut growth = cell.data.clone();
            if let Some(old) = state.cells.get(&key) {
                growth.subtract(&old.data).expect("validated: the new cell contains the old");
            }
            global_add(global, nodes, flows, edge_set_generation, settings, &key, &growth);
            state.unindex(old_seq, &key);
            state.index(cell.seq, key.clone());
            state.cells.insert(key.clone(), cell);
            outcome.changed.push(key);
        }
        // The page vouches for changes only when nothing between our entry and its start
        // is missing: it starts at or below our entry, or exactly where the last page we
        // took from this sender was cut.
        let origin = &delta.origin;
        if transfer.sender != delta.sender {
            // Another run of the sender (or another sender): its resume points are void.
            transfer.resume.clear();
            transfer.claim_max.clear();
            transfer.sender = delta.sender.clone();
        }
        let restarts = delta.after_seq <= state.seq;
        let chained = restarts || transfer.resume.get(origin) == Some(&delta.after_seq);
        // What the chain of pages before this one vouches for at most.
        let prior_max =
            if restarts { u64::MAX } else { transfer.claim_max.get(origin).copied().unwrap_or(u64::MAX) };
        if chained && delta.complete {
            transfer.resume.remove(origin);
            transfer.claim_max.remove(origin);
            let claim = delta.to_seq.min(prior_max);
            if claim > state.seq {
                state.seq = claim;
                outcome.advanced = true;
                if delta.changed_at_ms.is_some() && claim == delta.to_seq {
                    state.changed_at_ms = delta.changed_at_ms;
                }
            }
        } else if chained && delta.upto_seq > state.seq {
            // A page cut above the sender's own entry may lack changes the sender did not
            // hold yet at seqs between its entry and the cut; pages after the cut will
            // not bring them either. Through it the chain vouches for no more than the
            // sender's entry (or the page's start, when that is higher).
            let this_max =
                if delta.upto_seq > delta.to_seq { delta.after_seq.max(delta.to_seq) } else { u64::MAX };
            transfer.resume.insert(origin.clone(), delta.upto_seq);
            let claim_max = prior_max.min(this_max);
            if claim_max == u64::MAX {
                transfer.claim_max.remove(origin);
            } else {
                transfer.claim_max.insert(origin.clone(), claim_max);
            }
        }
        outcome
    }

    /// Seals one bucket of one resolution: packs the histograms of its cells (of
    /// every origin and of the global view) and returns every origin's cells of it, for
    /// the store to pack. Call it once the bucket ended more than `max_lateness` ago: no
    /// origin changes it any more (cells of other origins may still arrive by sync).
    pub fn seal_bucket(&mut self, resolution: u8, bucket_start_ms: i64) -> Vec<(Origin, CellKey, Cell)> {
        let mut sealed = Vec::new();
        for (edge, cells) in &mut self.global {
            let Some(global) = cells.per_resolution[usize::from(resolution)].get_mut(&bucket_start_ms) else {
                continue;
            };
            global.latency.pack();
            let key = CellKey { edge: edge.clone(), resolution, bucket_start_ms };
            for (origin, state) in &mut self.origins {
                if let Some(cell) = state.cells.get_mut(&key) {
                    cell.data.latency.pack();
                    sealed.push((origin.clone(), key.clone(), cell.clone()));
                }
            }
        }
        sealed.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        sealed
    }

    /// The oldest bucket start of a resolution in the global view, if any.
    pub fn oldest_bucket_ms(&self, resolution: u8) -> Option<i64> {
        self.global
            .values()
            .filter_map(|cells| {
                cells.per_resolution[usize::from(resolution)].first_key_value().map(|(&s, _)| s)
            })
            .min()
    }

    /// Deletes every cell (of every origin, and of the global view) whose bucket has
    /// outlived its retention at `now_ms`. Returns the deleted origin cells.
    pub fn expire(&mut self, now_ms: i64) -> Vec<(Origin, CellKey)> {
        let Self { settings, origins, global, nodes, flows, edge_set_generation, .. } = self;
        let resolutions = settings.resolutions();
        let mut expired_keys = Vec::new();
        global.retain(|edge, cells| {
            for (r, buckets) in cells.per_resolution.iter_mut().enumerate() {
                while let Some((&start, _)) = buckets.first_key_value() {
                    if !resolutions[r].is_expired(start, now_ms) {
                        break;
                    }
                    buckets.pop_first();
                    expired_keys.push(CellKey {
                        edge: edge.clone(),
                        resolution: r as u8,
                        bucket_start_ms: start,
                    });
                }
            }
            let keep = cells.per_resolution.iter().any(|b| !b.is_empty());
            if !keep {
                *edge_set_generation += 1;
                for name in [&edge.from, &edge.to] {
                    if let Some(refs) = nodes.get_mut(name) {
                        *refs -= 1;
                        if *refs == 0 {
                            nodes.remove(name);
                        }
                    }
                }
                if let Some(flow) = &edge.flow
                    && let Some(refs) = flows.get_mut(flow)
                {
                    *refs -= 1;
                    if *refs == 0 {
                        flows.remove(flow);
                    }
                }
            }
            keep
        });
        let mut removed = Vec::new();
        for key in expired_keys {
            for (origin, state) in origins.iter_mut() {
                if let Some(cell) = state.cells.remove(&key) {
                    state.unindex(cell.seq, &key);
                    removed.push((origin.clone(), key.clone()));
                }
            }
        }
        removed
    }

    /// Recomputes the global view from the origins' cells; for tests and checks.
    pub fn global_view_recomputed_matches(&self) -> bool {
        let mut fresh = FlowState::new(self.settings.clone(), self.limits.clone());
        for (origin, state) in &self.origins {
            fresh.origins.insert(origin.clone(), OriginState::default());
            for (key, cell) in &state.cells {
                global_add(
                    &mut fresh.global,
                    &mut fresh.nodes,
                    &mut fresh.flows,
                    &mut fresh.edge_set_generation,
                    &self.settings,
                    key,
                    &cell.data,
                );
            }
        }
        fresh.global == self.global && fresh.nodes.len() == self.nodes.len() && fresh.flows == self.flows
    }

    /// Every origin's cells as whole-state deltas (for full merges and snapshots).
    pub fn to_deltas(&self) -> Vec<OriginDelta> {
        self.origins
            .iter()
            .map(|(origin, s)| {
                let cells = s.cells.iter().map(|(k, c)| (k.clone(), c.clone())).collect();
                OriginDelta::whole(origin.clone(), s.seq, s.changed_at_ms, cells)
            })
            .collect()
    }
}

fn global_add(
    global: &mut FxHashMap<Edge, EdgeCells>,
    nodes: &mut FxHashMap<NodeName, u32>,
    flows: &mut FxHashMap<NodeName, u32>,
    edge_set_generation: &mut u64,
    settings: &Settings,
    key: &CellKey,
    growth: &CellData,
) {
    let cells = match global.get_mut(&key.edge) {
        Some(cells) => cells,
        None => {
            *nodes.entry(key.edge.from.clone()).or_default() += 1;
            *nodes.entry(key.edge.to.clone()).or_default() += 1;
            if let Some(flow) = &key.edge.flow {
                *flows.entry(flow.clone()).or_default() += 1;
            }
            *edge_set_generation += 1;
            global.entry(key.edge.clone()).or_insert_with(|| EdgeCells {
                per_resolution: vec![BTreeMap::new(); settings.resolutions().len()],
                changed_from_ms: vec![i64::MAX; settings.resolutions().len()],
            })
        }
    };
    let changed = &mut cells.changed_from_ms[usize::from(key.resolution)];
    *changed = (*changed).min(key.bucket_start_ms);
    cells.per_resolution[usize::from(key.resolution)]
        .entry(key.bucket_start_ms)
        .or_default()
        .add_saturating(growth);
}

impl CvRDT for FlowState {
    type Validation = MergeError;

    fn validate_merge(&self, other: &Self) -> Result<(), MergeError> {
        if self.settings != other.settings {
            return Err(MergeError::SettingsMismatch {
                ours: self.settings.fingerprint(),
                theirs: other.settings.fingerprint(),
            });
        }
        other.to_deltas().iter().try_for_each(|delta| self.validate_delta(delta))
    }

    /// Joins `other` into `self`: per `(origin, cell key)` the cell with the larger seq,
    /// version vectors by max. Call `validate_merge` first: merging corrupt state panics.
    fn merge(&mut self, other: Self) {
        for delta in other.to_deltas() {
            self.validate_delta(&delta).expect("merge of a state that failed validate_merge");
            self.merge_validated(None, delta, &mut Transfer::default());
        }
    }
}
