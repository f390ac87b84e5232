//! A made-up online shop that produces realistic flow events, for demos and benchmarks.
//!
//! This crate depends on no other crate of the workspace: it only knows the native event
//! format of the ingest API (`from`, `to`, `ts`, `latency_ms`, `error`, `bytes`), which it
//! writes as NDJSON, a JSON array or CBOR.
//!
//! - [`Shop`] simulates user requests through about a dozen services ([`edges`] lists the
//!   topology). Drive it with [`Shop::next_request`] (one user request at a given time) or
//!   [`Shop::events`] (at least `n` events spread over a time span). Everything is
//!   deterministic given the seed.
//! - [`synthetic_edges`] and [`synthetic_events`] build a large, shapeless graph (thousands
//!   of edges) for benchmarks, where a realistic topology matters less than its size.
//! - [`to_ndjson`], [`to_json_array`] and [`to_cbor`] encode events for `POST /api/v1/events`.
//!
//! # How a request is simulated
//! A user request enters as `user -> web` and fans out down a call tree. Each edge has a
//! probability of being called and a number of calls, a log-normal latency (median and
//! spread), an error rate and a log-normal size. Synchronous calls happen one after the
//! other inside their caller, so a caller's latency is at least the sum of its callees'
//! plus some work of its own; its configured median is what it takes when its callees are
//! quick. A failing callee may make its caller fail, and a caller that fails that way
//! stops calling further callees (checkout does not publish an order whose payment
//! failed). A messaging edge (`orders-queue -> fulfilment`) is a delivery: it starts after
//! a queueing delay, and neither its latency nor its errors reach the publisher.

use std::collections::BTreeSet;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// One call or message on an edge of the shop, as it would be reported to a peer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShopEvent {
    /// The caller or publisher.
    pub from: &'static str,
    /// The callee or consumer.
    pub to: &'static str,
    /// When the call started, in milliseconds since the Unix epoch.
    #[serde(rename = "ts")]
    pub ts_ms: i64,
    /// How long the call took as the caller saw it (rounded to microseconds).
    pub latency_ms: f64,
    /// Whether the call failed.
    pub error: bool,
    /// Bytes carried by request and answer together.
    pub bytes: u64,
}

/// A [`ShopEvent`] with owned node names, for graphs built at run time
/// ([`synthetic_events`]) and for reading events back from the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnedShopEvent {
    /// The caller or publisher.
    pub from: String,
    /// The callee or consumer.
    pub to: String,
    /// When the call started, in milliseconds since the Unix epoch.
    #[serde(rename = "ts")]
    pub ts_ms: i64,
    /// How long the call took as the caller saw it.
    pub latency_ms: f64,
    /// Whether the call failed.
    pub error: bool,
    /// Bytes carried by request and answer together.
    pub bytes: u64,
}

impl From<&ShopEvent> for OwnedShopEvent {
    fn from(event: &ShopEvent) -> Self {
        OwnedShopEvent {
            from: event.from.to_string(),
            to: event.to.to_string(),
            ts_ms: event.ts_ms,
            latency_ms: event.latency_ms,
            error: event.error,
            bytes: event.bytes,
        }
    }
}

/// How a callee is reached.
#[derive(Debug, Clone, Copy, PartialEq)]
enum EdgeKind {
    /// A synchronous call: the caller waits for it, and its error may fail the caller.
    Call,
    /// A message taken from a queue after a log-normal delay; the publisher does not wait.
    Delivery {
        /// Median time in the queue.
        queue_delay_median_ms: f64,
        /// Spread (sigma of the underlying normal) of the queue delay.
        queue_delay_sigma: f64,
    },
}

