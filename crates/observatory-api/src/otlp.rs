//! OTLP/HTTP traces (`POST /v1/traces`): protobuf and JSON bodies to [`Span`]s, and the
//! answers the OTLP specification asks for.
//!
//! The protobuf messages below declare only the fields the flow graph needs; protobuf
//! skips the others. Strings are read as byte slices of the request body (no copy) and
//! checked as UTF-8 only where used. JSON follows the OTLP/JSON rules: lowerCamelCase
//! keys, ids in hex, enums as integers (names are accepted too), 64-bit integers as
//! strings or numbers, unknown keys ignored.

use std::borrow::Cow;

use bytes::Bytes;
use observatory_correlate::{Span, SpanKind};
use prost::Message;
use serde::Deserialize;

use crate::spans::{self, DecodedSpans, SpanLimits, SpanRejection};

/// `opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest`, lean.
#[derive(Clone, PartialEq, Message)]
pub struct ExportTraceServiceRequest {
    /// Spans grouped by resource.
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<ResourceSpans>,
}

/// `ResourceSpans`, lean.
#[derive(Clone, PartialEq, Message)]
pub struct ResourceSpans {
    /// The resource (its `service.name`).
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    /// Spans grouped by instrumentation scope.
    #[prost(message, repeated, tag = "2")]
    pub scope_spans: Vec<ScopeSpans>,
}

/// `Resource`, lean.
#[derive(Clone, PartialEq, Message)]
pub struct Resource {
    /// Its attributes.
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
}

/// `ScopeSpans`, lean.
#[derive(Clone, PartialEq, Message)]
pub struct ScopeSpans {
    /// The spans.
    #[prost(message, repeated, tag = "2")]
    pub spans: Vec<ProtoSpan>,
}

/// `Span`, lean.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoSpan {
    /// 16 bytes.
    #[prost(bytes = "bytes", tag = "1")]
    pub trace_id: Bytes,
    /// 8 bytes.
    #[prost(bytes = "bytes", tag = "2")]
    pub span_id: Bytes,
    /// The W3C trace state (UTF-8, read as bytes): OpenTelemetry's sampling threshold.
    #[prost(bytes = "bytes", tag = "3")]
    pub trace_state: Bytes,
    /// 8 bytes, or empty for a root span.
    #[prost(bytes = "bytes", tag = "4")]
    pub parent_span_id: Bytes,
    /// `SpanKind` enum value.
    #[prost(int32, tag = "6")]
    pub kind: i32,
    /// Start, ns since the epoch.
    #[prost(fixed64, tag = "7")]
    pub start_time_unix_nano: u64,
    /// End, ns since the epoch.
    #[prost(fixed64, tag = "8")]
    pub end_time_unix_nano: u64,
    /// Attributes.
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<KeyValue>,
    /// Status.
    #[prost(message, optional, tag = "15")]
    pub status: Option<Status>,
}

/// `Status` of a span, lean.
#[derive(Clone, PartialEq, Message)]
pub struct Status {
    /// 0 unset, 1 ok, 2 error.
    #[prost(int32, tag = "3")]
    pub code: i32,
}

