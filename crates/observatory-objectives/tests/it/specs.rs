//! Specs as files declare them: checked, with the key at fault named.

use observatory_objectives::model::Pattern;
use observatory_objectives::{Goal, Objective, ObjectiveSet, ObjectiveSpec, Severity};
use serde_json::json;

use crate::{defaults, edge, objective};

fn refused(spec: serde_json::Value) -> String {
    let spec: ObjectiveSpec = serde_json::from_value(spec).expect("a spec");
    Objective::from_spec(&spec, defaults()).expect_err("refused").to_string()
}

#[test]
fn the_three_goals_parse_with_units_and_shares() {
    let latency = objective(json!({"name": "checkout-payments-p95", "from": "checkout", "to": "payments",
        "window": "28d", "latency": {"threshold": "200ms", "target": "95%"}}));
    assert_eq!(latency.window_ms, 28 * 86_400_000);
    assert_eq!(latency.goal, Goal::Latency { threshold_us: 200_000, target: 0.95 });
    assert_eq!((latency.min_calls, latency.for_ms), (10, 0), "from the defaults");

    let errors = objective(json!({"name": "into-payments", "from": "*", "to": "payments", "window": "7d",
        "errors": {"target": 0.999}, "min_calls": 50, "for": "2m", "keep_firing_for": "5m"}));
    assert_eq!(errors.goal, Goal::Errors { target: 0.999 });
    assert_eq!((errors.min_calls, errors.for_ms, errors.keep_firing_for_ms), (50, 120_000, 300_000));

    let flow = objective(json!({"name": "orders-flow", "from": "checkout", "to": "orders-queue",
        "kind": "messaging", "window": "1h", "flow": {"rate_at_least": "30/m", "for": "5m"}, "severity": "ticket"}));
    assert_eq!(
        flow.goal,
        Goal::Flow { rate_at_least_per_s: 0.5, for_ms: 300_000, severity: Severity::Ticket }
    );
}

#[test]
fn bad_values_name_their_key() {
    let base = json!({"name": "x", "from": "a", "to": "b", "window": "1d", "errors": {"target": "99%"}});
    let with = |key: &str, value: serde_json::Value| {
        let mut spec = base.clone();
        spec[key] = value;
        spec
    };
    for (spec, needle) in [
        (with("name", json!("two words")), "name:"),
        (with("window", json!("30m")), "window: must be from 1h to 28d"),
        (with("window", json!("soon")), "window:"),
        (with("kind", json!("rpc")), "kind:"),
        (with("errors", json!({"target": "100%"})), "errors.target"),
        (with("errors", json!({"target": "ninety"})), "errors.target"),
        (with("for", json!("5 parsecs")), "for:"),
        (with("severity", json!("page")), "severity:"),
        (with("latency", json!({"threshold": "200ms", "target": "95%"})), "exactly one"),
        (with("from", json!("")), "from:"),
    ] {
        let error = refused(spec.clone());
        assert!(error.contains(needle), "{spec}: {error}");
    }
    let flow = json!({"name": "f", "from": "a", "to": "b", "window": "1h", "flow": {"rate_at_least": "1 per s", "for": "5m"}});
    assert!(refused(flow).contains("flow.rate_at_least"));
    let unknown: Result<ObjectiveSpec, _> =
        serde_json::from_value(json!({"name": "x", "from": "a", "to": "b",
        "window": "1d", "errors": {"target": "99%"}, "treshold": 1}));
    assert!(unknown.expect_err("unknown key").to_string().contains("treshold"));
}

#[test]
fn patterns_match_names_with_stars() {
    let pattern = |text: &str| {
        let spec: ObjectiveSpec = serde_json::from_value(json!({"name": "p", "from": text, "to": "b",
            "window": "1d", "errors": {"target": "99%"}}))
        .unwrap();
        Objective::from_spec(&spec, defaults()).unwrap().selector.from
    };
    let matches = |p: &Pattern, name: &str| p.matches(name);
    assert!(matches(&pattern("*"), "anything"));
    assert!(matches(&pattern("checkout"), "checkout") && !matches(&pattern("checkout"), "checkouts"));
    assert!(matches(&pattern("pay*"), "payments") && !matches(&pattern("pay*"), "repay"));
    assert!(matches(&pattern("*-db"), "orders-db") && !matches(&pattern("*-db"), "orders-db2"));
    assert!(
        matches(&pattern("a*b*c"), "a-b-c")
            && matches(&pattern("a*b*c"), "abc")
            && !matches(&pattern("a*b*c"), "acb")
    );
    let everything_into_payments = objective(
        json!({"name": "p", "from": "*", "to": "payments", "window": "1d", "errors": {"target": "99%"}}),
    );
    assert!(everything_into_payments.selector.matches(&edge("web", "payments")));
    assert!(!everything_into_payments.selector.matches(&edge("payments", "web")));
}

#[test]
fn the_set_fingerprint_ignores_order_and_sees_every_change() {
    let a =
        objective(json!({"name": "a", "from": "x", "to": "y", "window": "1d", "errors": {"target": "99%"}}));
    let b =
        objective(json!({"name": "b", "from": "x", "to": "z", "window": "1d", "errors": {"target": "99%"}}));
    let b2 = objective(
        json!({"name": "b", "from": "x", "to": "z", "window": "1d", "errors": {"target": "99.5%"}}),
    );
    let one = ObjectiveSet::new(vec![a.clone(), b.clone()]).unwrap();
    let other_order = ObjectiveSet::new(vec![b.clone(), a.clone()]).unwrap();
    let changed = ObjectiveSet::new(vec![a.clone(), b2]).unwrap();
    assert_eq!(one.fingerprint(), other_order.fingerprint());
    assert_ne!(one.fingerprint(), changed.fingerprint());
    assert_eq!(one.fingerprint().len(), 16);
    let twice = ObjectiveSet::new(vec![a.clone(), a]).expect_err("two of one name");
    assert!(twice.to_string().contains("names two objectives"), "{twice}");
}
