//! `cargo bench -p observatory-bench --bench objectives [-- cost|delay]`
//!
//! - `cost`: 1,000 objectives (latency, errors and flow; exact edges and `*` patterns)
//!   over 5,000 edges holding 40 minutes of traffic: the first evaluation (every series
//!   built from the view), then a steady pass (one step later, after a step's traffic
//!   on every edge). Target: a pass under 100 ms on one core. Baseline in the same run:
//!   reading every window of every objective straight from the view's buckets (the
//!   figures alone, with no alert history), which is what a stateless evaluator would do
//!   at every step. Memory per objective is measured with a counting allocator.
//! - `delay`: a total outage on a 99.9%/28d error objective after two hours of good
//!   traffic, on an accelerated clock (10 s steps): seconds from the outage to the
//!   firing page. Target under 75 s; the reference is the time the page's long window
//!   (the workbook's 1 h scaled to 28 days: 56 min) needs to cross 14.4x (0.0144 of it:
//!   48.4 s), plus a step's wait.

use std::alloc::System;
use std::time::{Duration, Instant};

use observatory_bench::{default_limits, default_settings, median_time};
use observatory_config::Config;
use observatory_core::{Edge, Event, FlowState, NodeName, Origin};
use observatory_objectives::{
    AlertState, Coverage, Evaluator, Goal, Objective, ObjectiveSet, ObjectiveSpec, Severity,
};

#[global_allocator]
static ALLOCATOR: cap::Cap<System> = cap::Cap::new(System, usize::MAX);

/// On the hour, far from any epoch edge.
const NOW: i64 = 1_800_000_000_000;
const SERVICES: usize = 100;
const EDGES: usize = 5_000;
const OBJECTIVES: usize = 1_000;

fn name(i: usize) -> NodeName {
    NodeName::new(&format!("svc-{i:03}"), 64).expect("a valid name")
}

/// 5,000 distinct edges among 100 services.
fn edges() -> Vec<Edge> {
    let mut edges = Vec::with_capacity(EDGES);
    'outer: for a in 0..SERVICES {
        for b in 0..SERVICES {
            if a != b {
                edges.push(Edge::new(name(a), name(b)));
                if edges.len() == EDGES {
                    break 'outer;
                }
            }
        }
    }
    edges
}

/// One event per edge at `ts`, 20 calls of 40 ms (two slow, one failed on every tenth edge).
fn traffic(edges: &[Edge], ts: i64) -> Vec<Event> {
    edges
        .iter()
        .enumerate()
        .flat_map(|(i, edge)| {
            let event = |latency_us, error, count| Event {
                edge: edge.clone(),
                ts_ms: ts,
                latency_us: Some(latency_us),
                error,
                bytes: 0,
                count,
            };
            let mut events = vec![event(40_000, false, 18), event(450_000, false, 2)];
            if i % 10 == 0 {
                events.push(event(40_000, true, 1));
            }
            events
        })
        .collect()
}

fn spec(value: serde_json::Value) -> Objective {
    let spec: ObjectiveSpec = serde_json::from_value(value).expect("a spec");
    Objective::from_spec(&spec, Config::defaults().objective_defaults()).expect("a valid objective")
}

/// 1,000 objectives: 500 latency ones on exact edges, 300 error ones on `svc-0NN -> *`
/// style patterns (about fifty edges each), 200 flow ones on exact edges.
fn objectives() -> ObjectiveSet {
    let mut objectives = Vec::with_capacity(OBJECTIVES);
    let edges = edges();
    for i in 0..500 {
        let edge = &edges[i * 7 % EDGES];
        objectives.push(spec(serde_json::json!({"name": format!("latency-{i}"), "from": edge.from.as_str(),
            "to": edge.to.as_str(), "window": "28d", "latency": {"threshold": "200ms", "target": "99%"}})));
    }
    for i in 0..300 {
        objectives.push(spec(serde_json::json!({"name": format!("errors-{i}"), "from": format!("svc-{:03}", i % SERVICES),
            "to": format!("svc-0{}*", i % 10), "window": if i % 2 == 0 { "28d" } else { "7d" }, "errors": {"target": "99.9%"}})));
    }
    for i in 0..200 {
        let edge = &edges[(i * 13 + 3) % EDGES];
        objectives.push(spec(serde_json::json!({"name": format!("flow-{i}"), "from": edge.from.as_str(),
            "to": edge.to.as_str(), "window": "1h", "flow": {"rate_at_least": "1/s", "for": "5m"}})));
    }
    ObjectiveSet::new(objectives).expect("distinct names")
}

