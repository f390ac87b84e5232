//! The live picture at the edge: the drawing as JSON and SVG, its health colours and its
//! stability, the page and its assets, and the live stream of server-sent events.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use observatory_api::{Api, router};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::{TestPeer, default_limits, now_ms};

fn calls(from: &str, to: &str, count: u64, error: bool, latency_ms: f64) -> Value {
    json!({"from": from, "to": to, "ts": now_ms(), "count": count, "error": error, "latency_ms": latency_ms})
}

async fn send(peer: &TestPeer, events: Value) {
    let (status, answer) = peer.post("application/json", events.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

fn node<'a>(answer: &'a Value, name: &str) -> &'a Value {
    answer["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {answer}"))
}

fn edge<'a>(answer: &'a Value, from: &str, to: &str) -> &'a Value {
    answer["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["from"] == from && e["to"] == to)
        .unwrap_or_else(|| panic!("{from} -> {to} in {answer}"))
}

#[tokio::test]
async fn the_drawing_is_coloured_by_health_and_keeps_its_places() {
    let peer = TestPeer::new(default_limits());
    send(
        &peer,
        json!([
            calls("web", "checkout", 100, false, 20.0),
            calls("checkout", "payments", 90, false, 3000.0),
            calls("checkout", "payments", 10, true, 3000.0),
            calls("checkout", "stock", 98, false, 5.0),
            calls("checkout", "stock", 2, true, 5.0)
        ]),
    )
    .await;
    let (status, drawn) = peer.get("/api/v1/layout?window=5m").await;
    assert_eq!(status, StatusCode::OK, "{drawn}");
    assert_eq!(drawn["window"]["length"], "5m");
    assert_eq!(edge(&drawn, "web", "checkout")["health"], "good");
    assert_eq!(edge(&drawn, "checkout", "stock")["health"], "warn", "2% errors: over ui.error_ratio_warn");
    assert_eq!(edge(&drawn, "checkout", "payments")["health"], "bad", "10% errors and p99 3 s");
    assert_eq!(node(&drawn, "payments")["health"], "bad");
    assert_eq!(node(&drawn, "web")["health"], "good", "a caller only is coloured by what it sends");
    assert_eq!(edge(&drawn, "web", "checkout")["calls"], 100);
    assert_eq!(edge(&drawn, "web", "checkout")["direction"], "forward");
    let (web, checkout) = (node(&drawn, "web"), node(&drawn, "checkout"));
    assert!(web["x"].as_f64().unwrap() < checkout["x"].as_f64().unwrap(), "callers to the left");
    let points = edge(&drawn, "web", "checkout")["points"].as_array().unwrap().clone();
    assert_eq!(points.len(), 2, "adjacent ranks: no bend");

    // A new service: the nodes drawn before stay where they were.
    send(&peer, json!([calls("payments", "ledger", 5, false, 2.0)])).await;
    let (_, again) = peer.get("/api/v1/layout?window=5m").await;
    for name in ["web", "checkout", "payments", "stock"] {
        assert_eq!(
            (&node(&again, name)["x"], &node(&again, name)["y"]),
            (&node(&drawn, name)["x"], &node(&drawn, name)["y"]),
            "{name}"
        );
    }
    assert!(node(&again, "ledger")["x"].as_f64().unwrap() > node(&again, "payments")["x"].as_f64().unwrap());
    let (status, fresh) = peer.get("/api/v1/layout?window=5m&fresh=true").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fresh["nodes"].as_array().unwrap().len(), 5);

    for (uri, needle) in [
        ("/api/v1/layout?window=soon", "window"),
        ("/api/v1/layout?fresh=maybe", "fresh"),
        ("/api/v1/layout?zoom=2", "zoom"),
        ("/api/v1/live?window=60d", "window"),
    ] {
        let (status, answer) = peer.get(uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {answer}");
        assert!(answer.to_string().contains(needle), "{uri} names {needle}: {answer}");
    }
}

