//! Latency histograms: HdrHistogram bucketing, stored sparsely.
//!
//! The mesh-wide bounds are fixed: 1 µs to 1 h with 2 significant digits, the same
//! equivalence classes as `hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 2)`.
//! A dense HdrHistogram at these bounds holds 3,287 counters (about 26 KiB); most cells
//! see a few dozen distinct latencies, and a 5-minute query merges 30 cells per edge, so
//! we keep only the non-zero counters, sorted by index. Quantiles, max and mean are
//! computed exactly as HdrHistogram computes them; the integration tests check this
//! against the `hdrhistogram` crate on random samples.

use std::fmt;

/// Lowest latency the histograms discern, in microseconds.
pub const LATENCY_US_LOWEST: u64 = 1;
/// Highest latency the histograms track, in microseconds (one hour). Larger values are
/// recorded as this value.
pub const LATENCY_US_HIGHEST: u64 = 3_600_000_000;
/// Significant decimal digits kept by the histograms.
pub const LATENCY_SIGNIFICANT_DIGITS: u8 = 2;

// Derived exactly as HdrHistogram derives them for (1, 3.6e9, 2):
// largest value with single-unit resolution = 2 * 10^2 = 200, so 256 sub-buckets.
const SUB_BUCKET_HALF_COUNT_MAGNITUDE: u32 = 7;
const SUB_BUCKET_HALF_COUNT: u64 = 1 << SUB_BUCKET_HALF_COUNT_MAGNITUDE;
const SUB_BUCKET_MASK: u64 = (SUB_BUCKET_HALF_COUNT << 1) - 1;
const LEADING_ZERO_COUNT_BASE: u32 = 64 - SUB_BUCKET_HALF_COUNT_MAGNITUDE - 1;

/// Number of distinct counter indices (index of `LATENCY_US_HIGHEST` plus one).
pub const INDEX_COUNT: usize = index_for(LATENCY_US_HIGHEST) as usize + 1;

const COUNT_BITS: u32 = 48;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
/// Largest count one counter can hold (2^48 - 1).
pub const COUNT_MAX: u64 = COUNT_MASK;

const fn bucket_for(value: u64) -> u32 {
    LEADING_ZERO_COUNT_BASE - (value | SUB_BUCKET_MASK).leading_zeros()
}

/// The counter index of a value, as HdrHistogram computes it.
pub const fn index_for(value: u64) -> u16 {
    let value = if value > LATENCY_US_HIGHEST { LATENCY_US_HIGHEST } else { value };
    let bucket = bucket_for(value);
    let sub_bucket = value >> bucket;
    (((bucket as u64 + 1) << SUB_BUCKET_HALF_COUNT_MAGNITUDE) + sub_bucket - SUB_BUCKET_HALF_COUNT) as u16
}

/// The lowest value that maps to a counter index.
pub const fn lowest_value_at(index: u16) -> u64 {
    let index = index as u64;
    let mut bucket = (index >> SUB_BUCKET_HALF_COUNT_MAGNITUDE) as i64 - 1;
    let mut sub_bucket = (index & (SUB_BUCKET_HALF_COUNT - 1)) + SUB_BUCKET_HALF_COUNT;
    if bucket < 0 {
        sub_bucket -= SUB_BUCKET_HALF_COUNT;
        bucket = 0;
    }
    sub_bucket << bucket
}

const fn range_at(index: u16) -> u64 {
    1 << bucket_for(lowest_value_at(index))
}

/// The highest value that maps to a counter index (HdrHistogram's `highest_equivalent`).
pub const fn highest_value_at(index: u16) -> u64 {
    lowest_value_at(index) + range_at(index) - 1
}

/// The middle of a counter's range (HdrHistogram's `median_equivalent`).
pub const fn median_value_at(index: u16) -> u64 {
    lowest_value_at(index) + (range_at(index) >> 1)
}

fn pack(index: u16, count: u64) -> u64 {
    debug_assert!(count <= COUNT_MAX);
    (u64::from(index) << COUNT_BITS) | count
}

