//! What OTLP and Zipkin spans have in common at the boundary: the checks every span
//! passes before it reaches the correlator, the reasons a span is refused (counted by
//! reason), and the attribute rules that name a virtual node.

use std::borrow::Cow;
use std::sync::Arc;

use observatory_core::{EdgeKind, NodeName};
use observatory_correlate::{Remote, Span, SpanKind, threshold_of_probability};

/// Why one span was refused. The code counts refusals; the text goes to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanRejection {
    /// Stable code, e.g. `invalid_trace_id`.
    pub code: &'static str,
    /// What was wrong, naming the field.
    pub reason: String,
}

impl SpanRejection {
    pub(crate) fn new(code: &'static str, reason: impl Into<String>) -> Self {
        Self { code, reason: reason.into() }
    }
}

/// Spans decoded from one request: the good ones, and the refused ones: counted by code,
/// with the reasons of the first [`REASONS_KEPT`] (so that refusing millions of spans
/// costs no memory per span).
#[derive(Debug, Default)]
pub struct DecodedSpans {
    /// Valid spans.
    pub spans: Vec<Span>,
    /// `(index of the span in the request, why)` of the first refused spans.
    pub rejected: Vec<(usize, SpanRejection)>,
    /// Every refused span, by code.
    pub rejected_by_code: std::collections::BTreeMap<&'static str, u64>,
}

/// How many refused spans keep their reason.
pub const REASONS_KEPT: usize = 5;

impl DecodedSpans {
    /// Refuses span `index`; `reason` is made only for the first few.
    pub(crate) fn reject(&mut self, index: usize, code: &'static str, reason: impl FnOnce() -> String) {
        *self.rejected_by_code.entry(code).or_default() += 1;
        if self.rejected.len() < REASONS_KEPT {
            self.rejected.push((index, SpanRejection::new(code, reason())));
        }
    }

    /// Refuses span `index` for `rejection`.
    pub(crate) fn refuse(&mut self, index: usize, rejection: SpanRejection) {
        self.reject(index, rejection.code, || rejection.reason);
    }

    /// How many spans were refused.
    pub fn rejected_count(&self) -> usize {
        self.rejected_by_code.values().sum::<u64>() as usize
    }

    /// Keeps `span` or refuses it.
    pub(crate) fn push(&mut self, index: usize, span: Result<Option<Span>, SpanRejection>) {
        match span {
            Ok(Some(span)) => self.spans.push(span),
            Ok(None) => {}
            Err(rejection) => self.refuse(index, rejection),
        }
    }

    /// Refuses span `index` as one too many for `limits`.
    pub(crate) fn too_many(&mut self, index: usize, limits: &SpanLimits) {
        self.reject(index, "too_many_spans", || {
            format!(
                "more than limits.spans_per_request_max ({}) spans in one request",
                limits.spans_per_request_max
            )
        });
    }
}

/// The span attributes the graph reads (naming the other side, telling a database call,
/// the sampling probability); decoders keep only these.
pub(crate) fn wanted_attribute(key: &[u8], limits: &SpanLimits) -> bool {
    let key = match std::str::from_utf8(key) {
        Ok(key) => key,
        Err(_) => return false,
    };
    DATABASE_ATTRIBUTES.contains(&key)
        || DESTINATION_ATTRIBUTES.contains(&key)
        || ["messaging.system", "sampler.type", "sampler.param", "service.name"].contains(&key)
        || limits.peer_attributes.iter().any(|a| a == key)
        || limits.sample_ratio_attribute.as_deref() == Some(key)
}

/// Limits on spans, and how they name the other side (`correlation.peer_attributes`).
#[derive(Debug, Clone)]
pub struct SpanLimits {
    /// Longest service (node) name in bytes.
    pub node_name_bytes_max: usize,
    /// Most spans in one request; the rest are refused.
    pub spans_per_request_max: usize,
    /// The attributes naming the node on the other side, first non-empty wins.
    pub peer_attributes: Arc<[String]>,
    /// The attribute holding a span's sampling ratio (`correlation.sample_ratio_attribute`).
    pub sample_ratio_attribute: Option<Arc<str>>,
}

impl SpanLimits {
    /// The limits with the documented default peer attributes.
    pub fn new(node_name_bytes_max: usize, spans_per_request_max: usize) -> Self {
        let correlation = &observatory_config::Config::defaults().correlation;
        Self {
            node_name_bytes_max,
            spans_per_request_max,
            peer_attributes: correlation.peer_attributes.clone().into(),
            sample_ratio_attribute: correlation.sample_ratio_attribute.as_deref().map(Arc::from),
        }
    }
}

