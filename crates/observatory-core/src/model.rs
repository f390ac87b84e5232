//! The vocabulary of the flow graph: nodes, edges, origins, events, resolutions, cells.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::histogram::{HistogramError, LatencyHistogram};

/// Hard upper bound on a node name in bytes, whatever the configuration says; names
/// coming from peers or from disk are checked against it.
pub const NODE_NAME_BYTES_HARD_MAX: usize = 1024;

/// The name of a node of the observed system: 1 to `NODE_NAME_BYTES_HARD_MAX` bytes of
/// UTF-8 without control characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct NodeName(Arc<str>);

/// Why a string is not a valid node name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeNameError {
    /// The name is the empty string.
    #[error("must not be empty")]
    Empty,
    /// The name is longer than allowed.
    #[error("is {len} bytes long, more than the limit of {max} bytes")]
    TooLong {
        /// Length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The name holds a control character.
    #[error("contains the control character {0:?}; names must be printable")]
    NotPrintable(char),
}

impl NodeName {
    /// Validates a name against a byte limit (itself capped by the hard maximum).
    pub fn new(name: &str, bytes_max: usize) -> Result<Self, NodeNameError> {
        let max = bytes_max.min(NODE_NAME_BYTES_HARD_MAX);
        if name.is_empty() {
            return Err(NodeNameError::Empty);
        }
        if name.len() > max {
            return Err(NodeNameError::TooLong { len: name.len(), max });
        }
        if let Some(c) = name.chars().find(|c| c.is_control()) {
            return Err(NodeNameError::NotPrintable(c));
        }
        Ok(Self(Arc::from(name)))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for NodeName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        NodeName::new(&name, NODE_NAME_BYTES_HARD_MAX)
            .map_err(|e| serde::de::Error::custom(format_args!("node name {e}")))
    }
}

/// What kind of flow an edge carries. Part of the edge's identity: `a -> b` as a request
/// and `a -> b` as messaging are two edges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgeKind {
    /// A call answered by the callee (RPC, HTTP): latency is the callee's time.
    #[default]
    Request,
    /// A message through a queue or topic: latency is the transit time.
    Messaging,
    /// A call to a database: latency is the caller's time.
    Database,
}

impl EdgeKind {
    /// Every kind, in order.
    pub const ALL: [EdgeKind; 3] = [EdgeKind::Request, EdgeKind::Messaging, EdgeKind::Database];

    /// The kind's name: `request`, `messaging` or `database`.
    pub fn as_str(self) -> &'static str {
        match self {
            EdgeKind::Request => "request",
            EdgeKind::Messaging => "messaging",
            EdgeKind::Database => "database",
        }
    }

    /// The kind named `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// A small code for compact encodings (wire, store).
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The kind of a [`EdgeKind::code`], if valid.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }
}

impl fmt::Display for EdgeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the calls of an edge carried the context of the request their caller was
/// serving: evidence of context propagation, reported by instrumentation that knows.
/// Part of the edge's identity (like the kind), so that every peer counts it exactly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContextMark {
    /// Not said (spans, plain events).
    #[default]
    Unknown,
    /// The caller sent on the context of the request it was serving.
    Continued,
    /// The caller served no request (or lost its context) and started a new trace.
    Started,
    /// The callee got no context at all (an edge from the entry node: a trace begins here).
    Missing,
}

impl ContextMark {
    /// Every mark, in order.
    pub const ALL: [ContextMark; 4] =
        [ContextMark::Unknown, ContextMark::Continued, ContextMark::Started, ContextMark::Missing];

    /// The mark's name: `unknown`, `continued`, `started` or `missing`.
    pub fn as_str(self) -> &'static str {
        match self {
            ContextMark::Unknown => "unknown",
            ContextMark::Continued => "continued",
            ContextMark::Started => "started",
            ContextMark::Missing => "missing",
        }
    }

    /// The mark named `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// A small code for compact encodings (wire, store).
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The mark of a [`ContextMark::code`], if valid.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }
}

/// Which end of an edge is a virtual node: a node no span or event of its own reports,
/// named by the other half (a database, an uninstrumented service, the entry of a trace).
/// Tempo and the Collector label such edges `connection_type="virtual_node"`, and Grafana
/// draws their nodes differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VirtualSide {
    /// The sender is virtual (a trace's root server span: the entry node; a consumer whose
    /// producer is not instrumented).
    Client,
    /// The receiver is virtual (a client span whose callee reports nothing).
    Server,
}

