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

#[test]
fn millions_of_empty_otlp_spans_cost_no_memory_per_span() {
    // 4 million empty spans in one scope (2 bytes each): the 8 MiB body of the finding.
    let spans = 4_000_000usize;
    let mut scope = Vec::with_capacity(spans * 2);
    for _ in 0..spans {
        scope.extend_from_slice(&[0x12, 0x00]); // field 2 (a span), length 0
    }
    let mut resource_spans = vec![0x12]; // field 2 (scope spans)
    prost::encoding::encode_varint(scope.len() as u64, &mut resource_spans);
    resource_spans.extend_from_slice(&scope);
    let mut body = vec![0x0a]; // field 1 (resource spans)
    prost::encoding::encode_varint(resource_spans.len() as u64, &mut body);
    body.extend_from_slice(&resource_spans);
    let len = body.len();
    let body = Bytes::from(body);
    let limits = otlp_limits();
    let (decoded, peak) = peak_of(|| otlp::decode_protobuf(body, &limits).expect("a valid request"));
    assert_eq!(decoded.rejected_count(), spans, "every span refused (no resource, no ids, too many)");
    assert!(decoded.rejected.len() <= observatory_api::spans::REASONS_KEPT);
    eprintln!("decoding {len} bytes of empty spans peaked at {peak} bytes of heap");
    assert!(peak <= 8 * len, "decoding {len} bytes took {peak} bytes at its peak ({}x)", peak / len);
}

/// The span limits of a peer with the documented defaults.
fn otlp_limits() -> SpanLimits {
    let limits = &observatory_config::Config::defaults().limits;
    SpanLimits::new(limits.node_name_bytes_max, limits.spans_per_request_max)
}
