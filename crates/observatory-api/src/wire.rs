//! JSON answers of the API: the types clients (and the command line) read, converted at
//! the edge from the core's, the correlator's and the mesh's own types. Field names are
//! the API; a change to one is a change clients see.

use std::collections::BTreeMap;

use observatory_core::{
    Edge, Figures, GraphView, LatencySummary, OriginCoverage, SeriesView, Span, VirtualSide,
};
use observatory_correlate::CorrelationCounters;
use observatory_sync::{Agreement, Completeness, MeshCounters, MeshStatus, PeerStatus};
use serde::{Deserialize, Serialize};

use crate::time_text::{format_duration_ms, format_time};

/// Answer to `POST /api/v1/events`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IngestAnswer {
    /// Events applied.
    pub accepted: usize,
    /// Events refused.
    pub rejected: usize,
    /// Why, per event (at most `limits.errors_listed_max`).
    pub errors: Vec<IngestErrorItem>,
    /// Whether more errors happened than are listed.
    pub errors_truncated: bool,
}

/// One refused event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IngestErrorItem {
    /// Index in the body.
    pub index: usize,
    /// Field at fault.
    pub field: String,
    /// Why.
    pub reason: String,
}

/// Latency figures in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LatencyMs {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Highest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
    /// Calls that reported a latency.
    pub samples: u64,
}

impl From<LatencySummary> for LatencyMs {
    fn from(s: LatencySummary) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        LatencyMs {
            p50: ms(s.p50_us),
            p90: ms(s.p90_us),
            p95: ms(s.p95_us),
            p99: ms(s.p99_us),
            max: ms(s.max_us),
            mean: s.mean_us.round() / 1000.0,
            samples: s.samples,
        }
    }
}

/// Figures of an edge over a span.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FiguresJson {
    /// Calls.
    pub calls: u64,
    /// Failed calls.
    pub errors: u64,
    /// Errors over calls.
    pub error_ratio: f64,
    /// Calls per second over the elapsed span.
    pub rate_per_s: f64,
    /// Bytes carried.
    pub bytes: u64,
    /// Latency, or null when no call reported one.
    pub latency_ms: Option<LatencyMs>,
    /// Present and true when some calls are estimates from sampled traces (weighted by
    /// their adjusted counts; latency from the sampled pairs, one sample each).
    #[serde(default, skip_serializing_if = "is_false")]
    pub calls_estimated: bool,
    /// With estimated calls: a 95% interval `[low, high]` of the calls (null when the
    /// sampled calls carried no latency to count them by).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls_interval: Option<[u64; 2]>,
}

impl From<&Figures> for FiguresJson {
    fn from(f: &Figures) -> Self {
        FiguresJson {
            calls: f.calls,
            errors: f.errors,
            error_ratio: f.error_ratio(),
            rate_per_s: (f.rate_per_s * 1000.0).round() / 1000.0,
            bytes: f.bytes,
            latency_ms: f.latency.map(LatencyMs::from),
            calls_estimated: f.calls_estimated,
            calls_interval: f.calls_interval.map(|i| [i.low, i.high]),
        }
    }
}

/// Which time a query read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WindowJson {
    /// The window asked for.
    pub length: String,
    /// The resolution read.
    pub resolution: String,
    /// Start of the first bucket read.
    pub from: String,
    /// Where the window ends (now, or `at`).
    pub end: String,
    /// End of the last bucket read.
    pub to: String,
}

impl WindowJson {
    fn new(span: &Span, window_ms: i64) -> Self {
        WindowJson {
            length: format_duration_ms(window_ms),
            resolution: span.resolution.clone(),
            from: format_time(span.from_ms),
            end: format_time(span.end_ms),
            to: format_time(span.to_ms),
        }
    }
}

/// One origin an answer includes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OriginJson {
    /// Peer id.
    pub peer: String,
    /// Incarnation.
    pub incarnation: u32,
    /// Highest seq held completely.
    pub seq: u64,
    /// Whether it is this peer's current run.
    pub local: bool,
    /// The origin's time of its newest change held here.
    pub changed_at: Option<String>,
    /// Milliseconds since then.
    pub age_ms: Option<i64>,
}