impl VirtualSide {
    /// `client` or `server`.
    pub fn as_str(self) -> &'static str {
        match self {
            VirtualSide::Client => "client",
            VirtualSide::Server => "server",
        }
    }
}

/// The marks of an edge besides its flow: the propagation mark, the virtual side, and
/// whether its calls are estimates from sampled traces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Marks {
    /// The propagation mark.
    pub context: ContextMark,
    /// Which end is a virtual node, if either.
    pub virtual_node: Option<VirtualSide>,
    /// Whether the calls were counted from sampled traces, weighted by their adjusted count.
    pub estimated: bool,
}

/// The byte that encodes an edge's marks (wire, store): the context mark's code in the low
/// two bits, the virtual side in the next two (0 none, 1 client, 2 server), bit 4 set for
/// estimated calls. An edge with only a context mark has the mark's code, as before the
/// others existed.
pub fn marks_code(marks: Marks) -> u8 {
    let side = match marks.virtual_node {
        None => 0,
        Some(VirtualSide::Client) => 1,
        Some(VirtualSide::Server) => 2,
    };
    marks.context.code() | (side << 2) | (u8::from(marks.estimated) << 4)
}

/// The marks of a [`marks_code`], if valid.
pub fn from_marks_code(code: u8) -> Option<Marks> {
    let virtual_node = match (code >> 2) & 0b11 {
        0 => None,
        1 => Some(VirtualSide::Client),
        2 => Some(VirtualSide::Server),
        _ => return None,
    };
    if code >> 5 != 0 {
        return None;
    }
    let context = ContextMark::from_code(code & 0b11)?;
    Some(Marks { context, virtual_node, estimated: code & 0x10 != 0 })
}

/// A directed pair of nodes of one kind: information flowed from `from` to `to`; with the
/// flow its calls belong to (a label set at the entry of the observed system and carried
/// through every hop) and the propagation evidence of its calls. Queries sum the flows
/// and marks of one `from -> to` of a kind unless asked for one flow.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Edge {
    /// The sending node.
    pub from: NodeName,
    /// The receiving node.
    pub to: NodeName,
    /// What flowed.
    #[serde(default)]
    pub kind: EdgeKind,
    /// The flow, if the calls carried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<NodeName>,
    /// Whether the calls carried their caller's context.
    #[serde(default)]
    pub context: ContextMark,
    /// Which end is a virtual node, if either (edges made from one half of a span pair).
    #[serde(default, rename = "virtual", skip_serializing_if = "Option::is_none")]
    pub virtual_node: Option<VirtualSide>,
    /// Whether the calls are estimates from sampled traces (each call stands for its
    /// trace's adjusted count).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub estimated: bool,
}

impl Edge {
    /// The request edge `from -> to`.
    pub fn new(from: NodeName, to: NodeName) -> Self {
        Self::with_kind(from, to, EdgeKind::Request)
    }

    /// The edge `from -> to` of `kind`.
    pub fn with_kind(from: NodeName, to: NodeName, kind: EdgeKind) -> Self {
        Self {
            from,
            to,
            kind,
            flow: None,
            context: ContextMark::Unknown,
            virtual_node: None,
            estimated: false,
        }
    }

    /// The same edge with its calls marked as estimates (or not).
    pub fn with_estimated(self, estimated: bool) -> Self {
        Self { estimated, ..self }
    }

    /// The marks besides the flow.
    pub fn marks(&self) -> Marks {
        Marks { context: self.context, virtual_node: self.virtual_node, estimated: self.estimated }
    }

    /// The same edge with `marks`.
    pub fn with_marks(self, marks: Marks) -> Self {
        Self { context: marks.context, virtual_node: marks.virtual_node, estimated: marks.estimated, ..self }
    }

    /// The same edge with `side` a virtual node.
    pub fn with_virtual(self, side: VirtualSide) -> Self {
        Self { virtual_node: Some(side), ..self }
    }

    /// The byte of the edge's marks (see [`marks_code`]).
    pub fn marks_code(&self) -> u8 {
        marks_code(self.marks())
    }

