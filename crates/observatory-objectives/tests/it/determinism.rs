//! The same global view gives the same evaluation: whatever order the origins' cells
//! were merged in, and whether the evaluator followed the view step by step (seeing a
//! partial picture first and the rest late) or saw it only at the end.

use observatory_core::{FlowState, Transfer};
use observatory_objectives::{AlertState, Evaluation};
use serde_json::json;

use crate::{T0, calls, edge, evaluate, evaluator, objective, state};

/// Three origins' traffic: `a` and `c` healthy, `b` failing from T0 for five minutes.
fn origins() -> Vec<FlowState> {
    let e = edge("checkout", "payments");
    let mut states: Vec<FlowState> = ["a", "b", "c"].iter().map(|p| state(p)).collect();
    let mut ts = T0 - 1_200_000;
    while ts < T0 + 1_200_000 {
        for (i, origin) in states.iter_mut().enumerate() {
            let failing = i == 1 && (T0..T0 + 300_000).contains(&ts);
            origin.apply_local(ts, &calls(&e, ts, 40, if failing { 40 } else { 0 }, 2_000 + i as u64 * 500));
        }
        ts += 10_000;
    }
    states
}

fn merge(into: &mut FlowState, from: &FlowState) {
    for delta in from.to_deltas() {
        into.merge_delta(T0, delta, &mut Transfer::default()).expect("merges");
    }
}

fn objectives() -> Vec<observatory_objectives::Objective> {
    vec![
        objective(json!({"name": "errors", "from": "checkout", "to": "*", "window": "28d",
            "errors": {"target": "99.9%"}})),
        objective(json!({"name": "latency", "from": "*", "to": "payments", "window": "1d",
            "latency": {"threshold": "2.2ms", "target": "50%"}, "for": "30s"})),
        objective(json!({"name": "flow", "from": "checkout", "to": "payments", "window": "1h",
            "flow": {"rate_at_least": "1/s", "for": "1m"}})),
    ]
}

/// What must agree between peers: every figure and every alert.
fn key(evaluation: &Evaluation) -> Vec<String> {
    evaluation.objectives.iter().map(|s| format!("{s:?}")).collect()
}

#[test]
fn merge_order_does_not_matter() {
    let origins = origins();
    let end = T0 + 1_200_000;
    let mut results = Vec::new();
    for order in [[0, 1, 2], [2, 1, 0], [1, 0, 2]] {
        let mut reader = state("reader");
        for &i in &order {
            merge(&mut reader, &origins[i]);
        }
        results.push(key(&evaluate(&mut evaluator(objectives()), &mut reader, end)));
    }
    assert_eq!(results[0], results[1]);
    assert_eq!(results[0], results[2]);
}

#[test]
fn an_evaluator_that_saw_a_partial_picture_agrees_once_the_rest_arrives() {
    let origins = origins();
    let end = T0 + 1_200_000;
    // Follows the view step by step with `a` and `c` only, then `b` arrives late (as after
    // a partition heals).
    let mut late = state("late");
    merge(&mut late, &origins[0]);
    merge(&mut late, &origins[2]);
    let mut following = evaluator(objectives());
    let mut at = T0 - 600_000;
    while at < end {
        let evaluation = evaluate(&mut following, &mut late, at);
        let errors = &evaluation.objectives[0];
        assert!(errors.alerts.iter().all(|a| a.state == AlertState::Inactive), "no outage without b");
        at += 10_000;
    }
    merge(&mut late, &origins[1]);
    let followed = evaluate(&mut following, &mut late, end);

    // Sees everything at once, at the end only.
    let mut whole = state("whole");
    for origin in &origins {
        merge(&mut whole, origin);
    }
    let fresh = evaluate(&mut evaluator(objectives()), &mut whole, end);
    assert_eq!(key(&followed), key(&fresh));
    // And b's outage shows: in the SLI, and in the page that fired in between.
    assert!(fresh.objectives[0].sli.unwrap() < 1.0);
    let mut whole_so_far = state("whole");
    for origin in &origins {
        merge(&mut whole_so_far, origin);
    }
    let during = evaluate(&mut evaluator(objectives()), &mut whole_so_far, T0 + 240_000);
    assert!(
        matches!(during.objectives[0].alerts[0].state, AlertState::Firing { .. }),
        "{:?}",
        during.objectives[0].alerts
    );
}
