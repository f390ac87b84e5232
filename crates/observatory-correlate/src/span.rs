//! The spans and sightings the correlator works on: what the OTLP and Zipkin decoders
//! keep of a span, already validated (ids non-zero, names valid node names).

use observatory_core::{EdgeKind, NodeName};

/// The role of a span in a call, as OpenTelemetry (and Zipkin) name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// Work inside one service; never an edge.
    Internal,
    /// The server side of a call.
    Server,
    /// The client side of a call.
    Client,
    /// Sending a message.
    Producer,
    /// Receiving a message.
    Consumer,
}

/// The node a span says it talks to when no span of that node answers: from
/// `peer.service`, `server.address`, `db.name`/`db.system`, `messaging.destination.name`
/// (OpenTelemetry) or `remoteEndpoint.serviceName` (Zipkin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// The virtual node.
    pub node: NodeName,
    /// The kind of the edge to (or from) it.
    pub kind: EdgeKind,
}

/// One span, reduced to what the flow graph needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// The trace (16 bytes, not all zero).
    pub trace_id: u128,
    /// The span (8 bytes, not all zero).
    pub span_id: u64,
    /// The parent span, `None` for a root span.
    pub parent_span_id: Option<u64>,
    /// Its role.
    pub kind: SpanKind,
    /// The service that reported it.
    pub service: NodeName,
    /// Start, in nanoseconds since the Unix epoch.
    pub start_ns: u64,
    /// End, in nanoseconds since the Unix epoch (at least `start_ns`).
    pub end_ns: u64,
    /// Whether it failed (OTLP status ERROR; Zipkin's `error` tag).
    pub error: bool,
    /// The node on the other side, named by the span's attributes, if any.
    pub remote: Option<Remote>,
    /// The sampling threshold the span was kept under, as OpenTelemetry's `ot=th:` says it:
    /// spans were dropped with probability `threshold / 2^56`. 0 when all were kept, or
    /// when nothing says (each span then stands for one call).
    pub sampling_threshold: u64,
}

/// `2^56`, the scale of sampling thresholds.
pub const THRESHOLD_SCALE: u64 = 1 << 56;

/// The adjusted count a span stands for is at most this (a sampling probability below
/// one in a million is taken as one in a million).
pub const ADJUSTED_COUNT_MAX: f64 = 1e6;

/// The threshold of a sampling probability in `(0, 1]` (`None` outside it).
pub fn threshold_of_probability(probability: f64) -> Option<u64> {
    if !(probability > 0.0 && probability <= 1.0) {
        return None;
    }
    let probability = probability.max(1.0 / ADJUSTED_COUNT_MAX);
    Some(((1.0 - probability) * THRESHOLD_SCALE as f64).round() as u64)
}

impl Span {
    /// How long the span took, in microseconds.
    pub fn duration_us(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns) / 1_000
    }

    /// How many calls the span stands for: 1 over its sampling probability (1 unsampled).
    pub fn adjusted_count(&self) -> f64 {
        let kept = THRESHOLD_SCALE.saturating_sub(self.sampling_threshold.min(THRESHOLD_SCALE - 1));
        (THRESHOLD_SCALE as f64 / kept as f64).min(ADJUSTED_COUNT_MAX)
    }

    /// Its start in milliseconds since the epoch.
    pub fn start_ms(&self) -> i64 {
        (self.start_ns / 1_000_000) as i64
    }
}

/// One sighting of a propagated token at a node (`POST /api/v1/sightings`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    /// The token the observed system propagates (a request id, a message id).
    pub token: String,
    /// Where it was seen.
    pub node: NodeName,
    /// When, in milliseconds since the epoch.
    pub ts_ms: i64,
    /// Whether the node failed to handle it.
    pub error: bool,
    /// The kind of the edge into this node.
    pub kind: EdgeKind,
}
