//! The layers over real sockets and the reporter against a fake peer: who reports what,
//! the trace and the flows going on through a service, retries, drops and flushing.

use std::time::Duration;

use axum::extract::Extension;
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use observatory_instrument::{
    Context, Flow, Incoming, Instrument, InstrumentConfig, Kind, MessageHeaders, ReporterConfig, current,
};
use tower::{Service, ServiceBuilder, ServiceExt};

use crate::support::{fake_peer, serve};

type Http = Client<HttpConnector, Empty<Bytes>>;

fn instrument(service: &str, peer_url: &str) -> Instrument {
    let mut config = InstrumentConfig::new(service, peer_url).unwrap();
    config.reporter.flush_interval = Duration::from_millis(20);
    Instrument::start(config).unwrap()
}

fn http_client() -> Http {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn get_text<S>(client: &mut S, url: &str) -> (StatusCode, String)
where
    S: Service<Request<Empty<Bytes>>, Response = http::Response<hyper::body::Incoming>> + Send,
    S::Error: std::fmt::Debug,
{
    let request = Request::get(url).body(Empty::new()).unwrap();
    let response = client.ready().await.unwrap().call(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Seen {
    trace_id: String,
    flows: Vec<String>,
    caller: Option<String>,
}

fn seen(incoming: &Incoming) -> Seen {
    Seen {
        trace_id: incoming.context.trace.trace_id.to_string(),
        flows: incoming.context.flows.labels().iter().map(|f| f.to_string()).collect(),
        caller: incoming.hop.as_ref().map(|h| h.node.to_string()),
    }
}

#[tokio::test]
async fn calls_through_a_service_report_each_edge_once_and_keep_the_trace() {
    let (peer, url) = fake_peer().await;

    let inventory = instrument("inventory", &url);
    let inventory_app = Router::new()
        .route("/item", get(|Extension(incoming): Extension<Incoming>| async move { Json(seen(&incoming)) }))
        .route("/fail", get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "no") }))
        .route("/missing", get(|| async { (StatusCode::NOT_FOUND, "none") }))
        .layer(inventory.server_layer());
    let inventory_addr = serve(inventory_app).await;

    let checkout = instrument("checkout", &url);
    let client = ServiceBuilder::new().layer(checkout.client_layer()).service(http_client());
    let checkout_app = Router::new()
        .route(
            "/buy",
            get(move || {
                let mut client = client.clone();
                async move {
                    let (_, body) = get_text(&mut client, &format!("http://{inventory_addr}/item")).await;
                    let (status, _) = get_text(&mut client, &format!("http://{inventory_addr}/fail")).await;
                    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
                    let (status, _) =
                        get_text(&mut client, &format!("http://{inventory_addr}/missing")).await;
                    assert_eq!(status, StatusCode::NOT_FOUND);
                    let own = current().expect("the handler runs in the request's context");
                    let inner: Seen = serde_json::from_str(&body).unwrap();
                    assert_eq!(
                        inner.trace_id,
                        own.trace.trace_id.to_string(),
                        "inventory continues the trace"
                    );
                    body
                }
            }),
        )
        .layer(checkout.server_layer());
    let checkout_addr = serve(checkout_app).await;

    let web = instrument("web", &url);
    let mut web_client = ServiceBuilder::new().layer(web.client_layer()).service(http_client());
    let entry = Context::new_root().with_flow(Flow::new("checkout-page").unwrap());
    let entry_trace = entry.trace.trace_id.to_string();
    let (status, body) =
        entry.scope(async { get_text(&mut web_client, &format!("http://{checkout_addr}/buy")).await }).await;
    assert_eq!(status, StatusCode::OK);
    let deep: Seen = serde_json::from_str(&body).unwrap();
    assert_eq!(deep.trace_id, entry_trace, "two hops down, the same trace");
    assert_eq!(deep.flows, ["checkout-page"], "the flow label travels");
    assert_eq!(deep.caller.as_deref(), Some("checkout"), "the callee knows its caller");

    let events = peer.wait_for(4).await;
    let mut edges: Vec<(String, String, bool)> =
        events.iter().map(|e| (e.from.clone(), e.to.clone(), e.error)).collect();
    edges.sort();
    assert_eq!(
        edges,
        [
            ("checkout".into(), "inventory".into(), false),
            ("checkout".into(), "inventory".into(), false),
            ("checkout".into(), "inventory".into(), true),
            ("web".into(), "checkout".into(), false),
        ],
        "one event per call, named by the callee, 5xx failed and 4xx not"
    );
    for event in &events {
        assert_eq!(event.kind, "request");
        assert_eq!(event.flow.as_deref(), Some("checkout-page"), "every hop reports the entry's flow");
        assert_eq!(
            event.context.as_deref(),
            Some("continued"),
            "every call went on in its request's context"
        );
        assert!(event.latency_ms > 0.0);
        assert!(event.bytes.is_some(), "content lengths are known: {event:?}");
    }
    let outer = events.iter().find(|e| e.from == "web").unwrap();
    let inner = events.iter().filter(|e| e.from == "checkout").map(|e| e.latency_ms).fold(0.0, f64::max);
    assert!(outer.latency_ms >= inner, "the caller waited for its callees");

    let stats = inventory.propagation_stats();
    assert_eq!((stats.inbound_with_context, stats.inbound_named, stats.inbound_without_context), (3, 3, 0));
    assert_eq!(checkout.propagation_stats().outbound_without_context, 0);
    assert_eq!(web.propagation_stats().outbound_without_context, 0, "web called inside its scope");
    for instrument in [&inventory, &checkout, &web] {
        let stats = instrument.shutdown().await;
        assert_eq!(stats.dropped, 0);
        assert_eq!(stats.accepted, stats.recorded);
    }
}

