//! The baggage the library carries: our member of the W3C `baggage` header, and the flow
//! labels in it, with Tracing Plane's semantics.
//!
//! Our member is `obs=<node>~<sent µs>~<hop>` followed by one `~<flow>` per flow label and
//! `~!` when labels were trimmed: the sending node's name (percent-encoded), its send time
//! in microseconds since the Unix epoch, the hop (the low 32 bits of the span id sent in
//! `traceparent`, in hexadecimal), and the flows. A receiver trusts the sender's name and
//! time only when the hop matches the `traceparent` that came with it: a service without
//! the library passes our member on unchanged but sends a span id of its own, and its
//! callee must not take the member's sender for its caller. The flows hold either way.
//! Other members of the header (other libraries', the user's) are passed through as they
//! came, within the W3C limits (64 members, 8,192 bytes).
//!
//! Flow labels are *atoms* (Mace et al., "Universal Context Propagation for Distributed
//! System Instrumentation", EuroSys 2018): a context holds a set of them. `branch` copies
//! the set to each side of a fan-out, `join` takes the union at a fan-in, and when a set
//! holds more than [`FLOWS_MAX`] labels it keeps the smallest ones in byte order and
//! remembers that it overflowed. Trimming by count (each label at most
//! [`FLOW_BYTES_MAX`] bytes) keeps `join` associative, which trimming by bytes would not.

use std::fmt;
use std::sync::Arc;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

/// The header's name.
pub const BAGGAGE: &str = "baggage";

/// The key of our member.
pub const MEMBER_KEY: &str = "obs";

/// Most flow labels a context carries.
pub const FLOWS_MAX: usize = 8;

/// Longest flow label in bytes.
pub const FLOW_BYTES_MAX: usize = 32;

/// Longest flow a call is reported in (the labels joined): under the peer's default
/// `limits.node_name_bytes_max` (200), which flows are checked against.
pub const REPORTED_FLOW_BYTES_MAX: usize = 128;

/// Longest node name, percent-encoded, that our member carries. With the other fields and
/// the flows this keeps `traceparent` plus our member under [`CONTEXT_BYTES_MAX`].
pub const NODE_ENCODED_BYTES_MAX: usize = 150;

/// Hard cap on what the library itself adds to a request: `traceparent` and our member.
pub const CONTEXT_BYTES_MAX: usize = 512;

/// The W3C limits a platform must propagate at least: members and bytes of `baggage`.
pub const BAGGAGE_MEMBERS_MAX: usize = 64;
/// See [`BAGGAGE_MEMBERS_MAX`].
pub const BAGGAGE_BYTES_MAX: usize = 8192;

/// Characters of a node name that our member percent-encodes: everything that is not a
/// W3C `baggage-octet`, our separator `~` and `%` itself (non-ASCII is always encoded).
const NODE_ENCODE: &AsciiSet =
    &CONTROLS.add(b' ').add(b'"').add(b',').add(b';').add(b'\\').add(b'%').add(b'~');

/// A flow label: 1 to [`FLOW_BYTES_MAX`] bytes of `A-Z a-z 0-9 . _ - : = / + * @`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flow(Arc<str>);

/// Why a string is not a flow label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    /// Empty, or longer than [`FLOW_BYTES_MAX`].
    #[error("a flow label is 1 to {FLOW_BYTES_MAX} bytes long, not {0}")]
    Length(usize),
    /// A character outside the label alphabet.
    #[error("{0:?} is not allowed in a flow label (A-Z a-z 0-9 . _ - : = / + * @)")]
    Character(char),
}

impl Flow {
    /// Checks a label.
    pub fn new(label: &str) -> Result<Self, FlowError> {
        if label.is_empty() || label.len() > FLOW_BYTES_MAX {
            return Err(FlowError::Length(label.len()));
        }
        if let Some(c) = label.chars().find(|c| !is_flow_char(*c)) {
            return Err(FlowError::Character(c));
        }
        Ok(Self(Arc::from(label)))
    }

