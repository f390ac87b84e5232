//! Same scenario, same seed, same code: byte-identical `report.json`.

use crate::{run, shipped};

#[test]
fn same_seed_gives_byte_identical_reports() {
    for name in ["partition-heal", "churn", "lossy-network"] {
        let scenario = shipped(name).with_peers(16).expect("valid");
        let first = run(&scenario, 7);
        let second = run(&scenario, 7);
        assert_eq!(first.to_json(), second.to_json(), "{name}: two runs with seed 7 differ");
        assert_eq!(first.convergence_svg(), second.convergence_svg(), "{name}: charts differ");
    }
}

#[test]
fn other_seeds_give_other_runs() {
    let scenario = shipped("lossy-network").with_peers(8).expect("valid");
    let a = run(&scenario, 1);
    let b = run(&scenario, 2);
    assert_ne!(a.messages, b.messages, "the seed must drive the network's choices");
}