fn index_of(entry: u64) -> u16 {
    (entry >> COUNT_BITS) as u16
}

fn count_of(entry: u64) -> u64 {
    entry & COUNT_MASK
}

/// Samples at or below a threshold, with the bounds the counters' precision allows
/// (see [`LatencyHistogram::count_at_or_below_bounds`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BelowThreshold {
    /// Samples certainly at or below.
    pub low: u64,
    /// Samples possibly at or below.
    pub high: u64,
    /// The best estimate, between `low` and `high`.
    pub estimate: f64,
}

/// A latency histogram in microseconds: the non-zero counters, sorted by index.
///
/// Live, each entry packs the index (16 bits) and the count (48 bits) into one `u64`.
/// Once sealed ([`LatencyHistogram::pack`]) it is held in its encoded form instead (a few
/// bytes per counter), which reads stream through without allocating; any change
/// unpacks it first.
#[derive(Clone, Default)]
pub struct LatencyHistogram {
    /// The live counters; empty while packed.
    entries: Vec<u64>,
    /// The encoded counters, when packed.
    packed: Option<Box<[u8]>>,
}

impl PartialEq for LatencyHistogram {
    fn eq(&self, other: &Self) -> bool {
        self.counters().eq(other.counters())
    }
}

impl Eq for LatencyHistogram {}

impl std::hash::Hash for LatencyHistogram {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for counter in self.counters() {
            counter.hash(state);
        }
    }
}

/// The counters of a histogram, live or packed.
#[derive(Debug, Clone)]
pub enum Counters<'a> {
    /// Over live entries.
    Live(std::slice::Iter<'a, u64>),
    /// Decoding packed bytes as it goes.
    Packed {
        /// The index gaps still to read.
        gaps: &'a [u8],
        /// The counts still to read.
        counts: &'a [u8],
        /// Counters left.
        left: usize,
        /// The previous counter's index.
        index: u64,
    },
}

impl Iterator for Counters<'_> {
    type Item = (u16, u64);

    fn next(&mut self) -> Option<(u16, u64)> {
        match self {
            Counters::Live(entries) => entries.next().map(|&e| (index_of(e), count_of(e))),
            Counters::Packed { gaps, counts, left, index } => {
                if *left == 0 {
                    return None;
                }
                *left -= 1;
                // The bytes were written by `encode` and checked when packed.
                *index += get_varint(gaps).expect("packed histograms are well formed");
                let count = get_varint(counts).expect("packed histograms are well formed");
                Some((*index as u16, count))
            }
        }
    }
}

