//! The sparse latency histograms against the `hdrhistogram` crate, which they claim to
//! match bucket for bucket, quantile for quantile.

use std::collections::BTreeMap;

use observatory_core::histogram::{
    COUNT_MAX, HistogramError, INDEX_COUNT, LATENCY_US_HIGHEST, highest_value_at, index_for, lowest_value_at,
    median_value_at,
};
use observatory_core::{LatencyAccumulator, LatencyHistogram};
use proptest::prelude::*;

use crate::{cases, hdr, latency_us};

/// Samples as `(latency µs, count)`.
fn samples() -> impl Strategy<Value = Vec<(u64, u64)>> {
    proptest::collection::vec((latency_us(), prop_oneof![3 => Just(1u64), 1 => 1..1_000u64]), 0..200)
}

fn histogram_of(samples: &[(u64, u64)]) -> LatencyHistogram {
    let mut h = LatencyHistogram::new();
    for &(value, count) in samples {
        h.record(value, count).expect("far below the counter maximum");
    }
    h
}

/// The counters of a histogram as a map, to compute expectations independently of it.
fn counters(h: &LatencyHistogram) -> BTreeMap<u16, u64> {
    h.counters().collect()
}

/// Values that sit on the edges of HdrHistogram's buckets, where off-by-one errors live.
fn edgy_value() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..=LATENCY_US_HIGHEST,
        (0u32..32, -1i64..=1).prop_map(|(shift, d)| ((1i64 << shift) + d).max(0) as u64),
        LATENCY_US_HIGHEST - 100..=LATENCY_US_HIGHEST,
    ]
}

