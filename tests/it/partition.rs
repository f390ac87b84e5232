//! The mesh across network namespaces: a real partition, then healing.
//!
//! Four `observatory peer` processes run in network namespaces of their own, wired to
//! bridges in a fifth, the *hub* namespace, so the host's own network is left alone
//! except for one veth the test reaches the peers' HTTP APIs through:
//!
//! ```text
//!             hub namespace
//!   ┌───────────────────────────────────────────┐
//!   │  brA ── trunkA ═ trunkB ── brB            │   data network 10.213.X.0/24:
//!   │   │ │                      │ │            │   one L2 segment while the trunk
//!   │  d0 d1                    d2 d3           │   is up, two halves while it is down
//!   │                                           │
//!   │  brM ── m0 m1 m2 m3 ── mroot              │   management network 10.214.X.0/24
//!   └───┼──────────────────────────────┼────────┘
//!   peer namespaces p0..p3:            root namespace (the test):
//!     eth0  10.213.X.(i+1)  (mesh)       obs<pid>m<n>  10.214.X.254
//!     mgmt0 10.214.X.(i+1)  (HTTP)
//! ```
//!
//! Peers listen for the mesh on their data address only, so they never learn (and never
//! dial) each other's management addresses: setting `trunkA` down cuts the mesh 2|2 while
//! the test still reaches all four HTTP APIs. The cut drops frames silently, like a pulled
//! cable: nothing tells the peers, and their connections across it stay open.
//!
//! The test needs root and `ip` (iproute2). Without them it says why and passes, unless
//! `OBSERVATORY_REQUIRE_ALL` is set (as in CI), which makes the skip a failure. Every name
//! it creates carries its process id; a guard removes them all when the test ends, also
//! on panic, and a later run removes what a killed run left behind.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use observatory_e2e::{
    DEADLINE, EdgeFigures, Expected, MESH_SYNC_INTERVAL, edge_figures, event, figures_diff, now_ms,
    observatory_bin, wait_until,
};
use serde_json::{Value, json};

/// Peers in the mesh; the first half is side A, the rest side B.
const PEERS: usize = 4;
/// Port of the mesh (on the data network) and of the HTTP API (on the management network).
const MESH_PORT: u16 = 7000;
const HTTP_PORT: u16 = 7070;
/// How long a cut side must stay unchanged once it converged: fifty rounds. It also makes
/// the cut outlast several TCP retransmissions, as a real one would.
const HOLD: Duration = Duration::from_secs(10);
/// How long after the cut a sync across it may still be recorded: one that was answered
/// just before the cut and handled just after it on a busy machine.
const CUT_GRACE_MS: i64 = 1000;
/// How long the healed mesh may take to agree. The peers do not notice that a connection
/// across the cut is dead, so they wait for TCP's next retransmission after the heal, and
/// TCP doubles its wait after each one: at worst about as long again as the cut lasted
/// (a cut of 10 s takes 1 to 4 s to heal, one of 30 s about 25 s).
const HEAL_DEADLINE: Duration = Duration::from_secs(40);

