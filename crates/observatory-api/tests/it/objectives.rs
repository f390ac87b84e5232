//! Objectives over HTTP: `GET /api/v1/objectives`, `POST /api/v1/objectives/reload`,
//! `GET /api/v1/alerts` and the objective gauges of `/metrics`, against a fake peer that
//! evaluates real objectives on its state.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};

use crate::exposition::metrics;
use crate::{TestPeer, now_ms};

const OBJECTIVES: &str = "objectives:
  - name: checkout-payments-latency
    from: checkout
    to: payments
    window: 1h
    latency: { threshold: 200ms, target: 95% }
  - name: payments-errors
    from: \"*\"
    to: payments
    window: 28d
    errors: { target: 99.9% }
";

/// A peer with the objectives above in a file (kept with the peer's tempdir).
fn peer() -> (TestPeer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a tempdir");
    let file = dir.path().join("objectives.yaml");
    std::fs::write(&file, OBJECTIVES).expect("writing the objectives");
    (TestPeer::with_objectives(vec![file]), dir)
}

/// 100 calls from checkout to payments 30 s ago (in a closed bucket): 60 within 200 ms
/// (150 ms), 40 slow (900 ms), 10 of the slow ones failed.
async fn slow_traffic(peer: &TestPeer) {
    let ts = now_ms() - 30_000;
    let events = json!([
        {"from": "checkout", "to": "payments", "ts": ts, "latency_ms": 150.0, "count": 60},
        {"from": "checkout", "to": "payments", "ts": ts, "latency_ms": 900.0, "count": 30},
        {"from": "checkout", "to": "payments", "ts": ts, "latency_ms": 900.0, "count": 10, "error": true},
    ]);
    let (status, answer) = peer.post("application/json", events.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

fn objective<'a>(answer: &'a Value, name: &str) -> &'a Value {
    answer["objectives"].as_array().and_then(|o| o.iter().find(|o| o["name"] == name)).expect("the objective")
}

