//! Burn rates and alert states on scripted traffic: a total outage pages within about a
//! minute on a 99.9% objective, recovers, and resolves; `for` holds an alert pending; a
//! stopped flow fires its not-flow alert; the latency SLI's bounds hold the exact share.

use observatory_core::FlowState;
use observatory_objectives::{AlertState, Evaluation, Evaluator, Severity};
use proptest::prelude::*;
use serde_json::json;

use crate::{T0, calls, edge, evaluate, evaluator, objective, state};

const STEP: i64 = 10_000;

/// Runs traffic from `from_ms` to `to_ms` in steps of 10 s (`rate` calls a step, the
/// share `error_at(ts)` failing), evaluating at every step from `evaluate_from_ms` on.
fn run(
    evaluator: &mut Evaluator,
    state: &mut FlowState,
    from_ms: i64,
    to_ms: i64,
    evaluate_from_ms: i64,
    traffic: impl Fn(i64) -> (u64, u64, u64),
) -> Vec<Evaluation> {
    let e = edge("checkout", "payments");
    let mut evaluations = Vec::new();
    let mut ts = from_ms;
    while ts < to_ms {
        let (n, errors, latency_us) = traffic(ts);
        let events = calls(&e, ts, n, errors, latency_us);
        if !events.is_empty() {
            state.apply_local(ts, &events);
        }
        if ts + STEP >= evaluate_from_ms {
            evaluations.push(evaluate(evaluator, state, ts + STEP));
        }
        ts += STEP;
    }
    evaluations
}

fn alert(evaluation: &Evaluation, severity: Severity) -> AlertState {
    evaluation.objectives[0].alerts.iter().find(|a| a.severity == severity).expect("the alert").state
}

#[test]
fn a_total_outage_pages_within_about_a_minute_and_resolves_after_recovery() {
    let objective = objective(json!({"name": "payments-errors", "from": "checkout", "to": "payments",
        "window": "28d", "errors": {"target": "99.9%"}}));
    let mut evaluator = evaluator(vec![objective]);
    let mut state = state("p1");
    let outage = T0..T0 + 300_000;
    let evaluations = run(&mut evaluator, &mut state, T0 - 7_200_000, T0 + 3_000_000, T0 - 60_000, |ts| {
        if outage.contains(&ts) { (100, 100, 1_000) } else { (100, 0, 1_000) }
    });
    let before = evaluations.iter().find(|e| e.at_ms == T0).expect("T0");
    assert_eq!(alert(before, Severity::Page), AlertState::Inactive);
    assert!(before.objectives[0].sli == Some(1.0), "{:?}", before.objectives[0].sli);
    let paged = evaluations
        .iter()
        .find(|e| matches!(alert(e, Severity::Page), AlertState::Firing { .. }))
        .expect("the outage pages");
    let AlertState::Firing { starts_at_ms } = alert(paged, Severity::Page) else { unreachable!() };
    let delay_s = (starts_at_ms - T0) / 1000;
    // The 56-minute window (1 h scaled to 28 d) passes 14.4x after about 50 s of outage.
    assert!((40..=75).contains(&delay_s), "paged after {delay_s} s");
    let status = &paged.objectives[0];
    assert!(status.burn_rates[0].rate > 14.4 && status.burn_rates[1].rate > 14.4, "{:?}", status.burn_rates);
    assert!(status.budget_remaining.unwrap() < 1.0 && status.exhaustion_ms.is_some());
    // The alert keeps its start while it fires.
    let firing: Vec<i64> = evaluations
        .iter()
        .filter_map(|e| match alert(e, Severity::Page) {
            AlertState::Firing { starts_at_ms } => Some(starts_at_ms),
            _ => None,
        })
        .collect();
    assert!(firing.iter().all(|&s| s == starts_at_ms), "one start for one episode");
    let resolved = evaluations
        .iter()
        .find_map(|e| match alert(e, Severity::Page) {
            AlertState::Resolved { starts_at_ms: s, ends_at_ms } => Some((s, ends_at_ms)),
            _ => None,
        })
        .expect("recovery resolves the page");
    assert_eq!(resolved.0, starts_at_ms);
    // Resolved once neither page pair burns: the slower pair's short window (28 minutes,
    // 30 m scaled to 28 d) holds the outage until about 28 minutes after it ended.
    let resolved_after_s = (resolved.1 - T0 - 300_000) / 1000;
    assert!((1_500..=1_800).contains(&resolved_after_s), "resolved {resolved_after_s} s after the outage");
    let last = evaluations.last().expect("evaluations");
    assert_eq!(
        alert(last, Severity::Page),
        AlertState::Inactive,
        "the resolved alert is held for 5 minutes, then gone"
    );
    assert!(last.objectives[0].sli.unwrap() < 1.0, "the outage stays in the 28-day SLI");
}

