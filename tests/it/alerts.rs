//! Objectives and alerts with a real Alertmanager (Debian's `prometheus-alertmanager`,
//! which `.ci/run` installs) on loopback, and three real peers.
//!
//! Slow calls on one edge break a latency objective: Alertmanager shows exactly one
//! alert with the expected labels (three peers compute it, one sends it). Killing the
//! sending peer moves the sending to another peer, and Alertmanager still holds one
//! alert with the same start. Recovery resolves it. A flow that stops fires its
//! not-flow alert.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use observatory_e2e::{Peer, event, wait_until};
use serde_json::{Value, json};

/// How long a phase may take: evaluation every 2 s on 10 s buckets, so an alert changes
/// within about 15 s of its cause; the rest is slack for a loaded machine.
const PHASE: Duration = Duration::from_secs(90);

fn alertmanager_available() -> bool {
    observatory_e2e::programs_available(
        &[("prometheus-alertmanager", "--version")],
        "that alerts reach Alertmanager",
        "apt-get install prometheus-alertmanager",
    )
}

/// A running Alertmanager on a temporary dir, killed when dropped.
struct Alertmanager {
    child: Child,
    url: String,
    client: reqwest::blocking::Client,
    dir: tempfile::TempDir,
}

impl Alertmanager {
    fn start() -> Alertmanager {
        let dir = tempfile::tempdir().expect("a temporary dir for Alertmanager");
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(&config, "route:\n  receiver: nowhere\nreceivers:\n  - name: nowhere\n")
            .expect("writing alertmanager.yml");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let log = std::fs::File::create(dir.path().join("alertmanager.log")).expect("creating the log");
        let child = Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            // No cluster: one Alertmanager, no gossip port.
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the log handle"))
            .stderr(log)
            .spawn()
            .expect("starting prometheus-alertmanager");
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client");
        let am = Alertmanager { child, url: format!("http://127.0.0.1:{port}"), client, dir };
        wait_until(PHASE, "Alertmanager answers", || am.alerts().map(|_| ()));
        am
    }

    /// The active alerts (`GET /api/v2/alerts`).
    fn alerts(&self) -> Result<Vec<Value>, String> {
        let response =
            self.client.get(format!("{}/api/v2/alerts", self.url)).send().map_err(|e| e.to_string())?;
        let body: Value = response.json().map_err(|e| e.to_string())?;
        body.as_array().cloned().ok_or_else(|| format!("not a list: {body}"))
    }

    /// The active alerts of `objective` with `severity`.
    fn alerts_of(&self, objective: &str, severity: &str) -> Result<Vec<Value>, String> {
        Ok(self
            .alerts()?
            .into_iter()
            .filter(|a| a["labels"]["objective"] == objective && a["labels"]["severity"] == severity)
            .collect())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("alertmanager.log")).unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- alertmanager log:\n{}", self.log());
        }
    }
}

fn objectives_file(dir: &Path) {
    std::fs::write(
        dir.join("objectives.yaml"),
        "objectives:\n\
         \x20 - name: checkout-payments-latency\n\
         \x20   from: checkout\n\
         \x20   to: payments\n\
         \x20   window: 1h\n\
         \x20   latency: { threshold: 200ms, target: 95% }\n\
         \x20   min_calls: 5\n\
         \x20 - name: orders-flow\n\
         \x20   from: orders\n\
         \x20   to: queue\n\
         \x20   window: 1h\n\
         \x20   flow: { rate_at_least: 1/s, for: 10s }\n",
    )
    .expect("writing objectives.yaml");
}

/// The objective `name` as `peer` evaluates it.
fn objective(peer: &Peer, name: &str) -> Result<Value, String> {
    let answer = peer.get(&format!("/api/v1/objectives?name={name}"));
    if answer.status != 200 {
        return Err(format!("HTTP {}: {}", answer.status, answer.body));
    }
    Ok(answer.body["objectives"][0].clone())
}

/// The state and start of `objective`'s `severity` alert on `peer`.
fn alert_state(peer: &Peer, name: &str, severity: &str) -> Result<(String, Value), String> {
    let objective = objective(peer, name)?;
    let alert = objective["alerts"]
        .as_array()
        .and_then(|alerts| alerts.iter().find(|a| a["severity"] == severity))
        .ok_or_else(|| format!("no {severity} alert: {objective}"))?;
    Ok((alert["state"].as_str().unwrap_or_default().to_string(), alert["since"].clone()))
}

