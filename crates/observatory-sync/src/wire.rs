//! The wire format of messages between peers: CBOR (ciborium) in a versioned envelope.
//!
//! The types here are the wire format and nothing else: internal types (core's cells and
//! version vectors, the protocol's messages, the correlator's spans) are converted to
//! and from them at this edge ([`encode`], [`decode`]), so a change to an internal type
//! cannot change the bytes on the wire unnoticed. The snapshot test
//! `tests/wire_snapshots.rs` pins the encoding of every body byte for byte; a change to
//! it is a new [`WIRE_VERSION`].
//!
//! An envelope is the CBOR array `[version, body]`, the body an externally tagged map
//! (`{"Sync": {...}}`). Cells travel compactly: each page names its edges by index into
//! one table of edges per message, and a cell is an array of plain integers with its
//! latency histogram as a byte string (its [`LatencyHistogram::encode`] form).
//!
//! Decoding is bounded by the caller (the message was read whole, at most
//! `mesh.message_bytes_max` bytes), checks every name, index, histogram and list length,
//! and returns an error naming what is wrong; it never panics.

use std::collections::BTreeMap;

use observatory_core::model::{NODE_NAME_BYTES_HARD_MAX, from_marks_code};
use observatory_core::{
    Cell, CellData, CellKey, ContextMark, Edge, EdgeKind, LatencyHistogram, NodeName, Origin, OriginDelta,
    SyncRequest, VersionVector,
};
use observatory_correlate::{Handoff, Remote, Sighting, Span, SpanKind};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::protocol::{Hello, Message, SyncMessage};

/// Version of the envelope and of everything in it. A peer refuses other versions.
/// Version 3 added the objectives' fingerprint to the hello.
pub const WIRE_VERSION: u32 = 3;

/// Most peers listed in one `Peers` body (part of the wire format: every peer of a mesh
/// must agree on it, so it is not a setting).
pub const PEERS_LISTED_MAX: usize = 256;
/// Most addresses per listed peer.
pub const ADDRS_PER_PEER_MAX: usize = 16;
/// Most spans plus sightings in one `Handoff` body.
pub const HANDOFF_ITEMS_MAX: usize = 10_000;
/// Longest token of a sighting, in bytes.
pub const TOKEN_BYTES_MAX: usize = 256;

/// A message as the driver sees it: for the protocol, for the peer book, or for the
/// correlator.
#[derive(Debug, Clone, PartialEq)]
pub enum MeshMessage {
    /// Hellos and sync steps, for [`crate::Protocol`].
    Protocol(Message),
    /// Peers the sender knows (peer id and multiaddrs, as text), for the peer book.
    Peers(Vec<(String, Vec<String>)>),
    /// Span halves and sightings handed to the owner of their traces and tokens.
    Handoff(Handoff),
}

impl From<Message> for MeshMessage {
    fn from(message: Message) -> Self {
        MeshMessage::Protocol(message)
    }
}

/// Why a message from a peer could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not CBOR of the expected shape, or a value out of range.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Another version of the protocol.
    #[error("message of wire version {0}, but this peer speaks version {WIRE_VERSION}")]
    Version(u32),
    /// An index into the edge table is out of range.
    #[error("page of {origin}: cell names edge {index}, but the message lists {edges} edges")]
    EdgeIndex {
        /// The page's origin.
        origin: Origin,
        /// The index given.
        index: u32,
        /// How many edges the message lists.
        edges: usize,
    },
    /// A list is longer than allowed.
    #[error("{what}: {len} entries, more than the {max} allowed")]
    TooMany {
        /// What the list is.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Encodes a message in its envelope.
pub fn encode(message: impl Into<MeshMessage>) -> Vec<u8> {
    let body = Body::from(message.into());
    let mut out = Vec::new();
    ciborium::into_writer(&EnvelopeRef(WIRE_VERSION, &body), &mut out)
        .expect("writing CBOR to a Vec cannot fail");
    out
}

/// Decodes a message read whole from a peer, checking everything in it.
pub fn decode(bytes: &[u8]) -> Result<MeshMessage, WireError> {
    let body = match ciborium::from_reader::<Envelope, _>(bytes) {
        Ok(Envelope(WIRE_VERSION, body)) => body,
        Ok(Envelope(version, _)) => return Err(WireError::Version(version)),
        Err(error) => {
            return match ciborium::from_reader::<VersionOnly, _>(bytes) {
                Ok(VersionOnly(version, _)) if version != WIRE_VERSION => Err(WireError::Version(version)),
                _ => Err(WireError::Malformed(error.to_string())),
            };
        }
    };
    MeshMessage::try_from(body)
}

// ---------------------------------------------------------------------------------------
// The wire types. Field names and order are the encoding: do not change them within a
// wire version.
// ---------------------------------------------------------------------------------------

#[derive(Serialize)]
struct EnvelopeRef<'a>(u32, &'a Body);

