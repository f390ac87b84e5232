//! One peer: ingest in every format, exact graph totals, per-event and per-request
//! errors, and the `send` and `graph` subcommands.

use std::collections::{BTreeMap, BTreeSet};

use observatory_e2e::{
    EdgeTotals, Peer, cbor_events, edge_totals, error_fields, event, find_edge, key, ndjson, node_names,
    now_ms, observatory_command, rfc3339, run_observatory, run_to_end,
};
use serde_json::{Value, json};

/// A batch across three edges: timestamps as epoch ms, RFC 3339 and absent; errors;
/// latencies; bytes; counts above 1.
fn known_batch() -> Vec<Value> {
    let now = now_ms();
    vec![
        json!({"from": "checkout", "to": "payments", "ts": now, "latency_ms": 12.5, "bytes": 512}),
        json!({"from": "checkout", "to": "payments", "ts": rfc3339(now), "latency_ms": 250,
               "error": true, "bytes": 100, "count": 4}),
        json!({"from": "checkout", "to": "payments", "count": 2, "error": false}),
        json!({"from": "checkout", "to": "inventory", "ts": now - 1_000, "latency_ms": 3,
               "bytes": 1000, "count": 10}),
        json!({"from": "checkout", "to": "inventory", "ts": now, "error": true}),
        json!({"from": "web", "to": "checkout", "ts": rfc3339(now - 2_000), "bytes": 2048, "count": 5}),
    ]
}

/// What the graph must say after [`known_batch`]. `bytes` is the total over `count`.
fn known_totals() -> BTreeMap<(String, String), EdgeTotals> {
    BTreeMap::from([
        (key("checkout", "payments"), EdgeTotals { calls: 7, errors: 4, bytes: 612 }),
        (key("checkout", "inventory"), EdgeTotals { calls: 11, errors: 1, bytes: 1000 }),
        (key("web", "checkout"), EdgeTotals { calls: 5, errors: 0, bytes: 2048 }),
    ])
}

fn assert_all_accepted(answer: &Value, n: u64, what: &str) {
    assert_eq!(answer["accepted"], n, "{what}: accepted; answer: {answer}");
    assert_eq!(answer["rejected"], 0, "{what}: rejected; answer: {answer}");
    assert_eq!(answer["errors"], json!([]), "{what}: errors; answer: {answer}");
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn assert_close(actual: &Value, expected: f64, what: &str) {
    let actual = actual.as_f64().unwrap_or_else(|| panic!("{what}: not a number: {actual}"));
    // Histograms keep 2 significant digits: within 1%.
    assert!((actual - expected).abs() <= expected * 0.01, "{what}: {actual}, expected about {expected}");
}

#[test]
fn graph_has_exact_totals_for_events_in_every_format() {
    let peer = Peer::start();
    let batch = known_batch();
    assert_all_accepted(&peer.post_ndjson(&batch[..3]), 3, "NDJSON");
    assert_all_accepted(&peer.post_json_array(&batch[3..5]), 2, "JSON array");
    let cbor = peer.post_events("application/cbor", cbor_events(&batch[5..])).expect_status(200, "CBOR");
    assert_all_accepted(&cbor, 1, "CBOR");

    let graph = peer.graph("5m");
    assert_eq!(edge_totals(&graph), known_totals(), "edges of {graph}");
    assert_eq!(node_names(&graph), names(&["checkout", "inventory", "payments", "web"]), "nodes of {graph}");
    let nodes: BTreeMap<String, (Value, Value)> = graph["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (n["name"].as_str().expect("name").to_string(), (n["calls_in"].clone(), n["calls_out"].clone()))
        })
        .collect();
    assert_eq!(nodes["checkout"], (json!(5), json!(18)), "checkout calls in/out: {graph}");
    assert_eq!(nodes["payments"], (json!(7), json!(0)), "payments calls in/out: {graph}");
    assert_eq!(nodes["web"], (json!(0), json!(5)), "web calls in/out: {graph}");

    let payments = find_edge(&graph, "checkout", "payments");
    assert_close(&payments["error_ratio"], 4.0 / 7.0, "checkout -> payments error_ratio");
    assert_eq!(payments["latency_ms"]["samples"], 5, "a latency counts once per call: {payments}");
    assert_close(&payments["latency_ms"]["max"], 250.0, "checkout -> payments max latency");
    assert_close(&payments["latency_ms"]["p50"], 250.0, "checkout -> payments p50 latency");
    let inventory = find_edge(&graph, "checkout", "inventory");
    assert_eq!(inventory["latency_ms"]["samples"], 10, "{inventory}");
    assert_close(&inventory["latency_ms"]["max"], 3.0, "checkout -> inventory max latency");
    assert_eq!(
        find_edge(&graph, "web", "checkout")["latency_ms"],
        Value::Null,
        "no latency was reported: {graph}"
    );

    let origins = graph["coverage"]["origins"].as_array().unwrap_or_else(|| panic!("no coverage: {graph}"));
    let startup = peer.startup();
    assert_eq!(origins.len(), 1, "a fresh peer has one origin: {graph}");
    assert_eq!(origins[0]["peer"], startup.peer_id.as_str(), "{graph}");
    assert_eq!(origins[0]["incarnation"], startup.incarnation, "{graph}");
    assert_eq!(origins[0]["local"], true, "{graph}");
    assert!(origins[0]["seq"].as_u64().is_some_and(|s| s >= 1), "seq after three batches: {graph}");

    // The same events again double every figure: nothing is deduplicated or lost.
    assert_all_accepted(&peer.post_ndjson(&known_batch()), 6, "NDJSON again");
    let doubled: BTreeMap<_, _> = known_totals()
        .into_iter()
        .map(|(k, t)| (k, EdgeTotals { calls: 2 * t.calls, errors: 2 * t.errors, bytes: 2 * t.bytes }))
        .collect();
    assert_eq!(edge_totals(&peer.graph("5m")), doubled);

    let status = peer.status();
    assert_eq!(status["ingest"]["events_accepted"], 12, "status: {status}");
    assert_eq!(status["ingest"]["requests"], 4, "status: {status}");
    assert_eq!(status["edges"], 3, "status: {status}");
    assert_eq!(status["nodes"], 4, "status: {status}");
}