/// Whether `peer` sends the alert of `objective` with `severity`.
fn sends(peer: &Peer, objective: &str, severity: &str) -> bool {
    let answer = peer.get("/api/v1/objectives");
    answer.body["sends"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|labels| labels["objective"] == objective && labels["severity"] == severity)
}

/// Keeps `checkout -> payments` (four calls of the current latency) and
/// `orders -> queue` (one message, while flowing) busy every 200 ms from a thread.
struct Traffic {
    stop: Arc<AtomicBool>,
    latency_ms: Arc<AtomicU64>,
    flowing: Arc<AtomicBool>,
    target: Arc<std::sync::Mutex<String>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(url: String) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let latency_ms = Arc::new(AtomicU64::new(20));
        let flowing = Arc::new(AtomicBool::new(true));
        let target = Arc::new(std::sync::Mutex::new(url));
        let (s, l, f, t) = (stop.clone(), latency_ms.clone(), flowing.clone(), target.clone());
        let thread = std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("an HTTP client");
            while !s.load(Ordering::Relaxed) {
                let latency = l.load(Ordering::Relaxed);
                let mut lines: Vec<String> = (0..4)
                    .map(|_| event("checkout", "payments", json!({ "latency_ms": latency })).to_string())
                    .collect();
                if f.load(Ordering::Relaxed) {
                    lines.push(event("orders", "queue", json!({})).to_string());
                }
                let url = t.lock().expect("the target").clone();
                let _ = client
                    .post(format!("{url}/api/v1/events"))
                    .header("content-type", "application/x-ndjson")
                    .body(lines.join("\n"))
                    .send();
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        Traffic { stop, latency_ms, flowing, target, thread: Some(thread) }
    }

    fn set_latency(&self, ms: u64) {
        self.latency_ms.store(ms, Ordering::Relaxed);
    }

    fn stop_flow(&self) {
        self.flowing.store(false, Ordering::Relaxed);
    }

