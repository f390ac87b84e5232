//! `observatory demo` end to end: three real peers, the shop's seven services as real
//! processes instrumented with observatory-instrument, reporting to different peers.
//! Every peer's graph must equal, edge by edge, what the services say they made.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use observatory_e2e::{DEADLINE, observatory_command, shop_bin};
use serde_json::Value;

type Totals = BTreeMap<(String, String, String), (u64, u64)>;

fn totals_of(edges: &[Value]) -> Totals {
    let mut totals = Totals::new();
    for edge in edges {
        let text = |k: &str| edge[k].as_str().unwrap_or_else(|| panic!("no {k} in {edge}")).to_string();
        let entry = totals.entry((text("from"), text("to"), text("kind"))).or_default();
        entry.0 += edge["calls"].as_u64().unwrap();
        entry.1 += edge["errors"].as_u64().unwrap();
    }
    totals
}

#[test]
fn the_demo_shop_on_three_peers_gives_the_exact_graph() {
    let shop = shop_bin();
    let mut demo = observatory_command()
        .args(["demo", "--http-port", "0", "--rate", "50", "--requests", "150", "--drop-context", "cart=0.3"])
        .arg("--shop")
        .arg(&shop)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting observatory demo");
    let stdout = demo.stdout.take().unwrap();
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
    let peers: Vec<String> =
        started["peers"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
    assert_eq!(peers.len(), 3);
    let made = next("made");
    let made = totals_of(made["edges"].as_array().unwrap());

    // What the shop made has the shape it is built to have, so the comparison below
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

    let client = reqwest::blocking::Client::new();
    for peer in &peers {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let graph: Value =
                client.get(format!("{peer}/api/v1/graph?window=15m")).send().unwrap().json().unwrap();
            let seen = totals_of(graph["edges"].as_array().unwrap());
            if seen == made {
                break;
            }
            assert!(Instant::now() < deadline, "{peer} shows\n{seen:?}\nbut the shop made\n{made:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    let pid = demo.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + DEADLINE * 2;
    let status = loop {
        if let Some(status) = demo.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the demo did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "the demo exited with {status}");
    reader.join().unwrap();
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