#[test]
fn bad_events_are_rejected_by_index_and_field_and_good_ones_kept() {
    let peer = Peer::start();
    let now = now_ms();
    let hour = 3_600_000;
    let events = vec![
        event("a", "b", json!({"count": 2})),
        event("a", "", json!({})),
        event("a", "b", json!({"bytes": 10})),
        event("a", "b", json!({"colour": "red"})),
        event("a", "b", json!({"latency_ms": "12"})),
        json!({"from": "a", "to": "b", "ts": now - hour}),
        event("a", "c", json!({"error": true})),
        json!({"from": "a", "to": "b", "ts": rfc3339(now + hour)}),
    ];
    let expected_errors = vec![
        (1, "to".to_string()),
        (3, "colour".into()),
        (4, "latency_ms".into()),
        (5, "ts".into()),
        (7, "ts".into()),
    ];
    for (format, answer) in
        [("NDJSON", peer.post_ndjson(&events)), ("JSON array", peer.post_json_array(&events))]
    {
        assert_eq!(answer["accepted"], 3, "{format}: {answer}");
        assert_eq!(answer["rejected"], 5, "{format}: {answer}");
        assert_eq!(answer["errors_truncated"], false, "{format}: {answer}");
        assert_eq!(error_fields(&answer), expected_errors, "{format}: {answer}");
        let reasons: Vec<&str> = answer["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .map(|e| e["reason"].as_str().unwrap_or(""))
            .collect();
        assert!(reasons.iter().all(|r| !r.trim().is_empty()), "{format}: every error says why: {answer}");
        assert!(reasons[1].contains("colour"), "{format}: the unknown field is named: {answer}");
        assert!(reasons[3].contains("max_lateness"), "{format}: an old event names the limit: {answer}");
        assert!(reasons[4].contains("max_clock_skew"), "{format}: a future event names the limit: {answer}");
    }

    let graph = peer.graph("5m");
    let expected = BTreeMap::from([
        (key("a", "b"), EdgeTotals { calls: 6, errors: 0, bytes: 20 }),
        (key("a", "c"), EdgeTotals { calls: 2, errors: 2, bytes: 0 }),
    ]);
    assert_eq!(edge_totals(&graph), expected, "only the good events count: {graph}");
    assert_eq!(node_names(&graph), names(&["a", "b", "c"]), "{graph}");

    let rejected = &peer.status()["ingest"]["events_rejected"];
    let total: u64 = rejected.as_object().expect("events_rejected").values().filter_map(Value::as_u64).sum();
    assert_eq!(total, 10, "status counts every rejected event: {rejected}");
}

#[test]
fn malformed_bodies_are_refused_whole_with_a_location() {
    let peer = Peer::start();
    let good = ndjson(&[event("x", "y", json!({}))]);
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("application/x-ndjson", format!("{good}{{\"from\": \"x\", \"to\":\n").into_bytes(), "line 2"),
        ("application/x-ndjson", format!("{good}[1, 2]\n").into_bytes(), "line 2"),
        ("application/json", format!("[{}, {{\"from\": ]", good.trim()).into_bytes(), "line 1"),
        ("application/cbor", vec![0x82, 0xa1, 0x64, b'f', b'r'], ""),
    ];
    for (content_type, body, location) in cases {
        let text = String::from_utf8_lossy(&body).into_owned();
        let answer =
            peer.post_events(content_type, body).expect_status(400, &format!("{content_type} {text:?}"));
        assert_eq!(answer["error"]["code"], "malformed_body", "{content_type} {text:?}: {answer}");
        let found = answer["error"]["location"].as_str().unwrap_or_else(|| panic!("no location: {answer}"));
        assert!(
            found.contains(location),
            "{content_type} {text:?}: location {found:?}, expected {location:?}"
        );
        assert!(!found.is_empty(), "{content_type} {text:?}: empty location");
    }
    let graph = peer.graph("5m");
    assert_eq!(edge_totals(&graph), BTreeMap::new(), "a refused body applies nothing: {graph}");
}