#[test]
fn partitioned_halves_converge_apart_then_agree_exactly_after_healing() {
    let Some(network) = Network::create_or_skip() else { return };
    let bin = observatory_bin();
    let started = Instant::now();
    let peers: Vec<NsPeer> = (0..PEERS).map(|i| NsPeer::spawn(&network, i, &bin)).collect();
    eprintln!("partition: {PEERS} peers started in {:?}", started.elapsed());

    let connected = Instant::now();
    wait_until(DEADLINE, "every peer connected to the three others", || {
        let counts: Vec<Result<usize, String>> = peers.iter().map(NsPeer::connected_peers).collect();
        if counts.iter().all(|c| c == &Ok(PEERS - 1)) {
            Ok(())
        } else {
            Err(format!("connected: {counts:?}"))
        }
    });
    eprintln!("partition: mesh connected in {:?}", connected.elapsed());

    // Before the cut: every peer reports on a shared edge and on one of its own.
    let mut before = Expected::default();
    for (i, peer) in peers.iter().enumerate() {
        let mut events = events("web", "checkout", 8, i * 100);
        events.extend(self::events(&format!("client-{i}"), "web", 4, i * 100 + 50));
        peer.post(&events);
        before.add(&events);
    }
    let phase = Instant::now();
    wait_until_figures("all four converge before the cut", DEADLINE, &peers, &[0, 1, 2, 3], &before);
    eprintln!("partition: converged before the cut in {:?}", phase.elapsed());

    network.cut();
    let cut = Instant::now();
    // On the peers' clock (the host's): no sync across the cut may end after this. Rounds
    // run every 200 ms, so a cut that leaks shows despite the grace.
    let cut_ms = now_ms() + CUT_GRACE_MS;
    // Both sides write the shared edge and an edge only they know.
    let (side_a, side_b) = ([0, 1], [2, 3]);
    let (mut sent_a, mut sent_b) = (Expected::default(), Expected::default());
    for (side, sent, only) in [(side_a, &mut sent_a, "payments"), (side_b, &mut sent_b, "inventory")] {
        for i in side {
            let mut events = events("web", "checkout", 6, 1000 + i * 100);
            events.extend(self::events("checkout", only, 5, 1000 + i * 100 + 50));
            peers[i].post(&events);
            sent.add(&events);
        }
    }
    let mut expected_a = before.clone();
    expected_a.merge(&sent_a);
    let mut expected_b = before.clone();
    expected_b.merge(&sent_b);
    wait_until_figures("side A converges during the cut", DEADLINE, &peers, &side_a, &expected_a);
    wait_until_figures("side B converges during the cut", DEADLINE, &peers, &side_b, &expected_b);
    eprintln!("partition: each side converged within itself {:?} after the cut", cut.elapsed());
    // Many rounds later, still nothing has crossed: the cut is real, and the peers say so.
    std::thread::sleep(HOLD);
    for (side, other, expected) in [(side_a, side_b, &expected_a), (side_b, side_a, &expected_b)] {
        for i in side {
            let (figures, mesh) = peers[i].figures().unwrap_or_else(|e| panic!("{e}"));
            if let Some(diff) = figures_diff(&figures, &expected.figures()) {
                panic!(
                    "peer {i} {HOLD:?} after its side converged (the other side's events must be absent):\n{diff}"
                );
            }
            assert_eq!(
                mesh["complete"], false,
                "peer {i}'s answers during the cut must say they are incomplete"
            );
            for o in other {
                let synced_ms = peers[i].last_sync_ms(&peers[o].peer_id).unwrap_or_else(|e| panic!("{e}"));
                assert!(
                    synced_ms <= cut_ms,
                    "peer {i} says it synced with peer {o} {} ms after the cut",
                    synced_ms - (cut_ms - CUT_GRACE_MS)
                );
            }
        }
    }

    network.heal();
    let healed = Instant::now();
    // Every peer answers exactly what was sent, on both sides: calls, errors, bytes and
    // the latency percentiles, max and mean.
    let mut everything = expected_a;
    everything.merge(&sent_b);
    wait_until_figures("all four agree after healing", HEAL_DEADLINE, &peers, &[0, 1, 2, 3], &everything);
    eprintln!(
        "partition: all four agreed {:?} after healing (cut lasted {:?})",
        healed.elapsed(),
        healed - cut
    );
    wait_until(DEADLINE, "every peer's answers say they are complete after healing", || {
        let complete: Vec<Value> = peers
            .iter()
            .map(|p| p.figures().map(|(_, mesh)| mesh["complete"].clone()))
            .collect::<Result<_, _>>()?;
        if complete.iter().all(|c| c == true) { Ok(()) } else { Err(format!("complete: {complete:?}")) }
    });

    let stopping = Instant::now();
    for peer in peers {
        peer.sigterm_and_wait();
    }
    eprintln!("partition: peers stopped in {:?}; whole test {:?}", stopping.elapsed(), started.elapsed());
}

// ---------------------------------------------------------------------------------------
// Events and the figures they must produce.