    /// The label.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_flow_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '=' | '/' | '+' | '*' | '@')
}

impl fmt::Debug for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A set of flow labels, at most [`FLOWS_MAX`], with a mark when some were trimmed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Flows {
    /// Sorted, without duplicates.
    atoms: Vec<Flow>,
    overflowed: bool,
}

impl Flows {
    /// No flows.
    pub fn new() -> Self {
        Self::default()
    }

    /// The set of `labels`, trimmed.
    pub fn of(labels: impl IntoIterator<Item = Flow>) -> Self {
        let mut flows = Self { atoms: labels.into_iter().collect(), overflowed: false };
        flows.normalise();
        flows
    }

    /// The labels, in byte order.
    pub fn labels(&self) -> &[Flow] {
        &self.atoms
    }

    /// The flow a call in this context is reported in: the labels joined by `,`, as many
    /// (smallest first) as fit in [`REPORTED_FLOW_BYTES_MAX`] (`None` without labels).
    pub fn reported(&self) -> Option<Arc<str>> {
        match self.atoms.as_slice() {
            [] => None,
            [one] => Some(one.0.clone()),
            many => {
                let mut joined = String::new();
                for label in many {
                    let extra = label.as_str().len() + usize::from(!joined.is_empty());
                    if joined.len() + extra > REPORTED_FLOW_BYTES_MAX {
                        break;
                    }
                    if !joined.is_empty() {
                        joined.push(',');
                    }
                    joined.push_str(label.as_str());
                }
                Some(Arc::from(joined))
            }
        }
    }

    /// Whether labels were dropped because there were more than [`FLOWS_MAX`].
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Whether the set is empty and never overflowed.
    pub fn is_empty(&self) -> bool {
        self.atoms.is_empty() && !self.overflowed
    }

    /// Adds a label (trimming if the set is full).
    pub fn insert(&mut self, flow: Flow) {
        self.atoms.push(flow);
        self.normalise();
    }

    /// Fan-out: both sides carry the same set.
    pub fn branch(&self) -> (Flows, Flows) {
        (self.clone(), self.clone())
    }

    /// Fan-in: the union, trimmed; overflowed if either side or the union overflowed.
    pub fn join(&self, other: &Flows) -> Flows {
        let mut atoms = Vec::with_capacity(self.atoms.len() + other.atoms.len());
        atoms.extend(self.atoms.iter().cloned());
        atoms.extend(other.atoms.iter().cloned());
        let mut flows = Flows { atoms, overflowed: self.overflowed || other.overflowed };
        flows.normalise();
        flows
    }

    fn normalise(&mut self) {
        self.atoms.sort_unstable();
        self.atoms.dedup();
        if self.atoms.len() > FLOWS_MAX {
            self.atoms.truncate(FLOWS_MAX);
            self.overflowed = true;
        }
    }
}

/// Who sent a context: what our member says about the hop that brought it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// The sending node's name.
    pub node: Box<str>,
    /// When it sent, in microseconds since the Unix epoch (its clock).
    pub sent_at_us: u64,
    /// The hop: the low 32 bits of the span id the sender put in `traceparent`, so that a
    /// receiver can tell our member from one forwarded by a service without the library
    /// (which passes baggage on but sends its own span id).
    pub hop_id: u32,
}

/// What a `baggage` header held: our member, if any and valid, and the others as text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedBaggage {
    /// The hop our member describes.
    pub hop: Option<Hop>,
    /// The flows of our member.
    pub flows: Flows,
    /// Other members, trimmed of surrounding whitespace, joined by `,`; empty if none.
    pub foreign: String,
    /// Whether our member was present but could not be read (then it is dropped).
    pub member_invalid: bool,
}

