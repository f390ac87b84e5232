//! `cargo bench -p observatory-bench --bench sim [-- scale-1000|scale-10000|speed]`
//!
//! The failure simulator at scale, run on the shipped scenarios:
//!
//! - `scale-1000`: rounds until every peer's view is exact after the last write, over
//!   several seeds (target: p99 within 12 rounds), against the rounds a push-pull
//!   epidemic needs in theory (log3 of the peer count) as a same-run reference.
//! - `scale-10000`: the same at 10,000 peers, one seed (target: within 16 rounds).
//! - `speed`: simulated seconds per wall-clock second at 100 (the baseline), 1,000 and
//!   10,000 peers (target: faster than real time at 1,000).
//!
//! `SIM_SEEDS` sets how many seeds `scale-1000` runs (default 5).

use std::path::PathBuf;
use std::time::Instant;

use observatory_sim::{Report, Scenario, Simulation};

fn main() {
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wanted = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    println!("observatory simulator benchmarks\n");
    let mut speeds = Vec::new();
    if wanted("scale-1000") || wanted("speed") {
        let seeds: u64 = std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
        let scenario = shipped("scale-1000");
        let baseline = scenario.with_peers(100).expect("valid");
        let (_, wall_s, report) = timed(&baseline, 1);
        speeds.push((100, report.simulated_seconds / wall_s));
        let mut rounds_all = Vec::new();
        println!("scale-1000: 1,000 peers, fanout 2, 1 s interval, 1% loss, degree-16 random links");
        for seed in 1..=seeds {
            let (_, wall_s, report) = timed(&scenario, seed);
            check(&report);
            let rounds = report.rounds_to_converge.expect("converged");
            println!(
                "  seed {seed}: rounds to converge p50 {:.1}  p99 {:.1}  max {:.1};  {:.0} B per peer per round;  {:.2} simulated s per wall s",
                rounds.p50,
                rounds.p99,
                rounds.max,
                report.bytes_per_peer_per_round,
                report.simulated_seconds / wall_s
            );
            rounds_all.push(rounds.p99);
            if seed == 1 {
                speeds.push((1000, report.simulated_seconds / wall_s));
            }
        }
        rounds_all.sort_by(f64::total_cmp);
        let worst = rounds_all.last().copied().unwrap_or(f64::NAN);
        let reference = (1000f64).ln() / 3f64.ln();
        println!(
            "  worst p99 over {seeds} seeds: {worst:.1} rounds (target <= 12); log3(1000) = {reference:.1} rounds: ratio {:.2}\n",
            worst / reference
        );
    }
    if wanted("scale-10000") || wanted("speed") {
        let scenario = shipped("scale-10000");
        println!("scale-10000: 10,000 peers, fanout 2, 1 s interval, 1% loss, degree-16 random links");
        let (_, wall_s, report) = timed(&scenario, 1);
        check(&report);
        let rounds = report.rounds_to_converge.expect("converged");
        let reference = (10_000f64).ln() / 3f64.ln();
        println!(
            "  seed 1: rounds to converge p50 {:.1}  p99 {:.1}  max {:.1} (target <= 16); log3(10000) = {reference:.1}: ratio {:.2};  {:.0} B per peer per round\n",
            rounds.p50,
            rounds.p99,
            rounds.max,
            rounds.max / reference,
            report.bytes_per_peer_per_round
        );
        speeds.push((10_000, report.simulated_seconds / wall_s));
    }
    if !speeds.is_empty() {
        let baseline = speeds.first().map(|&(_, s)| s).unwrap_or(1.0);
        println!("simulation speed (simulated seconds per wall second; 1.0 is real time):");
        for (peers, speed) in speeds {
            println!("  {peers:>6} peers: {speed:>7.2}  ({:.3} of the 100-peer speed)", speed / baseline);
        }
    }
}

fn shipped(name: &str) -> Scenario {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../simulations").join(format!("{name}.yaml"));
    Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn timed(scenario: &Scenario, seed: u64) -> (u64, f64, Report) {
    let started = Instant::now();
    let report = Simulation::new(scenario, seed).run(&mut |_| {});
    (seed, started.elapsed().as_secs_f64(), report)
}

fn check(report: &Report) {
    assert!(report.ok(), "{} seed {} failed:\n{}", report.scenario, report.seed, report.summary());
}
