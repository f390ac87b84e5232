//! The HTTP API of a peer (axum). Only this crate knows HTTP.
//!
//! Build an [`ApiContext`] and serve [`router`]. Routes:
//! - `POST /api/v1/events`: native events (JSON array, NDJSON or CBOR).
//! - `POST /v1/traces`: OTLP/HTTP spans (protobuf or JSON, gzip); `POST /api/v2/spans`:
//!   Zipkin v2 spans; `POST /api/v1/sightings`: token sightings. See [`ingest_spans`].
//! - `GET /api/v1/graph?window=5m&at=<time>`: the flow graph of a window.
//! - `GET /api/v1/edges/{from}/{to}?window=1h&step=1m&kind=request`: one edge's time series.
//! - `GET /api/v1/status`, `GET /healthz`.
//! - `GET /metrics`: Prometheus text format, the service graph and the peer's own metrics.
//! - `GET /api/v2/dependencies?endTs=<ms>&lookback=<ms>`: Zipkin's dependency links.
//! - `GET /api/dependencies?endTs=<ms>&lookback=<ms>`: Jaeger's dependency links.
//!
//! Types in [`wire`] are the JSON answers; they are converted from core types here.

mod error;
pub mod events;
mod exposition;
mod ingest_spans;
pub mod otlp;
pub mod spans;
pub mod time_text;
pub mod wire;
pub mod zipkin;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::routing::{get, post};
use axum::{Json, Router};
use observatory_core::{Edge, EdgeKind, NodeName, QueryError};
use observatory_mesh::driver::MeshHandle;
use observatory_store::{IngestError, IngestHandle, SharedState, SizeProbe, unix_now_ms};
use serde::Deserialize;

pub use error::ApiError;
use events::{BodyFormat, ParseLimits, parse_body};
pub use ingest_spans::run_correlation;
pub use observatory_correlate::CorrelationConfig;
use wire::{IngestAnswer, IngestErrorItem};

/// What the API tells about the peer it serves.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// libp2p peer id.
    pub peer_id: String,
    /// Incarnation of this run.
    pub incarnation: u32,
    /// Version of the observatory binary.
    pub version: String,
    /// Where the data dir is.
    pub data_dir: String,
}

/// Limits the API enforces on requests.
#[derive(Debug, Clone)]
pub struct ApiLimits {
    /// Largest request body in bytes.
    pub body_bytes_max: usize,
    /// Most per-event errors listed in an ingest answer.
    pub errors_listed_max: usize,
    /// Parsing limits.
    pub parse: ParseLimits,
    /// Longest time reading one request's body may take (408 beyond).
    pub request_timeout: std::time::Duration,
    /// Most ingest requests read and parsed at once; more wait for a place (span and
    /// sighting requests get 429 instead), so memory stays bounded by this many bodies.
    pub ingest_requests_in_flight_max: usize,
    /// Most spans in one OTLP or Zipkin request; the rest are refused.
    pub spans_per_request_max: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        Self {
            body_bytes_max: 8 * 1024 * 1024,
            ingest_requests_in_flight_max: 32,
            spans_per_request_max: 100_000,
            errors_listed_max: 100,
            parse: ParseLimits {
                events_per_request_max: 10_000,
                node_name_bytes_max: 200,
                event_count_max: 1_000_000,
            },
            request_timeout: std::time::Duration::from_secs(30),
        }
    }
}

