//! `observatory sim`: runs a failure scenario and reports what held.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use observatory_sim::{Scenario, Simulation};

/// What `observatory sim` was asked.
#[derive(Debug)]
pub struct SimArgs {
    pub scenario: PathBuf,
    pub seed: Option<u64>,
    pub out: PathBuf,
    pub peers: Option<usize>,
    pub quiet: bool,
}

pub fn run(args: SimArgs) -> anyhow::Result<ExitCode> {
    let mut scenario = Scenario::load(&args.scenario)?;
    if let Some(peers) = args.peers {
        scenario = scenario.with_peers(peers).context("--peers")?;
    }
    let seed = args.seed.unwrap_or(scenario.seed);
    let show_progress = !args.quiet && std::io::stderr().is_terminal();
    let bar = if show_progress { ProgressBar::new(1000) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:40}] simulated {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let started = Instant::now();
    let simulation = Simulation::new(&scenario, seed);
    let mut last_drawn = Instant::now();
    let report = simulation.run(&mut |progress| {
        if !show_progress || last_drawn.elapsed().as_millis() < 100 {
            return;
        }
        last_drawn = Instant::now();
        let share = if progress.peers_up == 0 {
            0.0
        } else {
            progress.peers_converged as f64 / progress.peers_up as f64
        };
        bar.set_position((1000 * progress.elapsed_ms / progress.horizon_ms.max(1)) as u64);
        bar.set_message(format!(
            "{:.1} s, {:.1}% of {} peers converged",
            progress.elapsed_ms as f64 / 1000.0,
            100.0 * share,
            progress.peers_up
        ));
    });
    bar.finish_and_clear();
    let wall_s = started.elapsed().as_secs_f64();

    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let json_path = args.out.join("report.json");
    let svg_path = args.out.join("convergence.svg");
    write(&json_path, &report.to_json())?;
    write(&svg_path, &report.convergence_svg())?;

    if !args.quiet {
        print!("{}", report.summary());
        println!();
        println!(
            "  wall time {wall_s:.1} s: {:.1} simulated seconds per second",
            report.simulated_seconds / wall_s.max(1e-9)
        );
        println!("  wrote {} and {}", json_path.display(), svg_path.display());
    }
    if report.ok() {
        return Ok(ExitCode::SUCCESS);
    }
    let violation = report.first_violation.as_ref().expect("a failed report names its first violation");
    eprintln!(
        "invariant violated with seed {seed}: {} at {} s: {}",
        violation.invariant, violation.at_s, violation.detail
    );
    let peers = args.peers.map(|n| format!(" --peers {n}")).unwrap_or_default();
    eprintln!("replay: observatory sim {} --seed {seed}{peers}", args.scenario.display());
    Ok(ExitCode::from(1))
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
