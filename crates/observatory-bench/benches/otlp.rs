//! OTLP ingest figures, each with a baseline measured in the same run.
//!
//! - `ingest`: OTLP/HTTP protobuf spans per second end to end through one peer (HTTP on
//!   loopback, decode, pairing, the writer with `ack: durable` and `accepted`), against
//!   decoding the same payloads with prost into the full OTLP schema
//!   (`opentelemetry-proto`), and against our own lean decoding; then the same payloads
//!   over OTLP/gRPC (tonic's client), against the OTLP/HTTP figure of the same run.
//! - `pairing`: spans per second through three correlators when every trace is split
//!   across the three (halves handed to the owner as CBOR, as over the mesh), against the
//!   same spans all at one correlator.
//!
//! `cargo bench -p observatory-bench --bench otlp [-- ingest|pairing]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use observatory_api::PeerApi;
use observatory_api::spans::SpanLimits;
use observatory_bench::unix_now_ms;
use observatory_bench::{ServedPeer, rate_per_s, thousands};
use observatory_core::commit::AckMode;
use observatory_correlate::{Correlator, Span};
use observatory_sync::wire::{self, MeshMessage};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span as OtlpSpan, Status, span::SpanKind,
};
use prost::Message;

/// Spans per request, as the OpenTelemetry SDKs' batch processors send by default.
const SPANS_PER_REQUEST: usize = 512;
/// Spans per trace in the generated traffic (see `trace_spans`).
const SPANS_PER_TRACE: usize = 8;

fn main() {
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wanted = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    println!("observatory OTLP benchmarks (figures, with same-run baselines)\n");
    if wanted("ingest") {
        bench_ingest();
    }
    if wanted("pairing") {
        bench_pairing();
    }
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::IntValue(value)) }) }
}

/// One trace of a shop as SDKs report it, by service: frontend (root SERVER, an
/// INTERNAL render, a CLIENT to checkout), checkout (SERVER, a database CLIENT, a
/// PRODUCER, an INTERNAL), shipping (CONSUMER). Attributes as HTTP and database
/// instrumentations set them.
fn trace_spans(trace: u64, start_ns: u64) -> [(usize, OtlpSpan); SPANS_PER_TRACE] {
    let trace_id = [trace.to_be_bytes(), (trace ^ 0x5eed).to_be_bytes()].concat();
    let id = |n: u64| ((trace << 4) | n).to_be_bytes().to_vec();
    let span =
        |n: u64, parent: Option<u64>, kind: SpanKind, at_ms: u64, dur_ms: u64, attributes: Vec<KeyValue>| {
            OtlpSpan {
                trace_id: trace_id.clone(),
                span_id: id(n),
                parent_span_id: parent.map(id).unwrap_or_default(),
                name: format!("{kind:?} operation"),
                kind: kind as i32,
                start_time_unix_nano: start_ns + at_ms * 1_000_000,
                end_time_unix_nano: start_ns + (at_ms + dur_ms) * 1_000_000,
                attributes,
                status: Some(Status {
                    code: if trace.is_multiple_of(50) { 2 } else { 0 },
                    message: String::new(),
                }),
                ..OtlpSpan::default()
            }
        };
    let http = |method: &str, route: &str| {
        vec![
            text("http.request.method", method),
            text("http.route", route),
            text("url.scheme", "http"),
            int("http.response.status_code", 200),
            text("network.protocol.version", "1.1"),
        ]
    };
    [
        (0, span(1, None, SpanKind::Server, 0, 90, http("GET", "/cart"))),
        (0, span(2, Some(1), SpanKind::Internal, 1, 5, vec![text("template", "cart.html")])),
        (
            0,
            span(
                3,
                Some(1),
                SpanKind::Client,
                10,
                70,
                [http("POST", "/checkout"), vec![text("server.address", "checkout")]].concat(),
            ),
        ),
        (1, span(4, Some(3), SpanKind::Server, 12, 60, http("POST", "/checkout"))),
        (
            1,
            span(
                5,
                Some(4),
                SpanKind::Client,
                14,
                8,
                vec![
                    text("db.system", "postgresql"),
                    text("db.name", "orders"),
                    text("db.statement", "INSERT INTO orders VALUES ($1, $2)"),
                ],
            ),
        ),
        (
            1,
            span(
                6,
                Some(4),
                SpanKind::Producer,
                30,
                2,
                vec![text("messaging.system", "kafka"), text("messaging.destination.name", "shipments")],
            ),
        ),
        (1, span(7, Some(4), SpanKind::Internal, 40, 3, vec![])),
        (
            2,
            span(
                8,
                Some(6),
                SpanKind::Consumer,
                45,
                20,
                vec![text("messaging.system", "kafka"), text("messaging.destination.name", "shipments")],
            ),
        ),
    ]
}