/// Counters of what the API took and refused.
#[derive(Debug, Default)]
pub struct Counters {
    /// Ingest requests answered 200.
    pub ingest_requests: AtomicU64,
    /// Events applied.
    pub events_accepted: AtomicU64,
    /// Events refused, by reason.
    pub events_rejected: Mutex<BTreeMap<String, u64>>,
    /// Requests refused whole, by reason.
    pub requests_rejected: Mutex<BTreeMap<String, u64>>,
    /// Spans received (OTLP and Zipkin), refused ones included.
    pub spans_received: AtomicU64,
    /// Spans refused, by reason.
    pub spans_rejected: Mutex<BTreeMap<String, u64>>,
    /// Sightings received, refused ones included.
    pub sightings_received: AtomicU64,
    /// Sightings refused, by reason.
    pub sightings_rejected: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    fn count(map: &Mutex<BTreeMap<String, u64>>, reason: &str, n: u64) {
        *map.lock().expect("counters lock").entry(reason.to_string()).or_default() += n;
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a request refused whole.
    pub fn request_rejected(&self, reason: &str) {
        Self::count(&self.requests_rejected, reason, 1);
    }
}

/// Everything the handlers need.
#[derive(Debug)]
pub struct ApiContext {
    /// The flow state (read only here).
    pub state: SharedState,
    /// Where events go.
    pub ingest: IngestHandle,
    /// About this peer.
    pub info: PeerInfo,
    /// Request limits.
    pub limits: ApiLimits,
    /// Store size on disk.
    pub store_size: SizeProbe,
    /// What was taken and refused.
    pub counters: Counters,
    /// Places for ingest requests in flight (`limits.ingest_requests_in_flight_max`).
    pub ingest_slots: tokio::sync::Semaphore,
    /// The mesh, if this peer runs one, with its sync interval in milliseconds.
    pub mesh: Option<(MeshHandle, i64)>,
    /// Pairs span halves and correlates sightings.
    pub correlator: Mutex<observatory_correlate::Correlator>,
}

impl ApiContext {
    /// A context with fresh counters and ingest places for `limits`.
    pub fn new(
        state: SharedState,
        ingest: IngestHandle,
        info: PeerInfo,
        limits: ApiLimits,
        store_size: SizeProbe,
    ) -> Self {
        let ingest_slots = tokio::sync::Semaphore::new(limits.ingest_requests_in_flight_max);
        Self {
            state,
            ingest,
            info,
            limits,
            store_size,
            counters: Counters::default(),
            ingest_slots,
            mesh: None,
            correlator: Mutex::new(observatory_correlate::Correlator::new(CorrelationConfig::default())),
        }
    }

    /// The same context, correlating spans and sightings with `config`.
    pub fn with_correlation(self, config: CorrelationConfig) -> Self {
        Self { correlator: Mutex::new(observatory_correlate::Correlator::new(config)), ..self }
    }

    /// The same context, answering for `mesh` too (`/api/v1/peers`, coverage, status).
    pub fn with_mesh(mut self, mesh: MeshHandle, sync_interval_ms: i64) -> Self {
        self.mesh = Some((mesh, sync_interval_ms));
        self
    }

    /// How this peer stands with the mesh, for an answer's coverage.
    pub fn mesh_coverage(&self) -> Option<wire::MeshCoverage> {
        let (mesh, interval_ms) = self.mesh.as_ref()?;
        let status = mesh.status();
        let fresh_ms = 3 * interval_ms + 1000;
        let peers: Vec<_> = status
            .peers
            .iter()
            .filter(|p| !matches!(p.report.settings, observatory_mesh::Agreement::Differs { .. }))
            .collect();
        let connected = peers.iter().filter(|p| p.report.connected).count();
        let in_sync = peers
            .iter()
            .filter(|p| {
                p.report.connected
                    && p.last_sync_age_ms.is_some_and(|age| age <= fresh_ms)
                    && p.report.we_lack_cells == Some(0)
            })
            .count();
        Some(wire::MeshCoverage {
            peers_known: peers.len(),
            peers_connected: connected,
            peers_in_sync: in_sync,
            fresh_ms,
            complete: in_sync == peers.len(),
        })
    }
}

type Ctx = State<Arc<ApiContext>>;

/// The API's routes.
pub fn router(context: Arc<ApiContext>) -> Router {
    let body_limit = context.limits.body_bytes_max;
    Router::new()
        .route("/api/v1/events", post(post_events))
        .route("/v1/traces", post(ingest_spans::post_otlp_traces))
        .route("/api/v2/spans", post(ingest_spans::post_zipkin_spans))
        .route("/api/v1/sightings", post(ingest_spans::post_sightings))
        .route("/api/v1/graph", get(get_graph))
        .route("/api/v1/edges/{from}/{to}", get(get_edge_series))
        .route("/api/v1/status", get(get_status))
        .route("/api/v1/peers", get(get_peers))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(exposition::get_metrics))
        .route("/api/v2/dependencies", get(exposition::get_zipkin_dependencies))
        .route("/api/dependencies", get(exposition::get_jaeger_dependencies))
        .fallback(|| async { ApiError::NotFound("no such route; see /api/v1/status, /api/v1/graph".into()) })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(context)
}