    fn send_to(&self, url: String) {
        *self.target.lock().expect("the target") = url;
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

const LATENCY: &str = "checkout-payments-latency";

fn peer(peers: &[Option<Peer>], i: usize) -> &Peer {
    peers[i].as_ref().expect("up")
}

#[test]
fn slow_calls_page_once_through_alertmanager_and_sending_survives_the_sender() {
    if !alertmanager_available() {
        return;
    }
    let am = Alertmanager::start();
    let dir = tempfile::tempdir().expect("a temporary dir");
    objectives_file(dir.path());
    let config = dir.path().join("observatory.yaml");
    // A relative objectives file is read next to the config that names it.
    std::fs::write(
        &config,
        format!(
            "objectives:\n  files: [objectives.yaml]\n  eval_interval: 2s\n\
             alerts:\n  alertmanagers: ['{}']\n  resend_interval: 3s\n  ends_at_resends: 10\n  retry_min: 200ms\n",
            am.url
        ),
    )
    .expect("writing the config");
    let data = |i: usize| dir.path().join(format!("peer-{i}"));
    let builder = |i: usize| Peer::builder().fast_sync().data_dir(&data(i)).arg("--config").arg(&config);
    let first = builder(0).spawn();
    let bootstrap = first.mesh_addr().to_string();
    let mut peers: Vec<Option<Peer>> = vec![
        Some(first),
        Some(builder(1).bootstrap(&bootstrap).spawn()),
        Some(builder(2).bootstrap(&bootstrap).spawn()),
    ];
    let up =
        |peers: &[Option<Peer>]| -> Vec<usize> { (0..peers.len()).filter(|&i| peers[i].is_some()).collect() };

    // Every peer runs the same objectives and sees that the others do.
    wait_until(PHASE, "the peers agree on the objectives", || {
        for i in 0..3 {
            let answer = peer(&peers, i).peers();
            let agree = answer["peers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["objectives_agree"] == true)
                .count();
            if agree != 2 {
                return Err(answer.to_string());
            }
        }
        Ok(())
    });

    // Fast calls, then every call slow: the latency objective breaks.
    let traffic = Traffic::start(peer(&peers, 1).url());
    std::thread::sleep(Duration::from_secs(3));
    traffic.set_latency(900);
    let fired = wait_until(PHASE, "Alertmanager shows the page", || {
        let alerts = am.alerts_of(LATENCY, "page")?;
        if alerts.len() == 1 { Ok(alerts[0].clone()) } else { Err(format!("{alerts:?}")) }
    });
    let labels: BTreeMap<String, String> = serde_json::from_value(fired["labels"].clone()).expect("labels");
    let expected: BTreeMap<String, String> = [
        ("alertname", "ObservatoryObjectiveBurn"),
        ("objective", LATENCY),
        ("severity", "page"),
        ("from", "checkout"),
        ("to", "payments"),
        ("kind", "*"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(labels, expected, "no peer id among the labels: {fired}");
    assert!(fired["annotations"]["summary"].as_str().is_some_and(|s| s.contains("within 200ms")), "{fired}");
    assert!(
        fired["generatorURL"].as_str().is_some_and(|u| u.contains("/api/v1/objectives?name=")),
        "{fired}"
    );
    let starts_at = fired["startsAt"].clone();
    // Every peer computes it firing with the same start; exactly one sends it.
    wait_until(PHASE, "every peer computes the same firing page", || {
        let states: Vec<(String, Value)> =
            (0..3).map(|i| alert_state(peer(&peers, i), LATENCY, "page")).collect::<Result<_, _>>()?;
        if states.iter().all(|s| s.0 == "firing" && s == &states[0]) {
            Ok(())
        } else {
            Err(format!("{states:?}"))
        }
    });
    let senders: Vec<usize> = (0..3).filter(|&i| sends(peer(&peers, i), LATENCY, "page")).collect();
    assert_eq!(senders.len(), 1, "one sender of the page among three peers: {senders:?}");
    let alerts = am.alerts_of(LATENCY, "page").expect("alerts");
    assert_eq!(alerts.len(), 1, "three peers, one alert: {alerts:?}");

    // The sender goes away: another peer takes over, and Alertmanager still holds the one
    // alert with the same start.
    let sender = senders[0];
    peers[sender].take().expect("up").sigkill();
    let survivor = up(&peers)[0];
    traffic.send_to(peer(&peers, survivor).url());
    let successor = wait_until(PHASE, "another peer sends the page", || {
        up(&peers)
            .into_iter()
            .find(|&i| sends(peer(&peers, i), LATENCY, "page"))
            .ok_or_else(|| "no survivor sends it".to_string())
    });
    std::thread::sleep(Duration::from_secs(4));
    let alerts = am.alerts_of(LATENCY, "page").expect("alerts");
    assert_eq!(alerts.len(), 1, "still one alert after the takeover to p{successor}: {alerts:?}");
    assert_eq!(alerts[0]["startsAt"], starts_at, "the same start after the takeover");
    assert_eq!(alerts[0]["labels"], fired["labels"]);
    let batches = peer(&peers, successor).get("/api/v1/objectives").body["sending"]["batches_sent"].clone();
    assert!(batches.as_u64().is_some_and(|n| n > 0), "p{successor} sent batches: {batches}");

    // The killed peer comes back on its data dir (the picture is whole again), and the
    // calls turn fast: the page resolves, on every peer and in Alertmanager.
    peers[sender] = Some(builder(sender).bootstrap(peer(&peers, survivor).mesh_addr()).spawn());
    traffic.set_latency(20);
    wait_until(PHASE * 2, "the page resolves everywhere", || {
        let states: Vec<(String, Value)> =
            (0..3).map(|i| alert_state(peer(&peers, i), LATENCY, "page")).collect::<Result<_, _>>()?;
        if states.iter().any(|s| s.0 != "resolved") {
            return Err(format!("{states:?}"));
        }
        let alerts = am.alerts_of(LATENCY, "page")?;
        if alerts.is_empty() { Ok(()) } else { Err(format!("Alertmanager still shows {alerts:?}")) }
    });

    // The orders flow stops: its not-flow alert fires, once.
    traffic.stop_flow();
    let missing = wait_until(PHASE, "Alertmanager shows the stopped flow", || {
        let alerts = am.alerts_of("orders-flow", "page")?;
        if alerts.len() == 1 { Ok(alerts[0].clone()) } else { Err(format!("{alerts:?}")) }
    });
    assert_eq!(missing["labels"]["alertname"], "ObservatoryFlowMissing", "{missing}");
    assert_eq!((&missing["labels"]["from"], &missing["labels"]["to"]), (&json!("orders"), &json!("queue")));
    let states: Vec<(String, Value)> =
        (0..3).map(|i| alert_state(peer(&peers, i), "orders-flow", "page").expect("state")).collect();
    assert!(
        states.iter().all(|s| s == &states[0]),
        "every peer computes the same not-flow alert: {states:?}"
    );
    drop(traffic);
}
