//! Objectives and alerts in the simulator: the shipped partition scenario over several
//! seeds, and the objective invariants failing when the Alertmanager never hears of an
//! alert.

use observatory_sim::Scenario;

use crate::{assert_held, run, shipped};

#[test]
fn objectives_partition_alerts_agree_and_resolve() {
    let scenario = shipped("objectives-partition");
    for seed in [1, 2, 3] {
        let report = run(&scenario, seed);
        assert_held(&report, scenario.peers);
        let objectives = report.objectives.as_ref().expect("the scenario declares objectives");
        let by_name = |name: &str| objectives.objectives.iter().find(|o| o.name == name).expect("reported");
        let payments = by_name("payments-errors");
        // Page and ticket, both fired during the cut on both halves, still firing.
        assert_eq!((payments.episodes, payments.resolved), (2, 0), "seed {seed}: {payments:?}");
        let delay = payments.detection_delay_s.expect("detected");
        assert!(delay <= 20.0, "seed {seed}: the outage was told {delay} s after it began");
        assert!(payments.senders >= 2, "seed {seed}: each half sends while cut: {payments:?}");
        // The stopped flow is not told while the picture is partial: only after the
        // heal at 7 min, three minutes after the stop; then it resolves once it resumes.
        let queue = by_name("queue-flow");
        assert_eq!((queue.episodes, queue.resolved), (1, 1), "seed {seed}: {queue:?}");
        let delay = queue.detection_delay_s.expect("detected");
        assert!(
            (180.0..=215.0).contains(&delay),
            "seed {seed}: the not-flow was told {delay} s after the stop"
        );
        assert_eq!(queue.senders, 1, "seed {seed}: the healed mesh has one sender: {queue:?}");
    }
}

#[test]
fn an_alertmanager_down_to_the_end_fails_the_sink_invariant() {
    let text = std::fs::read_to_string(
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../simulations/objectives-partition.yaml"),
    )
    .expect("the shipped scenario reads");
    let down = text.replace("timeline:\n", "timeline:\n  - at: 90s\n    sink: down\n");
    let scenario = Scenario::from_yaml(&down).expect("valid");
    let report = run(&scenario, 1);
    let failed: Vec<&str> = report.invariants.iter().filter(|i| !i.ok).map(|i| i.name).collect();
    assert_eq!(failed, ["transitions_reach_sink"], "{}", report.summary());
    assert!(report.objectives.expect("reported").posts_refused > 0);

    // Back up before the end: the senders' retries deliver everything.
    let back =
        text.replace("timeline:\n", "timeline:\n  - at: 90s\n    sink: down\n  - at: 5m\n    sink: up\n");
    let report = run(&Scenario::from_yaml(&back).expect("valid"), 1);
    assert_held(&report, 4);
}
