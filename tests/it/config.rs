//! Configuration: bad files and values are refused naming the key, the environment
//! overrides the file and flags override the environment, and `config default` /
//! `config check` agree.

use std::path::{Path, PathBuf};

use observatory_e2e::{Finished, Peer, run_observatory};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing a config file");
    path
}

/// Runs `observatory peer --config FILE` on a fresh data dir, expecting it to refuse.
fn peer_refuses(config_text: &str, env: &[(&str, &str)], needles: &[&str]) -> Finished {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write(dir.path(), "observatory.yaml", config_text);
    let data = dir.path().join("data");
    let mut builder = Peer::builder().data_dir(&data).arg("--config").arg(&config);
    for (key, value) in env {
        builder = builder.env(key, value);
    }
    let finished = builder.run_to_exit();
    let what = format!("peer with config {config_text:?} and env {env:?}");
    finished.assert_clean_failure(&what, needles);
    assert!(!finished.stdout.contains("listening"), "{what}: must not start\n{finished}");
    assert!(!data.exists(), "{what}: a refused config must not create the data dir\n{finished}");
    finished
}

#[test]
fn an_unknown_key_is_named_with_its_path() {
    peer_refuses("http: {adress: 127.0.0.1:0}\n", &[], &["http.adress"]);
    peer_refuses("store:\n  flush_interval: 1s\n  flush_every: 2s\n", &[], &["store.flush_every"]);
    peer_refuses("injest: {ack: durable}\n", &[], &["injest"]);
}

#[test]
fn a_bad_value_is_named_with_its_key() {
    peer_refuses("ingest: {ack: sometimes}\n", &[], &["ingest.ack", "sometimes"]);
    peer_refuses("ingest: {max_lateness: soon}\n", &[], &["ingest.max_lateness"]);
    peer_refuses("limits: {body_bytes_max: 0}\n", &[], &["limits.body_bytes_max"]);
    // The same mistakes in the environment are named by the key too.
    peer_refuses("{}\n", &[("OBSERVATORY_INGEST__ACK", "sometimes")], &["ingest.ack"]);
}

#[test]
fn the_environment_overrides_the_file_and_flags_override_the_environment() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Port 1 is not ours to take: if the file won, the peer could not listen.
    let config = write(dir.path(), "observatory.yaml", "http: {addr: 127.0.0.1:1}\n");

    let from_env = Peer::builder()
        .arg("--config")
        .arg(&config)
        .env("OBSERVATORY_HTTP__ADDR", "127.0.0.1:0")
        .without_http_flag()
        .spawn();
    let http = from_env.startup().http.clone();
    let port: u16 =
        http.strip_prefix("127.0.0.1:").and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("http {http}"));
    assert!(port > 1, "the environment's port 0 was used, got {http}");
    from_env.get("/healthz").expect_status(200, "/healthz of a peer configured by the environment");

    let from_flag = Peer::builder().env("OBSERVATORY_HTTP__ADDR", "127.0.0.1:1").spawn();
    assert_ne!(from_flag.startup().http, "127.0.0.1:1", "--http wins over the environment");
    from_flag.get("/healthz").expect_status(200, "/healthz of a peer configured by --http");
}

#[test]
fn the_default_config_passes_check_and_matches_a_running_peer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let printed = run_observatory(&["config", "default"], &[]);
    printed.assert_success("config default");
    assert!(printed.stdout.contains("resolutions:"), "{printed}");
    let file = write(dir.path(), "default.yaml", &printed.stdout);
    let file_arg = file.to_str().expect("UTF-8 temp path");

    let checked = run_observatory(&["config", "check", file_arg], &[]);
    checked.assert_success("config check of the default config");
    assert!(checked.stdout.contains("ok"), "{checked}");
    let fingerprint = checked
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("settings fingerprint: "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("config check prints the settings fingerprint\n{checked}"))
        .to_string();

    let peer = Peer::builder().arg("--config").arg(&file).spawn();
    let status = peer.status();
    assert_eq!(
        status["settings_fingerprint"],
        fingerprint.as_str(),
        "check and a running peer agree: {status}"
    );

    // Environment overrides apply to check too.
    let bad_env =
        run_observatory(&["config", "check", file_arg], &[("OBSERVATORY_INGEST__ACK", "sometimes")]);
    bad_env.assert_clean_failure("config check with a bad environment value", &["ingest.ack"]);
}

#[test]
fn check_refuses_bad_resolution_lists_clearly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases: [(&str, &[&str]); 5] = [
        (
            "resolutions:\n  - { width: 10s, retention: 1h }\n  - { width: 15s, retention: 48h }\n",
            &["resolutions", "15s"],
        ),
        ("resolutions:\n  - { width: 10s, retention: 1m }\n", &["resolutions", "max_lateness"]),
        ("resolutions: []\n", &["resolutions"]),
        ("resolutions:\n  - { width: ten, retention: 1h }\n", &["resolutions.0.width"]),
        ("resolutions:\n  - { width: 10s, keep: 1h }\n", &["resolutions.0", "keep"]),
    ];
    for (i, (text, needles)) in cases.iter().enumerate() {
        let file = write(dir.path(), &format!("bad-{i}.yaml"), text);
        let checked = run_observatory(&["config", "check", file.to_str().expect("UTF-8 temp path")], &[]);
        checked.assert_clean_failure(&format!("config check of {text:?}"), needles);
    }
    let missing = dir.path().join("missing.yaml");
    let checked = run_observatory(&["config", "check", missing.to_str().expect("UTF-8 temp path")], &[]);
    checked.assert_clean_failure("config check of a missing file", &["missing.yaml"]);
}

#[test]
fn span_naming_settings_are_checked_naming_the_key() {
    peer_refuses(
        "correlation: {peer_attributes: [peer.service, \"\"]}\n",
        &[],
        &["correlation.peer_attributes[1]", "1 to 256 bytes"],
    );
    peer_refuses("correlation: {unknown_node: \"\"}\n", &[], &["correlation.unknown_node", "empty"]);
    peer_refuses("correlation: {peer_attributes: peer.service}\n", &[], &["correlation.peer_attributes"]);
}

#[test]
fn a_taken_otlp_port_that_was_asked_for_is_an_error_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port to occupy");
    let addr = taken.local_addr().expect("its address");
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    // Asked for in the config file and by the environment alike.
    let config = write(dir.path(), "observatory.yaml", &format!("otlp: {{addr: \"{addr}\"}}\n"));
    let grpc = write(dir.path(), "grpc.yaml", &format!("otlp: {{addr: null, grpc_addr: \"{addr}\"}}\n"));
    for (builder, listener) in [
        (Peer::builder().data_dir(&data).without_otlp_flag().arg("--config").arg(&config), "OTLP/HTTP"),
        (
            Peer::builder()
                .data_dir(&data)
                .without_otlp_flag()
                .env("OBSERVATORY_OTLP__ADDR", &addr.to_string()),
            "OTLP/HTTP",
        ),
        (Peer::builder().data_dir(&data).without_otlp_flag().arg("--config").arg(&grpc), "OTLP/gRPC"),
    ] {
        let finished = builder.run_to_exit();
        finished
            .assert_clean_failure("a peer whose chosen OTLP port is taken", &[listener, &addr.to_string()]);
        assert!(!data.exists(), "a peer that cannot serve must not create its data dir\n{finished}");
    }
}
