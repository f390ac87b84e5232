//! The mesh's settings from the configuration: values only libp2p parses are checked here,
//! each error naming its key.

use observatory_config::Config;
use observatory_net::MeshSettings;

const THREE_HOSTS: &str = include_str!("../../../../config/mesh-three-hosts.yaml");

fn settings(yaml: &str) -> Result<MeshSettings, String> {
    let config = Config::from_yaml(yaml).map_err(|e| e.to_string())?;
    MeshSettings::from_config(&config).map_err(|e| e.to_string())
}

#[test]
fn the_three_host_example_is_valid_once_its_key_file_exists() {
    // As shipped it names /etc/observatory/swarm.key, which this machine lacks.
    let error = settings(THREE_HOSTS).expect_err("the key file is missing here");
    assert!(error.contains("mesh.psk_file") && error.contains("/etc/observatory/swarm.key"), "{error}");

    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("swarm.key");
    std::fs::write(&key, format!("/key/swarm/psk/1.0.0/\n/base16/\n{}\n", "ab".repeat(32))).expect("write");
    let yaml = THREE_HOSTS.replace("/etc/observatory/swarm.key", &key.display().to_string());
    let mesh = settings(&yaml).expect("valid with the key file present");
    assert_eq!(mesh.bootstrap.len(), 3);
    assert!(mesh.bootstrap.iter().all(|a| a.to_string().starts_with("/dns4/obs-")));
    assert!(mesh.net.psk.is_some());
    assert!(!mesh.net.mdns);
}

#[test]
fn bad_mesh_values_are_named_with_their_key() {
    for (yaml, needle) in [
        ("mesh: {listen: [\"tcp/7000\"]}", "mesh.listen"),
        ("mesh: {bootstrap: [\"/ip4/1.2.3.4/tcp/x\"]}", "mesh.bootstrap"),
        ("mesh: {allow_peers: [\"not-a-peer\"]}", "mesh.allow_peers"),
        ("mesh: {message_bytes_max: 1000}", "mesh.message_bytes_max"),
        ("mesh: {sync_interval: 1ms}", "mesh.sync_interval"),
        ("mesh: {fanout: 0}", "mesh.fanout"),
        ("mesh: {redial_min: 10s, redial_max: 1s}", "mesh.redial_max"),
        ("mesh: {merges_queued_max: 0}", "mesh.merges_queued_max"),
    ] {
        let error = settings(yaml).expect_err(yaml);
        assert!(error.contains(needle), "{yaml}: {error}");
    }
}

#[test]
fn timeouts_are_at_least_the_multiples_of_the_sync_interval() {
    let mesh = settings("mesh: {sync_interval: 4s}").expect("valid");
    assert_eq!(mesh.net.request_timeout, std::time::Duration::from_secs(20));
    assert_eq!(mesh.net.idle_connection_timeout, std::time::Duration::from_secs(120));
    let mesh = settings("{}").expect("valid");
    assert_eq!(mesh.net.request_timeout, std::time::Duration::from_secs(10));
    assert_eq!(mesh.net.idle_connection_timeout, std::time::Duration::from_secs(60));
}
