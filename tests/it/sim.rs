//! `observatory sim` as a user runs it: the summary, the files, the exit status.

use std::path::PathBuf;

use observatory_e2e::run_observatory;
use serde_json::Value;

fn scenario(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../simulations")
        .join(format!("{name}.yaml"))
        .display()
        .to_string()
}

#[test]
fn sim_writes_the_report_and_the_chart_and_exits_zero() {
    let out = tempfile::tempdir().expect("a temp dir");
    let out_dir = out.path().display().to_string();
    let args = ["sim", &scenario("clock-skew"), "--seed", "5", "--peers", "6", "--out", &out_dir];
    let finished = run_observatory(&args, &[]);
    finished.assert_success("observatory sim of clock-skew");
    for line in
        ["rounds to converge", "pass  exact_after_quiescence", "pass  nothing_lost", "events rejected"]
    {
        assert!(finished.stdout.contains(line), "the summary lacks {line:?}\n{finished}");
    }
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("report.json")).expect("report.json is written"),
    )
    .expect("report.json is JSON");
    assert_eq!(report["scenario"], "clock-skew");
    assert_eq!(report["seed"], 5);
    assert_eq!(report["peers"]["start"], 6);
    assert_eq!(report["converged"], true);
    assert_eq!(report["invariants"].as_array().map(Vec::len), Some(5));
    assert!(report["rounds_to_converge"]["p99"].as_f64().is_some(), "{report}");
    let svg =
        std::fs::read_to_string(out.path().join("convergence.svg")).expect("convergence.svg is written");
    assert!(svg.starts_with("<svg") && svg.contains("polyline") && svg.contains("skew +2m"), "{svg}");

    // The same command again writes the very same report.
    let first = std::fs::read(out.path().join("report.json")).expect("read");
    run_observatory(&args, &[]).assert_success("the second run");
    assert_eq!(first, std::fs::read(out.path().join("report.json")).expect("read"), "report.json changed");
}

#[test]
fn a_bad_scenario_names_the_key_and_exits_two() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "name: bad\npeers: 4\ntimeline:\n  - { at: 2s, crash: [7] }\n").expect("write");
    let finished = run_observatory(
        &["sim", &path.display().to_string(), "--out", &dir.path().display().to_string()],
        &[],
    );
    finished.assert_clean_failure(
        "a scenario crashing a peer that does not exist",
        &["timeline[0].crash", "peer 7"],
    );
    assert_eq!(finished.status.code(), Some(2), "{finished}");

    let missing = run_observatory(&["sim", "no-such-scenario.yaml"], &[]);
    missing.assert_clean_failure("a missing scenario file", &["no-such-scenario.yaml"]);
}
