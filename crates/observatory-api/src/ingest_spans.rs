//! Spans and sightings in: OTLP/HTTP `POST /v1/traces`, Zipkin `POST /api/v2/spans` and
//! `POST /api/v1/sightings`.
//!
//! Bodies may be gzip-compressed: tower-http's request decompression reads them as a
//! stream, and the same `limits.body_bytes_max` bounds the body as sent (its declared
//! length) and as decompressed (reading stops one byte past it), so a gzip bomb costs
//! no more memory than a plain body. Decoded spans go to the peer, which pairs them; what
//! it pairs at once is applied before the answer (so with `ingest.ack: durable` it is on
//! disk then), while halves that wait for their other half live in memory only.

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use axum::{Json, middleware};
use observatory_core::{EdgeKind, NodeName};
use observatory_correlate::Sighting;
use observatory_sync::wire::TOKEN_BYTES_MAX;
use serde::Deserialize;
use tower_http::decompression::RequestDecompressionLayer;

use crate::events::Timestamp;
use crate::ingest::{Declared, media_type, read_body};
use crate::spans::{DecodedSpans, SpanLimits};
use crate::wire::{IngestAnswer, IngestErrorItem};
use crate::{Api, ApiError, Counters, PeerApi, otlp, zipkin};

/// A route that reads gzip bodies decompressed, noting first how the body came and
/// bounding the body as sent to `body_bytes_max` too.
fn decompressing<P: PeerApi>(
    route: MethodRouter<Arc<Api<P>>>,
    body_bytes_max: usize,
) -> MethodRouter<Arc<Api<P>>> {
    route
        .layer(RequestDecompressionLayer::new().pass_through_unaccepted(true))
        .layer(middleware::map_request(move |request: Request| note_encoding(request, body_bytes_max)))
}

/// Notes the declared length and encoding before the decompression layer drops them,
/// names gzip the one way that layer knows (`x-gzip`, any case, spaces around), and
/// limits the body as sent (a chunked one has no declared length to check).
async fn note_encoding(request: Request, body_bytes_max: usize) -> Request {
    let mut request = request.map(|body| Body::new(http_body_util::Limited::new(body, body_bytes_max)));
    let mut declared = Declared::of(request.headers());
    let encoding = request
        .headers()
        .get(header::CONTENT_ENCODING)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_ascii_lowercase());
    match encoding.as_deref() {
        Some("gzip" | "x-gzip") => {
            declared.gzip = true;
            request.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        Some("identity" | "") => {
            request.headers_mut().remove(header::CONTENT_ENCODING);
        }
        _ => {}
    }
    request.extensions_mut().insert(declared);
    request
}

/// The encoding left on a request after decompression: one we do not take.
fn check_encoding(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get(header::CONTENT_ENCODING) {
        None => Ok(()),
        Some(other) => Err(ApiError::UnsupportedMediaType(format!(
            "Content-Encoding `{}` is not supported; use gzip or none",
            String::from_utf8_lossy(other.as_bytes()).trim().to_ascii_lowercase()
        ))),
    }
}

pub(crate) fn otlp_route<P: PeerApi>(body_bytes_max: usize) -> MethodRouter<Arc<Api<P>>> {
    decompressing(post(post_otlp_traces::<P>), body_bytes_max)
}

pub(crate) fn zipkin_route<P: PeerApi>(body_bytes_max: usize) -> MethodRouter<Arc<Api<P>>> {
    decompressing(post(post_zipkin_spans::<P>), body_bytes_max)
}

pub(crate) fn sightings_route<P: PeerApi>(body_bytes_max: usize) -> MethodRouter<Arc<Api<P>>> {
    decompressing(post(post_sightings::<P>), body_bytes_max)
}

pub(crate) fn span_limits<P>(api: &Api<P>) -> SpanLimits {
    SpanLimits {
        node_name_bytes_max: api.limits.parse.node_name_bytes_max,
        spans_per_request_max: api.limits.spans_per_request_max,
        peer_attributes: api.limits.peer_attributes.clone(),
        sample_ratio_attribute: api.limits.sample_ratio_attribute.clone(),
    }
}

/// Takes a place among the requests in flight, or answers 429 at once: span exporters
/// retry with backoff, which is better than a queue of waiting bodies.
pub(crate) fn ingest_place<P>(api: &Api<P>) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
    try_permit(api, &api.ingest_slots)
}

/// Takes one of the places for bodies being read (4 per ingest place), or answers 429.
pub(crate) fn body_read_place<P>(api: &Api<P>) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
    try_permit(api, &api.body_reads)
}

