//! A real Prometheus (Debian's package, which `.ci/run` installs) scrapes a peer's
//! `/metrics`, and PromQL through its HTTP API agrees with the peer's own graph.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use observatory_e2e::{DEADLINE, Peer, now_ms, wait_until};
use serde_json::{Value, json};

/// How long Prometheus may take to start and scrape the peer once.
const SCRAPE_DEADLINE: Duration = Duration::from_secs(60);

fn prometheus_available() -> bool {
    observatory_e2e::programs_available(
        &[("prometheus", "--version")],
        "that Prometheus reads /metrics",
        "apt-get install prometheus",
    )
}

/// A running Prometheus on a temporary storage dir, killed when dropped.
struct Prometheus {
    child: Child,
    url: String,
    client: reqwest::blocking::Client,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Prometheus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prometheus").field("pid", &self.child.id()).field("url", &self.url).finish()
    }
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (`IP:PORT`) every second.
    fn scraping(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("a temporary dir for Prometheus");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: observatory\n    scrape_interval: 1s\n    scrape_timeout: 1s\n    \
                 metrics_path: /metrics\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("writing prometheus.yml");
        // A port nobody listens on: bind one, then let it go for Prometheus to take.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("creating the log file");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the log file handle"))
            .stderr(log)
            .spawn()
            .expect("starting prometheus");
        let client = reqwest::blocking::Client::builder().timeout(DEADLINE).build().expect("an HTTP client");
        Prometheus { child, url: format!("http://127.0.0.1:{port}"), client, dir }
    }

    /// What Prometheus logged so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The result of an instant PromQL query (`data.result`), or why there is none.
    fn try_query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let response = self
            .client
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", promql)])
            .send()
            .map_err(|e| format!("no answer: {e}"))?;
        let status = response.status();
        let body: Value = response.json().map_err(|e| format!("not JSON ({status}): {e}"))?;
        if body["status"] != "success" {
            return Err(format!("{status}: {body}"));
        }
        body["data"]["result"].as_array().cloned().ok_or_else(|| format!("no result array: {body}"))
    }

    fn query(&self, promql: &str) -> Vec<Value> {
        self.try_query(promql)
            .unwrap_or_else(|e| panic!("query `{promql}` failed: {e}\n--- prometheus log:\n{}", self.log()))
    }

    /// Waits until Prometheus has scraped its target successfully (`up == 1`).
    fn wait_for_a_scrape(&mut self) {
        wait_until(SCRAPE_DEADLINE, "Prometheus scraped the peer", || {
            if let Some(status) = self.child.try_wait().expect("polling prometheus") {
                panic!("prometheus exited with {status}\n--- prometheus log:\n{}", self.log());
            }
            let up = self.try_query("up{job=\"observatory\"}")?;
            match up.first().and_then(|sample| sample["value"][1].as_str()) {
                Some("1") => Ok(()),
                other => Err(format!("up = {other:?}; targets: {}", self.targets())),
            }
        });
    }

    /// The scrape targets' health, for messages.
    fn targets(&self) -> String {
        let answer = self.client.get(format!("{}/api/v1/targets", self.url)).send();
        answer.and_then(|r| r.text()).unwrap_or_else(|e| format!("(no answer: {e})"))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- prometheus log:\n{}", self.log());
        }
    }
}

