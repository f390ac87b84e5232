//! The invariants ARCHITECTURE.md states as absences, checked: which crate may depend on
//! what (from `cargo metadata`, normal dependencies only), and which crates may read the
//! system clock (from their sources).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the workspace").to_path_buf()
}

/// Every product crate (under `crates/`) with the names of its normal dependencies.
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(workspace_root())
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&output.stderr));
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("cargo metadata gives JSON");
    let crates_dir = workspace_root().join("crates");
    metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| Path::new(p["manifest_path"].as_str().unwrap()).starts_with(&crates_dir))
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null())
                .map(|d| d["name"].as_str().unwrap().to_string())
                .collect();
            (p["name"].as_str().unwrap().to_string(), deps)
        })
        .collect()
}

/// The crates (besides benchmarks) that depend on any of `names`.
fn users_of(deps: &BTreeMap<String, BTreeSet<String>>, names: &[&str]) -> BTreeSet<String> {
    deps.iter()
        .filter(|(krate, _)| krate.as_str() != "observatory-bench")
        .filter(|(_, d)| {
            d.iter().any(|dep| names.iter().any(|n| dep == n || dep.starts_with(&format!("{n}-"))))
        })
        .map(|(krate, _)| krate.clone())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

#[test]
fn each_outside_world_is_known_to_one_crate_only() {
    let deps = dependencies();
    assert!(deps.len() >= 10, "the product crates: {:?}", deps.keys());
    assert_eq!(
        users_of(&deps, &["libp2p", "multiaddr"]),
        set(&["observatory-net"]),
        "only the net crate knows libp2p"
    );
    assert_eq!(users_of(&deps, &["sled"]), set(&["observatory-store"]), "only the store knows sled");
    assert_eq!(
        users_of(&deps, &["axum", "hyper", "reqwest", "tower-http", "http-body-util"]),
        set(&["observatory-api", "observatory-instrument"]),
        "only the api crate knows HTTP (and the instrumentation library, which runs in services)"
    );
}

#[test]
fn the_instrumentation_library_stands_apart_from_the_peer() {
    let deps = dependencies();
    let library = &deps["observatory-instrument"];
    let ours: Vec<&String> = library.iter().filter(|d| d.starts_with("observatory")).collect();
    assert!(
        ours.is_empty(),
        "services must not pull in the peer: observatory-instrument depends on {ours:?}"
    );
    for forbidden in ["libp2p", "sled", "axum", "opentelemetry"] {
        assert!(
            !library.iter().any(|d| d.starts_with(forbidden)),
            "observatory-instrument depends on {forbidden}"
        );
    }
    let users = users_of(&deps, &["observatory-instrument"]);
    assert!(users.is_empty(), "no peer crate uses the library: {users:?}");
}

#[test]
fn the_state_machines_touch_no_socket_file_or_runtime() {
    let deps = dependencies();
    let forbidden = [
        "tokio",
        "tokio-util",
        "libp2p",
        "sled",
        "axum",
        "reqwest",
        "figment",
        "observatory-store",
        "observatory-net",
        "observatory-api",
        "observatory-peer",
        "observatory-config",
    ];
    for krate in [
        "observatory-core",
        "observatory-correlate",
        "observatory-sync",
        "observatory-objectives",
        "observatory-layout",
    ] {
        let found: Vec<&String> = deps[krate].iter().filter(|d| forbidden.contains(&d.as_str())).collect();
        assert!(found.is_empty(), "{krate} must stay sans-IO but depends on {found:?}");
    }
    let sim = &deps["observatory-sim"];
    for forbidden in ["tokio", "observatory-net", "observatory-store", "observatory-api", "observatory-peer"]
    {
        assert!(!sim.contains(forbidden), "the simulator runs no IO but depends on {forbidden}");
    }
}

#[test]
fn the_http_edge_sees_the_peer_only_through_its_interface() {
    let deps = dependencies();
    let api = &deps["observatory-api"];
    for forbidden in ["observatory-store", "observatory-net", "observatory-peer", "libp2p", "sled"] {
        assert!(!api.contains(forbidden), "observatory-api depends on {forbidden}");
    }
}

/// Rust sources under `dir`, recursively.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("a source dir") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            found.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
    found
}

#[test]
fn only_the_application_reads_the_system_clock() {
    let crates = workspace_root().join("crates");
    let mut readers = BTreeSet::new();
    for entry in std::fs::read_dir(&crates).expect("crates/") {
        let krate = entry.expect("an entry").path();
        let name = krate.file_name().unwrap().to_string_lossy().to_string();
        // Benchmarks time things; the instrumentation library runs in services, which
        // stamp their own calls.
        if name == "observatory-bench" || name == "observatory-instrument" {
            continue;
        }
        for file in sources(&krate.join("src")) {
            let text = std::fs::read_to_string(&file).expect("a source file");
            if text.contains("SystemTime::now") {
                readers.insert(name.clone());
            }
        }
    }
    assert_eq!(
        readers,
        set(&["observatory-peer"]),
        "the peer's SystemClock is the one reader of the time; everything else is handed a Clock or `now_ms`"
    );
}