/// The routes of the OTLP listener (`otlp.addr`): `POST /v1/traces` only.
pub fn otlp_router(context: Arc<ApiContext>) -> Router {
    let body_limit = context.limits.body_bytes_max;
    Router::new()
        .route("/v1/traces", post(ingest_spans::post_otlp_traces))
        .fallback(|| async {
            ApiError::NotFound("this listener takes OTLP/HTTP traces only: POST /v1/traces".into())
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(context)
}

fn body_format(headers: &HeaderMap, body: &[u8]) -> Result<BodyFormat, ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(BodyFormat::Json),
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" => Ok(BodyFormat::Ndjson),
        "application/cbor" => Ok(BodyFormat::Cbor),
        // Clients that send no type (or curl's default) get their body sniffed.
        "" | "text/plain" | "application/x-www-form-urlencoded" | "application/octet-stream" => {
            match body.iter().find(|b| !b.is_ascii_whitespace()) {
                Some(b'[') => Ok(BodyFormat::Json),
                Some(b'{') => Ok(BodyFormat::Ndjson),
                _ if essence == "application/octet-stream" => Ok(BodyFormat::Cbor),
                _ => Err(ApiError::UnsupportedMediaType(format!(
                    "cannot tell the body's format from Content-Type `{content_type}`; use application/json, \
                     application/x-ndjson or application/cbor"
                ))),
            }
        }
        other => Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type `{other}` is not supported; use application/json, application/x-ndjson or application/cbor"
        ))),
    }
}

async fn post_events(
    State(ctx): Ctx,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestAnswer>, ApiError> {
    let result = match ctx.ingest_slots.acquire().await {
        Ok(_slot) => ingest(&ctx, &headers, body).await,
        Err(_) => Err(ApiError::Unavailable("the peer is shutting down".into())),
    };
    if let Err(error) = &result {
        ctx.counters.request_rejected(error.code());
    }
    result
}

/// Reads the body, refusing it as soon as it is known to be over the limit: from its
/// `Content-Length` before reading anything, or while reading a chunked one.
///
/// A client that stalls while sending must not hold a request (and a graceful stop) open
/// for ever, so reading is bounded by `http.request_timeout`. Only reading is: once the
/// events are queued they are applied, and a timeout then would invite a retry that
/// counts them twice.
async fn read_body(
    limit: usize,
    timeout: Duration,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::PayloadTooLarge(format!("the body is larger than limits.body_bytes_max ({limit} bytes)"))
    };
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let read = tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await.map_err(|_| {
        ApiError::Timeout(format!("reading the body took longer than http.request_timeout ({timeout:?})"))
    })?;
    read.map_err(|error| match error.into_inner().downcast::<http_body_util::LengthLimitError>() {
        Ok(_) => too_large(),
        Err(other) => ApiError::BadRequest(format!("cannot read the body: {other}")),
    })
}