#[test]
fn limits_and_content_types_are_enforced() {
    let peer = Peer::builder()
        .env("OBSERVATORY_LIMITS__BODY_BYTES_MAX", "1000")
        .env("OBSERVATORY_LIMITS__EVENTS_PER_REQUEST_MAX", "5")
        .spawn();
    let big: Vec<Value> = (0..30).map(|i| event("big", &format!("sink-{i}"), json!({}))).collect();
    let body = ndjson(&big);
    assert!(body.len() > 1000, "the test body must exceed the limit");
    let answer = peer
        .post_events("application/x-ndjson", body.clone())
        .expect_status(413, "a body over body_bytes_max");
    assert_eq!(answer["error"]["code"], "too_large", "{answer}");
    // Without a Content-Length (a chunked body) the limit holds too. Sent whole in one
    // write, so that the peer's early answer cannot race the end of the body.
    let mut chunked = format!(
        "POST /api/v1/events HTTP/1.1\r\nHost: e2e\r\nContent-Type: application/x-ndjson\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n",
        body.len()
    );
    chunked.push_str(&body);
    chunked.push_str("\r\n0\r\n\r\n");
    let answer = peer.raw_request(chunked.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 413"), "a chunked body over body_bytes_max: {answer}");
    assert!(answer.contains("too_large"), "a chunked body over body_bytes_max: {answer}");

    let six: Vec<Value> = (0..6).map(|_| event("many", "sink", json!({}))).collect();
    let answer = peer.post_ndjson_raw(&six).expect_status(413, "more events than events_per_request_max");
    assert!(
        answer["error"]["message"].as_str().is_some_and(|m| m.contains("events_per_request_max")),
        "{answer}"
    );

    let answer = peer.post_events("text/csv", "from,to\na,b\n").expect_status(415, "an unknown content type");
    assert_eq!(answer["error"]["code"], "unsupported_media_type", "{answer}");

    // Under the limits, the same peer takes events.
    let small = [event("small", "sink", json!({"count": 3})), event("small", "sink", json!({}))];
    assert_all_accepted(&peer.post_ndjson(&small), 2, "a small body");
    let graph = peer.graph("5m");
    let expected = BTreeMap::from([(key("small", "sink"), EdgeTotals { calls: 4, errors: 0, bytes: 0 })]);
    assert_eq!(edge_totals(&graph), expected, "refused requests apply nothing: {graph}");

    let refused = &peer.status()["ingest"]["requests_rejected"];
    assert_eq!(refused["too_large"], 3, "status counts refused requests: {refused}");
    assert_eq!(refused["unsupported_media_type"], 1, "status counts refused requests: {refused}");
}

#[test]
fn health_status_and_query_errors() {
    let peer = Peer::start();
    let health = peer.get("/healthz").expect_status(200, "/healthz");
    assert_eq!(health.as_str().map(str::trim), Some("ok"), "/healthz body: {health}");

    let status = peer.status();
    let startup = peer.startup();
    assert_eq!(status["peer_id"], startup.peer_id.as_str(), "{status}");
    assert_eq!(status["incarnation"], startup.incarnation, "{status}");
    assert_eq!(startup.incarnation, 1, "a fresh data dir starts at incarnation 1");
    assert_eq!(status["edges"], 0, "{status}");

    let answer = peer.get("/api/v1/graph?window=banana").expect_status(400, "a bad window");
    assert_eq!(answer["error"]["param"], "window", "{answer}");
    let answer = peer.get("/api/v1/graph?windw=5m").expect_status(400, "an unknown query parameter");
    assert!(answer.to_string().contains("windw"), "the unknown parameter is named: {answer}");
    peer.get("/api/v1/nothing-here").expect_status(404, "an unknown route");
    let graph = peer.graph("5m");
    assert_eq!(graph["edges"], json!([]), "{graph}");
    assert_eq!(graph["window"]["length"], "5m", "{graph}");
}

/// The data rows of `observatory graph`'s table: `from -> to` with calls and errors.
fn table_rows(table: &str) -> BTreeMap<(String, String), (u64, u64)> {
    table
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            if cells.len() < 6 || cells[1] != "->" {
                return None;
            }
            let number =
                |i: usize| cells[i].parse::<u64>().unwrap_or_else(|_| panic!("bad table row: {line}"));
            Some((key(cells[0], cells[2]), (number(4), number(5))))
        })
        .collect()
}

