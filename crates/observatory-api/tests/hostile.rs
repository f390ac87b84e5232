//! Hostile bodies: what decoding a request costs in memory, measured with dhat's heap
//! statistics.

use bytes::Bytes;
use observatory_api::otlp;
use observatory_api::spans::SpanLimits;

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

/// The peak heap `f` used above what was held before it ran (one test at a time: the
/// heap is the process's).
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let profiler = dhat::Profiler::builder().testing().build();
    let out = f();
    let peak = dhat::HeapStats::get().max_bytes;
    drop(profiler);
    (out, peak)
}

/// An 8 MiB body of as many empty spans as fit, in each span format: `(format, body)`.
fn empty_spans() -> Vec<(&'static str, Bytes)> {
    const BODY: usize = 8 << 20;
    // OTLP protobuf: 2 bytes a span (field 2, length 0) in one scope of one resource.
    let spans = (BODY - 16) / 2;
    let mut scope = Vec::with_capacity(spans * 2);
    for _ in 0..spans {
        scope.extend_from_slice(&[0x12, 0x00]);
    }
    let mut resource_spans = vec![0x12]; // field 2 (scope spans)
    prost::encoding::encode_varint(scope.len() as u64, &mut resource_spans);
    resource_spans.extend_from_slice(&scope);
    let mut protobuf = vec![0x0a]; // field 1 (resource spans)
    prost::encoding::encode_varint(resource_spans.len() as u64, &mut protobuf);
    protobuf.extend_from_slice(&resource_spans);
    // JSON: `{}` spans, 3 bytes each.
    let empties = |n: usize| vec!["{}"; n].join(",");
    let otlp_json =
        format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{}]}}]}}]}}"#, empties((BODY - 64) / 3));
    let zipkin = format!("[{}]", empties((BODY - 2) / 3));
    vec![
        ("OTLP protobuf", Bytes::from(protobuf)),
        ("OTLP/JSON", Bytes::from(otlp_json)),
        ("Zipkin", Bytes::from(zipkin)),
    ]
}

#[test]
fn millions_of_empty_spans_cost_no_memory_per_span_in_any_format() {
    let limits = otlp_limits();
    // One after the other: the heap statistics are the process's.
    for (format, body) in empty_spans() {
        let len = body.len();
        let (decoded, peak) = peak_of(|| match format {
            "OTLP protobuf" => otlp::decode_protobuf(body, &limits),
            "OTLP/JSON" => otlp::decode_json(&body, &limits),
            _ => observatory_api::zipkin::decode_json(&body, &limits),
        });
        let decoded = decoded.unwrap_or_else(|e| panic!("{format}: a valid request: {e}"));
        assert!(decoded.spans.is_empty(), "{format}: no empty span is valid");
        assert!(decoded.rejected_count() > 2_000_000, "{format}: every span refused");
        assert!(decoded.rejected.len() <= observatory_api::spans::REASONS_KEPT);
        eprintln!("{format}: decoding {len} bytes of empty spans peaked at {peak} bytes of heap");
        assert!(
            peak <= 8 * len,
            "{format}: decoding {len} bytes took {peak} bytes at its peak ({}x)",
            peak / len
        );
    }
}

/// The span limits of a peer with the documented defaults.
fn otlp_limits() -> SpanLimits {
    let limits = &observatory_config::Config::defaults().limits;
    SpanLimits::new(limits.node_name_bytes_max, limits.spans_per_request_max)
}