fn resource(service: &str) -> Resource {
    Resource {
        attributes: vec![
            text("service.name", service),
            text("service.version", "1.4.2"),
            text("host.name", "node-17"),
            text("telemetry.sdk.language", "python"),
            text("telemetry.sdk.name", "opentelemetry"),
            text("telemetry.sdk.version", "1.38.0"),
        ],
        ..Resource::default()
    }
}

/// Requests of `SPANS_PER_REQUEST` spans, each trace's spans grouped by service as an
/// SDK per service would send them.
fn payloads(requests: usize, now_ms: i64) -> Vec<Vec<u8>> {
    let services = ["frontend", "checkout", "shipping"];
    let traces_per_request = SPANS_PER_REQUEST / SPANS_PER_TRACE;
    (0..requests)
        .map(|r| {
            let mut by_service: [Vec<OtlpSpan>; 3] = Default::default();
            for t in 0..traces_per_request {
                let trace = (r * traces_per_request + t) as u64 + 1;
                let start_ns = (now_ms as u64 - 30_000 + (trace % 20_000)) * 1_000_000;
                for (service, span) in trace_spans(trace, start_ns) {
                    by_service[service].push(span);
                }
            }
            let request = ExportTraceServiceRequest {
                resource_spans: services
                    .iter()
                    .zip(by_service)
                    .map(|(service, spans)| ResourceSpans {
                        resource: Some(resource(service)),
                        scope_spans: vec![ScopeSpans {
                            scope: Some(InstrumentationScope {
                                name: "opentelemetry.instrumentation.flask".into(),
                                version: "0.59b0".into(),
                                ..Default::default()
                            }),
                            spans,
                            schema_url: String::new(),
                        }],
                        schema_url: String::new(),
                    })
                    .collect(),
            };
            request.encode_to_vec()
        })
        .collect()
}

fn bench_ingest() {
    println!("== OTLP/HTTP protobuf ingest, {SPANS_PER_REQUEST} spans a request, 8 requests in flight");
    let now = unix_now_ms();
    let payloads = payloads(64, now);
    let spans_total = (payloads.len() * SPANS_PER_REQUEST) as u64;
    let bytes: usize = payloads.iter().map(Vec::len).sum();
    println!(
        "  payload: {} bytes a request, {} bytes a span",
        bytes / payloads.len(),
        bytes / spans_total as usize
    );
    let full_decode = rate_per_s(spans_total, Duration::from_secs(3), || {
        for payload in &payloads {
            let request = ExportTraceServiceRequest::decode(&payload[..]).expect("decodes");
            assert_eq!(request.resource_spans.len(), 3);
        }
    });
    let limits = SpanLimits::new(200, 100_000);
    let bodies: Vec<bytes::Bytes> = payloads.iter().map(|p| bytes::Bytes::from(p.clone())).collect();
    let lean_decode = rate_per_s(spans_total, Duration::from_secs(3), || {
        for body in &bodies {
            let decoded = observatory_api::otlp::decode_protobuf(body.clone(), &limits).expect("decodes");
            assert!(decoded.rejected.is_empty());
        }
    });
    println!(
        "  decode only: prost, full OTLP schema {:>10} spans/s   ours (lean, to spans) {:>10} spans/s",
        thousands(full_decode),
        thousands(lean_decode)
    );
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    for ack in [AckMode::Durable, AckMode::Accepted] {
        let (rate, edges) = runtime.block_on(ingest_end_to_end(&payloads, ack));
        println!(
            "  ack={:<8} end to end {:>10} spans/s ({} edges applied)   ratio to prost full decode {:.2}, to our decode {:.2} (target >= 0.40, >= 500,000 spans/s)",
            format!("{ack:?}").to_lowercase(),
            thousands(rate),
            thousands(edges as f64),
            rate / full_decode,
            rate / lean_decode,
        );
        let (grpc, grpc_edges) = runtime.block_on(ingest_grpc_end_to_end(&payloads, ack));
        println!(
            "  ack={:<8} OTLP/gRPC  {:>10} spans/s ({} edges applied)   ratio to OTLP/HTTP protobuf above {:.2} (target >= 0.80)",
            format!("{ack:?}").to_lowercase(),
            thousands(grpc),
            thousands(grpc_edges as f64),
            grpc / rate,
        );
    }
    println!();
}