/// Behaviour of one edge of the shop.
#[derive(Debug, Clone, Copy)]
struct EdgeSpec {
    from: &'static str,
    to: &'static str,
    kind: EdgeKind,
    /// Chance that a request served by `from` calls `to` at all.
    call_probability: f64,
    /// When it does, how many times (uniform over the range, inclusive).
    calls_min: u32,
    calls_max: u32,
    /// Median latency the caller sees when the callee's own callees are quick.
    latency_median_ms: f64,
    /// Sigma of the underlying normal: 0.3 is tight, 1.0 has a long tail.
    latency_sigma: f64,
    /// Chance that the callee fails on its own.
    error_ratio: f64,
    /// Chance that a failure of this call fails the caller too.
    error_propagation: f64,
    /// Median bytes per call (request and answer).
    bytes_median: f64,
}

const fn call(
    from: &'static str,
    to: &'static str,
    call_probability: f64,
    calls: (u32, u32),
    latency: (f64, f64),
    errors: (f64, f64),
    bytes_median: f64,
) -> EdgeSpec {
    EdgeSpec {
        from,
        to,
        kind: EdgeKind::Call,
        call_probability,
        calls_min: calls.0,
        calls_max: calls.1,
        latency_median_ms: latency.0,
        latency_sigma: latency.1,
        error_ratio: errors.0,
        error_propagation: errors.1,
        bytes_median,
    }
}

/// The node a user request enters by; `user -> web` is the root of every request.
const ROOT: &str = "user";

/// The shop. The callees of a node are called in the order they appear here.
/// Columns of `call`: probability, calls (min, max), latency (median ms, sigma),
/// errors (own error ratio, chance an error fails the caller), median bytes.
const SHOP: &[EdgeSpec] = &[
    call("user", "web", 1.0, (1, 1), (45.0, 0.6), (0.001, 1.0), 24_000.0),
    // The front end checks the session, shows products, maybe recommendations, maybe checks out.
    call("web", "auth", 1.0, (1, 1), (3.0, 0.4), (0.0005, 1.0), 300.0),
    call("web", "catalog", 0.85, (1, 3), (18.0, 0.5), (0.002, 0.5), 6_000.0),
    call("web", "recommendations", 0.5, (1, 1), (25.0, 0.6), (0.01, 0.0), 2_000.0),
    call("web", "checkout", 0.15, (1, 1), (250.0, 0.35), (0.002, 1.0), 1_500.0),
    // The catalog reads through a cache and searches now and then.
    call("catalog", "redis", 1.0, (1, 4), (0.4, 0.5), (0.0005, 0.0), 800.0),
    call("catalog", "search", 0.4, (1, 1), (12.0, 0.7), (0.004, 1.0), 4_000.0),
    call("catalog", "postgres", 0.2, (1, 2), (3.0, 0.8), (0.001, 1.0), 2_000.0),
    call("recommendations", "redis", 1.0, (1, 2), (0.5, 0.5), (0.0005, 0.0), 1_200.0),
    // Checkout reserves each item, charges the card, then publishes the order.
    call("checkout", "inventory", 1.0, (1, 3), (8.0, 0.5), (0.003, 1.0), 400.0),
    call("checkout", "payments", 1.0, (1, 1), (180.0, 0.35), (0.03, 1.0), 1_200.0),
    call("checkout", "orders-queue", 1.0, (1, 1), (2.0, 0.4), (0.0005, 1.0), 1_500.0),
    call("inventory", "postgres", 1.0, (1, 2), (2.5, 0.6), (0.0005, 1.0), 600.0),
    call("payments", "fraud", 1.0, (1, 1), (25.0, 0.5), (0.005, 0.5), 900.0),
    call("payments", "postgres", 1.0, (1, 1), (3.0, 0.6), (0.0005, 1.0), 500.0),
    // The order is consumed from the queue: nobody upstream waits for what follows.
    EdgeSpec {
        from: "orders-queue",
        to: "fulfilment",
        kind: EdgeKind::Delivery { queue_delay_median_ms: 150.0, queue_delay_sigma: 1.0 },
        call_probability: 1.0,
        calls_min: 1,
        calls_max: 1,
        latency_median_ms: 40.0,
        latency_sigma: 0.5,
        error_ratio: 0.002,
        error_propagation: 0.0,
        bytes_median: 1_500.0,
    },
    call("fulfilment", "postgres", 1.0, (1, 2), (3.0, 0.6), (0.0005, 1.0), 700.0),
    call("fulfilment", "shipping", 1.0, (1, 1), (60.0, 0.5), (0.01, 1.0), 1_000.0),
    call("fulfilment", "notifications", 1.0, (1, 1), (15.0, 0.5), (0.005, 0.0), 3_000.0),
    call("shipping", "carrier-api", 1.0, (1, 1), (45.0, 0.8), (0.02, 1.0), 2_500.0),
];