/// What an answer includes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Coverage {
    /// Every origin whose cells are summed in.
    pub origins: Vec<OriginJson>,
    /// How this peer stands with the mesh (absent for a peer without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<MeshCoverage>,
}

/// How complete an answer is as far as the mesh goes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MeshCoverage {
    /// Peers known whose settings agree (or are not known yet).
    pub peers_known: usize,
    /// Of those, connected now.
    pub peers_connected: usize,
    /// Of those, synced within the last `fresh_ms` with nothing left to take.
    pub peers_in_sync: usize,
    /// How recent a sync counts as in sync: three sync intervals.
    pub fresh_ms: i64,
    /// Whether every known peer is in sync: the answer then holds everything the mesh
    /// held `fresh_ms` ago (events sent since may still be on their way).
    pub complete: bool,
}

impl From<Completeness> for MeshCoverage {
    fn from(c: Completeness) -> Self {
        MeshCoverage {
            peers_known: c.peers_known,
            peers_connected: c.peers_connected,
            peers_in_sync: c.peers_in_sync,
            fresh_ms: c.fresh_ms,
            complete: c.complete,
        }
    }
}

impl Coverage {
    /// From the core's coverage, with ages relative to `now_ms`.
    pub fn from_core(coverage: &[OriginCoverage], now_ms: i64) -> Self {
        Coverage {
            origins: coverage
                .iter()
                .map(|c| OriginJson {
                    peer: c.origin.peer.to_string(),
                    incarnation: c.origin.incarnation,
                    seq: c.seq,
                    local: c.local,
                    changed_at: c.changed_at_ms.map(format_time),
                    age_ms: c.changed_at_ms.map(|t| (now_ms - t).max(0)),
                })
                .collect(),
            mesh: None,
        }
    }
}

/// One edge of the graph.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EdgeJson {
    /// Sender.
    pub from: String,
    /// Receiver.
    pub to: String,
    /// `request`, `messaging` or `database`.
    #[serde(default = "request_kind")]
    pub kind: String,
    /// Which end is a virtual node (`client` or `server`), when every call of the edge in
    /// the window was counted from one half of a span pair: a database, a queue or an
    /// uninstrumented service named by the other half, or the entry node of root spans.
    #[serde(default, rename = "virtual", skip_serializing_if = "Option::is_none")]
    pub virtual_node: Option<String>,
    /// Figures over the window.
    #[serde(flatten)]
    pub figures: FiguresJson,
}

fn request_kind() -> String {
    "request".into()
}

/// One node of the graph.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeJson {
    /// Name.
    pub name: String,
    /// Calls it received in the window.
    pub calls_in: u64,
    /// Calls it sent in the window.
    pub calls_out: u64,
    /// A virtual node: every edge of the window to or from it names it from the other
    /// half only (it reports no spans or events itself).
    #[serde(default, rename = "virtual", skip_serializing_if = "is_false")]
    pub virtual_node: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Answer to `GET /api/v1/graph`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GraphAnswer {
    /// What was read.
    pub window: WindowJson,
    /// Nodes with traffic in the window, by name.
    pub nodes: Vec<NodeJson>,
    /// Edges with traffic in the window, busiest first.
    pub edges: Vec<EdgeJson>,
    /// The flow the answer is of (`?flow=`); absent: every flow summed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
    /// Every flow the peer knows (in any window), by name; absent when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flows: Vec<String>,
    /// Which origins the answer sums.
    pub coverage: Coverage,
}

