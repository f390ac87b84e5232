//! Who sends which alert, and when: one owner per alert among the peers, batches every
//! resend interval and at once on a change, retries with backoff.

use std::collections::BTreeMap;

use observatory_objectives::alerts::owner;
use observatory_objectives::{Alert, AlertSender, SenderConfig};

fn alert(name: &str, starts_at_ms: i64, resolved_at_ms: Option<i64>) -> Alert {
    let labels: BTreeMap<String, String> =
        [("alertname", "ObservatoryObjectiveBurn"), ("objective", name), ("severity", "page")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    Alert {
        labels,
        annotations: BTreeMap::new(),
        starts_at_ms,
        resolved_at_ms,
        generator_path: "/".into(),
        graph_path: "/".into(),
    }
}

fn config() -> SenderConfig {
    SenderConfig {
        targets: 2,
        resend_interval_ms: 60_000,
        ends_at_resends: 4,
        retry_min_ms: 1_000,
        retry_max_ms: 8_000,
    }
}

fn peers(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

#[test]
fn every_alert_has_exactly_one_owner_and_keeps_it_while_the_peers_stay() {
    let three = peers(&["p1", "p2", "p3"]);
    let alerts: Vec<Alert> = (0..60).map(|i| alert(&format!("o{i}"), 0, None)).collect();
    let mut owned: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &alerts {
        *owned.entry(owner(a.fingerprint(), &three).unwrap().as_str()).or_default() += 1;
    }
    assert_eq!(owned.values().sum::<usize>(), 60);
    assert_eq!(owned.len(), 3, "spread over the peers: {owned:?}");
    // p3 leaves: only its alerts move.
    let two = peers(&["p1", "p2"]);
    for a in &alerts {
        let before = owner(a.fingerprint(), &three).unwrap();
        let after = owner(a.fingerprint(), &two).unwrap();
        if before != "p3" {
            assert_eq!(before, after);
        }
    }
}

#[test]
fn batches_go_at_once_on_a_change_then_every_resend_interval() {
    let mut sender = AlertSender::new(config());
    let me = peers(&["me"]);
    assert!(sender.poll_transmit(0).is_none(), "nothing to send");
    sender.update(1_000, vec![alert("a", 500, None)], &me, "me");
    let first = sender.poll_transmit(1_000).expect("a batch at once");
    let second = sender.poll_transmit(1_000).expect("one for the other Alertmanager");
    assert_eq!((first.target, second.target), (0, 1));
    assert!(sender.poll_transmit(1_000).is_none(), "one in flight per Alertmanager");
    assert_eq!(first.alerts[0].ends_at_ms, 1_000 + 4 * 60_000, "endsAt four resends ahead");
    sender.handle_result(1_100, first.id, true, 1);
    sender.handle_result(1_100, second.id, true, 1);
    assert_eq!(sender.poll_timeout(), 61_100);
    assert!(sender.poll_transmit(30_000).is_none());
    // The same alert again changes nothing; its end does.
    sender.update(40_000, vec![alert("a", 500, None)], &me, "me");
    assert!(sender.poll_transmit(40_000).is_none());
    sender.update(50_000, vec![alert("a", 500, Some(45_000))], &me, "me");
    let resolved = sender.poll_transmit(50_000).expect("an end goes at once");
    assert_eq!(resolved.alerts[0].ends_at_ms, 45_000, "a final endsAt");
    assert_eq!(sender.counters().alerts_owned, 1);
}

#[test]
fn a_failed_batch_is_retried_with_backoff() {
    let mut sender = AlertSender::new(SenderConfig { targets: 1, ..config() });
    sender.update(0, vec![alert("a", 0, None)], &peers(&["me"]), "me");
    let mut at = 0;
    let mut retries = Vec::new();
    for _ in 0..5 {
        let batch = sender.poll_transmit(at).expect("due");
        sender.handle_result(at, batch.id, false, 0);
        let next = sender.poll_timeout();
        retries.push(next - at);
        at = next;
    }
    assert_eq!(retries, [1_000, 2_000, 4_000, 8_000, 8_000]);
    assert_eq!(sender.counters().batches_failed, 5);
    let batch = sender.poll_transmit(at).expect("due");
    sender.handle_result(at, batch.id, true, 1);
    assert_eq!(sender.poll_timeout(), at + 60_000, "back to the resend interval");
}

#[test]
fn an_alert_owned_by_another_peer_is_not_sent_until_it_goes() {
    let a = alert("taken-over", 0, None);
    let both = peers(&["p1", "p2"]);
    let holder = owner(a.fingerprint(), &both).unwrap().clone();
    let other = if holder == "p1" { "p2" } else { "p1" };
    let mut sender = AlertSender::new(config());
    sender.update(0, vec![a.clone()], &both, other);
    assert!(sender.poll_transmit(0).is_none(), "not ours");
    sender.update(10_000, vec![a], &peers(&[other]), other);
    assert!(sender.poll_transmit(10_000).is_some(), "ours at once when its owner is gone");
}