/// The shop's topology: every `(from, to)` edge a [`Shop`] can produce, callers in call order.
pub fn edges() -> Vec<(&'static str, &'static str)> {
    SHOP.iter().map(|spec| (spec.from, spec.to)).collect()
}

/// A sample of a standard normal distribution (Box-Muller; one of the pair is enough here).
fn standard_normal(rng: &mut StdRng) -> f64 {
    // 1 - [0, 1) is (0, 1], so the logarithm is finite.
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A sample of a log-normal distribution with the given median and sigma.
fn log_normal(rng: &mut StdRng, median: f64, sigma: f64) -> f64 {
    median * (sigma * standard_normal(rng)).exp()
}

/// Rounds milliseconds to whole microseconds, the resolution peers keep.
fn round_to_us(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

/// Simulates the shop. Deterministic: the same seed and the same calls give the same events.
#[derive(Debug, Clone)]
pub struct Shop {
    rng: StdRng,
}

/// What one simulated call did, as its caller sees it.
#[derive(Debug, Clone, Copy)]
struct CallOutcome {
    latency_ms: f64,
    error: bool,
}

impl Shop {
    /// A shop whose random choices all come from `seed`.
    pub fn new(seed: u64) -> Self {
        Shop { rng: StdRng::seed_from_u64(seed) }
    }

    /// Appends the events of one user request that starts at `ts_ms` to `out`.
    ///
    /// Calls start after their caller, one after the other; deliveries from the queue come
    /// a queueing delay later (usually well under a second, sometimes a few seconds).
    pub fn next_request(&mut self, ts_ms: i64, out: &mut Vec<ShopEvent>) {
        let root = SHOP.iter().find(|spec| spec.from == ROOT).expect("the shop has a root edge");
        let mut relative = Vec::new();
        self.simulate_call(root, 0.0, &mut relative);
        out.extend(relative.into_iter().map(|(start_ms, mut event)| {
            event.ts_ms = ts_ms.saturating_add(start_ms.floor() as i64);
            event
        }));
    }

    /// At least `n` events (whole requests, so a few more), requests spread evenly with
    /// jitter over `[start_ms, start_ms + span_ms)`. Events that would fall after the span
    /// (a slow tail, a late delivery) are clamped to its last millisecond.
    ///
    /// # Panics
    /// If `span_ms` is not positive.
    pub fn events(&mut self, n: usize, start_ms: i64, span_ms: i64) -> Vec<ShopEvent> {
        assert!(span_ms > 0, "span_ms must be positive, got {span_ms}");
        let mut events = Vec::with_capacity(n + 64);
        let mut request_ends = Vec::new();
        while events.len() < n {
            self.next_request(0, &mut events);
            request_ends.push(events.len());
        }
        let n_requests = request_ends.len() as i128;
        let last_ms = start_ms.saturating_add(span_ms - 1);
        let mut request_start = 0;
        for (i, &request_end) in request_ends.iter().enumerate() {
            // Stratified: request i starts somewhere in its own share of the span.
            let share = (i as f64 + self.rng.random::<f64>()) / n_requests as f64;
            let offset_ms = ((span_ms as f64 * share) as i64).min(span_ms - 1);
            for event in &mut events[request_start..request_end] {
                event.ts_ms = start_ms.saturating_add(offset_ms).saturating_add(event.ts_ms).min(last_ms);
            }
            request_start = request_end;
        }
        events
    }

    /// Simulates the calls on `spec`'s edge starting at `start_ms` (relative to the
    /// request), pushing `(start, event)` pairs for it and everything below it.
    fn simulate_call(
        &mut self,
        spec: &EdgeSpec,
        start_ms: f64,
        out: &mut Vec<(f64, ShopEvent)>,
    ) -> CallOutcome {
        // Push our own event first so that callers come before callees in the output.
        let index = out.len();
        out.push((
            start_ms,
            ShopEvent { from: spec.from, to: spec.to, ts_ms: 0, latency_ms: 0.0, error: false, bytes: 0 },
        ));

        let wanted_ms = log_normal(&mut self.rng, spec.latency_median_ms, spec.latency_sigma);
        // Some work (parsing, auth, a lookup) before the first callee, some after the last.
        let work_before_ms = wanted_ms * self.rng.random_range(0.02..0.1);
        let work_after_ms = wanted_ms * self.rng.random_range(0.02..0.1);
        let mut clock_ms = start_ms + work_before_ms;
        let mut error = false;
        for callee in SHOP.iter().filter(|callee| callee.from == spec.to) {
            if error {
                break;
            }
            if !self.rng.random_bool(callee.call_probability) {
                continue;
            }
            let n_calls = self.rng.random_range(callee.calls_min..=callee.calls_max);
            for _ in 0..n_calls {
                match callee.kind {
                    EdgeKind::Call => {
                        // A little network time between one call's end and the next's start.
                        clock_ms += self.rng.random_range(0.05..0.3);
                        let outcome = self.simulate_call(callee, clock_ms, out);
                        clock_ms += outcome.latency_ms;
                        if outcome.error && self.rng.random_bool(callee.error_propagation) {
                            error = true;
                            break;
                        }
                    }
                    EdgeKind::Delivery { queue_delay_median_ms, queue_delay_sigma } => {
                        let delay_ms = log_normal(&mut self.rng, queue_delay_median_ms, queue_delay_sigma);
                        self.simulate_call(callee, clock_ms + delay_ms, out);
                    }
                }
            }
        }
        let latency_ms = round_to_us(wanted_ms.max(clock_ms + work_after_ms - start_ms));
        let error = error || self.rng.random_bool(spec.error_ratio);
        let bytes = log_normal(&mut self.rng, spec.bytes_median, 0.5).round().max(1.0) as u64;
        let event = &mut out[index].1;
        event.latency_ms = latency_ms;
        event.error = error;
        event.bytes = bytes;
        CallOutcome { latency_ms, error }
    }
}

/// `n_edges` distinct edges `svc-A -> svc-B` (no self-loops) among about
/// `2 * sqrt(n_edges)` nodes, each node calling about `sqrt(n_edges) / 2` others.
/// Deterministic.
pub fn synthetic_edges(n_edges: usize) -> Vec<(String, String)> {
    if n_edges == 0 {
        return Vec::new();
    }
    let side = (n_edges as f64).sqrt().ceil() as usize;
    let n_nodes = (2 * side).max(2);
    // Edge i leaves node i % n_nodes for the node (1 + i / n_nodes) places further round the
    // ring. As i / n_nodes stays below n_nodes - 1, no two edges and no self-loop coincide.
    (0..n_edges)
        .map(|i| {
            let from = i % n_nodes;
            let to = (from + 1 + i / n_nodes) % n_nodes;
            (format!("svc-{from}"), format!("svc-{to}"))
        })
        .collect()
}

/// `n` events on `edges`, each edge picked uniformly, timestamps rising evenly over
/// `[start_ms, start_ms + span_ms)`. Each edge gets its own median latency (log-normal
/// around 10 ms) and error ratio (around 0.5%); each event's latency is log-normal around
/// its edge's median. Deterministic given `seed`.
///
/// # Panics
/// If `edges` is empty while `n > 0`, or `span_ms` is not positive.
pub fn synthetic_events(
    edges: &[(String, String)],
    n: usize,
    start_ms: i64,
    span_ms: i64,
    seed: u64,
) -> Vec<OwnedShopEvent> {
    assert!(span_ms > 0, "span_ms must be positive, got {span_ms}");
    if n == 0 {
        return Vec::new();
    }
    assert!(!edges.is_empty(), "synthetic_events needs at least one edge");
    let mut rng = StdRng::seed_from_u64(seed);
    let profiles: Vec<(f64, f64)> = edges
        .iter()
        .map(|_| (log_normal(&mut rng, 10.0, 1.0), (log_normal(&mut rng, 0.005, 1.0)).min(0.5)))
        .collect();
    (0..n)
        .map(|i| {
            let edge = rng.random_range(0..edges.len());
            let (latency_median_ms, error_ratio) = profiles[edge];
            let offset_ms = (span_ms as i128 * i as i128 / n as i128) as i64;
            OwnedShopEvent {
                from: edges[edge].0.clone(),
                to: edges[edge].1.clone(),
                ts_ms: start_ms.saturating_add(offset_ms),
                latency_ms: round_to_us(log_normal(&mut rng, latency_median_ms, 0.5)),
                error: rng.random_bool(error_ratio),
                bytes: log_normal(&mut rng, 1_000.0, 0.7).round().max(1.0) as u64,
            }
        })
        .collect()
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::ShopEvent {}
    impl Sealed for super::OwnedShopEvent {}
}

/// An event this crate can encode: [`ShopEvent`] or [`OwnedShopEvent`].
pub trait WireEvent: Serialize + sealed::Sealed {}
impl WireEvent for ShopEvent {}
impl WireEvent for OwnedShopEvent {}

/// The events as NDJSON: one JSON object per line, each line ending in `\n`.
pub fn to_ndjson<E: WireEvent>(events: &[E]) -> Vec<u8> {
    let mut out = Vec::with_capacity(events.len() * 110);
    for event in events {
        serde_json::to_writer(&mut out, event).expect("an event always encodes as JSON");
        out.push(b'\n');
    }
    out
}

/// The events as one JSON array.
pub fn to_json_array<E: WireEvent>(events: &[E]) -> Vec<u8> {
    serde_json::to_vec(events).expect("events always encode as JSON")
}

/// The events as a CBOR array of maps with text keys.
pub fn to_cbor<E: WireEvent>(events: &[E]) -> Vec<u8> {
    let mut out = Vec::with_capacity(events.len() * 80);
    ciborium::into_writer(events, &mut out).expect("events always encode as CBOR");
    out
}

/// The distinct nodes of a list of edges, sorted.
pub fn nodes_of<S: AsRef<str>>(edges: &[(S, S)]) -> BTreeSet<String> {
    edges.iter().flat_map(|(from, to)| [from.as_ref().to_string(), to.as_ref().to_string()]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(from: &str, to: &str) -> &'static EdgeSpec {
        SHOP.iter().find(|s| s.from == from && s.to == to).expect("edge in the shop")
    }

    fn percentile(mut values: Vec<f64>, q: f64) -> f64 {
        values.sort_by(f64::total_cmp);
        values[((values.len() - 1) as f64 * q).round() as usize]
    }

    fn on_edge<'a>(events: &'a [ShopEvent], from: &str, to: &str) -> Vec<&'a ShopEvent> {
        events.iter().filter(|e| e.from == from && e.to == to).collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_events_and_another_seed_others() {
        let a = Shop::new(7).events(5_000, 1_000, 60_000);
        let b = Shop::new(7).events(5_000, 1_000, 60_000);
        let c = Shop::new(8).events(5_000, 1_000, 60_000);
        assert_eq!(a, b);
        assert_ne!(a, c);

        let (mut x, mut y) = (Vec::new(), Vec::new());
        let (mut shop_x, mut shop_y) = (Shop::new(3), Shop::new(3));
        for i in 0..100 {
            shop_x.next_request(i * 10, &mut x);
            shop_y.next_request(i * 10, &mut y);
        }
        assert_eq!(x, y);
    }

    #[test]
    fn every_event_is_on_an_edge_of_the_topology_and_every_edge_shows_up() {
        let topology: BTreeSet<_> = edges().into_iter().collect();
        assert_eq!(topology.len(), SHOP.len(), "no edge is listed twice");
        let events = Shop::new(1).events(100_000, 0, 600_000);
        let seen: BTreeSet<_> = events.iter().map(|e| (e.from, e.to)).collect();
        for edge in &seen {
            assert!(topology.contains(edge), "{edge:?} is not in edges()");
        }
        assert_eq!(seen, topology, "100k events touch every edge");
    }

    #[test]
    fn events_are_at_least_n_and_inside_the_span() {
        let (start_ms, span_ms) = (1_700_000_000_000, 10_000);
        let events = Shop::new(2).events(20_000, start_ms, span_ms);
        assert!(events.len() >= 20_000);
        assert!(events.len() < 20_100, "only whole requests are added: {}", events.len());
        assert!(events.iter().all(|e| (start_ms..start_ms + span_ms).contains(&e.ts_ms)));
        // Spread over the span, not bunched at its start.
        let late = events.iter().filter(|e| e.ts_ms >= start_ms + span_ms / 2).count();
        assert!((0.4..0.6).contains(&(late as f64 / events.len() as f64)), "{late} in the second half");
    }

    #[test]
    fn a_request_starts_with_the_user_and_callees_start_no_earlier_than_it() {
        let mut shop = Shop::new(5);
        for i in 0..1_000 {
            let mut events = Vec::new();
            shop.next_request(1_000_000 + i, &mut events);
            let root = &events[0];
            assert_eq!((root.from, root.to), ("user", "web"));
            assert_eq!(root.ts_ms, 1_000_000 + i);
            assert!(events.iter().all(|e| e.ts_ms >= root.ts_ms));
            // Synchronous work below web ends before web answers.
            for checkout in on_edge(&events, "web", "checkout") {
                assert!(checkout.latency_ms <= root.latency_ms);
                for payment in on_edge(&events, "checkout", "payments") {
                    assert!(payment.latency_ms <= checkout.latency_ms);
                    assert!(payment.ts_ms >= checkout.ts_ms);
                }
            }
        }
    }

    #[test]
    fn payments_fail_a_few_percent_of_the_time_and_other_edges_rarely() {
        let events = Shop::new(11).events(100_000, 0, 3_600_000);
        let payments = on_edge(&events, "checkout", "payments");
        assert!(payments.len() > 1_000, "enough payments to measure: {}", payments.len());
        let ratio = payments.iter().filter(|e| e.error).count() as f64 / payments.len() as f64;
        assert!((0.02..0.05).contains(&ratio), "payments error ratio {ratio}");

        let auth = on_edge(&events, "web", "auth");
        let ratio = auth.iter().filter(|e| e.error).count() as f64 / auth.len() as f64;
        assert!(ratio < 0.005, "auth error ratio {ratio}");
    }

    #[test]
    fn latency_percentiles_follow_the_configured_medians() {
        let events = Shop::new(13).events(100_000, 0, 3_600_000);
        for (from, to) in [("checkout", "payments"), ("web", "auth"), ("catalog", "redis")] {
            let latencies: Vec<f64> = on_edge(&events, from, to).iter().map(|e| e.latency_ms).collect();
            let configured = spec(from, to).latency_median_ms;
            let p50 = percentile(latencies.clone(), 0.5);
            assert!(
                (p50 / configured - 1.0).abs() < 0.15,
                "{from} -> {to}: p50 {p50} ms, configured {configured}"
            );
            let p99 = percentile(latencies, 0.99);
            assert!(p99 > 1.5 * p50, "{from} -> {to}: a tail (p99 {p99} ms, p50 {p50} ms)");
        }
        // Checkout waits for its payment, so it is never quicker than its median payment.
        let checkout: Vec<f64> = on_edge(&events, "web", "checkout").iter().map(|e| e.latency_ms).collect();
        assert!(percentile(checkout, 0.5) > spec("checkout", "payments").latency_median_ms);
    }

    #[test]
    fn ndjson_json_and_cbor_round_trip_with_the_wire_keys() {
        let events = Shop::new(17).events(500, 1_767_225_600_000, 60_000);
        let owned: Vec<OwnedShopEvent> = events.iter().map(OwnedShopEvent::from).collect();
        let close = |a: &[OwnedShopEvent], b: &[OwnedShopEvent]| {
            a.len() == b.len()
                && a.iter().zip(b).all(|(x, y)| {
                    // serde_json parses floats to within an ulp, not always exactly.
                    (x.latency_ms - y.latency_ms).abs() < 1e-9
                        && OwnedShopEvent { latency_ms: y.latency_ms, ..x.clone() } == *y
                })
        };

        let ndjson = to_ndjson(&events);
        let text = std::str::from_utf8(&ndjson).unwrap();
        assert_eq!(text.lines().count(), events.len());
        assert!(text.ends_with('\n'));
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        let keys: BTreeSet<&str> = first.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, BTreeSet::from(["bytes", "error", "from", "latency_ms", "to", "ts"]));
        assert!(first["ts"].is_i64() && first["bytes"].is_u64() && first["error"].is_boolean());
        let back: Vec<OwnedShopEvent> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert!(close(&back, &owned));

        let back: Vec<OwnedShopEvent> = serde_json::from_slice(&to_json_array(&events)).unwrap();
        assert!(close(&back, &owned));

        let cbor = to_cbor(&events);
        let value: ciborium::Value = ciborium::from_reader(cbor.as_slice()).unwrap();
        let items = value.as_array().expect("an array");
        let first = items[0].as_map().expect("of maps");
        assert!(first.iter().all(|(k, _)| k.is_text()));
        let back: Vec<OwnedShopEvent> = ciborium::from_reader(cbor.as_slice()).unwrap();
        assert_eq!(back, owned, "CBOR floats round-trip exactly");
        assert_eq!(to_cbor(&owned), cbor);
    }

    #[test]
    fn synthetic_edges_are_distinct_without_loops_on_about_sqrt_nodes() {
        for n in [0, 1, 2, 10, 99, 1_000, 10_000] {
            let edges = synthetic_edges(n);
            assert_eq!(edges.len(), n);
            let distinct: BTreeSet<_> = edges.iter().collect();
            assert_eq!(distinct.len(), n);
            assert!(edges.iter().all(|(from, to)| from != to));
            let n_nodes = nodes_of(&edges).len();
            assert!(n_nodes as f64 <= 2.0 * (n as f64).sqrt() + 2.0, "{n} edges on {n_nodes} nodes");
        }
        assert_eq!(synthetic_edges(10_000), synthetic_edges(10_000));
    }

    #[test]
    fn synthetic_events_cover_the_edges_and_the_span() {
        let edges = synthetic_edges(2_000);
        let events = synthetic_events(&edges, 50_000, 5_000, 60_000, 9);
        assert_eq!(events.len(), 50_000);
        assert_eq!(events, synthetic_events(&edges, 50_000, 5_000, 60_000, 9));
        assert_ne!(events, synthetic_events(&edges, 50_000, 5_000, 60_000, 10));
        assert!(events.windows(2).all(|w| w[0].ts_ms <= w[1].ts_ms));
        assert!(events.iter().all(|e| (5_000..65_000).contains(&e.ts_ms) && e.latency_ms > 0.0));
        let edge_set: BTreeSet<_> = edges.iter().map(|(f, t)| (f.as_str(), t.as_str())).collect();
        let seen: BTreeSet<_> = events.iter().map(|e| (e.from.as_str(), e.to.as_str())).collect();
        assert!(seen.is_subset(&edge_set));
        assert!(seen.len() > 1_900, "uniform picks reach nearly every edge: {}", seen.len());
        let errors = events.iter().filter(|e| e.error).count() as f64 / events.len() as f64;
        assert!((0.001..0.05).contains(&errors), "error ratio {errors}");
    }
}
