use axum::http::StatusCode;
use observatory_api::PeerApi;
use serde_json::json;

use crate::{TestPeer, default_limits, now_ms};

#[tokio::test]
async fn window_and_at_choose_what_is_read() {
    let peer = TestPeer::new(default_limits());
    let now = now_ms();
    let old = now - 10 * 60 * 1000;
    let body = json!([
        {"from": "a", "to": "b", "ts": old, "count": 3},
        {"from": "a", "to": "b", "ts": now},
    ]);
    let (status, _) = peer.post("application/json", body.to_string()).await;
    assert_eq!(status, StatusCode::OK);

    let (_, recent) = peer.get("/api/v1/graph?window=1m").await;
    assert_eq!(recent["edges"][0]["calls"], 1, "{recent}");
    assert_eq!(recent["window"]["resolution"], "10s");
    let (_, all) = peer.get("/api/v1/graph?window=15m").await;
    assert_eq!(all["edges"][0]["calls"], 4, "{all}");
    let (_, day) = peer.get("/api/v1/graph?window=24h").await;
    assert_eq!(day["window"]["resolution"], "1m");
    assert_eq!(day["edges"][0]["calls"], 4);
    let (_, week) = peer.get("/api/v1/graph?window=7d").await;
    assert_eq!(week["window"]["resolution"], "1h");

    // A one-minute window ending just after the old events sees only them.
    let at = old + 30_000;
    let (_, past) = peer.get(&format!("/api/v1/graph?window=1m&at={at}")).await;
    assert_eq!(past["edges"][0]["calls"], 3, "{past}");

    for (uri, param) in [
        ("/api/v1/graph?window=60d", "window"),
        ("/api/v1/graph?window=soon", "window"),
        ("/api/v1/graph?window=5m&at=noon", "at"),
    ] {
        let (status, answer) = peer.get(uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {answer}");
        assert_eq!(answer["error"]["param"], param, "{uri}: {answer}");
    }
    let (status, answer) = peer.get("/api/v1/graph?windw=5m").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "unknown parameters are refused: {answer}");
}

#[tokio::test]
async fn edge_series_steps_sum_to_the_window() {
    let peer = TestPeer::new(default_limits());
    let now = now_ms();
    let events: Vec<_> = (0..12)
        .map(|i| json!({"from": "a b", "to": "c/d", "ts": now - i * 60_000, "latency_ms": i, "error": i % 3 == 0}))
        .collect();
    let (status, answer) = peer.post("application/json", json!(events).to_string()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["accepted"], 12, "{answer}");

    let (status, series) = peer.get("/api/v1/edges/a%20b/c%2Fd?window=15m&step=1m").await;
    assert_eq!(status, StatusCode::OK, "{series}");
    let points = series["points"].as_array().unwrap();
    assert_eq!(points.len(), 15);
    let calls: u64 = points.iter().map(|p| p["calls"].as_u64().unwrap()).sum();
    let errors: u64 = points.iter().map(|p| p["errors"].as_u64().unwrap()).sum();
    assert_eq!((calls, errors), (12, 4));
    assert_eq!(points.last().unwrap()["calls"], 1, "the newest step holds the newest event");

    let (status, answer) = peer.get("/api/v1/edges/a%20b/c%2Fd?window=15m&step=7s").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["param"], "step");
    let (status, _) = peer.get("/api/v1/edges/nobody/nowhere?window=15m").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn status_and_health() {
    let peer = TestPeer::new(default_limits());
    let (status, body) = peer.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "ok\n");
    let (_, answer) = peer.post("application/json", r#"[{"from":"a","to":"b"},{"from":"b","to":"c"}]"#).await;
    assert_eq!(answer["accepted"], 2);
    let (status, s) = peer.get("/api/v1/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s["peer_id"], peer.peer.info().peer_id.as_str());
    assert_eq!((s["nodes"].as_u64(), s["edges"].as_u64()), (Some(3), Some(2)));
    assert_eq!(s["cells"], 8, "two edges at four resolutions: {s}");
    assert_eq!(s["incarnation"], 1);
    assert_eq!(s["settings_fingerprint"].as_str().unwrap().len(), 16);
    assert!(s["store_bytes"].as_u64().unwrap() > 0);
    let (status, _) = peer.get("/api/v1/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn flows_and_propagation_marks_from_events_to_answers() {
    let peer = TestPeer::new(default_limits());
    let now = now_ms();
    let mut events = vec![
        json!({"from": "users", "to": "web", "ts": now, "flow": "checkout-page", "context": "continued", "count": 40}),
        json!({"from": "web", "to": "cart", "ts": now, "flow": "checkout-page", "context": "continued", "count": 40}),
        json!({"from": "cart", "to": "catalog", "ts": now, "flow": "checkout-page", "context": "continued", "count": 28}),
        json!({"from": "cart", "to": "catalog", "ts": now, "context": "started", "count": 12}),
        json!({"from": "web", "to": "catalog", "ts": now, "flow": "browse-page", "count": 5}),
    ];
    // Wrong values are refused naming the field.
    events.push(json!({"from": "a", "to": "b", "context": "lost"}));
    events.push(json!({"from": "a", "to": "b", "flow": ""}));
    let (status, answer) = peer.post("application/json", json!(events).to_string()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["accepted"], 5, "{answer}");
    let fields: Vec<&str> =
        answer["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["context", "flow"], "{answer}");

    let (_, whole) = peer.get("/api/v1/graph?window=5m").await;
    let calls = |graph: &serde_json::Value, from: &str, to: &str| {
        graph["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["from"] == from && e["to"] == to)
            .map(|e| e["calls"].clone())
    };
    assert_eq!(calls(&whole, "cart", "catalog"), Some(json!(40)), "flows and marks summed: {whole}");
    assert_eq!(whole["edges"].as_array().unwrap().len(), 4, "{whole}");
    assert_eq!(whole["flows"], json!(["browse-page", "checkout-page"]));
    assert!(whole.get("flow").is_none());

    let (status, checkout) = peer.get("/api/v1/graph?window=5m&flow=checkout-page").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(checkout["flow"], "checkout-page");
    assert_eq!(calls(&checkout, "cart", "catalog"), Some(json!(28)), "{checkout}");
    assert_eq!(calls(&checkout, "web", "catalog"), None, "browse-page is another flow");
    let (_, nothing) = peer.get("/api/v1/graph?window=5m&flow=never-seen").await;
    assert_eq!(nothing["edges"], json!([]));
    let (status, bad) = peer.get("/api/v1/graph?window=5m&flow=").await;
    assert_eq!((status, bad["error"]["param"].clone()), (StatusCode::BAD_REQUEST, json!("flow")), "{bad}");

    let (status, verdicts) = peer.get("/api/v1/propagation?window=5m").await;
    assert_eq!(status, StatusCode::OK, "{verdicts}");
    assert_eq!(verdicts["entry_node"], "user");
    let first = &verdicts["nodes"][0];
    assert_eq!(
        (first["node"].clone(), first["verdict"].clone()),
        (json!("cart"), json!("drops context outbound")),
        "{verdicts}"
    );
    assert_eq!(first["outbound"], json!({"continued": 28, "started": 12, "missing": 0, "unknown": 0}));
    assert!(first["evidence"][0].as_str().unwrap().contains("12 of 40 calls (30%)"), "{first}");
    let (status, bad) = peer.get("/api/v1/propagation?window=never").await;
    assert_eq!((status, bad["error"]["param"].clone()), (StatusCode::BAD_REQUEST, json!("window")));
}
