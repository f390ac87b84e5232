//! The checks catch what they should: a forged cell, slipped into one peer behind the
//! protocol's back, must surface as a violation (and fail the run).

use observatory_core::{Cell, CellData, CellKey, Edge, NodeName, Origin, OriginDelta, Transfer};
use observatory_sim::Simulation;
use observatory_sim::sim::START_MS;

use crate::shipped;

#[test]
fn a_forged_origin_is_caught() {
    let scenario = shipped("partition-heal").with_peers(6).expect("valid");
    let mut simulation = Simulation::new(&scenario, 3);
    simulation.run_until(15_000);
    let name = |n: &str| NodeName::new(n, 64).expect("valid name");
    let key = CellKey {
        edge: Edge::new(name("svc-00"), name("svc-01")),
        resolution: 0,
        bucket_start_ms: START_MS + 10_000,
    };
    let cell = Cell { seq: 1, data: CellData { calls: 7, ..CellData::default() } };
    let forged = OriginDelta::whole(Origin::new("ghost", 1), 1, None, vec![(key, cell)]);
    let state = simulation.peer_state_mut(2).expect("peer 2 exists");
    state
        .merge_delta(START_MS + 15_000, forged, &mut Transfer::default())
        .expect("a well-formed delta merges");

    let report = simulation.run(&mut |_| {});
    assert!(!report.ok(), "a forged origin went unnoticed:\n{}", report.summary());
    let failed: Vec<&str> = report.invariants.iter().filter(|i| !i.ok).map(|i| i.name).collect();
    for invariant in ["never_exceeds_truth", "version_vectors_honest", "exact_after_quiescence"] {
        assert!(failed.contains(&invariant), "{invariant} should fail: {}", report.summary());
    }
    let first = report.first_violation.expect("a first violation");
    assert!(
        first.detail.contains("ghost") || first.detail.contains("where nothing was written"),
        "{}",
        first.detail
    );
    assert!(!report.converged);
}
