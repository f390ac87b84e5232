//! A fake peer that takes `POST /api/v1/events` (CBOR) and remembers what came.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

/// One event as the fake peer decoded it.
#[derive(Debug, Clone, PartialEq)]
pub struct Got {
    pub from: String,
    pub to: String,
    pub kind: String,
    pub latency_ms: f64,
    pub error: bool,
    pub bytes: Option<u64>,
    pub ts: i64,
    pub flow: Option<String>,
    pub context: Option<String>,
}

#[derive(Debug, Default)]
pub struct FakePeer {
    pub events: Mutex<Vec<Got>>,
    /// Posts answered with 503 before the peer starts taking them.
    pub fail_first: AtomicUsize,
    pub posts: AtomicUsize,
    pub dropped_header: Mutex<Vec<(String, u64)>>,
}

impl FakePeer {
    pub fn events(&self) -> Vec<Got> {
        self.events.lock().unwrap().clone()
    }

    /// Waits until `n` events came (or the deadline passes) and returns them.
    pub async fn wait_for(&self, n: usize) -> Vec<Got> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.events.lock().unwrap().len() < n && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.events()
    }
}

fn text(map: &[(ciborium::Value, ciborium::Value)], key: &str) -> Option<ciborium::Value> {
    map.iter().find(|(k, _)| k.as_text() == Some(key)).map(|(_, v)| v.clone())
}

async fn take(State(peer): State<Arc<FakePeer>>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    peer.posts.fetch_add(1, Ordering::SeqCst);
    if peer.fail_first.load(Ordering::SeqCst) > 0 {
        peer.fail_first.fetch_sub(1, Ordering::SeqCst);
        return (StatusCode::SERVICE_UNAVAILABLE, "busy".into());
    }
    assert_eq!(headers.get("content-type").unwrap(), "application/cbor");
    let service = headers.get("observatory-reporter").unwrap().to_str().unwrap().to_string();
    let dropped: u64 =
        headers.get("observatory-reporter-dropped").unwrap().to_str().unwrap().parse().unwrap();
    peer.dropped_header.lock().unwrap().push((service, dropped));
    let value: ciborium::Value = ciborium::from_reader(&body[..]).unwrap();
    let array = value.into_array().unwrap();
    let n = array.len();
    for event in array {
        let map = event.into_map().unwrap();
        let got = Got {
            from: text(&map, "from").unwrap().into_text().unwrap(),
            to: text(&map, "to").unwrap().into_text().unwrap(),
            kind: text(&map, "kind").unwrap().into_text().unwrap(),
            latency_ms: text(&map, "latency_ms").unwrap().into_float().unwrap(),
            error: text(&map, "error").unwrap().into_bool().unwrap(),
            bytes: text(&map, "bytes").map(|b| u64::try_from(b.into_integer().unwrap()).unwrap()),
            ts: i64::try_from(text(&map, "ts").unwrap().into_integer().unwrap()).unwrap(),
            flow: text(&map, "flow").map(|f| f.into_text().unwrap()),
            context: text(&map, "context").map(|c| c.into_text().unwrap()),
        };
        peer.events.lock().unwrap().push(got);
    }
    (StatusCode::OK, format!(r#"{{"accepted":{n},"rejected":0,"errors":[]}}"#))
}

/// Serves a router on a loopback port; returns the address.
pub async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// Starts a fake peer; returns it and its base URL.
pub async fn fake_peer() -> (Arc<FakePeer>, String) {
    let peer = Arc::new(FakePeer::default());
    let router = Router::new().route("/api/v1/events", post(take)).with_state(peer.clone());
    let addr = serve(router).await;
    (peer, format!("http://{addr}"))
}