impl GraphAnswer {
    /// From the core's view.
    pub fn from_core(view: GraphView, window_ms: i64, coverage: Coverage) -> Self {
        let mut nodes: BTreeMap<&str, NodeJson> = BTreeMap::new();
        // Virtual until an edge shows the node reporting for itself.
        let mut reports: BTreeMap<&str, bool> = BTreeMap::new();
        for e in &view.edges {
            node_entry(&mut nodes, e.edge.from.as_str()).calls_out += e.figures.calls;
            node_entry(&mut nodes, e.edge.to.as_str()).calls_in += e.figures.calls;
            let side = e.edge.virtual_node;
            *reports.entry(e.edge.from.as_str()).or_default() |= side != Some(VirtualSide::Client);
            *reports.entry(e.edge.to.as_str()).or_default() |= side != Some(VirtualSide::Server);
        }
        for (name, node) in &mut nodes {
            node.virtual_node = !reports.get(name).copied().unwrap_or(true);
        }
        let nodes = nodes.into_values().collect();
        let mut edges: Vec<EdgeJson> = view
            .edges
            .iter()
            .map(|e| EdgeJson {
                from: e.edge.from.to_string(),
                to: e.edge.to.to_string(),
                kind: e.edge.kind.to_string(),
                virtual_node: e.edge.virtual_node.map(|side| side.as_str().to_string()),
                figures: FiguresJson::from(&e.figures),
            })
            .collect();
        edges.sort_by(|a, b| {
            b.figures
                .calls
                .cmp(&a.figures.calls)
                .then_with(|| (&a.from, &a.to, &a.kind).cmp(&(&b.from, &b.to, &b.kind)))
        });
        GraphAnswer {
            window: WindowJson::new(&view.span, window_ms),
            nodes,
            edges,
            flow: None,
            flows: Vec::new(),
            coverage,
        }
    }
}

fn node_entry<'a, 'm>(nodes: &'m mut BTreeMap<&'a str, NodeJson>, name: &'a str) -> &'m mut NodeJson {
    nodes.entry(name).or_insert_with(|| NodeJson {
        name: name.to_string(),
        calls_in: 0,
        calls_out: 0,
        virtual_node: false,
    })
}

/// One point of a series.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PointJson {
    /// Start of the step.
    pub start: String,
    /// Figures over the step.
    #[serde(flatten)]
    pub figures: FiguresJson,
}

/// Answer to `GET /api/v1/edges/{from}/{to}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SeriesAnswer {
    /// Sender.
    pub from: String,
    /// Receiver.
    pub to: String,
    /// The edge's kind.
    pub kind: String,
    /// What was read.
    pub window: WindowJson,
    /// Step width.
    pub step: String,
    /// Points, oldest first.
    pub points: Vec<PointJson>,
    /// Which origins the answer sums.
    pub coverage: Coverage,
}

impl SeriesAnswer {
    /// From the core's view.
    pub fn from_core(edge: &Edge, view: SeriesView, window_ms: i64, coverage: Coverage) -> Self {
        SeriesAnswer {
            from: edge.from.to_string(),
            to: edge.to.to_string(),
            kind: edge.kind.to_string(),
            window: WindowJson::new(&view.span, window_ms),
            step: format_duration_ms(view.step_ms),
            points: view
                .points
                .iter()
                .map(|p| PointJson { start: format_time(p.start_ms), figures: FiguresJson::from(&p.figures) })
                .collect(),
            coverage,
        }
    }
}

/// One counter of a latency histogram: calls whose latency fell in `[low_ms, high_ms]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LatencyCounterJson {
    /// Lowest latency the counter holds.
    pub low_ms: f64,
    /// Highest latency the counter holds.
    pub high_ms: f64,
    /// Calls counted.
    pub count: u64,
}

/// Answer to `GET /api/v1/edges/{from}/{to}/latency`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LatencyAnswer {
    /// Sender.
    pub from: String,
    /// Receiver.
    pub to: String,
    /// The edge's kind.
    pub kind: String,
    /// What was read.
    pub window: WindowJson,
    /// Calls that reported a latency.
    pub samples: u64,
    /// The non-zero counters of the merged histogram (two significant digits), fastest first.
    pub counters: Vec<LatencyCounterJson>,
    /// Which origins the answer sums.
    pub coverage: Coverage,
}

