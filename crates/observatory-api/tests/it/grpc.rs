//! OTLP/gRPC through the gRPC router: gRPC framing, gzip, the answer and its trailers,
//! and the OTLP status codes (final INVALID_ARGUMENT, retryable RESOURCE_EXHAUSTED with
//! a RetryInfo, UNIMPLEMENTED for other methods).

use std::io::Write;

use axum::body::Body;
use axum::http::{HeaderMap, Request};
use bytes::Bytes;
use http_body_util::BodyExt;
use observatory_api::ApiLimits;
use observatory_api::grpc::EXPORT_PATH;
use observatory_api::otlp::{ExportTraceServiceRequest, ExportTraceServiceResponse, ProtoSpan, Status};
use prost::Message;
use tower::ServiceExt;

use crate::spans::{attr, edge, graph_edges, proto_span, resource};
use crate::{TestPeer, default_limits};

/// One gRPC message frame: compressed flag, length, message.
fn frame(message: &[u8], compressed: bool) -> Vec<u8> {
    let mut out = vec![u8::from(compressed)];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// What came back: the gRPC status code and message (from the trailers, or the headers
/// of a trailers-only answer), every header and trailer, and the answer's message.
struct Answer {
    code: String,
    message: String,
    metadata: HeaderMap,
    body: Vec<u8>,
}

async fn call(router: &axum::Router, path: &str, body: Vec<u8>, gzip: bool) -> Answer {
    let mut request = Request::post(path).header("content-type", "application/grpc").header("te", "trailers");
    if gzip {
        request = request.header("grpc-encoding", "gzip");
    }
    let response =
        router.clone().oneshot(request.body(Body::from(body)).expect("request")).await.expect("answer");
    assert_eq!(response.status(), 200, "gRPC answers are HTTP 200");
    let mut metadata = response.headers().clone();
    let collected = response.into_body().collect().await.expect("body");
    if let Some(trailers) = collected.trailers() {
        metadata.extend(trailers.clone());
    }
    let bytes = collected.to_bytes();
    let body = if bytes.len() >= 5 { bytes[5..].to_vec() } else { Vec::new() };
    let text =
        |key: &str| metadata.get(key).map(|v| v.to_str().unwrap_or("?").to_string()).unwrap_or_default();
    Answer { code: text("grpc-status"), message: text("grpc-message"), body, metadata: metadata.clone() }
}

fn shop_request() -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![
            resource(
                "frontend",
                vec![proto_span(1, 1, None, 2, 0, 100, vec![]), proto_span(1, 2, Some(1), 3, 5, 60, vec![])],
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
                    // Refused: a span id of zeros.
                    ProtoSpan {
                        span_id: Bytes::from(vec![0; 8]),
                        ..proto_span(1, 5, Some(3), 3, 12, 3, vec![])
                    },
                ],
            ),
        ],
    }
}

#[tokio::test]
async fn export_takes_spans_plain_and_gzipped_and_names_refused_ones_in_partial_success() {
    let peer = TestPeer::new(default_limits());
    let answer = call(&peer.grpc, EXPORT_PATH, frame(&shop_request().encode_to_vec(), false), false).await;
    assert_eq!(answer.code, "0", "OK: {}", answer.message);
    let response =
        ExportTraceServiceResponse::decode(&answer.body[..]).expect("an ExportTraceServiceResponse");
    let partial = response.partial_success.expect("one span was refused");
    assert_eq!(partial.rejected_spans, 1);
    assert!(partial.error_message.contains("span 4: spanId is all zeros"), "{}", partial.error_message);
    assert_eq!(
        graph_edges(&peer).await,
        vec![
            edge("checkout", "orders", "database", 1, 0, 1),
            edge("frontend", "checkout", "request", 1, 1, 1),
            edge("user", "frontend", "request", 1, 0, 1),
        ]
    );

    // The same spans gzipped, in another trace: the counts double.
    let mut request = shop_request();
    for span in request.resource_spans.iter_mut().flat_map(|r| &mut r.scope_spans).flat_map(|s| &mut s.spans)
    {
        span.trace_id = Bytes::from(vec![7; 16]);
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&request.encode_to_vec()).expect("gzip");
    let answer = call(&peer.grpc, EXPORT_PATH, frame(&gz.finish().expect("gzip"), true), true).await;
    assert_eq!(answer.code, "0", "OK: {}", answer.message);
    assert_eq!(
        graph_edges(&peer).await,
        vec![
            edge("checkout", "orders", "database", 2, 0, 2),
            edge("frontend", "checkout", "request", 2, 2, 2),
            edge("user", "frontend", "request", 2, 0, 2),
        ]
    );
    let (_, status) = peer.get("/api/v1/status").await;
    assert_eq!(status["ingest"]["spans_received"], 10, "{status}");
    assert_eq!(status["ingest"]["spans_rejected"]["invalid_span_id"], 2, "{status}");
}

