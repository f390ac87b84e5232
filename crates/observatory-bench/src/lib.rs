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

/// The mesh-wide settings of a peer with the documented defaults.
pub fn default_settings() -> observatory_core::Settings {
    observatory_config::Config::defaults().settings().expect("the default settings are valid")
}

/// The limits of a peer with the documented defaults.
pub fn default_limits() -> observatory_core::Limits {
    observatory_config::Config::defaults().core_limits()
}

/// A store identity for benchmarks that open a store directly: the network's keypair.
#[derive(Debug, Clone, Copy)]
pub struct NetIdentity;

impl observatory_store::IdentityScheme for NetIdentity {
    fn generate(&self) -> Vec<u8> {
        observatory_net::identity::generate()
    }

    fn peer_id(&self, identity: &[u8]) -> Result<String, String> {
        observatory_net::identity::peer_id(identity)
    }
}

/// The protocol's settings in the documented defaults.
pub fn default_protocol() -> observatory_sync::ProtocolConfig {
    observatory_config::Config::defaults().protocol()
}

/// A big system for the pictures' benchmarks: `tiers` tiers of `per_tier` services and
/// `edges` distinct edges, most to the next tier, some two tiers on, 2% calling back up
/// (so that cycles must be broken), calls into the last tier partly database calls.
/// Seeded: the same system every run.
pub fn tiered_system(tiers: usize, per_tier: usize, edges: usize) -> Vec<(String, String, &'static str)> {
    use rand::{Rng, SeedableRng};
    let name = |tier: usize, i: usize| format!("t{tier}-svc-{i:03}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut set = std::collections::BTreeSet::new();
    while set.len() < edges {
        let tier = rng.random_range(0..tiers - 1);
        let from = name(tier, rng.random_range(0..per_tier));
        let roll: f64 = rng.random();
        let to_tier = if roll < 0.02 {
            rng.random_range(0..=tier)
        } else if roll < 0.2 {
            (tier + 2).min(tiers - 1)
        } else {
            tier + 1
        };
        let kind = if to_tier == tiers - 1 && roll > 0.6 { "database" } else { "request" };
        set.insert((from, name(to_tier, rng.random_range(0..per_tier)), kind));
    }
    set.into_iter().collect()
}

/// The system clock, as a peer is given it.
pub fn unix_now_ms() -> i64 {
    use observatory_core::Clock;
    observatory_peer::SystemClock.now_ms()
}

/// One peer for the HTTP benchmarks: the real application (a fresh data dir, the writer
/// with `ack`, a mesh on loopback with no other peer) serving its HTTP API on a loopback
/// port. Stop it with [`ServedPeer::stop`].
#[derive(Debug)]
pub struct ServedPeer {
    /// The peer (its counters, its state).
    pub peer: observatory_peer::Peer,
    /// Where the API listens.
    pub addr: std::net::SocketAddr,
    /// Where OTLP/gRPC is served.
    pub grpc_addr: std::net::SocketAddr,
    stop: tokio_util::sync::CancellationToken,
    run: tokio::task::JoinHandle<Result<(), observatory_peer::RunError>>,
    _dir: tempfile::TempDir,
}

/// How many spans a benchmark peer remembers to count retries once: fewer than a bench
/// sends before it sends the same payloads again (64 requests of 512 spans in the OTLP
/// bench), so every span counts, and the memory runs at its steady state (an insert and
/// a forgetting per span) as it does at a peer that took more than `recent_spans_max`.
pub const RECENT_SPANS: usize = 16_384;

impl ServedPeer {
    /// Opens and serves the peer.
    pub async fn serve(ack: observatory_core::commit::AckMode) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let yaml = format!(
            "http: {{addr: 127.0.0.1:0}}\notlp: {{addr: null, grpc_addr: 127.0.0.1:0}}\n\
             correlation: {{recent_spans_max: {RECENT_SPANS}}}\nstore: {{path: {}}}\n\
             mesh: {{listen: [/ip4/127.0.0.1/tcp/0], mdns: false}}\n",
            dir.path().display()
        );
        let mut config = observatory_config::Config::from_yaml(&yaml).expect("a valid config");
        config.ingest.ack = ack;
        let running =
            observatory_peer::start(&config, std::sync::Arc::new(observatory_peer::SystemClock), "bench")
                .await
                .expect("the peer starts");
        let addr = running.listening.http;
        let grpc_addr = running.listening.otlp_grpc.expect("the peer serves OTLP/gRPC");
        let peer = running.peer.clone();
        let stop = tokio_util::sync::CancellationToken::new();
        let run = tokio::spawn(running.run_until(stop.clone()));
        Self { peer, addr, grpc_addr, stop, run, _dir: dir }
    }

    /// Stops serving and waits for the peer to finish.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.run.await;
    }
}
