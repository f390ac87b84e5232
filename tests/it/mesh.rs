//! The mesh on loopback: real peers converging, crashing, losing disks, refusing strangers.
//!
//! Every peer syncs every `observatory_e2e::MESH_SYNC_INTERVAL` and has mDNS off, so peers
//! meet only through `--bootstrap` and what other peers tell them. Figures are compared exactly:
//! per edge calls, errors, bytes and the latency quantiles, max, mean and samples of the
//! graph of the last five minutes (which covers every event of a test), against what an
//! independent `hdrhistogram` makes of the events sent ([`Expected`]).

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use observatory_e2e::{
    DEADLINE, Expected, Peer, PeerBuilder, edge_figures, event, figures_diff, ndjson, run_to_end, wait_until,
    write_swarm_key,
};
use serde_json::{Value, json};

/// How long a mesh may take to agree after the last event: many rounds.
const CONVERGE: Duration = Duration::from_secs(30);
/// How long a peer that must stay apart is watched once everything else converged: more
/// than ten rounds.
const WATCH_APART: Duration = Duration::from_secs(3);
/// The window every graph is read over; it covers every event of a test.
const WINDOW: &str = "5m";

fn mesh_peer() -> PeerBuilder {
    Peer::builder().fast_sync()
}

/// `n` events on `from -> to`, different for each `salt`: counts 1 to 4, some errors,
/// bytes, and latencies (on most events) spread over 0.5 ms to 2 s.
fn traffic(from: &str, to: &str, salt: u64, n: u64) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let k = salt.wrapping_mul(7919).wrapping_add(i);
            let mut fields = json!({"count": 1 + k % 4, "error": k % 5 == 0, "bytes": 100 + k % 7 * 50});
            if k % 6 != 0 {
                // Quarter milliseconds are exact in binary, so the microseconds are too.
                fields["latency_ms"] = json!(0.5 + (k * 37 % 8000) as f64 * 0.25);
            }
            event(from, to, fields)
        })
        .collect()
}

/// Posts `events`, asserts that all were accepted, and adds them to `expected`.
fn send(peer: &Peer, events: &[Value], expected: &mut Expected) {
    let answer = peer.post_ndjson(events);
    assert_eq!(
        (&answer["accepted"], &answer["rejected"]),
        (&json!(events.len()), &json!(0)),
        "every event accepted: {answer}"
    );
    expected.add(events);
}

fn label(peer: &Peer) -> String {
    format!("peer {} ({})", peer.peer_id(), peer.url())
}

/// Waits until the graph of every one of `peers` is exactly `expected`.
fn wait_converged(peers: &[&Peer], expected: &Expected, what: &str) {
    let want = expected.figures();
    wait_until(CONVERGE, what, || {
        for peer in peers {
            if let Some(diff) = figures_diff(&edge_figures(&peer.graph(WINDOW)), &want) {
                return Err(format!("{} differs:\n{diff}", label(peer)));
            }
        }
        Ok(())
    });
}

