//! A real client: the OpenTelemetry Python SDK from PyPI, with its own OTLP/HTTP,
//! OTLP/gRPC and Zipkin JSON exporters, runs a small shop (`tests/otel/topology.py`) whose services
//! export to different peers of a three-peer mesh, and the third peer, which got no span,
//! must answer the exact graph: every edge with its kind, calls and errors.
//!
//! The test makes a Python venv under the cargo target dir (`target/tmp/otel-venv`),
//! installs the pinned [`PACKAGES`] into it from PyPI and reuses it while it holds them.
//! Where it cannot (no `python3`, no `venv` module, PyPI out of reach) it skips and says
//! why; under `OBSERVATORY_REQUIRE_ALL` a skip is a failure.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use observatory_e2e::{Peer, PeerBuilder, wait_until};
use serde_json::Value;

/// What the venv gets: the SDK and its OTLP/HTTP, OTLP/gRPC and Zipkin exporters of one
/// release (the Zipkin exporter's latest is 1.45.1, so the others are pinned to it too).
const PACKAGES: [&str; 4] = [
    "opentelemetry-sdk==1.45.1",
    "opentelemetry-exporter-otlp-proto-http==1.45.1",
    "opentelemetry-exporter-otlp-proto-grpc==1.45.1",
    "opentelemetry-exporter-zipkin-json==1.45.1",
];
/// How long making the venv and installing into it may take (a cold pip cache downloads).
const INSTALL_DEADLINE: Duration = Duration::from_secs(300);
/// How long the script may run; it takes about a second.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(60);
/// How long the mesh may take to form, and the graph to be complete at the third peer.
const CONVERGE: Duration = Duration::from_secs(30);
/// How long the peers may hold halves: the default `correlation.pending_ttl` (10 s, for
/// which producers wait for more consumers) and then some.
const DRAIN: Duration = Duration::from_secs(30);

/// Requests through the shop; payments fails on every [`FAIL_EVERY`]-th, the database
/// query on every [`DB_FAIL_EVERY`]-th.
const REQUESTS: u64 = 24;
const FAIL_EVERY: u64 = 4;
const DB_FAIL_EVERY: u64 = 6;
/// Spans per request: frontend 2 (SERVER, CLIENT), checkout 4 (SERVER, CLIENT to
/// payments, CLIENT to the database, PRODUCER), payments 1, shipping 1.
const SPANS_PER_REQUEST: u64 = 8;

/// `(from, to, kind) -> (calls, errors)`.
type Edges = BTreeMap<(String, String, String), (u64, u64)>;

/// The graph the shop must give.
fn expected_edges() -> Edges {
    let n = REQUESTS;
    [
        ("user", "frontend", "request", n, 0),
        ("frontend", "checkout", "request", n, 0),
        ("checkout", "payments", "request", n, n / FAIL_EVERY),
        ("checkout", "shipping", "messaging", n, 0),
        ("checkout", "orders-db", "database", n, n / DB_FAIL_EVERY),
    ]
    .into_iter()
    .map(|(from, to, kind, calls, errors)| ((from.into(), to.into(), kind.into()), (calls, errors)))
    .collect()
}

/// The edges of a graph answer; panics on a malformed or duplicate edge.
fn edges(graph: &Value) -> Edges {
    let list = graph["edges"].as_array().unwrap_or_else(|| panic!("the graph has no `edges` array: {graph}"));
    let mut edges = Edges::new();
    for edge in list {
        let text =
            |k: &str| edge[k].as_str().unwrap_or_else(|| panic!("edge without `{k}`: {edge}")).to_string();
        let number = |k: &str| edge[k].as_u64().unwrap_or_else(|| panic!("edge without `{k}`: {edge}"));
        let key = (text("from"), text("to"), text("kind"));
        let figures = (number("calls"), number("errors"));
        assert!(edges.insert(key.clone(), figures).is_none(), "edge {key:?} listed twice: {graph}");
    }
    edges
}

/// A process that ran to its end.
#[derive(Debug)]
struct Ran {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "--- status: {}\n--- stdout:\n{}\n--- stderr:\n{}", self.status, self.stdout, self.stderr)
    }
}