#[tokio::test]
async fn big_graphs_collapse_into_groups_with_exact_sums() {
    let mut limits = default_limits();
    limits.picture.group_above = 3;
    let peer = TestPeer::new(limits);
    send(
        &peer,
        json!([
            calls("web", "checkout-api", 10, false, 20.0),
            calls("web", "checkout-db", 5, true, 2.0),
            calls("checkout-api", "payments-a", 7, false, 300.0),
            calls("checkout-api", "payments-b", 3, false, 900.0),
            calls("checkout-db", "payments-a", 1, false, 1.0)
        ]),
    )
    .await;
    let (status, grouped) = peer.get("/api/v1/layout?window=5m").await;
    assert_eq!(status, StatusCode::OK, "{grouped}");
    let names: Vec<&str> =
        grouped["nodes"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["checkout-*", "payments-*", "web"], "five nodes, over group_above: grouped by prefix");
    assert_eq!(node(&grouped, "checkout-*")["members"], 2);
    assert_eq!(node(&grouped, "checkout-*")["shape"], "group");
    assert!(node(&grouped, "web").get("members").is_none(), "a group of one is that node");
    let into = edge(&grouped, "web", "checkout-*");
    assert_eq!(
        (into["calls"].as_u64(), into["errors"].as_u64()),
        (Some(15), Some(5)),
        "sums of what it collapses"
    );
    let out = edge(&grouped, "checkout-*", "payments-*");
    assert_eq!(out["calls"], 11);
    let p99 = out["latency_ms"]["p99"].as_f64().unwrap();
    assert!((850.0..=950.0).contains(&p99), "the merged histogram's p99 is the slow calls' ({p99})");

    let (_, open) = peer.get("/api/v1/layout?window=5m&expand=checkout-*").await;
    let names: Vec<&str> =
        open["nodes"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["checkout-api", "checkout-db", "payments-*", "web"],
        "an expanded group shows its nodes"
    );
    let (_, plain) = peer.get("/api/v1/layout?window=5m&group=off").await;
    assert_eq!(plain["nodes"].as_array().unwrap().len(), 5);
    let (status, bad) = peer.get("/api/v1/layout?group=some").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(bad.to_string().contains("group"), "{bad}");
}

#[tokio::test]
async fn an_edge_latency_histogram_is_the_merged_counters() {
    let peer = TestPeer::new(default_limits());
    send(
        &peer,
        json!([calls("web", "checkout", 90, false, 5.0), calls("web", "checkout", 10, false, 480.0)]),
    )
    .await;
    let (status, answer) = peer.get("/api/v1/edges/web/checkout/latency?window=5m").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["samples"], 100);
    let counters = answer["counters"].as_array().unwrap();
    assert_eq!(counters.len(), 2, "two latencies, two counters: {answer}");
    let holds =
        |c: &Value, ms: f64| c["low_ms"].as_f64().unwrap() <= ms && ms <= c["high_ms"].as_f64().unwrap();
    assert!(holds(&counters[0], 5.0) && counters[0]["count"] == 90, "{answer}");
    assert!(holds(&counters[1], 480.0) && counters[1]["count"] == 10, "{answer}");
    let (status, missing) = peer.get("/api/v1/edges/web/nowhere/latency").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
    let (status, bad) = peer.get("/api/v1/edges/web/checkout/latency?kind=rpc").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
}

#[tokio::test]
async fn the_svg_and_the_page_are_served_with_relative_urls() {
    let peer = TestPeer::new(default_limits());
    send(
        &peer,
        json!([calls("web", "checkout", 10, false, 20.0), calls("checkout", "orders<db>", 10, false, 2.0)]),
    )
    .await;
    let response = peer
        .app
        .clone()
        .oneshot(Request::get("/graph.svg?window=5m").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "image/svg+xml; charset=utf-8");
    let svg = String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(svg.starts_with("<svg"), "{svg}");
    assert!(svg.contains(">web<") && svg.contains("orders&lt;db&gt;"), "names drawn and escaped");
    assert!(svg.contains("flow over the last 5m"), "the title says the window");

    let (status, page) = peer.get("/").await;
    assert_eq!(status, StatusCode::OK);
    let page = page.as_str().unwrap();
    for needle in ["src=\"ui/app.js\"", "href=\"ui/app.css\"", "<noscript>", "src=\"graph.svg?window=5m\""] {
        assert!(page.contains(needle), "the page holds {needle}");
    }
    assert!(!page.contains("http://") && !page.contains("https://"), "nothing is fetched from outside");
    for (uri, kind) in [("/ui/app.js", "text/javascript"), ("/ui/app.css", "text/css")] {
        let response =
            peer.app.clone().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with(kind));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(!String::from_utf8_lossy(&body).contains("https://"), "{uri} fetches nothing from outside");
    }
}

