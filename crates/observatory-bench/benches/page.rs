//! `cargo bench -p observatory-bench --bench page`
//!
//! The live picture under load, against a real peer on loopback:
//! - `stream`: bytes per second a client of `GET /api/v1/live?window=1m` receives for a
//!   system of 200 edges with traffic on every edge every second (target: at most 5 KB/s).
//!   Baseline in the same run: sending the whole drawing every second instead.
//! - `frames`: animation frames per second of the page in Debian's headless Chromium
//!   (`requestAnimationFrame` timestamps, over 4 s) for 1,000 nodes and 5,000 edges
//!   (target: at least 30), and the time until the whole graph is drawn. Baseline in the
//!   same run: the same page with 20 edges. Needs `chromium` and `chromedriver`; says
//!   why it skips without them.

use std::time::{Duration, Instant};

use fantoccini::ClientBuilder;
use observatory_bench::{ServedPeer, tiered_system, unix_now_ms};
use observatory_core::commit::AckMode;
use serde_json::{Value, json};

async fn send(client: &reqwest::Client, peer: &ServedPeer, edges: &[(String, String, &str)], calls: u64) {
    let now = unix_now_ms();
    for chunk in edges.chunks(2_000) {
        let events: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, (from, to, kind))| {
                json!({"from": from, "to": to, "kind": kind, "ts": now, "count": calls + (i as u64 % 7),
                       "latency_ms": 2.0 + (i % 50) as f64, "error": i % 97 == 0})
            })
            .collect();
        let response = client
            .post(format!("http://{}/api/v1/events", peer.addr))
            .json(&events)
            .send()
            .await
            .expect("the peer answers");
        assert!(response.status().is_success(), "ingest: {}", response.status());
    }
}

/// Bytes a live client receives over `seconds` while every edge gets traffic each second,
/// and the size of one whole drawing.
async fn stream(edges: &[(String, String, &str)], seconds: u64) -> (f64, usize) {
    let peer = ServedPeer::serve(AckMode::Accepted).await;
    let client = reqwest::Client::new();
    send(&client, &peer, edges, 20).await;
    let drawing = client
        .get(format!("http://{}/api/v1/layout?window=1m", peer.addr))
        .send()
        .await
        .expect("the drawing")
        .bytes()
        .await
        .expect("its body")
        .len();
    let mut live =
        client.get(format!("http://{}/api/v1/live?window=1m", peer.addr)).send().await.expect("the stream");
    // The first graph event is what any client pays once; count what follows.
    let mut first = Vec::new();
    while !String::from_utf8_lossy(&first).contains("\n\n") {
        first.extend_from_slice(&live.chunk().await.expect("a chunk").expect("the stream goes on"));
    }
    let start = Instant::now();
    let mut bytes = 0usize;
    let mut next_send = Instant::now();
    while start.elapsed() < Duration::from_secs(seconds) {
        if Instant::now() >= next_send {
            send(&client, &peer, edges, 20).await;
            next_send += Duration::from_secs(1);
        }
        if let Ok(Ok(Some(chunk))) = tokio::time::timeout(Duration::from_millis(200), live.chunk()).await {
            bytes += chunk.len();
        }
    }
    let per_s = bytes as f64 / start.elapsed().as_secs_f64();
    drop(live);
    peer.stop().await;
    (per_s, drawing)
}

fn browser_available() -> Result<(), String> {
    for program in ["chromium", "chromedriver"] {
        match std::process::Command::new(program).arg("--version").output() {
            Ok(output) if output.status.success() => {}
            _ => {
                return Err(format!("{program} is not installed (apt-get install chromium chromium-driver)"));
            }
        }
    }
    Ok(())
}

/// Frames per second of the page drawing `edges`, and the time until it was drawn.
async fn frames(driver: &str, edges: &[(String, String, &str)]) -> (f64, Duration) {
    let peer = ServedPeer::serve(AckMode::Accepted).await;
    let http = reqwest::Client::new();
    send(&http, &peer, edges, 20).await;
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({"binary": "/usr/bin/chromium",
               "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"]}),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(driver)
        .await
        .expect("a Chromium session");
    let start = Instant::now();
    // Every node drawn: the big graph would otherwise be collapsed into its ten tiers.
    client.goto(&format!("http://{}/?group=off", peer.addr)).await.expect("the page");
    loop {
        let drawn =
            client.execute("return document.querySelectorAll('path.edge').length;", vec![]).await.unwrap();
        if drawn.as_u64() == Some(edges.len() as u64) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "the page drew {drawn} of {} edges", edges.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drawn_after = start.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let fps = client
        .execute(
            "const f = window.__frames; const end = f[f.length - 1]; return f.filter(t => t > end - 4000).length / 4;",
            vec![],
        )
        .await
        .unwrap()
        .as_f64()
        .unwrap_or(0.0);
    let problems = client.execute("return window.__problems;", vec![]).await.unwrap();
    assert_eq!(problems, json!([]), "no script error");
    let _ = client.close().await;
    peer.stop().await;
    (fps, drawn_after)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let run = |name: &str| only.as_deref().is_none_or(|o| o == name);
    if run("stream") {
        let edges = tiered_system(5, 30, 200);
        let (per_s, drawing) = runtime.block_on(stream(&edges, 20));
        println!("stream: 200 edges, traffic on every edge every second, 1m window, 20 s");
        println!(
            "  live stream            {:>8.2} KB/s  (target <= 5 KB/s)\n  baseline: the whole drawing every second {:>8.2} KB/s  ratio {:.3}",
            per_s / 1000.0,
            drawing as f64 / 1000.0,
            per_s / drawing as f64
        );
    }
    if run("frames") {
        if let Err(why) = browser_available() {
            println!("frames: skipped: {why}");
            return;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut driver = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        std::thread::sleep(Duration::from_secs(1));
        let url = format!("http://127.0.0.1:{port}");
        let small = tiered_system(4, 5, 20);
        let big = tiered_system(10, 100, 5_000);
        let (small_fps, small_drawn) = runtime.block_on(frames(&url, &small));
        let (big_fps, big_drawn) = runtime.block_on(frames(&url, &big));
        let _ = driver.kill();
        let _ = driver.wait();
        println!("frames: the page in headless Chromium, animation frames over 4 s");
        println!(
            "  baseline: 20 edges        {small_fps:>6.1} frames/s, drawn after {:>6.2} s",
            small_drawn.as_secs_f64()
        );
        println!(
            "  1,000 nodes, 5,000 edges  {big_fps:>6.1} frames/s, drawn after {:>6.2} s  (ratio {:.2}; target >= 30 frames/s)",
            big_drawn.as_secs_f64(),
            big_fps / small_fps
        );
    }
}