/// Why a histogram operation or decoding failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistogramError {
    /// Subtracting or comparing found a counter that is lower than it must be.
    #[error("counter for {value_us} µs is lower than in the histogram it must contain")]
    NotContained {
        /// Lowest latency of the offending counter.
        value_us: u64,
    },
    /// A counter would exceed `COUNT_MAX`.
    #[error("a latency counter would exceed {COUNT_MAX}")]
    Overflow,
    /// The encoded form is malformed.
    #[error("malformed latency histogram encoding: {0}")]
    Malformed(&'static str),
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of samples recorded.
    pub fn len(&self) -> u64 {
        self.counters().map(|(_, count)| count).sum()
    }

    /// Whether no sample was recorded.
    pub fn is_empty(&self) -> bool {
        self.counters().next().is_none()
    }

    /// Number of samples at or below `value_us`, at the histogram's precision: every
    /// counter up to and including the one `value_us` falls in, as hdrhistogram's
    /// `count_between(0, value_us)`. A sample may thus exceed `value_us` by less than the
    /// width of that counter (under 1% at 2 significant digits). For cumulative buckets
    /// such as Prometheus' `le`.
    pub fn count_at_or_below(&self, value_us: u64) -> u64 {
        let last = index_for(value_us);
        self.counters().take_while(|&(index, _)| index <= last).map(|(_, count)| count).sum()
    }

    /// How many samples lie at or below `threshold_us`, as far as the counters tell:
    /// `low` counts the counters wholly at or below the threshold, `high` adds the one the
    /// threshold falls inside (if it does), and `estimate` adds that counter's share below
    /// the threshold assuming its samples spread evenly over its range. Exact (all three
    /// equal) when the threshold is the top of a counter.
    pub fn count_at_or_below_bounds(&self, threshold_us: u64) -> BelowThreshold {
        let split = index_for(threshold_us);
        let (mut low, mut inside) = (0u64, 0u64);
        for (index, count) in self.counters() {
            if index < split {
                low += count;
            } else if index == split {
                inside = count;
            } else {
                break;
            }
        }
        let (lowest, highest) = (lowest_value_at(split), highest_value_at(split));
        if threshold_us >= highest {
            return BelowThreshold { low: low + inside, high: low + inside, estimate: (low + inside) as f64 };
        }
        let share = (threshold_us.saturating_sub(lowest) + 1) as f64 / (highest - lowest + 1) as f64;
        BelowThreshold { low, high: low + inside, estimate: low as f64 + inside as f64 * share }
    }

    /// Number of non-zero counters.
    pub fn distinct_counters(&self) -> usize {
        self.counters().count()
    }

    /// An upper estimate of [`LatencyHistogram::encode`]'s length, without encoding.
    pub fn encoded_len_hint(&self) -> usize {
        match &self.packed {
            Some(bytes) => bytes.len(),
            None => 2 + self.entries.len() * 4,
        }
    }

    /// Bytes this histogram holds on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<u64>() + self.packed.as_ref().map_or(0, |p| p.len())
    }

    /// Holds the histogram in its encoded form from now on (until it is changed). Used
    /// when a cell is sealed: it will hardly ever change again.
    pub fn pack(&mut self) {
        if self.packed.is_some() || self.entries.is_empty() {
            self.entries.shrink_to_fit();
            return;
        }
        let mut bytes = Vec::with_capacity(2 + self.entries.len() * 3);
        self.encode(&mut bytes);
        self.packed = Some(bytes.into_boxed_slice());
        self.entries = Vec::new();
    }

    /// Whether the histogram is held packed.
    pub fn is_packed(&self) -> bool {
        self.packed.is_some()
    }

    /// Makes the live form current, for a change.
    fn unpack(&mut self) {
        if let Some(bytes) = self.packed.take() {
            self.entries = Self::decode(&bytes).expect("packed histograms are well formed").entries;
        }
    }

    /// The live entries of a histogram that is not changed, decoded if packed.
    fn entries_of(&self) -> std::borrow::Cow<'_, [u64]> {
        match &self.packed {
            None => std::borrow::Cow::Borrowed(&self.entries),
            Some(_) => std::borrow::Cow::Owned(self.counters().map(|(i, c)| pack(i, c)).collect()),
        }
    }

    /// The non-zero counters as `(index, count)`, by increasing index.
    pub fn counters(&self) -> Counters<'_> {
        match &self.packed {
            None => Counters::Live(self.entries.iter()),
            Some(bytes) => {
                let mut rest: &[u8] = bytes;
                let left = get_varint(&mut rest).expect("packed histograms are well formed") as usize;
                let gaps = rest;
                for _ in 0..left {
                    get_varint(&mut rest).expect("packed histograms are well formed");
                }
                Counters::Packed { gaps, counts: rest, left, index: 0 }
            }
        }
    }

    /// Records `count` samples of `value_us` (clamped to `LATENCY_US_HIGHEST`).
    pub fn record(&mut self, value_us: u64, count: u64) -> Result<(), HistogramError> {
        self.unpack();
        if count == 0 {
            return Ok(());
        }
        let index = index_for(value_us);
        match self.entries.binary_search_by_key(&index, |&e| index_of(e)) {
            Ok(at) => {
                let total = count_of(self.entries[at])
                    .checked_add(count)
                    .filter(|&c| c <= COUNT_MAX)
                    .ok_or(HistogramError::Overflow)?;
                self.entries[at] = pack(index, total);
            }
            Err(at) => {
                if count > COUNT_MAX {
                    return Err(HistogramError::Overflow);
                }
                self.entries.insert(at, pack(index, count));
            }
        }
        Ok(())
    }

    /// Adds every counter of `other` to this histogram.
    pub fn add(&mut self, other: &LatencyHistogram) -> Result<(), HistogramError> {
        if other.is_empty() {
            return Ok(());
        }
        self.unpack();
        let other_entries = other.entries_of();
        let other: &[u64] = &other_entries;
        // Count the indices `other` has and we lack, checking for overflow on the way.
        let mut missing = 0usize;
        let (mut i, mut j) = (0, 0);
        while j < other.len() {
            let b = other[j];
            if i < self.entries.len() && index_of(self.entries[i]) < index_of(b) {
                i += 1;
            } else if i < self.entries.len() && index_of(self.entries[i]) == index_of(b) {
                if count_of(self.entries[i]) + count_of(b) > COUNT_MAX {
                    return Err(HistogramError::Overflow);
                }
                i += 1;
                j += 1;
            } else {
                missing += 1;
                j += 1;
            }
        }
        if missing == 0 {
            let mut i = 0;
            for &b in other {
                while index_of(self.entries[i]) < index_of(b) {
                    i += 1;
                }
                self.entries[i] += count_of(b);
            }
            return Ok(());
        }
        // Merge from the back into the grown vector, so nothing is allocated twice.
        let old_len = self.entries.len();
        self.entries.resize(old_len + missing, 0);
        let (mut a, mut b, mut out) = (old_len, other.len(), old_len + missing);
        while b > 0 {
            let eb = other[b - 1];
            out -= 1;
            if a > 0 && index_of(self.entries[a - 1]) > index_of(eb) {
                self.entries[out] = self.entries[a - 1];
                a -= 1;
            } else if a > 0 && index_of(self.entries[a - 1]) == index_of(eb) {
                self.entries[out] = self.entries[a - 1] + count_of(eb);
                a -= 1;
                b -= 1;
            } else {
                self.entries[out] = eb;
                b -= 1;
            }
        }
        Ok(())
    }

    /// Adds every counter of `other`, each saturating at `COUNT_MAX`.
    pub fn add_saturating(&mut self, other: &LatencyHistogram) {
        if self.add(other).is_ok() {
            return;
        }
        let other_entries = other.entries_of();
        let other: &[u64] = &other_entries;
        // Rare: rebuild with saturating counts.
        let mut merged = Vec::with_capacity(self.entries.len() + other.len());
        let (mut a, mut b) = (self.entries.iter().peekable(), other.iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(&&x), Some(&&y)) if index_of(x) == index_of(y) => {
                    a.next();
                    b.next();
                    pack(index_of(x), count_of(x).saturating_add(count_of(y)).min(COUNT_MAX))
                }
                (Some(&&x), Some(&&y)) if index_of(x) < index_of(y) => *a.next().expect("peeked"),
                (Some(_), Some(_)) => *b.next().expect("peeked"),
                (Some(_), None) => *a.next().expect("peeked"),
                (None, Some(_)) => *b.next().expect("peeked"),
                (None, None) => break,
            };
            merged.push(next);
        }
        self.entries = merged;
    }

    /// Whether every counter of `other` is at most the same counter here.
    pub fn contains(&self, other: &LatencyHistogram) -> Result<(), HistogramError> {
        let (entries, other) = (self.entries_of(), other.entries_of());
        let mut i = 0;
        for &b in other.iter() {
            while i < entries.len() && index_of(entries[i]) < index_of(b) {
                i += 1;
            }
            let ours = entries.get(i).copied().filter(|&e| index_of(e) == index_of(b));
            if ours.map_or(0, count_of) < count_of(b) {
                return Err(HistogramError::NotContained { value_us: lowest_value_at(index_of(b)) });
            }
        }
        Ok(())
    }

    /// Subtracts `other`, which must be contained in this histogram.
    pub fn subtract(&mut self, other: &LatencyHistogram) -> Result<(), HistogramError> {
        self.contains(other)?;
        self.unpack();
        let other = other.entries_of();
        let mut i = 0;
        for &b in other.iter() {
            while index_of(self.entries[i]) < index_of(b) {
                i += 1;
            }
            self.entries[i] -= count_of(b);
        }
        self.entries.retain(|&e| count_of(e) != 0);
        Ok(())
    }

    /// Encodes as varints: the number of counters, then every counter's index gap from
    /// the previous counter, then every count. Keeping gaps and counts in separate runs
    /// (counts are mostly 1) lets page compression in the store do far better.
    pub fn encode(&self, out: &mut Vec<u8>) {
        if let Some(bytes) = &self.packed {
            out.extend_from_slice(bytes);
            return;
        }
        put_varint(out, self.entries.len() as u64);
        let mut previous = 0u64;
        for &e in &self.entries {
            let index = u64::from(index_of(e));
            put_varint(out, index - previous);
            previous = index;
        }
        for &e in &self.entries {
            put_varint(out, count_of(e));
        }
    }

    /// Decodes what [`LatencyHistogram::encode`] wrote, rejecting anything malformed.
    pub fn decode(mut input: &[u8]) -> Result<Self, HistogramError> {
        let n = get_varint(&mut input)?;
        if n > INDEX_COUNT as u64 {
            return Err(HistogramError::Malformed("more counters than indices"));
        }
        let mut indices = Vec::with_capacity(n as usize);
        let mut index = 0u64;
        for k in 0..n {
            let delta = get_varint(&mut input)?;
            if k > 0 && delta == 0 {
                return Err(HistogramError::Malformed("counter indices not increasing"));
            }
            index = index.checked_add(delta).ok_or(HistogramError::Malformed("index overflow"))?;
            if index >= INDEX_COUNT as u64 {
                return Err(HistogramError::Malformed("index beyond the histogram bounds"));
            }
            indices.push(index as u16);
        }
        let mut entries = Vec::with_capacity(indices.len());
        for index in indices {
            let count = get_varint(&mut input)?;
            if count == 0 || count > COUNT_MAX {
                return Err(HistogramError::Malformed("counter of zero or above the maximum"));
            }
            entries.push(pack(index, count));
        }
        if !input.is_empty() {
            return Err(HistogramError::Malformed("trailing bytes"));
        }
        Ok(Self { entries, packed: None })
    }
}

