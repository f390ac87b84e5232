//! Spans and sightings in: OTLP/HTTP `POST /v1/traces`, Zipkin `POST /api/v2/spans` and
//! `POST /api/v1/sightings`, and the glue between the [`Correlator`], the mesh (handoffs
//! to owners) and the writer.
//!
//! What the correlator pairs at once is applied before the answer (so with
//! `ingest.ack: durable` it is on disk then); halves that wait for their other half live
//! in memory only, at most `correlation.pending_ttl`, and are lost if the peer dies.

use std::borrow::Cow;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use observatory_core::{EdgeKind, Event, NodeName};
use observatory_correlate::{Handoff, Output, Sighting};
use observatory_mesh::wire::{HANDOFF_ITEMS_MAX, TOKEN_BYTES_MAX};
use observatory_store::{IngestError, unix_now_ms};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};

use crate::events::Timestamp;
use crate::spans::{DecodedSpans, SpanLimits};
use crate::wire::{IngestAnswer, IngestErrorItem};
use crate::{ApiContext, ApiError, Counters, otlp, read_body, zipkin};

/// How often the correlation task looks for expired halves and idle tokens at least.
const TICK: Duration = Duration::from_millis(250);

impl ApiContext {
    /// This peer and the live peers of the mesh: the candidates to own a trace.
    fn live_peers(&self) -> Vec<String> {
        match &self.mesh {
            Some((mesh, _)) => mesh.live_peers(),
            None => vec![self.info.peer_id.clone()],
        }
    }

    /// Sends handoffs to their owners; what the mesh cannot take is correlated here.
    fn dispatch(&self, now_ms: i64, output: Output) -> Vec<Event> {
        let mut events = output.events;
        for (peer, handoff) in output.handoffs {
            for handoff in split(handoff) {
                let refused = match &self.mesh {
                    Some((mesh, _)) => mesh.hand_off(&peer, handoff).err().map(|r| r.handoff),
                    None => Some(handoff),
                };
                if let Some(handoff) = refused {
                    tracing::debug!(%peer, "handoff not queued; correlating here");
                    events.extend(self.correlator().handle_handoff(now_ms, handoff));
                }
            }
        }
        events
    }

    fn correlator(&self) -> std::sync::MutexGuard<'_, observatory_correlate::Correlator> {
        self.correlator.lock().expect("no correlator call panics")
    }

    /// Applies derived events; refusals are counted by reason like native events'.
    async fn apply_derived(&self, events: Vec<Event>) -> Result<(), IngestError> {
        if events.is_empty() {
            return Ok(());
        }
        let reply = self.ingest.submit(events).await?;
        self.counters.events_accepted.fetch_add(reply.accepted as u64, Ordering::Relaxed);
        let mut by_reason = self.counters.events_rejected.lock().expect("counters lock");
        for (_, rejection) in &reply.rejected {
            *by_reason.entry(rejection.reason_code().to_string()).or_default() += 1;
        }
        Ok(())
    }
}

/// Splits a handoff so that each fits in one mesh message.
fn split(handoff: Handoff) -> Vec<Handoff> {
    let chunk = HANDOFF_ITEMS_MAX / 2;
    if handoff.spans.len() + handoff.sightings.len() <= HANDOFF_ITEMS_MAX {
        return vec![handoff];
    }
    let mut out: Vec<Handoff> =
        handoff.spans.chunks(chunk).map(|s| Handoff { spans: s.to_vec(), sightings: Vec::new() }).collect();
    out.extend(handoff.sightings.chunks(chunk).map(|s| Handoff { spans: Vec::new(), sightings: s.to_vec() }));
    out
}

/// Runs the correlator's clock and takes handoffs from other peers, until `shutdown`.
/// On the way out, every waiting half and token is given up (virtual-node edges where
/// their attributes allow), since another peer will own their traces from now on.
pub async fn run_correlation(
    ctx: Arc<ApiContext>,
    mut handoffs_in: Option<mpsc::Receiver<(String, Handoff)>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let events = tokio::select! {
            _ = tick.tick() => ctx.correlator().handle_tick(unix_now_ms()),
            Some((peer, handoff)) = async { handoffs_in.as_mut()?.recv().await } => {
                tracing::trace!(%peer, spans = handoff.spans.len(), sightings = handoff.sightings.len(), "handoff received");
                ctx.correlator().handle_handoff(unix_now_ms(), handoff)
            }
            _ = shutdown.changed() => break,
        };
        if let Err(error) = ctx.apply_derived(events).await {
            tracing::warn!(%error, "edges from spans could not be applied and are lost");
        }
    }
    let events = ctx.correlator().handle_tick(i64::MAX);
    if let Err(error) = ctx.apply_derived(events).await {
        tracing::warn!(%error, "edges from the last waiting spans could not be applied and are lost");
    }
}