/// `KeyValue`, lean: the key, and the value if it is a string.
#[derive(Clone, PartialEq, Message)]
pub struct KeyValue {
    /// UTF-8 key (read as bytes).
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    /// The value.
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

/// `AnyValue`, lean: `string_value` (names nodes) and `double_value` (sampling ratios).
#[derive(Clone, PartialEq, Message)]
pub struct AnyValue {
    /// UTF-8 string (read as bytes).
    #[prost(bytes = "bytes", optional, tag = "1")]
    pub string_value: Option<Bytes>,
    /// A double.
    #[prost(double, optional, tag = "4")]
    pub double_value: Option<f64>,
}

/// `ExportTraceServiceResponse`.
#[derive(Clone, PartialEq, Message)]
pub struct ExportTraceServiceResponse {
    /// Set when some spans were refused.
    #[prost(message, optional, tag = "1")]
    pub partial_success: Option<ExportTracePartialSuccess>,
}

/// `ExportTracePartialSuccess`.
#[derive(Clone, PartialEq, Message)]
pub struct ExportTracePartialSuccess {
    /// How many spans were refused.
    #[prost(int64, tag = "1")]
    pub rejected_spans: i64,
    /// Why (the first few reasons).
    #[prost(string, tag = "2")]
    pub error_message: String,
}

/// `google.rpc.Status`, the body of OTLP error answers.
#[derive(Clone, PartialEq, Message)]
pub struct RpcStatus {
    /// A gRPC status code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// What went wrong.
    #[prost(string, tag = "2")]
    pub message: String,
}

fn double_attribute(attributes: &[KeyValue], key: &str) -> Option<f64> {
    attributes
        .iter()
        .find(|kv| kv.key.as_ref() == key.as_bytes())
        .and_then(|kv| kv.value.as_ref()?.double_value)
}

fn string_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|kv| kv.key.as_ref() == key.as_bytes())
        .and_then(|kv| kv.value.as_ref()?.string_value.as_deref())
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// `Span` as the decoder reads it: without its attributes, which are read one by one
/// (only those the graph needs are kept), so that no part of a request costs memory in
/// proportion to what it holds beyond that.
#[derive(Clone, PartialEq, Message)]
struct LeanSpan {
    #[prost(bytes = "bytes", tag = "1")]
    trace_id: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    span_id: Bytes,
    #[prost(bytes = "bytes", tag = "3")]
    trace_state: Bytes,
    #[prost(bytes = "bytes", tag = "4")]
    parent_span_id: Bytes,
    #[prost(int32, tag = "6")]
    kind: i32,
    #[prost(fixed64, tag = "7")]
    start_time_unix_nano: u64,
    #[prost(fixed64, tag = "8")]
    end_time_unix_nano: u64,
    #[prost(message, optional, tag = "15")]
    status: Option<Status>,
}