    /// The same edge in `flow` with the calls marked `context`.
    pub fn labelled(self, flow: Option<NodeName>, context: ContextMark) -> Self {
        Self { flow, context, ..self }
    }

    /// `from -> to` of the kind, without flow or marks: what a graph shows.
    pub fn base(&self) -> Edge {
        Self::with_kind(self.from.clone(), self.to.clone(), self.kind)
    }

    /// Whether the edge has no flow and no marks.
    pub fn is_base(&self) -> bool {
        self.flow.is_none() && self.marks() == Marks::default()
    }

    /// Whether `self` is `other` up to flow and marks.
    pub fn same_base(&self, other: &Edge) -> bool {
        self.from == other.from && self.to == other.to && self.kind == other.kind
    }
}

impl fmt::Debug for Edge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.from, self.to)?;
        if self.kind != EdgeKind::Request {
            write!(f, " ({})", self.kind)?;
        }
        if let Some(flow) = &self.flow {
            write!(f, " [flow {flow}]")?;
        }
        if self.context != ContextMark::Unknown {
            write!(f, " [context {}]", self.context.as_str())?;
        }
        if let Some(side) = self.virtual_node {
            write!(f, " [virtual {}]", side.as_str())?;
        }
        if self.estimated {
            f.write_str(" [estimated]")?;
        }
        Ok(())
    }
}

/// One run of one peer: the peer's id and the incarnation counter it took at start.
/// Only the origin itself creates or changes its cells.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Origin {
    /// The peer id (the libp2p peer id in its usual text form).
    pub peer: Arc<str>,
    /// Incremented and persisted at every start of the peer, before its first write.
    pub incarnation: u32,
}

impl Origin {
    /// The origin of `peer` in its `incarnation`.
    pub fn new(peer: &str, incarnation: u32) -> Self {
        Self { peer: Arc::from(peer), incarnation }
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.peer, self.incarnation)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One report of flow on an edge, already validated at the boundary.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The edge the flow went over.
    pub edge: Edge,
    /// When it happened, in milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// How long it took, in microseconds, if known.
    pub latency_us: Option<u64>,
    /// Whether it failed.
    pub error: bool,
    /// Bytes carried, in total over `count`.
    pub bytes: u64,
    /// How many calls this event stands for (at least 1).
    pub count: u64,
}

/// A bucket width with its retention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// Name shown to users, e.g. `10s`, `1m`, `total`.
    pub name: String,
    /// Width of a bucket in milliseconds; `None` for the `total` resolution (one bucket).
    pub width_ms: Option<i64>,
    /// How long after its end a bucket is kept; `None` means forever.
    pub retention_ms: Option<i64>,
}

impl Resolution {
    /// The `total` resolution: one bucket starting at 0, never expires.
    pub fn total() -> Self {
        Self { name: "total".into(), width_ms: None, retention_ms: None }
    }

    /// A bucketed resolution: buckets `width_s` seconds wide, kept `retention_s` seconds
    /// after they end.
    pub fn bucketed(name: &str, width_s: i64, retention_s: i64) -> Self {
        Self { name: name.into(), width_ms: Some(width_s * 1000), retention_ms: Some(retention_s * 1000) }
    }

    /// Start of the bucket holding `ts_ms`.
    pub fn bucket_start(&self, ts_ms: i64) -> i64 {
        match self.width_ms {
            Some(width) => ts_ms.div_euclid(width) * width,
            None => 0,
        }
    }

    /// End (exclusive) of the bucket that starts at `bucket_start_ms`.
    pub fn bucket_end(&self, bucket_start_ms: i64) -> i64 {
        match self.width_ms {
            Some(width) => bucket_start_ms.saturating_add(width),
            None => i64::MAX,
        }
    }

    /// Whether a bucket starting at `bucket_start_ms` has outlived its retention at `now_ms`.
    pub fn is_expired(&self, bucket_start_ms: i64, now_ms: i64) -> bool {
        match self.retention_ms {
            Some(retention) => self.bucket_end(bucket_start_ms).saturating_add(retention) <= now_ms,
            None => false,
        }
    }
}