impl fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.counters().map(|(i, c)| (lowest_value_at(i), c))).finish()
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn get_varint(input: &mut &[u8]) -> Result<u64, HistogramError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first().ok_or(HistogramError::Malformed("truncated varint"))?;
        *input = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(HistogramError::Malformed("varint longer than 64 bits"))
}

impl serde::Serialize for LatencyHistogram {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::with_capacity(2 + self.entries.len() * 3);
        self.encode(&mut bytes);
        serializer.serialize_bytes(&bytes)
    }
}

impl<'de> serde::Deserialize<'de> for LatencyHistogram {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = LatencyHistogram;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an encoded latency histogram (bytes)")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                LatencyHistogram::decode(v).map_err(E::custom)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                // Some formats (JSON) carry bytes as a sequence of numbers.
                let mut bytes = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    if bytes.len() > INDEX_COUNT * 20 {
                        return Err(serde::de::Error::custom("latency histogram too long"));
                    }
                    bytes.push(b);
                }
                LatencyHistogram::decode(&bytes).map_err(serde::de::Error::custom)
            }
        }
        // `byte_buf`: ciborium reads byte strings of any length this way, while `bytes`
        // only fits its 4 KiB scratch buffer (a histogram with many counters is longer).
        deserializer.deserialize_byte_buf(Visitor)
    }
}