#[derive(Deserialize)]
struct Envelope(u32, Body);

#[derive(Deserialize)]
struct VersionOnly(u32, serde::de::IgnoredAny);

/// What one message carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Body {
    Hello(WireHello),
    Sync(WireSync),
    Peers(Vec<(String, Vec<String>)>),
    Handoff(WireHandoff),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct WireHello {
    fingerprint: String,
    settings: String,
    answer_me: bool,
    objectives: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct WireSync {
    head: WireSyncHead,
    /// Every edge the pages name, once.
    edges: Vec<WireEdge>,
    pages: Vec<WirePage>,
}

/// An edge: `(from, to, kind code)`, or with a flow or propagation mark
/// `(from, to, kind code, flow or null, mark code)`. Edges without either are sent as
/// they were before flows existed, so peers of the same wire version that do not know
/// flows still take them; a page with a labelled edge is refused by such a peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum WireEdge {
    Labelled(String, String, u8, Option<String>, u8),
    Plain(String, String, u8),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct WireSyncHead {
    fingerprint: String,
    session: u64,
    step: u32,
    reply: bool,
    want: Option<WireSyncRequest>,
    lag_cells: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct WireOrigin {
    peer: String,
    incarnation: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct WireVersionVector {
    dots: BTreeMap<WireOrigin, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct WireSyncRequest {
    known: WireVersionVector,
    resume: BTreeMap<WireOrigin, u64>,
    above: BTreeMap<WireOrigin, u64>,
}

/// One [`OriginDelta`], its cells naming edges by index into [`WireSync::edges`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct WirePage {
    origin: WireOrigin,
    after_seq: u64,
    upto_seq: u64,
    complete: bool,
    to_seq: u64,
    changed_at_ms: Option<i64>,
    sender: Option<WireOrigin>,
    cells: Vec<WireCell>,
}

/// `(edge index, resolution, bucket start, seq, calls, errors, bytes, latency)`.
type WireCell = (u32, u8, i64, u64, u64, u64, u64, ByteBuf);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct WireHandoff {
    spans: Vec<WireSpan>,
    sightings: Vec<WireSighting>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum WireSpanKind {
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum WireEdgeKind {
    Request,
    Messaging,
    Database,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct WireRemote {
    node: String,
    kind: WireEdgeKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct WireSpan {
    trace_id: u128,
    span_id: u64,
    parent_span_id: Option<u64>,
    kind: WireSpanKind,
    service: String,
    start_ns: u64,
    end_ns: u64,
    error: bool,
    remote: Option<WireRemote>,
    /// Absent for spans that stand for one call (and from peers before sampling).
    #[serde(default, skip_serializing_if = "is_zero")]
    sampling_threshold: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct WireSighting {
    token: String,
    node: String,
    ts_ms: i64,
    error: bool,
    kind: WireEdgeKind,
}

// ---------------------------------------------------------------------------------------
// Internal types to wire types.
// ---------------------------------------------------------------------------------------

impl From<MeshMessage> for Body {
    fn from(message: MeshMessage) -> Self {
        match message {
            MeshMessage::Protocol(Message::Hello(hello)) => Body::Hello(WireHello::from(hello)),
            MeshMessage::Protocol(Message::Sync(head, pages)) => Body::Sync(WireSync::new(head, pages)),
            MeshMessage::Peers(peers) => Body::Peers(peers),
            MeshMessage::Handoff(handoff) => Body::Handoff(WireHandoff::from(handoff)),
        }
    }
}

impl From<Hello> for WireHello {
    fn from(hello: Hello) -> Self {
        WireHello {
            fingerprint: hello.fingerprint,
            settings: hello.settings,
            answer_me: hello.answer_me,
            objectives: hello.objectives,
        }
    }
}

impl From<&Origin> for WireOrigin {
    fn from(origin: &Origin) -> Self {
        WireOrigin { peer: origin.peer.to_string(), incarnation: origin.incarnation }
    }
}

fn wire_seqs(map: &BTreeMap<Origin, u64>) -> BTreeMap<WireOrigin, u64> {
    map.iter().map(|(origin, seq)| (WireOrigin::from(origin), *seq)).collect()
}

impl From<SyncRequest> for WireSyncRequest {
    fn from(request: SyncRequest) -> Self {
        WireSyncRequest {
            known: WireVersionVector { dots: wire_seqs(&request.known.dots) },
            resume: wire_seqs(&request.resume),
            above: wire_seqs(&request.above),
        }
    }
}

impl From<SyncMessage> for WireSyncHead {
    fn from(head: SyncMessage) -> Self {
        WireSyncHead {
            fingerprint: head.fingerprint,
            session: head.session,
            step: head.step,
            reply: head.reply,
            want: head.want.map(WireSyncRequest::from),
            lag_cells: head.lag_cells,
        }
    }
}

impl WireSync {
    fn new(head: SyncMessage, pages: Vec<OriginDelta>) -> Self {
        let mut edge_index: BTreeMap<Edge, u32> = BTreeMap::new();
        let mut edges = Vec::new();
        let pages = pages
            .into_iter()
            .map(|page| {
                let cells = page
                    .cells
                    .into_iter()
                    .map(|(key, cell)| {
                        let next = edge_index.len() as u32;
                        let index = *edge_index.entry(key.edge.clone()).or_insert_with(|| {
                            let (from, to, kind) =
                                (key.edge.from.to_string(), key.edge.to.to_string(), key.edge.kind.code());
                            edges.push(if key.edge.is_base() {
                                WireEdge::Plain(from, to, kind)
                            } else {
                                WireEdge::Labelled(
                                    from,
                                    to,
                                    kind,
                                    key.edge.flow.as_ref().map(|f| f.to_string()),
                                    key.edge.marks_code(),
                                )
                            });
                            next
                        });
                        let CellData { calls, errors, bytes, latency } = cell.data;
                        let mut histogram = Vec::with_capacity(latency.encoded_len_hint());
                        latency.encode(&mut histogram);
                        (
                            index,
                            key.resolution,
                            key.bucket_start_ms,
                            cell.seq,
                            calls,
                            errors,
                            bytes,
                            ByteBuf::from(histogram),
                        )
                    })
                    .collect();
                WirePage {
                    origin: WireOrigin::from(&page.origin),
                    after_seq: page.after_seq,
                    upto_seq: page.upto_seq,
                    complete: page.complete,
                    to_seq: page.to_seq,
                    changed_at_ms: page.changed_at_ms,
                    sender: page.sender.as_ref().map(WireOrigin::from),
                    cells,
                }
            })
            .collect();
        WireSync { head: WireSyncHead::from(head), edges, pages }
    }
}

impl From<EdgeKind> for WireEdgeKind {
    fn from(kind: EdgeKind) -> Self {
        match kind {
            EdgeKind::Request => WireEdgeKind::Request,
            EdgeKind::Messaging => WireEdgeKind::Messaging,
            EdgeKind::Database => WireEdgeKind::Database,
        }
    }
}

impl From<SpanKind> for WireSpanKind {
    fn from(kind: SpanKind) -> Self {
        match kind {
            SpanKind::Internal => WireSpanKind::Internal,
            SpanKind::Server => WireSpanKind::Server,
            SpanKind::Client => WireSpanKind::Client,
            SpanKind::Producer => WireSpanKind::Producer,
            SpanKind::Consumer => WireSpanKind::Consumer,
        }
    }
}

impl From<Span> for WireSpan {
    fn from(span: Span) -> Self {
        WireSpan {
            trace_id: span.trace_id,
            span_id: span.span_id,
            parent_span_id: span.parent_span_id,
            kind: span.kind.into(),
            service: span.service.to_string(),
            start_ns: span.start_ns,
            end_ns: span.end_ns,
            error: span.error,
            remote: span.remote.map(|r| WireRemote { node: r.node.to_string(), kind: r.kind.into() }),
            sampling_threshold: span.sampling_threshold,
        }
    }
}

impl From<Sighting> for WireSighting {
    fn from(s: Sighting) -> Self {
        WireSighting {
            token: s.token,
            node: s.node.to_string(),
            ts_ms: s.ts_ms,
            error: s.error,
            kind: s.kind.into(),
        }
    }
}

impl From<Handoff> for WireHandoff {
    fn from(handoff: Handoff) -> Self {
        WireHandoff {
            spans: handoff.spans.into_iter().map(WireSpan::from).collect(),
            sightings: handoff.sightings.into_iter().map(WireSighting::from).collect(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Wire types to internal types, checking everything.
// ---------------------------------------------------------------------------------------

fn node_name(what: &str, name: &str) -> Result<NodeName, WireError> {
    NodeName::new(name, NODE_NAME_BYTES_HARD_MAX)
        .map_err(|e| WireError::Malformed(format!("{what}: node name {e}")))
}

fn origin(wire: WireOrigin) -> Origin {
    Origin::new(&wire.peer, wire.incarnation)
}

fn seqs(map: BTreeMap<WireOrigin, u64>) -> BTreeMap<Origin, u64> {
    map.into_iter().map(|(o, seq)| (origin(o), seq)).collect()
}

impl TryFrom<Body> for MeshMessage {
    type Error = WireError;

    fn try_from(body: Body) -> Result<Self, WireError> {
        Ok(match body {
            Body::Hello(hello) => MeshMessage::Protocol(Message::Hello(Hello {
                fingerprint: hello.fingerprint,
                settings: hello.settings,
                answer_me: hello.answer_me,
                objectives: hello.objectives,
            })),
            Body::Sync(sync) => {
                let (head, pages) = sync.try_into_parts()?;
                MeshMessage::Protocol(Message::Sync(head, pages))
            }
            Body::Peers(peers) => {
                check_peers(&peers)?;
                MeshMessage::Peers(peers)
            }
            Body::Handoff(handoff) => MeshMessage::Handoff(Handoff::try_from(handoff)?),
        })
    }
}

impl From<WireSyncRequest> for SyncRequest {
    fn from(wire: WireSyncRequest) -> Self {
        let mut known = VersionVector::default();
        known.dots = seqs(wire.known.dots);
        SyncRequest { known, resume: seqs(wire.resume), above: seqs(wire.above) }
    }
}

impl WireSync {
    fn try_into_parts(self) -> Result<(SyncMessage, Vec<OriginDelta>), WireError> {
        let WireSync { head, edges, pages } = self;
        let head = SyncMessage {
            fingerprint: head.fingerprint,
            session: head.session,
            step: head.step,
            reply: head.reply,
            want: head.want.map(SyncRequest::from),
            lag_cells: head.lag_cells,
        };
        let edges = edges
            .into_iter()
            .map(|edge| {
                let (from, to, code, flow, mark) = match edge {
                    WireEdge::Plain(from, to, code) => (from, to, code, None, ContextMark::Unknown.code()),
                    WireEdge::Labelled(from, to, code, flow, mark) => (from, to, code, flow, mark),
                };
                let kind = EdgeKind::from_code(code).ok_or_else(|| {
                    WireError::Malformed(format!("edge {from} -> {to} has unknown kind {code}"))
                })?;
                let marks = from_marks_code(mark).ok_or_else(|| {
                    WireError::Malformed(format!("edge {from} -> {to} has unknown marks {mark}"))
                })?;
                let flow = flow.map(|f| node_name("edge flow", &f)).transpose()?;
                Ok(Edge::with_kind(node_name("edge", &from)?, node_name("edge", &to)?, kind)
                    .labelled(flow, Default::default())
                    .with_marks(marks))
            })
            .collect::<Result<Vec<Edge>, WireError>>()?;
        let mut deltas = Vec::with_capacity(pages.len());
        for page in pages {
            let page_origin = origin(page.origin);
            let mut cells = Vec::with_capacity(page.cells.len());
            for (index, resolution, bucket_start_ms, seq, calls, errors, bytes, latency) in page.cells {
                let edge = edges.get(index as usize).ok_or_else(|| WireError::EdgeIndex {
                    origin: page_origin.clone(),
                    index,
                    edges: edges.len(),
                })?;
                let latency = LatencyHistogram::decode(&latency).map_err(|e| {
                    WireError::Malformed(format!("page of {page_origin}: a cell's latency histogram: {e}"))
                })?;
                cells.push((
                    CellKey { edge: edge.clone(), resolution, bucket_start_ms },
                    Cell { seq, data: CellData { calls, errors, bytes, latency } },
                ));
            }
            deltas.push(OriginDelta {
                origin: page_origin,
                after_seq: page.after_seq,
                upto_seq: page.upto_seq,
                complete: page.complete,
                to_seq: page.to_seq,
                changed_at_ms: page.changed_at_ms,
                cells,
                sender: page.sender.map(origin),
            });
        }
        Ok((head, deltas))
    }
}

impl From<WireEdgeKind> for EdgeKind {
    fn from(kind: WireEdgeKind) -> Self {
        match kind {
            WireEdgeKind::Request => EdgeKind::Request,
            WireEdgeKind::Messaging => EdgeKind::Messaging,
            WireEdgeKind::Database => EdgeKind::Database,
        }
    }
}

impl From<WireSpanKind> for SpanKind {
    fn from(kind: WireSpanKind) -> Self {
        match kind {
            WireSpanKind::Internal => SpanKind::Internal,
            WireSpanKind::Server => SpanKind::Server,
            WireSpanKind::Client => SpanKind::Client,
            WireSpanKind::Producer => SpanKind::Producer,
            WireSpanKind::Consumer => SpanKind::Consumer,
        }
    }
}

impl TryFrom<WireSpan> for Span {
    type Error = WireError;

    fn try_from(span: WireSpan) -> Result<Self, WireError> {
        if span.trace_id == 0 || span.span_id == 0 {
            return Err(WireError::Malformed("a handed-off span has an all-zero trace or span id".into()));
        }
        if span.end_ns < span.start_ns {
            return Err(WireError::Malformed("a handed-off span ends before it starts".into()));
        }
        let remote = match span.remote {
            Some(remote) => {
                Some(Remote { node: node_name("span remote", &remote.node)?, kind: remote.kind.into() })
            }
            None => None,
        };
        Ok(Span {
            trace_id: span.trace_id,
            span_id: span.span_id,
            parent_span_id: span.parent_span_id,
            kind: span.kind.into(),
            service: node_name("span service", &span.service)?,
            start_ns: span.start_ns,
            end_ns: span.end_ns,
            error: span.error,
            remote,
            sampling_threshold: span.sampling_threshold,
        })
    }
}

impl TryFrom<WireSighting> for Sighting {
    type Error = WireError;

    fn try_from(s: WireSighting) -> Result<Self, WireError> {
        if s.token.is_empty() || s.token.len() > TOKEN_BYTES_MAX {
            return Err(WireError::Malformed(format!(
                "a sighting's token is {} bytes; tokens are 1 to {TOKEN_BYTES_MAX} bytes",
                s.token.len()
            )));
        }
        Ok(Sighting {
            token: s.token,
            node: node_name("sighting", &s.node)?,
            ts_ms: s.ts_ms,
            error: s.error,
            kind: s.kind.into(),
        })
    }
}

impl TryFrom<WireHandoff> for Handoff {
    type Error = WireError;

    fn try_from(handoff: WireHandoff) -> Result<Self, WireError> {
        let len = handoff.spans.len() + handoff.sightings.len();
        if len > HANDOFF_ITEMS_MAX {
            return Err(WireError::TooMany {
                what: "spans and sightings handed off",
                len,
                max: HANDOFF_ITEMS_MAX,
            });
        }
        Ok(Handoff {
            spans: handoff.spans.into_iter().map(Span::try_from).collect::<Result<_, _>>()?,
            sightings: handoff.sightings.into_iter().map(Sighting::try_from).collect::<Result<_, _>>()?,
        })
    }
}

fn check_peers(peers: &[(String, Vec<String>)]) -> Result<(), WireError> {
    if peers.len() > PEERS_LISTED_MAX {
        return Err(WireError::TooMany { what: "peers listed", len: peers.len(), max: PEERS_LISTED_MAX });
    }
    if let Some((_, addrs)) = peers.iter().find(|(_, addrs)| addrs.len() > ADDRS_PER_PEER_MAX) {
        return Err(WireError::TooMany {
            what: "addresses of a listed peer",
            len: addrs.len(),
            max: ADDRS_PER_PEER_MAX,
        });
    }
    Ok(())
}

/// Splits a handoff so that each part fits in one message ([`HANDOFF_ITEMS_MAX`]).
pub fn split_handoff(handoff: Handoff) -> Vec<Handoff> {
    if handoff.spans.len() + handoff.sightings.len() <= HANDOFF_ITEMS_MAX {
        return vec![handoff];
    }
    let chunk = HANDOFF_ITEMS_MAX / 2;
    let mut out: Vec<Handoff> =
        handoff.spans.chunks(chunk).map(|s| Handoff { spans: s.to_vec(), sightings: Vec::new() }).collect();
    out.extend(handoff.sightings.chunks(chunk).map(|s| Handoff { spans: Vec::new(), sightings: s.to_vec() }));
    out
}
