//! Spans and sightings in through the router: OTLP protobuf and JSON (gzip too), Zipkin
//! v2, token sightings; edges with their kinds in the graph; refusals named and counted.

use std::io::Write;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use http_body_util::BodyExt;
use observatory_api::otlp::{
    AnyValue, ExportTraceServiceRequest, ExportTraceServiceResponse, KeyValue, ProtoSpan, Resource,
    ResourceSpans, RpcStatus, ScopeSpans, Status,
};
use prost::Message;
use serde_json::{Value, json};
use tower::ServiceExt;

use observatory_api::ApiLimits;

use crate::{TestPeer, default_limits, now_ms};

pub(crate) fn attr(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Some(AnyValue {
            string_value: Some(Bytes::copy_from_slice(value.as_bytes())),
            double_value: None,
        }),
    }
}

/// A protobuf span of `kind` (OTLP enum value), started `at_ms` after now-1s.
pub(crate) fn proto_span(
    trace: u8,
    id: u8,
    parent: Option<u8>,
    kind: i32,
    at_ms: u64,
    dur_ms: u64,
    attributes: Vec<KeyValue>,
) -> ProtoSpan {
    let start = (now_ms() as u64 - 1_000 + at_ms) * 1_000_000;
    ProtoSpan {
        trace_id: Bytes::from(vec![trace; 16]),
        span_id: Bytes::from(vec![id; 8]),
        parent_span_id: parent.map_or_else(Bytes::new, |p| Bytes::from(vec![p; 8])),
        trace_state: Bytes::new(),
        kind,
        start_time_unix_nano: start,
        end_time_unix_nano: start + dur_ms * 1_000_000,
        attributes,
        status: None,
    }
}

pub(crate) fn resource(service: &str, spans: Vec<ProtoSpan>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource { attributes: vec![attr("service.name", service), attr("host.name", "h1")] }),
        scope_spans: vec![ScopeSpans { spans }],
    }
}

async fn post_raw(
    peer: &TestPeer,
    uri: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (StatusCode, Vec<u8>, String) {
    let mut request = Request::post(uri);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response =
        peer.app.clone().oneshot(request.body(Body::from(body)).expect("request")).await.expect("answer");
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_string())
        .unwrap_or_default();
    let bytes = response.into_body().collect().await.expect("body").to_bytes().to_vec();
    (status, bytes, content_type)
}