/// Runs `command` to its end, or kills it once `deadline` has passed.
fn run_with_deadline(mut command: Command, deadline: Duration) -> Result<Ran, String> {
    let description = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {description}: {e}"))?;
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let end = Instant::now() + deadline;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| format!("waiting for {description}: {e}"))? {
            break status;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{description} did not finish within {deadline:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = |thread: std::thread::JoinHandle<String>| thread.join().unwrap_or_default();
    Ok(Ran { status, stdout: text(stdout), stderr: text(stderr) })
}

/// Says why the test cannot run here, or fails under `OBSERVATORY_REQUIRE_ALL`.
fn skip(reason: &str) -> Option<PathBuf> {
    let reason = format!("cannot run the OpenTelemetry SDK against the mesh: {reason}");
    assert!(
        std::env::var_os("OBSERVATORY_REQUIRE_ALL").is_none(),
        "OBSERVATORY_REQUIRE_ALL is set: {reason}"
    );
    eprintln!("skipped: {reason}");
    None
}

/// The last lines of a process's output, for a reason to skip.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

/// The Python of a venv holding [`PACKAGES`], made (or remade) when needed; `None` after
/// saying why there is none. Tests that need it run in parallel: one makes it.
pub(crate) fn python_with_packages() -> Option<PathBuf> {
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("otel-venv");
    let python = venv.join("bin").join("python");
    // Written after a complete install, so an interrupted one is redone.
    let stamp = venv.join("observatory-packages.txt");
    let wanted = PACKAGES.join("\n");
    if python.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|held| held == wanted) {
        return Some(python);
    }
    let mut make = Command::new("python3");
    make.args(["-m", "venv", "--clear"]).arg(&venv);
    match run_with_deadline(make, INSTALL_DEADLINE) {
        Ok(ran) if ran.status.success() => {}
        Ok(ran) => {
            return skip(&format!(
                "`python3 -m venv` failed with {} (Debian: apt-get install python3-venv):\n{}",
                ran.status,
                tail(&ran.stderr)
            ));
        }
        Err(error) => return skip(&format!("python3 cannot be run ({error})")),
    }
    let mut install = Command::new(&python);
    install
        .args(["-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--quiet"])
        .args(["--timeout", "30"])
        .args(PACKAGES);
    match run_with_deadline(install, INSTALL_DEADLINE) {
        Ok(ran) if ran.status.success() => {}
        Ok(ran) => {
            return skip(&format!(
                "pip could not install {} from PyPI ({}):\n{}",
                PACKAGES.join(" "),
                ran.status,
                tail(&ran.stderr)
            ));
        }
        Err(error) => return skip(&format!("pip did not run: {error}")),
    }
    std::fs::write(&stamp, wanted).expect("writing the venv's package stamp");
    Some(python)
}

fn mesh_peer() -> PeerBuilder {
    Peer::builder().fast_sync()
}

/// Waits until `peer` is connected to each of `others` and agrees on the settings: only
/// then do all three see the same live peers, and so the same owner for every trace.
fn wait_meshed(peer: &Peer, others: &[&Peer]) {
    wait_until(CONVERGE, &format!("peer {} meshed with the other two", peer.url()), || {
        let answer = peer.peers();
        let entries = answer["peers"].as_array().cloned().unwrap_or_default();
        for other in others {
            let meshed = entries.iter().any(|entry| {
                entry["peer"] == other.peer_id()
                    && entry["connected"] == true
                    && entry["settings"]["state"] == "agrees"
            });
            if !meshed {
                return Err(format!("{} not connected and agreeing: {answer}", other.peer_id()));
            }
        }
        Ok(())
    });
}