async fn ingest(ctx: &ApiContext, headers: &HeaderMap, body: Body) -> Result<Json<IngestAnswer>, ApiError> {
    let body = read_body(ctx.limits.body_bytes_max, ctx.limits.request_timeout, headers, body).await?;
    let format = body_format(headers, &body)?;
    let parsed = parse_body(format, &body, unix_now_ms(), &ctx.limits.parse)?;
    let (indices, events): (Vec<usize>, Vec<_>) = parsed.events.into_iter().unzip();
    let reply = if events.is_empty() { Default::default() } else { ctx.ingest.submit(events).await? };

    let mut errors: Vec<IngestErrorItem> = parsed
        .errors
        .into_iter()
        .map(|e| IngestErrorItem { index: e.index, field: e.field, reason: e.reason })
        .collect();
    let parse_rejected = errors.len();
    {
        let mut by_reason = ctx.counters.events_rejected.lock().expect("counters lock");
        for error in &errors {
            // Count by known field only: field names in errors can come from the client.
            let field = match error.field.as_str() {
                known @ ("from" | "to" | "ts" | "latency_ms" | "error" | "bytes" | "count" | "kind") => known,
                _ => "event",
            };
            *by_reason.entry(format!("invalid_{field}")).or_default() += 1;
        }
        for (_, rejection) in &reply.rejected {
            *by_reason.entry(rejection.reason_code().to_string()).or_default() += 1;
        }
    }
    errors.extend(reply.rejected.iter().map(|(i, rejection)| IngestErrorItem {
        index: indices[*i],
        field: rejection.field().to_string(),
        reason: rejection.to_string(),
    }));
    errors.sort_by_key(|e| e.index);
    let rejected = errors.len();
    let truncated = errors.len() > ctx.limits.errors_listed_max;
    errors.truncate(ctx.limits.errors_listed_max);
    ctx.counters.ingest_requests.fetch_add(1, Ordering::Relaxed);
    ctx.counters.events_accepted.fetch_add(reply.accepted as u64, Ordering::Relaxed);
    debug_assert_eq!(rejected, parse_rejected + reply.rejected.len());
    Ok(Json(IngestAnswer { accepted: reply.accepted, rejected, errors, errors_truncated: truncated }))
}