/// Sums many histograms and reads quantiles from the sum without allocating.
///
/// One accumulator is reused across the edges of a query: adding is proportional to the
/// non-zero counters added, reading and clearing to the span of indices touched.
#[derive(Clone)]
pub struct LatencyAccumulator {
    counts: Vec<u64>,
    low: usize,
    high: usize,
    total: u64,
}

impl fmt::Debug for LatencyAccumulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyAccumulator").field("total", &self.total).finish()
    }
}

impl Default for LatencyAccumulator {
    fn default() -> Self {
        Self { counts: vec![0; INDEX_COUNT], low: INDEX_COUNT, high: 0, total: 0 }
    }
}

/// Summary figures of a latency distribution, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencySummary {
    /// Samples in the distribution.
    pub samples: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 95th percentile.
    pub p95_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Highest sample (upper end of its counter's range).
    pub max_us: u64,
    /// Mean, from the middle of each counter's range.
    pub mean_us: f64,
}

impl LatencyAccumulator {
    /// Adds a histogram to the sum.
    pub fn add(&mut self, histogram: &LatencyHistogram) {
        for (index, count) in histogram.counters() {
            let index = usize::from(index);
            self.counts[index] += count;
            self.low = self.low.min(index);
            self.high = self.high.max(index);
            self.total += count;
        }
    }

