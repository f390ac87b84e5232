//! Context across libraries: a Rust service instrumented with observatory-instrument
//! calls a Python service instrumented with the OpenTelemetry SDK from PyPI (its default
//! W3C propagators), which calls a second Rust service. The trace goes on through all
//! three in both directions, the flow labels survive the Python hop, and the Rust callee
//! does not take our baggage member, passed on by Python, for its caller's.
//!
//! Uses the venv of the `otel` test (skips, saying why, where it cannot be made).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use axum::extract::Extension;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use observatory_instrument::{Context, Flow, Incoming, Instrument, InstrumentConfig};
use serde_json::{Value, json};
use tower::{Service, ServiceBuilder, ServiceExt};

/// The Rust callee's view of a request: what came in.
fn seen(incoming: &Incoming) -> Value {
    json!({
        "trace_id": incoming.context.trace.trace_id.to_string(),
        "parent": incoming.parent.map(|p| p.to_string()),
        "caller": incoming.hop.as_ref().map(|h| h.node.to_string()),
        "member_forwarded": incoming.member_forwarded,
        "flows": incoming.context.flows.labels().iter().map(|f| f.to_string()).collect::<Vec<_>>(),
    })
}

async fn get_json<S>(client: &mut S, url: &str) -> Value
where
    S: Service<http::Request<Empty<Bytes>>, Response = http::Response<hyper::body::Incoming>>,
    S::Error: std::fmt::Debug,
{
    let request = http::Request::get(url).body(Empty::new()).unwrap();
    let response = client.ready().await.unwrap().call(request).await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{url}: {e}: {}", String::from_utf8_lossy(&body)))
}

#[test]
fn traces_go_on_between_our_library_and_the_opentelemetry_python_sdk() {
    let Some(python) = crate::otel::python_with_packages() else { return };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/otel/propagation.py");
    let mut service = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting the Python service");
    let mut stdout = BufReader::new(service.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).expect("the Python service's port line");
    let port = serde_json::from_str::<Value>(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))["port"]
        .as_u64()
        .expect("a port");
    let python_url = format!("http://127.0.0.1:{port}");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // Nothing listens on port 9 (discard): reports are dropped; propagation is the point.
        let mut config = InstrumentConfig::new("rust-callee", "http://127.0.0.1:9").unwrap();
        config.reporter.shutdown_timeout = Duration::from_millis(50);
        let callee = Instrument::start(config).unwrap();
        let app = axum::Router::new()
            .route(
                "/echo",
                get(|Extension(incoming): Extension<Incoming>| async move { axum::Json(seen(&incoming)) }),
            )
            .layer(callee.server_layer());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_url = format!("http://{}/echo", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let mut config = InstrumentConfig::new("rust-caller", "http://127.0.0.1:9").unwrap();
        config.reporter.shutdown_timeout = Duration::from_millis(50);
        let caller = Instrument::start(config).unwrap();
        let mut client = ServiceBuilder::new()
            .layer(caller.client_layer())
            .service(Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>());

        // Ours -> Python -> ours.
        let root = Context::new_root().with_flow(Flow::new("tenant=acme").unwrap());
        let root_trace = root.trace.trace_id.to_string();
        let hop = format!("{python_url}/hop?next={echo_url}");
        let answer = root.scope(get_json(&mut client, &hop)).await;
        assert_eq!(answer["remote_trace_id"], root_trace.as_str(), "the SDK continues our trace: {answer}");
        assert_eq!(answer["trace_id"], root_trace.as_str(), "{answer}");
        assert!(answer["baggage"]["obs"].as_str().is_some_and(|m| m.starts_with("rust-caller~")), "{answer}");
        let echo = &answer["next"];
        assert_eq!(echo["trace_id"], root_trace.as_str(), "and we continue the SDK's: {echo}");
        assert_ne!(echo["parent"], answer["remote_parent_id"], "the parent is Python's own span: {echo}");
        assert_eq!(echo["caller"], Value::Null, "Python sent this request, not rust-caller: {echo}");
        assert_eq!(echo["member_forwarded"], true, "{echo}");
        assert_eq!(echo["flows"], json!(["tenant=acme"]), "the flow survives the SDK's re-encoding: {echo}");

        // Python starts the trace -> ours continues it.
        let mut bare = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let answer = get_json(&mut bare, &hop).await;
        assert_eq!(answer["remote_trace_id"], Value::Null, "{answer}");
        let python_trace = answer["trace_id"].as_str().expect("the SDK's trace id").to_string();
        assert_eq!(answer["next"]["trace_id"], python_trace.as_str(), "we continue a trace the SDK began");
        assert_eq!(answer["next"]["caller"], Value::Null);

        caller.shutdown().await;
        callee.shutdown().await;
        server.abort();
    });
    drop(service.stdin.take().map(|mut stdin| stdin.flush()));
    let _ = service.wait();
}
