//! Sampled traces: generated traffic through consistent per-service samplers, the kept
//! spans through the correlator and a flow state, and the estimated graph against the
//! truth.

use std::collections::BTreeMap;

use observatory_core::{Edge, FlowState, Origin, VirtualSide};
use observatory_correlate::{Correlator, Remote, Span, SpanKind, THRESHOLD_SCALE, threshold_of_probability};

use crate::{MS, NOW, T0, default_correlation, name};

/// A small deterministic generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Sampling probabilities of web, checkout and payments.
type Probabilities = [f64; 3];

/// `(from, to) -> (calls, errors)` of the generated truth.
type Truth = BTreeMap<(&'static str, &'static str), (u64, u64)>;

/// `traces` requests: a root SERVER span of web; web's CLIENT to checkout's SERVER;
/// checkout's CLIENT to payments' SERVER (failing 5% of the time); checkout's CLIENT to
/// stripe, which reports nothing (`peer.service`). Each service keeps a span when the
/// trace's random value reaches its threshold (consistent sampling, as `ot=th` defines).
fn traffic(rng: &mut Rng, traces: u64, p: Probabilities) -> (Vec<Span>, Truth) {
    let [web, checkout, payments] = p.map(|p| threshold_of_probability(p).expect("a probability"));
    let mut spans = Vec::new();
    let mut truth = Truth::new();
    for t in 0..traces {
        let trace_id = (u128::from(rng.next()) << 64) | u128::from(t + 1);
        let random = rng.next() >> 8; // 56 bits, as `rv`
        let failed = rng.unit() < 0.05;
        let at = T0 + (t % 60_000) * MS;
        for edge in [("user", "web"), ("web", "checkout"), ("checkout", "payments"), ("checkout", "stripe")] {
            let entry = truth.entry(edge).or_default();
            entry.0 += 1;
            entry.1 += u64::from(failed && edge.1 == "payments");
        }
        let span = |id: u64, parent: Option<u64>, kind, service: &str, threshold: u64| Span {
            trace_id,
            span_id: id,
            parent_span_id: parent,
            kind,
            service: name(service),
            start_ns: at + id * MS,
            end_ns: at + (20 - id) * MS,
            error: false,
            remote: None,
            sampling_threshold: threshold,
        };
        if random >= web {
            spans.push(span(1, None, SpanKind::Server, "web", web));
            spans.push(span(2, Some(1), SpanKind::Client, "web", web));
        }
        if random >= checkout {
            spans.push(span(3, Some(2), SpanKind::Server, "checkout", checkout));
            // Its client names payments (`server.address`, as HTTP clients do).
            let payments = Some(Remote { node: name("payments"), kind: observatory_core::EdgeKind::Request });
            spans.push(Span { remote: payments, ..span(4, Some(3), SpanKind::Client, "checkout", checkout) });
            let stripe = Some(Remote { node: name("stripe"), kind: observatory_core::EdgeKind::Request });
            spans.push(Span { remote: stripe, ..span(6, Some(3), SpanKind::Client, "checkout", checkout) });
        }
        if random >= payments {
            spans.push(Span { error: failed, ..span(5, Some(4), SpanKind::Server, "payments", payments) });
        }
    }
    (spans, truth)
}

/// One estimated edge: calls, errors, the 95% interval, whether estimated, virtual side.
type Estimate = (u64, u64, [u64; 2], bool, Option<VirtualSide>);