#[test]
fn for_holds_an_alert_pending_and_dates_firing_from_when_it_lasted_long_enough() {
    let objective = objective(json!({"name": "payments-errors", "from": "checkout", "to": "payments",
        "window": "28d", "errors": {"target": "99.9%"}, "for": "2m"}));
    let mut evaluator = evaluator(vec![objective]);
    let mut state = state("p1");
    let evaluations = run(&mut evaluator, &mut state, T0 - 7_200_000, T0 + 600_000, T0, |ts| {
        if ts >= T0 { (100, 100, 1_000) } else { (100, 0, 1_000) }
    });
    let pending = evaluations
        .iter()
        .find_map(|e| match alert(e, Severity::Page) {
            AlertState::Pending { since_ms } => Some(since_ms),
            _ => None,
        })
        .expect("pending first");
    let firing = evaluations
        .iter()
        .find_map(|e| match alert(e, Severity::Page) {
            AlertState::Firing { starts_at_ms } => Some(starts_at_ms),
            _ => None,
        })
        .expect("then firing");
    assert_eq!(firing, pending + 120_000, "firing two minutes after the breach began");
}

#[test]
fn a_stopped_flow_fires_the_not_flow_alert_and_a_resumed_one_resolves_it() {
    let objective = objective(json!({"name": "orders-flow", "from": "checkout", "to": "payments",
        "window": "1h", "flow": {"rate_at_least": "1/s", "for": "2m"}}));
    let mut evaluator = evaluator(vec![objective]);
    let mut state = state("p1");
    let stopped = T0..T0 + 600_000;
    let evaluations = run(&mut evaluator, &mut state, T0 - 1_800_000, T0 + 1_200_000, T0 - 60_000, |ts| {
        if stopped.contains(&ts) { (0, 0, 0) } else { (50, 0, 1_000) }
    });
    let flow = |e: &Evaluation| e.objectives[0].alerts[0].state;
    assert_eq!(flow(&evaluations[0]), AlertState::Inactive, "5/s is above 1/s");
    let fired = evaluations
        .iter()
        .find_map(|e| match flow(e) {
            AlertState::Firing { starts_at_ms } => Some(starts_at_ms),
            _ => None,
        })
        .expect("a stopped flow fires");
    // The rate over the last 2 minutes falls below 1/s once fewer than 120 calls remain in
    // them: 100 s after the stop at 5/s.
    assert_eq!(fired, T0 + 100_000, "fired at +{} s", (fired - T0) / 1000);
    assert!(
        evaluations.iter().any(|e| matches!(flow(e), AlertState::Resolved { .. })),
        "the resumed flow resolves it"
    );
    assert_eq!(evaluations.last().unwrap().objectives[0].alerts[0].severity, Severity::Page);
}