/// The length-delimited fields numbered `tag` of the message in `bytes`, one at a time,
/// without copying; other fields are skipped. `Err` when the message is malformed.
fn each_field(
    mut bytes: Bytes,
    tag: u32,
    mut each: impl FnMut(Bytes) -> Result<(), String>,
) -> Result<(), String> {
    use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
    while !bytes.is_empty() {
        let (field, wire_type) = decode_key(&mut bytes).map_err(|e| e.to_string())?;
        if field == tag && wire_type == WireType::LengthDelimited {
            let len = decode_varint(&mut bytes).map_err(|e| e.to_string())?;
            let len = usize::try_from(len)
                .ok()
                .filter(|&len| len <= bytes.len())
                .ok_or("a field runs past its message")?;
            each(bytes.split_to(len))?;
        } else {
            skip_field(wire_type, field, &mut bytes, DecodeContext::default()).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// The attributes (`KeyValue`s, field `tag`) of a message that the graph reads.
fn wanted_attributes(bytes: &Bytes, tag: u32, limits: &SpanLimits) -> Result<Vec<KeyValue>, String> {
    let mut kept: Vec<KeyValue> = Vec::new();
    each_field(bytes.clone(), tag, |kv| {
        let kv = KeyValue::decode(kv).map_err(|e| e.to_string())?;
        // The first of each key counts, as a search in order would find it.
        if spans::wanted_attribute(&kv.key, limits) && !kept.iter().any(|k| k.key == kv.key) {
            kept.push(kv);
        }
        Ok(())
    })?;
    Ok(kept)
}

/// Decodes a protobuf body, one span at a time. `Err` when the body is not an
/// `ExportTraceServiceRequest`. Spans beyond `limits.spans_per_request_max` are counted
/// as refused without being decoded.
pub fn decode_protobuf(body: Bytes, limits: &SpanLimits) -> Result<DecodedSpans, String> {
    let not_otlp = |e: String| format!("not an OTLP ExportTraceServiceRequest: {e}");
    let mut out = DecodedSpans::default();
    let mut index = 0usize;
    each_field(body, 1, |resource_spans| {
        // The resource may come after its spans: read it first.
        let mut resource = Vec::new();
        each_field(resource_spans.clone(), 1, |r| {
            resource = wanted_attributes(&r, 1, limits)?;
            Ok(())
        })?;
        let service = spans::service(string_attribute(&resource, "service.name"), limits);
        each_field(resource_spans, 2, |scope_spans| {
            each_field(scope_spans, 2, |span| {
                if index >= limits.spans_per_request_max {
                    out.too_many(index, limits);
                } else {
                    let lean = LeanSpan::decode(span.clone()).map_err(|e| e.to_string())?;
                    let attributes = wanted_attributes(&span, 9, limits)?;
                    let converted = service
                        .clone()
                        .and_then(|service| proto_span(&lean, &attributes, &resource, service, limits));
                    out.push(index, converted);
                }
                index += 1;
                Ok(())
            })
        })
    })
    .map_err(not_otlp)?;
    Ok(out)
}

/// Internal spans are dropped here already (`Ok(None)`): they are never edges, and
/// most spans of a trace are internal.
fn proto_span(
    span: &LeanSpan,
    attributes: &[KeyValue],
    resource: &[KeyValue],
    service: observatory_core::NodeName,
    limits: &SpanLimits,
) -> Result<Option<Span>, SpanRejection> {
    let kind = spans::otlp_kind(i64::from(span.kind))?;
    let trace_id = spans::trace_id(&span.trace_id, "traceId")?;
    let span_id = spans::span_id(&span.span_id, "spanId", "invalid_span_id")?;
    let parent_span_id = spans::parent_span_id(&span.parent_span_id, "parentSpanId")?;
    let (start_ns, end_ns) = spans::times(span.start_time_unix_nano, span.end_time_unix_nano)?;
    if kind == SpanKind::Internal {
        return Ok(None);
    }
    let remote = spans::remote(kind, |key| string_attribute(attributes, key).map(Cow::Borrowed), limits);
    let sampling_threshold = spans::sampling_threshold(
        std::str::from_utf8(&span.trace_state).unwrap_or(""),
        |key| {
            string_attribute(attributes, key).or_else(|| string_attribute(resource, key)).map(Cow::Borrowed)
        },
        |key| double_attribute(attributes, key).or_else(|| double_attribute(resource, key)),
        limits,
    );
    Ok(Some(Span {
        trace_id,
        span_id,
        parent_span_id,
        kind,
        service,
        start_ns,
        end_ns,
        error: span.status.as_ref().is_some_and(|s| s.code == 2),
        remote,
        sampling_threshold,
    }))
}

#[derive(Deserialize)]
struct JsonResource<'a> {
    #[serde(default, borrow)]
    attributes: Vec<JsonKeyValue<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonSpan<'a> {
    #[serde(default, borrow)]
    trace_id: Cow<'a, str>,
    #[serde(default, borrow)]
    span_id: Cow<'a, str>,
    #[serde(default, borrow)]
    parent_span_id: Cow<'a, str>,
    #[serde(default, borrow)]
    trace_state: Cow<'a, str>,
    #[serde(default)]
    kind: JsonEnum,
    #[serde(default)]
    start_time_unix_nano: JsonU64,
    #[serde(default)]
    end_time_unix_nano: JsonU64,
    #[serde(default, borrow)]
    attributes: Vec<JsonKeyValue<'a>>,
    #[serde(default)]
    status: Option<JsonStatus>,
}

#[derive(Deserialize)]
struct JsonStatus {
    #[serde(default)]
    code: JsonEnum,
}

#[derive(Deserialize)]
struct JsonKeyValue<'a> {
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(default, borrow)]
    value: Option<JsonAnyValue<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonAnyValue<'a> {
    #[serde(default, borrow)]
    string_value: Option<Cow<'a, str>>,
    #[serde(default)]
    double_value: JsonF64,
}

/// A double as a JSON number or string (proto3 JSON writes `"NaN"` and the like as
/// strings); anything else reads as none rather than refusing the request.
#[derive(Default)]
struct JsonF64(Option<f64>);

