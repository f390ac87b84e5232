//! The live picture in a real browser: Debian's Chromium, driven over WebDriver by its
//! chromedriver (both installed by `.ci/run`), against two real peers with real traffic.
//!
//! The page loads with no script error, draws every edge of the graph answer with its
//! labels, takes a new edge without a reload while every node already drawn keeps its
//! place, opens an edge's detail with its series and latency histogram, follows the window picker, and says
//! "partial" once a peer of the mesh is down. Screenshots go to `target/screenshots/`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use observatory_e2e::{Peer, event, wait_until};
use serde_json::{Value, json};

const PHASE: Duration = Duration::from_secs(60);

fn browser_available() -> bool {
    observatory_e2e::programs_available(
        &[("chromium", "--version"), ("chromedriver", "--version")],
        "the page in a browser",
        "apt-get install chromium chromium-driver",
    )
}

/// A running chromedriver, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let driver = Driver { child, url: format!("http://127.0.0.1:{port}") };
        let client = reqwest::blocking::Client::new();
        wait_until(PHASE, "chromedriver answers", || {
            let status: Value = client
                .get(format!("{}/status", driver.url))
                .send()
                .and_then(|r| r.json())
                .map_err(|e| e.to_string())?;
            if status["value"]["ready"] == true { Ok(()) } else { Err(status.to_string()) }
        });
        driver
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session, and the runtime its client runs on.
struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Client,
}

impl Browser {
    fn open(driver: &Driver) -> Browser {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1400,900"],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = runtime
            .block_on(ClientBuilder::new(connector).capabilities(capabilities).connect(&driver.url))
            .expect("a Chromium session");
        Browser { runtime, client }
    }

    fn goto(&self, url: &str) {
        self.runtime.block_on(self.client.goto(url)).unwrap_or_else(|e| panic!("opening {url}: {e}"));
    }

    /// Runs `script` (a function body) in the page and returns what it returns.
    fn run(&self, script: &str) -> Value {
        self.runtime.block_on(self.client.execute(script, vec![])).unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.runtime.block_on(self.client.screenshot()).expect("a screenshot");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
        std::fs::create_dir_all(&dir).expect("creating target/screenshots");
        let path = dir.join(name);
        std::fs::write(&path, png).expect("writing the screenshot");
        eprintln!("screenshot: {}", path.display());
        path
    }

    fn problems(&self) -> Vec<Value> {
        self.run("return window.__problems || ['the page set no problem list'];")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let client = self.client.clone();
        let _ = self.runtime.block_on(client.close());
    }
}

/// Calls on a small shop: a request chain, a database and a queue.
fn traffic(peer: &Peer, edges: &[(&str, &str, &str)]) {
    let events: Vec<Value> = edges
        .iter()
        .map(|(from, to, kind)| event(from, to, json!({ "kind": kind, "count": 40, "latency_ms": 12 })))
        .collect();
    let answer = peer.post_json_array(&events);
    assert_eq!(answer["accepted"], events.len(), "events accepted: {answer}");
}

/// The node positions the page drew, by name.
fn positions(browser: &Browser) -> BTreeMap<String, (f64, f64)> {
    let drawn = browser
        .run("const a = window.__observatory.answer; return a ? a.nodes.map(n => [n.name, n.x, n.y]) : [];");
    drawn
        .as_array()
        .expect("a list")
        .iter()
        .map(|n| (n[0].as_str().unwrap().to_string(), (n[1].as_f64().unwrap(), n[2].as_f64().unwrap())))
        .collect()
}