#[test]
fn a_flow_that_never_started_is_not_missing() {
    let objective = objective(json!({"name": "orders-flow", "from": "checkout", "to": "payments",
        "window": "1h", "flow": {"rate_at_least": "1/s", "for": "2m"}}));
    let mut evaluator = evaluator(vec![objective]);
    let mut state = state("p1");
    // No flow for half an hour, then a trickle below the rate from T0 on.
    let evaluations = run(&mut evaluator, &mut state, T0 - 1_800_000, T0 + 600_000, T0 - 1_800_000, |ts| {
        if ts >= T0 && ts % 10_000 == 0 { (1, 0, 1_000) } else { (0, 0, 0) }
    });
    let flow = |e: &Evaluation| e.objectives[0].alerts[0].state;
    let before = evaluations.iter().filter(|e| e.at_ms <= T0 + 120_000);
    assert!(before.clone().all(|e| flow(e) == AlertState::Inactive), "nothing to miss before it started");
    let fired = evaluations
        .iter()
        .find_map(|e| match flow(e) {
            AlertState::Firing { starts_at_ms } => Some(starts_at_ms),
            _ => None,
        })
        .expect("a flow below its rate fires once it has flowed for longer than `for`");
    assert!(fired > T0 + 120_000, "fired at +{} s, not before the flow was `for` old", (fired - T0) / 1000);
}

#[test]
fn few_calls_never_page() {
    let objective = objective(json!({"name": "quiet", "from": "checkout", "to": "payments",
        "window": "28d", "errors": {"target": "99.9%"}, "min_calls": 100}));
    let mut evaluator = evaluator(vec![objective]);
    let mut state = state("p1");
    // One call a minute, every one of them failing.
    let evaluations = run(&mut evaluator, &mut state, T0 - 1_800_000, T0 + 600_000, T0, |ts| {
        if ts % 60_000 == 0 { (1, 1, 1_000) } else { (0, 0, 0) }
    });
    assert!(
        evaluations.iter().all(|e| alert(e, Severity::Page) == AlertState::Inactive),
        "one slow call a minute never pages"
    );
    assert!(evaluations.last().unwrap().objectives[0].burn_rates.iter().any(|b| !b.counted));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Latencies spread over three origins, merged: the SLI's bounds hold the exact share
    /// of calls at or below any threshold, not only at counter boundaries.
    #[test]
    fn the_latency_sli_bounds_hold_the_exact_share(
        latencies in proptest::collection::vec((0usize..3, 1u64..5_000_000), 1..400),
        threshold_us in 1u64..5_000_000,
    ) {
        let e = edge("checkout", "payments");
        let mut origins: Vec<FlowState> = ["a", "b", "c"].iter().map(|p| state(p)).collect();
        for (i, &(origin, latency_us)) in latencies.iter().enumerate() {
            let ts = T0 - 600_000 + i as i64 * 1000;
            origins[origin].apply_local(T0, &calls(&e, ts, 1, 0, latency_us));
        }
        let mut merged = state("reader");
        for origin in &origins {
            for delta in origin.to_deltas() {
                merged.merge_delta(T0, delta, &mut Default::default()).expect("merges");
            }
        }
        let threshold = format!("{threshold_us}us");
        let objective = objective(json!({"name": "p", "from": "checkout", "to": "payments", "window": "1h",
            "latency": {"threshold": threshold, "target": "95%"}}));
        let mut evaluator = evaluator(vec![objective]);
        let status = &evaluate(&mut evaluator, &mut merged, T0).objectives[0];
        let exact = latencies.iter().filter(|(_, l)| *l <= threshold_us).count() as f64 / latencies.len() as f64;
        let (low, high, sli) = (status.sli_low.unwrap(), status.sli_high.unwrap(), status.sli.unwrap());
        prop_assert!(low <= exact + 1e-12 && exact <= high + 1e-12, "{low} <= {exact} <= {high}");
        prop_assert!(low <= sli + 1e-12 && sli <= high + 1e-12);
        prop_assert_eq!(status.calls, latencies.len() as u64);
    }
}
