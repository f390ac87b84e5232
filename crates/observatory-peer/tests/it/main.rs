//! The application layer at its boundary: a real peer (store, writer, correlator, mesh on
//! loopback) started from a configuration, asked through the real router, stopped by its
//! one stop signal and started again from the same data dir.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use observatory_api::{Api, ApiLimits};
use observatory_config::Config;
use observatory_peer::{Running, SystemClock};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// A peer on loopback ports of its own, with its data in `dir`, changed by `change`.
fn config(dir: &Path, change: impl FnOnce(&mut Config)) -> Config {
    let yaml = format!(
        "http: {{addr: 127.0.0.1:0}}\notlp: {{addr: null, grpc_addr: null}}\nstore: {{path: {}}}\n\
         mesh: {{listen: [/ip4/127.0.0.1/tcp/0], mdns: false}}\n",
        dir.display()
    );
    let mut config = Config::from_yaml(&yaml).expect("a valid config");
    change(&mut config);
    config.validate().expect("still valid");
    config
}

/// A started peer, its router and its stop signal.
struct TestPeer {
    api: axum::Router,
    stop: CancellationToken,
    run: tokio::task::JoinHandle<Result<(), observatory_peer::RunError>>,
    incarnation: u32,
}

async fn start(config: &Config) -> TestPeer {
    let running: Running =
        observatory_peer::start(config, Arc::new(SystemClock), "test").await.expect("the peer starts");
    let incarnation = running.listening.incarnation;
    let api = observatory_api::router(Api::new(running.peer.clone(), ApiLimits::from_config(config)));
    let stop = CancellationToken::new();
    let run = tokio::spawn(running.run_until(stop.clone()));
    TestPeer { api, stop, run, incarnation }
}

impl TestPeer {
    async fn request(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self.api.clone().oneshot(request).await.expect("router answers");
        let status = response.status();
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn post(&self, uri: &str, content_type: &str, body: String) -> (StatusCode, Value) {
        self.request(Request::post(uri).header("content-type", content_type).body(Body::from(body)).unwrap())
            .await
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.request(Request::get(uri).body(Body::empty()).unwrap()).await
    }

    async fn edges(&self) -> Vec<(String, String, u64)> {
        let (status, graph) = self.get("/api/v1/graph?window=15m").await;
        assert_eq!(status, StatusCode::OK, "{graph}");
        let mut edges: Vec<_> = graph["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .map(|e| {
                (
                    e["from"].as_str().unwrap().into(),
                    e["to"].as_str().unwrap().into(),
                    e["calls"].as_u64().unwrap(),
                )
            })
            .collect();
        edges.sort();
        edges
    }

    /// Stops it with its one stop signal and waits for every part to finish.
    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.run)
            .await
            .expect("the peer stops within 20 s")
            .expect("the run task")
            .expect("a clean stop");
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// An OTLP/JSON CLIENT span of `service` naming `peer_service`, with no SERVER half.
fn lone_client_span(service: &str, peer_service: &str) -> String {
    let start = (now_ms() - 1_000) as u64 * 1_000_000;
    json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"spans": [{
            "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b175", "name": "call",
            "kind": 3, "startTimeUnixNano": start.to_string(), "endTimeUnixNano": (start + 5_000_000).to_string(),
            "attributes": [{"key": "peer.service", "value": {"stringValue": peer_service}}]}]}]}]})
    .to_string()
}

#[tokio::test]
async fn acked_events_survive_a_clean_stop_and_the_restart_takes_a_new_incarnation() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config(dir.path(), |_| {});
    let peer = start(&config).await;
    let ts = now_ms();
    let body = format!(
        "{}\n{}\n",
        json!({"from": "web", "to": "checkout", "ts": ts, "latency_ms": 12, "count": 3}),
        json!({"from": "checkout", "to": "payments", "ts": ts, "error": true})
    );
    let (status, answer) = peer.post("/api/v1/events", "application/x-ndjson", body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["accepted"], 2);
    let before = peer.edges().await;
    assert_eq!(before, [("checkout".into(), "payments".into(), 1), ("web".into(), "checkout".into(), 3)]);
    assert_eq!(peer.incarnation, 1);
    peer.stop().await;

    let again = start(&config).await;
    assert_eq!(again.incarnation, 2, "a restart takes a new incarnation");
    assert_eq!(again.edges().await, before, "nothing acked is lost, nothing counted twice");
    let (_, status) = again.get("/api/v1/status").await;
    assert_eq!(status["origins"], 2, "the first run's and this one's: {status}");
    assert_eq!(status["version"], "test");
    again.stop().await;
}

#[tokio::test]
async fn the_correlation_task_gives_up_expired_halves_on_its_own_clock() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config(dir.path(), |c| {
        c.correlation.pending_ttl = Duration::from_millis(300);
        c.correlation.tick_interval = Duration::from_millis(50);
    });
    let peer = start(&config).await;
    let (status, answer) =
        peer.post("/v1/traces", "application/json", lone_client_span("cart", "billing")).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(peer.edges().await.is_empty(), "the half waits for its other half");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if peer.edges().await == [("cart".into(), "billing".into(), 1)] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no virtual edge after the TTL: {:?}",
            peer.edges().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, status) = peer.get("/api/v1/status").await;
    assert_eq!(status["correlation"]["edges_virtual"], 1, "{status}");
    assert_eq!(status["correlation"]["spans_pending"], 0, "{status}");
    peer.stop().await;
}