impl LatencyAnswer {
    /// From the core's histogram.
    pub fn from_core(
        edge: &Edge,
        span: &Span,
        histogram: &observatory_core::LatencyHistogram,
        window_ms: i64,
        coverage: Coverage,
    ) -> Self {
        use observatory_core::histogram::{highest_value_at, lowest_value_at};
        let counters: Vec<LatencyCounterJson> = histogram
            .counters()
            .map(|(index, count)| LatencyCounterJson {
                low_ms: lowest_value_at(index) as f64 / 1000.0,
                high_ms: highest_value_at(index) as f64 / 1000.0,
                count,
            })
            .collect();
        LatencyAnswer {
            from: edge.from.to_string(),
            to: edge.to.to_string(),
            kind: edge.kind.to_string(),
            window: WindowJson::new(span, window_ms),
            samples: counters.iter().map(|c| c.count).sum(),
            counters,
            coverage,
        }
    }
}

/// `GET /api/v1/propagation`: is context propagated correctly, node by node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PropagationAnswer {
    /// What was read.
    pub window: WindowJson,
    /// The node calls from outside the system come from (not judged).
    pub entry_node: String,
    /// Every node but the entry nodes, flagged ones first, then by name.
    pub nodes: Vec<NodePropagationJson>,
    /// Which origins the answer sums.
    pub coverage: Coverage,
}

/// One node's propagation verdict and evidence.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodePropagationJson {
    /// The node.
    pub node: String,
    /// `ok`, `drops context inbound`, `drops context outbound` or `unknown`.
    pub verdict: String,
    /// Calls reaching the node: `continued` and `started` came with context, `missing`
    /// without, `unknown` did not say.
    pub inbound: MarkCountsJson,
    /// Calls the node made: `continued` in its request's context, `started` a new trace.
    pub outbound: MarkCountsJson,
    /// What the verdict rests on.
    pub evidence: Vec<String>,
}

/// Calls by propagation mark.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct MarkCountsJson {
    /// Continued the caller's context.
    pub continued: u64,
    /// Started a new trace.
    pub started: u64,
    /// Reached the callee without context.
    pub missing: u64,
    /// Did not say.
    pub unknown: u64,
}

impl From<observatory_core::MarkCounts> for MarkCountsJson {
    fn from(m: observatory_core::MarkCounts) -> Self {
        Self { continued: m.continued, started: m.started, missing: m.missing, unknown: m.unknown }
    }
}

impl PropagationAnswer {
    /// From the core's verdicts.
    pub fn from_core(
        span: &observatory_core::Span,
        window_ms: i64,
        entry_node: &str,
        nodes: Vec<observatory_core::NodePropagation>,
        coverage: Coverage,
    ) -> Self {
        let mut nodes: Vec<NodePropagationJson> = nodes
            .into_iter()
            .map(|n| NodePropagationJson {
                node: n.node.to_string(),
                verdict: n.verdict.as_str().to_string(),
                inbound: n.inbound.into(),
                outbound: n.outbound.into(),
                evidence: n.evidence,
            })
            .collect();
        let rank = |v: &str| match v {
            "drops context outbound" | "drops context inbound" => 0,
            "unknown" => 2,
            _ => 1,
        };
        nodes.sort_by(|a, b| rank(&a.verdict).cmp(&rank(&b.verdict)).then_with(|| a.node.cmp(&b.node)));
        Self { window: WindowJson::new(span, window_ms), entry_node: entry_node.to_string(), nodes, coverage }
    }
}