/// Attributes that make a CLIENT span a database call (old and new semantic conventions).
const DATABASE_ATTRIBUTES: [&str; 4] = ["db.system", "db.system.name", "db.name", "db.namespace"];
/// Where a PRODUCER or CONSUMER names its destination, before the peer attributes.
const DESTINATION_ATTRIBUTES: [&str; 2] = ["messaging.destination.name", "messaging.destination"];

/// A trace id from its bytes: 16 bytes (Zipkin's 8 are widened), not all zero.
pub(crate) fn trace_id(bytes: &[u8], field: &str) -> Result<u128, SpanRejection> {
    let id = match bytes.len() {
        16 => u128::from_be_bytes(bytes.try_into().expect("16 bytes")),
        8 => u128::from(u64::from_be_bytes(bytes.try_into().expect("8 bytes"))),
        n => return Err(SpanRejection::new("invalid_trace_id", format!("{field} is {n} bytes, not 16"))),
    };
    if id == 0 {
        return Err(SpanRejection::new("invalid_trace_id", format!("{field} is all zeros")));
    }
    Ok(id)
}

/// A span id from its bytes: 8 bytes, not all zero.
pub(crate) fn span_id(bytes: &[u8], field: &str, code: &'static str) -> Result<u64, SpanRejection> {
    let Ok(bytes) = <[u8; 8]>::try_from(bytes) else {
        return Err(SpanRejection::new(code, format!("{field} is {} bytes, not 8", bytes.len())));
    };
    match u64::from_be_bytes(bytes) {
        0 => Err(SpanRejection::new(code, format!("{field} is all zeros"))),
        id => Ok(id),
    }
}

/// A parent span id: empty (or all zeros, as some SDKs send) means a root span.
pub(crate) fn parent_span_id(bytes: &[u8], field: &str) -> Result<Option<u64>, SpanRejection> {
    if bytes.is_empty() || bytes.iter().all(|b| *b == 0) {
        return Ok(None);
    }
    span_id(bytes, field, "invalid_parent_span_id").map(Some)
}

/// Decodes lower- or upper-case hex into `out`, which must match its length.
pub(crate) fn hex(text: &str, out: &mut [u8]) -> bool {
    let digits = text.as_bytes();
    if digits.len() != out.len() * 2 {
        return false;
    }
    let nibble = |d: u8| match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        b'A'..=b'F' => Some(d - b'A' + 10),
        _ => None,
    };
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        match (nibble(pair[0]), nibble(pair[1])) {
            (Some(high), Some(low)) => *byte = high << 4 | low,
            _ => return false,
        }
    }
    true
}

/// The service's node name, checked once per resource.
pub(crate) fn service(name: Option<&str>, limits: &SpanLimits) -> Result<NodeName, SpanRejection> {
    let name = name.ok_or_else(|| {
        SpanRejection::new(
            "invalid_service",
            "the resource has no service.name attribute (Zipkin: localEndpoint.serviceName)",
        )
    })?;
    NodeName::new(name, limits.node_name_bytes_max)
        .map_err(|e| SpanRejection::new("invalid_service", format!("service name {e}")))
}

/// Start and end in nanoseconds: both set, end not before start.
pub(crate) fn times(start_ns: u64, end_ns: u64) -> Result<(u64, u64), SpanRejection> {
    if start_ns == 0 {
        return Err(SpanRejection::new("invalid_time", "startTimeUnixNano is missing or zero"));
    }
    if end_ns < start_ns {
        return Err(SpanRejection::new("invalid_time", "the span ends before it starts"));
    }
    Ok((start_ns, end_ns))
}

/// The OpenTelemetry span kind of an OTLP enum value; 0 (unspecified) counts as internal.
pub(crate) fn otlp_kind(code: i64) -> Result<SpanKind, SpanRejection> {
    Ok(match code {
        0 | 1 => SpanKind::Internal,
        2 => SpanKind::Server,
        3 => SpanKind::Client,
        4 => SpanKind::Producer,
        5 => SpanKind::Consumer,
        other => {
            return Err(SpanRejection::new(
                "invalid_kind",
                format!("kind {other} is not a span kind (0 to 5)"),
            ));
        }
    })
}

