//! `shop`: one service of the demo shop, as its own process, instrumented with
//! `observatory-instrument` (no tracing system, no configuration but names and URLs).
//!
//! ```text
//! users ──► web ──► catalog ◄── cart        web fans out to catalog and cart at once
//!            │ └──► cart ────────┘          (catalog fans in from web and cart),
//!            ├────► payments                charges payments (5% fail),
//!            └────► queue ◄── shipping      and publishes the order to the queue;
//!                     web ⇢ shipping        shipping polls it: a messaging edge web ⇢ shipping
//! ```
//!
//! `users` is the load: requests at `--rate`, each a new trace with a flow label
//! (`browse-page` or `checkout-page`) that travels through every hop. `--drop-context P`
//! makes a service lose the context on a share `P` of its outbound calls (it calls from
//! a task of its own), as a service with broken propagation does. Every service counts
//! the calls it made (`GET /made`, and on its last stdout line when it stops), so a test
//! can compare the graph with what the shop did. `observatory demo` starts them all.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use observatory_instrument::{
    ClientService, Context, Flow, Instrument, InstrumentConfig, MessageHeaders, PropagationStats,
    ReporterStats,
};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Service {
    Users,
    Web,
    Catalog,
    Cart,
    Payments,
    Queue,
    Shipping,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Users => "users",
            Service::Web => "web",
            Service::Catalog => "catalog",
            Service::Cart => "cart",
            Service::Payments => "payments",
            Service::Queue => "queue",
            Service::Shipping => "shipping",
        }
    }
}

/// One service of the demo shop (see `observatory demo`).
#[derive(Debug, Parser)]
#[command(name = "shop", version)]
struct Args {
    /// Which service to be.
    service: Service,
    /// Where to serve HTTP (port 0 picks one; the startup line says which).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The Observatory peer to report to.
    #[arg(long, env = "OBSERVATORY_URL", default_value = "http://127.0.0.1:7070")]
    peer: String,
    /// Base URL of web (for users).
    #[arg(long)]
    web: Option<String>,
    /// Base URL of catalog (for web and cart).
    #[arg(long)]
    catalog: Option<String>,
    /// Base URL of cart (for web).
    #[arg(long)]
    cart: Option<String>,
    /// Base URL of payments (for web).
    #[arg(long)]
    payments: Option<String>,
    /// Base URL of queue (for web and shipping).
    #[arg(long)]
    queue: Option<String>,
    /// Requests per second (users).
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Stop after this many requests (users); without it, run until stopped.
    #[arg(long)]
    requests: Option<u64>,
    /// Share of outbound calls made without the request's context (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    drop_context: f64,
}

/// What a service made: calls per edge and flow, and how many failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct MadeEdge {
    from: String,
    to: String,
    kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    flow: Option<String>,
    calls: u64,
    errors: u64,
}

/// `(from, to, kind, flow)`.
type EdgeName = (String, String, &'static str, Option<String>);

/// Calls and errors per edge.
#[derive(Debug, Default)]
struct Made(Mutex<BTreeMap<EdgeName, (u64, u64)>>);

impl Made {
    fn add(&self, from: &str, to: &str, kind: &'static str, flow: Option<&str>, error: bool) {
        let mut made = self.0.lock().unwrap();
        let entry =
            made.entry((from.to_string(), to.to_string(), kind, flow.map(str::to_string))).or_default();
        entry.0 += 1;
        entry.1 += u64::from(error);
    }

    fn edges(&self) -> Vec<MadeEdge> {
        let made = self.0.lock().unwrap();
        made.iter()
            .map(|((from, to, kind, flow), (calls, errors))| MadeEdge {
                from: from.clone(),
                to: to.clone(),
                kind: kind.to_string(),
                flow: flow.clone(),
                calls: *calls,
                errors: *errors,
            })
            .collect()
    }
}

type HttpClient = ClientService<Client<HttpConnector, Full<Bytes>>>;

/// Everything a service's handlers share.
struct Shop {
    service: Service,
    instrument: Instrument,
    client: HttpClient,
    made: Made,
    args: Args,
    queue: Mutex<VecDeque<QueuedMessage>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct QueuedMessage {
    headers: Vec<(String, String)>,
    body: String,
}

/// The answer of one call: status (None if it never got one) and body.
struct Answer {
    status: Option<StatusCode>,
    body: Bytes,
}

impl Answer {
    fn ok(&self) -> bool {
        self.status.is_some_and(|s| !s.is_server_error())
    }
}

impl Shop {
    fn url(&self, service: Service) -> String {
        let url = match service {
            Service::Web => &self.args.web,
            Service::Catalog => &self.args.catalog,
            Service::Cart => &self.args.cart,
            Service::Payments => &self.args.payments,
            Service::Queue => &self.args.queue,
            _ => &None,
        };
        url.clone().unwrap_or_else(|| panic!("--{} is checked at start", service.name()))
    }

    /// Calls `to` and counts the call as made. With `--drop-context`, some calls run on a
    /// task of their own, which does not carry the request's context.
    async fn call(&self, to: Service, method: &str, path: &str, body: Option<Vec<u8>>) -> Answer {
        let request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url(to)))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("a valid request");
        let client = self.client.clone();
        let send = async move {
            match client.oneshot(request).await {
                Ok(response) => {
                    let status = response.status();
                    let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    Answer { status: Some(status), body }
                }
                Err(_) => Answer { status: None, body: Bytes::new() },
            }
        };
        let drop = self.args.drop_context > 0.0 && rand::rng().random_bool(self.args.drop_context.min(1.0));
        let answer = if drop {
            tokio::spawn(send).await.unwrap_or(Answer { status: None, body: Bytes::new() })
        } else {
            send.await
        };
        // A call that lost its context lost its flow too.
        let flow =
            if drop { None } else { observatory_instrument::current().and_then(|c| c.flows.reported()) };
        self.made.add(self.service.name(), to.name(), "request", flow.as_deref(), !answer.ok());
        answer
    }
}