/// Ingest counters in the status answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IngestCounters {
    /// Ingest requests answered 200.
    pub requests: u64,
    /// Events applied.
    pub events_accepted: u64,
    /// Events applied in the flow `other`, their own flow being beyond `limits.flows_max`.
    #[serde(default)]
    pub flows_folded: u64,
    /// Events refused, by reason.
    pub events_rejected: BTreeMap<String, u64>,
    /// Requests refused whole, by reason.
    pub requests_rejected: BTreeMap<String, u64>,
    /// Spans received (OTLP, Zipkin), refused ones included.
    #[serde(default)]
    pub spans_received: u64,
    /// Spans refused, by reason.
    #[serde(default)]
    pub spans_rejected: BTreeMap<String, u64>,
    /// Sightings received, refused ones included.
    #[serde(default)]
    pub sightings_received: u64,
    /// Sightings refused, by reason.
    #[serde(default)]
    pub sightings_rejected: BTreeMap<String, u64>,
    /// Connections open now over the HTTP API and the OTLP listeners.
    #[serde(default)]
    pub connections_open: u64,
    /// Connections closed at once because `http.connections_max` were open.
    #[serde(default)]
    pub connections_refused: u64,
}

/// The mesh's counters since start (in `/api/v1/status` and `/api/v1/peers`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MeshCountersJson {
    /// Rounds started.
    pub rounds: u64,
    /// Sessions opened.
    pub sessions: u64,
    /// Messages received and handled.
    pub messages_in: u64,
    /// Messages queued for sending.
    pub messages_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Pages that changed something here.
    pub deltas_applied: u64,
    /// Cells taken from peers.
    pub cells_applied: u64,
    /// Messages rejected (malformed, oversized or corrupt).
    pub rejected: u64,
    /// Peers disconnected for repeated offences.
    pub shunned: u64,
    /// Messages with cells dropped unread because the writer was behind.
    #[serde(default)]
    pub pages_dropped_backlog: u64,
    /// Handoffs received but sent back (busy) because the correlator was behind.
    pub handoffs_dropped: u64,
    /// Span halves handed off that the owner neither acknowledged nor refused (the
    /// connection closed or no answer came in time): taken or lost, not sent again.
    #[serde(default)]
    pub handoff_spans_unacknowledged: u64,
}

impl From<MeshCounters> for MeshCountersJson {
    fn from(c: MeshCounters) -> Self {
        MeshCountersJson {
            rounds: c.rounds,
            sessions: c.sessions,
            messages_in: c.messages_in,
            messages_out: c.messages_out,
            bytes_in: c.bytes_in,
            bytes_out: c.bytes_out,
            deltas_applied: c.deltas_applied,
            cells_applied: c.cells_applied,
            rejected: c.rejected,
            shunned: c.shunned,
            pages_dropped_backlog: c.pages_dropped_backlog,
            handoffs_dropped: c.handoffs_dropped,
            handoff_spans_unacknowledged: c.handoff_spans_unacknowledged,
        }
    }
}

/// Whether a peer's settings agree with ours.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum AgreementJson {
    /// No hello from it yet.
    Unknown,
    /// Same fingerprint.
    Agrees,
    /// Another fingerprint: not synced with.
    Differs {
        /// Its fingerprint.
        theirs: String,
        /// What differs, in words.
        reason: String,
    },
}

impl From<&Agreement> for AgreementJson {
    fn from(agreement: &Agreement) -> Self {
        match agreement {
            Agreement::Unknown => AgreementJson::Unknown,
            Agreement::Agrees => AgreementJson::Agrees,
            Agreement::Differs { theirs, reason } => {
                AgreementJson::Differs { theirs: theirs.clone(), reason: reason.clone() }
            }
        }
    }
}