#[tokio::test]
async fn objectives_show_sli_budget_burn_and_state() {
    let (peer, _dir) = peer();
    slow_traffic(&peer).await;
    let (status, answer) = peer.get("/api/v1/objectives").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["objectives"].as_array().map(Vec::len), Some(2), "{answer}");
    assert!(answer["fingerprint"].as_str().is_some_and(|f| f.len() == 16), "{answer}");

    let latency = objective(&answer, "checkout-payments-latency");
    assert_eq!(latency["goal"], json!({"type": "latency", "threshold_ms": 200.0, "target": 0.95}));
    assert_eq!((latency["edges"].clone(), latency["calls"].clone()), (json!(1), json!(100)));
    // 150 ms and 900 ms lie far from 200 ms: the share is exact.
    assert_eq!(latency["sli"], json!(0.6), "{latency}");
    assert_eq!((latency["sli_low"].clone(), latency["sli_high"].clone()), (json!(0.6), json!(0.6)));
    // 40% bad against a 5% budget: eight budgets spent, seven overspent.
    let budget = latency["budget_remaining"].as_f64().expect("a budget");
    assert!((budget - -7.0).abs() < 1e-9, "{latency}");
    assert_eq!(latency["coverage"], "complete");
    // A 1-hour objective scales the workbook's windows to 10 s to 6 min: those with
    // the calls burn at 8x (40% bad over a 5% budget), the 10 s ones hold none.
    let burns = latency["burn_rates"].as_array().expect("burn rates");
    assert_eq!(burns.len(), 8, "page then ticket pairs, long then short: {latency}");
    for burn in burns {
        let expected = if burn["calls"] == 100 { 8.0 } else { 0.0 };
        assert!((burn["rate"].as_f64().unwrap() - expected).abs() < 1e-9, "{burn}");
    }

    let errors = objective(&answer, "payments-errors");
    assert_eq!(errors["sli"], json!(0.9), "{errors}");
    // 10% failed against a 0.1% budget: 100x, above both page pairs' factors.
    assert_eq!(errors["state"], "firing", "{errors}");
    assert_eq!(errors["alerts"][0]["severity"], "page");
    assert_eq!(errors["alerts"][0]["state"], "firing", "{errors}");
    assert_eq!(errors["from"], "*");
    // Exhaustion at the current burn: already spent.
    assert_eq!(errors["exhaustion"], "0ms", "{errors}");

    let (status, one) = peer.get("/api/v1/objectives?name=payments-errors").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["objectives"].as_array().map(Vec::len), Some(1));
    let (status, missing) = peer.get("/api/v1/objectives?name=nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
    assert!(missing.to_string().contains("nope"), "{missing}");
    let (status, bad) = peer.get("/api/v1/objectives?nmae=x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    assert!(bad.to_string().contains("nmae"), "{bad}");
}

#[tokio::test]
async fn alerts_come_in_alertmanager_format_without_peer_ids() {
    let (peer, _dir) = peer();
    slow_traffic(&peer).await;
    let (status, alerts) = peer.get("/api/v1/alerts").await;
    assert_eq!(status, StatusCode::OK, "{alerts}");
    let alerts = alerts.as_array().expect("a list");
    // Page and ticket of both objectives.
    assert_eq!(alerts.len(), 4, "{alerts:?}");
    for alert in alerts {
        let labels = alert["labels"].as_object().expect("labels");
        let keys: Vec<&str> = labels.keys().map(String::as_str).collect();
        assert_eq!(keys, ["alertname", "from", "kind", "objective", "severity", "to"], "{alert}");
        assert_eq!(labels["alertname"], "ObservatoryObjectiveBurn");
        assert!(alert["startsAt"].as_str().is_some_and(|t| t.ends_with('Z')), "{alert}");
        assert!(alert["endsAt"].as_str() > alert["startsAt"].as_str(), "{alert}");
        let url = alert["generatorURL"].as_str().expect("a link");
        assert!(url.starts_with("http://fake.example/api/v1/objectives?name="), "{url}");
        assert!(alert["annotations"]["graph"].as_str().is_some_and(|g| g.contains("/api/v1/graph?window=")));
        assert!(
            alert["annotations"]["summary"]
                .as_str()
                .is_some_and(|s| s.contains("checkout -> payments") || s.contains("* -> payments")),
            "{alert}"
        );
    }
}

#[tokio::test]
async fn metrics_carry_the_objective_gauges() {
    let (peer, _dir) = peer();
    slow_traffic(&peer).await;
    let (_, exposition) = metrics(&peer).await;
    let value = |name: &str, labels: &[(&str, &str)]| {
        exposition
            .samples
            .iter()
            .find(|s| {
                s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    };
    assert_eq!(exposition.types.get("observatory_objective_sli").map(String::as_str), Some("gauge"));
    assert_eq!(value("observatory_objective_sli", &[("objective", "checkout-payments-latency")]), Some(0.6));
    assert_eq!(value("observatory_objective_sli", &[("objective", "payments-errors")]), Some(0.9));
    let budget =
        value("observatory_objective_budget_remaining", &[("objective", "checkout-payments-latency")]);
    assert!(budget.is_some_and(|b| (b + 7.0).abs() < 1e-9), "{budget:?}");
    assert_eq!(
        value("observatory_objective_state", &[("objective", "payments-errors"), ("severity", "page")]),
        Some(2.0)
    );
    let burns: Vec<_> = exposition
        .samples
        .iter()
        .filter(|s| s.name == "observatory_objective_burn_rate" && s.labels["objective"] == "payments-errors")
        .collect();
    // The workbook's eight windows scaled to 28 days: 56m, 4m40s, 5h36m, 28m, 22h24m,
    // 1h52m, 2d19h12m and 5h36m again (the ticket's short one), written once.
    let windows: std::collections::BTreeSet<&str> =
        burns.iter().map(|s| s.labels["window"].as_str()).collect();
    assert_eq!((burns.len(), windows.len()), (7, 7), "no window twice: {windows:?}");
}

#[tokio::test]
async fn a_bad_reload_keeps_the_objectives_and_names_the_key() {
    let (peer, dir) = peer();
    let file = dir.path().join("objectives.yaml");
    std::fs::write(&file, OBJECTIVES.replace("target: 95%", "target: 120%")).expect("writing");
    let request = Request::post("/api/v1/objectives/reload").body(Body::empty()).expect("request");
    let (status, answer) = peer.request(request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let message = answer.to_string();
    assert!(message.contains("objectives[0]") && message.contains("latency.target"), "{message}");
    assert!(message.contains("those in force stay"), "{message}");
    let (_, answer) = peer.get("/api/v1/objectives").await;
    assert_eq!(answer["objectives"].as_array().map(Vec::len), Some(2), "the old objectives stay: {answer}");
    assert!(answer["reload_error"].as_str().is_some_and(|e| e.contains("latency.target")), "{answer}");

    // A good file replaces them.
    std::fs::write(&file, OBJECTIVES.split("  - name: payments-errors").next().unwrap()).expect("writing");
    let request = Request::post("/api/v1/objectives/reload").body(Body::empty()).expect("request");
    let (status, answer) = peer.request(request).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["reload_error"], Value::Null);
    let (_, answer) = peer.get("/api/v1/objectives").await;
    assert_eq!(answer["objectives"].as_array().map(Vec::len), Some(1), "{answer}");
}