fn try_permit<'a, P>(
    api: &Api<P>,
    places: &'a tokio::sync::Semaphore,
) -> Result<tokio::sync::SemaphorePermit<'a>, ApiError> {
    places.try_acquire().map_err(|error| match error {
        tokio::sync::TryAcquireError::Closed => ApiError::Unavailable("the peer is shutting down".into()),
        tokio::sync::TryAcquireError::NoPermits => ApiError::TooManyRequests(format!(
            "limits.ingest_requests_in_flight_max ({}) requests are being taken; retry shortly",
            api.limits.ingest_requests_in_flight_max
        )),
    })
}

/// Reads a span or sighting body: its encoding checked, then read decompressed.
async fn read_spans_body<P>(
    api: &Api<P>,
    declared: Declared,
    headers: &HeaderMap,
    body: Body,
) -> Result<axum::body::Bytes, ApiError> {
    check_encoding(headers)?;
    let limits = &api.limits;
    read_body(limits.body_bytes_max, limits.request_timeout, limits.body_min_rate, declared, body).await
}

/// Counts the refused spans by reason and hands the good ones to the peer. Returns the
/// number refused and a message naming the first few.
pub(crate) async fn take_spans<P: PeerApi>(
    api: &Api<P>,
    decoded: DecodedSpans,
) -> Result<(usize, String), ApiError> {
    let refused = decoded.rejected_count();
    let DecodedSpans { spans, rejected, rejected_by_code } = decoded;
    Counters::add(&api.counters.spans_received, (spans.len() + refused) as u64);
    for (code, n) in rejected_by_code {
        api.counters.spans_rejected.add(code, n);
    }
    let message = rejected
        .iter()
        .map(|(index, r)| format!("span {index}: {}", r.reason))
        .collect::<Vec<_>>()
        .join("; ");
    if !spans.is_empty() {
        api.peer.submit_spans(spans).await?;
    }
    Ok((refused, message))
}

/// `POST /v1/traces`: OTLP/HTTP, protobuf or JSON, optionally gzipped.
async fn post_otlp_traces<P: PeerApi>(
    State(api): State<Arc<Api<P>>>,
    Extension(declared): Extension<Declared>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let format = media_type(&headers);
    let json = format.as_deref().is_ok_and(|f| f == "application/json");
    let result = async {
        let format = format?;
        if !matches!(format.as_str(), "application/x-protobuf" | "application/protobuf" | "application/json")
        {
            return Err(ApiError::UnsupportedMediaType(format!(
                "Content-Type `{format}` is not OTLP; use application/x-protobuf or application/json"
            )));
        }
        // Read before it takes an ingest place: a client trickling its body holds none.
        let _reading = body_read_place(&api)?;
        let body = read_spans_body(&api, declared, &headers, body).await?;
        let _place = ingest_place(&api)?;
        let limits = span_limits(&api);
        let decoded =
            if json { otlp::decode_json(&body, &limits) } else { otlp::decode_protobuf(body, &limits) }
                .map_err(ApiError::BadRequest)?;
        take_spans(&api, decoded).await
    }
    .await;
    let content_type = if json { "application/json" } else { "application/x-protobuf" };
    let (status, body) = match result {
        Ok((rejected, message)) => (StatusCode::OK, otlp::response(rejected, &message, json)),
        Err(error) => {
            api.counters.requests_rejected.add(error.code(), 1);
            // gRPC codes: INVALID_ARGUMENT for what retrying cannot fix, UNAVAILABLE else.
            let grpc = if error.status().is_client_error() && error.status() != StatusCode::TOO_MANY_REQUESTS
            {
                3
            } else {
                14
            };
            let body = otlp::error_status(grpc, &error.to_string(), json);
            let mut response = error.into_response();
            *response.body_mut() = Body::from(body);
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            return response;
        }
    };
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// `POST /api/v2/spans`: Zipkin v2 JSON, optionally gzipped; answers 202.
async fn post_zipkin_spans<P: PeerApi>(
    State(api): State<Arc<Api<P>>>,
    Extension(declared): Extension<Declared>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let result = async {
        let format = media_type(&headers)?;
        if !matches!(format.as_str(), "application/json" | "" | "text/plain") {
            return Err(ApiError::UnsupportedMediaType(format!(
                "Content-Type `{format}` is not supported; Zipkin spans are taken as application/json"
            )));
        }
        // Read before it takes an ingest place: a client trickling its body holds none.
        let _reading = body_read_place(&api)?;
        let body = read_spans_body(&api, declared, &headers, body).await?;
        let _place = ingest_place(&api)?;
        let decoded = zipkin::decode_json(&body, &span_limits(&api)).map_err(ApiError::BadRequest)?;
        let (rejected, message) = take_spans(&api, decoded).await?;
        if rejected > 0 {
            tracing::debug!(rejected, %message, "Zipkin spans refused");
        }
        Ok(StatusCode::ACCEPTED)
    }
    .await;
    if let Err(error) = &result {
        api.counters.requests_rejected.add(error.code(), 1);
    }
    result
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireSighting<'a> {
    #[serde(borrow)]
    token: Cow<'a, str>,
    #[serde(borrow)]
    node: Cow<'a, str>,
    ts: Timestamp,
    #[serde(default)]
    error: bool,
    #[serde(default, borrow)]
    kind: Option<Cow<'a, str>>,
}

fn sighting(
    index: usize,
    value: &serde_json::value::RawValue,
    node_name_bytes_max: usize,
) -> Result<Sighting, IngestErrorItem> {
    let error = |field: &str, reason: String| IngestErrorItem { index, field: field.to_string(), reason };
    let wire: WireSighting<'_> = serde_json::from_str(value.get()).map_err(|e| {
        let text = e.to_string();
        let field = ["token", "node", "ts", "error", "kind"]
            .into_iter()
            .find(|f| text.contains(&format!("`{f}`")))
            .unwrap_or("sighting");
        error(field, text)
    })?;
    if wire.token.is_empty() || wire.token.len() > TOKEN_BYTES_MAX {
        return Err(error(
            "token",
            format!("must be 1 to {TOKEN_BYTES_MAX} bytes, got {}", wire.token.len()),
        ));
    }
    let node = NodeName::new(&wire.node, node_name_bytes_max).map_err(|e| error("node", e.to_string()))?;
    let kind = match wire.kind.as_deref() {
        None => EdgeKind::Request,
        Some(name) => EdgeKind::from_name(name)
            .ok_or_else(|| error("kind", format!("must be request, messaging or database, got `{name}`")))?,
    };
    Ok(Sighting { token: wire.token.into_owned(), node, ts_ms: wire.ts.0, error: wire.error, kind })
}