/// One known peer in `/api/v1/peers`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerJson {
    /// Its peer id.
    pub peer: String,
    /// Its addresses.
    pub addresses: Vec<String>,
    /// Whether a connection is up.
    pub connected: bool,
    /// Whether its settings agree with ours.
    pub settings: AgreementJson,
    /// Its objectives' fingerprint, once its hello came (empty: it has none).
    pub objectives: Option<String>,
    /// Whether its objectives are ours (then it shares the sending of alerts).
    pub objectives_agree: Option<bool>,
    /// When we last held everything it had for us (ms since the epoch).
    pub last_sync_ms: Option<i64>,
    /// Milliseconds since then.
    pub last_sync_age_ms: Option<i64>,
    /// How far we are behind it: seqs and cells.
    pub we_lack_seqs: Option<u64>,
    /// See `we_lack_seqs`.
    pub we_lack_cells: Option<u64>,
    /// How far it is behind us: seqs and cells.
    pub it_lacks_seqs: Option<u64>,
    /// See `it_lacks_seqs`.
    pub it_lacks_cells: Option<u64>,
    /// Messages from it that were rejected.
    pub rejected: u64,
    /// The last rejection, in words.
    pub last_rejection: Option<String>,
    /// Until when it is shunned, if it is.
    pub shunned_until_ms: Option<i64>,
    /// Bytes received from it.
    pub bytes_in: u64,
    /// Bytes sent to it.
    pub bytes_out: u64,
}

impl PeerJson {
    /// One peer, compared with our objectives' fingerprint `ours`.
    pub fn new(p: &PeerStatus, ours: &str) -> Self {
        let r = &p.report;
        PeerJson {
            peer: r.peer.clone(),
            addresses: p.addresses.clone(),
            connected: r.connected,
            settings: AgreementJson::from(&r.settings),
            objectives: r.objectives.clone(),
            objectives_agree: r.objectives.as_ref().map(|theirs| theirs == ours),
            last_sync_ms: r.last_sync_ms,
            last_sync_age_ms: p.last_sync_age_ms,
            we_lack_seqs: r.we_lack_seqs,
            we_lack_cells: r.we_lack_cells,
            it_lacks_seqs: r.it_lacks_seqs,
            it_lacks_cells: r.it_lacks_cells,
            rejected: r.rejected,
            last_rejection: r.last_rejection.clone(),
            shunned_until_ms: r.shunned_until_ms,
            bytes_in: r.bytes_in,
            bytes_out: r.bytes_out,
        }
    }
}

/// Answer to `GET /api/v1/peers`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeersAnswer {
    /// This peer's id.
    pub peer_id: String,
    /// Addresses other peers can dial.
    pub listen: Vec<String>,
    /// The mesh's counters.
    pub counters: MeshCountersJson,
    /// How complete this peer's picture is.
    pub coverage: MeshCoverage,
    /// This peer's objectives' fingerprint (empty: none).
    pub objectives: String,
    /// Every known peer.
    pub peers: Vec<PeerJson>,
}

impl PeersAnswer {
    /// From the mesh's status, with rounds every `sync_interval_ms`.
    pub fn new(status: &MeshStatus, sync_interval_ms: i64) -> Self {
        PeersAnswer {
            peer_id: status.peer_id.clone(),
            listen: status.listen.clone(),
            counters: status.counters.into(),
            coverage: status.completeness(sync_interval_ms).into(),
            objectives: status.objectives.clone(),
            peers: status.peers.iter().map(|p| PeerJson::new(p, &status.objectives)).collect(),
        }
    }
}

/// The mesh in `/api/v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatusMesh {
    /// Addresses other peers can dial.
    pub listen: Vec<String>,
    /// Peers known.
    pub peers_known: usize,
    /// Of those, connected.
    pub peers_connected: usize,
    /// The mesh's counters.
    pub counters: MeshCountersJson,
}

impl From<&MeshStatus> for StatusMesh {
    fn from(status: &MeshStatus) -> Self {
        StatusMesh {
            listen: status.listen.clone(),
            peers_known: status.peers.len(),
            peers_connected: status.peers.iter().filter(|p| p.report.connected).count(),
            counters: status.counters.into(),
        }
    }
}

