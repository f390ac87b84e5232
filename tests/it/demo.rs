//! `observatory demo` end to end: three real peers, the shop's seven services as real
//! processes instrumented with observatory-instrument, reporting to different peers.
//! Every peer's graph must equal, edge by edge and flow by flow, what the services say
//! they made, and the propagation verdicts must flag the service that loses context, and
//! only it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use observatory_e2e::{DEADLINE, observatory_command, shop_bin};
use serde_json::Value;

/// `(from, to, kind) -> (calls, errors)`.
type Totals = BTreeMap<(String, String, String), (u64, u64)>;

/// The totals of `edges`, of flow `flow` only when it is given.
fn totals_of(edges: &[Value], flow: Option<&str>) -> Totals {
    let mut totals = Totals::new();
    for edge in edges {
        if flow.is_some() && edge["flow"].as_str() != flow {
            continue;
        }
        let text = |k: &str| edge[k].as_str().unwrap_or_else(|| panic!("no {k} in {edge}")).to_string();
        let entry = totals.entry((text("from"), text("to"), text("kind"))).or_default();
        entry.0 += edge["calls"].as_u64().unwrap();
        entry.1 += edge["errors"].as_u64().unwrap();
    }
    totals
}

struct Demo {
    child: Child,
    peers: Vec<String>,
    made: Vec<Value>,
    reader: std::thread::JoinHandle<()>,
}

/// Runs the demo to the end of its load (`requests` user requests).
fn run_demo(requests: u64, drop_context: Option<&str>) -> Demo {
    let mut command = observatory_command();
    command.args(["demo", "--http-port", "0", "--rate", "50", "--requests", &requests.to_string()]);
    if let Some(drop) = drop_context {
        command.args(["--drop-context", drop]);
    }
    let mut child = command
        .arg("--shop")
        .arg(shop_bin())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting observatory demo");
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel::<Value>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(value) = serde_json::from_str::<Value>(&line) {
                let _ = lines_tx.send(value);
            }
        }
    });
    let next = |event: &str| -> Value {
        let value =
            lines.recv_timeout(Duration::from_secs(120)).unwrap_or_else(|e| panic!("no {event} line: {e}"));
        assert_eq!(value["event"], event, "{value}");
        value
    };
    let started = next("started");
    let peers =
        started["peers"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
    let made = next("made")["edges"].as_array().unwrap().clone();
    Demo { child, peers, made, reader }
}

impl Demo {
    fn get(&self, peer: &str, path: &str) -> Value {
        reqwest::blocking::get(format!("{peer}{path}")).unwrap().json().unwrap()
    }

    /// Waits until every peer's graph equals what the shop made, as a whole and per flow.
    fn assert_exact_graph(&self) {
        let made = totals_of(&self.made, None);
        let flows: BTreeSet<&str> = self.made.iter().filter_map(|e| e["flow"].as_str()).collect();
        for peer in &self.peers {
            let deadline = Instant::now() + DEADLINE;
            loop {
                let graph = self.get(peer, "/api/v1/graph?window=15m");
                let seen = totals_of(graph["edges"].as_array().unwrap(), None);
                if seen == made {
                    let known: BTreeSet<&str> =
                        graph["flows"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
                    assert_eq!(known, flows, "{peer} knows the flows the shop used");
                    break;
                }
                assert!(Instant::now() < deadline, "{peer} shows\n{seen:?}\nbut the shop made\n{made:?}");
                std::thread::sleep(Duration::from_millis(200));
            }
            for flow in &flows {
                let graph = self.get(peer, &format!("/api/v1/graph?window=15m&flow={flow}"));
                assert_eq!(graph["flow"], *flow);
                let seen = totals_of(graph["edges"].as_array().unwrap(), None);
                assert_eq!(seen, totals_of(&self.made, Some(flow)), "{peer}, flow {flow}");
            }
        }
    }

    /// The verdicts of a peer: node -> verdict.
    fn verdicts(&self, peer: &str) -> BTreeMap<String, String> {
        let answer = self.get(peer, "/api/v1/propagation?window=15m");
        answer["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| (n["node"].as_str().unwrap().to_string(), n["verdict"].as_str().unwrap().to_string()))
            .collect()
    }

    fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let deadline = Instant::now() + DEADLINE * 2;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "the demo did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "the demo exited with {status}");
        self.reader.join().unwrap();
    }
}

#[test]
fn the_demo_shop_on_three_peers_gives_the_exact_graph_and_flags_the_service_that_drops_context() {
    let demo = run_demo(150, Some("cart=0.3"));
    let made = totals_of(&demo.made, None);
    // What the shop made has the shape it is built to have, so the comparisons below
    // cannot pass on an empty or partial shop.
    let calls =
        |from: &str, to: &str, kind: &str| made.get(&(from.into(), to.into(), kind.into())).map(|t| t.0);
    assert_eq!(calls("users", "web", "request"), Some(150), "{made:?}");
    assert_eq!(calls("web", "catalog", "request"), Some(150), "browse and buy both read the catalog");
    let buys = calls("web", "cart", "request").expect("some users bought");
    assert_eq!(calls("cart", "catalog", "request"), Some(buys), "cart fans in to catalog, context or not");
    let orders = calls("web", "queue", "request").expect("orders were published");
    assert_eq!(calls("web", "shipping", "messaging"), Some(orders), "shipping took every order");
    assert!(calls("shipping", "queue", "request").is_some());
    assert!(
        demo.made.iter().any(|e| e["from"] == "cart" && e["flow"].is_null()),
        "cart lost the context (and so the flow) of some calls: {:?}",
        demo.made
    );

    demo.assert_exact_graph();
    for peer in &demo.peers {
        let verdicts = demo.verdicts(peer);
        // `unknown` (fewer than 20 marked calls) is no flag; with 150 requests every node has more.
        let flagged: Vec<(&str, &str)> = verdicts
            .iter()
            .filter(|(_, v)| v.starts_with("drops"))
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(flagged, [("cart", "drops context outbound")], "{peer}: {verdicts:?}");
        assert_eq!(
            verdicts.get("users").map(String::as_str),
            Some("ok"),
            "the front end, by its outbound calls"
        );
    }
    demo.stop();
}

#[test]
fn with_context_propagated_everywhere_nothing_is_flagged() {
    let demo = run_demo(150, None);
    demo.assert_exact_graph();
    let verdicts = demo.verdicts(&demo.peers[2]);
    assert!(verdicts.values().all(|v| !v.starts_with("drops")), "{verdicts:?}");
    assert!(verdicts.values().filter(|v| *v == "ok").count() >= 6, "{verdicts:?}");
    assert!(verdicts.contains_key("cart") && verdicts.contains_key("shipping"), "{verdicts:?}");
    demo.stop();
}

#[test]
fn the_demo_without_the_shop_binary_says_how_to_build_it() {
    let output = observatory_command()
        .args(["demo", "--shop", "/nonexistent/shop", "--http-port", "0"])
        .output()
        .expect("running observatory demo");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cargo build --release -p observatory-examples --bin shop"), "{stderr}");
}