#[test]
fn send_and_graph_subcommands() {
    let peer = Peer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let url = peer.url();

    let good = dir.path().join("good.ndjson");
    std::fs::write(&good, ndjson(&known_batch())).expect("writing events");
    let sent = run_observatory(&["send".as_ref(), "--peer".as_ref(), url.as_ref(), good.as_os_str()], &[]);
    sent.assert_success("send of good events");
    let answer: Value =
        serde_json::from_str(&sent.stdout).unwrap_or_else(|e| panic!("send prints JSON ({e})\n{sent}"));
    assert_eq!((answer["accepted"].clone(), answer["rejected"].clone()), (json!(6), json!(0)), "{sent}");

    // A JSON array with one bad event: the good ones go in, and send exits 1.
    let mixed = dir.path().join("mixed.json");
    let events = [event("cli", "db", json!({"count": 3})), event("cli", "db", json!({"latency_ms": -1}))];
    std::fs::write(&mixed, Value::Array(events.to_vec()).to_string()).expect("writing events");
    let sent = run_observatory(&["send".as_ref(), "--peer".as_ref(), url.as_ref(), mixed.as_os_str()], &[]);
    assert_eq!(sent.status.code(), Some(1), "send exits 1 when an event is rejected\n{sent}");
    let answer: Value =
        serde_json::from_str(&sent.stdout).unwrap_or_else(|e| panic!("send prints JSON ({e})\n{sent}"));
    assert_eq!(error_fields(&answer), vec![(1, "latency_ms".to_string())], "{sent}");

    // From stdin, and more lines than `send` puts in one request (5,000): the index of
    // a rejected event counts from the start of the input, not of its request.
    let mut many: Vec<Value> = (0..5_003).map(|_| event("stdin", "db", json!({}))).collect();
    many[5_001] = event("stdin", "", json!({}));
    let mut command = observatory_command();
    command.args(["send", "--peer", &url, "-"]);
    let sent = run_to_end(command, Some(ndjson(&many).as_bytes()));
    assert_eq!(sent.status.code(), Some(1), "send exits 1 when an event is rejected\n{sent}");
    let answer: Value =
        serde_json::from_str(&sent.stdout).unwrap_or_else(|e| panic!("send prints JSON ({e})\n{sent}"));
    assert_eq!(answer["accepted"], 5_002, "{answer}");
    assert_eq!(error_fields(&answer), vec![(5_001, "to".to_string())], "{answer}");

    let mut expected = known_totals();
    expected.insert(key("cli", "db"), EdgeTotals { calls: 3, errors: 0, bytes: 0 });
    expected.insert(key("stdin", "db"), EdgeTotals { calls: 5_002, errors: 0, bytes: 0 });
    assert_eq!(edge_totals(&peer.graph("5m")), expected);

    let status = run_observatory(&["status", "--peer", &url], &[]);
    status.assert_success("status");
    let status: Value =
        serde_json::from_str(&status.stdout).unwrap_or_else(|e| panic!("status prints JSON ({e})"));
    assert_eq!(status["peer_id"], peer.startup().peer_id.as_str(), "{status}");

    let shown = run_observatory(&["graph", "--peer", &url], &[]);
    shown.assert_success("graph");
    let rows = table_rows(&shown.stdout);
    let expected_rows: BTreeMap<_, _> =
        expected.iter().map(|(k, t)| (k.clone(), (t.calls, t.errors))).collect();
    assert_eq!(rows, expected_rows, "rows of the graph table\n{shown}");
    assert!(shown.stdout.contains("5 edges"), "the table says how many edges\n{shown}");

    let json_graph = run_observatory(&["graph", "--peer", &url, "--window", "1h", "--format", "json"], &[]);
    json_graph.assert_success("graph --format json");
    let graph: Value = serde_json::from_str(&json_graph.stdout)
        .unwrap_or_else(|e| panic!("graph json is JSON ({e})\n{json_graph}"));
    assert_eq!(edge_totals(&graph), expected, "graph --format json --window 1h");

    let dot = run_observatory(&["graph", "--peer", &url, "--format", "dot"], &[]);
    dot.assert_success("graph --format dot");
    assert!(dot.stdout.starts_with("digraph"), "{dot}");
    assert!(dot.stdout.contains("\"checkout\" -> \"payments\""), "{dot}");
    render_with_graphviz(&dot.stdout);

    let mermaid = run_observatory(&["graph", "--peer", &url, "--format", "mermaid"], &[]);
    mermaid.assert_success("graph --format mermaid");
    let lines: Vec<&str> = mermaid.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"flowchart LR"), "{mermaid}");
    let id_of = |name: &str| {
        let line = lines
            .iter()
            .find(|l| l.ends_with(&format!("[\"{name}\"]")))
            .unwrap_or_else(|| panic!("node {name} is declared\n{mermaid}"));
        line.trim().split('[').next().expect("an id").to_string()
    };
    let arrow = format!("{} -->|", id_of("checkout"));
    let to = format!("| {}", id_of("payments"));
    assert!(
        lines.iter().any(|l| l.trim().starts_with(&arrow) && l.ends_with(&to)),
        "checkout -> payments is drawn\n{mermaid}"
    );
    assert_eq!(lines.iter().filter(|l| l.contains("-->|")).count(), expected.len(), "{mermaid}");

    // SVG from the peer's own layout: no Graphviz.
    let svg = run_observatory(&["graph", "--peer", &url, "--format", "svg"], &[]);
    svg.assert_success("graph --format svg");
    assert!(svg.stdout.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""), "{svg}");
    assert_eq!(svg.stdout.matches("<path class=\"edge").count(), expected.len(), "one path per edge\n{svg}");
    assert!(svg.stdout.contains("<title>checkout → payments (request)</title>"), "{svg}");
    assert!(svg.stdout.trim_end().ends_with("</svg>"));
}

