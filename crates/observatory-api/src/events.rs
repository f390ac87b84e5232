//! Native events on the wire: JSON array, NDJSON or CBOR, parsed into core events.
//!
//! A body that is not syntactically valid is refused whole, saying where. A well-formed
//! body is taken event by event: each event that is wrong gets an error naming its index,
//! the field and the reason, and the others go on.

use std::borrow::Cow;
use std::fmt;

use observatory_core::{ContextMark, Edge, EdgeKind, Event, NodeName};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Visitor};

/// Most bytes one event may report (1 TiB), so that no single event can bring an
/// edge's byte counter near overflow.
pub const EVENT_BYTES_MAX: u64 = 1 << 40;

/// Limits applied while parsing.
#[derive(Debug, Clone)]
pub struct ParseLimits {
    /// Most events in one body.
    pub events_per_request_max: usize,
    /// Longest node name in bytes.
    pub node_name_bytes_max: usize,
    /// Largest `count` of one event.
    pub event_count_max: u64,
}

/// The encodings a body can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// A JSON array of events (a single JSON object is taken as one event).
    Json,
    /// One JSON event per line.
    Ndjson,
    /// A CBOR array of event maps.
    Cbor,
}

/// Why a body could not be parsed at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The body is not valid in its format.
    #[error("{location}: {message}")]
    Malformed {
        /// Where: `line L, column C` or `byte N`.
        location: String,
        /// What the parser said.
        message: String,
    },
    /// The body holds more events than allowed.
    #[error("more than limits.events_per_request_max ({max}) events in one request")]
    TooManyEvents {
        /// The limit.
        max: usize,
    },
}

/// One event that could not be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventError {
    /// Index of the event in the body (line order for NDJSON).
    pub index: usize,
    /// The field at fault.
    pub field: String,
    /// Why.
    pub reason: String,
}

/// A parsed body: valid events with their indices, and the errors of the others.
#[derive(Debug, Default)]
pub struct ParsedBody {
    /// Events to apply, each with its index in the body.
    pub events: Vec<(usize, Event)>,
    /// Events refused while parsing.
    pub errors: Vec<EventError>,
}

