//! The HTTP edge of a peer: the only crate that knows HTTP (axum for the server, reqwest
//! for the client the command line uses).
//!
//! The edge talks to the peer only through [`PeerApi`]: it decodes and validates
//! requests into core and correlate types, hands them over, and answers with the JSON
//! types of [`wire`]. Build an [`Api`] over a peer and serve [`router`] (and
//! [`otlp_router`] on the OTLP port) with [`serve`]. Routes:
//! - `POST /api/v1/events`: native events (JSON array, NDJSON or CBOR).
//! - `POST /v1/traces`: OTLP/HTTP spans (protobuf or JSON, gzip); `POST /api/v2/spans`:
//!   Zipkin v2 spans; `POST /api/v1/sightings`: token sightings. See [`ingest_spans`].
//! - `GET /api/v1/graph?window=5m&at=<time>`: the flow graph of a window.
//! - `GET /api/v1/edges/{from}/{to}?window=1h&step=1m&kind=request`: one edge's time series;
//!   `.../latency?window=5m&kind=`: its merged latency histogram.
//! - `GET /api/v1/status`, `GET /api/v1/peers`, `GET /healthz`.
//! - `GET /api/v1/objectives?name=`, `POST /api/v1/objectives/reload`, `GET /api/v1/alerts`:
//!   objectives, and alerts in Alertmanager's format. See [`objectives`].
//! - `GET /`: the live picture (a page embedded in the binary); `GET /api/v1/layout`,
//!   `GET /graph.svg` and `GET /api/v1/live` (server-sent events) draw the graph. See
//!   [`picture`].
//! - `GET /metrics`: Prometheus text format, the service graph and the peer's own metrics.
//! - `GET /api/v2/dependencies?endTs=<ms>&lookback=<ms>`: Zipkin's dependency links.
//! - `GET /api/dependencies?endTs=<ms>&lookback=<ms>`: Jaeger's dependency links.

pub mod client;
pub mod counters;
mod error;
pub mod events;
mod exposition;
pub mod grpc;
mod ingest;
mod ingest_spans;
pub mod objectives;
pub mod otlp;
pub mod peer;
pub mod picture;
mod query;
pub mod spans;
pub mod time_text;
pub mod wire;
pub mod zipkin;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use observatory_config::Config;
use tokio_util::sync::CancellationToken;

pub use counters::{Counters, ReasonCounts};
pub use error::ApiError;
use events::ParseLimits;
pub use peer::{AppliedCounters, MeshView, ObjectivesView, PeerApi, PeerInfo, SubmitError};

/// Limits the edge enforces on requests (`limits.*` and `http.*` in the configuration).
#[derive(Debug, Clone)]
pub struct ApiLimits {
    /// Largest request body in bytes, as sent and as decompressed.
    pub body_bytes_max: usize,
    /// Most per-event errors listed in an ingest answer.
    pub errors_listed_max: usize,
    /// Parsing limits.
    pub parse: ParseLimits,
    /// Longest time reading one request's body may take (408 beyond).
    pub request_timeout: Duration,
    /// Slowest a body may arrive after its first second, in bytes per second (0: any).
    pub body_min_rate: u64,
    /// Most connections open at once over every listener (`http.connections_max`).
    pub connections_max: usize,
    /// How long a request's head may take (`http.header_read_timeout`).
    pub header_read_timeout: Duration,
    /// Most ingest requests parsed and applied at once; more wait for a place (span and
    /// sighting requests get 429 instead). Bodies are read before, at most twice this many
    /// at once, each holding its read place until it is done, so memory stays bounded by
    /// twice this many bodies.
    pub ingest_requests_in_flight_max: usize,
    /// Most spans in one OTLP or Zipkin request; the rest are refused.
    pub spans_per_request_max: usize,
    /// How pictures are coloured, and the live streams' interval and bound (`ui.*`).
    pub picture: picture::PictureSettings,
    /// The node edges from outside the system start at (`correlation.entry_node`).
    pub entry_node: String,
    /// The span attributes naming the other side (`correlation.peer_attributes`).
    pub peer_attributes: std::sync::Arc<[String]>,
    /// The attribute holding a span's sampling ratio (`correlation.sample_ratio_attribute`).
    pub sample_ratio_attribute: Option<std::sync::Arc<str>>,
}

