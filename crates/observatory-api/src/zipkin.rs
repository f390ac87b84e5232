//! Zipkin v2 spans (`POST /api/v2/spans`, a JSON array) to [`Span`]s.
//!
//! Zipkin names the kind in upper case and times in microseconds; errors are the `error`
//! tag; `remoteEndpoint.serviceName` names the other side when no tag does. A SERVER span
//! marked `shared` carries its client's id (B3 single-id style) and pairs by that id.

use std::borrow::Cow;
use std::collections::BTreeMap;

use observatory_core::{EdgeKind, NodeName};
use observatory_correlate::{Remote, Span, SpanKind};
use serde::Deserialize;

use crate::spans::{self, DecodedSpans, SpanLimits, SpanRejection};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ZipkinSpan<'a> {
    #[serde(default, borrow)]
    trace_id: Cow<'a, str>,
    #[serde(default, borrow)]
    id: Cow<'a, str>,
    #[serde(default, borrow)]
    parent_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    timestamp: Option<u64>,
    #[serde(default)]
    duration: Option<u64>,
    #[serde(default, borrow)]
    local_endpoint: Option<Endpoint<'a>>,
    #[serde(default, borrow)]
    remote_endpoint: Option<Endpoint<'a>>,
    #[serde(default, borrow)]
    tags: BTreeMap<Cow<'a, str>, Cow<'a, str>>,
    #[serde(default)]
    shared: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Endpoint<'a> {
    #[serde(default, borrow)]
    service_name: Option<Cow<'a, str>>,
}

/// Decodes a Zipkin v2 JSON body. `Err` (with where) when it is not a list of spans.
pub fn decode_json(body: &[u8], limits: &SpanLimits) -> Result<DecodedSpans, String> {
    use serde::de::DeserializeSeed;
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let out = std::cell::RefCell::new(DecodedSpans::default());
    // Most spans of a request share a few services: check each name once (a few dozen
    // names at most are remembered).
    let mut services: BTreeMap<String, Result<NodeName, SpanRejection>> = BTreeMap::new();
    let elements = spans::Elements {
        decoded: limits.spans_per_request_max,
        each: |index, span: ZipkinSpan<'_>| {
            let name = span.local_endpoint.as_ref().and_then(|e| e.service_name.as_deref());
            if services.len() >= 64 {
                services.clear();
            }
            let service = services
                .entry(name.unwrap_or("").to_string())
                .or_insert_with(|| spans::service(name, limits))
                .clone();
            out.borrow_mut().push(index, service.and_then(|service| zipkin_span(&span, service, limits)));
            Ok(())
        },
        skipped: |index| out.borrow_mut().too_many(index, limits),
        element: std::marker::PhantomData,
    };
    let mut track = serde_path_to_error::Track::new();
    elements
        .deserialize(serde_path_to_error::Deserializer::new(&mut deserializer, &mut track))
        .map_err(|e| format!("not a Zipkin v2 span list at {}: {e}", track.path()))?;
    Ok(out.into_inner())
}

fn zipkin_span(
    span: &ZipkinSpan<'_>,
    service: NodeName,
    limits: &SpanLimits,
) -> Result<Option<Span>, SpanRejection> {
    let kind = match span.kind.as_deref() {
        None => SpanKind::Internal,
        Some("CLIENT") => SpanKind::Client,
        Some("SERVER") => SpanKind::Server,
        Some("PRODUCER") => SpanKind::Producer,
        Some("CONSUMER") => SpanKind::Consumer,
        Some(other) => {
            return Err(SpanRejection::new(
                "invalid_kind",
                format!("kind `{other}` is not CLIENT, SERVER, PRODUCER or CONSUMER"),
            ));
        }
    };
    let mut trace = [0u8; 16];
    let trace_ok = match span.trace_id.len() {
        32 => spans::hex(&span.trace_id, &mut trace),
        16 => spans::hex(&span.trace_id, &mut trace[8..]),
        _ => false,
    };
    if !trace_ok {
        return Err(SpanRejection::new("invalid_trace_id", "traceId is not 16 or 32 hex digits"));
    }
    let trace_id = spans::trace_id(&trace, "traceId")?;
    let mut id = [0u8; 8];
    if !spans::hex(&span.id, &mut id) {
        return Err(SpanRejection::new("invalid_span_id", "id is not 16 hex digits"));
    }
    let span_id = spans::span_id(&id, "id", "invalid_span_id")?;
    let parent_span_id = match span.parent_id.as_deref() {
        None | Some("") => None,
        Some(text) => {
            let mut parent = [0u8; 8];
            if !spans::hex(text, &mut parent) {
                return Err(SpanRejection::new("invalid_parent_span_id", "parentId is not 16 hex digits"));
            }
            spans::parent_span_id(&parent, "parentId")?
        }
    };
    let start_us =
        span.timestamp.ok_or_else(|| SpanRejection::new("invalid_time", "timestamp is missing"))?;
    let start_ns = start_us.saturating_mul(1_000);
    let end_ns = start_ns.saturating_add(span.duration.unwrap_or(0).saturating_mul(1_000));
    let (start_ns, end_ns) = spans::times(start_ns, end_ns)?;
    if kind == SpanKind::Internal {
        return Ok(None);
    }
    // A shared SERVER span has its client's id: it meets the client under that id.
    let parent_span_id = if kind == SpanKind::Server && span.shared { Some(span_id) } else { parent_span_id };
    let tag = |key: &str| span.tags.get(key).map(|v| Cow::Borrowed(v.as_ref()));
    let remote = spans::remote(kind, tag, limits).or_else(|| {
        let name = span.remote_endpoint.as_ref()?.service_name.as_deref()?;
        let edge_kind = match kind {
            SpanKind::Producer | SpanKind::Consumer => EdgeKind::Messaging,
            _ => EdgeKind::Request,
        };
        let node = NodeName::new(name, limits.node_name_bytes_max).ok()?;
        (kind != SpanKind::Server).then_some(Remote { node, kind: edge_kind })
    });
    Ok(Some(Span {
        trace_id,
        span_id,
        parent_span_id,
        kind,
        service,
        start_ns,
        end_ns,
        error: span.tags.contains_key("error"),
        remote,
        sampling_threshold: spans::sampling_threshold("", tag, |_| None, limits),
    }))
}
