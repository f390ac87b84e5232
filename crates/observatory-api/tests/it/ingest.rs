use axum::http::StatusCode;
use serde_json::{Value, json};

use observatory_api::ApiLimits;

use crate::{TestPeer, default_limits, now_ms};

fn edge<'a>(graph: &'a Value, from: &str, to: &str) -> &'a Value {
    graph["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .find(|e| e["from"] == from && e["to"] == to)
        .unwrap_or_else(|| panic!("edge {from} -> {to} missing in {graph}"))
}

#[tokio::test]
async fn json_ndjson_and_cbor_bodies_all_count() {
    let peer = TestPeer::new(default_limits());
    let ts = now_ms();
    let json_body = json!([
        {"from": "web", "to": "checkout", "ts": ts, "latency_ms": 10.0, "bytes": 100},
        {"from": "web", "to": "checkout", "ts": ts, "latency_ms": 30.0, "error": true, "count": 4},
    ]);
    let (status, answer) = peer.post("application/json", json_body.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["accepted"], 2);

    let ndjson = format!(
        "{}\n\n{}\n",
        json!({"from": "checkout", "to": "payments", "ts": ts, "latency_ms": 5}),
        json!({"from": "checkout", "to": "payments", "ts": ts, "error": true})
    );
    let (status, answer) = peer.post("application/x-ndjson", ndjson).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["accepted"], 2);

    let cbor_events =
        json!([{"from": "checkout", "to": "payments", "ts": ts, "latency_ms": 7.5, "bytes": 9}]);
    let mut cbor = Vec::new();
    ciborium::into_writer(&cbor_events, &mut cbor).expect("encode");
    let (status, answer) = peer.post("application/cbor", cbor).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["accepted"], 1);

    let (status, graph) = peer.get("/api/v1/graph?window=5m").await;
    assert_eq!(status, StatusCode::OK, "{graph}");
    let web = edge(&graph, "web", "checkout");
    assert_eq!(
        (web["calls"].as_u64(), web["errors"].as_u64(), web["bytes"].as_u64()),
        (Some(5), Some(4), Some(100))
    );
    assert_eq!(web["latency_ms"]["samples"], 5);
    assert_eq!(web["error_ratio"], 0.8);
    let payments = edge(&graph, "checkout", "payments");
    assert_eq!((payments["calls"].as_u64(), payments["errors"].as_u64()), (Some(3), Some(1)));
    assert_eq!(payments["latency_ms"]["samples"], 2, "the event without latency adds no sample");
    let nodes: Vec<&str> =
        graph["nodes"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(nodes, ["checkout", "payments", "web"]);
    assert_eq!(graph["coverage"]["origins"].as_array().unwrap().len(), 1);
    assert_eq!(graph["coverage"]["origins"][0]["local"], true);
}