/// The generated traffic through a correlator and a flow state: the graph's edges.
fn estimate(spans: Vec<Span>) -> BTreeMap<(String, String), Estimate> {
    let mut correlator = Correlator::new(default_correlation());
    let me = vec!["me".to_string()];
    let mut events = Vec::new();
    for batch in spans.chunks(500) {
        events.extend(correlator.handle_spans(NOW, batch.to_vec(), "me", &me).events);
    }
    events.extend(correlator.handle_tick(NOW + 60_000));
    let limits = observatory_config::Config::defaults().core_limits();
    let mut state =
        FlowState::new(observatory_config::Config::defaults().settings().expect("settings"), limits);
    state.set_local(Origin::new("me", 1));
    let outcome = state.apply_local(NOW + 120_000, &events);
    assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected.first());
    let graph = state.graph(60 * 60_000, NOW + 120_000).expect("a graph");
    graph
        .edges
        .iter()
        .map(|e| {
            let f = &e.figures;
            let interval = f.calls_interval.map_or([0, u64::MAX], |i| [i.low, i.high]);
            let key = (e.edge.from.to_string(), e.edge.to.to_string());
            (key, (f.calls, f.errors, interval, f.calls_estimated, e.edge.virtual_node))
        })
        .collect()
}

/// The half-width of a 95% interval of calls estimated from `pairs` kept with
/// probability `p`, relative to the calls: `1.96 sqrt((1 - p) / pairs)`.
fn half_width(p: f64, pairs: f64) -> f64 {
    1.96 * ((1.0 - p) / pairs).sqrt()
}

#[test]
fn sampled_traces_give_estimates_whose_intervals_hold_the_truth_and_no_virtual_nodes() {
    // (probabilities, the probability each edge's pairs are kept with, as the stricter
    // of its two ends): uniform 1% and 10%, payments stricter than its caller, web
    // stricter than its callee.
    let scenarios: [(&str, Probabilities); 5] = [
        ("all 1%", [0.01, 0.01, 0.01]),
        ("all 10%", [0.1, 0.1, 0.1]),
        ("payments samples 1%, the others 10%", [0.1, 0.1, 0.01]),
        ("web samples 1%, the others 10%", [0.01, 0.1, 0.1]),
        // Unsampled callers of a sampled callee: their unanswered halves are no edges.
        ("payments samples 1%, the others keep everything", [1.0, 1.0, 0.01]),
    ];
    for (scenario, p) in scenarios {
        let kept = |edge: (&str, &str)| match edge {
            ("user", "web") => p[0],
            ("web", "checkout") => p[0].min(p[1]),
            ("checkout", "payments") => p[1].min(p[2]),
            _ => p[1],
        };
        // About 1,000 kept pairs on the sparsest edge.
        let traces = (1_000.0 / p.iter().copied().fold(1.0, f64::min)) as u64;
        let mut covered: BTreeMap<(&str, &str), u32> = BTreeMap::new();
        let mut errors_off: Vec<f64> = Vec::new();
        let mut calls_off: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
        // Fewer trials where most spans are kept (they cost the most and vary the least).
        let trials: u32 = if p.contains(&1.0) { 10 } else { 40 };
        for trial in 0..trials {
            let mut rng = Rng(0x5eed_0000 + u64::from(trial));
            let (spans, truth) = traffic(&mut rng, traces, p);
            let graph = estimate(spans);
            let edges: Vec<&(String, String)> = graph.keys().collect();
            assert_eq!(edges.len(), truth.len(), "{scenario}: no edge but the true ones: {edges:?}");
            for (&edge, &(calls, errors)) in &truth {
                let key = (edge.0.to_string(), edge.1.to_string());
                let Some(&(got, got_errors, [low, high], estimated, side)) = graph.get(&key) else {
                    panic!("{scenario}: no {edge:?} in {graph:?}");
                };
                assert_eq!(
                    estimated,
                    kept(edge) < 1.0,
                    "{scenario}: {edge:?} says whether its calls are estimates"
                );
                let want_side = match edge {
                    ("user", _) => Some(VirtualSide::Client),
                    (_, "stripe") => Some(VirtualSide::Server),
                    _ => None,
                };
                assert_eq!(
                    side, want_side,
                    "{scenario}: {edge:?} is virtual only when a node reports nothing"
                );
                assert!(low <= got && got <= high, "{scenario}: {edge:?} {got} outside [{low}, {high}]");
                *covered.entry(edge).or_default() += u32::from(low <= calls && calls <= high);
                calls_off.entry(edge).or_default().push((got as f64 - calls as f64).abs() / calls as f64);
                if errors > 0 {
                    errors_off.push((got_errors as f64 - errors as f64).abs() / errors as f64);
                }
            }
        }
        for (edge, offs) in &mut calls_off {
            offs.sort_by(f64::total_cmp);
            let p95 = offs[offs.len() * 95 / 100 - 1];
            let bound = half_width(kept(*edge), traces as f64 * kept(*edge));
            eprintln!(
                "{scenario}: {edge:?}: 95% of trials within {:.2}% (interval half-width {:.2}%); truth in the interval {} of {trials}",
                p95 * 100.0,
                bound * 100.0,
                covered[edge]
            );
            // The estimate is as good as the kept pairs allow, and its interval says so.
            assert!(
                p95 <= 1.3 * bound,
                "{scenario}: {edge:?}: 95% within {p95:.4}, expected about {bound:.4}"
            );
            assert!(
                covered[edge] >= trials * 85 / 100,
                "{scenario}: {edge:?}: covered {} of {trials}",
                covered[edge]
            );
        }
        // Errors are weighted as calls are: as good as the kept failed pairs allow (5% of
        // payments' calls fail).
        errors_off.sort_by(f64::total_cmp);
        let p95 = errors_off[errors_off.len() * 95 / 100 - 1];
        let to_payments = kept(("checkout", "payments"));
        let bound = half_width(to_payments, traces as f64 * 0.05 * to_payments);
        eprintln!(
            "{scenario}: errors: 95% of trials within {:.1}% (interval half-width {:.1}%)",
            p95 * 100.0,
            bound * 100.0
        );
        assert!(p95 <= 1.3 * bound, "{scenario}: errors: 95% within {p95:.4}, expected about {bound:.4}");
    }
}