/// `(client, server, connection_type) -> value` of a `sum by (client, server,
/// connection_type)` query. Prometheus drops labels with an empty value, so a plain
/// request edge comes back without `connection_type`.
fn by_edge(result: &[Value]) -> BTreeMap<(String, String, String), u64> {
    result
        .iter()
        .map(|sample| {
            let label = |name: &str| sample["metric"][name].as_str().unwrap_or("").to_string();
            let value = sample["value"][1].as_str().unwrap_or_else(|| panic!("a value: {sample}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("a number: {sample}"));
            assert_eq!(value.fract(), 0.0, "a whole count: {sample}");
            ((label("client"), label("server"), label("connection_type")), value as u64)
        })
        .collect()
}

/// Tempo's `connection_type` for one of our edge kinds, `virtual_node` for a request edge
/// to or from a virtual node.
fn connection_type(kind: &str, virtual_side: Option<&str>) -> String {
    match kind {
        "request" if virtual_side.is_some() => "virtual_node",
        "request" => "",
        "messaging" => "messaging_system",
        "database" => "database",
        other => panic!("unknown edge kind {other}"),
    }
    .to_string()
}

/// `(client, server, connection_type) -> figure` of the graph's edges.
fn graph_by_edge(graph: &Value, figure: impl Fn(&Value) -> u64) -> BTreeMap<(String, String, String), u64> {
    graph["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("edges: {graph}"))
        .iter()
        .map(|edge| {
            let text = |key: &str| edge[key].as_str().unwrap_or_else(|| panic!("{key}: {edge}")).to_string();
            (
                (text("from"), text("to"), connection_type(&text("kind"), edge["virtual"].as_str())),
                figure(edge),
            )
        })
        .collect()
}

#[test]
fn prometheus_scrapes_the_service_graph_and_promql_agrees_with_our_graph() {
    if !prometheus_available() {
        return;
    }
    let started = Instant::now();
    let peer = Peer::start();
    let now = now_ms();
    let events = vec![
        json!({"from": "web", "to": "checkout", "ts": now, "latency_ms": 12.5, "count": 40}),
        json!({"from": "web", "to": "checkout", "ts": now, "latency_ms": 300, "error": true, "count": 3}),
        json!({"from": "checkout", "to": "payments", "ts": now - 1_000, "latency_ms": 80, "count": 17}),
        json!({"from": "checkout", "to": "payments", "ts": now, "error": true, "count": 2}),
        json!({"from": "checkout", "to": "orders", "ts": now, "kind": "messaging", "latency_ms": 4, "count": 9}),
        json!({"from": "checkout", "to": "orders", "ts": now, "kind": "messaging", "error": true}),
        json!({"from": "payments", "to": "ledger-db", "ts": now, "kind": "database", "latency_ms": 1.5, "count": 6}),
        json!({"from": "lb \"edge\"", "to": "web", "ts": now, "count": 43}),
    ];
    let answer = peer.post_json_array(&events);
    assert_eq!((answer["accepted"].as_u64(), answer["rejected"].as_u64()), (Some(8), Some(0)), "{answer}");
    let graph = peer.graph("1h");
    let calls = graph_by_edge(&graph, |e| e["calls"].as_u64().expect("calls"));
    let errors = graph_by_edge(&graph, |e| e["errors"].as_u64().expect("errors"));
    let samples = graph_by_edge(&graph, |e| e["latency_ms"]["samples"].as_u64().unwrap_or(0));
    assert_eq!(calls.len(), 5, "{graph}");
    assert_eq!(calls.values().sum::<u64>(), 40 + 3 + 17 + 2 + 9 + 1 + 6 + 43);

    let mut prometheus = Prometheus::scraping(&peer.startup().http);
    prometheus.wait_for_a_scrape();
    let sum_by = |metric: &str| {
        by_edge(&prometheus.query(&format!("sum by (client, server, connection_type) ({metric})")))
    };
    assert_eq!(sum_by("traces_service_graph_request_total"), calls, "calls per edge");
    assert_eq!(sum_by("traces_service_graph_request_failed_total"), errors, "errors per edge");
    assert_eq!(
        sum_by("traces_service_graph_request_server_seconds_count"),
        samples,
        "latency samples per edge"
    );
    let all_buckets = sum_by("traces_service_graph_request_server_seconds_bucket{le=\"+Inf\"}");
    assert_eq!(all_buckets, samples, "the +Inf bucket holds every sample");

    // The 300 ms calls are the only ones of web -> checkout above 250 ms.
    let quick = prometheus.query(
        "traces_service_graph_request_server_seconds_bucket{client=\"web\",server=\"checkout\",le=\"0.25\"}",
    );
    assert_eq!(by_edge(&quick).into_values().collect::<Vec<_>>(), [40]);

    let ingested = prometheus.query("observatory_events_ingested_total");
    assert_eq!(ingested.len(), 1, "{ingested:?}");
    assert_eq!(ingested[0]["value"][1], "8");
    let peers = prometheus.query("observatory_peers_known");
    assert_eq!(peers.len(), 1, "the mesh's metrics are there: {peers:?}");
    assert_eq!(peers[0]["value"][1], "0", "a lone peer knows no other");
    drop(prometheus);
    eprintln!("the Prometheus test took {:?}", started.elapsed());
}
