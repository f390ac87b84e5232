//! Objectives at their boundary: specs checked with the key named, the SLI against the
//! exact share of raw latencies, burn rates and alert states on scripted traffic, and
//! determinism: the same global view gives the same alerts whatever the merge order and
//! whatever the evaluator saw before.

mod determinism;
mod scripted;
mod sender;
mod specs;

use observatory_config::Config;
use observatory_core::{Edge, EdgeKind, Event, FlowState, GlobalChanges, NodeName, Origin};
use observatory_objectives::{
    Coverage, EvalConfig, Evaluation, Evaluator, Objective, ObjectiveDefaults, ObjectiveSet, ObjectiveSpec,
};

/// 2027-01-15 08:00 UTC: on the hour.
pub const T0: i64 = 1_800_000_000_000;

pub fn name(s: &str) -> NodeName {
    NodeName::new(s, 200).expect("a valid name")
}

pub fn edge(from: &str, to: &str) -> Edge {
    Edge::with_kind(name(from), name(to), EdgeKind::Request)
}

pub fn defaults() -> ObjectiveDefaults {
    ObjectiveDefaults { min_calls: 10, for_ms: 0, keep_firing_for_ms: 0 }
}

pub fn eval_config() -> EvalConfig {
    EvalConfig { eval_interval_ms: 10_000, lookback_ms: 1_800_000, resolved_hold_ms: 300_000 }
}

/// Parses one objective from YAML-like JSON.
pub fn objective(json: serde_json::Value) -> Objective {
    let spec: ObjectiveSpec = serde_json::from_value(json).expect("a spec");
    Objective::from_spec(&spec, defaults()).expect("a valid objective")
}

pub fn evaluator(objectives: Vec<Objective>) -> Evaluator {
    let set = ObjectiveSet::new(objectives).expect("a set");
    Evaluator::new(set, &Config::defaults().settings().expect("settings"), eval_config())
        .expect("an evaluator")
}

pub fn state(peer: &str) -> FlowState {
    let config = Config::defaults();
    let mut state = FlowState::new(config.settings().expect("settings"), config.core_limits());
    state.set_local(Origin::new(peer, 1));
    state
}

/// `n` calls on `edge` at `ts_ms`, `errors` of them failed, each of `latency_us`.
pub fn calls(edge: &Edge, ts_ms: i64, n: u64, errors: u64, latency_us: u64) -> Vec<Event> {
    let mut events = Vec::new();
    if n > errors {
        events.push(Event {
            edge: edge.clone(),
            ts_ms,
            latency_us: Some(latency_us),
            error: false,
            bytes: 0,
            count: n - errors,
        });
    }
    if errors > 0 {
        events.push(Event {
            edge: edge.clone(),
            ts_ms,
            latency_us: Some(latency_us),
            error: true,
            bytes: 0,
            count: errors,
        });
    }
    events
}

/// Evaluates at `at_ms` with a complete picture, taking the state's changes.
pub fn evaluate(evaluator: &mut Evaluator, state: &mut FlowState, at_ms: i64) -> Evaluation {
    let changes: GlobalChanges = state.take_changes();
    evaluator.evaluate(at_ms, state, &changes, &Coverage::complete())
}