#[tokio::test]
async fn calls_outside_a_context_and_to_unnamed_callees_are_told_apart() {
    let (peer, url) = fake_peer().await;
    // A server without the layer: it does not name itself.
    let plain = serve(Router::new().route("/", get(|| async { "plain" }))).await;
    let named = instrument("named", &url);
    let named_addr = serve(Router::new().route("/", get(|| async { "x" })).layer(named.server_layer())).await;

    let caller = instrument("caller", &url);
    let mut client = ServiceBuilder::new().layer(caller.client_layer()).service(http_client());
    get_text(&mut client, &format!("http://{plain}/")).await;
    get_text(&mut client, &format!("http://localhost:{}/", named_addr.port())).await;
    let events = peer.wait_for(2).await;
    let mut tos: Vec<&str> = events.iter().map(|e| e.to.as_str()).collect();
    tos.sort();
    assert_eq!(tos, ["127.0.0.1", "named"], "the host names a callee that does not name itself");
    assert!(events.iter().all(|e| e.context.as_deref() == Some("started") && e.flow.is_none()), "{events:?}");
    assert_eq!(caller.propagation_stats().outbound_without_context, 2);
    // The named server saw a context (a new trace the caller started) and its sender.
    assert_eq!(named.propagation_stats().inbound_named, 1);

    // A request from something without the library has no context.
    let mut bare = http_client();
    get_text(&mut bare, &format!("http://{named_addr}/")).await;
    assert_eq!(named.propagation_stats().inbound_without_context, 1);
    // The callee reports that call itself, from the entry node: nobody else will.
    let events = peer.wait_for(3).await;
    let missing: Vec<_> = events.iter().filter(|e| e.context.as_deref() == Some("missing")).collect();
    assert_eq!(missing.len(), 1, "{events:?}");
    assert_eq!(
        (missing[0].from.as_str(), missing[0].to.as_str(), missing[0].error),
        ("user", "named", false)
    );
    caller.shutdown().await;
    named.shutdown().await;
}

#[tokio::test]
async fn a_consumer_reports_the_messaging_edge_with_the_transit_time() {
    let (peer, url) = fake_peer().await;
    let producer = instrument("orders", &url);
    let consumer = instrument("shipping", &url);
    let entry = Context::new_root().with_flow(Flow::new("tenant=acme").unwrap());
    let mut message = MessageHeaders::default();
    producer.send_message(Some(&entry), &mut message);
    tokio::time::sleep(Duration::from_millis(30)).await;
    let incoming = consumer.receive_message(&message, false, Some(42));
    assert_eq!(incoming.context.trace.trace_id, entry.trace.trace_id);
    assert_eq!(incoming.context.flows, entry.flows);
    let events = peer.wait_for(1).await;
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(
        (event.from.as_str(), event.to.as_str(), event.kind.as_str()),
        ("orders", "shipping", "messaging")
    );
    assert!(event.latency_ms >= 30.0, "transit time {}", event.latency_ms);
    assert_eq!(event.bytes, Some(42));
    // A message from a producer without the library names nobody and is not reported.
    consumer.receive_message(&MessageHeaders::default(), false, None);
    assert_eq!(consumer.propagation_stats().messages_unnamed, 1);
    producer.shutdown().await;
    assert_eq!(consumer.shutdown().await.accepted, 1);
}

