//! The wire format of messages between peers: CBOR (ciborium) in a versioned envelope.
//!
//! An envelope is the CBOR array `[version, body]`. Cells travel compactly: each page
//! names its edges by index into one table of edges per message, and a cell is an
//! array of plain integers with its latency histogram as a byte string (its
//! [`LatencyHistogram::encode`] form). Decoding is bounded by the caller (the message
//! was read whole, at most `mesh.message_bytes_max` bytes), checks every index and
//! histogram, and returns an error naming what is wrong; it never panics.

use std::collections::BTreeMap;

use observatory_core::{
    Cell, CellData, CellKey, Edge, EdgeKind, LatencyHistogram, NodeName, Origin, OriginDelta,
};
use observatory_correlate::Handoff;
use serde::{Deserialize, Serialize};

use crate::protocol::{Hello, Message, SyncMessage};

/// Version of the envelope and of everything in it. A peer refuses other versions.
pub const WIRE_VERSION: u32 = 2;

/// Most peers listed in one [`Body::Peers`] message.
pub const PEERS_LISTED_MAX: usize = 256;
/// Most addresses per listed peer.
pub const ADDRS_PER_PEER_MAX: usize = 16;
/// Most spans plus sightings in one [`Body::Handoff`].
pub const HANDOFF_ITEMS_MAX: usize = 10_000;
/// Longest token of a sighting, in bytes.
pub const TOKEN_BYTES_MAX: usize = 256;

/// What one message carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Body {
    /// Settings fingerprint, sent on connect.
    Hello(Hello),
    /// One step of an anti-entropy session.
    Sync(WireSync),
    /// Peers the sender knows, so that the receiver can dial them (peer id and
    /// multiaddrs, as text).
    Peers(Vec<(String, Vec<String>)>),
    /// Span halves and sightings handed to the owner of their traces and tokens.
    Handoff(Handoff),
}

/// A [`SyncMessage`] with its pages in compact form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireSync {
    /// Everything of the message but the pages.
    pub head: SyncMessage,
    /// Every edge the pages name, once: `(from, to, kind code)`.
    pub edges: Vec<(NodeName, NodeName, u8)>,
    /// The pages.
    pub pages: Vec<WirePage>,
}

/// One [`OriginDelta`], its cells naming edges by index into [`WireSync::edges`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WirePage {
    origin: Origin,
    after_seq: u64,
    upto_seq: u64,
    complete: bool,
    to_seq: u64,
    changed_at_ms: Option<i64>,
    sender: Option<Origin>,
    cells: Vec<WireCell>,
}

/// `(edge index, resolution, bucket start, seq, calls, errors, bytes, latency)`.
type WireCell = (u32, u8, i64, u64, u64, u64, u64, LatencyHistogram);

#[derive(Serialize)]
struct EnvelopeRef<'a>(u32, &'a Body);

#[derive(Deserialize)]
struct Envelope(u32, Body);

#[derive(Deserialize)]
struct VersionOnly(u32, serde::de::IgnoredAny);

/// Why a message from a peer could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not CBOR of the expected shape.
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

/// Encodes a message body in its envelope.
pub fn encode(body: &Body) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(&EnvelopeRef(WIRE_VERSION, body), &mut out)
        .expect("writing CBOR to a Vec cannot fail");
    out
}

/// Decodes an envelope read whole from a peer.
pub fn decode(bytes: &[u8]) -> Result<Body, WireError> {
    match ciborium::from_reader::<Envelope, _>(bytes) {
        Ok(Envelope(WIRE_VERSION, body)) => {
            match &body {
                Body::Peers(peers) => check_peers(peers)?,
                Body::Handoff(handoff) => check_handoff(handoff)?,
                Body::Hello(_) | Body::Sync(_) => {}
            }
            Ok(body)
        }
        Ok(Envelope(version, _)) => Err(WireError::Version(version)),
        Err(error) => match ciborium::from_reader::<VersionOnly, _>(bytes) {
            Ok(VersionOnly(version, _)) if version != WIRE_VERSION => Err(WireError::Version(version)),
            _ => Err(WireError::Malformed(error.to_string())),
        },
    }
}