/// What the correlator paired, gave up and holds (in `/api/v1/status`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct CorrelationJson {
    /// Spans taken from clients (not handoffs).
    pub spans_in: u64,
    /// INTERNAL spans, which are never edges.
    pub spans_internal: u64,
    /// Spans already held (exporters retry).
    pub spans_duplicate: u64,
    /// Edges from a caller half paired with its callee half.
    pub edges_paired: u64,
    /// Edges from a root SERVER span.
    pub edges_root: u64,
    /// Edges to or from a virtual node.
    pub edges_virtual: u64,
    /// Edges to `correlation.unknown_node` (CLIENT halves that named nothing).
    pub edges_unknown: u64,
    /// Halves given up with nothing to name the other side.
    pub spans_unpaired: u64,
    /// Sampled caller halves given up whose callee reports spans or that named nothing:
    /// a stricter sampler dropped the other half (the kept pairs count these calls).
    pub spans_unpaired_sampled: u64,
    /// Edges counted from sampled spans, weighted by their adjusted count.
    pub edges_estimated: u64,
    /// Halves of handoffs their owner did not acknowledge, sent on or held here.
    pub spans_rerouted: u64,
    /// Halves the previous run was holding when it crashed (lost).
    pub spans_lost_in_crash: u64,
    /// Halves given up early because the pending store was full.
    pub spans_evicted: u64,
    /// Halves waiting now.
    pub spans_pending: u64,
    /// Halves sent to their trace's owner.
    pub spans_handed_off: u64,
    /// Halves received from other peers as their trace's owner.
    pub spans_handed_in: u64,
    /// Sightings taken from clients.
    pub sightings_in: u64,
    /// Sightings received from other peers.
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

impl From<CorrelationCounters> for CorrelationJson {
    fn from(c: CorrelationCounters) -> Self {
        CorrelationJson {
            spans_in: c.spans_in,
            spans_internal: c.spans_internal,
            spans_duplicate: c.spans_duplicate,
            edges_paired: c.edges_paired,
            edges_root: c.edges_root,
            edges_virtual: c.edges_virtual,
            edges_unknown: c.edges_unknown,
            spans_unpaired: c.spans_unpaired,
            spans_unpaired_sampled: c.spans_unpaired_sampled,
            edges_estimated: c.edges_estimated,
            spans_rerouted: c.spans_rerouted,
            spans_lost_in_crash: c.spans_lost_in_crash,
            spans_evicted: c.spans_evicted,
            spans_pending: c.spans_pending,
            spans_handed_off: c.spans_handed_off,
            spans_handed_in: c.spans_handed_in,
            sightings_in: c.sightings_in,
            sightings_handed_in: c.sightings_handed_in,
            sightings_handed_off: c.sightings_handed_off,
            sightings_dropped: c.sightings_dropped,
            edges_from_tokens: c.edges_from_tokens,
            tokens_evicted: c.tokens_evicted,
            tokens_pending: c.tokens_pending,
        }
    }
}

/// Answer to `GET /api/v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatusAnswer {
    /// libp2p peer id.
    pub peer_id: String,
    /// Incarnation of this run.
    pub incarnation: u32,
    /// Version of the binary.
    pub version: String,
    /// Fingerprint of the mesh-wide settings.
    pub settings_fingerprint: String,
    /// The mesh-wide settings in canonical form.
    pub settings: String,
    /// Data dir.
    pub data_dir: String,
    /// Where OTLP/HTTP is served besides the HTTP API; `null` when not (turned off, or
    /// its default address was taken at start).
    #[serde(default)]
    pub otlp: Option<String>,
    /// Where OTLP/gRPC is served; `null` when not.
    #[serde(default)]
    pub otlp_grpc: Option<String>,
    /// Distinct nodes.
    pub nodes: usize,
    /// Distinct edges.
    pub edges: usize,
    /// Cells over all origins.
    pub cells: usize,
    /// Cells of the global view.
    pub global_cells: usize,
    /// Origins held.
    pub origins: usize,
    /// Store size on disk.
    pub store_bytes: u64,
    /// What ingest took and refused.
    pub ingest: IngestCounters,
    /// The mesh: listen addresses, peers known and connected, counters.
    #[serde(default)]
    pub mesh: Option<StatusMesh>,
    /// What the correlator paired, gave up and holds (spans and sightings).
    #[serde(default)]
    pub correlation: CorrelationJson,
}
