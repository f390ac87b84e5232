//! Integration tests of `observatory-core`, at its public API.
//!
//! - `histogram`: the sparse latency histograms against the `hdrhistogram` crate.
//! - `crdt`: the join laws, delta sync against the full join, corrupt deltas, retention
//!   and local ingest limits, on random states of several origins.
//! - `query`: graphs and series against oracles computed from the events themselves.
//! - `commit`: group commit on a scripted clock (turns, writes, flushes, replies).

mod commit;
mod crdt;
mod histogram;
mod query;

use observatory_core::{ContextMark, Edge, Event, Limits, NodeName, Settings, VirtualSide};
use proptest::prelude::*;

/// The mesh-wide settings of a peer with the documented defaults.
pub fn default_settings() -> Settings {
    observatory_config::Config::defaults().settings().expect("the default settings are valid")
}

/// The limits of a peer with the documented defaults.
pub fn default_limits() -> Limits {
    observatory_config::Config::defaults().core_limits()
}

/// A fixed "now", aligned to the hour (so windows of 10 s, 1 min and 1 h end on bucket edges).
pub const NOW_MS: i64 = 1_800_000_000_000;

/// The node names random events use; few, so that edges and cells are shared.
pub const NODES: [&str; 4] = ["checkout", "payments", "stock", "db"];

/// Property tests run this many cases each (the whole binary stays fast in debug
/// builds); `PROPTEST_CASES` sets another number for a longer hunt.
pub fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
}

pub fn node(name: &str) -> NodeName {
    NodeName::new(name, 255).expect("valid node name")
}

pub fn edge(from: &str, to: &str) -> Edge {
    Edge::new(node(from), node(to))
}

/// The `hdrhistogram` equivalent of our histograms: 1 µs to 1 h, 2 significant digits.
pub fn hdr() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid bounds")
}

/// Latencies in µs: mostly small, sometimes anything up to above the 1 h upper bound.
pub fn latency_us() -> impl Strategy<Value = u64> {
    prop_oneof![3 => 0..20_000u64, 1 => 0..=5_000_000_000u64]
}

/// The flows random events carry (most carry none).
pub const FLOWS: [&str; 2] = ["checkout-page", "browse-page"];

/// A flow, propagation mark and virtual side: none most of the time, so that edges both
/// with and without them occur, and queries must sum them into one `from -> to`.
pub fn labels() -> impl Strategy<Value = (Option<NodeName>, ContextMark, Option<VirtualSide>)> {
    (
        prop_oneof![3 => Just(None), 1 => (0..FLOWS.len()).prop_map(|f| Some(node(FLOWS[f])))],
        prop_oneof![3 => Just(ContextMark::Unknown), 1 => (0..ContextMark::ALL.len()).prop_map(|m| ContextMark::ALL[m])],
        prop_oneof![6 => Just(None), 1 => Just(Some(VirtualSide::Client)), 1 => Just(Some(VirtualSide::Server))],
    )
}

/// One event on an edge between `NODES[..nodes]`, `0..=age_max_ms` before `NOW_MS`, in a
/// random flow with a random propagation mark now and then.
pub fn event(nodes: usize, age_max_ms: i64) -> impl Strategy<Value = Event> {
    (
        (0..nodes, 0..nodes, labels()),
        0..=age_max_ms,
        proptest::option::weighted(0.8, latency_us()),
        proptest::bool::weighted(0.2),
        prop_oneof![Just(0u64), 0..100_000u64],
        prop_oneof![4 => Just(1u64), 1 => 1..50u64],
    )
        .prop_map(|((from, to, (flow, mark, side)), age, latency_us, error, bytes, count)| Event {
            edge: Edge { virtual_node: side, ..edge(NODES[from], NODES[to]).labelled(flow, mark) },
            ts_ms: NOW_MS - age,
            latency_us,
            error,
            bytes,
            count,
        })
}
