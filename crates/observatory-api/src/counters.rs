//! Counters of what the HTTP edge took and refused.
//!
//! Refusals are counted by a reason drawn from a small fixed set (error codes, field
//! names), never from text a client chose, so the maps stay small. The same counters
//! feed `/api/v1/status` and `/metrics` (see `exposition` for why the text format is
//! written here rather than by `prometheus-client`: its registry owns the values and
//! cannot give a labelled family back for the JSON status).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counts by reason.
#[derive(Debug, Default)]
pub struct ReasonCounts(Mutex<BTreeMap<String, u64>>);

impl ReasonCounts {
    /// Adds `n` under `reason`.
    pub fn add(&self, reason: &str, n: u64) {
        let mut counts = self.0.lock().expect("no counter update panics");
        match counts.get_mut(reason) {
            Some(count) => *count += n,
            None => {
                counts.insert(reason.to_string(), n);
            }
        }
    }

    /// The counts now.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().expect("no counter update panics").clone()
    }
}

/// What the edge refused before anything reached the peer, and what it took.
#[derive(Debug, Default)]
pub struct Counters {
    /// Event requests answered 200.
    pub ingest_requests: AtomicU64,
    /// Events refused while parsing (`invalid_<field>`).
    pub events_invalid: ReasonCounts,
    /// Requests refused whole, by error code.
    pub requests_rejected: ReasonCounts,
    /// Spans received (OTLP and Zipkin), refused ones included.
    pub spans_received: AtomicU64,
    /// Spans refused while decoding, by reason.
    pub spans_rejected: ReasonCounts,
    /// Sightings received, refused ones included.
    pub sightings_received: AtomicU64,
    /// Sightings refused while decoding, by reason.
    pub sightings_rejected: ReasonCounts,
}

impl Counters {
    /// Adds `n` to a plain counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a plain counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