/// The figures of every objective read straight from the view: each window's sums over
/// its edges' buckets at the coarsest resolution that holds it whole (the baseline).
fn stateless(state: &FlowState, set: &ObjectiveSet, at_ms: i64) -> f64 {
    let mut checksum = 0.0;
    let windows = [3_600_000, 300_000, 21_600_000, 1_800_000, 86_400_000, 7_200_000, 259_200_000, 21_600_000];
    let edges: Vec<Edge> = state.edges().cloned().collect();
    for objective in set.objectives() {
        let selected: Vec<&Edge> = edges.iter().filter(|e| objective.selector.matches(e)).collect();
        let lengths: Vec<i64> = match objective.goal {
            Goal::Flow { for_ms, .. } => vec![objective.window_ms, for_ms],
            _ => std::iter::once(objective.window_ms)
                .chain(windows.iter().map(|w| w * objective.window_ms / (30 * 86_400_000)))
                .collect(),
        };
        for length in lengths {
            let resolution = if length <= 3_600_000 {
                0
            } else if length <= 172_800_000 {
                1
            } else {
                2
            };
            for edge in &selected {
                for (_, data) in state.edge_buckets(edge, resolution, at_ms - length..at_ms) {
                    checksum += data.calls as f64 - data.errors as f64;
                    if let Goal::Latency { threshold_us, .. } = objective.goal {
                        checksum += data.latency.count_at_or_below_bounds(threshold_us).estimate;
                    }
                }
            }
        }
    }
    checksum
}

fn cost() {
    let edges = edges();
    let mut state = FlowState::new(default_settings(), default_limits());
    state.set_local(Origin::new("bench", 1));
    let start = NOW - 40 * 60_000;
    let mut ts = start;
    while ts < NOW {
        let events = traffic(&edges, ts);
        let outcome = state.apply_local(ts, &events);
        assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected.first());
        ts += 120_000;
    }
    let stats = state.stats();
    println!(
        "cost: {OBJECTIVES} objectives (500 latency, 300 errors on patterns, 200 flow) over {} edges, {} cells",
        stats.edges, stats.cells
    );
    let set = objectives();
    let settings = default_settings();
    let eval = Config::defaults().evaluation();
    let memory_before = ALLOCATOR.allocated();
    let mut evaluator = Evaluator::new(set.clone(), &settings, eval).expect("an evaluator");
    let changes = state.take_changes();
    let began = Instant::now();
    let first = evaluator.evaluate(NOW, &state, &changes, &Coverage::complete());
    let first_pass = began.elapsed();
    let memory = ALLOCATOR.allocated().saturating_sub(memory_before);
    let selected: usize = first.objectives.iter().map(|o| o.edges).sum();
    drop(first);

    // Steady passes: a step's traffic on every edge, then the next step.
    let mut at = NOW;
    let mut steady = Vec::new();
    for _ in 0..5 {
        let events = traffic(&edges, at - 1);
        state.apply_local(at, &events);
        at += eval.eval_interval_ms;
        let changes = state.take_changes();
        let began = Instant::now();
        let evaluation = evaluator.evaluate(at, &state, &changes, &Coverage::complete());
        steady.push(began.elapsed());
        drop(evaluation);
    }
    steady.sort();
    let steady_pass = steady[steady.len() / 2];
    let baseline = median_time(3, || {
        std::hint::black_box(stateless(&state, &set, at));
    });
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("  selected edges over all objectives: {selected}");
    println!("  first pass (every series built): {:.1} ms", ms(first_pass));
    println!(
        "  steady pass (one step's changes on every edge): {:.1} ms (target < 100 ms): {:.2}% of a core at a {} s interval",
        ms(steady_pass),
        ms(steady_pass) / eval.eval_interval_ms as f64 * 100.0,
        eval.eval_interval_ms / 1000
    );
    println!(
        "  baseline, every window read from the buckets (no alert history): {:.1} ms; steady / baseline {:.2}, first / baseline {:.2}",
        ms(baseline),
        ms(steady_pass) / ms(baseline),
        ms(first_pass) / ms(baseline)
    );
    println!(
        "  memory: {:.1} KiB per objective ({:.1} MiB for {OBJECTIVES}); the view: {:.1} MiB for {} cells\n",
        memory as f64 / 1024.0 / OBJECTIVES as f64,
        memory as f64 / 1024.0 / 1024.0,
        (ALLOCATOR.allocated().saturating_sub(memory)) as f64 / 1024.0 / 1024.0,
        stats.cells
    );
}