impl ApiLimits {
    /// The limits in `config`.
    pub fn from_config(config: &Config) -> Self {
        let limits = &config.limits;
        Self {
            body_bytes_max: limits.body_bytes_max,
            errors_listed_max: limits.errors_listed_max,
            parse: ParseLimits {
                events_per_request_max: limits.events_per_request_max,
                node_name_bytes_max: limits.node_name_bytes_max,
                event_count_max: limits.event_count_max,
            },
            request_timeout: config.http.request_timeout,
            body_min_rate: config.http.body_min_rate,
            connections_max: config.http.connections_max,
            header_read_timeout: config.http.header_read_timeout,
            ingest_requests_in_flight_max: limits.ingest_requests_in_flight_max,
            spans_per_request_max: limits.spans_per_request_max,
            picture: picture::PictureSettings::from_config(config),
            entry_node: config.correlation.entry_node.clone(),
            peer_attributes: config.correlation.peer_attributes.clone().into(),
            sample_ratio_attribute: config.correlation.sample_ratio_attribute.as_deref().map(Into::into),
        }
    }
}

/// The edge over one peer: the peer, the limits, the edge's counters and its places for
/// ingest requests in flight.
#[derive(Debug)]
pub struct Api<P> {
    /// The peer behind the edge.
    pub peer: P,
    /// Request limits.
    pub limits: ApiLimits,
    /// What the edge took and refused.
    pub counters: Counters,
    /// Places for ingest requests in flight (`limits.ingest_requests_in_flight_max`).
    pub(crate) ingest_slots: tokio::sync::Semaphore,
    /// Bodies being read before they take an ingest place (2 per place): they bound the
    /// memory of bodies read at once.
    pub(crate) body_reads: tokio::sync::Semaphore,
    /// The last drawing and the live streams.
    pub(crate) pictures: picture::Pictures,
    /// The connections of every listener serving this edge.
    pub(crate) connections: Connections,
}

impl<P: PeerApi> Api<P> {
    /// The edge over `peer` with `limits`, whose live streams run until the process ends.
    pub fn new(peer: P, limits: ApiLimits) -> Arc<Self> {
        Self::with_shutdown(peer, limits, CancellationToken::new())
    }

    /// The edge over `peer` with `limits`; live streams end when `shutdown` is cancelled,
    /// so that they do not hold a graceful shutdown open.
    pub fn with_shutdown(peer: P, limits: ApiLimits, shutdown: CancellationToken) -> Arc<Self> {
        let ingest_slots = tokio::sync::Semaphore::new(limits.ingest_requests_in_flight_max);
        let body_reads = tokio::sync::Semaphore::new(2 * limits.ingest_requests_in_flight_max.max(1));
        let pictures = picture::Pictures::new(limits.picture.clone(), shutdown);
        let connections = Connections::new(limits.connections_max, limits.header_read_timeout);
        Arc::new(Self {
            peer,
            limits,
            counters: Counters::default(),
            ingest_slots,
            body_reads,
            pictures,
            connections,
        })
    }

    /// The connections every listener serving this edge shares (pass to [`serve`]).
    pub fn connections(&self) -> Connections {
        self.connections.clone()
    }
}

type Ctx<P> = axum::extract::State<Arc<Api<P>>>;

/// The API's routes.
pub fn router<P: PeerApi>(api: Arc<Api<P>>) -> Router {
    let body_limit = api.limits.body_bytes_max;
    Router::new()
        .route("/api/v1/events", post(ingest::post_events::<P>))
        .route("/v1/traces", ingest_spans::otlp_route::<P>(body_limit))
        .route("/api/v2/spans", ingest_spans::zipkin_route::<P>(body_limit))
        .route("/api/v1/sightings", ingest_spans::sightings_route::<P>(body_limit))
        .route("/api/v1/graph", get(query::get_graph::<P>))
        .route("/api/v1/propagation", get(query::get_propagation::<P>))
        .route("/api/v1/edges/{from}/{to}", get(query::get_edge_series::<P>))
        .route("/api/v1/edges/{from}/{to}/latency", get(query::get_edge_latency::<P>))
        .route("/api/v1/status", get(query::get_status::<P>))
        .route("/api/v1/peers", get(query::get_peers::<P>))
        .route("/api/v1/objectives", get(objectives::get_objectives::<P>))
        .route("/api/v1/objectives/reload", post(objectives::post_reload::<P>))
        .route("/api/v1/alerts", get(objectives::get_alerts::<P>))
        .route("/", get(picture::get_page))
        .route("/ui/app.js", get(picture::get_script))
        .route("/ui/app.css", get(picture::get_style))
        .route("/graph.svg", get(picture::get_svg::<P>))
        .route("/api/v1/layout", get(picture::get_layout::<P>))
        .route("/api/v1/live", get(picture::get_live::<P>))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(exposition::get_metrics::<P>))
        .route("/api/v2/dependencies", get(exposition::get_zipkin_dependencies::<P>))
        .route("/api/dependencies", get(exposition::get_jaeger_dependencies::<P>))
        .fallback(|| async { ApiError::NotFound("no such route; see /api/v1/status, /api/v1/graph".into()) })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(api)
}

