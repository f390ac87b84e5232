//! Instrumentation for Rust services that report to an Observatory peer, without a
//! tracing system.
//!
//! A service names itself and the URL of its peer; the library does the rest:
//!
//! - **Context.** Requests carry the W3C `traceparent` (continued, or started here), the
//!   `tracestate` as it came, and a `baggage` member of ours, `obs`, naming the sending
//!   node, its send time, a hop id and the flow labels ([`baggage`]). Other baggage members
//!   are passed through untouched. Typically under 100 bytes, never more than 512 of ours.
//! - **Names only.** The [`ServerLayer`] answers with an `observatory-node` header naming
//!   this service; the [`ClientLayer`] reads it, so a caller learns its callee's name
//!   without configuration, and reports one event per call (from, to, latency, error,
//!   bytes). A consumer of messages reports the edge from the producer with the transit
//!   time ([`Instrument::receive_message`]).
//! - **Never in the way.** Reports go through a bounded queue to one task that batches
//!   them, posts CBOR to the peer, and retries with backoff ([`reporter`]); a full queue
//!   drops and counts, and [`Instrument::shutdown`] flushes.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use observatory_instrument::{Instrument, InstrumentConfig};
//! let instrument = Instrument::start(InstrumentConfig::from_env("checkout")?)?;
//! let app: axum::Router = axum::Router::new()
//!     .route("/", axum::routing::get(|| async { "ok" }))
//!     .layer(instrument.server_layer());
//! # let _ = app;
//! // ... serve `app`; wrap your HTTP client in `instrument.client_layer()` ...
//! instrument.shutdown().await;
//! # Ok(()) }
//! ```

pub mod baggage;
pub mod context;
pub mod layer;
pub mod reporter;
pub mod traceparent;
pub mod tracestate;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use percent_encoding::percent_decode;
use serde::Serialize;

pub use crate::baggage::{Flow, FlowError, Flows, Hop};
pub use crate::context::{Context, Extract, Incoming, Inject, MessageHeaders, Sent, extract};
pub use crate::layer::{ClientLayer, ClientService, ServerLayer, ServerService};
pub use crate::reporter::{
    ContextMark, Kind, Report, Reporter, ReporterConfig, ReporterError, ReporterStats,
};
pub use crate::traceparent::{SpanId, TraceId, TraceParent};

/// The response header in which a server names itself (percent-encoded like our member).
pub const NODE_HEADER: &str = "observatory-node";

/// The environment variable [`InstrumentConfig::from_env`] reads the peer's URL from.
pub const PEER_URL_ENV: &str = "OBSERVATORY_URL";

/// The peer's URL when [`PEER_URL_ENV`] is not set: a peer on the same host.
pub const PEER_URL_DEFAULT: &str = "http://127.0.0.1:7070";

/// Longest service name in bytes.
pub const SERVICE_NAME_BYTES_MAX: usize = 100;

tokio::task_local! {
    static CURRENT: Context;
}

/// The context of the request this task is serving, if any.
pub fn current() -> Option<Context> {
    CURRENT.try_with(Context::clone).ok()
}

impl Context {
    /// Runs `future` in this context: client layers used inside it continue it. Use it
    /// for work spawned onto other tasks while serving a request.
    pub fn scope<F: Future>(self, future: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, future)
    }
}

/// A service's own name, checked and encoded once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceName {
    name: Arc<str>,
    encoded: Arc<str>,
}

/// Why a service name cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceNameError {
    /// Empty or too long.
    #[error("a service name is 1 to {SERVICE_NAME_BYTES_MAX} bytes long, not {0}")]
    Length(usize),
    /// Holds a control character.
    #[error("a service name must be printable; {0:?} is a control character")]
    NotPrintable(char),
    /// Too long once percent-encoded for headers.
    #[error("a service name percent-encoded is at most {max} bytes, not {0}", max = baggage::NODE_ENCODED_BYTES_MAX)]
    EncodedLength(usize),
}