/// The next server-sent event of `body` as (event, data), within a deadline.
async fn next_event(body: &mut Body, buffer: &mut String) -> (String, Value) {
    loop {
        if let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut event = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(name) = line.strip_prefix("event: ") {
                    event = name.to_string();
                } else if let Some(text) = line.strip_prefix("data: ") {
                    data.push_str(text);
                }
            }
            if event.is_empty() {
                continue; // a keep-alive comment
            }
            return (event, serde_json::from_str(&data).unwrap_or(Value::String(data)));
        }
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("an event within 10 s")
            .expect("the stream goes on")
            .expect("a frame");
        if let Ok(bytes) = frame.into_data() {
            buffer.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
}

#[tokio::test]
async fn the_live_stream_sends_the_graph_then_only_what_changed() {
    let mut limits = default_limits();
    limits.picture.live_interval = Duration::from_millis(50);
    limits.picture.live_streams_max = 1;
    let peer = TestPeer::new(limits.clone());
    send(&peer, json!([calls("web", "checkout", 10, false, 20.0)])).await;
    let response = peer
        .app
        .clone()
        .oneshot(Request::get("/api/v1/live?window=1m").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let mut buffer = String::new();
    let (event, graph) = next_event(&mut body, &mut buffer).await;
    assert_eq!(event, "graph");
    assert_eq!(graph["edges"][0]["from"], "web");
    assert!(graph["nodes"][0]["x"].is_number());

    let (status, refused) = peer.get("/api/v1/live").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "one stream at most: {refused}");
    assert!(refused.to_string().contains("ui.live_streams_max"));

    // Nothing new: figures events (the rate may still move as the window slides, so a
    // row for the one edge may come, never a whole graph).
    let (event, quiet) = next_event(&mut body, &mut buffer).await;
    assert_eq!(event, "figures");
    assert!(quiet["edges"].as_array().unwrap().iter().all(|row| row[0] == 0 && row[2] == 0), "{quiet}");
    // Errors on the edge: its health and figures change.
    send(&peer, json!([calls("web", "checkout", 10, true, 20.0)])).await;
    let changed = loop {
        let (event, data) = next_event(&mut body, &mut buffer).await;
        assert_eq!(event, "figures");
        if data["edges"] != json!([]) {
            break data;
        }
    };
    let row = &changed["edges"][0];
    assert_eq!(row[0], 0, "the index into the graph event's edges");
    assert_eq!(row[2], 0.5, "the error ratio");
    assert_eq!(row[5], 3, "health: bad");
    // A new edge: a whole graph again.
    send(&peer, json!([calls("checkout", "payments", 3, false, 20.0)])).await;
    let graph = loop {
        let (event, data) = next_event(&mut body, &mut buffer).await;
        if event == "graph" {
            break data;
        }
    };
    assert_eq!(graph["edges"].as_array().unwrap().len(), 2);
    // Another client tidies: the stream sends the new places, though no edge changed.
    let (status, _) = peer.get("/api/v1/layout?window=1m&fresh=true").await;
    assert_eq!(status, StatusCode::OK);
    let mut events = Vec::new();
    while events.len() < 10 {
        let (event, _) = next_event(&mut body, &mut buffer).await;
        if event == "graph" {
            break;
        }
        events.push(event);
    }
    assert!(events.len() < 10, "a graph event after the tidy: {events:?}");
    drop(body);

    // A stream ends when the edge shuts down.
    let shutdown = tokio_util::sync::CancellationToken::new();
    let app = router(Api::with_shutdown(peer.peer.clone(), limits, shutdown.clone()));
    let response = app.oneshot(Request::get("/api/v1/live").body(Body::empty()).unwrap()).await.unwrap();
    let mut body = response.into_body();
    let mut buffer = String::new();
    assert_eq!(next_event(&mut body, &mut buffer).await.0, "graph");
    shutdown.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(frame) = body.frame().await {
            frame.expect("a frame");
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream ended after the shutdown");
}