impl<'de> Deserialize<'de> for JsonF64 {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = JsonF64;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number")
            }
            fn visit_f64<E>(self, v: f64) -> Result<JsonF64, E> {
                Ok(JsonF64(Some(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<JsonF64, E> {
                Ok(JsonF64(Some(v as f64)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<JsonF64, E> {
                Ok(JsonF64(Some(v as f64)))
            }
            fn visit_str<E>(self, v: &str) -> Result<JsonF64, E> {
                Ok(JsonF64(v.parse().ok()))
            }
            fn visit_unit<E>(self) -> Result<JsonF64, E> {
                Ok(JsonF64(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<JsonF64, E> {
                Ok(JsonF64(None))
            }
            // Anything bigger is drained unread, costing nothing.
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<JsonF64, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(JsonF64(None))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<JsonF64, A::Error> {
                while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
                Ok(JsonF64(None))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// An enum value: an integer as the spec says, or its name (`SPAN_KIND_SERVER`,
/// `STATUS_CODE_ERROR`), as some clients send.
#[derive(Default)]
struct JsonEnum(i64);

impl<'de> Deserialize<'de> for JsonEnum {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw<'a> {
            Number(i64),
            Name(Cow<'a, str>),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(JsonEnum(n)),
            Raw::Name(name) => {
                const NAMES: [(&str, i64); 9] = [
                    ("SPAN_KIND_UNSPECIFIED", 0),
                    ("SPAN_KIND_INTERNAL", 1),
                    ("SPAN_KIND_SERVER", 2),
                    ("SPAN_KIND_CLIENT", 3),
                    ("SPAN_KIND_PRODUCER", 4),
                    ("SPAN_KIND_CONSUMER", 5),
                    ("STATUS_CODE_UNSET", 0),
                    ("STATUS_CODE_OK", 1),
                    ("STATUS_CODE_ERROR", 2),
                ];
                NAMES
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| JsonEnum(*v))
                    .ok_or_else(|| serde::de::Error::custom(format_args!("unknown enum name `{name}`")))
            }
        }
    }
}

/// A 64-bit integer as a JSON string (proto3 JSON) or number.
#[derive(Default)]
struct JsonU64(u64);

impl<'de> Deserialize<'de> for JsonU64 {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw<'a> {
            Number(u64),
            Text(Cow<'a, str>),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(JsonU64(n)),
            Raw::Text(text) => text.parse().map(JsonU64).map_err(|_| {
                serde::de::Error::custom(format_args!("`{text}` is not a 64-bit unsigned integer"))
            }),
        }
    }
}

fn json_attribute<'a>(attributes: &'a [JsonKeyValue<'a>], key: &str) -> Option<Cow<'a, str>> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.string_value.as_deref())
        .map(Cow::Borrowed)
}

fn json_double(attributes: &[JsonKeyValue<'_>], key: &str) -> Option<f64> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()?.double_value.0)
}

fn hex_id<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    spans::hex(text, &mut out).then_some(out)
}

/// `ResourceSpans` as read: the resource, and its scopes left unread until the resource
/// (which may come after them) names the service.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonResourceSpansRaw<'a> {
    #[serde(default, borrow)]
    resource: Option<JsonResource<'a>>,
    #[serde(default, borrow)]
    scope_spans: Option<&'a serde_json::value::RawValue>,
}

/// Reads the object with key `key` holding an array, handing the array to `seed`;
/// other keys are skipped.
struct FieldSeed<S> {
    key: &'static str,
    seed: Option<S>,
}

impl<'de, S: serde::de::DeserializeSeed<'de, Value = ()>> serde::de::DeserializeSeed<'de> for FieldSeed<S> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, S: serde::de::DeserializeSeed<'de, Value = ()>> serde::de::Visitor<'de> for FieldSeed<S> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "an object with `{}`", self.key)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key != self.key {
                map.next_value::<serde::de::IgnoredAny>()?;
                continue;
            }
            match self.seed.take() {
                Some(seed) => map.next_value_seed(seed)?,
                None => return Err(serde::de::Error::custom(format_args!("duplicate field `{}`", self.key))),
            }
        }
        Ok(())
    }
}

/// Decodes a JSON body, one span at a time. `Err` (with where) when it is not OTLP/JSON.
pub fn decode_json(body: &[u8], limits: &SpanLimits) -> Result<DecodedSpans, String> {
    use serde::de::DeserializeSeed;
    let out = std::cell::RefCell::new(DecodedSpans::default());
    let index = std::cell::Cell::new(0usize);
    let resource_spans = spans::Elements {
        decoded: usize::MAX,
        each: |r, resource_spans: JsonResourceSpansRaw<'_>| {
            let resource = resource_spans.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
            let service = spans::service(json_attribute(resource, "service.name").as_deref(), limits);
            let Some(scopes) = resource_spans.scope_spans else { return Ok(()) };
            let spans = |_, span: JsonSpan<'_>| {
                let at = index.get();
                index.set(at + 1);
                out.borrow_mut().push(
                    at,
                    service.clone().and_then(|service| json_span(&span, resource, service, limits)),
                );
                Ok(())
            };
            let skipped = |_| {
                let at = index.get();
                index.set(at + 1);
                out.borrow_mut().too_many(at, limits);
            };
            let scope = |_, raw: &serde_json::value::RawValue| {
                let decoded = limits.spans_per_request_max.saturating_sub(index.get());
                let seed = FieldSeed {
                    key: "spans",
                    seed: Some(spans::Elements {
                        decoded,
                        each: spans,
                        skipped,
                        element: std::marker::PhantomData,
                    }),
                };
                seed.deserialize(&mut serde_json::Deserializer::from_str(raw.get()))
                    .map_err(|e| e.to_string())
            };
            let scopes_seed = spans::Elements {
                decoded: usize::MAX,
                each: scope,
                skipped: |_| {},
                element: std::marker::PhantomData,
            };
            scopes_seed
                .deserialize(&mut serde_json::Deserializer::from_str(scopes.get()))
                .map_err(|e| format!("resourceSpans[{r}].scopeSpans: {e}"))
        },
        skipped: |_| {},
        element: std::marker::PhantomData,
    };
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let mut track = serde_path_to_error::Track::new();
    FieldSeed { key: "resourceSpans", seed: Some(resource_spans) }
        .deserialize(serde_path_to_error::Deserializer::new(&mut deserializer, &mut track))
        .map_err(|e| format!("not an OTLP/JSON ExportTraceServiceRequest at {}: {e}", track.path()))?;
    Ok(out.into_inner())
}

