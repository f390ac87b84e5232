//! Hostile bodies: what decoding a request costs in memory, measured with dhat's heap
//! statistics.

use bytes::Bytes;
use observatory_api::otlp;
use observatory_api::spans::SpanLimits;

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

/// Held by each test throughout: the heap statistics are the whole process's.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

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
    let _one = one_at_a_time();
    let limits = otlp_limits();
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

#[test]
fn a_cbor_event_of_millions_of_values_costs_no_memory_per_value() {
    let _one = one_at_a_time();
    use observatory_api::events::{BodyFormat, ParseLimits, parse_body};
    let limits = &observatory_config::Config::defaults().limits;
    let limits = ParseLimits {
        events_per_request_max: limits.events_per_request_max,
        node_name_bytes_max: limits.node_name_bytes_max,
        event_count_max: limits.event_count_max,
    };
    let zeros = 8_000_000usize;
    // `[[0, 0, ...]]` and `[{"from": [0, 0, ...]}]`: one item, an array of zeros.
    let mut array = vec![0x9b]; // an array of 8-byte length
    array.extend_from_slice(&(zeros as u64).to_be_bytes());
    array.extend(std::iter::repeat_n(0u8, zeros));
    let mut in_list = vec![0x81];
    in_list.extend_from_slice(&array);
    let mut in_map = vec![0x81, 0xa1, 0x64];
    in_map.extend_from_slice(b"from");
    in_map.extend_from_slice(&array);
    for (what, body) in [("an array item", in_list), ("a field's value", in_map)] {
        let len = body.len();
        let (parsed, peak) = peak_of(|| parse_body(BodyFormat::Cbor, &body, 1_800_000_000_000, &limits));
        let parsed = parsed.unwrap_or_else(|e| panic!("{what}: the body is CBOR: {e:?}"));
        assert_eq!((parsed.events.len(), parsed.errors.len()), (0, 1), "{what}: the one event refused");
        eprintln!("CBOR events, zeros in {what}: decoding {len} bytes peaked at {peak} bytes of heap");
        assert!(peak <= 8 * len, "{what}: decoding {len} bytes took {peak} bytes at its peak");
    }
}

/// The span limits of a peer with the documented defaults.
fn otlp_limits() -> SpanLimits {
    let limits = &observatory_config::Config::defaults().limits;
    SpanLimits::new(limits.node_name_bytes_max, limits.spans_per_request_max)
}
