//! Helpers for the benchmarks: timing with a same-run baseline, and data sets.

use std::time::{Duration, Instant};

use observatory_core::{Edge, Event, NodeName};

/// Runs `work` (which processes `items` items per call) repeatedly for about `budget`,
/// three times, and returns the best rate in items per second.
pub fn rate_per_s(items: u64, budget: Duration, mut work: impl FnMut()) -> f64 {
    let mut best = 0.0f64;
    for _ in 0..3 {
        let start = Instant::now();
        let mut calls = 0u64;
        while start.elapsed() < budget / 3 || calls == 0 {
            work();
            calls += 1;
        }
        best = best.max((calls * items) as f64 / start.elapsed().as_secs_f64());
    }
    best
}

/// Median wall time of `runs` calls of `work`.
pub fn median_time(runs: usize, mut work: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            work();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

/// Converts generated shop events into core events.
pub fn core_events(events: &[observatory_examples::ShopEvent]) -> Vec<Event> {
    events.iter().map(|e| core_event(e.from, e.to, e.ts_ms, e.latency_ms, e.error, e.bytes)).collect()
}

/// Converts generated events with owned names (synthetic graphs) into core events.
pub fn owned_core_events(events: &[observatory_examples::OwnedShopEvent]) -> Vec<Event> {
    events.iter().map(|e| core_event(&e.from, &e.to, e.ts_ms, e.latency_ms, e.error, e.bytes)).collect()
}

fn core_event(from: &str, to: &str, ts_ms: i64, latency_ms: f64, error: bool, bytes: u64) -> Event {
    Event {
        edge: Edge::new(NodeName::new(from, 200).expect("name"), NodeName::new(to, 200).expect("name")),
        ts_ms,
        latency_us: Some((latency_ms * 1000.0).round() as u64),
        error,
        bytes,
        count: 1,
    }
}

/// Formats a rate with thousands separators.
pub fn thousands(value: f64) -> String {
    let text = format!("{:.0}", value);
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i > 0 && (text.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One peer for the HTTP benchmarks: a fresh data dir, the writer with `ack`, and the
/// API router served on a loopback port. Stop it with [`ServedPeer::stop`].
#[derive(Debug)]
pub struct ServedPeer {
    /// The API's context (counters, state).
    pub context: std::sync::Arc<observatory_api::ApiContext>,
    /// Where the API listens.
    pub addr: std::net::SocketAddr,
    server: tokio::task::JoinHandle<()>,
    stop_writer: tokio::sync::watch::Sender<bool>,
    writer: tokio::task::JoinHandle<Result<(), observatory_store::StoreError>>,
    _dir: tempfile::TempDir,
}

impl ServedPeer {
    /// Opens and serves the peer.
    pub async fn serve(ack: observatory_store::AckMode) -> Self {
        use std::sync::{Arc, RwLock};
        let dir = tempfile::tempdir().expect("temp dir");
        let settings = observatory_core::Settings::default();
        let opened = observatory_store::open_peer(dir.path(), settings, observatory_core::Limits::default())
            .expect("open");
        let store_size = opened.store.size_probe();
        let state = Arc::new(RwLock::new(opened.state));
        let (stop_writer, shutdown) = tokio::sync::watch::channel(false);
        let config = observatory_store::WriterConfig { ack, ..observatory_store::WriterConfig::default() };
        let (ingest, _persist, writer) =
            observatory_store::spawn_writer(state.clone(), opened.store, config, shutdown);
        let info = observatory_api::PeerInfo {
            peer_id: "bench".into(),
            incarnation: 1,
            version: "bench".into(),
            data_dir: String::new(),
        };
        let limits = observatory_api::ApiLimits::default();
        let context = Arc::new(observatory_api::ApiContext::new(state, ingest, info, limits, store_size));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = observatory_api::router(context.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.expect("serve");
        });
        Self { context, addr, server, stop_writer, writer, _dir: dir }
    }

    /// Stops serving and waits for the writer to finish.
    pub async fn stop(self) {
        self.server.abort();
        let _ = self.stop_writer.send(true);
        let _ = self.writer.await;
    }
}