/// Renders dot text with Graphviz's `dot`, which `.ci/run` installs.
fn render_with_graphviz(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) => {
            let reason = format!(
                "Graphviz `dot` is not installed ({error}); cannot check that the dot output renders"
            );
            assert!(
                std::env::var_os("OBSERVATORY_REQUIRE_ALL").is_none(),
                "OBSERVATORY_REQUIRE_ALL is set: {reason}"
            );
            eprintln!("skipped: {reason}");
            return;
        }
    };
    child.stdin.take().expect("piped stdin").write_all(text.as_bytes()).expect("writing to dot");
    let output = child.wait_with_output().expect("waiting for dot");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "dot refused our output: {stderr}\n{text}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("<svg"), "dot rendered no SVG");
}

#[test]
fn client_subcommands_fail_cleanly_without_a_peer() {
    // A port nobody listens on: bind one, then let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let url = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("events.ndjson");
    std::fs::write(&file, ndjson(&[event("a", "b", json!({}))])).expect("writing events");
    for args in [
        vec!["graph".to_string(), "--peer".into(), url.clone()],
        vec!["send".to_string(), "--peer".into(), url.clone(), file.display().to_string()],
        vec!["status".to_string(), "--peer".into(), url.clone()],
    ] {
        let finished = run_observatory(&args, &[]);
        finished.assert_clean_failure(&format!("observatory {}", args.join(" ")), &["cannot reach"]);
    }
    let missing = dir.path().join("missing.ndjson");
    let finished =
        run_observatory(&["send".as_ref(), "--peer".as_ref(), url.as_ref(), missing.as_os_str()], &[]);
    finished.assert_clean_failure("send of a missing file", &["missing.ndjson"]);
}