/// `(from, to, kind) -> (calls, errors, latency samples)` of the last 5 minutes.
pub(crate) async fn graph_edges(peer: &TestPeer) -> Vec<(String, String, String, u64, u64, u64)> {
    let (status, graph) = peer.get("/api/v1/graph?window=5m").await;
    assert_eq!(status, StatusCode::OK, "{graph}");
    let mut edges: Vec<_> = graph["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| {
            (
                e["from"].as_str().unwrap().to_string(),
                e["to"].as_str().unwrap().to_string(),
                e["kind"].as_str().unwrap().to_string(),
                e["calls"].as_u64().unwrap(),
                e["errors"].as_u64().unwrap(),
                e["latency_ms"]["samples"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    edges.sort();
    edges
}

pub(crate) fn edge(
    from: &str,
    to: &str,
    kind: &str,
    calls: u64,
    errors: u64,
    samples: u64,
) -> (String, String, String, u64, u64, u64) {
    (from.into(), to.into(), kind.into(), calls, errors, samples)
}

/// Waits (up to 5 s) until the graph has `expected`.
async fn wait_for_edges(peer: &TestPeer, expected: &[(String, String, String, u64, u64, u64)]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let edges = graph_edges(peer).await;
        if edges == expected {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "graph is\n{edges:?}\nexpected\n{expected:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Latency histograms keep two significant digits: within 1%.
fn assert_close(value: &Value, expected_ms: f64, what: &str, edge: &Value) {
    let value = value.as_f64().unwrap_or_else(|| panic!("{what}: no number in {edge}"));
    assert!(
        (value - expected_ms).abs() <= expected_ms / 100.0,
        "{what}: {value} ms, expected {expected_ms}: {edge}"
    );
}

fn fast_correlation() -> Option<observatory_correlate::CorrelationConfig> {
    Some(observatory_correlate::CorrelationConfig {
        pending_ttl_ms: 300,
        idle_ms: 300,
        ..crate::default_correlation()
    })
}

#[tokio::test]
async fn otlp_protobuf_spans_become_request_database_and_messaging_edges() {
    let peer = TestPeer::new(default_limits());
    let request = ExportTraceServiceRequest {
        resource_spans: vec![
            resource(
                "frontend",
                vec![
                    proto_span(1, 1, None, 2, 0, 100, vec![]),
                    proto_span(1, 2, Some(1), 3, 5, 60, vec![attr("http.method", "GET")]),
                    proto_span(1, 9, Some(1), 1, 5, 1, vec![]),
                ],
            ),
            resource(
                "checkout",
                vec![
                    ProtoSpan {
                        status: Some(Status { code: 2 }),
                        ..proto_span(1, 3, Some(2), 2, 10, 40, vec![])
                    },
                    proto_span(
                        1,
                        4,
                        Some(3),
                        3,
                        12,
                        3,
                        vec![attr("db.system", "postgresql"), attr("db.name", "orders")],
                    ),
                    proto_span(
                        1,
                        5,
                        Some(3),
                        4,
                        20,
                        1,
                        vec![attr("messaging.destination.name", "shipments")],
                    ),
                ],
            ),
            resource("shipping", vec![proto_span(1, 6, Some(5), 5, 30, 5, vec![])]),
        ],
    };
    let (status, body, content_type) =
        post_raw(&peer, "/v1/traces", &[("content-type", "application/x-protobuf")], request.encode_to_vec())
            .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(content_type, "application/x-protobuf");
    let answer = ExportTraceServiceResponse::decode(&body[..]).expect("an ExportTraceServiceResponse");
    assert_eq!(answer.partial_success, None, "nothing refused");
    // Everything paired within the request: no wait.
    assert_eq!(
        graph_edges(&peer).await,
        vec![
            edge("checkout", "orders", "database", 1, 0, 1),
            edge("checkout", "shipping", "messaging", 1, 0, 1),
            edge("frontend", "checkout", "request", 1, 1, 1),
            edge("user", "frontend", "request", 1, 0, 1),
        ]
    );
    let (_, graph) = peer.get("/api/v1/graph?window=5m").await;
    let checkout = graph["edges"].as_array().unwrap().iter().find(|e| e["to"] == "checkout").expect("edge");
    assert_close(&checkout["latency_ms"]["mean"], 40.0, "the server's duration", checkout);
    let shipping = graph["edges"].as_array().unwrap().iter().find(|e| e["to"] == "shipping").expect("edge");
    assert_close(&shipping["latency_ms"]["mean"], 9.0, "transit: consumer start - producer end", shipping);
    let (_, status) = peer.get("/api/v1/status").await;
    assert_eq!(status["ingest"]["spans_received"], 6, "{status}");
    assert_eq!(
        status["correlation"]["spans_internal"], 0,
        "internal spans never reach the correlator: {status}"
    );
}

#[tokio::test]
async fn otlp_json_gzip_halves_in_separate_requests_pair_and_bad_spans_are_named() {
    let peer = TestPeer::with_correlation(default_limits(), fast_correlation());
    let start = (now_ms() - 1_000) as u64 * 1_000_000;
    let span = |service: &str, trace: &str, id: &str, parent: &str, kind: Value, attributes: Value| {
        json!({"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
               "scopeSpans": [{"scope": {"name": "test"}, "spans": [{
                   "traceId": trace, "spanId": id, "parentSpanId": parent, "name": "op", "kind": kind,
                   "startTimeUnixNano": start.to_string(), "endTimeUnixNano": (start + 25_000_000),
                   "attributes": attributes, "status": {"code": 0}}]}]})
    };
    let trace = "5b8efff798038103d269b633813fc60c";
    let client = json!({"resourceSpans": [
        span("cart", trace, "eee19b7ec3c1b174", "eee19b7ec3c1b173", json!(3), json!([])),
        span("cart", trace, "eee19b7ec3c1b175", "", json!("SPAN_KIND_CLIENT"), json!([{"key": "peer.service", "value": {"stringValue": "legacy-billing"}}])),
        span("cart", "not-hex", "eee19b7ec3c1b176", "", json!(2), json!([])),
    ]});
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(client.to_string().as_bytes()).expect("gzip");
    let (status, body, content_type) = post_raw(
        &peer,
        "/v1/traces",
        &[("content-type", "application/json"), ("content-encoding", "gzip")],
        gz.finish().expect("gzip"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(content_type, "application/json");
    let answer: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(answer["partialSuccess"]["rejectedSpans"], "1", "{answer}");
    assert!(
        answer["partialSuccess"]["errorMessage"].as_str().unwrap().contains("span 2: traceId"),
        "{answer}"
    );

    let server = json!({"resourceSpans": [span("inventory", trace, "00f067aa0ba902b7", "eee19b7ec3c1b174", json!(2), json!([]))]});
    let (status, body, _) = post_raw(
        &peer,
        "/v1/traces",
        &[("content-type", "application/json")],
        server.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), json!({}));
    // The pair at once; the client nobody answered becomes an edge to its peer.service
    // once its time is up.
    wait_for_edges(
        &peer,
        &[edge("cart", "inventory", "request", 1, 0, 1), edge("cart", "legacy-billing", "request", 1, 0, 1)],
    )
    .await;
    let (_, status) = peer.get("/api/v1/status").await;
    assert_eq!(status["ingest"]["spans_rejected"]["invalid_trace_id"], 1, "{status}");
    assert_eq!(status["correlation"]["edges_virtual"], 1, "{status}");
}

#[tokio::test]
async fn otlp_errors_are_status_messages_in_the_request_encoding() {
    let peer = TestPeer::new(ApiLimits { body_bytes_max: 4096, ..default_limits() });
    let (status, body, _) =
        post_raw(&peer, "/v1/traces", &[("content-type", "application/x-protobuf")], vec![0xff, 0xff, 0xff])
            .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let rpc = RpcStatus::decode(&body[..]).expect("a google.rpc.Status");
    assert!(rpc.message.contains("ExportTraceServiceRequest"), "{rpc:?}");

    let (status, body, _) =
        post_raw(&peer, "/v1/traces", &[("content-type", "text/xml")], b"<spans/>".to_vec()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(String::from_utf8_lossy(&body).contains("application/x-protobuf"));

    // A gzip bomb is cut off at the body limit, after decompression.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![b' '; 1 << 20]).expect("gzip");
    let (status, body, _) = post_raw(
        &peer,
        "/v1/traces",
        &[("content-type", "application/json"), ("content-encoding", "gzip")],
        gz.finish().expect("gzip"),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{}", String::from_utf8_lossy(&body));
    let message: Value = serde_json::from_slice(&body).expect("JSON status");
    assert!(message["message"].as_str().unwrap().contains("decompresses"), "{message}");

    let (_, status) = peer.get("/api/v1/status").await;
    assert_eq!(status["ingest"]["requests_rejected"]["malformed_body"], Value::Null);
    assert_eq!(status["ingest"]["requests_rejected"]["bad_request"], 1, "{status}");
    assert_eq!(status["ingest"]["requests_rejected"]["too_large"], 1, "{status}");
}

#[tokio::test]
async fn zipkin_v2_spans_answer_202_and_pair_including_shared_ids() {
    let peer = TestPeer::new(default_limits());
    let ts = (now_ms() - 1_000) * 1_000;
    let spans = json!([
        {"traceId": "463ac35c9f6413ad", "id": "a2fb4a1d1a96d312", "kind": "CLIENT", "timestamp": ts, "duration": 9000,
         "localEndpoint": {"serviceName": "web"}},
        {"traceId": "463ac35c9f6413ad", "id": "b2fb4a1d1a96d312", "parentId": "a2fb4a1d1a96d312", "kind": "SERVER",
         "timestamp": ts + 1000, "duration": 7000, "localEndpoint": {"serviceName": "api"}, "tags": {"error": "boom"}},
        {"traceId": "463ac35c9f6413ad48485a3953bb6124", "id": "c2fb4a1d1a96d312", "kind": "CLIENT", "timestamp": ts,
         "duration": 3000, "localEndpoint": {"serviceName": "api"}, "tags": {"db.system": "redis"}},
        {"traceId": "463ac35c9f6413ad48485a3953bb6125", "id": "d2fb4a1d1a96d312", "kind": "CLIENT", "timestamp": ts,
         "duration": 3000, "localEndpoint": {"serviceName": "api"}},
        {"traceId": "463ac35c9f6413ad48485a3953bb6125", "id": "d2fb4a1d1a96d312", "kind": "SERVER", "shared": true,
         "timestamp": ts, "duration": 2000, "localEndpoint": {"serviceName": "auth"}},
        {"traceId": "463ac35c9f6413ad", "id": "bad", "kind": "CLIENT", "timestamp": ts, "localEndpoint": {"serviceName": "web"}},
    ]);
    let (status, body, _) = post_raw(
        &peer,
        "/api/v2/spans",
        &[("content-type", "application/json")],
        spans.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        graph_edges(&peer).await,
        vec![
            edge("api", "auth", "request", 1, 0, 1),
            edge("api", "redis", "database", 1, 0, 1),
            edge("web", "api", "request", 1, 1, 1),
        ]
    );
    let (_, status) = peer.get("/api/v1/status").await;
    assert_eq!(status["ingest"]["spans_rejected"]["invalid_span_id"], 1, "{status}");

    let (status, body, _) = post_raw(
        &peer,
        "/api/v2/spans",
        &[("content-type", "application/json")],
        b"{\"not\": \"a list\"}".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("Zipkin v2"), "{}", String::from_utf8_lossy(&body));
}

#[tokio::test]
async fn sightings_become_edges_between_consecutive_nodes_once_idle() {
    let peer = TestPeer::with_correlation(default_limits(), fast_correlation());
    let ts = now_ms() - 2_000;
    let body = json!([
        {"token": "parcel-1", "node": "sorting", "ts": ts + 400},
        {"token": "parcel-1", "node": "intake", "ts": ts},
        {"token": "parcel-1", "node": "truck", "ts": ts + 1_000, "error": true, "kind": "messaging"},
        {"token": "parcel-2", "node": "intake", "ts": ts},
        {"token": "", "node": "intake", "ts": ts},
        {"token": "parcel-3", "node": "intake"},
    ]);
    let (status, answer) = peer
        .request(
            Request::post("/api/v1/sightings")
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["accepted"], 4, "{answer}");
    let fields: Vec<(u64, &str)> = answer["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["index"].as_u64().unwrap(), e["field"].as_str().unwrap()))
        .collect();
    assert_eq!(fields, [(4, "token"), (5, "ts")], "{answer}");
    assert!(graph_edges(&peer).await.is_empty(), "no edge before the token is idle");
    wait_for_edges(
        &peer,
        &[edge("intake", "sorting", "request", 1, 0, 1), edge("sorting", "truck", "messaging", 1, 1, 1)],
    )
    .await;
    let (_, graph) = peer.get("/api/v1/graph?window=5m").await;
    let truck = graph["edges"].as_array().unwrap().iter().find(|e| e["to"] == "truck").expect("edge");
    assert_close(&truck["latency_ms"]["mean"], 600.0, "transit time between the sightings", truck);
}

#[tokio::test]
async fn a_compressed_body_is_bounded_as_sent_too_and_encodings_are_named() {
    use rand::{RngCore, SeedableRng};
    let peer = TestPeer::new(ApiLimits { body_bytes_max: 4096, ..default_limits() });
    // Incompressible bytes: the gzip body as sent is over the limit, with no length given.
    let mut noise = vec![0u8; 8192];
    rand::rngs::StdRng::seed_from_u64(7).fill_bytes(&mut noise);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&noise).expect("gzip");
    let (status, body, _) = post_raw(
        &peer,
        "/api/v2/spans",
        &[("content-type", "application/json"), ("content-encoding", "x-gzip")],
        gz.finish().expect("gzip"),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("larger than limits.body_bytes_max"));

    let (status, body, _) = post_raw(
        &peer,
        "/api/v2/spans",
        &[("content-type", "application/json"), ("content-encoding", " BR ")],
        b"[]".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(
        String::from_utf8_lossy(&body).contains("Content-Encoding `br` is not supported"),
        "{}",
        String::from_utf8_lossy(&body)
    );
}

/// One CLIENT (kind 3) or PRODUCER (4) span of `checkout` per trace, nobody answering.
fn lone_halves(cases: &[(i32, Vec<KeyValue>)]) -> ExportTraceServiceRequest {
    let spans = cases
        .iter()
        .enumerate()
        .map(|(i, (kind, attributes))| proto_span(i as u8 + 1, 1, Some(9), *kind, 0, 4, attributes.clone()))
        .collect();
    ExportTraceServiceRequest { resource_spans: vec![resource("checkout", spans)] }
}

#[tokio::test]
async fn peer_attributes_name_virtual_nodes_in_order_and_empty_values_are_skipped() {
    let peer = TestPeer::with_correlation(default_limits(), fast_correlation());
    let request = lone_halves(&[
        // Tempo and the Collector: peer.service names a database's node before db.system.
        (3, vec![attr("db.system", "elasticsearch"), attr("peer.service", "es-cluster")]),
        // An empty attribute is absent: the next one names the node.
        (3, vec![attr("peer.service", ""), attr("server.address", "payments")]),
        (3, vec![attr("peer.service", "  "), attr("net.peer.name", "legacy")]),
        // The newer semantic conventions' names.
        (3, vec![attr("db.system.name", "postgresql"), attr("db.namespace", "users-db")]),
        (3, vec![attr("db.system", "redis")]),
        // Nothing named: the Collector's unknown node.
        (3, vec![attr("http.method", "GET")]),
        // A producer without a destination falls back on the peer attributes.
        (4, vec![attr("messaging.destination.name", ""), attr("peer.service", "kafka")]),
    ]);
    let (status, body, _) =
        post_raw(&peer, "/v1/traces", &[("content-type", "application/x-protobuf")], request.encode_to_vec())
            .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    wait_for_edges(
        &peer,
        &[
            edge("checkout", "es-cluster", "database", 1, 0, 1),
            edge("checkout", "kafka", "messaging", 1, 0, 0),
            edge("checkout", "legacy", "request", 1, 0, 1),
            edge("checkout", "payments", "request", 1, 0, 1),
            edge("checkout", "redis", "database", 1, 0, 1),
            edge("checkout", "unknown", "request", 1, 0, 1),
            edge("checkout", "users-db", "database", 1, 0, 1),
        ],
    )
    .await;
    let (_, status) = peer.get("/api/v1/status").await;
    assert_eq!(status["correlation"]["edges_unknown"], 1, "{status}");
    assert_eq!(status["correlation"]["spans_unpaired"], 0, "{status}");
    let (metrics, _) = crate::exposition::metrics(&peer).await;
    assert!(metrics.contains("observatory_edges_unknown_total 1"), "{metrics}");
}

#[tokio::test]
async fn peer_attributes_follow_the_configured_order() {
    let limits = ApiLimits { peer_attributes: vec!["server.address".to_string()].into(), ..default_limits() };
    let peer = TestPeer::with_correlation(limits, fast_correlation());
    let request = lone_halves(&[
        (3, vec![attr("peer.service", "by-peer-service"), attr("server.address", "by-address")]),
        // Not in the list: names nothing, so the unknown node.
        (3, vec![attr("peer.service", "ignored")]),
    ]);
    let (status, body, _) =
        post_raw(&peer, "/v1/traces", &[("content-type", "application/x-protobuf")], request.encode_to_vec())
            .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    wait_for_edges(
        &peer,
        &[
            edge("checkout", "by-address", "request", 1, 0, 1),
            edge("checkout", "unknown", "request", 1, 0, 1),
        ],
    )
    .await;
}

#[tokio::test]
async fn an_export_retried_after_it_was_taken_changes_no_count() {
    let peer = TestPeer::with_correlation(default_limits(), fast_correlation());
    let request = ExportTraceServiceRequest {
        resource_spans: vec![
            resource(
                "frontend",
                vec![proto_span(1, 1, None, 2, 0, 100, vec![]), proto_span(1, 2, Some(1), 3, 5, 60, vec![])],
            ),
            resource("checkout", vec![proto_span(1, 3, Some(2), 2, 10, 40, vec![])]),
            // A client whose server never reports: it waits, then names its peer.
            resource(
                "checkout",
                vec![proto_span(1, 4, Some(3), 3, 12, 3, vec![attr("peer.service", "stripe")])],
            ),
        ],
    };
    let body = request.encode_to_vec();
    // The same request twice: the exporter timed out waiting for the first answer.
    for _ in 0..2 {
        let (status, body, _) =
            post_raw(&peer, "/v1/traces", &[("content-type", "application/x-protobuf")], body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    }
    let expected = [
        edge("checkout", "stripe", "request", 1, 0, 1),
        edge("frontend", "checkout", "request", 1, 0, 1),
        edge("user", "frontend", "request", 1, 0, 1),
    ];
    wait_for_edges(&peer, &expected).await;
    let (_, status) = peer.get("/api/v1/status").await;
    assert_eq!(status["correlation"]["spans_duplicate"], 4, "{status}");
    assert_eq!(status["ingest"]["spans_received"], 8, "both requests were received: {status}");
}

/// One span of an anchor case: `(service, trace, id, parent, kind, failed, attributes)`,
/// kind as OTLP's enum (2 SERVER, 3 CLIENT, 4 PRODUCER, 5 CONSUMER).
type CaseSpan = (&'static str, u8, u8, Option<u8>, i32, bool, &'static [(&'static str, &'static str)]);
/// `(from, to, kind, virtual side, connection_type in /metrics, calls, errors)`.
type CaseEdge = (&'static str, &'static str, &'static str, Option<&'static str>, &'static str, u64, u64);

/// Where Tempo's service-graph processor and the Collector's servicegraph connector (its
/// virtual-node support enabled) agree, read from their processors and the scenarios their
/// tests exercise (a request pair, a database call by `db.name`, a producer and its
/// consumer, failed halves, a root server, a client to an uninstrumented peer, and what
/// neither counts), rewritten as our own cases: not a port of their testdata files.
const ANCHOR_CASES: &[(&str, &[CaseSpan], &[CaseEdge])] = &[
    (
        "a client and its server: one request edge",
        &[("requester", 1, 2, Some(1), 3, false, &[]), ("server", 1, 3, Some(2), 2, false, &[])],
        &[("requester", "server", "request", None, "", 1, 0)],
    ),
    (
        "a failed server half fails the edge",
        &[("requester", 1, 2, Some(1), 3, false, &[]), ("server", 1, 3, Some(2), 2, true, &[])],
        &[("requester", "server", "request", None, "", 1, 1)],
    ),
    (
        "a failed client half fails the edge",
        &[("requester", 1, 2, Some(1), 3, true, &[]), ("server", 1, 3, Some(2), 2, false, &[])],
        &[("requester", "server", "request", None, "", 1, 1)],
    ),
    (
        "a database call named by db.name, failed with its client span",
        &[("server", 1, 4, Some(3), 3, true, &[("db.system", "postgresql"), ("db.name", "postgres")])],
        &[("server", "postgres", "database", Some("server"), "database", 1, 1)],
    ),
    (
        "a producer and its consumer: one messaging edge",
        &[
            ("requester", 1, 5, Some(1), 4, false, &[("messaging.system", "rabbitmq")]),
            ("recorder", 1, 6, Some(5), 5, false, &[("messaging.system", "rabbitmq")]),
        ],
        &[("requester", "recorder", "messaging", None, "messaging_system", 1, 0)],
    ),
    (
        "a failed consumer fails the messaging edge",
        &[("requester", 1, 5, Some(1), 4, false, &[]), ("recorder", 1, 6, Some(5), 5, true, &[])],
        &[("requester", "recorder", "messaging", None, "messaging_system", 1, 1)],
    ),
    (
        "a failed producer fails the messaging edge",
        &[("requester", 1, 5, Some(1), 4, true, &[]), ("recorder", 1, 6, Some(5), 5, false, &[])],
        &[("requester", "recorder", "messaging", None, "messaging_system", 1, 1)],
    ),
    (
        "a root server span is called by the user",
        &[("server", 1, 1, None, 2, false, &[])],
        &[("user", "server", "request", Some("client"), "virtual_node", 1, 0)],
    ),
    (
        "a client nobody answered calls the peer its peer.service names",
        &[("requester", 1, 2, Some(1), 3, false, &[("peer.service", "external-payments-platform")])],
        &[("requester", "external-payments-platform", "request", Some("server"), "virtual_node", 1, 0)],
    ),
    (
        "a server whose client never came is counted by neither",
        &[("server", 1, 3, Some(2), 2, false, &[])],
        &[],
    ),
];

#[tokio::test]
async fn where_tempo_and_the_collector_agree_we_give_their_graph() {
    for (name, spans, expected) in ANCHOR_CASES {
        let peer = TestPeer::with_correlation(default_limits(), fast_correlation());
        let by_service = spans.iter().fold(Vec::<(&str, Vec<ProtoSpan>)>::new(), |mut acc, span| {
            let (service, trace, id, parent, kind, failed, attributes) = *span;
            let attributes = attributes.iter().map(|(k, v)| attr(k, v)).collect();
            let mut proto =
                proto_span(trace, id, parent, kind, u64::from(id) * 2, 20 - u64::from(id), attributes);
            proto.status = failed.then_some(Status { code: 2 });
            match acc.iter_mut().find(|(s, _)| *s == service) {
                Some((_, list)) => list.push(proto),
                None => acc.push((service, vec![proto])),
            }
            acc
        });
        let request = ExportTraceServiceRequest {
            resource_spans: by_service.into_iter().map(|(service, spans)| resource(service, spans)).collect(),
        };
        let (status, body, _) = post_raw(
            &peer,
            "/v1/traces",
            &[("content-type", "application/x-protobuf")],
            request.encode_to_vec(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{name}: {}", String::from_utf8_lossy(&body));
        // Waiting halves are given up after fast_correlation's 300 ms.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let (status, graph) = peer.get("/api/v1/graph?window=5m").await;
        assert_eq!(status, StatusCode::OK, "{name}: {graph}");
        let mut got: Vec<_> = graph["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .map(|e| {
                let text = |field: &str| e[field].as_str().map(str::to_string);
                (
                    text("from"),
                    text("to"),
                    text("kind"),
                    text("virtual"),
                    e["calls"].as_u64(),
                    e["errors"].as_u64(),
                )
            })
            .collect();
        got.sort();
        let want: Vec<_> = expected
            .iter()
            .map(|(f, t, k, v, _, c, e)| {
                let text = |s: &str| Some(s.to_string());
                (text(f), text(t), text(k), v.map(str::to_string), Some(*c), Some(*e))
            })
            .collect();
        assert_eq!(got, want, "{name}");
        // The anchors' own metrics: the same series, with their connection_type.
        let (_, metrics) = crate::exposition::metrics(&peer).await;
        for (from, to, _, _, connection_type, calls, errors) in expected.iter() {
            let labels = [("client", *from), ("server", *to), ("connection_type", *connection_type)];
            assert_eq!(metrics.value("traces_service_graph_request_total", &labels), *calls as f64, "{name}");
            assert_eq!(
                metrics.value("traces_service_graph_request_failed_total", &labels),
                *errors as f64,
                "{name}"
            );
        }
        assert_eq!(metrics.named("traces_service_graph_request_total").len(), expected.len(), "{name}");
    }
}

#[tokio::test]
async fn virtual_nodes_are_marked_in_the_graph_and_metrics_and_a_callee_that_reports_is_not_one() {
    let peer = TestPeer::with_correlation(default_limits(), fast_correlation());
    let stripe = [attr("peer.service", "stripe")];
    let payments = [attr("peer.service", "payments")];
    // Trace 1: a root server span of web, and checkout calling stripe, which reports
    // nothing. Trace 2: checkout -> payments, answered. Trace 3: checkout -> payments,
    // whose server half was lost: a virtual call of an edge whose callee does report.
    let request = ExportTraceServiceRequest {
        resource_spans: vec![
            resource("web", vec![proto_span(1, 1, None, 2, 0, 30, vec![])]),
            resource(
                "checkout",
                vec![
                    proto_span(1, 3, Some(2), 3, 4, 10, stripe.to_vec()),
                    proto_span(2, 4, None, 3, 4, 10, payments.to_vec()),
                    proto_span(3, 6, None, 3, 4, 10, payments.to_vec()),
                ],
            ),
            resource("payments", vec![proto_span(2, 5, Some(4), 2, 5, 8, vec![])]),
        ],
    };
    let (status, body, _) =
        post_raw(&peer, "/v1/traces", &[("content-type", "application/x-protobuf")], request.encode_to_vec())
            .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (_, graph) = peer.get("/api/v1/graph?window=5m").await;
    let edge = |from: &str, to: &str| {
        graph["edges"].as_array().unwrap().iter().find(|e| e["from"] == from && e["to"] == to).cloned()
    };
    assert_eq!(edge("checkout", "stripe").expect("stripe")["virtual"], "server", "{graph}");
    assert_eq!(edge("user", "web").expect("user")["virtual"], "client", "{graph}");
    let to_payments = edge("checkout", "payments").expect("payments");
    assert_eq!((to_payments["calls"].as_u64(), to_payments.get("virtual")), (Some(2), None), "{graph}");
    let virtual_nodes: Vec<&str> = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["virtual"] == true)
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(virtual_nodes, ["stripe", "user"], "{graph}");
    // In /metrics the lost half is a series of its own, as Tempo would count it.
    let (_, metrics) = crate::exposition::metrics(&peer).await;
    let calls = |server: &str, connection_type: &str| {
        metrics.value(
            "traces_service_graph_request_total",
            &[("client", "checkout"), ("server", server), ("connection_type", connection_type)],
        )
    };
    assert_eq!((calls("payments", ""), calls("payments", "virtual_node")), (1.0, 1.0));
    assert_eq!(calls("stripe", "virtual_node"), 1.0);
}

#[tokio::test]
async fn sampled_spans_count_their_adjusted_calls_read_from_trace_state_an_attribute_or_jaeger_tags() {
    let peer = TestPeer::with_correlation(default_limits(), fast_correlation());
    // Kept with probability 1/4 (`th:c`: three quarters dropped): each pair is 4 calls.
    let sampled = |mut span: ProtoSpan| {
        span.trace_state = Bytes::from_static(b"vendor=x,ot=th:c;rv:0123456789abcd");
        span
    };
    let ratio = KeyValue {
        key: Bytes::from_static(b"X-SampleRatio"),
        value: Some(AnyValue { string_value: None, double_value: Some(0.5) }),
    };
    let request = ExportTraceServiceRequest {
        resource_spans: vec![
            resource("web", vec![sampled(proto_span(1, 2, Some(1), 3, 0, 10, vec![]))]),
            resource("api", vec![sampled(proto_span(1, 3, Some(2), 2, 1, 8, vec![]))]),
            // A root kept with probability 1/2, said by the attribute: 2 calls from user.
            resource("batch", vec![proto_span(2, 4, None, 2, 0, 10, vec![ratio])]),
        ],
    };
    let (status, body, _) =
        post_raw(&peer, "/v1/traces", &[("content-type", "application/x-protobuf")], request.encode_to_vec())
            .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    // Jaeger's tags through Zipkin: a root of `cron` kept with probability 0.2.
    let ts = now_ms() as u64 * 1_000 - 1_000_000;
    let zipkin = json!([{"traceId": "463ac35c9f6413ad", "id": "a2fb4a1d1a96d312", "kind": "SERVER", "timestamp": ts,
        "duration": 9000, "localEndpoint": {"serviceName": "cron"},
        "tags": {"sampler.type": "probabilistic", "sampler.param": "0.2"}}]);
    let (status, body, _) = post_raw(
        &peer,
        "/api/v2/spans",
        &[("content-type", "application/json")],
        zipkin.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{}", String::from_utf8_lossy(&body));
    let expected = [
        edge("user", "batch", "request", 2, 0, 1),
        edge("user", "cron", "request", 5, 0, 1),
        edge("web", "api", "request", 4, 0, 1),
    ];
    wait_for_edges(&peer, &expected).await;
    let (_, graph) = peer.get("/api/v1/graph?window=5m").await;
    for e in graph["edges"].as_array().unwrap() {
        assert_eq!(e["calls_estimated"], true, "{e}");
        let [low, high] = [0, 1].map(|i| e["calls_interval"][i].as_u64().expect("an interval"));
        let calls = e["calls"].as_u64().unwrap();
        // One kept call stands for `calls`: the interval is wide, and holds at least the one seen.
        assert!(1 <= low && low <= calls && calls < high, "{e}");
    }
    let (_, status) = peer.get("/api/v1/status").await;
    assert_eq!(status["correlation"]["edges_estimated"], 3, "{status}");
}