/// Reads a body, decompressing `Content-Encoding: gzip`; `body_bytes_max` bounds both the
/// body as sent and as decompressed.
async fn read_encoded_body(ctx: &ApiContext, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let limit = ctx.limits.body_bytes_max;
    let raw = read_body(limit, ctx.limits.request_timeout, headers, body).await?;
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("identity");
    match encoding.trim().to_ascii_lowercase().as_str() {
        "identity" | "" => Ok(raw),
        "gzip" | "x-gzip" => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&raw[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| ApiError::BadRequest(format!("the gzip body does not decompress: {e}")))?;
            if out.len() > limit {
                return Err(ApiError::PayloadTooLarge(format!(
                    "the body decompresses to more than limits.body_bytes_max ({limit} bytes)"
                )));
            }
            Ok(out.into())
        }
        other => Err(ApiError::UnsupportedMediaType(format!(
            "Content-Encoding `{other}` is not supported; use gzip or none"
        ))),
    }
}

fn essence(headers: &HeaderMap) -> String {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

fn span_limits(ctx: &ApiContext) -> SpanLimits {
    SpanLimits {
        node_name_bytes_max: ctx.limits.parse.node_name_bytes_max,
        spans_per_request_max: ctx.limits.spans_per_request_max,
    }
}

/// Takes a place among the requests in flight, or answers 429 at once: span exporters
/// retry with backoff, which is better than a queue of waiting bodies.
fn ingest_place(ctx: &ApiContext) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
    ctx.ingest_slots.try_acquire().map_err(|error| match error {
        tokio::sync::TryAcquireError::Closed => ApiError::Unavailable("the peer is shutting down".into()),
        tokio::sync::TryAcquireError::NoPermits => ApiError::TooManyRequests(format!(
            "limits.ingest_requests_in_flight_max ({}) requests are being taken; retry shortly",
            ctx.limits.ingest_requests_in_flight_max
        )),
    })
}

/// Counts the refused spans by reason and correlates the good ones. Returns the
/// number refused and a message naming the first few.
async fn take_spans(ctx: &ApiContext, decoded: DecodedSpans) -> Result<(usize, String), ApiError> {
    let DecodedSpans { spans, rejected } = decoded;
    Counters::add(&ctx.counters.spans_received, (spans.len() + rejected.len()) as u64);
    {
        let mut by_reason = ctx.counters.spans_rejected.lock().expect("counters lock");
        for (_, rejection) in &rejected {
            *by_reason.entry(rejection.code.to_string()).or_default() += 1;
        }
    }
    let message = rejected
        .iter()
        .take(5)
        .map(|(index, r)| format!("span {index}: {}", r.reason))
        .collect::<Vec<_>>()
        .join("; ");
    if !spans.is_empty() {
        let now_ms = unix_now_ms();
        let peers = ctx.live_peers();
        let output = ctx.correlator().handle_spans(now_ms, spans, &ctx.info.peer_id, &peers);
        let events = ctx.dispatch(now_ms, output);
        ctx.apply_derived(events).await?;
    }
    Ok((rejected.len(), message))
}