/// The key of a cell: which edge, which resolution (index into the settings), which bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CellKey {
    /// The edge.
    pub edge: Edge,
    /// Index of the resolution in [`crate::Settings::resolutions`].
    pub resolution: u8,
    /// Start of the bucket in milliseconds since the epoch (0 for `total`).
    pub bucket_start_ms: i64,
}

/// The figures of one cell: grow-only counts and a latency histogram.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellData {
    /// Calls (or messages) seen.
    pub calls: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Bytes carried.
    pub bytes: u64,
    /// Latencies of the calls that reported one, in microseconds.
    pub latency: LatencyHistogram,
}

/// Why a cell's figures are inconsistent or went backwards.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CellDataError {
    /// A counter of a newer version is lower than in an older one.
    #[error("{field} went down from {old} to {new}")]
    WentDown {
        /// The counter.
        field: &'static str,
        /// Its older value.
        old: u64,
        /// Its newer value.
        new: u64,
    },
    /// The latency histogram of a newer version lacks samples of an older one.
    #[error("latency histogram lost samples: {0}")]
    LatencyWentDown(HistogramError),
    /// A counter would overflow.
    #[error("{0} overflows")]
    Overflow(&'static str),
    /// The cell is not self-consistent.
    #[error("inconsistent cell: {0}")]
    Inconsistent(&'static str),
}

impl CellData {
    /// Adds another cell's figures.
    pub fn add(&mut self, other: &CellData) -> Result<(), CellDataError> {
        self.calls = self.calls.checked_add(other.calls).ok_or(CellDataError::Overflow("calls"))?;
        self.errors = self.errors.checked_add(other.errors).ok_or(CellDataError::Overflow("errors"))?;
        self.bytes = self.bytes.checked_add(other.bytes).ok_or(CellDataError::Overflow("bytes"))?;
        self.latency.add(&other.latency).map_err(|_| CellDataError::Overflow("latency"))
    }

    /// Adds another cell's figures, each counter saturating at its maximum. The global
    /// view uses this: it only ever grows by non-negative amounts, so saturating sums do
    /// not depend on the order of merges, and no peer's consistent cell is refused
    /// because of what other origins hold.
    pub fn add_saturating(&mut self, other: &CellData) {
        self.calls = self.calls.saturating_add(other.calls);
        self.errors = self.errors.saturating_add(other.errors);
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.latency.add_saturating(&other.latency);
    }

    /// Subtracts figures that this cell contains (see [`CellData::check_contains`]).
    pub fn subtract(&mut self, other: &CellData) -> Result<(), CellDataError> {
        self.check_contains(other)?;
        self.calls -= other.calls;
        self.errors -= other.errors;
        self.bytes -= other.bytes;
        self.latency.subtract(&other.latency).map_err(CellDataError::LatencyWentDown)
    }

    /// Checks that every counter here is at least the one in `older`.
    pub fn check_contains(&self, older: &CellData) -> Result<(), CellDataError> {
        for (field, old, new) in [
            ("calls", older.calls, self.calls),
            ("errors", older.errors, self.errors),
            ("bytes", older.bytes, self.bytes),
        ] {
            if new < old {
                return Err(CellDataError::WentDown { field, old, new });
            }
        }
        self.latency.contains(&older.latency).map_err(CellDataError::LatencyWentDown)
    }

    /// Checks the cell is self-consistent: at least one call, no more errors or latency
    /// samples than calls.
    pub fn check_consistent(&self) -> Result<(), CellDataError> {
        if self.calls == 0 {
            return Err(CellDataError::Inconsistent("a cell holds at least one call"));
        }
        if self.errors > self.calls {
            return Err(CellDataError::Inconsistent("more errors than calls"));
        }
        if self.latency.len() > self.calls {
            return Err(CellDataError::Inconsistent("more latency samples than calls"));
        }
        Ok(())
    }
}

/// The state of one origin for one cell key, stamped with the origin's seq of its last change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cell {
    /// The origin's seq of the batch that last changed this cell.
    pub seq: u64,
    /// The figures.
    pub data: CellData,
}

impl Cell {
    /// An upper estimate of the bytes this cell takes in a sync message, its key's node
    /// names included: for budgeting pages without encoding them.
    pub fn wire_size_hint(&self, key: &CellKey) -> usize {
        48 + key.edge.from.as_str().len() + key.edge.to.as_str().len() + self.data.latency.encoded_len_hint()
    }
}