/// The same payloads over OTLP/gRPC: 8 exporters, each with a connection of its own
/// (tonic's client, the request bytes sent as they are, as the HTTP client sends them).
async fn ingest_grpc_end_to_end(payloads: &[Vec<u8>], ack: AckMode) -> (f64, u64) {
    let peer = ServedPeer::serve(ack).await;
    let url = format!("http://{}", peer.grpc_addr);
    let payloads: Arc<Vec<bytes::Bytes>> =
        Arc::new(payloads.iter().map(|p| bytes::Bytes::from(p.clone())).collect());
    let start = Instant::now();
    let deadline = Duration::from_secs(4);
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .expect("endpoint")
            .connect()
            .await
            .expect("connects");
        let payloads = payloads.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = tonic::client::Grpc::new(channel);
            let path =
                tonic::codegen::http::uri::PathAndQuery::from_static(observatory_api::grpc::EXPORT_PATH);
            let mut spans = 0u64;
            let mut i = worker;
            while start.elapsed() < deadline {
                client.ready().await.expect("ready");
                let request = tonic::Request::new(payloads[i % payloads.len()].clone());
                match client.unary(request, path.clone(), observatory_api::grpc::BytesCodec).await {
                    Ok(_) => spans += SPANS_PER_REQUEST as u64,
                    Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                        tokio::task::yield_now().await
                    }
                    Err(status) => panic!("gRPC {status}"),
                }
                i += 8;
            }
            spans
        }));
    }
    let mut spans = 0;
    for task in tasks {
        spans += task.await.expect("worker");
    }
    let rate = spans as f64 / start.elapsed().as_secs_f64();
    let edges = peer.peer.applied().events_accepted;
    peer.stop().await;
    (rate, edges)
}

async fn ingest_end_to_end(payloads: &[Vec<u8>], ack: AckMode) -> (f64, u64) {
    let peer = ServedPeer::serve(ack).await;
    let addr = peer.addr;
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/v1/traces");
    let payloads: Arc<Vec<Vec<u8>>> = Arc::new(payloads.to_vec());
    let start = Instant::now();
    let deadline = Duration::from_secs(4);
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let (client, url, payloads) = (client.clone(), url.clone(), payloads.clone());
        tasks.push(tokio::spawn(async move {
            let mut spans = 0u64;
            let mut i = worker;
            while start.elapsed() < deadline {
                let response = client
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .body(payloads[i % payloads.len()].clone())
                    .send()
                    .await
                    .expect("post");
                let status = response.status();
                let body = response.bytes().await.expect("answer");
                match status.as_u16() {
                    200 => spans += SPANS_PER_REQUEST as u64,
                    429 => tokio::task::yield_now().await,
                    other => panic!("HTTP {other}: {}", String::from_utf8_lossy(&body)),
                }
                i += 8;
            }
            spans
        }));
    }
    let mut spans = 0;
    for task in tasks {
        spans += task.await.expect("worker");
    }
    let rate = spans as f64 / start.elapsed().as_secs_f64();
    let edges = peer.peer.applied().events_accepted;
    peer.stop().await;
    (rate, edges)
}

fn bench_pairing() {
    println!("== cross-peer pairing (correlators only, sans IO), {SPANS_PER_REQUEST} spans a batch");
    let now = unix_now_ms();
    let limits = SpanLimits::new(200, 100_000);
    // The same traffic as above, but each batch holds one service's spans only: every
    // trace is split over three batches.
    let batches: Vec<Vec<Span>> = payloads(48, now)
        .into_iter()
        .flat_map(|payload| {
            let decoded = observatory_api::otlp::decode_protobuf(payload.into(), &limits).expect("decodes");
            let mut by_service: std::collections::BTreeMap<String, Vec<Span>> = Default::default();
            for span in decoded.spans {
                by_service.entry(span.service.to_string()).or_default().push(span);
            }
            by_service.into_values().collect::<Vec<_>>()
        })
        .collect();
    let spans_total: u64 = batches.iter().map(|b| b.len() as u64).sum::<u64>()
        + (batches.len() / 3 * SPANS_PER_REQUEST / SPANS_PER_TRACE * 2) as u64; // internal spans, dropped at decode
    let peers: Vec<String> = ["peer-a", "peer-b", "peer-c"].map(String::from).to_vec();
    let one_peer = rate_per_s(spans_total, Duration::from_secs(3), || {
        let mut c = Correlator::new(observatory_config::Config::defaults().correlation().expect("valid"));
        let mut events = 0;
        for batch in &batches {
            events += c.handle_spans(now, batch.clone(), &peers[0], &peers[..1]).events.len();
        }
        assert!(events > 0);
    });
    let three_peers = rate_per_s(spans_total, Duration::from_secs(3), || {
        let mut correlators: Vec<Correlator> = (0..3)
            .map(|_| Correlator::new(observatory_config::Config::defaults().correlation().expect("valid")))
            .collect();
        let mut events = 0;
        for (i, batch) in batches.iter().enumerate() {
            let at = i % 3;
            let out = correlators[at].handle_spans(now, batch.clone(), &peers[at], &peers);
            events += out.events.len();
            for (to, handoff) in out.handoffs {
                let bytes = wire::encode(MeshMessage::Handoff(handoff));
                let Ok(MeshMessage::Handoff(handoff)) = wire::decode(&bytes) else {
                    panic!("a handoff decodes")
                };
                let to = peers.iter().position(|p| *p == to).expect("peer");
                events += correlators[to].handle_handoff(now, handoff).len();
            }
        }
        assert!(events > 0);
    });
    println!(
        "  all spans at one peer {:>10} spans/s   every trace over three peers {:>10} spans/s   ratio {:.2}",
        thousands(one_peer),
        thousands(three_peers),
        three_peers / one_peer
    );
    println!();
}