impl ServiceName {
    /// Checks a name: 1 to [`SERVICE_NAME_BYTES_MAX`] bytes of printable UTF-8.
    pub fn new(name: &str) -> Result<Self, ServiceNameError> {
        if name.is_empty() || name.len() > SERVICE_NAME_BYTES_MAX {
            return Err(ServiceNameError::Length(name.len()));
        }
        if let Some(c) = name.chars().find(|c| c.is_control()) {
            return Err(ServiceNameError::NotPrintable(c));
        }
        let encoded = baggage::encode_node(name)?;
        Ok(Self { name: Arc::from(name), encoded: Arc::from(encoded) })
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The name percent-encoded, as headers carry it.
    pub fn encoded(&self) -> &str {
        &self.encoded
    }

    fn shared_name(&self) -> Arc<str> {
        self.name.clone()
    }
}

/// What a service needs to say: its name and its peer.
#[derive(Debug, Clone)]
pub struct InstrumentConfig {
    /// This service's name.
    pub service: ServiceName,
    /// How reports reach the peer.
    pub reporter: ReporterConfig,
    /// The node a request that came without context is reported from (the peer's
    /// `correlation.entry_node`, `user` by default).
    pub entry_node: String,
}

/// The entry node's name when none is given: the peer's default `correlation.entry_node`.
pub const ENTRY_NODE_DEFAULT: &str = "user";

impl InstrumentConfig {
    /// Service `service` reporting to the peer at `peer_url`, with the defaults.
    pub fn new(service: &str, peer_url: &str) -> Result<Self, ServiceNameError> {
        Ok(Self {
            service: ServiceName::new(service)?,
            reporter: ReporterConfig::new(peer_url),
            entry_node: ENTRY_NODE_DEFAULT.to_string(),
        })
    }

    /// Service `service` reporting to the peer `OBSERVATORY_URL` names, else to
    /// [`PEER_URL_DEFAULT`].
    pub fn from_env(service: &str) -> Result<Self, ServiceNameError> {
        let url = std::env::var(PEER_URL_ENV).unwrap_or_else(|_| PEER_URL_DEFAULT.to_string());
        Self::new(service, &url)
    }
}

/// What the library saw of context propagation at this service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PropagationStats {
    /// Requests and messages that came with a valid `traceparent`.
    pub inbound_with_context: u64,
    /// Requests and messages that came without one (or with an invalid one).
    pub inbound_without_context: u64,
    /// Of those with a `traceparent`, the ones whose sender named itself (our member).
    pub inbound_named: u64,
    /// Calls made outside the context of any request (new traces).
    pub outbound_without_context: u64,
    /// Calls whose callee neither named itself nor had a host name (not reported).
    pub outbound_unnamed: u64,
    /// Messages received without a producer to name (not reported).
    pub messages_unnamed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    inbound_with_context: AtomicU64,
    inbound_without_context: AtomicU64,
    inbound_named: AtomicU64,
    outbound_without_context: AtomicU64,
    outbound_unnamed: AtomicU64,
    messages_unnamed: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    service: ServiceName,
    entry_node: Arc<str>,
    reporter: Reporter,
    counters: Counters,
}

/// A service's instrumentation: its name, its reporter, its layers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Instrument {
    inner: Arc<Inner>,
}

