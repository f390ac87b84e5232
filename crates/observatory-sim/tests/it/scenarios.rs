//! Every shipped scenario but `scale-10000`, at reduced size, over several seeds (24 runs
//! in all): every invariant must hold and every up peer must end exact.

use crate::{assert_held, run, shipped};

/// Runs `name` with `peers` peers for each seed and checks the outcome.
fn holds(name: &str, peers: usize, seeds: &[u64]) -> Vec<observatory_sim::Report> {
    let scenario = shipped(name).with_peers(peers).expect("the reduced scenario is valid");
    seeds
        .iter()
        .map(|&seed| {
            let report = run(&scenario, seed);
            assert_held(&report, peers);
            assert!(report.events_accepted > 0, "{name} seed {seed}: the workload accepted nothing");
            report
        })
        .collect()
}

#[test]
fn partition_heal_ends_exact() {
    for report in holds("partition-heal", 8, &[1, 2, 3, 4]) {
        let labels: Vec<&str> = report.faults.iter().map(|f| f.label.as_str()).collect();
        assert_eq!(labels, ["partition into 2", "heal"]);
        // Messages crossed the cut before the connections were noticed broken.
        assert!(report.messages.undeliverable > 0, "seed {}: nothing was cut", report.seed);
    }
}

#[test]
fn crash_restart_loses_nothing() {
    for report in holds("crash-restart", 8, &[1, 2, 3]) {
        assert_eq!(report.events_lost, 0, "seed {}: durable acks lose nothing", report.seed);
        assert_eq!(report.loss_reason, None);
    }
}

#[test]
fn disk_loss_relearns_everything_else() {
    let reports = holds("disk-loss", 6, &[1, 2, 3, 4]);
    for report in &reports {
        assert!(report.loss_reason.is_some(), "a lost disk may lose what it had not passed on");
        // At most the few batches the peer took since its last sync can be gone.
        assert!(
            report.events_lost * 10 < report.events_accepted,
            "seed {}: lost {} of {}",
            report.seed,
            report.events_lost,
            report.events_accepted
        );
    }
}

#[test]
fn lossy_network_still_converges() {
    for report in holds("lossy-network", 8, &[1, 2, 3]) {
        assert!(report.messages.lost > 0 && report.messages.duplicated > 0, "seed {}", report.seed);
    }
}

#[test]
fn clock_skew_rejects_out_of_window_events_and_stays_exact() {
    for report in holds("clock-skew", 6, &[1, 2, 3]) {
        // One peer far ahead rejects events as too late, one far behind as in the future.
        assert!(
            report.events_rejected.get("ts_too_late").is_some_and(|&n| n > 0),
            "{:?}",
            report.events_rejected
        );
        assert!(
            report.events_rejected.get("ts_in_future").is_some_and(|&n| n > 0),
            "{:?}",
            report.events_rejected
        );
    }
}

#[test]
fn churn_with_mismatched_settings_stays_exact_and_isolated() {
    for report in holds("churn", 16, &[1, 2, 3]) {
        assert_eq!(report.peers.total, 24);
        // Three decommissioned peers left; the crashed ones came back.
        assert_eq!(report.peers.up_at_end, 21);
        assert_eq!(report.events_lost, 0);
    }
}

#[test]
fn scale_scenario_converges_at_reduced_size() {
    for report in holds("scale-1000", 60, &[1, 2, 3, 4]) {
        let rounds = report.rounds_to_converge.expect("converged");
        assert!(rounds.max > 0.0, "seed {}: peers other than the writers need rounds", report.seed);
    }
}