/// The routes of the OTLP listener (`otlp.addr`): `POST /v1/traces` only.
pub fn otlp_router<P: PeerApi>(api: Arc<Api<P>>) -> Router {
    let body_limit = api.limits.body_bytes_max;
    Router::new()
        .route("/v1/traces", ingest_spans::otlp_route::<P>(body_limit))
        .fallback(|| async {
            ApiError::NotFound("this listener takes OTLP/HTTP traces only: POST /v1/traces".into())
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(api)
}

/// How a server stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Served {
    /// Every request in flight finished after `shutdown`.
    Drained,
    /// Requests were still open after the grace period and were cut off.
    GraceOver,
}

/// What the HTTP listeners of a peer may hold, shared by all of them.
#[derive(Debug, Clone)]
pub struct Connections {
    /// Open connections, at most `http.connections_max` over every listener.
    places: Arc<tokio::sync::Semaphore>,
    /// How long a client may take to send a request's head, and how long a kept-alive
    /// connection may stay idle (`http.header_read_timeout`).
    pub header_read_timeout: Duration,
    /// Connections closed at once because every place was taken.
    refused: Arc<std::sync::atomic::AtomicU64>,
}

impl Connections {
    /// At most `max` connections at once; heads read within `header_read_timeout`.
    pub fn new(max: usize, header_read_timeout: Duration) -> Self {
        Self {
            places: Arc::new(tokio::sync::Semaphore::new(max)),
            header_read_timeout,
            refused: Arc::default(),
        }
    }

    /// Connections closed at once because `http.connections_max` were open.
    pub fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn open(&self, max: usize) -> usize {
        max.saturating_sub(self.places.available_permits())
    }
}

/// How long a kept-alive HTTP/1 connection may wait for its next request (or take to send
/// a request head once it started).
const KEEP_ALIVE_IDLE: Duration = Duration::from_secs(120);

/// Serves `app` on `listener` until `shutdown` is cancelled, then lets requests in flight
/// finish for at most `grace`: a stalled client must not keep the peer up for ever.
/// Connections beyond `connections`' places are closed at once (so that file descriptors
/// never run out), a connection that sends no request head within the header timeout is
/// closed, and accepting goes on after errors such as running out of descriptors.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: CancellationToken,
    grace: Duration,
    connections: Connections,
) -> std::io::Result<Served> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // hyper's header timeout also closes kept-alive connections waiting for their next
    // request: it is kept longer than clients keep idle connections (90 s for most), so
    // that a client never sends on a connection the peer is just closing. Connections
    // that send nothing at all are closed after `header_read_timeout` below.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(connections.header_read_timeout.max(KEEP_ALIVE_IDLE))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(connections.header_read_timeout))
        .keep_alive_timeout(connections.header_read_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => break,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(error) => {
                // Out of descriptors, or a connection reset while queued: go on, after a
                // breath when the machine is short of something.
                let transient = matches!(
                    error.kind(),
                    std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionRefused
                );
                if !transient {
                    tracing::warn!(%error, "accepting a connection failed; going on");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                continue;
            }
        };
        let Ok(place) = connections.places.clone().try_acquire_owned() else {
            connections.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            drop(tcp);
            continue;
        };
        // Without TCP_NODELAY, an HTTP/2 answer written in parts (headers, data, trailers,
        // as gRPC's are) waits for the client's delayed ACK: tens of milliseconds a request.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let (builder, watcher, stopping) = (builder.clone(), graceful.watcher(), shutdown.clone());
        let header_read_timeout = connections.header_read_timeout;
        tokio::spawn(async move {
            // A connection that sends nothing is closed after the header timeout (hyper's
            // own starts with the first byte of a head).
            let mut first = [0u8; 1];
            let first_byte = tokio::time::timeout(header_read_timeout, tcp.peek(&mut first));
            let sent = tokio::select! {
                peeked = first_byte => matches!(peeked, Ok(Ok(n)) if n > 0),
                _ = stopping.cancelled() => false,
            };
            if sent {
                let connection =
                    builder.serve_connection_with_upgrades(TokioIo::new(tcp), service).into_owned();
                if let Err(error) = watcher.watch(connection).await {
                    tracing::debug!(%error, "connection ended with an error");
                }
            }
            drop(place);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => Ok(Served::Drained),
        () = tokio::time::sleep(grace) => Ok(Served::GraceOver),
    }
}
