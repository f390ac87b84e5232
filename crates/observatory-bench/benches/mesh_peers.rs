//! Real peers on loopback: how fast a mesh of five converges, and what ingest it absorbs.
//!
//! `cargo bench -p observatory-bench --bench mesh_peers` builds the release binary, starts
//! five `observatory peer` processes (bootstrapped as a star on the first, mDNS off, the
//! default 1 s sync interval) and prints:
//! - after a burst of events on one peer, the sync intervals until all five answer the
//!   exact totals (target: at most 3);
//! - with every peer ingesting at a given total rate, whether the peers' lag behind each
//!   other stays flat or keeps growing, and how long the mesh takes to agree once the
//!   ingest stops.
//!
//! Figures are wall-clock on a shared machine: the five peers and the load generator run
//! on the same cores.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use observatory_examples::{Shop, to_ndjson};
use serde_json::Value;

const PEERS: usize = 5;
const SYNC_INTERVAL: Duration = Duration::from_secs(1);

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn binary() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--quiet", "-p", "observatory", "--bin", "observatory"])
        .current_dir(&root)
        .status()
        .expect("running cargo build");
    assert!(status.success(), "building the observatory binary failed");
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("target"));
    target.join("release/observatory")
}

struct Peer {
    child: Child,
    http: String,
    listen: String,
    _dir: tempfile::TempDir,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(bin: &PathBuf, bootstrap: Option<&str>) -> Peer {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = Command::new(bin);
    command
        .args([
            "peer",
            "--http",
            "127.0.0.1:0",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-mdns",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .env("OBSERVATORY_LOG", "warn")
        .env("OBSERVATORY_INGEST__ACK", "accepted")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(addr) = bootstrap {
        command.args(["--bootstrap", addr]);
    }
    let mut child = command.spawn().expect("starting a peer");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("startup line");
    let startup: Value = serde_json::from_str(&line).expect("startup JSON");
    Peer {
        child,
        http: format!("http://{}", startup["http"].as_str().expect("http")),
        listen: startup["listen"][0].as_str().expect("listen").to_string(),
        _dir: dir,
    }
}

fn get(client: &reqwest::blocking::Client, url: &str) -> Value {
    client.get(url).send().and_then(|r| r.json()).unwrap_or(Value::Null)
}

/// Total calls over a wide window, by edge.
fn totals(client: &reqwest::blocking::Client, peer: &Peer) -> Vec<(String, u64)> {
    let graph = get(client, &format!("{}/api/v1/graph?window=1h", peer.http));
    let mut edges: Vec<(String, u64)> = graph["edges"]
        .as_array()
        .map(|edges| {
            edges
                .iter()
                .map(|e| (format!("{}>{}", e["from"], e["to"]), e["calls"].as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    edges.sort();
    edges
}

fn post(client: &reqwest::blocking::Client, peer: &Peer, body: Vec<u8>) {
    let answer = client
        .post(format!("{}/api/v1/events", peer.http))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .expect("posting events");
    assert!(answer.status().is_success(), "ingest failed: {}", answer.status());
}

/// Waits until every peer answers the same totals as `reference`; returns the time taken.
fn until_agreed(client: &reqwest::blocking::Client, peers: &[Peer], reference: &[(String, u64)]) -> Duration {
    let start = Instant::now();
    loop {
        if peers.iter().all(|p| totals(client, p) == reference) {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(120), "the mesh did not agree within 2 min");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let bin = binary();
    let client =
        reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    let first = start(&bin, None);
    let mut peers = vec![first];
    for _ in 1..PEERS {
        let boot = peers[0].listen.clone();
        peers.push(start(&bin, Some(&boot)));
    }
    // Wait for the full mesh.
    let start_wait = Instant::now();
    while !peers.iter().all(|p| {
        get(&client, &format!("{}/api/v1/peers", p.http))["coverage"]["peers_connected"].as_u64()
            == Some(PEERS as u64 - 1)
    }) {
        assert!(start_wait.elapsed() < Duration::from_secs(60), "the mesh did not form");
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("five peers on loopback, full mesh after {:.1} s", start_wait.elapsed().as_secs_f64());

    // 1. A burst on one peer.
    let mut shop = Shop::new(7);
    let mut intervals = Vec::new();
    for burst in 0..5 {
        let events = shop.events(20_000, now_ms() - 2_000, 1_000);
        for chunk in events.chunks(5_000) {
            post(&client, &peers[burst % PEERS], to_ndjson(chunk));
        }
        let reference = totals(&client, &peers[burst % PEERS]);
        let took = until_agreed(&client, &peers, &reference);
        intervals.push(took.as_secs_f64() / SYNC_INTERVAL.as_secs_f64());
    }
    intervals.sort_by(f64::total_cmp);
    println!(
        "burst of 20,000 events on one peer: all five exact after {:.2} sync intervals (median of 5; min {:.2}, max {:.2}; target <= 3)",
        intervals[2], intervals[0], intervals[4]
    );

    // 2. Every peer ingesting.
    println!("every peer ingesting (total rate over the five), 10 s each:");
    println!("  rate/s   lag first half  lag second half  agreed after stop");
    for rate in [2_000usize, 5_000, 10_000, 20_000, 40_000] {
        let per_tick = rate / PEERS / 10; // 10 posts per second per peer
        let run = Instant::now();
        let mut lags = Vec::new();
        let mut next = Instant::now();
        while run.elapsed() < Duration::from_secs(10) {
            for peer in &peers {
                let events = shop.events(per_tick.max(1), now_ms() - 500, 500);
                post(&client, peer, to_ndjson(&events));
            }
            // Lag: the most seqs any peer reports lacking from any other.
            let lag = peers
                .iter()
                .map(|p| {
                    get(&client, &format!("{}/api/v1/peers", p.http))["peers"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|x| x["we_lack_seqs"].as_u64()).max().unwrap_or(0))
                        .unwrap_or(0)
                })
                .max()
                .unwrap_or(0);
            lags.push(lag as f64);
            next += Duration::from_millis(100);
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let achieved = rate as f64 * 10.0 / run.elapsed().as_secs_f64();
        let half = lags.len() / 2;
        let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len().max(1) as f64;
        // Ingest has stopped: once all five answer the same totals, they hold everything.
        let took = until_all_equal(&client, &peers);
        println!(
            "  {:>6.0}   {:>14.1}  {:>15.1}  {:>8.2} s ({:.1} intervals)",
            achieved,
            mean(&lags[..half]),
            mean(&lags[half..]),
            took.as_secs_f64(),
            took.as_secs_f64() / SYNC_INTERVAL.as_secs_f64()
        );
    }
}

/// Waits until every peer answers the same totals (whatever they are).
fn until_all_equal(client: &reqwest::blocking::Client, peers: &[Peer]) -> Duration {
    let start = Instant::now();
    loop {
        let reference = totals(client, &peers[0]);
        if peers[1..].iter().all(|p| totals(client, p) == reference) {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(120), "the mesh did not agree within 2 min");
        std::thread::sleep(Duration::from_millis(20));
    }
}