/// The sampling threshold a span was kept under (see `Span::sampling_threshold`), first
/// found: OpenTelemetry's `th` in the `ot` member of its W3C `trace_state`; the attribute
/// `limits.sample_ratio_attribute` holding the probability; Jaeger's
/// `sampler.type=probabilistic` with `sampler.param`. 0 (each span one call) when none
/// says, or what says is not valid (a threshold that is not 1 to 14 hex digits, a
/// probability outside `(0, 1]`).
pub(crate) fn sampling_threshold<'a>(
    trace_state: &str,
    text: impl Fn(&str) -> Option<Cow<'a, str>>,
    number: impl Fn(&str) -> Option<f64>,
    limits: &SpanLimits,
) -> u64 {
    if let Some(threshold) = ot_threshold(trace_state) {
        return threshold;
    }
    let number = |key: &str| number(key).or_else(|| text(key)?.trim().parse().ok());
    let probability =
        limits.sample_ratio_attribute.as_deref().and_then(number).or_else(|| {
            (text("sampler.type")?.as_ref() == "probabilistic").then(|| number("sampler.param"))?
        });
    probability.and_then(threshold_of_probability).unwrap_or(0)
}

/// The `th` of the `ot` member of a W3C trace state (`ot=th:8;rv:...`): 1 to 14 hex
/// digits, the rejection threshold's most significant first (`8` is 2^55: half kept).
fn ot_threshold(trace_state: &str) -> Option<u64> {
    let ot = trace_state.split(',').find_map(|member| member.trim().strip_prefix("ot="))?;
    let th = ot.split(';').find_map(|field| field.strip_prefix("th:"))?;
    if th.is_empty() || th.len() > 14 || !th.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let value = u64::from_str_radix(th, 16).ok()?;
    Some(value << (4 * (14 - th.len())))
}

/// The node on the other side of a span, from its attributes: for a CLIENT the first of
/// `limits.peer_attributes` present and not empty (a database call when it has a `db.*`
/// attribute), for a PRODUCER or CONSUMER its destination, else the peer attributes, else
/// `messaging.system`. Empty values count as absent; names that are not valid node names
/// are ignored.
pub(crate) fn remote<'a>(
    kind: SpanKind,
    attribute: impl Fn(&str) -> Option<Cow<'a, str>>,
    limits: &SpanLimits,
) -> Option<Remote> {
    let present = |key: &str| attribute(key).filter(|v| !v.trim().is_empty());
    let peers = limits.peer_attributes.iter().map(String::as_str);
    let (node, kind) = match kind {
        SpanKind::Client => {
            let database = DATABASE_ATTRIBUTES.iter().any(|k| present(k).is_some());
            (
                peers.into_iter().find_map(present)?,
                if database { EdgeKind::Database } else { EdgeKind::Request },
            )
        }
        SpanKind::Producer | SpanKind::Consumer => (
            DESTINATION_ATTRIBUTES.into_iter().chain(peers).chain(["messaging.system"]).find_map(present)?,
            EdgeKind::Messaging,
        ),
        SpanKind::Server | SpanKind::Internal => return None,
    };
    let node = NodeName::new(&node, limits.node_name_bytes_max).ok()?;
    Some(Remote { node, kind })
}

/// Reads a JSON array one element at a time, so that a request of millions of elements
/// never holds them all: the first `decoded` elements as `T`, each given to `each` with
/// its position and dropped; the rest skipped unread, given to `skipped`.
pub(crate) struct Elements<T, E, S> {
    pub(crate) decoded: usize,
    pub(crate) each: E,
    pub(crate) skipped: S,
    pub(crate) element: std::marker::PhantomData<fn() -> T>,
}

impl<'de, T, E, S> serde::de::DeserializeSeed<'de> for Elements<T, E, S>
where
    T: serde::Deserialize<'de>,
    E: FnMut(usize, T) -> Result<(), String>,
    S: FnMut(usize),
{
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, T, E, S> serde::de::Visitor<'de> for Elements<T, E, S>
where
    T: serde::Deserialize<'de>,
    E: FnMut(usize, T) -> Result<(), String>,
    S: FnMut(usize),
{
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        loop {
            if index < self.decoded {
                match seq.next_element::<T>()? {
                    Some(element) => (self.each)(index, element).map_err(serde::de::Error::custom)?,
                    None => return Ok(()),
                }
            } else {
                match seq.next_element::<serde::de::IgnoredAny>()? {
                    Some(_) => (self.skipped)(index),
                    None => return Ok(()),
                }
            }
            index += 1;
        }
    }
}