/// Waits about `median_ms`, spread log-normally (`sigma`).
async fn work(median_ms: f64, sigma: f64) {
    let (u1, u2): (f64, f64) = {
        let mut rng = rand::rng();
        (rng.random_range(f64::EPSILON..1.0), rng.random())
    };
    let normal = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    let ms = (median_ms * (sigma * normal).exp()).min(median_ms * 20.0);
    tokio::time::sleep(Duration::from_secs_f64(ms / 1000.0)).await;
}

fn fails(share: f64) -> bool {
    rand::rng().random_bool(share)
}

fn status(ok: bool) -> StatusCode {
    if ok { StatusCode::OK } else { StatusCode::INTERNAL_SERVER_ERROR }
}

/// A body of about `bytes` bytes, so that the graph's byte counts mean something.
fn payload(bytes: usize) -> String {
    let n = rand::rng().random_range(bytes / 2..=bytes * 3 / 2);
    format!("{{\"items\":\"{}\"}}", "x".repeat(n))
}

async fn catalog_items() -> (StatusCode, String) {
    work(8.0, 0.5).await;
    (status(!fails(0.01)), payload(2_000))
}

async fn catalog_price() -> (StatusCode, String) {
    work(3.0, 0.4).await;
    (StatusCode::OK, payload(40))
}

async fn cart(State(shop): State<Arc<Shop>>) -> (StatusCode, String) {
    work(4.0, 0.3).await;
    let price = shop.call(Service::Catalog, "GET", "/price", None).await;
    (status(price.ok()), payload(300))
}

async fn pay() -> (StatusCode, String) {
    work(40.0, 0.6).await;
    (status(!fails(0.05)), payload(100))
}

async fn publish(State(shop): State<Arc<Shop>>, Json(message): Json<QueuedMessage>) -> StatusCode {
    let mut queue = shop.queue.lock().unwrap();
    if queue.len() >= 10_000 {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    queue.push_back(message);
    StatusCode::OK
}

async fn poll(State(shop): State<Arc<Shop>>) -> Json<Vec<QueuedMessage>> {
    let mut queue = shop.queue.lock().unwrap();
    let n = queue.len().min(100);
    Json(queue.drain(..n).collect())
}

async fn browse(State(shop): State<Arc<Shop>>) -> (StatusCode, String) {
    work(2.0, 0.3).await;
    (status(shop.call(Service::Catalog, "GET", "/items", None).await.ok()), payload(3_000))
}

async fn buy(State(shop): State<Arc<Shop>>) -> (StatusCode, String) {
    let status = checkout(&shop).await;
    (status, payload(if status.is_success() { 1_000 } else { 200 }))
}

async fn checkout(shop: &Shop) -> StatusCode {
    // Fan-out: catalog and cart at once, in the same context.
    let (items, cart) = tokio::join!(
        shop.call(Service::Catalog, "GET", "/items", None),
        shop.call(Service::Cart, "GET", "/cart", None)
    );
    if !items.ok() || !cart.ok() {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    if !shop.call(Service::Payments, "POST", "/pay", Some(b"{}".to_vec())).await.ok() {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let mut headers = MessageHeaders::default();
    shop.instrument.send_message(None, &mut headers);
    let message = QueuedMessage {
        headers: headers.0.into_iter().map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned())).collect(),
        body: format!("order-{}", rand::rng().random::<u32>()),
    };
    let body = serde_json::to_vec(&message).expect("a message encodes");
    status(shop.call(Service::Queue, "POST", "/publish", Some(body)).await.ok())
}

async fn made(State(shop): State<Arc<Shop>>) -> Json<Vec<MadeEdge>> {
    Json(shop.made.edges())
}

/// Users: requests at the rate, each a new trace with a flow label.
async fn users(shop: Arc<Shop>, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / shop.args.rate.max(0.001)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut in_flight = tokio::task::JoinSet::new();
    let mut sent = 0u64;
    while shop.args.requests.is_none_or(|n| sent < n) {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => break,
        }
        sent += 1;
        let (path, flow) =
            if rand::rng().random_bool(0.3) { ("/buy", "checkout-page") } else { ("/browse", "browse-page") };
        let context = Context::new_root().with_flow(Flow::new(flow).expect("a valid label"));
        let shop = shop.clone();
        in_flight.spawn(context.scope(async move {
            shop.call(Service::Web, "GET", path, None).await;
        }));
        while in_flight.try_join_next().is_some() {}
    }
    while in_flight.join_next().await.is_some() {}
}

