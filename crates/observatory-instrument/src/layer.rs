//! Tower middleware: a server layer that reads the caller's context and names this
//! service in the answer, and a client layer that sends the context and reports the call.
//!
//! The server layer runs the inner service inside the request's context (a task-local:
//! [`crate::current`]), so that a client layer used while serving the request continues
//! the same trace and flows. Work spawned onto other tasks must carry it along
//! ([`crate::Context::scope`]); a call made outside any context starts a new trace and is
//! counted as an outbound call without context.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::{Instant, SystemTime};

use http::{HeaderValue, Request, Response};
use http_body::Body;
use tower_layer::Layer;
use tower_service::Service;

use crate::context::{Context, extract};
use crate::reporter::{ContextMark, Kind, Report};
use crate::{CURRENT, Instrument, NODE_HEADER, decode_node_header, unix_micros, unix_millis};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The server layer: see the module documentation.
#[derive(Debug, Clone)]
pub struct ServerLayer {
    pub(crate) instrument: Instrument,
}

/// The service the [`ServerLayer`] wraps around another.
#[derive(Debug, Clone)]
pub struct ServerService<S> {
    inner: S,
    instrument: Instrument,
    node_header: HeaderValue,
}

impl<S> Layer<S> for ServerLayer {
    type Service = ServerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let node_header = HeaderValue::from_str(self.instrument.service().encoded())
            .expect("an encoded service name is a valid header value");
        ServerService { inner, instrument: self.instrument.clone(), node_header }
    }
}

impl<S, B, R> Service<Request<B>> for ServerService<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let incoming = extract(request.headers());
        self.instrument.note_inbound(&incoming);
        // A request without context is reported here, from the entry node: nobody else
        // will report it, and it is how the peer sees traces begin at this service.
        let without_context = !incoming.has_context();
        let context = incoming.context.clone();
        request.extensions_mut().insert(incoming);
        // The inner service's synchronous part runs in the context too, not only its future.
        let inner = &mut self.inner;
        let future = CURRENT.sync_scope(context.clone(), || inner.call(request));
        let future = CURRENT.scope(context, future);
        let node_header = self.node_header.clone();
        let instrument = self.instrument.clone();
        let started = SystemTime::now();
        let clock = Instant::now();
        Box::pin(async move {
            let result = future.await;
            if without_context {
                let error = result.as_ref().map_or(true, |r| r.status().is_server_error());
                instrument.record(Report {
                    from: instrument.entry_node(),
                    to: Box::from(instrument.service().as_str()),
                    kind: Kind::Request,
                    ts_ms: unix_millis(started),
                    latency_us: u64::try_from(clock.elapsed().as_micros()).unwrap_or(u64::MAX),
                    error,
                    bytes: None,
                    flow: None,
                    context: ContextMark::Missing,
                });
            }
            let mut response = result?;
            response.headers_mut().insert(NODE_HEADER, node_header);
            Ok(response)
        })
    }
}

/// The client layer: see the module documentation.
#[derive(Debug, Clone)]
pub struct ClientLayer {
    pub(crate) instrument: Instrument,
    pub(crate) kind: Kind,
}

impl ClientLayer {
    /// Reports calls through this client as `kind` (default [`Kind::Request`]).
    pub fn kind(mut self, kind: Kind) -> Self {
        self.kind = kind;
        self
    }
}

/// The service the [`ClientLayer`] wraps around a client.
#[derive(Debug, Clone)]
pub struct ClientService<S> {
    inner: S,
    instrument: Instrument,
    kind: Kind,
}

impl<S> Layer<S> for ClientLayer {
    type Service = ClientService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientService { inner, instrument: self.instrument.clone(), kind: self.kind }
    }
}

impl<S, B, R> Service<Request<B>> for ClientService<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    B: Body,
    R: Body,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let (context, mark) = match crate::current() {
            Some(context) => (context, ContextMark::Continued),
            None => {
                self.instrument.note_outbound_without_context();
                (Context::new_root(), ContextMark::Started)
            }
        };
        let flow = context.flows.reported();
        let started = SystemTime::now();
        let clock = Instant::now();
        context.inject(self.instrument.service().encoded(), unix_micros(started), request.headers_mut());
        // If the callee does not name itself, the host it was reached at names it.
        let host: Option<Box<str>> = request.uri().host().map(Box::from);
        let request_bytes = request.body().size_hint().exact();
        let future = self.inner.call(request);
        let instrument = self.instrument.clone();
        let kind = self.kind;
        Box::pin(async move {
            let result = future.await;
            let latency_us = u64::try_from(clock.elapsed().as_micros()).unwrap_or(u64::MAX);
            let (callee, error, response_bytes) = match &result {
                Ok(response) => (
                    response
                        .headers()
                        .get(NODE_HEADER)
                        .and_then(|v| decode_node_header(v.as_bytes()))
                        .or(host),
                    response.status().is_server_error(),
                    response.body().size_hint().exact(),
                ),
                Err(_) => (host, true, None),
            };
            let bytes = match (request_bytes, response_bytes) {
                (None, None) => None,
                (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
            };
            match callee {
                Some(to) => instrument.record(Report {
                    from: instrument.service().shared_name(),
                    to,
                    kind,
                    ts_ms: unix_millis(started),
                    latency_us,
                    error,
                    bytes,
                    flow,
                    context: mark,
                }),
                None => instrument.note_unnamed_callee(),
            }
            result
        })
    }
}