/// The `correlation` and `ingest` sections of each peer's status, for failure messages.
fn span_status(peers: &[(&str, &Peer)]) -> String {
    peers
        .iter()
        .map(|(name, peer)| {
            let status = peer.status();
            format!(
                "peer {name} ({}):\n  correlation: {}\n  ingest: {}",
                peer.url(),
                status["correlation"],
                status["ingest"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until the graph of `peer` is exactly `want`; panics with the graph and every
/// peer's span counters when it is not within `deadline`.
fn wait_for_graph(peer: &Peer, want: &Edges, deadline: Duration, all: &[(&str, &Peer)], what: &str) {
    let end = Instant::now() + deadline;
    loop {
        let got = edges(&peer.graph("1h"));
        if &got == want {
            return;
        }
        if Instant::now() >= end {
            panic!(
                "{what}: the graph of {} is not the expected one within {deadline:?}\n\
                 got:      {got:?}\nexpected: {want:?}\n{}",
                peer.url(),
                span_status(all)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A counter of a status section, summed over the peers.
fn sum(statuses: &[Value], section: &str, counter: &str) -> u64 {
    statuses
        .iter()
        .map(|s| s[section][counter].as_u64().unwrap_or_else(|| panic!("no {section}.{counter} in {s}")))
        .sum()
}

#[test]
fn the_opentelemetry_python_sdk_across_three_peers_gives_the_exact_graph() {
    let Some(python) = python_with_packages() else { return };

    let a = mesh_peer().spawn();
    let b = mesh_peer().bootstrap(a.mesh_addr()).spawn();
    let c = mesh_peer().bootstrap(a.mesh_addr()).spawn();
    wait_meshed(&a, &[&b, &c]);
    wait_meshed(&b, &[&a, &c]);
    wait_meshed(&c, &[&a, &b]);
    let all = [("A", &a), ("B", &b), ("C", &c)];

    let otlp = |peer: &Peer| {
        let addr = peer.startup().otlp.as_deref().expect("the peer has an OTLP listener");
        format!("http://{addr}/v1/traces")
    };
    // frontend and payments export to A, checkout and shipping to B; C gets no span.
    // frontend's CLIENT spans land at A and their checkout SERVER children at B, so the
    // frontend -> checkout pairs are made only by handing halves to each trace's owner
    // over the mesh (likewise checkout -> payments, from B and A). OTLP goes to both the
    // OTLP listener and the main HTTP listener; shipping exports over OTLP/gRPC, gzipped.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("otel").join("topology.py");
    let mut command = Command::new(&python);
    command
        .arg(&script)
        .args(["--frontend-otlp", &otlp(&a)])
        .args(["--checkout-zipkin", &format!("{}/api/v2/spans", b.url())])
        .args(["--payments-otlp", &format!("{}/v1/traces", a.url())])
        .args([
            "--shipping-otlp-grpc",
            b.startup().otlp_grpc.as_deref().expect("the peer has an OTLP/gRPC listener"),
        ])
        .args(["--requests", &REQUESTS.to_string()])
        .args(["--fail-every", &FAIL_EVERY.to_string()])
        .args(["--db-fail-every", &DB_FAIL_EVERY.to_string()]);
    // The SDK reads OTEL_* variables; none from the environment may change the exporters.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("OTEL_") {
            command.env_remove(key);
        }
    }
    let ran = run_with_deadline(command, SCRIPT_DEADLINE).unwrap_or_else(|e| panic!("{e}"));
    assert!(ran.status.success(), "the shop script failed\n{ran}\n{}", span_status(&all));

    let want = expected_edges();
    wait_for_graph(&c, &want, CONVERGE, &all, "after the shop ran");

    // Producers wait out `correlation.pending_ttl` for more consumers; once nothing waits
    // anywhere, every span must have been used exactly once, and nothing more may appear.
    let statuses = wait_until(DRAIN, "no peer holds a waiting half", || {
        let statuses: Vec<Value> = all.iter().map(|(_, peer)| peer.status()).collect();
        match sum(&statuses, "correlation", "spans_pending") {
            0 => Ok(statuses),
            n => Err(format!("{n} halves wait:\n{}", span_status(&all))),
        }
    });
    let context = span_status(&all);
    for status in &statuses {
        for section in ["spans_rejected", "requests_rejected", "events_rejected"] {
            let refused = &status["ingest"][section];
            assert!(
                refused.as_object().is_some_and(|m| m.is_empty()),
                "ingest.{section}: {refused}\n{context}"
            );
        }
        for counter in ["spans_unpaired", "spans_evicted", "spans_duplicate"] {
            assert_eq!(status["correlation"][counter], 0, "correlation.{counter}\n{context}");
        }
    }
    let n = REQUESTS;
    assert_eq!(sum(&statuses, "ingest", "spans_received"), SPANS_PER_REQUEST * n, "{context}");
    assert_eq!(sum(&statuses, "correlation", "edges_root"), n, "{context}");
    assert_eq!(sum(&statuses, "correlation", "edges_paired"), 3 * n, "{context}");
    assert_eq!(sum(&statuses, "correlation", "edges_virtual"), n, "{context}");
    assert!(
        sum(&statuses, "correlation", "spans_handed_in") >= n,
        "each trace has halves at A and at B, so at least one per trace went to its owner\n{context}"
    );
    for (name, peer) in all {
        wait_for_graph(peer, &want, CONVERGE, &all, &format!("peer {name}, once no half waits"));
    }
}