/// `n` events on `from -> to`, varied by `salt`: counts 1 to 3, every third event failed,
/// 64 to 320 bytes, latencies from 0.5 ms to about 400 ms, and every seventh without one.
fn events(from: &str, to: &str, n: usize, salt: usize) -> Vec<Value> {
    (salt..salt + n)
        .map(|k| {
            let mut extra = json!({"count": k % 3 + 1, "error": k % 3 == 0, "bytes": 64 * (k % 5 + 1)});
            if k % 7 != 0 {
                extra["latency_ms"] = json!((k * 37 % 400) as f64 + 0.5);
            }
            event(from, to, extra)
        })
        .collect()
}

/// What a graph answer says of each edge, as [`edge_figures`] reads it.
type Figures = BTreeMap<(String, String), EdgeFigures>;

/// Waits until every peer in `which` answers exactly `expected`.
fn wait_until_figures(what: &str, within: Duration, peers: &[NsPeer], which: &[usize], expected: &Expected) {
    let expected = expected.figures();
    wait_until(within, what, || {
        for &i in which {
            let (figures, _) = peers[i].figures()?;
            if let Some(diff) = figures_diff(&figures, &expected) {
                return Err(format!("peer {i}:\n{diff}"));
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------
// Peers inside namespaces.

/// An `observatory peer` running in its own namespace, killed when dropped.
#[derive(Debug)]
struct NsPeer {
    index: usize,
    peer_id: String,
    child: Child,
    exited: Option<ExitStatus>,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// The threads that drain stdout and stderr; they end when the peer does.
    drains: Vec<JoinHandle<()>>,
    /// `http://10.214.X.N:7070`
    url: String,
    client: reqwest::blocking::Client,
    _data_dir: tempfile::TempDir,
}

impl NsPeer {
    /// Starts peer `index` in its namespace, bootstrapping from the others' data
    /// addresses, and waits for its startup line.
    fn spawn(network: &Network, index: usize, bin: &Path) -> NsPeer {
        let data_dir = tempfile::tempdir().expect("a temporary data dir");
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &network.peer_namespaces[index]]).arg(bin).arg("peer");
        command.arg("--data-dir").arg(data_dir.path().join("data"));
        command.args(["--http", &format!("{}:{HTTP_PORT}", network.mgmt_ip(index))]);
        // The data address only: a wildcard would also announce the management address,
        // through which the peers could reach each other across the cut.
        command.args(["--listen", &format!("/ip4/{}/tcp/{MESH_PORT}", network.data_ip(index))]);
        command.arg("--no-mdns");
        for other in (0..PEERS).filter(|&o| o != index) {
            command.args(["--bootstrap", &format!("/ip4/{}/tcp/{MESH_PORT}", network.data_ip(other))]);
        }
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("OBSERVATORY_") {
                command.env_remove(name);
            }
        }
        command.env("NO_COLOR", "1").env("OBSERVATORY_MESH__SYNC_INTERVAL", MESH_SYNC_INTERVAL);
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let description = format!("{command:?}");
        // `ip netns exec` execs the binary in place: the child's pid is the peer's.
        let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot start {description}: {e}"));

        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        let stderr_drain = std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                sink.lock().expect("stderr buffer").extend_from_slice(&chunk[..n]);
            }
        });
        let (line_tx, line_rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stdout_drain = std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = line_tx.send(reader.read_line(&mut line).ok().filter(|&n| n > 0).map(|_| line));
            // Keep the pipe open and empty for as long as the peer lives.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });

        let mut peer = NsPeer {
            index,
            peer_id: String::new(),
            child,
            exited: None,
            stderr,
            drains: vec![stderr_drain, stdout_drain],
            url: format!("http://{}:{HTTP_PORT}", network.mgmt_ip(index)),
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(5))
                .no_proxy()
                .build()
                .expect("an HTTP client"),
            _data_dir: data_dir,
        };
        let line = match line_rx.recv_timeout(DEADLINE) {
            Ok(Some(line)) => line,
            Ok(None) => panic!("{description} closed stdout without a startup line"),
            Err(_) => panic!("{description} printed no startup line within {DEADLINE:?}"),
        };
        let startup: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the startup line is not JSON ({e}): {line}"));
        let want = format!(
            "/ip4/{}/tcp/{MESH_PORT}/p2p/{}",
            network.data_ip(index),
            startup["peer_id"].as_str().unwrap_or("?")
        );
        assert_eq!(startup["listen"], json!([want]), "peer {index} listens on its data address only: {line}");
        peer.peer_id = startup["peer_id"].as_str().unwrap_or_default().to_string();
        peer
    }

    fn get(&self, path: &str) -> Result<Value, String> {
        let response = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .map_err(|e| format!("peer {}: GET {path}: {e}", self.index))?;
        let status = response.status();
        let text = response.text().map_err(|e| format!("peer {}: GET {path}: {e}", self.index))?;
        if !status.is_success() {
            return Err(format!("peer {}: GET {path}: {status}: {text}", self.index));
        }
        serde_json::from_str(&text)
            .map_err(|e| format!("peer {}: GET {path}: not JSON ({e}): {text}", self.index))
    }

    /// Posts events as NDJSON and asserts that every one was accepted.
    fn post(&self, events: &[Value]) {
        let body: String = events.iter().map(|e| format!("{e}\n")).collect();
        let response = self
            .client
            .post(format!("{}/api/v1/events", self.url))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .unwrap_or_else(|e| panic!("peer {}: posting events: {e}", self.index));
        let status = response.status();
        let answer: Value =
            response.json().unwrap_or_else(|e| panic!("peer {}: ingest answer: {e}", self.index));
        assert!(status.is_success(), "peer {}: posting events: {status}: {answer}", self.index);
        assert_eq!(
            (answer["accepted"].as_u64(), answer["rejected"].as_u64()),
            (Some(events.len() as u64), Some(0)),
            "peer {}: {answer}",
            self.index
        );
    }

    /// How many peers `/api/v1/peers` shows connected with agreeing settings.
    fn connected_peers(&self) -> Result<usize, String> {
        let answer = self.get("/api/v1/peers")?;
        let peers = answer["peers"].as_array().ok_or_else(|| format!("no `peers` array: {answer}"))?;
        Ok(peers.iter().filter(|p| p["connected"] == true && p["settings"]["state"] == "agrees").count())
    }

    /// The figures of every edge of the last 15 minutes, and the answer's `coverage.mesh`.
    fn figures(&self) -> Result<(Figures, Value), String> {
        let graph = self.get("/api/v1/graph?window=15m")?;
        Ok((edge_figures(&graph), graph["coverage"]["mesh"].clone()))
    }

    /// When (ms since the epoch) this peer last synced with `peer_id`, as `/api/v1/peers`
    /// says. (Its `last_sync_age_ms` is as old as the status, published twice a second.)
    fn last_sync_ms(&self, peer_id: &str) -> Result<i64, String> {
        let answer = self.get("/api/v1/peers")?;
        let peers = answer["peers"].as_array().ok_or_else(|| format!("no `peers` array: {answer}"))?;
        let peer = peers
            .iter()
            .find(|p| p["peer"] == peer_id)
            .ok_or_else(|| format!("{peer_id} not listed: {answer}"))?;
        peer["last_sync_ms"].as_i64().ok_or_else(|| format!("no last_sync_ms for {peer_id}: {answer}"))
    }

    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().expect("stderr buffer")).into_owned()
    }

    /// Sends SIGTERM and asserts a clean exit within the deadline.
    fn sigterm_and_wait(mut self) {
        let pid = self.child.id().to_string();
        let kill = Command::new("kill").args(["-TERM", &pid]).status().expect("running kill");
        assert!(kill.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + DEADLINE;
        while self.exited.is_none() && Instant::now() < deadline {
            self.exited = self.child.try_wait().expect("polling the peer");
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = self
            .exited
            .unwrap_or_else(|| panic!("peer {} did not stop within {DEADLINE:?} after SIGTERM", self.index));
        assert!(status.success(), "peer {} exited with {status} after SIGTERM", self.index);
        assert!(!self.stderr_text().contains("panicked"), "peer {} panicked while stopping", self.index);
    }
}

impl Drop for NsPeer {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
        if std::thread::panicking() {
            eprintln!("--- stderr of peer {}:\n{}", self.index, self.stderr_text());
        }
        for drain in self.drains.drain(..) {
            // Its pipe closed with the peer; one still open is not worth hanging the test.
            if drain.is_finished() {
                let _ = drain.join();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The network.

/// Tells runs of this test in one process apart.
static RUN: AtomicU32 = AtomicU32::new(0);

/// The namespaces, bridges and veths of one run; removed when dropped.
#[derive(Debug)]
struct Network {
    hub: String,
    peer_namespaces: Vec<String>,
    /// The test's leg on the management network, in the root namespace.
    root_link: String,
    /// Third octet of both subnets.
    subnet: u8,
}

impl Network {
    /// Builds the network, or says why this machine cannot and returns `None` (a failure
    /// under `OBSERVATORY_REQUIRE_ALL`).
    fn create_or_skip() -> Option<Network> {
        match Network::probe() {
            Ok(network) => {
                network.build();
                Some(network)
            }
            Err(reason) => {
                assert!(
                    std::env::var_os("OBSERVATORY_REQUIRE_ALL").is_none(),
                    "OBSERVATORY_REQUIRE_ALL is set: {reason}"
                );
                eprintln!("skipped: {reason}");
                None
            }
        }
    }

    /// Checks what the machine must offer (Linux, root, `ip`, network namespaces,
    /// bridges, veths) by creating the hub with its bridges.
    fn probe() -> Result<Network, String> {
        if !cfg!(target_os = "linux") {
            return Err("network namespaces need Linux".into());
        }
        let status = std::fs::read_to_string("/proc/self/status")
            .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
        let euid =
            status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|ids| ids.split_whitespace().nth(1));
        if euid != Some("0") {
            return Err(format!(
                "creating network namespaces needs root (effective uid {})",
                euid.unwrap_or("unknown")
            ));
        }
        ip(&["-V"])
            .map_err(|e| format!("iproute2's `ip` does not run ({e}); install the iproute2 package"))?;
        remove_leftovers();
        let pid = std::process::id();
        let run = RUN.fetch_add(1, Ordering::Relaxed);
        let name = |role: &str| format!("obs-{pid}-{run}-{role}");
        let network = Network {
            hub: name("hub"),
            peer_namespaces: (0..PEERS).map(|i| name(&format!("p{i}"))).collect(),
            root_link: format!("obs{pid}m{run}"),
            subnet: free_subnet(pid),
        };
        // From here on, the guard removes whatever was made.
        ip(&["netns", "add", &network.hub]).map_err(|e| format!("cannot create a network namespace: {e}"))?;
        for bridge in ["brA", "brB", "brM"] {
            network
                .in_hub(&["link", "add", bridge, "type", "bridge"])
                .map_err(|e| format!("cannot create a bridge: {e}"))?;
        }
        network
            .in_hub(&["link", "add", "trunkA", "type", "veth", "peer", "name", "trunkB"])
            .map_err(|e| format!("cannot create a veth pair: {e}"))?;
        Ok(network)
    }

    /// Wires up the rest; any failure here is a bug of the test, not a missing feature.
    fn build(&self) {
        let x = self.subnet;
        for bridge in ["brA", "brB", "brM"] {
            self.in_hub_ok(&["link", "set", bridge, "up"]);
        }
        self.in_hub_ok(&["link", "set", "trunkA", "master", "brA", "up"]);
        self.in_hub_ok(&["link", "set", "trunkB", "master", "brB", "up"]);
        for (i, ns) in self.peer_namespaces.iter().enumerate() {
            ip_ok(&["netns", "add", ns]);
            ip_ok(&["-n", ns, "link", "set", "lo", "up"]);
            let half = if i < PEERS / 2 { "brA" } else { "brB" };
            for (port, inside, bridge, address) in [
                (format!("d{i}"), "eth0", half, self.data_ip(i)),
                (format!("m{i}"), "mgmt0", "brM", self.mgmt_ip(i)),
            ] {
                self.in_hub_ok(&["link", "add", &port, "type", "veth", "peer", "name", inside, "netns", ns]);
                self.in_hub_ok(&["link", "set", &port, "master", bridge, "up"]);
                ip_ok(&["-n", ns, "addr", "add", &format!("{address}/24"), "dev", inside]);
                ip_ok(&["-n", ns, "link", "set", inside, "up"]);
            }
        }
        ip_ok(&["link", "add", &self.root_link, "type", "veth", "peer", "name", "mroot", "netns", &self.hub]);
        self.in_hub_ok(&["link", "set", "mroot", "master", "brM", "up"]);
        ip_ok(&["addr", "add", &format!("10.214.{x}.254/24"), "dev", &self.root_link]);
        ip_ok(&["link", "set", &self.root_link, "up"]);
        eprintln!(
            "partition: namespaces {} and {}; data 10.213.{x}.0/24, management 10.214.{x}.0/24 via {}",
            self.hub,
            self.peer_namespaces.join(", "),
            self.root_link
        );
    }

    fn data_ip(&self, index: usize) -> String {
        format!("10.213.{}.{}", self.subnet, index + 1)
    }

    fn mgmt_ip(&self, index: usize) -> String {
        format!("10.214.{}.{}", self.subnet, index + 1)
    }

    /// Cuts the data network between the halves.
    fn cut(&self) {
        self.in_hub_ok(&["link", "set", "trunkA", "down"]);
    }

    /// Joins the halves again.
    fn heal(&self) {
        self.in_hub_ok(&["link", "set", "trunkA", "up"]);
    }

    fn in_hub(&self, args: &[&str]) -> Result<(), String> {
        ip(&[&["-n", self.hub.as_str()], args].concat())
    }

    fn in_hub_ok(&self, args: &[&str]) {
        self.in_hub(args).unwrap_or_else(|e| panic!("setting up the network: {e}"));
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting a namespace destroys the veths in it, and so their other ends. The peers
        // are gone already (they are dropped first), so nothing keeps a namespace alive.
        let _ = ip(&["link", "del", &self.root_link]);
        for ns in self.peer_namespaces.iter().chain([&self.hub]) {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// Runs `ip ARGS`; an error names the command and says what `ip` said.
fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("`ip {}`: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn ip_ok(args: &[&str]) {
    ip(args).unwrap_or_else(|e| panic!("setting up the network: {e}"));
}

fn ip_text(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// A third octet whose management subnet 10.214.X.0/24 the root namespace does not use,
/// starting from one derived from `pid`.
fn free_subnet(pid: u32) -> u8 {
    let used = ip_text(&["-4", "-o", "addr", "show"]) + &ip_text(&["-4", "route", "show"]);
    (0..250)
        .map(|i| ((pid + i) % 250 + 1) as u8)
        .find(|x| !used.contains(&format!("10.214.{x}.")))
        .expect("a free 10.214.X.0/24 subnet")
}

/// Removes the namespaces (and the peers still running in them) of runs whose process is
/// gone: a test killed by Ctrl-C or a timeout never ran its guard.
fn remove_leftovers() {
    let dead = |pid: &str| pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists();
    for line in ip_text(&["netns", "list"]).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let mut parts = name.split('-');
        if parts.next() == Some("obs") && parts.next().is_some_and(dead) {
            for pid in ip_text(&["netns", "pids", name]).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
            let _ = ip(&["netns", "del", name]);
        }
    }
    for line in ip_text(&["-o", "link", "show"]).lines() {
        // `7: obs1234m0@if6: <...`
        let Some(name) = line.split(": ").nth(1).and_then(|n| n.split('@').next()) else { continue };
        if let Some(pid) = name.strip_prefix("obs").and_then(|rest| rest.split('m').next())
            && dead(pid)
        {
            let _ = ip(&["link", "del", name]);
        }
    }
}
