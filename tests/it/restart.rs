//! Restarts on the same data dir: what was acknowledged survives SIGKILL (durable acks)
//! and SIGTERM (graceful stop), the identity stays, the incarnation grows, and a data
//! dir is used by one peer at a time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use observatory_e2e::{DEADLINE, EdgeTotals, Peer, Startup, edge_totals, event, key, ndjson};
use serde_json::{Value, json};

/// Calls in one request of [`request_events`].
const CALLS_PER_REQUEST: u64 = 15;

/// One request's events on `from -> to`: counts 1 to 5 (15 calls), two errors (6 calls
/// failed), 100 bytes per event.
fn request_events(from: &str, to: &str) -> Vec<Value> {
    (1..=5u64)
        .map(|count| {
            event(
                from,
                to,
                json!({"count": count, "error": count % 2 == 0, "bytes": 100,
                                             "latency_ms": count as f64 * 1.5}),
            )
        })
        .collect()
}

fn totals_of(requests: u64) -> EdgeTotals {
    EdgeTotals { calls: requests * CALLS_PER_REQUEST, errors: requests * 6, bytes: requests * 500 }
}

/// Sends `per_thread` requests from each of `threads` threads at once (so the writer
/// groups them), each thread on its own edge; every answer must accept all 5 events.
fn send_concurrently(peer: &Peer, threads: usize, per_thread: u64) -> BTreeMap<(String, String), EdgeTotals> {
    std::thread::scope(|scope| {
        for t in 0..threads {
            scope.spawn(move || {
                let from = format!("client-{t}");
                for _ in 0..per_thread {
                    let answer = peer.post_ndjson(&request_events(&from, "server"));
                    assert_eq!(
                        (answer["accepted"].clone(), answer["rejected"].clone()),
                        (json!(5), json!(0)),
                        "{answer}"
                    );
                }
            });
        }
    });
    (0..threads).map(|t| (key(&format!("client-{t}"), "server"), totals_of(per_thread))).collect()
}

fn assert_same_identity_next_incarnation(before: &Startup, after: &Startup) {
    assert_eq!(after.peer_id, before.peer_id, "the peer id survives a restart");
    assert_eq!(after.incarnation, before.incarnation + 1, "each start takes the next incarnation");
}