/// The items of a JSON array or NDJSON body, each still raw.
fn json_items(text: &str) -> Result<Vec<&serde_json::value::RawValue>, ApiError> {
    if text.trim_start().starts_with('[') {
        return serde_json::from_str(text).map_err(|e| ApiError::MalformedBody {
            location: format!("line {} column {}", e.line(), e.column()),
            message: e.to_string(),
        });
    }
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| ApiError::MalformedBody {
                location: format!("line {}", i + 1),
                message: e.to_string(),
            })
        })
        .collect()
}

/// `POST /api/v1/sightings`: a JSON array (or NDJSON) of `{token, node, ts, error?, kind?}`.
async fn post_sightings<P: PeerApi>(
    State(api): State<Arc<Api<P>>>,
    Extension(declared): Extension<Declared>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestAnswer>, ApiError> {
    let result = async {
        // Read before it takes an ingest place: a client trickling its body holds none.
        let _reading = body_read_place(&api)?;
        let body = read_spans_body(&api, declared, &headers, body).await?;
        let _place = ingest_place(&api)?;
        let text = std::str::from_utf8(&body)
            .map_err(|e| ApiError::BadRequest(format!("the body is not UTF-8: {e}")))?;
        let items = json_items(text)?;
        let limits = &api.limits;
        if items.len() > limits.parse.events_per_request_max {
            return Err(ApiError::PayloadTooLarge(format!(
                "{} sightings in one request, more than limits.events_per_request_max ({})",
                items.len(),
                limits.parse.events_per_request_max
            )));
        }
        let mut sightings = Vec::with_capacity(items.len());
        let mut errors = Vec::new();
        for (index, item) in items.into_iter().enumerate() {
            match sighting(index, item, limits.parse.node_name_bytes_max) {
                Ok(s) => sightings.push(s),
                Err(e) => errors.push(e),
            }
        }
        Counters::add(&api.counters.sightings_received, (sightings.len() + errors.len()) as u64);
        for e in &errors {
            api.counters.sightings_rejected.add(&format!("invalid_{}", e.field), 1);
        }
        let accepted = sightings.len();
        if !sightings.is_empty() {
            api.peer.submit_sightings(sightings).await?;
        }
        let rejected = errors.len();
        let truncated = rejected > limits.errors_listed_max;
        errors.truncate(limits.errors_listed_max);
        Ok(Json(IngestAnswer { accepted, rejected, errors, errors_truncated: truncated }))
    }
    .await;
    if let Err(error) = &result {
        api.counters.requests_rejected.add(error.code(), 1);
    }
    result
}