#[tokio::test]
async fn requests_that_cannot_succeed_are_final_and_other_methods_unimplemented() {
    let peer = TestPeer::new(ApiLimits { body_bytes_max: 4096, ..default_limits() });
    let garbage = call(&peer.grpc, EXPORT_PATH, frame(&[0xff, 0xff, 0xff], false), false).await;
    assert_eq!(garbage.code, "3", "INVALID_ARGUMENT: {}", garbage.message);
    assert!(garbage.message.contains("ExportTraceServiceRequest"), "{}", garbage.message);

    // Over limits.body_bytes_max: tonic says OUT_OF_RANGE, which exporters retry; final here.
    let big = call(&peer.grpc, EXPORT_PATH, frame(&vec![0u8; 5000], false), false).await;
    assert_eq!(big.code, "3", "INVALID_ARGUMENT: {}", big.message);
    assert!(big.message.contains("limits.body_bytes_max"), "{}", big.message);

    let other = call(
        &peer.grpc,
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        frame(&[], false),
        false,
    )
    .await;
    assert_eq!(other.code, "12", "UNIMPLEMENTED: {}", other.message);

    let (_, status) = peer.get("/api/v1/status").await;
    let rejected = &status["ingest"]["requests_rejected"];
    assert_eq!(
        (rejected["bad_request"].as_u64(), rejected["too_large"].as_u64()),
        (Some(1), Some(1)),
        "{status}"
    );
}

#[tokio::test]
async fn an_overloaded_peer_answers_resource_exhausted_with_a_retry_delay() {
    // No ingest place free, ever (requests hold one only while they are taken, too briefly
    // for a test to catch).
    let peer = TestPeer::new(ApiLimits { ingest_requests_in_flight_max: 0, ..default_limits() });
    let answer = call(&peer.grpc, EXPORT_PATH, frame(&shop_request().encode_to_vec(), false), false).await;
    assert_eq!(answer.code, "8", "RESOURCE_EXHAUSTED: {}", answer.message);
    assert!(answer.message.contains("ingest_requests_in_flight_max"), "{}", answer.message);
    // RetryInfo { retry_delay: 1 s } where the SDKs look: the status details and the trailer.
    let retry = answer.metadata.get("google.rpc.retryinfo-bin").expect("a RetryInfo trailer");
    let decoded = base64_decode(retry.to_str().expect("ASCII"));
    assert_eq!(decoded, vec![0x0a, 0x02, 0x08, 0x01], "RetryInfo {{ retry_delay: {{ seconds: 1 }} }}");
    let details = base64_decode(
        answer.metadata.get("grpc-status-details-bin").expect("status details").to_str().unwrap(),
    );
    assert!(details.windows(decoded.len()).any(|w| w == decoded), "the details hold the RetryInfo");
}

/// gRPC binary metadata: base64, sent without padding.
fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    let config = base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent);
    base64::engine::GeneralPurpose::new(&base64::alphabet::STANDARD, config)
        .decode(text)
        .unwrap_or_else(|e| panic!("not base64 ({e}): {text}"))
}

#[tokio::test]
async fn a_grpc_message_that_trickles_in_holds_no_ingest_place_and_is_refused_below_the_minimum_rate() {
    let peer = TestPeer::new(ApiLimits { ingest_requests_in_flight_max: 1, ..default_limits() });
    // A message that never comes (the test never sends on the channel).
    let (_sender, mut receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let stream = futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx));
    let stalled = Request::post(EXPORT_PATH)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Body::from_stream(stream))
        .expect("request");
    let stalled = tokio::spawn(peer.grpc.clone().oneshot(stalled));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // The one ingest place is free for an export whose message comes at once.
    let answer = call(&peer.grpc, EXPORT_PATH, frame(&shop_request().encode_to_vec(), false), false).await;
    assert_eq!(answer.code, "0", "{}", answer.message);
    let response = stalled.await.expect("the task").expect("an answer");
    let headers = response.headers().clone();
    let collected = response.into_body().collect().await.expect("body");
    let mut metadata = headers;
    if let Some(trailers) = collected.trailers() {
        metadata.extend(trailers.clone());
    }
    assert_eq!(
        metadata.get("grpc-status").map(|v| v.to_str().unwrap().to_string()),
        Some("14".into()),
        "UNAVAILABLE"
    );
    let message =
        metadata.get("grpc-message").map(|v| v.to_str().unwrap_or("").to_string()).unwrap_or_default();
    assert!(message.contains("body_min_rate"), "{message}");
}
