//! A bad scenario is refused with the key and the reason.

use observatory_sim::{Scenario, ScenarioError};

fn error_of(yaml: &str) -> String {
    match Scenario::from_yaml(yaml) {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn errors_name_the_key() {
    let cases = [
        ("name: x\npeers: 4\nnetwork: { loss: 1.5 }\n", "network.loss"),
        ("name: x\npeers: 4\nnetwork: { los: 0.1 }\n", "los"),
        ("name: x\npeers: 0\n", "peers"),
        ("name: x\npeers: 4\ntimeline:\n  - { at: 1s, crash: [9] }\n", "timeline[0].crash"),
        ("name: x\npeers: 4\ntimeline:\n  - { at: 1s, crash: [1], heal: true }\n", "several faults"),
        ("name: x\npeers: 4\ntimeline:\n  - { at: 1s }\n", "names no fault"),
        (
            "name: x\npeers: 4\ntimeline:\n  - { at: 1s, partition: [[0, 1], [1, 2]] }\n",
            "peer 1 is in two groups",
        ),
        (
            "name: x\npeers: 4\ntimeline:\n  - { at: 1s, skew: { peers: all, by: soon } }\n",
            "timeline[0].skew.by",
        ),
        ("name: x\npeers: 4\ntimeline:\n  - { at: 1s, skew: { peers: all, by: +50m } }\n", "clock skew"),
        ("name: x\npeers: 4\nquiesce: { max: 2h }\n", "quiesce.max"),
        ("name: x\npeers: 4\ntimeline:\n  - { at: 1s, add: 18446744073709551615 }\n", "allowed 1 to 100000"),
        ("name: x\npeers: 6000\n", "topology.degree"),
        ("name: x\npeers: 4\nworkload: { services: 100000 }\n", "workload.services"),
        (
            "name: x\npeers: 2\nworkload: { ingesters: [3] }\ntimeline:\n  - { at: 1s, add: 2 }\n",
            "workload.ingesters",
        ),
        ("name: x\npeers: 4\ntopology: { degree: 2 }\ndifferent_settings: [0]\n", "different_settings"),
        ("name: x\npeers: 4\nsync: { interval: 1ms }\n", "sync.interval"),
        ("name: x\npeers: 4\nworkload: { edges: 500, services: 3 }\n", "workload.edges"),
        (
            "name: x\npeers: 4\nnetwork: { latency: { kind: uniform, min: 5ms, max: 1ms } }\n",
            "network.latency",
        ),
    ];
    for (yaml, expected) in cases {
        let error = error_of(yaml);
        assert!(error.contains(expected), "for\n{yaml}the error {error:?} does not mention {expected:?}");
    }
}

#[test]
fn later_peers_may_be_named_after_they_are_added() {
    let yaml = "name: x\npeers: 2\ntimeline:\n  - { at: 1s, add: 2 }\n  - { at: 2s, crash: [3] }\n";
    Scenario::from_yaml(yaml).expect("peer 3 exists once two were added");
    let early = "name: x\npeers: 2\ntimeline:\n  - { at: 1s, crash: [3] }\n  - { at: 2s, add: 2 }\n";
    assert!(matches!(Scenario::from_yaml(early), Err(ScenarioError::Invalid { .. })));
}

#[test]
fn every_shipped_scenario_loads() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../simulations");
    let mut loaded = 0;
    for entry in std::fs::read_dir(&dir).expect("simulations/ exists") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            loaded += 1;
        }
    }
    assert!(loaded >= 8, "only {loaded} scenarios in simulations/");
}