    /// Number of samples summed so far.
    pub fn samples(&self) -> u64 {
        self.total
    }

    /// Value at a quantile in `[0, 1]`, as `hdrhistogram::Histogram::value_at_quantile`.
    pub fn value_at_quantile(&self, quantile: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let quantile = quantile.clamp(0.0, 1.0);
        let wanted = ((quantile * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for index in self.low..=self.high {
            seen += self.counts[index];
            if seen >= wanted {
                let index = index as u16;
                return if quantile == 0.0 { lowest_value_at(index) } else { highest_value_at(index) };
            }
        }
        0
    }

    /// All summary figures at once, in one pass over the counters.
    pub fn summary(&self) -> Option<LatencySummary> {
        if self.total == 0 {
            return None;
        }
        // The same thresholds as `value_at_quantile`, reached in increasing order.
        const QUANTILES: [f64; 4] = [0.50, 0.90, 0.95, 0.99];
        let wanted = QUANTILES.map(|q| ((q * self.total as f64).ceil() as u64).max(1));
        let mut values = [0u64; 4];
        let mut next = 0;
        let mut seen = 0u64;
        let mut mean = 0.0;
        let mut max_index = 0;
        for index in self.low..=self.high {
            let count = self.counts[index];
            if count == 0 {
                continue;
            }
            seen += count;
            mean += median_value_at(index as u16) as f64 * count as f64 / self.total as f64;
            max_index = index;
            while next < wanted.len() && seen >= wanted[next] {
                values[next] = highest_value_at(index as u16);
                next += 1;
            }
        }
        Some(LatencySummary {
            samples: self.total,
            p50_us: values[0],
            p90_us: values[1],
            p95_us: values[2],
            p99_us: values[3],
            max_us: highest_value_at(max_index as u16),
            mean_us: mean,
        })
    }

    /// Empties the sum for reuse.
    pub fn clear(&mut self) {
        if self.low <= self.high {
            self.counts[self.low..=self.high].fill(0);
        }
        self.low = INDEX_COUNT;
        self.high = 0;
        self.total = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_at_or_below_matches_hdrhistogram_count_between() {
        let mut ours = LatencyHistogram::new();
        let mut theirs = hdrhistogram::Histogram::<u64>::new_with_bounds(1, LATENCY_US_HIGHEST, 2).unwrap();
        for (value_us, count) in
            [(1, 2), (199, 1), (4_995, 3), (5_000, 4), (5_040, 5), (70_000, 6), (3_600_000_000, 7)]
        {
            ours.record(value_us, count).unwrap();
            theirs.record_n(value_us, count).unwrap();
        }
        for value_us in [0, 1, 2, 199, 4_991, 5_000, 5_023, 5_024, 10_000, 1_000_000, u64::MAX] {
            let expected = theirs.count_between(0, value_us.min(LATENCY_US_HIGHEST));
            assert_eq!(ours.count_at_or_below(value_us), expected, "at {value_us} µs");
        }
        // 4,995 and 5,000 µs share a counter; 5,040 lies in the next one.
        assert_eq!(ours.count_at_or_below(5_000), 2 + 1 + 3 + 4);
        assert_eq!(ours.count_at_or_below(u64::MAX), ours.len());
        ours.pack();
        assert_eq!(ours.count_at_or_below(5_000), 10, "packed histograms read the same");
    }
}