fn json_span(
    span: &JsonSpan<'_>,
    resource: &[JsonKeyValue<'_>],
    service: observatory_core::NodeName,
    limits: &SpanLimits,
) -> Result<Option<Span>, SpanRejection> {
    let kind = spans::otlp_kind(span.kind.0)?;
    let trace = hex_id::<16>(&span.trace_id)
        .ok_or_else(|| SpanRejection::new("invalid_trace_id", "traceId is not 32 hex digits"))?;
    let trace_id = spans::trace_id(&trace, "traceId")?;
    let id = hex_id::<8>(&span.span_id)
        .ok_or_else(|| SpanRejection::new("invalid_span_id", "spanId is not 16 hex digits"))?;
    let span_id = spans::span_id(&id, "spanId", "invalid_span_id")?;
    let parent_span_id = if span.parent_span_id.is_empty() {
        None
    } else {
        let parent = hex_id::<8>(&span.parent_span_id).ok_or_else(|| {
            SpanRejection::new("invalid_parent_span_id", "parentSpanId is not 16 hex digits")
        })?;
        spans::parent_span_id(&parent, "parentSpanId")?
    };
    let (start_ns, end_ns) = spans::times(span.start_time_unix_nano.0, span.end_time_unix_nano.0)?;
    if kind == SpanKind::Internal {
        return Ok(None);
    }
    let remote = spans::remote(kind, |key| json_attribute(&span.attributes, key), limits);
    let sampling_threshold = spans::sampling_threshold(
        &span.trace_state,
        |key| json_attribute(&span.attributes, key).or_else(|| json_attribute(resource, key)),
        |key| json_double(&span.attributes, key).or_else(|| json_double(resource, key)),
        limits,
    );
    Ok(Some(Span {
        trace_id,
        span_id,
        parent_span_id,
        kind,
        service,
        start_ns,
        end_ns,
        error: span.status.as_ref().is_some_and(|s| s.code.0 == 2),
        remote,
        sampling_threshold,
    }))
}

/// The success answer: empty, or `partial_success` naming how many spans were refused.
pub fn response(rejected: usize, message: &str, json: bool) -> Vec<u8> {
    let partial = (rejected > 0).then(|| ExportTracePartialSuccess {
        rejected_spans: rejected as i64,
        error_message: message.to_string(),
    });
    if json {
        let body = match partial {
            Some(p) => {
                serde_json::json!({"partialSuccess": {"rejectedSpans": p.rejected_spans.to_string(), "errorMessage": p.error_message}})
            }
            None => serde_json::json!({}),
        };
        body.to_string().into_bytes()
    } else {
        ExportTraceServiceResponse { partial_success: partial }.encode_to_vec()
    }
}

/// An error answer's body: a `google.rpc.Status` in the request's encoding.
pub fn error_status(grpc_code: i32, message: &str, json: bool) -> Vec<u8> {
    if json {
        serde_json::json!({"code": grpc_code, "message": message}).to_string().into_bytes()
    } else {
        RpcStatus { code: grpc_code, message: message.to_string() }.encode_to_vec()
    }
}