#[test]
fn every_index_is_a_contiguous_hdrhistogram_bucket() {
    let oracle = hdr();
    for index in 0..INDEX_COUNT as u16 {
        let low = lowest_value_at(index);
        let high = highest_value_at(index);
        assert_eq!(index_for(low), index, "lowest value of counter {index}");
        assert_eq!(index_for(high), index, "highest value of counter {index}");
        assert_eq!(oracle.lowest_equivalent(high), low, "counter {index}");
        assert_eq!(oracle.highest_equivalent(low), high, "counter {index}");
        if usize::from(index) + 1 < INDEX_COUNT {
            assert_eq!(
                lowest_value_at(index + 1),
                high + 1,
                "counters {index} and {} are adjacent",
                index + 1
            );
        }
    }
    assert_eq!(lowest_value_at(0), 0);
    assert!(highest_value_at(INDEX_COUNT as u16 - 1) >= LATENCY_US_HIGHEST);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases() * 4))]

    #[test]
    fn indices_agree_with_hdrhistogram(value in edgy_value()) {
        let oracle = hdr();
        let index = index_for(value);
        prop_assert!(usize::from(index) < INDEX_COUNT);
        prop_assert_eq!(lowest_value_at(index), oracle.lowest_equivalent(value));
        prop_assert_eq!(highest_value_at(index), oracle.highest_equivalent(value));
        prop_assert_eq!(median_value_at(index), oracle.median_equivalent(value));
    }

    #[test]
    fn values_above_the_bound_are_clamped(value in LATENCY_US_HIGHEST..=u64::MAX) {
        prop_assert_eq!(index_for(value), index_for(LATENCY_US_HIGHEST));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// Summing histograms with the accumulator gives what `hdrhistogram` gives for the
    /// same samples recorded into one histogram.
    #[test]
    fn accumulated_quantiles_match_hdrhistogram(
        samples in samples(),
        parts in 1usize..5,
        quantile in 0.0f64..=1.0,
    ) {
        let mut oracle = hdr();
        let mut histograms = vec![LatencyHistogram::new(); parts];
        for (i, &(value, count)) in samples.iter().enumerate() {
            oracle.record_n(value.min(LATENCY_US_HIGHEST), count).expect("within the bounds");
            histograms[i % parts].record(value, count).expect("far below the counter maximum");
        }
        let mut accumulator = LatencyAccumulator::default();
        // Fill it with something first: clearing must leave nothing behind.
        accumulator.add(&histogram_of(&[(7, 3), (LATENCY_US_HIGHEST, 1)]));
        accumulator.clear();
        for h in &histograms {
            accumulator.add(h);
        }
        prop_assert_eq!(accumulator.samples(), oracle.len());
        prop_assert_eq!(histograms.iter().map(LatencyHistogram::len).sum::<u64>(), oracle.len());
        for q in [0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0, quantile] {
            prop_assert_eq!(accumulator.value_at_quantile(q), oracle.value_at_quantile(q), "quantile {}", q);
        }
        match accumulator.summary() {
            None => prop_assert!(oracle.is_empty()),
            Some(summary) => {
                prop_assert_eq!(summary.samples, oracle.len());
                prop_assert_eq!(summary.max_us, oracle.max());
                prop_assert_eq!(summary.p50_us, oracle.value_at_quantile(0.5));
                prop_assert_eq!(summary.p90_us, oracle.value_at_quantile(0.9));
                prop_assert_eq!(summary.p95_us, oracle.value_at_quantile(0.95));
                prop_assert_eq!(summary.p99_us, oracle.value_at_quantile(0.99));
                let mean = oracle.mean();
                prop_assert!(
                    (summary.mean_us - mean).abs() <= 1e-6 * mean.abs().max(1.0),
                    "mean {} against hdrhistogram's {}", summary.mean_us, mean
                );
            }
        }
    }

    #[test]
    fn add_then_subtract_is_the_identity(a in samples(), b in samples()) {
        let (ha, hb) = (histogram_of(&a), histogram_of(&b));
        let mut sum = ha.clone();
        sum.add(&hb).expect("no overflow");
        let all: Vec<_> = a.iter().chain(&b).copied().collect();
        prop_assert_eq!(&sum, &histogram_of(&all), "adding is recording both sets of samples");
        prop_assert_eq!(sum.len(), ha.len() + hb.len());
        prop_assert!(sum.contains(&ha).is_ok());
        prop_assert!(sum.contains(&hb).is_ok());
        sum.subtract(&hb).expect("the sum contains b");
        prop_assert_eq!(&sum, &ha);
        sum.subtract(&ha).expect("the sum contains a");
        prop_assert!(sum.is_empty());
        prop_assert_eq!(sum, LatencyHistogram::new());
    }

    #[test]
    fn subtracting_what_is_not_contained_fails_and_changes_nothing(a in samples(), b in samples()) {
        let (ha, hb) = (histogram_of(&a), histogram_of(&b));
        let (ca, cb) = (counters(&ha), counters(&hb));
        let contained = cb.iter().all(|(i, &n)| ca.get(i).copied().unwrap_or(0) >= n);
        prop_assert_eq!(ha.contains(&hb).is_ok(), contained);
        let mut after = ha.clone();
        let result = after.subtract(&hb);
        if contained {
            prop_assert!(result.is_ok());
            let expected: BTreeMap<u16, u64> = ca
                .iter()
                .map(|(&i, &n)| (i, n - cb.get(&i).copied().unwrap_or(0)))
                .filter(|&(_, n)| n > 0)
                .collect();
            prop_assert_eq!(counters(&after), expected);
        } else {
            prop_assert!(matches!(result, Err(HistogramError::NotContained { .. })), "{:?}", result);
            prop_assert_eq!(after, ha);
        }
    }

    #[test]
    fn encoding_round_trips(samples in samples()) {
        let h = histogram_of(&samples);
        let mut bytes = Vec::new();
        h.encode(&mut bytes);
        prop_assert_eq!(LatencyHistogram::decode(&bytes), Ok(h));
    }

    #[test]
    fn decoding_garbage_never_panics(garbage in proptest::collection::vec(any::<u8>(), 0..64)) {
        check_decoded(&garbage)?;
    }

    /// Small bytes are valid varints of small numbers: these often decode, so the checks
    /// on what is accepted get exercised.
    #[test]
    fn decoding_small_numbers_accepts_only_well_formed_histograms(
        bytes in proptest::collection::vec(0u8..4, 0..12),
    ) {
        check_decoded(&bytes)?;
    }

    #[test]
    fn decoding_damaged_encodings_never_panics(
        samples in samples(),
        damage in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = Vec::new();
        histogram_of(&samples).encode(&mut bytes);
        for (at, byte) in damage {
            let at = at.index(bytes.len());
            bytes[at] = byte;
        }
        check_decoded(&bytes)?;
        check_decoded(&bytes[..cut.index(bytes.len() + 1)])?;
    }
}

/// Decodes arbitrary bytes; whatever is accepted must be a well-formed histogram.
fn check_decoded(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(h) = LatencyHistogram::decode(bytes) {
        let counters: Vec<_> = h.counters().collect();
        prop_assert!(counters.windows(2).all(|w| w[0].0 < w[1].0), "indices increase");
        prop_assert!(counters.iter().all(|&(i, n)| usize::from(i) < INDEX_COUNT && n > 0 && n <= COUNT_MAX));
        let mut again = Vec::new();
        h.encode(&mut again);
        prop_assert_eq!(LatencyHistogram::decode(&again), Ok(h));
    }
    Ok(())
}

#[test]
fn counters_refuse_to_overflow_and_stay_unchanged() {
    let mut full = LatencyHistogram::new();
    full.record(100, COUNT_MAX).expect("the maximum fits");
    let before = full.clone();
    assert_eq!(full.record(100, 1), Err(HistogramError::Overflow));
    assert_eq!(full, before);
    assert_eq!(LatencyHistogram::new().record(5, COUNT_MAX + 1), Err(HistogramError::Overflow));

    // One counter overflows, another is new: nothing of the addition may be applied.
    let mut other = LatencyHistogram::new();
    other.record(1, 1).expect("fits");
    other.record(100, 1).expect("fits");
    other.record(1_000_000, 1).expect("fits");
    assert_eq!(full.add(&other), Err(HistogramError::Overflow));
    assert_eq!(full, before);
}