/// An event timestamp: integer milliseconds since the epoch, or an RFC 3339 string.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timestamp(pub(crate) i64);

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TsVisitor;
        impl Visitor<'_> for TsVisitor {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("integer milliseconds since the epoch or an RFC 3339 time")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Timestamp, E> {
                Ok(Timestamp(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Timestamp, E> {
                i64::try_from(v).map(Timestamp).map_err(|_| E::custom("timestamp out of range"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Timestamp, E> {
                if v.is_finite() && v.abs() < 9.0e15 {
                    Ok(Timestamp(v.round() as i64))
                } else {
                    Err(E::custom("timestamp out of range"))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Timestamp, E> {
                crate::time_text::parse_time(v).map(Timestamp).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(TsVisitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEvent<'a> {
    #[serde(borrow)]
    from: Cow<'a, str>,
    #[serde(borrow)]
    to: Cow<'a, str>,
    #[serde(default)]
    ts: Option<Timestamp>,
    #[serde(default)]
    latency_ms: Option<f64>,
    #[serde(default)]
    error: Option<bool>,
    #[serde(default)]
    bytes: Option<u64>,
    #[serde(default)]
    count: Option<u64>,
    #[serde(default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    flow: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    context: Option<Cow<'a, str>>,
}

fn field_error(index: usize, field: &str, reason: impl ToString) -> EventError {
    EventError { index, field: field.to_string(), reason: reason.to_string() }
}

/// Turns a serde message into `(field, reason)`, finding the field where serde names it.
fn split_serde_message(path: &str, message: &str) -> (String, String) {
    if !path.is_empty() && path != "." {
        return (path.to_string(), message.to_string());
    }
    for prefix in ["missing field `", "unknown field `", "duplicate field `"] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some(end) = rest.find('`')
        {
            return (rest[..end].to_string(), message.to_string());
        }
    }
    ("event".to_string(), message.to_string())
}

impl WireEvent<'_> {
    fn into_event(self, index: usize, now_ms: i64, limits: &ParseLimits) -> Result<Event, EventError> {
        let name = |field: &str, value: &str| {
            NodeName::new(value, limits.node_name_bytes_max).map_err(|e| field_error(index, field, e))
        };
        let from = name("from", &self.from)?;
        let to = name("to", &self.to)?;
        let latency_us = match self.latency_ms {
            None => None,
            Some(ms) if ms.is_finite() && ms >= 0.0 => {
                Some((ms * 1000.0).round().min(u64::MAX as f64) as u64)
            }
            Some(ms) => {
                return Err(field_error(index, "latency_ms", format!("must be a number >= 0, got {ms}")));
            }
        };
        let bytes = self.bytes.unwrap_or(0);
        if bytes > EVENT_BYTES_MAX {
            return Err(field_error(
                index,
                "bytes",
                format!("must be at most {EVENT_BYTES_MAX} (1 TiB), got {bytes}"),
            ));
        }
        let count = self.count.unwrap_or(1);
        if count == 0 || count > limits.event_count_max {
            return Err(field_error(
                index,
                "count",
                format!(
                    "must be between 1 and limits.event_count_max ({}), got {count}",
                    limits.event_count_max
                ),
            ));
        }
        let kind = match self.kind.as_deref() {
            None => EdgeKind::Request,
            Some(name) => EdgeKind::from_name(name).ok_or_else(|| {
                field_error(index, "kind", format!("must be request, messaging or database, got `{name}`"))
            })?,
        };
        let flow = self.flow.as_deref().map(|f| name("flow", f)).transpose()?;
        let context = match self.context.as_deref() {
            None => ContextMark::Unknown,
            Some(name) => ContextMark::from_name(name).ok_or_else(|| {
                field_error(
                    index,
                    "context",
                    format!("must be continued, started, missing or unknown, got `{name}`"),
                )
            })?,
        };
        Ok(Event {
            edge: Edge::with_kind(from, to, kind).labelled(flow, context),
            ts_ms: self.ts.map_or(now_ms, |t| t.0),
            latency_us,
            error: self.error.unwrap_or(false),
            bytes,
            count,
        })
    }
}

fn json_event(index: usize, text: &str, now_ms: i64, limits: &ParseLimits) -> Result<Event, EventError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    match serde_path_to_error::deserialize::<_, WireEvent<'_>>(&mut deserializer) {
        Ok(wire) => wire.into_event(index, now_ms, limits),
        Err(error) => {
            let path = error.path().to_string();
            let (field, reason) = split_serde_message(&path, &error.inner().to_string());
            // serde_json appends " at line L column C"; inside one event that is noise.
            let reason = reason.split(" at line ").next().unwrap_or(&reason).to_string();
            Err(field_error(index, &field, reason))
        }
    }
}

fn json_location(error: &serde_json::Error, line_offset: usize) -> BodyError {
    let message = error.to_string();
    let message = message.split(" at line ").next().unwrap_or(&message).to_string();
    BodyError::Malformed {
        location: format!("line {}, column {}", error.line() + line_offset, error.column()),
        message,
    }
}

fn push(parsed: &mut ParsedBody, index: usize, result: Result<Event, EventError>) {
    match result {
        Ok(event) => parsed.events.push((index, event)),
        Err(error) => parsed.errors.push(error),
    }
}

/// Parses a body in `format` into events, with `now_ms` for events without a timestamp.
pub fn parse_body(
    format: BodyFormat,
    body: &[u8],
    now_ms: i64,
    limits: &ParseLimits,
) -> Result<ParsedBody, BodyError> {
    match format {
        BodyFormat::Json => parse_json(body, now_ms, limits),
        BodyFormat::Ndjson => parse_ndjson(body, now_ms, limits),
        BodyFormat::Cbor => parse_cbor(body, now_ms, limits),
    }
}

fn utf8(body: &[u8]) -> Result<&str, BodyError> {
    std::str::from_utf8(body).map_err(|e| BodyError::Malformed {
        location: format!("byte {}", e.valid_up_to()),
        message: "the body is not valid UTF-8".into(),
    })
}

fn parse_json(body: &[u8], now_ms: i64, limits: &ParseLimits) -> Result<ParsedBody, BodyError> {
    let text = utf8(body)?;
    if text.trim_start().starts_with('{') {
        // One event on its own is a batch of one.
        return parse_ndjson_text(text, now_ms, limits);
    }
    let max = limits.events_per_request_max;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let raw: Vec<&serde_json::value::RawValue> = BoundedSeq::new(max)
        .deserialize(&mut deserializer)
        .and_then(|raw| deserializer.end().map(|()| raw))
        .map_err(|e| if is_too_many(&e) { BodyError::TooManyEvents { max } } else { json_location(&e, 0) })?;
    let mut parsed = ParsedBody::default();
    for (index, item) in raw.iter().enumerate() {
        push(&mut parsed, index, json_event(index, item.get(), now_ms, limits));
    }
    Ok(parsed)
}

const TOO_MANY: &str = "observatory: more events than allowed";

thread_local! {
    static CBOR_ITEMS_MAX: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A CBOR array of at most `CBOR_ITEMS_MAX` items (see `parse_cbor`).
struct BoundedCborItems(Vec<CborItem>);

/// Most entries of an event map kept: more than the ten fields an event has means a field
/// is unknown or given twice, which one of the first sixteen already shows.
const CBOR_ENTRIES_KEPT: usize = 16;

/// One item of a CBOR event array, read shallowly so that no item costs memory beyond its
/// own bytes: a map keeps its first [`CBOR_ENTRIES_KEPT`] entries with scalar values
/// ([`CborScalar`]); anything else is drained unread and stands as an empty array.
struct CborItem(ciborium::Value);

/// A value in an event map: a scalar as it is; an array or a map (which no field takes)
/// drained unread, standing as an empty one of its kind.
struct CborScalar(ciborium::Value);

macro_rules! cbor_scalars {
    ($wrap:ident) => {
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<$wrap, E> {
            Ok($wrap(ciborium::Value::Bool(v)))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<$wrap, E> {
            Ok($wrap(ciborium::Value::Integer(v.into())))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<$wrap, E> {
            Ok($wrap(ciborium::Value::Integer(v.into())))
        }
        fn visit_i128<E: de::Error>(self, v: i128) -> Result<$wrap, E> {
            ciborium::value::Integer::try_from(v)
                .map(|i| $wrap(ciborium::Value::Integer(i)))
                .map_err(E::custom)
        }
        fn visit_u128<E: de::Error>(self, v: u128) -> Result<$wrap, E> {
            ciborium::value::Integer::try_from(v)
                .map(|i| $wrap(ciborium::Value::Integer(i)))
                .map_err(E::custom)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<$wrap, E> {
            Ok($wrap(ciborium::Value::Float(v)))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<$wrap, E> {
            Ok($wrap(ciborium::Value::Text(v.to_string())))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<$wrap, E> {
            Ok($wrap(ciborium::Value::Text(v)))
        }
        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<$wrap, E> {
            Ok($wrap(ciborium::Value::Bytes(v.to_vec())))
        }
        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<$wrap, E> {
            Ok($wrap(ciborium::Value::Bytes(v)))
        }
        fn visit_none<E: de::Error>(self) -> Result<$wrap, E> {
            Ok($wrap(ciborium::Value::Null))
        }
        fn visit_unit<E: de::Error>(self) -> Result<$wrap, E> {
            Ok($wrap(ciborium::Value::Null))
        }
        fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<$wrap, D::Error> {
            d.deserialize_any(self)
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<$wrap, A::Error> {
            while seq.next_element::<de::IgnoredAny>()?.is_some() {}
            Ok($wrap(ciborium::Value::Array(Vec::new())))
        }
        // A tagged value (ciborium shows tags as enums): drained, standing as a tag no
        // field takes, so that only its event is refused.
        fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<$wrap, A::Error> {
            use de::VariantAccess;
            let (_, variant) = data.variant::<de::IgnoredAny>()?;
            variant.newtype_variant::<de::IgnoredAny>()?;
            Ok($wrap(ciborium::Value::Tag(0, Box::new(ciborium::Value::Null))))
        }
    };
}

impl<'de> Deserialize<'de> for CborScalar {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CborScalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value")
            }
            cbor_scalars!(CborScalar);
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<CborScalar, A::Error> {
                while map.next_entry::<de::IgnoredAny, de::IgnoredAny>()?.is_some() {}
                Ok(CborScalar(ciborium::Value::Map(Vec::new())))
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for CborItem {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CborItem;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event map")
            }
            cbor_scalars!(CborItem);
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<CborItem, A::Error> {
                let mut entries = Vec::new();
                while entries.len() < CBOR_ENTRIES_KEPT {
                    match map.next_entry::<CborScalar, CborScalar>()? {
                        Some((key, value)) => entries.push((key.0, value.0)),
                        None => return Ok(CborItem(ciborium::Value::Map(entries))),
                    }
                }
                while map.next_entry::<de::IgnoredAny, de::IgnoredAny>()?.is_some() {}
                Ok(CborItem(ciborium::Value::Map(entries)))
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for BoundedCborItems {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let max = CBOR_ITEMS_MAX.with(std::cell::Cell::get);
        BoundedSeq::new(max).deserialize(deserializer).map(BoundedCborItems)
    }
}

fn is_too_many(error: &impl std::fmt::Display) -> bool {
    error.to_string().contains(TOO_MANY)
}

/// A sequence of at most `max` elements: deserializing fails as soon as there are more,
/// so an oversized array is refused before it is held in memory.
struct BoundedSeq<T> {
    max: usize,
    element: std::marker::PhantomData<T>,
}

impl<T> BoundedSeq<T> {
    fn new(max: usize) -> Self {
        Self { max, element: std::marker::PhantomData }
    }
}

impl<'de, T: Deserialize<'de>> de::DeserializeSeed<'de> for BoundedSeq<T> {
    type Value = Vec<T>;
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Vec<T>, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for BoundedSeq<T> {
    type Value = Vec<T>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of events")
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        // No capacity from the declared length: a few bytes may declare thousands.
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            if items.len() == self.max {
                return Err(de::Error::custom(TOO_MANY));
            }
            items.push(item);
        }
        Ok(items)
    }
}

fn check_count(count: usize, limits: &ParseLimits) -> Result<(), BodyError> {
    if count > limits.events_per_request_max {
        return Err(BodyError::TooManyEvents { max: limits.events_per_request_max });
    }
    Ok(())
}

fn parse_ndjson(body: &[u8], now_ms: i64, limits: &ParseLimits) -> Result<ParsedBody, BodyError> {
    parse_ndjson_text(utf8(body)?, now_ms, limits)
}

fn parse_ndjson_text(text: &str, now_ms: i64, limits: &ParseLimits) -> Result<ParsedBody, BodyError> {
    check_count(text.lines().filter(|line| !line.trim().is_empty()).count(), limits)?;
    let mut parsed = ParsedBody::default();
    let mut index = 0;
    for (line_number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        // Syntax first, so that a broken line refuses the whole body with its place.
        let raw: &serde_json::value::RawValue =
            serde_json::from_str(line).map_err(|e| json_location(&e, line_number))?;
        if !raw.get().trim_start().starts_with('{') {
            return Err(BodyError::Malformed {
                location: format!("line {}, column 1", line_number + 1),
                message: "expected one JSON object (an event) per line".into(),
            });
        }
        push(&mut parsed, index, json_event(index, raw.get(), now_ms, limits));
        index += 1;
    }
    Ok(parsed)
}

fn parse_cbor(body: &[u8], now_ms: i64, limits: &ParseLimits) -> Result<ParsedBody, BodyError> {
    let max = limits.events_per_request_max;
    // ciborium takes no seed, so the limit reaches the visitor through a thread-local,
    // set only around this synchronous call.
    CBOR_ITEMS_MAX.with(|limit| limit.set(max));
    let items = ciborium::from_reader::<BoundedCborItems, _>(body).map(|items| items.0);
    let items: Vec<CborItem> = items.map_err(|e| {
        if is_too_many(&e) {
            return BodyError::TooManyEvents { max };
        }
        let (location, message) = match e {
            ciborium::de::Error::Syntax(offset) => (format!("byte {offset}"), "invalid CBOR".to_string()),
            ciborium::de::Error::Semantic(Some(offset), m) => (format!("byte {offset}"), m),
            ciborium::de::Error::Semantic(None, m) => ("body".to_string(), m),
            ciborium::de::Error::Io(e) => ("end of body".to_string(), format!("truncated CBOR ({e:?})")),
            ciborium::de::Error::RecursionLimitExceeded => {
                ("body".to_string(), "nested too deeply".to_string())
            }
        };
        BodyError::Malformed { location, message: format!("{message}; expected a CBOR array of event maps") }
    })?;
    let mut parsed = ParsedBody::default();
    for (index, item) in items.into_iter().enumerate() {
        push(&mut parsed, index, cbor_event(index, item.0, now_ms, limits));
    }
    Ok(parsed)
}

/// Takes a CBOR map field by field, so that an error names the field.
fn cbor_event(
    index: usize,
    item: ciborium::Value,
    now_ms: i64,
    limits: &ParseLimits,
) -> Result<Event, EventError> {
    use ciborium::Value;
    let Value::Map(entries) = item else {
        return Err(field_error(index, "event", "expected a map"));
    };
    let mut wire = WireEvent {
        from: Cow::Borrowed(""),
        to: Cow::Borrowed(""),
        ts: None,
        latency_ms: None,
        error: None,
        bytes: None,
        count: None,
        kind: None,
        flow: None,
        context: None,
    };
    let (mut has_from, mut has_to) = (false, false);
    // As JSON: a key twice is refused, not last-wins.
    let mut seen: Vec<String> = Vec::with_capacity(10);
    for (key, value) in entries {
        let Value::Text(key) = key else {
            return Err(field_error(index, "event", "map keys must be text"));
        };
        if seen.contains(&key) {
            return Err(field_error(index, &key, format!("duplicate field `{key}`")));
        }
        seen.push(key.clone());
        let bad = |e: ciborium::value::Error| field_error(index, &key, e.to_string());
        match key.as_str() {
            "from" => {
                wire.from = Cow::Owned(value.deserialized::<String>().map_err(bad)?);
                has_from = true;
            }
            "to" => {
                wire.to = Cow::Owned(value.deserialized::<String>().map_err(bad)?);
                has_to = true;
            }
            "ts" => wire.ts = value.deserialized().map_err(bad)?,
            "latency_ms" => wire.latency_ms = value.deserialized().map_err(bad)?,
            "error" => wire.error = value.deserialized().map_err(bad)?,
            "bytes" => wire.bytes = value.deserialized().map_err(bad)?,
            "count" => wire.count = value.deserialized().map_err(bad)?,
            "kind" => wire.kind = Some(Cow::Owned(value.deserialized::<String>().map_err(bad)?)),
            "flow" => wire.flow = Some(Cow::Owned(value.deserialized::<String>().map_err(bad)?)),
            "context" => wire.context = Some(Cow::Owned(value.deserialized::<String>().map_err(bad)?)),
            other => return Err(field_error(index, other, format!("unknown field `{other}`"))),
        }
    }
    if !has_from {
        return Err(field_error(index, "from", "missing field `from`"));
    }
    if !has_to {
        return Err(field_error(index, "to", "missing field `to`"));
    }
    wire.into_event(index, now_ms, limits)
}