fn delay() {
    let objective = spec(serde_json::json!({"name": "payments-errors", "from": "checkout", "to": "payments",
        "window": "28d", "errors": {"target": "99.9%"}}));
    let edge = Edge::new(NodeName::new("checkout", 64).unwrap(), NodeName::new("payments", 64).unwrap());
    let set = ObjectiveSet::new(vec![objective]).expect("a set");
    let eval = Config::defaults().evaluation();
    let mut evaluator = Evaluator::new(set, &default_settings(), eval).expect("an evaluator");
    let mut state = FlowState::new(default_settings(), default_limits());
    state.set_local(Origin::new("bench", 1));
    // Two hours of good traffic at 10 calls a second, then every call fails.
    let outage = NOW + 2 * 3_600_000;
    let step = eval.eval_interval_ms;
    let mut at = NOW;
    let mut fired = None;
    let began = Instant::now();
    while at < outage + 600_000 && fired.is_none() {
        let error = at >= outage;
        let event =
            Event { edge: edge.clone(), ts_ms: at, latency_us: Some(20_000), error, bytes: 0, count: 100 };
        state.apply_local(at, &[event]);
        at += step;
        let changes = state.take_changes();
        let evaluation = evaluator.evaluate(at, &state, &changes, &Coverage::complete());
        let page =
            evaluation.objectives[0].alerts.iter().find(|a| a.severity == Severity::Page).expect("a page");
        if let AlertState::Firing { starts_at_ms } = page.state {
            fired = Some((at, starts_at_ms));
        }
    }
    let (seen_ms, starts_ms) = fired.expect("the outage pages");
    // The page's long window is the workbook's 1 h scaled to 28 days: 56 minutes.
    let reference_s = 0.0144 * 3360.0;
    let detected_s = (seen_ms - outage) as f64 / 1000.0;
    println!("delay: total outage on a 99.9%/28d error objective after 2 h of good traffic, 10 s steps");
    println!(
        "  page fires {detected_s:.0} s after the outage began (startsAt +{:.0} s); target < 75 s; reference {reference_s:.1} s (the 56 min window, 1 h scaled to 28 d, crossing 14.4x) + a step: ratio {:.2}",
        (starts_ms - outage) as f64 / 1000.0,
        detected_s / (reference_s + step as f64 / 1000.0)
    );
    println!(
        "  (a sender posts at once when an alert starts; {} evaluations took {:.0} ms)\n",
        (at - NOW) / step,
        began.elapsed().as_secs_f64() * 1000.0
    );
}

fn main() {
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wanted = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    println!("observatory objectives benchmarks\n");
    if wanted("delay") {
        delay();
    }
    if wanted("cost") {
        cost();
    }
}