/// Shipping: takes orders off the queue; each is a messaging edge from its producer.
async fn shipping(shop: Arc<Shop>, stop: tokio_util::sync::CancellationToken) {
    loop {
        let answer = shop.call(Service::Queue, "GET", "/poll", None).await;
        let messages: Vec<QueuedMessage> = serde_json::from_slice(&answer.body).unwrap_or_default();
        let idle = messages.is_empty();
        for message in messages {
            let headers =
                MessageHeaders(message.headers.into_iter().map(|(k, v)| (k, v.into_bytes())).collect());
            work(1.0, 0.3).await;
            let error = fails(0.02);
            let incoming = shop.instrument.receive_message(&headers, error, Some(message.body.len() as u64));
            if let Some(hop) = &incoming.hop {
                let flow = incoming.context.flows.reported();
                shop.made.add(&hop.node, "shipping", "messaging", flow.as_deref(), error);
            }
        }
        if idle {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
                () = stop.cancelled() => return,
            }
        }
    }
}

#[derive(Serialize)]
struct Stopped<'a> {
    event: &'static str,
    service: &'a str,
    made: Vec<MadeEdge>,
    reporter: ReporterStats,
    propagation: PropagationStats,
}

async fn run(args: Args) -> anyhow::Result<()> {
    let service = args.service;
    let needs: &[Service] = match service {
        Service::Users => &[Service::Web],
        Service::Web => &[Service::Catalog, Service::Cart, Service::Payments, Service::Queue],
        Service::Cart => &[Service::Catalog],
        Service::Shipping => &[Service::Queue],
        _ => &[],
    };
    let shop_urls = [&args.web, &args.catalog, &args.cart, &args.payments, &args.queue];
    let all = [Service::Web, Service::Catalog, Service::Cart, Service::Payments, Service::Queue];
    for need in needs {
        let i = all.iter().position(|s| s == need).expect("a service with a URL");
        if shop_urls[i].is_none() {
            bail!("{} calls {}: give its URL with --{}", service.name(), need.name(), need.name());
        }
    }
    if !(0.0..=1.0).contains(&args.drop_context) {
        bail!("--drop-context is a share from 0 to 1, not {}", args.drop_context);
    }
    let instrument = Instrument::start(InstrumentConfig::new(service.name(), &args.peer)?)?;
    let client = tower::ServiceBuilder::new()
        .layer(instrument.client_layer())
        .service(Client::builder(TokioExecutor::new()).build_http());
    let shop = Arc::new(Shop {
        service,
        instrument: instrument.clone(),
        client,
        made: Made::default(),
        args,
        queue: Mutex::new(VecDeque::new()),
    });
    let stop = tokio_util::sync::CancellationToken::new();
    let on_signal = stop.clone();
    let signals = tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("listening for SIGTERM");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        on_signal.cancel();
    });

    if service == Service::Users {
        println!("{}", serde_json::json!({"event": "started", "service": service.name()}));
        users(shop.clone(), stop.clone()).await;
    } else {
        let routes = match service {
            Service::Web => Router::new().route("/browse", get(browse)).route("/buy", get(buy)),
            Service::Catalog => {
                Router::new().route("/items", get(catalog_items)).route("/price", get(catalog_price))
            }
            Service::Cart => Router::new().route("/cart", get(cart)),
            Service::Payments => Router::new().route("/pay", post(pay)),
            Service::Queue => Router::new().route("/publish", post(publish)).route("/poll", get(poll)),
            Service::Shipping | Service::Users => Router::new(),
        };
        // `/made` is added after the layer: asking it is not part of the shop's flow.
        let router =
            routes.layer(instrument.server_layer()).route("/made", get(made)).with_state(shop.clone());
        let listener = tokio::net::TcpListener::bind(shop.args.listen)
            .await
            .with_context(|| format!("listening on {}", shop.args.listen))?;
        let addr = listener.local_addr()?;
        println!(
            "{}",
            serde_json::json!({"event": "listening", "service": service.name(), "addr": addr.to_string()})
        );
        let background =
            (service == Service::Shipping).then(|| tokio::spawn(shipping(shop.clone(), stop.clone())));
        let serve_stop = stop.clone();
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { serve_stop.cancelled().await })
            .await?;
        if let Some(background) = background {
            background.await?;
        }
    }
    stop.cancel();
    signals.abort();
    let _ = signals.await;
    let reporter = instrument.shutdown().await;
    let stopped = Stopped {
        event: "stopped",
        service: service.name(),
        made: shop.made.edges(),
        reporter,
        propagation: instrument.propagation_stats(),
    };
    println!("{}", serde_json::to_string(&stopped)?);
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("shop: {error:#}");
            ExitCode::FAILURE
        }
    }
}