/// Asserts, for [`WATCH_APART`], that each peer's graph stays exactly what it expects.
fn assert_stay(peers: &[(&Peer, &Expected)], what: &str) {
    let wanted: Vec<_> = peers.iter().map(|(peer, expected)| (*peer, expected.figures())).collect();
    let end = Instant::now() + WATCH_APART;
    while Instant::now() < end {
        for (peer, want) in &wanted {
            if let Some(diff) = figures_diff(&edge_figures(&peer.graph(WINDOW)), want) {
                panic!("{what}: {} changed:\n{diff}", label(peer));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The entries of `/api/v1/peers`, by peer id.
fn peer_entries(answer: &Value) -> BTreeMap<String, Value> {
    answer["peers"]
        .as_array()
        .unwrap_or_else(|| panic!("no `peers` array in {answer}"))
        .iter()
        .map(|p| {
            (p["peer"].as_str().unwrap_or_else(|| panic!("entry without `peer`: {p}")).to_string(), p.clone())
        })
        .collect()
}

/// The peer ids of the origins a graph answer sums, with their incarnations.
fn origins(graph: &Value) -> BTreeSet<(String, u64)> {
    graph["coverage"]["origins"]
        .as_array()
        .unwrap_or_else(|| panic!("no coverage origins in {graph}"))
        .iter()
        .map(|o| (o["peer"].as_str().unwrap_or_default().to_string(), o["incarnation"].as_u64().unwrap_or(0)))
        .collect()
}

/// Waits until `peer` lists exactly `others` (besides peers whose settings differ) as
/// connected, agreeing peers, all in sync, and says its coverage (in `/api/v1/peers` and in
/// the graph) is complete.
fn wait_fully_meshed(peer: &Peer, others: &[&Peer]) -> Value {
    let want: BTreeSet<String> = others.iter().map(|p| p.peer_id().to_string()).collect();
    let n = want.len();
    wait_until(CONVERGE, &format!("{} in sync with every other peer", label(peer)), || {
        let answer = peer.peers();
        // Peers with other settings are not part of this mesh (and not of its coverage).
        let mut entries = peer_entries(&answer);
        entries.retain(|_, entry| entry["settings"]["state"] != "differs");
        let listed: BTreeSet<String> = entries.keys().cloned().collect();
        if listed != want {
            return Err(format!("lists {listed:?}, expected {want:?}: {answer}"));
        }
        for (id, entry) in &entries {
            if entry["connected"] != true || entry["settings"]["state"] != "agrees" {
                return Err(format!("{id} not connected or not agreeing: {answer}"));
            }
        }
        let coverage = &answer["coverage"];
        let summary = (&coverage["peers_known"], &coverage["peers_connected"], &coverage["peers_in_sync"]);
        if summary != (&json!(n), &json!(n), &json!(n)) || coverage["complete"] != true {
            return Err(format!("coverage not complete: {answer}"));
        }
        let graph = peer.graph(WINDOW);
        if graph["coverage"]["mesh"]["complete"] != true || graph["coverage"]["mesh"]["peers_in_sync"] != n {
            return Err(format!("the graph's coverage is not complete: {}", graph["coverage"]));
        }
        Ok(answer)
    })
}

#[test]
fn three_peers_in_a_chain_converge_to_exactly_what_was_sent() {
    let a = mesh_peer().spawn();
    let b = mesh_peer().bootstrap(a.mesh_addr()).spawn();
    // C knows only B; it has to learn of A from B.
    let c = mesh_peer().bootstrap(b.mesh_addr()).spawn();
    let mut expected = Expected::default();
    for (salt, (name, peer)) in [("a", &a), ("b", &b), ("c", &c)].into_iter().enumerate() {
        let salt = salt as u64 * 100;
        for request in 0..4 {
            send(
                peer,
                &traffic(&format!("{name}-client"), &format!("{name}-server"), salt + request, 10),
                &mut expected,
            );
        }
        // One edge that every peer sees a part of: the global view sums them.
        send(peer, &traffic("web", "api", salt + 50, 15), &mut expected);
    }
    wait_converged(&[&a, &b, &c], &expected, "three peers hold every event");

    for (peer, others) in [(&a, [&b, &c]), (&b, [&a, &c]), (&c, [&a, &b])] {
        let answer = wait_fully_meshed(peer, &others);
        let counters = &answer["counters"];
        assert_eq!((&counters["rejected"], &counters["shunned"]), (&json!(0), &json!(0)), "{answer}");
        assert!(counters["cells_applied"].as_u64().is_some_and(|n| n > 0), "took cells from peers: {answer}");
        let expected_origins: BTreeSet<_> =
            [&a, &b, &c].iter().map(|p| (p.peer_id().to_string(), p.startup().incarnation)).collect();
        assert_eq!(
            origins(&peer.graph(WINDOW)),
            expected_origins,
            "{} sums one origin per peer",
            label(peer)
        );
    }
    let learned = c
        .stderr()
        .lines()
        .any(|line| line.contains("learned of a peer from another peer") && line.contains(a.peer_id()));
    assert!(learned, "C says it learned of A from another peer:\n{}", c.stderr());
}

/// A client thread: requests of 5 events, every 20 ms, to one peer, until told to stop or
/// a request gets no answer.
#[derive(Debug)]
struct Client {
    stop: Arc<AtomicBool>,
    acked_requests: Arc<AtomicU64>,
    thread: JoinHandle<Sent>,
}

/// What a [`Client`] sent.
#[derive(Debug, Default)]
struct Sent {
    /// Everything in the requests answered 200.
    acked: Expected,
    /// How many requests were answered 200.
    acked_requests: u64,
    /// The request that got no answer, if one did not.
    unanswered: Option<Vec<Value>>,
}

impl Client {
    fn start(peer: &Peer, from: &str, salt: u64) -> Client {
        let url = format!("{}/api/v1/events", peer.url());
        let from = from.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let acked_requests = Arc::new(AtomicU64::new(0));
        let (stop_seen, acked_count) = (stop.clone(), acked_requests.clone());
        let thread = std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder().timeout(DEADLINE).build().expect("a client");
            let mut sent = Sent::default();
            let mut n = 0;
            while !stop_seen.load(Ordering::SeqCst) {
                let events = traffic(&from, "server", salt + n, 5);
                n += 1;
                let answer = client
                    .post(&url)
                    .header("content-type", "application/x-ndjson")
                    .body(ndjson(&events))
                    .send()
                    .ok()
                    .filter(|r| r.status().as_u16() == 200)
                    .and_then(|r| r.json::<Value>().ok());
                match answer {
                    Some(answer) => {
                        assert_eq!(answer["accepted"], 5, "{answer}");
                        sent.acked.add(&events);
                        sent.acked_requests += 1;
                        acked_count.fetch_add(1, Ordering::SeqCst);
                    }
                    None => {
                        sent.unanswered = Some(events);
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            sent
        });
        Client { stop, acked_requests, thread }
    }

    fn acked(&self) -> u64 {
        self.acked_requests.load(Ordering::SeqCst)
    }

    /// Waits until `n` more requests than now were answered.
    fn wait_for_more(&self, n: u64, what: &str) {
        let target = self.acked() + n;
        wait_until(DEADLINE, what, || {
            if self.thread.is_finished() {
                panic!("{what}: the client stopped early (a request got no answer)");
            }
            if self.acked() >= target {
                Ok(())
            } else {
                Err(format!("{} of {target} answered", self.acked()))
            }
        });
    }

    fn stop(self) -> Sent {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("a client thread failed")
    }

    /// Joins a client whose peer went away.
    fn join(self) -> Sent {
        self.thread.join().expect("a client thread failed")
    }
}

#[test]
fn a_peer_killed_mid_traffic_rejoins_and_nothing_is_lost_or_counted_twice() {
    let dir = tempfile::tempdir().expect("temp dir");
    let c_data = dir.path().join("c");
    let a = mesh_peer().spawn();
    let b = mesh_peer().bootstrap(a.mesh_addr()).spawn();
    let c = mesh_peer().data_dir(&c_data).bootstrap(a.mesh_addr()).spawn();
    let c_before = c.startup().clone();

    let to_a = Client::start(&a, "a-client", 0);
    let to_b = Client::start(&b, "b-client", 10_000);
    let to_c = Client::start(&c, "c-client", 20_000);
    to_c.wait_for_more(25, "C answers requests");
    to_a.wait_for_more(5, "A answers requests");
    // SIGKILL in the middle of C's traffic: no flush, no goodbye to the mesh.
    c.sigkill();
    let sent_to_c = to_c.join();
    assert!(sent_to_c.unanswered.is_some(), "C's client stops at the first request C did not answer");
    to_a.wait_for_more(10, "A keeps taking events while C is down");
    to_b.wait_for_more(10, "B keeps taking events while C is down");

    let c = mesh_peer().data_dir(&c_data).bootstrap(a.mesh_addr()).spawn();
    assert_eq!(c.peer_id(), c_before.peer_id, "the same data dir, the same identity");
    assert_eq!(c.startup().incarnation, c_before.incarnation + 1, "a new incarnation");
    let mut after_restart = Expected::default();
    for request in 0..3 {
        send(&c, &traffic("c-client", "server", 30_000 + request, 5), &mut after_restart);
    }
    to_a.wait_for_more(10, "A keeps taking events after C is back");
    to_b.wait_for_more(10, "B keeps taking events after C is back");
    let (sent_to_a, sent_to_b) = (to_a.stop(), to_b.stop());

    // Everything acked anywhere; the request C did not answer may or may not have been
    // applied (and synced) before the kill, but if it was, all peers must hold it once.
    let mut acked = Expected::default();
    for part in [&sent_to_a.acked, &sent_to_b.acked, &sent_to_c.acked, &after_restart] {
        acked.merge(part);
    }
    assert!(
        sent_to_a.unanswered.is_none() && sent_to_b.unanswered.is_none(),
        "A and B answered every request"
    );
    let mut with_unanswered = acked.clone();
    with_unanswered.add(sent_to_c.unanswered.as_deref().unwrap_or_default());
    let (acked, with_unanswered) = (acked.figures(), with_unanswered.figures());
    let peers = [&a, &b, &c];
    let settled = wait_until(CONVERGE, "all three peers agree exactly on what was acked", || {
        let graphs: Vec<_> = peers.iter().map(|p| edge_figures(&p.graph(WINDOW))).collect();
        for candidate in [&acked, &with_unanswered] {
            if graphs.iter().all(|g| g == candidate) {
                return Ok(candidate.clone());
            }
        }
        let diffs: Vec<String> = peers
            .iter()
            .zip(&graphs)
            .filter_map(|(p, g)| figures_diff(g, &acked).map(|d| format!("{} vs acked:\n{d}", label(p))))
            .collect();
        Err(diffs.join("\n"))
    });
    let graph = c.graph(WINDOW);
    let listed = origins(&graph);
    for incarnation in [c_before.incarnation, c_before.incarnation + 1] {
        assert!(
            listed.contains(&(c_before.peer_id.clone(), incarnation)),
            "C's runs are both summed: {graph}"
        );
    }
    println!(
        "C acked {} requests before SIGKILL; the unanswered one was {}",
        sent_to_c.acked_requests,
        if settled == with_unanswered && acked != with_unanswered { "applied" } else { "not applied" }
    );
}

#[test]
fn a_peer_that_lost_its_data_dir_relearns_everything_under_a_new_identity() {
    let dir = tempfile::tempdir().expect("temp dir");
    let c_data = dir.path().join("c");
    let a = mesh_peer().spawn();
    let b = mesh_peer().bootstrap(a.mesh_addr()).spawn();
    let c = mesh_peer().data_dir(&c_data).bootstrap(a.mesh_addr()).spawn();
    let mut expected = Expected::default();
    for (salt, peer) in [&a, &b, &c].into_iter().enumerate() {
        let name = format!("client-{salt}");
        for request in 0..3 {
            send(peer, &traffic(&name, "server", salt as u64 * 100 + request, 10), &mut expected);
        }
    }
    wait_converged(&[&a, &b, &c], &expected, "the mesh holds every event");

    let old_id = c.peer_id().to_string();
    c.sigkill();
    std::fs::remove_dir_all(&c_data).expect("deleting C's data dir");
    let c = mesh_peer().data_dir(&c_data).bootstrap(a.mesh_addr()).spawn();
    assert_ne!(c.peer_id(), old_id, "an empty data dir makes a new identity");
    assert_eq!(c.startup().incarnation, 1, "and starts its incarnations afresh");
    wait_converged(&[&c], &expected, "the new peer re-learns everything from the mesh");

    // It takes part as a full peer: its own events reach the others, theirs reach it.
    send(&c, &traffic("client-new", "server", 1_000, 10), &mut expected);
    send(&b, &traffic("client-1", "server", 1_001, 10), &mut expected);
    wait_converged(&[&a, &b, &c], &expected, "the mesh holds the new events too");
    let listed = origins(&c.graph(WINDOW));
    assert!(listed.contains(&(old_id.clone(), 1)), "the lost run's cells came back: {listed:?}");
    assert!(listed.contains(&(c.peer_id().to_string(), 1)), "{listed:?}");
}

/// Asserts that `outsider` received no message and never heard a hello, and that no peer of
/// `mesh` has it connected or heard from it.
fn assert_never_talked(outsider: &Peer, mesh: &[&Peer]) {
    // A peer refused by an allow list sees its connection come up for a few milliseconds
    // before the other side drops it; so "not connected" is waited for, the rest is strict.
    let answer = wait_until(DEADLINE, "the outsider is connected to no one", || {
        let answer = outsider.peers();
        if peer_entries(&answer).values().all(|entry| entry["connected"] == false) {
            Ok(answer)
        } else {
            Err(answer.to_string())
        }
    });
    assert_eq!(answer["counters"]["messages_in"], 0, "the outsider heard nothing: {answer}");
    for (id, entry) in peer_entries(&answer) {
        assert_eq!(entry["settings"]["state"], "unknown", "the outsider got no hello from {id}: {answer}");
    }
    for peer in mesh {
        let answer = peer.peers();
        if let Some(entry) = peer_entries(&answer).get(outsider.peer_id()) {
            assert_eq!(entry["connected"], false, "{} has the outsider connected: {answer}", label(peer));
            assert_eq!(entry["bytes_in"], 0, "{} heard from the outsider: {answer}", label(peer));
        }
    }
}

#[test]
fn peers_without_the_pre_shared_key_get_nothing_and_give_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("swarm.key");
    let other_key = dir.path().join("other.key");
    write_swarm_key(&key, &"4f6273657276617479".repeat(8)[..64]);
    write_swarm_key(&other_key, &"a5".repeat(32));
    let with_key =
        |path: &std::path::Path| mesh_peer().env("OBSERVATORY_MESH__PSK_FILE", &path.display().to_string());
    let a = with_key(&key).spawn();
    let b = with_key(&key).bootstrap(a.mesh_addr()).spawn();
    let no_key = mesh_peer().bootstrap(a.mesh_addr()).bootstrap(b.mesh_addr()).spawn();
    let wrong_key = with_key(&other_key).bootstrap(a.mesh_addr()).bootstrap(b.mesh_addr()).spawn();

    let (mut mesh, mut only_no_key, mut only_wrong_key) = Default::default();
    send(&a, &traffic("a-client", "server", 1, 10), &mut mesh);
    send(&b, &traffic("b-client", "server", 2, 10), &mut mesh);
    send(&no_key, &traffic("no-key", "server", 3, 10), &mut only_no_key);
    send(&wrong_key, &traffic("wrong-key", "server", 4, 10), &mut only_wrong_key);
    wait_converged(&[&a, &b], &mesh, "the peers sharing the key sync");
    wait_fully_meshed(&a, &[&b]);
    assert_stay(
        &[(&a, &mesh), (&b, &mesh), (&no_key, &only_no_key), (&wrong_key, &only_wrong_key)],
        "peers without the key stay apart",
    );
    assert_never_talked(&no_key, &[&a, &b]);
    assert_never_talked(&wrong_key, &[&a, &b]);
}

#[test]
fn a_peer_outside_the_allow_list_gets_nothing_and_gives_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (a_data, b_data) = (dir.path().join("a"), dir.path().join("b"));
    // A first run of each makes its identity, so that the allow list can name it.
    let ids: Vec<String> = [&a_data, &b_data]
        .iter()
        .map(|data| {
            let peer = mesh_peer().data_dir(data).spawn();
            let id = peer.peer_id().to_string();
            peer.sigterm_and_wait();
            id
        })
        .collect();
    let allow = format!("[\"{}\", \"{}\"]", ids[0], ids[1]);
    let allowing =
        |data: &std::path::Path| mesh_peer().data_dir(data).env("OBSERVATORY_MESH__ALLOW_PEERS", &allow);
    let a = allowing(&a_data).spawn();
    let b = allowing(&b_data).bootstrap(a.mesh_addr()).spawn();
    assert_eq!([a.peer_id(), b.peer_id()], [ids[0].as_str(), ids[1].as_str()], "identities kept");
    let stranger = mesh_peer().bootstrap(a.mesh_addr()).bootstrap(b.mesh_addr()).spawn();

    let (mut mesh, mut only_stranger) = (Expected::default(), Expected::default());
    send(&a, &traffic("a-client", "server", 1, 10), &mut mesh);
    send(&b, &traffic("b-client", "server", 2, 10), &mut mesh);
    send(&stranger, &traffic("stranger", "server", 3, 10), &mut only_stranger);
    wait_converged(&[&a, &b], &mesh, "the allowed peers sync");
    wait_fully_meshed(&a, &[&b]);
    wait_fully_meshed(&b, &[&a]);
    assert_stay(&[(&a, &mesh), (&b, &mesh), (&stranger, &only_stranger)], "the stranger stays apart");
    assert_never_talked(&stranger, &[&a, &b]);
}

#[test]
fn a_peer_with_other_resolutions_connects_but_is_not_synced_with() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("other.yaml");
    std::fs::write(
        &config,
        "resolutions:\n  - { width: 10s, retention: 1h }\n  - { width: 1m, retention: 48h }\n",
    )
    .expect("writing a config");
    let a = mesh_peer().spawn();
    let b = mesh_peer().bootstrap(a.mesh_addr()).spawn();
    let other = mesh_peer().arg("--config").arg(&config).bootstrap(a.mesh_addr()).spawn();

    let (mut mesh, mut only_other) = (Expected::default(), Expected::default());
    send(&a, &traffic("a-client", "server", 1, 10), &mut mesh);
    send(&b, &traffic("b-client", "server", 2, 10), &mut mesh);
    send(&other, &traffic("other", "server", 3, 10), &mut only_other);
    wait_converged(&[&a, &b], &mesh, "the agreeing peers sync");

    // Both sides see the connection and say why they do not sync.
    for (peer, remote) in [(&a, &other), (&other, &a)] {
        wait_until(CONVERGE, &format!("{} sees {} as differing", label(peer), label(remote)), || {
            let answer = peer.peers();
            let entries = peer_entries(&answer);
            let Some(entry) = entries.get(remote.peer_id()) else {
                return Err(format!("not listed: {answer}"));
            };
            let reason = entry["settings"]["reason"].as_str().unwrap_or_default();
            if entry["connected"] == true
                && entry["settings"]["state"] == "differs"
                && reason.contains("settings differ")
                && entry["last_sync_ms"].is_null()
            {
                Ok(())
            } else {
                Err(format!("{entry}"))
            }
        });
    }
    // A differing peer does not make an answer incomplete: it is not part of this mesh.
    wait_fully_meshed(&a, &[&b]);
    assert_stay(&[(&a, &mesh), (&b, &mesh), (&other, &only_other)], "the differing peer stays apart");
    assert!(
        a.stderr().contains("not syncing with this peer")
            && other.stderr().contains("not syncing with this peer"),
        "both sides log why they do not sync"
    );
}

/// Runs the garbage peer against `addr` with `messages`; returns its report.
fn run_garbage_peer(addr: &str, messages: &[&str]) -> Value {
    let mut command = Command::new(env!("CARGO_BIN_EXE_garbage-peer"));
    command.arg(addr).args(messages).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let finished = run_to_end(command, None);
    finished.assert_success(&format!("garbage-peer {messages:?}"));
    serde_json::from_str(finished.stdout.trim())
        .unwrap_or_else(|e| panic!("garbage-peer printed no JSON report ({e}):\n{finished}"))
}

/// Waits until `peer` lists `garbage` with `rejected` in `range` and a last rejection that
/// contains `reason`; returns the entry.
fn wait_rejected(peer: &Peer, garbage: &Value, range: std::ops::RangeInclusive<u64>, reason: &str) -> Value {
    let id = garbage["peer_id"].as_str().unwrap_or_else(|| panic!("no peer id in {garbage}")).to_string();
    wait_until(DEADLINE, &format!("{id} ({garbage}) rejected {range:?} times for {reason:?}"), || {
        let answer = peer.peers();
        let entry = peer_entries(&answer).remove(&id).ok_or_else(|| format!("not listed: {answer}"))?;
        let rejected = entry["rejected"].as_u64().unwrap_or(0);
        let last = entry["last_rejection"].as_str().unwrap_or_default();
        if range.contains(&rejected) && !last.is_empty() && last.contains(reason) {
            Ok(entry.clone())
        } else {
            Err(format!("{entry}"))
        }
    })
}

#[test]
fn garbage_on_the_sync_protocol_is_rejected_and_counted_and_the_mesh_carries_on() {
    let a = mesh_peer().spawn();
    let b = mesh_peer().bootstrap(a.mesh_addr()).spawn();
    let mut expected = Expected::default();
    send(&a, &traffic("a-client", "server", 1, 10), &mut expected);
    send(&b, &traffic("b-client", "server", 2, 10), &mut expected);
    wait_converged(&[&a, &b], &expected, "the mesh syncs before the garbage");

    // One message of each kind, each from a fresh identity, each answered (the peer
    // acknowledges receipt before it decodes) and counted once.
    let single = [
        ("version", "wire version 99"),
        ("corrupt-cell", "more errors than calls"),
        ("edge-index", "names edge 7"),
        ("bad-histogram", "malformed"),
    ];
    let mut rejected_total = 0;
    for (message, reason) in single {
        let report = run_garbage_peer(a.mesh_addr(), &[message]);
        assert_eq!((&report["sent"], &report["answered"]), (&json!(1), &json!(1)), "{message}: {report}");
        let entry = wait_rejected(&a, &report, 1..=1, reason);
        assert!(entry["shunned_until_ms"].is_null(), "one offence is not enough to be shunned: {entry}");
        rejected_total += 1;
    }
    // Repeated offences get the sender disconnected and shunned.
    let report = run_garbage_peer(a.mesh_addr(), &["random:6"]);
    assert_eq!(report["sent"], 6, "{report}");
    // Random bytes are mostly malformed CBOR, but some read as an envelope of another
    // version: any reason will do.
    let entry = wait_rejected(&a, &report, 3..=6, "");
    assert!(entry["shunned_until_ms"].as_i64().is_some(), "shunned after three offences: {entry}");
    assert_eq!(entry["connected"], false, "{entry}");
    rejected_total += 3;
    // A message over mesh.message_bytes_max is refused before it is decoded.
    let report = run_garbage_peer(a.mesh_addr(), &["oversized"]);
    assert_eq!((&report["sent"], &report["answered"]), (&json!(1), &json!(0)), "oversized refused: {report}");

    let answer = a.peers();
    let counters = &answer["counters"];
    assert!(
        counters["rejected"].as_u64().is_some_and(|n| n >= rejected_total),
        "at least {rejected_total} messages rejected in all: {answer}"
    );
    assert!(counters["shunned"].as_u64().is_some_and(|n| n >= 1), "{answer}");
    a.get("/healthz").expect_status(200, "the peer still answers");

    // The mesh carries on: new events on both sides, exact totals on both.
    send(&a, &traffic("a-client", "server", 3, 10), &mut expected);
    send(&b, &traffic("b-client", "server", 4, 10), &mut expected);
    wait_converged(&[&a, &b], &expected, "the mesh still converges after the garbage");
    let entries = peer_entries(&a.peers());
    let b_entry = &entries[b.peer_id()];
    assert_eq!((&b_entry["connected"], &b_entry["rejected"]), (&json!(true), &json!(0)), "{b_entry}");
    assert!(!a.stderr().contains("panicked"), "no panic:\n{}", a.stderr());
}
