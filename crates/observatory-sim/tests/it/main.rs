//! The simulator at its boundary: shipped scenarios at reduced size over many seeds,
//! determinism, the checks catching what they should, and scenario errors.

mod checks;
mod determinism;
mod objectives;
mod scenario_errors;
mod scenarios;

use std::path::PathBuf;

use observatory_sim::{Report, Scenario, Simulation};

/// A scenario shipped in `simulations/`.
pub fn shipped(name: &str) -> Scenario {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../simulations").join(format!("{name}.yaml"));
    Scenario::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Runs to the end.
pub fn run(scenario: &Scenario, seed: u64) -> Report {
    Simulation::new(scenario, seed).run(&mut |_| {})
}

/// Fails with the summary and the replay command when an invariant did not hold.
pub fn assert_held(report: &Report, peers: usize) {
    assert!(
        report.ok() && report.converged,
        "{} failed with seed {}:\n{}\nreplay: observatory sim simulations/{}.yaml --seed {} --peers {peers}",
        report.scenario,
        report.seed,
        report.summary(),
        report.scenario,
        report.seed
    );
}