#[tokio::test]
async fn bad_events_are_named_by_index_and_field_and_the_rest_is_kept() {
    let peer = TestPeer::new(default_limits());
    let ts = now_ms();
    let body = json!([
        {"from": "a", "to": "b", "ts": ts},
        {"from": "a", "to": ""},
        {"from": "a", "to": "b", "latency": 3},
        {"from": "a", "to": "b", "latency_ms": "slow"},
        {"from": "a", "to": "b", "latency_ms": -1},
        {"from": "a", "to": "b", "ts": ts - 3_600_000},
        {"from": "a", "to": "b", "ts": ts + 3_600_000},
        {"from": "a", "to": "b", "ts": "yesterday"},
        {"from": "a", "to": "b", "count": 0},
        {"to": "b"},
        {"from": "a\u{7}", "to": "b"},
        {"from": "x".repeat(201), "to": "b"},
        {"from": "a", "to": "b", "ts": "2026-01-01T00:00:00+02:00"},
        {"from": "a", "to": "b"},
    ]);
    let (status, answer) = peer.post("application/json", body.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let errors: Vec<(u64, String)> = answer["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["index"].as_u64().unwrap(), e["field"].as_str().unwrap().to_string()))
        .collect();
    let expected: Vec<(u64, String)> = [
        (1, "to"),
        (2, "latency"),
        (3, "latency_ms"),
        (4, "latency_ms"),
        (5, "ts"),
        (6, "ts"),
        (7, "ts"),
        (8, "count"),
        (9, "from"),
        (10, "from"),
        (11, "from"),
        (12, "ts"),
    ]
    .into_iter()
    .map(|(i, f)| (i, f.to_string()))
    .collect();
    assert_eq!(errors, expected, "{answer}");
    assert_eq!(answer["accepted"], 2);
    assert_eq!(answer["rejected"], 12);

    let (_, graph) = peer.get("/api/v1/graph?window=5m").await;
    assert_eq!(edge(&graph, "a", "b")["calls"], 2);

    let (_, status) = peer.get("/api/v1/status").await;
    let rejected = &status["ingest"]["events_rejected"];
    assert_eq!(rejected["ts_too_late"], 2, "{status}");
    assert_eq!(rejected["ts_in_future"], 1, "{status}");
    assert_eq!(rejected["invalid_event"], 1, "unknown field names are counted together: {status}");
    assert_eq!(status["ingest"]["events_accepted"], 2);
}

#[tokio::test]
async fn unparseable_bodies_answer_400_saying_where() {
    let peer = TestPeer::new(default_limits());
    let (status, answer) =
        peer.post("application/json", "[{\"from\":\"a\",\"to\":\"b\"},\n {\"from\": ]").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"]["code"], "malformed_body");
    assert_eq!(answer["error"]["location"], "line 2, column 11", "{answer}");

    let (status, answer) =
        peer.post("application/x-ndjson", "{\"from\":\"a\",\"to\":\"b\"}\n{\"from\" \"a\"}").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"]["location"], "line 2, column 9", "{answer}");

    let (status, answer) = peer.post("application/cbor", vec![0x9f, 0xa1, 0x61]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["error"]["location"].as_str().unwrap().contains("byte")
            || answer["error"]["location"] == "end of body"
    );

    let (status, answer) = peer.post("application/json", "{\"from\":\"a\",\"to\":\"b\"} trailing").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");

    // Nothing of the refused bodies was applied.
    let (_, graph) = peer.get("/api/v1/graph?window=5m").await;
    assert_eq!(graph["edges"].as_array().unwrap().len(), 0, "{graph}");
}

#[tokio::test]
async fn limits_answer_413_and_415() {
    let mut limits = ApiLimits { body_bytes_max: 2000, ..default_limits() };
    limits.parse.events_per_request_max = 3;
    let peer = TestPeer::new(limits);
    let big = format!("[{}]", vec![r#"{"from":"a","to":"b"}"#; 200].join(","));
    let (status, answer) = peer.post("application/json", big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("body_bytes_max"), "{answer}");

    let four = format!("[{}]", [r#"{"from":"a","to":"b"}"#; 4].join(","));
    let (status, answer) = peer.post("application/json", four).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("events_per_request_max"), "{answer}");

    let (status, answer) = peer.post("application/xml", "<events/>").await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{answer}");

    // curl's default content type: the body is sniffed.
    let (status, answer) = peer.post("application/x-www-form-urlencoded", r#"{"from":"a","to":"b"}"#).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["accepted"], 1);

    let (_, status) = peer.get("/api/v1/status").await;
    assert_eq!(status["ingest"]["requests_rejected"]["too_large"], 2, "{status}");
    assert_eq!(status["ingest"]["requests_rejected"]["unsupported_media_type"], 1, "{status}");
}

#[tokio::test]
async fn error_list_is_capped_but_all_are_counted() {
    let limits = ApiLimits { errors_listed_max: 5, ..default_limits() };
    let peer = TestPeer::new(limits);
    let body = format!("[{}]", vec![r#"{"from":"a","to":""}"#; 50].join(","));
    let (status, answer) = peer.post("application/json", body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["rejected"], 50);
    assert_eq!(answer["errors"].as_array().unwrap().len(), 5);
    assert_eq!(answer["errors_truncated"], true);
}

#[tokio::test]
async fn edge_kinds_are_separate_edges_and_bad_kinds_are_named() {
    let peer = TestPeer::new(default_limits());
    let ts = now_ms();
    let body = json!([
        {"from": "checkout", "to": "orders", "ts": ts, "latency_ms": 2.0},
        {"from": "checkout", "to": "orders", "ts": ts, "kind": "messaging", "count": 3},
        {"from": "checkout", "to": "orders", "ts": ts, "kind": "database"},
        {"from": "checkout", "to": "orders", "ts": ts, "kind": "carrier-pigeon"},
    ]);
    let (status, answer) = peer.post("application/json", body.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["accepted"], 3, "{answer}");
    assert_eq!(answer["errors"][0]["index"], 3, "{answer}");
    assert_eq!(answer["errors"][0]["field"], "kind", "{answer}");

    let (_, graph) = peer.get("/api/v1/graph?window=5m").await;
    let mut kinds: Vec<(String, u64)> = graph["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| (e["kind"].as_str().expect("kind").to_string(), e["calls"].as_u64().expect("calls")))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [("database".to_string(), 1), ("messaging".to_string(), 3), ("request".to_string(), 1)],
        "{graph}"
    );
    let (status, series) = peer.get("/api/v1/edges/checkout/orders?window=5m&step=1m&kind=messaging").await;
    assert_eq!(status, StatusCode::OK, "{series}");
    assert_eq!(series["kind"], "messaging");
    let calls: u64 =
        series["points"].as_array().expect("points").iter().map(|p| p["calls"].as_u64().unwrap()).sum();
    assert_eq!(calls, 3, "{series}");
    let (status, error) = peer.get("/api/v1/edges/checkout/orders?kind=telepathy").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert!(error["error"]["message"].as_str().unwrap().contains("kind"), "{error}");
}

#[tokio::test]
async fn a_cbor_event_with_a_key_twice_is_refused_as_json_is() {
    let peer = TestPeer::new(default_limits());
    let ts = now_ms() - 1_000;
    // A map with `to` twice: [{"from": "a", "to": "b", "ts": ts, "to": "c"}].
    let mut cbor = Vec::new();
    let map = ciborium::Value::Map(vec![
        ("from".into(), "a".into()),
        ("to".into(), "b".into()),
        ("ts".into(), ciborium::Value::Integer(ts.into())),
        ("to".into(), "c".into()),
    ]);
    ciborium::into_writer(&ciborium::Value::Array(vec![map]), &mut cbor).expect("encode");
    let (status, answer) = peer.post("application/cbor", cbor).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!((answer["accepted"].as_u64(), answer["rejected"].as_u64()), (Some(0), Some(1)), "{answer}");
    assert_eq!(answer["errors"][0]["field"], "to", "{answer}");
    assert!(answer["errors"][0]["reason"].as_str().unwrap().contains("duplicate field `to`"), "{answer}");
    let json = format!(r#"[{{"from": "a", "to": "b", "ts": {ts}, "to": "c"}}]"#);
    let (_, answer) = peer.post("application/json", json).await;
    assert_eq!(answer["rejected"], 1, "JSON refuses it too: {answer}");
}

#[tokio::test]
async fn a_content_type_that_is_not_text_is_refused_not_sniffed() {
    use axum::body::Body;
    use axum::http::{HeaderValue, Request, header};
    use tower::ServiceExt;
    let peer = TestPeer::new(default_limits());
    let body = format!(r#"[{{"from": "a", "to": "b", "ts": {}}}]"#, now_ms() - 1_000);
    for uri in ["/api/v1/events", "/v1/traces", "/api/v2/spans"] {
        let request = Request::post(uri)
            .header(header::CONTENT_TYPE, HeaderValue::from_bytes(b"application/json\xff").expect("obs-text"))
            .body(Body::from(body.clone()))
            .expect("request");
        let response = peer.app.clone().oneshot(request).await.expect("answer");
        assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{uri}");
    }
    let (_, status) = peer.get("/api/v1/status").await;
    assert_eq!(status["ingest"]["events_accepted"], 0, "{status}");
}

#[tokio::test]
async fn a_body_that_trickles_in_holds_no_ingest_place_and_is_refused_below_the_minimum_rate() {
    use axum::body::{Body, Bytes};
    use axum::http::Request;
    use tower::ServiceExt;
    let peer = TestPeer::new(ApiLimits { ingest_requests_in_flight_max: 1, ..default_limits() });
    // Two bodies that never come (the test never sends on their channels), more than the
    // one ingest place.
    let mut senders = Vec::new();
    let mut stalled = Vec::new();
    for uri in ["/api/v1/events", "/v1/traces"] {
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        senders.push(sender);
        let stream = futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx));
        let content_type = if uri == "/v1/traces" { "application/x-protobuf" } else { "application/json" };
        let request = Request::post(uri).header("content-type", content_type).body(Body::from_stream(stream));
        stalled.push(tokio::spawn(peer.app.clone().oneshot(request.expect("request"))));
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // A request whose body comes at once is taken meanwhile (within 5 s: before this
    // change it waited for the stalled ones' http.request_timeout, 30 s).
    let body = format!(r#"[{{"from": "a", "to": "b", "ts": {}}}]"#, now_ms() - 1_000);
    let taken =
        tokio::time::timeout(std::time::Duration::from_secs(5), peer.post("application/json", body)).await;
    let (status, answer) = taken.expect("answered while the stalled bodies wait");
    assert_eq!((status, answer["accepted"].as_u64()), (StatusCode::OK, Some(1)), "{answer}");
    // The stalled bodies are refused once below http.body_min_rate, after about a second.
    for request in stalled {
        let response = request.await.expect("the request task").expect("an answer");
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        let bytes = http_body_util::BodyExt::collect(response.into_body()).await.expect("a body").to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        assert!(text.contains("http.body_min_rate"), "{text}");
    }
}

#[tokio::test]
async fn a_tagged_cbor_value_refuses_its_event_only() {
    let peer = TestPeer::new(default_limits());
    let ts = now_ms() - 1_000;
    let good = ciborium::Value::Map(vec![
        ("from".into(), "a".into()),
        ("to".into(), "b".into()),
        ("ts".into(), ciborium::Value::Integer(ts.into())),
    ]);
    // `ts` as an epoch-time tag (1), which no field takes; and a tagged event.
    let tagged_ts = ciborium::Value::Map(vec![
        ("from".into(), "a".into()),
        ("to".into(), "b".into()),
        ("ts".into(), ciborium::Value::Tag(1, Box::new(ciborium::Value::Integer((ts / 1000).into())))),
    ]);
    let tagged_event = ciborium::Value::Tag(55799, Box::new(good.clone()));
    let mut cbor = Vec::new();
    ciborium::into_writer(&ciborium::Value::Array(vec![good, tagged_ts, tagged_event]), &mut cbor)
        .expect("encode");
    let (status, answer) = peer.post("application/cbor", cbor).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["accepted"], 1, "{answer}");
    assert_eq!(answer["rejected"], 2, "{answer}");
}
