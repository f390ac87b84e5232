//! JSON answers of the API, converted from core types at the edge.

use std::collections::BTreeMap;

use observatory_core::{Edge, Figures, GraphView, LatencySummary, OriginCoverage, SeriesView, Span};
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
    /// Which origins the answer sums.
    pub coverage: Coverage,
}

impl GraphAnswer {
    /// From the core's view.
    pub fn from_core(view: GraphView, window_ms: i64, coverage: Coverage) -> Self {
        let mut nodes: BTreeMap<&str, NodeJson> = BTreeMap::new();
        for e in &view.edges {
            node_entry(&mut nodes, e.edge.from.as_str()).calls_out += e.figures.calls;
            node_entry(&mut nodes, e.edge.to.as_str()).calls_in += e.figures.calls;
        }
        let nodes = nodes.into_values().collect();
        let mut edges: Vec<EdgeJson> = view
            .edges
            .iter()
            .map(|e| EdgeJson {
                from: e.edge.from.to_string(),
                to: e.edge.to.to_string(),
                kind: e.edge.kind.to_string(),
                figures: FiguresJson::from(&e.figures),
            })
            .collect();
        edges.sort_by(|a, b| {
            b.figures
                .calls
                .cmp(&a.figures.calls)
                .then_with(|| (&a.from, &a.to, &a.kind).cmp(&(&b.from, &b.to, &b.kind)))
        });
        GraphAnswer { window: WindowJson::new(&view.span, window_ms), nodes, edges, coverage }
    }
}

fn node_entry<'a, 'm>(nodes: &'m mut BTreeMap<&'a str, NodeJson>, name: &'a str) -> &'m mut NodeJson {
    nodes.entry(name).or_insert_with(|| NodeJson { name: name.to_string(), calls_in: 0, calls_out: 0 })
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

/// Ingest counters in the status answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IngestCounters {
    /// Ingest requests answered 200.
    pub requests: u64,
    /// Events applied.
    pub events_accepted: u64,
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
    pub mesh: Option<serde_json::Value>,
    /// What the correlator paired, gave up and holds (spans and sightings).
    #[serde(default)]
    pub correlation: observatory_correlate::CorrelationCounters,
}