fn check_handoff(handoff: &Handoff) -> Result<(), WireError> {
    let len = handoff.spans.len() + handoff.sightings.len();
    if len > HANDOFF_ITEMS_MAX {
        return Err(WireError::TooMany {
            what: "spans and sightings handed off",
            len,
            max: HANDOFF_ITEMS_MAX,
        });
    }
    if let Some(s) = handoff.sightings.iter().find(|s| s.token.is_empty() || s.token.len() > TOKEN_BYTES_MAX)
    {
        return Err(WireError::Malformed(format!(
            "a sighting's token is {} bytes; tokens are 1 to {TOKEN_BYTES_MAX} bytes",
            s.token.len()
        )));
    }
    Ok(())
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

/// Puts a protocol message into its wire body.
pub fn to_body(message: Message) -> Body {
    match message {
        Message::Hello(hello) => Body::Hello(hello),
        Message::Sync(head, pages) => {
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
                                edges.push((
                                    key.edge.from.clone(),
                                    key.edge.to.clone(),
                                    key.edge.kind.code(),
                                ));
                                next
                            });
                            let CellData { calls, errors, bytes, latency } = cell.data;
                            (
                                index,
                                key.resolution,
                                key.bucket_start_ms,
                                cell.seq,
                                calls,
                                errors,
                                bytes,
                                latency,
                            )
                        })
                        .collect();
                    WirePage {
                        origin: page.origin,
                        after_seq: page.after_seq,
                        upto_seq: page.upto_seq,
                        complete: page.complete,
                        to_seq: page.to_seq,
                        changed_at_ms: page.changed_at_ms,
                        sender: page.sender,
                        cells,
                    }
                })
                .collect();
            Body::Sync(WireSync { head, edges, pages })
        }
        Message::Peers(peers) => Body::Peers(peers),
        Message::Handoff(handoff) => Body::Handoff(handoff),
    }
}

/// Takes a protocol message out of its wire body, checking every edge index.
pub fn from_body(body: Body) -> Result<Message, WireError> {
    match body {
        Body::Hello(hello) => Ok(Message::Hello(hello)),
        Body::Peers(peers) => Ok(Message::Peers(peers)),
        Body::Handoff(handoff) => Ok(Message::Handoff(handoff)),
        Body::Sync(WireSync { head, edges, pages }) => {
            let edges = edges
                .into_iter()
                .map(|(from, to, code)| {
                    let kind = EdgeKind::from_code(code).ok_or_else(|| {
                        WireError::Malformed(format!("edge {from} -> {to} has unknown kind {code}"))
                    })?;
                    Ok(Edge::with_kind(from, to, kind))
                })
                .collect::<Result<Vec<Edge>, WireError>>()?;
            let mut deltas = Vec::with_capacity(pages.len());
            for page in pages {
                let mut cells = Vec::with_capacity(page.cells.len());
                for (index, resolution, bucket_start_ms, seq, calls, errors, bytes, latency) in page.cells {
                    let edge = edges.get(index as usize).ok_or_else(|| WireError::EdgeIndex {
                        origin: page.origin.clone(),
                        index,
                        edges: edges.len(),
                    })?;
                    cells.push((
                        CellKey { edge: edge.clone(), resolution, bucket_start_ms },
                        Cell { seq, data: CellData { calls, errors, bytes, latency } },
                    ));
                }
                deltas.push(OriginDelta {
                    origin: page.origin,
                    after_seq: page.after_seq,
                    upto_seq: page.upto_seq,
                    complete: page.complete,
                    to_seq: page.to_seq,
                    changed_at_ms: page.changed_at_ms,
                    cells,
                    sender: page.sender,
                });
            }
            Ok(Message::Sync(head, deltas))
        }
    }
}

/// Encodes a protocol message for the wire.
pub fn encode_message(message: Message) -> Vec<u8> {
    encode(&to_body(message))
}

/// Decodes a protocol message read whole from a peer.
pub fn decode_message(bytes: &[u8]) -> Result<Message, WireError> {
    from_body(decode(bytes)?)
}
