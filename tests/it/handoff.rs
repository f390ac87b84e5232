//! Handoffs between real peers on loopback: halves handed to an owner that dies are sent
//! on to the next owner, and what a crashed owner was holding is counted when it restarts.

use std::collections::BTreeMap;
use std::time::Duration;

use observatory_e2e::{DEADLINE, Peer, PeerBuilder, now_ms, wait_until};
use serde_json::{Value, json};

/// Halves wait this long for their other half: longer than the test's pause before the
/// kill, so the crashed owner is holding them.
const PENDING_TTL: &str = "6s";

fn peer(dir: &std::path::Path) -> PeerBuilder {
    Peer::builder()
        .data_dir(dir)
        .fast_sync()
        .env("OBSERVATORY_CORRELATION__PENDING_TTL", PENDING_TTL)
        // A message to a peer that does not answer fails after 2 s.
        .env("OBSERVATORY_MESH__REQUEST_TIMEOUT", "2s")
}

/// Waits until `peer` has `n` other peers connected and agreeing.
fn wait_connected(peer: &Peer, n: usize) {
    wait_until(DEADLINE, &format!("{} connected to {n} peers", peer.url()), || {
        let answer = peer.peers();
        let connected = answer["peers"].as_array().map_or(0, |peers| {
            peers.iter().filter(|p| p["connected"] == true && p["settings"]["state"] == "agrees").count()
        });
        if connected == n { Ok(()) } else { Err(format!("{connected} connected: {answer}")) }
    });
}

/// The CLIENT half of trace `t` (of `client`) or its SERVER half (of `server`), as Zipkin
/// v2 JSON.
fn half(t: u64, phase: u64, server: bool) -> Value {
    let trace = format!("{phase:016x}{t:016x}");
    let client_id = format!("{:016x}", t * 2 + 1);
    let ts = (now_ms() as u64 - 2_000) * 1_000;
    if server {
        json!({"traceId": trace, "id": format!("{:016x}", t * 2 + 2), "parentId": client_id, "kind": "SERVER",
               "timestamp": ts + 100, "duration": 800, "localEndpoint": {"serviceName": format!("api{phase}")}})
    } else {
        json!({"traceId": trace, "id": client_id, "parentId": "00000000000000ff", "kind": "CLIENT",
               "timestamp": ts, "duration": 1_000, "localEndpoint": {"serviceName": format!("web{phase}")}})
    }
}

fn send(peer: &Peer, traces: std::ops::Range<u64>, phase: u64, server: bool) {
    let spans: Vec<Value> = traces.map(|t| half(t, phase, server)).collect();
    for chunk in spans.chunks(100) {
        peer.post_zipkin(&Value::Array(chunk.to_vec()));
    }
}

fn correlation(peer: &Peer, counter: &str) -> u64 {
    peer.status()["correlation"][counter].as_u64().unwrap_or_else(|| panic!("correlation.{counter}"))
}

/// Calls per phase on `web{phase} -> api{phase}`, as `peer` sees the mesh.
fn calls(peer: &Peer) -> BTreeMap<String, u64> {
    let graph = peer.graph("5m");
    graph["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| {
            (
                format!("{} -> {}", e["from"].as_str().unwrap(), e["to"].as_str().unwrap()),
                e["calls"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn halves_sent_to_an_owner_that_died_go_on_to_the_next_and_its_losses_are_counted() {
    let dirs = [(); 3].map(|()| tempfile::tempdir().expect("a temporary dir"));
    let a = peer(dirs[0].path()).spawn();
    let b = peer(dirs[1].path()).bootstrap(a.mesh_addr()).spawn();
    let c = peer(dirs[2].path()).bootstrap(a.mesh_addr()).bootstrap(b.mesh_addr()).spawn();
    for p in [&a, &b, &c] {
        wait_connected(p, 2);
    }
    const N: u64 = 300;
    // Phase 1: only the CLIENT halves, at A; each waits at its trace's owner (a third at C).
    send(&a, 0..N, 1, false);
    // Long enough for C to record how many halves it holds (at most a second apart).
    std::thread::sleep(Duration::from_millis(2_500));
    let held_by_c = correlation(&c, "spans_pending");
    assert!(held_by_c > N / 10, "C owns about a third of the traces and holds their halves: {held_by_c}");
    // C hangs: its connections stay open, so A and B still count it among the live peers.
    let stopped = std::process::Command::new("kill").args(["-STOP", &c.pid().to_string()]).status();
    assert!(stopped.is_ok_and(|s| s.success()), "SIGSTOP the peer");
    // The SERVER halves of phase 1 at B: those of C's traces find no CLIENT half anywhere.
    send(&b, 0..N, 1, true);
    // Phase 2, both halves while C hangs: halves of C's traces are sent to it, are not
    // acknowledged within the request timeout, come back and go on to one new owner.
    send(&a, 0..N, 2, false);
    send(&b, 0..N, 2, true);
    wait_until(DEADLINE, "the unacknowledged handoffs came back", || {
        let rerouted = correlation(&a, "spans_rerouted") + correlation(&b, "spans_rerouted");
        if rerouted > 0 { Ok(()) } else { Err("nothing rerouted yet".into()) }
    });
    // Then it dies, holding the halves it had taken.
    c.sigkill();

    let c = peer(dirs[2].path()).spawn();
    assert_eq!(correlation(&c, "spans_lost_in_crash"), held_by_c, "the restarted peer counts what it lost");

    let want = BTreeMap::from([("web1 -> api1".to_string(), N - held_by_c), ("web2 -> api2".to_string(), N)]);
    let seen =
        wait_until(Duration::from_secs(30), "every pair counted once, the lost ones not at all", || {
            let seen = calls(&a);
            let unpaired = correlation(&a, "spans_unpaired") + correlation(&b, "spans_unpaired");
            // The SERVER halves of the traces whose CLIENT half died with C are given up.
            if seen == want && unpaired == held_by_c {
                Ok(seen)
            } else {
                Err(format!("{seen:?}, unpaired {unpaired}"))
            }
        });
    assert!(seen.values().zip(want.values()).all(|(s, w)| s <= w), "no pair counted twice");
}