/// Parses every `baggage` header value of a request (several are one list).
pub fn parse_baggage<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> ParsedBaggage {
    let mut parsed = ParsedBaggage::default();
    let mut members = 0usize;
    for value in values {
        let Ok(text) = std::str::from_utf8(value) else { continue };
        for member in text.split(',') {
            let member = member.trim_matches(is_ows);
            // Values are percent-encoded ASCII; a member with a control or raw non-ASCII
            // byte would make the whole header unsendable on the next hop.
            if member.is_empty() || !member.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b)) {
                continue;
            }
            let Some((key, rest)) = member.split_once('=') else { continue };
            let key = key.trim_matches(is_ows);
            if !is_token(key) {
                continue;
            }
            if key == MEMBER_KEY && parsed.hop.is_none() && !parsed.member_invalid {
                match parse_member(rest.trim_matches(is_ows)) {
                    Some((hop, flows)) => {
                        parsed.hop = Some(hop);
                        parsed.flows = flows;
                    }
                    None => parsed.member_invalid = true,
                }
                members += 1;
                continue;
            }
            // Room for our own member is kept within the W3C limits.
            let bytes_after = parsed.foreign.len() + usize::from(!parsed.foreign.is_empty()) + member.len();
            if members + 1 < BAGGAGE_MEMBERS_MAX && bytes_after + CONTEXT_BYTES_MAX <= BAGGAGE_BYTES_MAX {
                if !parsed.foreign.is_empty() {
                    parsed.foreign.push(',');
                }
                parsed.foreign.push_str(member);
                members += 1;
            }
        }
    }
    parsed
}

/// Our member's value for a send.
pub(crate) fn encode_member(
    out: &mut String,
    node_encoded: &str,
    sent_at_us: u64,
    hop_id: u32,
    flows: &Flows,
) {
    use std::fmt::Write as _;
    out.push_str(MEMBER_KEY);
    out.push('=');
    out.push_str(node_encoded);
    let _ = write!(out, "~{sent_at_us}~{hop_id:x}");
    for flow in &flows.atoms {
        out.push('~');
        out.push_str(flow.as_str());
    }
    if flows.overflowed {
        out.push_str("~!");
    }
}

/// A node name as our member carries it, if short enough.
pub(crate) fn encode_node(name: &str) -> Result<String, crate::ServiceNameError> {
    let encoded = utf8_percent_encode(name, NODE_ENCODE).to_string();
    match encoded.len() {
        0 => Err(crate::ServiceNameError::Length(0)),
        n if n > NODE_ENCODED_BYTES_MAX => Err(crate::ServiceNameError::EncodedLength(n)),
        _ => Ok(encoded),
    }
}

fn parse_member(value: &str) -> Option<(Hop, Flows)> {
    let mut fields = value.split('~');
    let node_encoded = fields.next()?;
    if node_encoded.is_empty() || node_encoded.len() > NODE_ENCODED_BYTES_MAX {
        return None;
    }
    let node = percent_decode_str(node_encoded).decode_utf8().ok()?;
    if node.is_empty() || node.chars().any(char::is_control) {
        return None;
    }
    let sent_at_us = fields.next()?.parse().ok()?;
    let hop_text = fields.next()?;
    if hop_text.is_empty() || hop_text.len() > 8 {
        return None;
    }
    let hop_id = u32::from_str_radix(hop_text, 16).ok()?;
    let mut flows = Flows::new();
    for field in fields {
        if field == "!" {
            flows.overflowed = true;
            continue;
        }
        // Other propagators (OpenTelemetry's among them) percent-encode what they pass on.
        let Ok(label) = percent_decode_str(field).decode_utf8() else { continue };
        if let Ok(flow) = Flow::new(&label) {
            flows.atoms.push(flow);
        }
        // A label we cannot read is dropped; it cannot be told from junk.
    }
    flows.normalise();
    Some((Hop { node: node.into(), sent_at_us, hop_id }, flows))
}

fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// An RFC 7230 token.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