#[tokio::test]
async fn a_clean_stop_gives_up_waiting_halves_and_applies_them_before_the_writer_stops() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config(dir.path(), |c| c.correlation.pending_ttl = Duration::from_secs(3600));
    let peer = start(&config).await;
    let (status, _) = peer.post("/v1/traces", "application/json", lone_client_span("cart", "billing")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(peer.edges().await.is_empty());
    peer.stop().await;
    let again = start(&config).await;
    assert_eq!(
        again.edges().await,
        [("cart".into(), "billing".into(), 1)],
        "the half became its virtual edge"
    );
    again.stop().await;
}

#[tokio::test]
async fn status_and_peers_answer_for_the_running_mesh() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config(dir.path(), |_| {});
    let peer = start(&config).await;
    let (status, answer) = peer.get("/api/v1/status").await;
    assert_eq!(status, StatusCode::OK);
    let listen = answer["mesh"]["listen"].as_array().expect("the mesh's addresses");
    assert!(listen.iter().any(|a| a.as_str().unwrap().starts_with("/ip4/127.0.0.1/tcp/")), "{answer}");
    assert_eq!(answer["mesh"]["peers_known"], 0, "{answer}");
    let (status, peers) = peer.get("/api/v1/peers").await;
    assert_eq!(status, StatusCode::OK, "{peers}");
    assert_eq!(peers["coverage"]["complete"], true, "a peer alone holds everything: {peers}");
    assert_eq!(peers["peer_id"], answer["peer_id"]);
    peer.stop().await;
}

const OBJECTIVES: &str = "objectives:
  - name: payments-errors
    from: checkout
    to: payments
    window: 28d
    errors: { target: 99.9% }
";

/// An Alertmanager stand-in on loopback: keeps every body posted to `/api/v2/alerts`.
async fn alert_sink() -> (String, Arc<std::sync::Mutex<Vec<Value>>>) {
    let posted: Arc<std::sync::Mutex<Vec<Value>>> = Arc::default();
    let keep = posted.clone();
    let app = axum::Router::new().route(
        "/api/v2/alerts",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let keep = keep.clone();
            async move {
                keep.lock().unwrap().push(body);
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let url = format!("http://{}", listener.local_addr().expect("bound"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, posted)
}

async fn wait_for<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: not so within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_objectives_task_evaluates_and_sends_alerts_and_a_reload_changes_the_fingerprint() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("objectives.yaml");
    std::fs::write(&file, OBJECTIVES).expect("writing the objectives");
    let (sink, posted) = alert_sink().await;
    let unreachable = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        format!("http://{}", listener.local_addr().expect("bound"))
    };
    let config = config(dir.path(), |c| {
        c.objectives.files = vec![figment::value::magic::RelativePathBuf::from(file.clone())];
        c.objectives.eval_interval = Duration::from_secs(1);
        c.alerts.alertmanagers = vec![sink.clone(), unreachable];
        c.alerts.retry_min = Duration::from_millis(100);
    });
    let peer = start(&config).await;
    // Every call failed, 30 s ago (in a closed bucket).
    let ts = now_ms() - 30_000;
    let events = json!([{"from": "checkout", "to": "payments", "ts": ts, "error": true, "count": 50}]);
    let (status, answer) = peer.post("/api/v1/events", "application/json", events.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    let alerts = wait_for("the page reaches the Alertmanager", async || {
        let batches = posted.lock().unwrap().clone();
        batches
            .into_iter()
            .flat_map(|b| b.as_array().cloned().unwrap_or_default())
            .find(|a| a["labels"]["severity"] == "page")
    })
    .await;
    assert_eq!(alerts["labels"]["objective"], "payments-errors", "{alerts}");
    assert_eq!(alerts["labels"]["alertname"], "ObservatoryObjectiveBurn");
    assert!(alerts["generatorURL"].as_str().is_some_and(|u| u.starts_with("http://127.0.0.1:")), "{alerts}");
    let (_, answer) = peer.get("/api/v1/objectives").await;
    assert_eq!(answer["objectives"][0]["state"], "firing", "{answer}");
    assert_eq!(answer["sends"].as_array().map(Vec::len), Some(2), "page and ticket: {answer}");
    // The second Alertmanager refuses connections: counted, retried.
    let failed = wait_for("a failed send is counted", async || {
        let (_, answer) = peer.get("/api/v1/objectives").await;
        answer["sending"]["batches_failed"].as_u64().filter(|&n| n > 0)
    })
    .await;
    assert!(failed > 0);

    // A reload with another objective: a new fingerprint, told to the mesh too.
    let (_, before) = peer.get("/api/v1/objectives").await;
    std::fs::write(&file, OBJECTIVES.replace("99.9%", "99%")).expect("writing");
    let (status, reloaded) =
        peer.request(Request::post("/api/v1/objectives/reload").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{reloaded}");
    assert_ne!(reloaded["fingerprint"], before["fingerprint"]);
    let fingerprint = reloaded["fingerprint"].clone();
    wait_for("the mesh status carries the new fingerprint", async || {
        let (_, peers) = peer.get("/api/v1/peers").await;
        (peers["objectives"] == fingerprint).then_some(())
    })
    .await;
    peer.stop().await;
}

#[tokio::test]
async fn objectives_that_do_not_check_refuse_the_start_naming_the_file_and_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("objectives.yaml");
    std::fs::write(&file, OBJECTIVES.replace("window: 28d", "window: 90d")).expect("writing");
    let config = config(dir.path(), |c| {
        c.objectives.files = vec![figment::value::magic::RelativePathBuf::from(file.clone())];
    });
    let error = observatory_peer::start(&config, Arc::new(SystemClock), "test").await.expect_err("refused");
    let message = error.to_string();
    assert!(message.contains("objectives.yaml") && message.contains("window"), "{message}");
    assert!(message.contains("from 1h to 28d"), "{message}");
}