impl From<IngestError> for ApiError {
    fn from(error: IngestError) -> Self {
        match error {
            IngestError::Overloaded => ApiError::Unavailable(error.to_string()),
            IngestError::ShuttingDown => ApiError::Unavailable(error.to_string()),
            IngestError::Store(_) => ApiError::Internal(error.to_string()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GraphParams {
    window: Option<String>,
    at: Option<String>,
}

fn window_and_end(
    window: Option<&str>,
    at: Option<&str>,
    default_window: &str,
) -> Result<(i64, i64), ApiError> {
    let window = window.unwrap_or(default_window);
    let window_ms = time_text::parse_duration_ms(window).map_err(|e| ApiError::bad_param("window", e))?;
    let end_ms = match at {
        Some(at) => time_text::parse_time(at).map_err(|e| ApiError::bad_param("at", e))?,
        None => unix_now_ms(),
    };
    Ok((window_ms, end_ms))
}

async fn get_graph(
    State(ctx): Ctx,
    params: Result<Query<GraphParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<wire::GraphAnswer>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let (window_ms, end_ms) = window_and_end(params.window.as_deref(), params.at.as_deref(), "5m")?;
    let now_ms = unix_now_ms();
    let state = ctx.state.read().expect("state lock");
    let view =
        state.graph_as_of(window_ms, end_ms, now_ms).map_err(|e| ApiError::bad_param(query_param(&e), e))?;
    let mut coverage = wire::Coverage::from_core(&state.coverage(), now_ms);
    coverage.mesh = ctx.mesh_coverage();
    drop(state);
    Ok(Json(wire::GraphAnswer::from_core(view, window_ms, coverage)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeriesParams {
    window: Option<String>,
    kind: Option<String>,
    step: Option<String>,
    at: Option<String>,
}

async fn get_edge_series(
    State(ctx): Ctx,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
    params: Result<Query<SeriesParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<wire::SeriesAnswer>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let Path((from, to)) = path.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let name = |field: &str, value: &str| {
        NodeName::new(value, ctx.limits.parse.node_name_bytes_max).map_err(|e| ApiError::bad_param(field, e))
    };
    let kind = match params.kind.as_deref() {
        None => EdgeKind::Request,
        Some(kind) => EdgeKind::from_name(kind)
            .ok_or_else(|| ApiError::bad_param("kind", "must be request, messaging or database"))?,
    };
    let edge = Edge::with_kind(name("from", &from)?, name("to", &to)?, kind);
    let (window_ms, end_ms) = window_and_end(params.window.as_deref(), params.at.as_deref(), "1h")?;
    let step = params.step.as_deref().unwrap_or("1m");
    let step_ms = time_text::parse_duration_ms(step).map_err(|e| ApiError::bad_param("step", e))?;
    let now_ms = unix_now_ms();
    let state = ctx.state.read().expect("state lock");
    if !state.has_edge(&edge) {
        return Err(ApiError::NotFound(format!("no {kind} edge {from} -> {to} is known")));
    }
    let view = state
        .series_as_of(&edge, window_ms, step_ms, end_ms, now_ms)
        .map_err(|e| ApiError::bad_param(query_param(&e), e))?;
    let mut coverage = wire::Coverage::from_core(&state.coverage(), now_ms);
    coverage.mesh = ctx.mesh_coverage();
    drop(state);
    Ok(Json(wire::SeriesAnswer::from_core(&edge, view, window_ms, coverage)))
}

/// The query parameter a query error is about.
fn query_param(error: &QueryError) -> &'static str {
    match error {
        QueryError::WindowNotPositive | QueryError::WindowTooLong { .. } => "window",
        QueryError::EndOutOfRange => "at",
        QueryError::StepUnfit { .. } | QueryError::TooManyPoints { .. } => "step",
    }
}

async fn get_status(State(ctx): Ctx) -> Json<wire::StatusAnswer> {
    let state = ctx.state.read().expect("state lock");
    let stats = state.stats();
    let settings = state.settings().clone();
    drop(state);
    let counters = &ctx.counters;
    Json(wire::StatusAnswer {
        peer_id: ctx.info.peer_id.clone(),
        incarnation: ctx.info.incarnation,
        version: ctx.info.version.clone(),
        settings_fingerprint: settings.fingerprint(),
        settings: settings.canonical(),
        data_dir: ctx.info.data_dir.clone(),
        nodes: stats.nodes,
        edges: stats.edges,
        cells: stats.cells,
        global_cells: stats.global_cells,
        origins: stats.origins,
        store_bytes: ctx.store_size.size_on_disk(),
        ingest: wire::IngestCounters {
            requests: counters.ingest_requests.load(Ordering::Relaxed),
            events_accepted: counters.events_accepted.load(Ordering::Relaxed),
            events_rejected: counters.events_rejected.lock().expect("counters lock").clone(),
            requests_rejected: counters.requests_rejected.lock().expect("counters lock").clone(),
            spans_received: counters.spans_received.load(Ordering::Relaxed),
            spans_rejected: counters.spans_rejected.lock().expect("counters lock").clone(),
            sightings_received: counters.sightings_received.load(Ordering::Relaxed),
            sightings_rejected: counters.sightings_rejected.lock().expect("counters lock").clone(),
        },
        correlation: ctx.correlator.lock().expect("no correlator call panics").counters(),
        mesh: ctx.mesh.as_ref().map(|(mesh, _)| {
            let status = mesh.status();
            serde_json::json!({
                "listen": status.listen,
                "peers_known": status.peers.len(),
                "peers_connected": status.peers.iter().filter(|p| p.report.connected).count(),
                "counters": status.counters,
            })
        }),
    })
}

async fn get_peers(State(ctx): Ctx) -> Result<Json<serde_json::Value>, ApiError> {
    let Some((mesh, _)) = ctx.mesh.as_ref() else {
        return Err(ApiError::NotFound("this peer runs without a mesh".into()));
    };
    let status = mesh.status();
    let coverage = ctx.mesh_coverage();
    Ok(Json(serde_json::json!({
        "peer_id": status.peer_id,
        "listen": status.listen,
        "counters": status.counters,
        "coverage": coverage,
        "peers": status.peers,
    })))
}