#[test]
fn malformed_encodings_are_rejected() {
    let malformed: [(&str, &[u8]); 8] = [
        ("empty input", &[]),
        ("missing counter", &[1]),
        ("repeated index", &[2, 5, 1, 0, 1]),
        ("zero count", &[1, 5, 0]),
        ("index beyond the bounds", &[1, 0xff, 0xff, 0x03, 1]),
        ("more counters than indices", &[0xff, 0xff, 0x03]),
        ("trailing bytes", &[1, 5, 1, 0]),
        (
            "varint longer than 64 bits",
            &[1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 1],
        ),
    ];
    for (what, bytes) in malformed {
        assert!(
            matches!(LatencyHistogram::decode(bytes), Err(HistogramError::Malformed(_))),
            "{what}: {:?}",
            LatencyHistogram::decode(bytes)
        );
    }
    let mut h = LatencyHistogram::new();
    h.record(5, 1).expect("fits");
    assert_eq!(LatencyHistogram::decode(&[1, 5, 1]), Ok(h));
}

fn packed(h: &LatencyHistogram) -> LatencyHistogram {
    let mut packed = h.clone();
    packed.pack();
    packed
}

fn hash_of(h: &LatencyHistogram) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(h)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// A packed histogram (how sealed cells are held) reads, compares, encodes and
    /// combines exactly like the live one it came from.
    #[test]
    fn packed_histograms_behave_like_live_ones(a in samples(), b in samples(), value in latency_us()) {
        let (live_a, live_b) = (histogram_of(&a), histogram_of(&b));
        let (packed_a, packed_b) = (packed(&live_a), packed(&live_b));
        prop_assert_eq!(packed_a.is_packed(), !live_a.is_empty());
        prop_assert_eq!(counters(&packed_a), counters(&live_a));
        prop_assert_eq!(&packed_a, &live_a);
        prop_assert_eq!(hash_of(&packed_a), hash_of(&live_a));
        prop_assert_eq!(packed_a.len(), live_a.len());
        prop_assert_eq!(packed_a.distinct_counters(), live_a.distinct_counters());
        let (mut bytes_packed, mut bytes_live) = (Vec::new(), Vec::new());
        packed_a.encode(&mut bytes_packed);
        live_a.encode(&mut bytes_live);
        prop_assert_eq!(&bytes_packed, &bytes_live);
        prop_assert!(packed_a.heap_bytes() <= live_a.heap_bytes().max(bytes_live.len()));

        for (x, y) in [(&packed_a, &live_b), (&live_a, &packed_b), (&packed_a, &packed_b)] {
            let mut sum = x.clone();
            sum.add(y).expect("no overflow");
            let mut want = live_a.clone();
            want.add(&live_b).expect("no overflow");
            prop_assert_eq!(&sum, &want);
            prop_assert!(sum.contains(y).is_ok() && sum.contains(x).is_ok());
            let mut back = sum.clone();
            back.pack();
            back.subtract(y).expect("contained");
            prop_assert_eq!(&back, &live_a);
        }

        let mut recorded = packed_a.clone();
        recorded.record(value, 3).expect("no overflow");
        let mut want = live_a.clone();
        want.record(value, 3).expect("no overflow");
        prop_assert_eq!(&recorded, &want);
        prop_assert!(!recorded.is_packed(), "a change unpacks");

        let (mut from_packed, mut from_live) = (LatencyAccumulator::default(), LatencyAccumulator::default());
        from_packed.add(&packed_a);
        from_live.add(&live_a);
        prop_assert_eq!(from_packed.summary(), from_live.summary());
    }
}

/// A histogram with thousands of counters encodes to more than ciborium's 4 KiB scratch
/// buffer; it must still come back whole from CBOR (sync messages and store records).
#[test]
fn a_histogram_longer_than_four_kibibytes_round_trips_through_cbor() {
    let mut histogram = LatencyHistogram::new();
    let mut value = 1u64;
    while value < 3_600_000_000 {
        histogram.record(value, 20_000 + value % 1000).expect("in range");
        value = value + value / 200 + 1;
    }
    let mut encoded = Vec::new();
    histogram.encode(&mut encoded);
    assert!(encoded.len() > 4096, "only {} bytes: not long enough to test this", encoded.len());
    let mut cbor = Vec::new();
    ciborium::into_writer(&histogram, &mut cbor).expect("encode");
    let back: LatencyHistogram = ciborium::from_reader(&cbor[..]).expect("decode");
    assert_eq!(back, histogram);
}