#[test]
fn a_sampled_call_rounds_the_same_way_on_every_peer_and_counts_whole_calls() {
    // Probability 0.3: each kept pair stands for 3.33 calls, 3 or 4 by the trace id.
    let threshold = threshold_of_probability(0.3).expect("a probability");
    assert!(threshold < THRESHOLD_SCALE);
    let pair = |trace: u128| {
        let client = Span {
            trace_id: trace,
            span_id: 2,
            parent_span_id: Some(1),
            kind: SpanKind::Client,
            service: name("web"),
            start_ns: T0,
            end_ns: T0 + 10 * MS,
            error: false,
            remote: None,
            sampling_threshold: threshold,
        };
        let server = Span {
            span_id: 3,
            parent_span_id: Some(2),
            kind: SpanKind::Server,
            service: name("api"),
            ..client.clone()
        };
        vec![client, server]
    };
    let calls = |traces: std::ops::Range<u128>| -> Vec<u64> {
        let mut correlator = Correlator::new(default_correlation());
        let me = vec!["me".to_string()];
        traces
            .map(|t| {
                let events = correlator.handle_spans(NOW, pair(t), "me", &me).events;
                assert!(
                    events
                        .iter()
                        .all(|e| e.edge.estimated && e.edge.base() == Edge::new(name("web"), name("api")))
                );
                assert_eq!(
                    events.iter().filter(|e| e.latency_us.is_some()).count(),
                    1,
                    "one latency sample a pair"
                );
                events.iter().map(|e| e.count).sum()
            })
            .collect()
    };
    let first = calls(1..2_001);
    assert_eq!(first, calls(1..2_001), "another correlator rounds every call the same way");
    assert!(first.iter().all(|&c| c == 3 || c == 4), "{first:?}");
    let mean = first.iter().sum::<u64>() as f64 / first.len() as f64;
    assert!((mean - 1.0 / 0.3).abs() < 0.05, "rounding keeps the mean: {mean}");
}