#[test]
fn the_page_draws_the_mesh_graph_live_in_chromium() {
    if !browser_available() {
        return;
    }
    let first = Peer::builder().fast_sync().spawn();
    let second = Peer::builder().fast_sync().bootstrap(first.mesh_addr()).spawn();
    wait_until(PHASE, "the two peers are in sync", || {
        let peers = first.peers();
        if peers["coverage"]["peers_in_sync"] == 1 { Ok(()) } else { Err(peers["coverage"].to_string()) }
    });
    let shop = [
        ("web", "checkout", "request"),
        ("checkout", "payments", "request"),
        ("checkout", "orders-db", "database"),
        ("checkout", "fulfilment", "messaging"),
    ];
    traffic(&second, &shop);
    wait_until(PHASE, "the first peer holds the second's events", || {
        let edges = first.graph("1m")["edges"].as_array().map_or(0, Vec::len);
        if edges == shop.len() { Ok(()) } else { Err(format!("{edges} edges")) }
    });

    let driver = Driver::start();
    let browser = Browser::open(&driver);
    browser.goto(&format!("{}/", first.url()));
    wait_until(PHASE, "the page draws the graph", || {
        let drawn = browser.run("return document.querySelectorAll('path.edge').length;");
        if drawn == shop.len() { Ok(()) } else { Err(format!("{drawn} edges drawn")) }
    });
    let graph = first.graph("1m");
    let mut expected: Vec<String> = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} → {} ({})",
                e["from"].as_str().unwrap(),
                e["to"].as_str().unwrap(),
                e["kind"].as_str().unwrap()
            )
        })
        .collect();
    expected.sort();
    let mut titles: Vec<String> = serde_json::from_value(
        browser.run("return [...document.querySelectorAll('path.edge > title')].map(t => t.textContent);"),
    )
    .unwrap();
    titles.sort();
    assert_eq!(titles, expected, "every edge of the graph answer is drawn");
    let labels: Vec<String> = serde_json::from_value(
        browser.run("return [...document.querySelectorAll('.node')].map(g => g.dataset.name);"),
    )
    .unwrap();
    let mut names: Vec<String> =
        graph["nodes"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap().into()).collect();
    names.sort();
    let mut labels = labels;
    labels.sort();
    assert_eq!(labels, names, "every node is drawn with its name");
    let edge_labels = browser
        .run("return [...document.querySelectorAll('text.label')].map(t => t.textContent).join(' | ');");
    assert!(
        edge_labels.as_str().unwrap().contains("p99"),
        "edges are labelled with rate and p99: {edge_labels}"
    );
    browser.screenshot("page-live.png");

    // A new edge arrives: drawn without a reload, and nothing drawn before moves.
    let before = positions(&browser);
    browser.run("window.__not_reloaded = true; return null;");
    traffic(&first, &[("payments", "ledger", "request")]);
    wait_until(PHASE, "the new edge appears", || {
        let drawn = positions(&browser);
        if drawn.contains_key("ledger") { Ok(drawn) } else { Err(format!("{:?}", drawn.keys())) }
    });
    assert_eq!(browser.run("return window.__not_reloaded === true;"), true, "the page was not reloaded");
    let after = positions(&browser);
    for (name, place) in &before {
        assert_eq!(after.get(name), Some(place), "{name} kept its place");
    }

    // The edge detail opens, with the figures and the series.
    browser.run(
        "const a = window.__observatory.answer; const i = a.edges.findIndex(e => e.from === 'web' && e.to === 'checkout');
         document.querySelector(`path.hitline[data-index=\"${i}\"]`).dispatchEvent(new MouseEvent('click', {bubbles: true}));
         return i;",
    );
    wait_until(PHASE, "the edge detail shows the series", || {
        let shown = browser.run(
            "const d = document.getElementById('detail'); return [d.hidden, (document.getElementById('detail-title') || {}).textContent, d.querySelectorAll('polyline').length, d.querySelectorAll('#latency-chart rect').length, d.textContent];",
        );
        if shown[0] == false && shown[1] == "web → checkout" && shown[2] == 2 && shown[3].as_u64() >= Some(1)
        {
            Ok(shown)
        } else {
            Err(shown.to_string())
        }
    });
    let detail = browser.run("return document.getElementById('detail').textContent;");
    assert!(detail.as_str().unwrap().contains("calls40"), "the detail shows the calls: {detail}");
    browser.screenshot("page-detail.png");

    // The window picker changes the answer.
    browser.run("const s = document.getElementById('window'); s.value = '5m'; s.dispatchEvent(new Event('change')); return null;");
    wait_until(PHASE, "the page shows the 5m window", || {
        let length = browser.run("const a = window.__observatory.answer; return a && a.window.length;");
        if length == "5m" { Ok(()) } else { Err(length.to_string()) }
    });

    // A peer goes down: the banner says the picture is partial.
    second.sigkill();
    let banner = wait_until(PHASE, "the banner says partial", || {
        let text = browser.run("return document.getElementById('coverage').textContent;");
        if text.as_str().unwrap_or("").starts_with("partial") { Ok(text) } else { Err(text.to_string()) }
    });
    eprintln!("banner: {banner}");
    browser.screenshot("page-partial.png");

    // The animation runs: frames over the last two seconds.
    std::thread::sleep(Duration::from_secs(2));
    let fps = browser.run(
        "const f = window.__frames; const end = f[f.length - 1]; const n = f.filter(t => t > end - 2000).length; return n / 2;",
    );
    eprintln!("animation: {fps} frames/s (small graph, headless Chromium)");
    assert!(fps.as_f64().unwrap_or(0.0) > 0.0, "the animation loop runs");
    assert_eq!(browser.problems(), Vec::<Value>::new(), "no script error on the page");
}