/// The origins listed in a graph's coverage, as `(peer, incarnation, local)`.
fn origins(graph: &Value) -> Vec<(String, u64, bool)> {
    let mut origins: Vec<_> = graph["coverage"]["origins"]
        .as_array()
        .unwrap_or_else(|| panic!("no coverage in {graph}"))
        .iter()
        .map(|o| {
            (
                o["peer"].as_str().unwrap_or_default().to_string(),
                o["incarnation"].as_u64().unwrap_or_default(),
                o["local"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    origins.sort();
    origins
}

#[test]
fn sigkill_after_durable_acks_loses_nothing_acked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let first = Peer::builder().data_dir(&data).spawn();
    let before = first.startup().clone();
    assert_eq!(before.incarnation, 1);
    let acked = send_concurrently(&first, 4, 8);
    // No stop signal, no flush: everything answered must already be on disk.
    first.sigkill();

    let second = Peer::builder().data_dir(&data).spawn();
    assert_same_identity_next_incarnation(&before, second.startup());
    let graph = second.graph("5m");
    assert_eq!(edge_totals(&graph), acked, "after SIGKILL the graph holds exactly what was acked: {graph}");
    let listed = origins(&graph);
    assert!(
        listed.contains(&(before.peer_id.clone(), 1, false)),
        "the old incarnation is listed as a frozen origin: {listed:?}"
    );

    // And again: the third run sees the first run's data and its own.
    let more = send_concurrently(&second, 1, 3);
    let after_second = second.startup().clone();
    second.sigkill();
    let third = Peer::builder().data_dir(&data).spawn();
    assert_same_identity_next_incarnation(&after_second, third.startup());
    let mut expected = acked;
    let client0 = expected.get_mut(&key("client-0", "server")).expect("client-0");
    let extra = more[&key("client-0", "server")];
    *client0 = EdgeTotals {
        calls: client0.calls + extra.calls,
        errors: client0.errors + extra.errors,
        bytes: client0.bytes + extra.bytes,
    };
    assert_eq!(edge_totals(&third.graph("5m")), expected, "two restarts, nothing lost or doubled");
}

/// Per thread: requests answered 200, and requests that got no answer (at most one: the
/// thread stops at its first failure).
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    acked: u64,
    unanswered: u64,
}

/// Keeps `threads` clients sending until the peer goes away; calls `stop` once at least
/// `min_acked` requests were answered. Returns each thread's tally.
fn load_until_stopped(peer: Peer, threads: usize, min_acked: u64, stop: impl FnOnce(Peer)) -> Vec<Tally> {
    let url = format!("{}/api/v1/events", peer.url());
    let acked_total = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let url = url.clone();
            let acked_total = acked_total.clone();
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder().timeout(DEADLINE).build().expect("client");
                let body = ndjson(&request_events(&format!("client-{t}"), "server"));
                let mut tally = Tally::default();
                loop {
                    let response = client
                        .post(&url)
                        .header("content-type", "application/x-ndjson")
                        .body(body.clone())
                        .send();
                    let answer = response
                        .ok()
                        .filter(|r| r.status().as_u16() == 200)
                        .and_then(|r| r.json::<Value>().ok());
                    match answer {
                        Some(answer) => {
                            assert_eq!(answer["accepted"], 5, "{answer}");
                            tally.acked += 1;
                            acked_total.fetch_add(1, Ordering::SeqCst);
                        }
                        None => {
                            tally.unanswered += 1;
                            return tally;
                        }
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + DEADLINE;
    while acked_total.load(Ordering::SeqCst) < min_acked {
        assert!(
            Instant::now() < deadline,
            "only {} requests answered within {DEADLINE:?}\n--- peer stderr:\n{}",
            acked_total.load(Ordering::SeqCst),
            peer.stderr()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    stop(peer);
    handles.into_iter().map(|h| h.join().expect("a client thread failed")).collect()
}

/// After a stop in the middle of traffic: every acked request is in the graph, and
/// requests are applied whole or not at all.
fn assert_acked_are_kept(graph: &Value, tallies: &[Tally], what: &str) {
    let totals = edge_totals(graph);
    assert_eq!(totals.len(), tallies.len(), "{what}: one edge per client: {graph}");
    for (t, tally) in tallies.iter().enumerate() {
        let edge = key(&format!("client-{t}"), "server");
        let found = totals.get(&edge).copied().unwrap_or_default();
        let requests = found.calls / CALLS_PER_REQUEST;
        assert_eq!(
            found.calls % CALLS_PER_REQUEST,
            0,
            "{what}: client-{t}: a request was applied in part: {found:?}"
        );
        assert_eq!(found, totals_of(requests), "{what}: client-{t}: figures of {requests} whole requests");
        assert!(
            tally.acked <= requests && requests <= tally.acked + tally.unanswered,
            "{what}: client-{t}: {requests} requests in the graph, {} acked, {} unanswered",
            tally.acked,
            tally.unanswered
        );
    }
}

#[test]
fn sigkill_in_the_middle_of_traffic_keeps_every_durable_ack() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let first = Peer::builder().data_dir(&data).spawn();
    let before = first.startup().clone();
    let tallies = load_until_stopped(first, 4, 40, Peer::sigkill);
    let second = Peer::builder().data_dir(&data).spawn();
    assert_same_identity_next_incarnation(&before, second.startup());
    assert_acked_are_kept(&second.graph("5m"), &tallies, "SIGKILL during durable ingest");
}

#[test]
fn sigterm_with_accepted_acks_flushes_everything() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    // A flush interval far longer than the test: only the graceful stop can flush.
    let accepted = || {
        Peer::builder()
            .data_dir(&data)
            .env("OBSERVATORY_INGEST__ACK", "accepted")
            .env("OBSERVATORY_STORE__FLUSH_INTERVAL", "1h")
    };
    let first = accepted().spawn();
    let before = first.startup().clone();
    let acked = send_concurrently(&first, 3, 10);
    let stderr = first.sigterm_and_wait();
    assert!(stderr.contains("SIGTERM"), "the peer says why it stops:\n{stderr}");

    let second = accepted().spawn();
    assert_same_identity_next_incarnation(&before, second.startup());
    assert_eq!(edge_totals(&second.graph("5m")), acked, "a graceful stop flushes every accepted event");

    // SIGTERM in the middle of traffic: requests in flight finish, and what was answered
    // is on disk after the stop.
    let before = second.startup().clone();
    let stop = |peer: Peer| {
        peer.sigterm_and_wait();
    };
    let tallies = load_until_stopped(second, 3, 30, stop);
    let third = Peer::builder().data_dir(&data).spawn();
    assert_same_identity_next_incarnation(&before, third.startup());
    // The first round's requests are in the graph too.
    let graph = third.graph("5m");
    let mut totals = edge_totals(&graph);
    for (edge, earlier) in &acked {
        let now = totals.get_mut(edge).expect("edge still there");
        assert!(now.calls >= earlier.calls, "{edge:?} lost calls: {graph}");
        now.calls -= earlier.calls;
        now.errors -= earlier.errors;
        now.bytes -= earlier.bytes;
    }
    let edges: Vec<Value> = totals
        .iter()
        .map(|((from, to), t)| json!({"from": from, "to": to, "calls": t.calls, "errors": t.errors, "bytes": t.bytes}))
        .collect();
    assert_acked_are_kept(&json!({ "edges": edges }), &tallies, "SIGTERM during accepted ingest");
}

#[test]
fn ctrl_c_stops_gracefully_too() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let first = Peer::builder()
        .data_dir(&data)
        .env("OBSERVATORY_INGEST__ACK", "accepted")
        .env("OBSERVATORY_STORE__FLUSH_INTERVAL", "1h")
        .spawn();
    let before = first.startup().clone();
    let acked = send_concurrently(&first, 2, 5);
    first.sigint_and_wait();
    let second = Peer::builder().data_dir(&data).spawn();
    assert_same_identity_next_incarnation(&before, second.startup());
    assert_eq!(edge_totals(&second.graph("5m")), acked, "Ctrl-C flushes every accepted event");
}

#[test]
fn an_http_address_in_use_is_refused_cleanly() {
    let running = Peer::start();
    let address = running.startup().http.clone();
    let dir = tempfile::tempdir().expect("temp dir");
    let second = Peer::builder()
        .data_dir(&dir.path().join("data"))
        .without_http_flag()
        .arg("--http")
        .arg(&address)
        .run_to_exit();
    second.assert_clean_failure("a second peer on an HTTP address in use", &[&address]);
    assert!(!second.stdout.contains("listening"), "the second peer must not claim to listen\n{second}");
    running.get("/healthz").expect_status(200, "the first peer still answers");
}

#[test]
fn a_data_dir_in_use_is_refused_cleanly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let running = Peer::builder().data_dir(&data).spawn();
    let second = Peer::builder().data_dir(&data).run_to_exit();
    second.assert_clean_failure("a second peer on a data dir in use", &[&data.display().to_string()]);
    assert!(!second.stdout.contains("listening"), "the second peer must not claim to listen\n{second}");

    // The running peer is unharmed.
    let answer = running.post_ndjson(&[event("still", "here", json!({}))]);
    assert_eq!(answer["accepted"], 1, "{answer}");
    let expected = BTreeMap::from([(key("still", "here"), EdgeTotals { calls: 1, errors: 0, bytes: 0 })]);
    assert_eq!(edge_totals(&running.graph("5m")), expected);
}

#[test]
fn a_data_dir_written_with_other_resolutions_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let first = Peer::builder().data_dir(&data).spawn();
    let acked = send_concurrently(&first, 1, 2);
    let before = first.startup().clone();
    first.sigterm_and_wait();

    let config = dir.path().join("other.yaml");
    std::fs::write(
        &config,
        "resolutions:\n  - { width: 10s, retention: 1h }\n  - { width: 1m, retention: 48h }\n",
    )
    .expect("writing config");
    let refused = Peer::builder().data_dir(&data).arg("--config").arg(&config).run_to_exit();
    refused.assert_clean_failure(
        "a data dir written with other resolutions",
        &[&data.display().to_string(), "resolutions"],
    );

    let again = Peer::builder().data_dir(&data).spawn();
    assert_eq!(again.startup().peer_id, before.peer_id);
    assert!(again.startup().incarnation > before.incarnation, "a later start takes a later incarnation");
    assert_eq!(edge_totals(&again.graph("5m")), acked, "a refused start changes nothing");
}

/// How long a graceful stop may take when a client stalls. Orchestrators kill after a
/// grace period (Kubernetes: 30 s, systemd: 90 s); with `ingest.ack: accepted` a stop that
/// is cut short by SIGKILL loses data, so a stalled client must not hold the stop.
const STOP_GRACE: Duration = Duration::from_secs(10);

#[test]
fn sigterm_stops_the_peer_even_while_a_client_stalls_mid_request() {
    use std::io::{BufRead, BufReader, Write};

    // The grace period is the peer's to set; a short one keeps the test quick. With no
    // minimum body rate the stalled body is not refused on its own.
    let peer = Peer::builder()
        .env("OBSERVATORY_HTTP__SHUTDOWN_GRACE", "1s")
        .env("OBSERVATORY_HTTP__BODY_MIN_RATE", "0")
        .spawn();
    let address = peer.startup().http.clone();
    let mut stalled = std::net::TcpStream::connect(&address).expect("connecting to the peer");
    stalled.set_read_timeout(Some(DEADLINE)).expect("read timeout");
    // `Expect: 100-continue` makes the peer say when its handler waits for the body, so
    // the request is known to be in flight before the signal.
    let head = "POST /api/v1/events HTTP/1.1\r\nHost: e2e\r\nContent-Type: application/x-ndjson\r\n\
                Content-Length: 1000\r\nExpect: 100-continue\r\n\r\n";
    stalled.write_all(head.as_bytes()).expect("sending the request head");
    let mut reader = BufReader::new(stalled.try_clone().expect("clone the stream"));
    let mut status_line = String::new();
    reader.read_line(&mut status_line).expect("reading 100 Continue");
    assert!(status_line.starts_with("HTTP/1.1 100"), "expected 100 Continue, got {status_line:?}");
    stalled.write_all(br#"{"from": "slow", "#).expect("sending part of the body");

    // The stalled request may fail; the peer must still stop, cleanly, soon after the grace.
    let stderr = peer.sigterm_and_wait_within(STOP_GRACE);
    assert!(stderr.contains("http.shutdown_grace"), "the peer says why it closed requests: {stderr}");
    assert!(stderr.contains("stopped cleanly"), "{stderr}");
    drop(stalled);
}