#[tokio::test]
async fn the_reporter_retries_until_the_peer_takes_its_reports() {
    let (peer, url) = fake_peer().await;
    peer.fail_first.store(3, std::sync::atomic::Ordering::SeqCst);
    let mut config = InstrumentConfig::new("svc", &url).unwrap();
    config.reporter.flush_interval = Duration::from_millis(10);
    config.reporter.retry_min = Duration::from_millis(10);
    let svc = Instrument::start(config).unwrap();
    for _ in 0..5 {
        svc.record_call(
            "db",
            Kind::Database,
            std::time::SystemTime::now(),
            Duration::from_millis(2),
            false,
            None,
        );
    }
    let events = peer.wait_for(5).await;
    assert_eq!(events.len(), 5);
    assert!(events.iter().all(|e| e.kind == "database" && (e.latency_ms - 2.0).abs() < 1e-9));
    let stats = svc.shutdown().await;
    assert_eq!((stats.recorded, stats.accepted, stats.dropped, stats.posts_failed), (5, 5, 0, 3));
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_and_tells_the_peer() {
    // Nothing listens here: every post fails until shutdown gives up.
    let unreachable = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let mut config = ReporterConfig::new(format!("http://{unreachable}"));
    config.queue_max = 4;
    config.batch_max = 2;
    config.retry_min = Duration::from_millis(5);
    config.shutdown_timeout = Duration::from_millis(200);
    let svc = Instrument::start(observatory_instrument::InstrumentConfig {
        service: observatory_instrument::ServiceName::new("svc").unwrap(),
        reporter: config,
        entry_node: "user".into(),
    })
    .unwrap();
    for _ in 0..10 {
        svc.record_call("x", Kind::Request, std::time::SystemTime::now(), Duration::ZERO, false, None);
    }
    let before = svc.reporter_stats();
    assert!(before.dropped >= 4, "at most the queue and one batch are held: {before:?}");
    let stats = svc.shutdown().await;
    assert_eq!((stats.recorded, stats.accepted, stats.dropped, stats.queued), (10, 0, 10, 0), "{stats:?}");
    assert!(stats.posts_failed >= 1);

    // Against a peer, later posts carry how many were dropped.
    let (peer, url) = fake_peer().await;
    let mut config = InstrumentConfig::new("dropper", &url).unwrap();
    config.reporter.queue_max = 2;
    config.reporter.flush_interval = Duration::from_secs(3600);
    let svc = Instrument::start(config).unwrap();
    for _ in 0..5 {
        svc.record_call("x", Kind::Request, std::time::SystemTime::now(), Duration::ZERO, false, None);
    }
    let stats = svc.shutdown().await;
    assert_eq!((stats.accepted, stats.dropped), (2, 3), "shutdown flushes what was queued");
    assert_eq!(peer.dropped_header.lock().unwrap().as_slice(), [("dropper".to_string(), 3)]);
}

#[tokio::test]
async fn a_service_named_beyond_ascii_still_reports() {
    let (peer, url) = fake_peer().await;
    let svc = instrument("café ☕", &url);
    svc.record_call(
        "db",
        Kind::Database,
        std::time::SystemTime::now(),
        Duration::from_millis(1),
        false,
        None,
    );
    let events = peer.wait_for(1).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].from, "café ☕");
    let stats = svc.shutdown().await;
    assert_eq!((stats.accepted, stats.posts_failed), (1, 0));
    assert_eq!(peer.dropped_header.lock().unwrap()[0].0, "caf%C3%A9 %E2%98%95");
}

#[test]
fn starting_outside_a_runtime_or_with_a_bad_url_says_why() {
    let error = Instrument::start(InstrumentConfig::new("svc", "http://127.0.0.1:1").unwrap()).unwrap_err();
    assert!(error.to_string().contains("tokio runtime"), "{error}");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _guard = runtime.enter();
    let error = Instrument::start(InstrumentConfig::new("svc", "127.0.0.1:7070").unwrap()).unwrap_err();
    assert!(error.to_string().contains("peer_url"), "{error}");
    let error = InstrumentConfig::new("", "http://x").unwrap_err();
    assert!(error.to_string().contains("1 to 100 bytes"), "{error}");
}