/// Why instrumentation could not start.
#[derive(Debug, thiserror::Error)]
pub enum InstrumentError {
    /// The service name.
    #[error("service name: {0}")]
    ServiceName(#[from] ServiceNameError),
    /// The reporter.
    #[error("reporter: {0}")]
    Reporter(#[from] ReporterError),
}

impl Instrument {
    /// Starts the reporter on the current tokio runtime.
    pub fn start(config: InstrumentConfig) -> Result<Self, InstrumentError> {
        let reporter = Reporter::start(config.service.as_str(), config.reporter)?;
        let entry_node = Arc::from(config.entry_node.as_str());
        Ok(Self {
            inner: Arc::new(Inner {
                service: config.service,
                entry_node,
                reporter,
                counters: Counters::default(),
            }),
        })
    }

    /// This service's name.
    pub fn service(&self) -> &ServiceName {
        &self.inner.service
    }

    pub(crate) fn entry_node(&self) -> Arc<str> {
        self.inner.entry_node.clone()
    }

    /// Middleware for this service's HTTP server (axum, hyper, tonic).
    pub fn server_layer(&self) -> ServerLayer {
        ServerLayer { instrument: self.clone() }
    }

    /// Middleware for this service's HTTP clients (any tower client of `http` requests).
    pub fn client_layer(&self) -> ClientLayer {
        ClientLayer { instrument: self.clone(), kind: Kind::Request }
    }

    /// Reports one call or message; never blocks.
    pub fn record(&self, report: Report) {
        self.inner.reporter.record(report);
    }

    /// Reports a call this service made to `to` that started at `started` and took
    /// `latency` (for clients the layers do not cover: a database driver, say).
    pub fn record_call(
        &self,
        to: &str,
        kind: Kind,
        started: SystemTime,
        latency: std::time::Duration,
        error: bool,
        bytes: Option<u64>,
    ) {
        self.record(Report {
            from: self.inner.service.shared_name(),
            to: Box::from(to),
            kind,
            ts_ms: unix_millis(started),
            latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            error,
            bytes,
            flow: current().and_then(|c| c.flows.reported()),
            context: if current().is_some() { ContextMark::Continued } else { ContextMark::Started },
        });
    }

    /// Writes `context` (or the current one, or a new trace) into a message's headers
    /// before it is produced. The consumer reports the edge.
    pub fn send_message(&self, context: Option<&Context>, headers: &mut MessageHeaders) -> Sent {
        let now = unix_micros(SystemTime::now());
        match context.cloned().or_else(current) {
            Some(context) => context.inject(self.inner.service.encoded(), now, headers),
            None => {
                self.note_outbound_without_context();
                Context::new_root().inject(self.inner.service.encoded(), now, headers)
            }
        }
    }

    /// Reads a consumed message's context and reports the messaging edge from its
    /// producer, with the transit time (send to now; the clocks of two hosts, clamped at
    /// zero) and `error` as the consumer's handling ended. Returns the context to handle
    /// the message in.
    pub fn receive_message(&self, headers: &MessageHeaders, error: bool, bytes: Option<u64>) -> Incoming {
        let incoming = extract(headers);
        self.note_inbound(&incoming);
        let now = SystemTime::now();
        match &incoming.hop {
            Some(hop) => {
                let transit_us = unix_micros(now).saturating_sub(hop.sent_at_us);
                self.record(Report {
                    from: Arc::from(&*hop.node),
                    to: Box::from(self.inner.service.as_str()),
                    kind: Kind::Messaging,
                    ts_ms: i64::try_from(hop.sent_at_us / 1000).unwrap_or(i64::MAX),
                    latency_us: transit_us,
                    error,
                    bytes,
                    flow: incoming.context.flows.reported(),
                    // The consumer cannot tell whether the producer sent in a request's
                    // context; its own counts say (`outbound_without_context`).
                    context: ContextMark::Unknown,
                });
            }
            None => {
                self.inner.counters.messages_unnamed.fetch_add(1, Ordering::Relaxed);
            }
        }
        incoming
    }

    /// What the reporter has done so far.
    pub fn reporter_stats(&self) -> ReporterStats {
        self.inner.reporter.stats()
    }

    /// What this service saw of context propagation so far.
    pub fn propagation_stats(&self) -> PropagationStats {
        let c = &self.inner.counters;
        PropagationStats {
            inbound_with_context: c.inbound_with_context.load(Ordering::Relaxed),
            inbound_without_context: c.inbound_without_context.load(Ordering::Relaxed),
            inbound_named: c.inbound_named.load(Ordering::Relaxed),
            outbound_without_context: c.outbound_without_context.load(Ordering::Relaxed),
            outbound_unnamed: c.outbound_unnamed.load(Ordering::Relaxed),
            messages_unnamed: c.messages_unnamed.load(Ordering::Relaxed),
        }
    }

    /// Posts what is queued and stops the reporter (see [`Reporter::shutdown`]).
    pub async fn shutdown(&self) -> ReporterStats {
        self.inner.reporter.shutdown().await
    }

    pub(crate) fn note_inbound(&self, incoming: &Incoming) {
        let c = &self.inner.counters;
        if incoming.has_context() {
            c.inbound_with_context.fetch_add(1, Ordering::Relaxed);
            if incoming.hop.is_some() {
                c.inbound_named.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            c.inbound_without_context.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn note_outbound_without_context(&self) {
        self.inner.counters.outbound_without_context.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn note_unnamed_callee(&self) {
        self.inner.counters.outbound_unnamed.fetch_add(1, Ordering::Relaxed);
    }
}

/// The callee's name from its `observatory-node` header, if it is one.
pub(crate) fn decode_node_header(value: &[u8]) -> Option<Box<str>> {
    if value.is_empty() || value.len() > baggage::NODE_ENCODED_BYTES_MAX {
        return None;
    }
    let name = percent_decode(value).decode_utf8().ok()?;
    (!name.is_empty() && !name.chars().any(char::is_control)).then(|| name.into())
}

pub(crate) fn unix_micros(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

pub(crate) fn unix_millis(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