/// `POST /v1/traces`: OTLP/HTTP, protobuf or JSON, optionally gzipped.
pub(crate) async fn post_otlp_traces(
    State(ctx): State<Arc<ApiContext>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let json = essence(&headers) == "application/json";
    let result = async {
        let format = essence(&headers);
        if !matches!(format.as_str(), "application/x-protobuf" | "application/protobuf" | "application/json")
        {
            return Err(ApiError::UnsupportedMediaType(format!(
                "Content-Type `{format}` is not OTLP; use application/x-protobuf or application/json"
            )));
        }
        let _place = ingest_place(&ctx)?;
        let body = read_encoded_body(&ctx, &headers, body).await?;
        let limits = span_limits(&ctx);
        let decoded =
            if json { otlp::decode_json(&body, &limits) } else { otlp::decode_protobuf(body, &limits) }
                .map_err(ApiError::BadRequest)?;
        take_spans(&ctx, decoded).await
    }
    .await;
    let content_type = if json { "application/json" } else { "application/x-protobuf" };
    let (status, body) = match result {
        Ok((rejected, message)) => (StatusCode::OK, otlp::response(rejected, &message, json)),
        Err(error) => {
            ctx.counters.request_rejected(error.code());
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
pub(crate) async fn post_zipkin_spans(
    State(ctx): State<Arc<ApiContext>>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let result = async {
        let format = essence(&headers);
        if !matches!(format.as_str(), "application/json" | "" | "text/plain") {
            return Err(ApiError::UnsupportedMediaType(format!(
                "Content-Type `{format}` is not supported; Zipkin spans are taken as application/json"
            )));
        }
        let _place = ingest_place(&ctx)?;
        let body = read_encoded_body(&ctx, &headers, body).await?;
        let decoded = zipkin::decode_json(&body, &span_limits(&ctx)).map_err(ApiError::BadRequest)?;
        let (rejected, message) = take_spans(&ctx, decoded).await?;
        if rejected > 0 {
            tracing::debug!(rejected, %message, "Zipkin spans refused");
        }
        Ok(StatusCode::ACCEPTED)
    }
    .await;
    if let Err(error) = &result {
        ctx.counters.request_rejected(error.code());
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
    ctx: &ApiContext,
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
    let node = NodeName::new(&wire.node, ctx.limits.parse.node_name_bytes_max)
        .map_err(|e| error("node", e.to_string()))?;
    let kind = match wire.kind.as_deref() {
        None => EdgeKind::Request,
        Some(name) => EdgeKind::from_name(name)
            .ok_or_else(|| error("kind", format!("must be request, messaging or database, got `{name}`")))?,
    };
    Ok(Sighting { token: wire.token.into_owned(), node, ts_ms: wire.ts.0, error: wire.error, kind })
}

/// `POST /api/v1/sightings`: a JSON array (or NDJSON) of `{token, node, ts, error?, kind?}`.
pub(crate) async fn post_sightings(
    State(ctx): State<Arc<ApiContext>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestAnswer>, ApiError> {
    let result = async {
        let _place = ingest_place(&ctx)?;
        let body = read_encoded_body(&ctx, &headers, body).await?;
        let text = std::str::from_utf8(&body)
            .map_err(|e| ApiError::BadRequest(format!("the body is not UTF-8: {e}")))?;
        let items: Vec<&serde_json::value::RawValue> = if text.trim_start().starts_with('[') {
            serde_json::from_str(text).map_err(|e| ApiError::MalformedBody {
                location: format!("line {} column {}", e.line(), e.column()),
                message: e.to_string(),
            })?
        } else {
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .enumerate()
                .map(|(i, line)| {
                    serde_json::from_str(line).map_err(|e| ApiError::MalformedBody {
                        location: format!("line {}", i + 1),
                        message: e.to_string(),
                    })
                })
                .collect::<Result<_, _>>()?
        };
        if items.len() > ctx.limits.parse.events_per_request_max {
            return Err(ApiError::PayloadTooLarge(format!(
                "{} sightings in one request, more than limits.events_per_request_max ({})",
                items.len(),
                ctx.limits.parse.events_per_request_max
            )));
        }
        let mut sightings = Vec::with_capacity(items.len());
        let mut errors = Vec::new();
        for (index, item) in items.into_iter().enumerate() {
            match sighting(index, item, &ctx) {
                Ok(s) => sightings.push(s),
                Err(e) => errors.push(e),
            }
        }
        Counters::add(&ctx.counters.sightings_received, (sightings.len() + errors.len()) as u64);
        {
            let mut by_reason = ctx.counters.sightings_rejected.lock().expect("counters lock");
            for e in &errors {
                *by_reason.entry(format!("invalid_{}", e.field)).or_default() += 1;
            }
        }
        let accepted = sightings.len();
        if !sightings.is_empty() {
            let now_ms = unix_now_ms();
            let peers = ctx.live_peers();
            let output = ctx.correlator().handle_sightings(now_ms, sightings, &ctx.info.peer_id, &peers);
            let events = ctx.dispatch(now_ms, output);
            ctx.apply_derived(events).await?;
        }
        let rejected = errors.len();
        let truncated = rejected > ctx.limits.errors_listed_max;
        errors.truncate(ctx.limits.errors_listed_max);
        Ok(Json(IngestAnswer { accepted, rejected, errors, errors_truncated: truncated }))
    }
    .await;
    if let Err(error) = &result {
        ctx.counters.request_rejected(error.code());
    }
    result
}
