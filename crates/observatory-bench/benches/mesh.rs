//! `cargo bench -p observatory-bench --bench mesh [-- delta|idle]`
//!
//! Bytes on the wire of the anti-entropy protocol. The mesh runs in memory: one
//! `FlowState` and one sans-IO `Protocol<usize>` per peer, every peer connected to every
//! other, each message encoded with the wire format and delivered 5 ms later, every
//! peer's `handle_tick` every 100 ms of virtual time, default protocol settings (rounds
//! every second, fanout 2). Each figure is printed next to a baseline measured in the
//! same run.
//!
//! - `delta`: steady ingest on every peer; wire bytes per round against the wire size of
//!   exactly the cells that changed in that round, sent once to every other peer.
//! - `idle`: a converged mesh where nothing changes; bytes per peer per round for
//!   several numbers of origins and cells, against the smallest case.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use observatory_bench::{
    core_events, default_limits, default_protocol, default_settings, owned_core_events, thousands,
};
use observatory_core::{CellKey, Edge, Event, FlowState, Limits, NodeName, Origin, OriginDelta};
use observatory_sync::wire::{self, MeshMessage};
use observatory_sync::{Message, Protocol, ProtocolConfig, SyncMessage};

/// Virtual time at the start (ms since the epoch, aligned to the hour).
const START_MS: i64 = 1_800_000_000_000;
const TICK_MS: i64 = 100;
const LINK_DELAY_MS: i64 = 5;

fn main() {
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wanted = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    println!("observatory mesh benchmarks (bytes on the wire, with same-run baselines)\n");
    if wanted("delta") {
        bench_delta();
    }
    if wanted("idle") {
        bench_idle();
    }
}

// ---------------------------------------------------------------------------------------
// An in-memory mesh (the harness of `observatory-mesh/tests/protocol.rs`, without faults)
// ---------------------------------------------------------------------------------------

struct Peer {
    state: FlowState,
    protocol: Protocol<usize>,
}

struct Mesh {
    now_ms: i64,
    next_tick_ms: i64,
    peers: Vec<Peer>,
    /// Messages in flight by `(delivery time, order of sending)`: `(from, to, bytes)`.
    queue: BTreeMap<(i64, u64), (usize, usize, Vec<u8>)>,
    sent: u64,
    bytes_sent: u64,
    messages_sent: u64,
    oversized: u64,
    config: ProtocolConfig,
}

impl Mesh {
    /// A mesh of these states, every peer connected to every other.
    fn new(states: Vec<FlowState>, config: ProtocolConfig) -> Self {
        let peers = states
            .into_iter()
            .enumerate()
            .map(|(i, state)| {
                let settings = state.settings();
                let protocol =
                    Protocol::new(config.clone(), settings.fingerprint(), settings.canonical(), 1 + i as u64);
                Peer { state, protocol }
            })
            .collect();
        let mut mesh = Mesh {
            now_ms: START_MS,
            next_tick_ms: START_MS,
            peers,
            queue: BTreeMap::new(),
            sent: 0,
            bytes_sent: 0,
            messages_sent: 0,
            oversized: 0,
            config,
        };
        for a in 0..mesh.peers.len() {
            for b in a + 1..mesh.peers.len() {
                mesh.peers[a].protocol.peer_connected(START_MS, b);
                mesh.peers[b].protocol.peer_connected(START_MS, a);
                mesh.flush(a);
                mesh.flush(b);
            }
        }
        mesh
    }

    fn flush(&mut self, from: usize) {
        while let Some((to, message)) = self.peers[from].protocol.poll_transmit() {
            let bytes = wire::encode(message);
            self.peers[from].protocol.note_bytes(&to, false, bytes.len());
            self.bytes_sent += bytes.len() as u64;
            self.messages_sent += 1;
            self.queue.insert((self.now_ms + LINK_DELAY_MS, self.sent), (from, to, bytes));
            self.sent += 1;
        }
        while self.peers[from].protocol.poll_action().is_some() {}
    }

    fn deliver(&mut self, from: usize, to: usize, bytes: Vec<u8>) {
        let now = self.now_ms;
        let peer = &mut self.peers[to];
        peer.protocol.note_bytes(&from, true, bytes.len());
        if bytes.len() > self.config.message_bytes_max {
            self.oversized += 1;
            peer.protocol.handle_malformed(now, from, "message larger than message_bytes_max");
        } else {
            let message = match wire::decode(&bytes).expect("messages of honest peers decode") {
                MeshMessage::Protocol(message) => message,
                other => panic!("the protocol sent {other:?}"),
            };
            peer.protocol.handle_message(now, from, message, &mut peer.state);
        }
        self.flush(to);
    }

    fn run_for(&mut self, ms: i64) {
        let end = self.now_ms + ms;
        loop {
            let next_delivery = self.queue.first_key_value().map(|(&(at, _), _)| at);
            let next = next_delivery.map_or(self.next_tick_ms, |at| at.min(self.next_tick_ms));
            if next > end {
                break;
            }
            self.now_ms = next;
            if next_delivery == Some(next) {
                let (_, (from, to, bytes)) = self.queue.pop_first().expect("a delivery is due");
                self.deliver(from, to, bytes);
            } else {
                self.next_tick_ms += TICK_MS;
                for index in 0..self.peers.len() {
                    let peer = &mut self.peers[index];
                    peer.protocol.handle_tick(next, &peer.state);
                    self.flush(index);
                }
            }
        }
        self.now_ms = end;
    }

    fn converged(&self) -> bool {
        self.peers.iter().all(|p| p.state == self.peers[0].state)
    }
}

fn limits() -> Limits {
    Limits { edges_max: 1_000_000, nodes_max: 1_000_000, ..default_limits() }
}

fn fresh_state(peer: &str) -> FlowState {
    let mut state = FlowState::new(default_settings(), limits());
    state.set_local(Origin::new(peer, 1));
    state
}

fn node(name: &str) -> NodeName {
    NodeName::new(name, 200).expect("valid node name")
}

/// The wire size of `cells` (per origin, read from `states`) sent as one message: one page
/// per origin, with the smallest head.
fn one_page_bytes(
    changed: &BTreeMap<Origin, BTreeSet<CellKey>>,
    owner: &BTreeMap<Origin, usize>,
    mesh: &Mesh,
) -> usize {
    let pages = changed
        .iter()
        .map(|(origin, keys)| {
            let state = &mesh.peers[owner[origin]].state;
            let cells = keys
                .iter()
                .map(|k| (k.clone(), state.cell(origin, k).expect("changed cell").clone()))
                .collect();
            OriginDelta::whole(origin.clone(), state.origin_seq(origin), None, cells)
        })
        .collect();
    let head = SyncMessage {
        fingerprint: default_settings().fingerprint(),
        session: 1,
        step: 1,
        reply: true,
        want: None,
        lag_cells: None,
    };
    wire::encode(Message::Sync(head, pages)).len()
}

/// The CBOR size of every `(key, cell)` on its own.
fn pair_bytes(
    changed: &BTreeMap<Origin, BTreeSet<CellKey>>,
    owner: &BTreeMap<Origin, usize>,
    mesh: &Mesh,
) -> usize {
    let mut out = Vec::new();
    let mut total = 0;
    for (origin, keys) in changed {
        let state = &mesh.peers[owner[origin]].state;
        for key in keys {
            out.clear();
            ciborium::into_writer(&(key, state.cell(origin, key).expect("changed cell")), &mut out)
                .expect("CBOR");
            total += out.len();
        }
    }
    total
}

// ---------------------------------------------------------------------------------------
// Delta efficiency
// ---------------------------------------------------------------------------------------

/// Traffic for one peer over one round: `(peer, start_ms, span_ms) -> events`.
type Traffic = Box<dyn FnMut(usize, i64, i64) -> Vec<Event>>;

fn bench_delta() {
    let interval_ms = default_protocol().sync_interval_ms;
    for n_peers in [3, 5] {
        let mut shops: Vec<_> =
            (0..n_peers).map(|i| observatory_examples::Shop::new(40 + i as u64)).collect();
        let shop: Traffic =
            Box::new(move |peer, start, span| core_events(&shops[peer].events(200, start, span)));
        delta_run(&format!("shop, 200 events/s per peer, {n_peers} peers"), n_peers, interval_ms, shop);
    }
    for n_peers in [3, 5] {
        let edges = observatory_examples::synthetic_edges(1000);
        let mut seed = 0;
        let synthetic: Traffic = Box::new(move |_, start, span| {
            seed += 1;
            owned_core_events(&observatory_examples::synthetic_events(&edges, 2000, start, span, seed))
        });
        delta_run(
            &format!("synthetic 1,000 edges, 2,000 events/s per peer, {n_peers} peers"),
            n_peers,
            interval_ms,
            synthetic,
        );
    }
}

fn delta_run(name: &str, n_peers: usize, interval_ms: i64, mut traffic: Traffic) {
    println!("== delta efficiency: {name}, fanout 2, a round every {interval_ms} ms");
    let states = (0..n_peers).map(|i| fresh_state(&format!("peer-{i}"))).collect();
    let mut mesh = Mesh::new(states, default_protocol());
    let owner: BTreeMap<Origin, usize> = mesh
        .peers
        .iter()
        .enumerate()
        .map(|(i, p)| (p.state.local_origin().expect("local origin").clone(), i))
        .collect();
    let (warm_up, measured) = (10, 60);
    let (mut wire_bytes, mut page_bytes, mut pairs, mut cells) = (0u64, 0u64, 0u64, 0u64);
    let started = Instant::now();
    for round in 0..warm_up + measured {
        let mut changed: BTreeMap<Origin, BTreeSet<CellKey>> = BTreeMap::new();
        for peer in 0..n_peers {
            let events = traffic(peer, mesh.now_ms - interval_ms, interval_ms);
            let now = mesh.now_ms;
            let state = &mut mesh.peers[peer].state;
            let outcome = state.apply_local(now, &events);
            assert!(outcome.rejected.is_empty(), "events rejected: {:?}", &outcome.rejected[..1]);
            let origin = state.local_origin().expect("local origin").clone();
            changed.entry(origin).or_default().extend(outcome.changed);
        }
        let before = mesh.bytes_sent;
        mesh.run_for(interval_ms);
        if round >= warm_up {
            wire_bytes += mesh.bytes_sent - before;
            page_bytes += one_page_bytes(&changed, &owner, &mesh) as u64;
            pairs += pair_bytes(&changed, &owner, &mesh) as u64;
            cells += changed.values().map(|k| k.len() as u64).sum::<u64>();
        }
    }
    let elapsed = started.elapsed();
    // Drain, then check that the mesh converged: the figures are of a working mesh.
    mesh.run_for(10 * interval_ms);
    assert!(mesh.converged(), "the mesh converged");
    assert_eq!(mesh.oversized, 0);
    let copies = (n_peers - 1) as f64;
    let per_round = |bytes: u64| bytes as f64 / measured as f64;
    let baseline = per_round(page_bytes) * copies;
    println!("  cells changed per round (all origins):       {:>10.0}", cells as f64 / measured as f64);
    println!("  wire bytes per round (whole mesh):           {:>10} B", thousands(per_round(wire_bytes)));
    println!(
        "  baseline: the changed cells as one page, once to each of the {} other peers: {} B ({} B per copy)",
        n_peers - 1,
        thousands(baseline),
        thousands(per_round(page_bytes))
    );
    println!("            (CBOR of each (key, cell) on its own: {} B per copy)", thousands(per_round(pairs)));
    println!(
        "  ratio wire / baseline:                       {:>10.2}   (target <= 1.5)",
        per_round(wire_bytes) / baseline
    );
    println!(
        "  ({} messages per round; {:.1} s of wall time, all peers on one thread, for {} rounds)\n",
        mesh.messages_sent / (warm_up + measured + 10) as u64,
        elapsed.as_secs_f64(),
        warm_up + measured
    );
}

// ---------------------------------------------------------------------------------------
// Idle mesh
// ---------------------------------------------------------------------------------------

/// One converged state holding `origins` origins of `cells` cells each (every origin
/// reports on the same `cells / 4` edges: one bucket in each of the four resolutions).
fn converged_state(origins: usize, cells: usize) -> FlowState {
    let names = observatory_examples::synthetic_edges(cells / 4);
    let edges: Vec<Edge> = names.iter().map(|(from, to)| Edge::new(node(from), node(to))).collect();
    let mut merged = FlowState::new(default_settings(), limits());
    for o in 0..origins {
        let mut state = fresh_state(&format!("origin-{o}"));
        let events: Vec<Event> = edges
            .iter()
            .enumerate()
            .map(|(i, edge)| Event {
                edge: edge.clone(),
                ts_ms: START_MS - 5_000,
                latency_us: Some(1_000 + (i as u64 * 37 + o as u64 * 101) % 50_000),
                error: false,
                bytes: 512,
                count: 1 + (i % 3) as u64,
            })
            .collect();
        for chunk in events.chunks(10_000) {
            let outcome = state.apply_local(START_MS, chunk);
            assert!(outcome.rejected.is_empty());
        }
        for delta in state.to_deltas() {
            if !delta.cells.is_empty() {
                merged
                    .restore_origin(delta.origin, delta.to_seq, delta.changed_at_ms, delta.cells)
                    .expect("restore");
            }
        }
    }
    assert_eq!(merged.stats().cells, origins * (cells / 4) * 4);
    merged
}

fn idle_bytes_per_peer_per_round(origins: usize, cells: usize) -> (f64, f64) {
    let n_peers = 3;
    let merged = converged_state(origins, cells);
    let states = (0..n_peers)
        .map(|i| {
            let mut state = merged.clone();
            state.set_local(Origin::new(&format!("peer-{i}"), 1));
            state
        })
        .collect();
    let mut mesh = Mesh::new(states, default_protocol());
    let interval_ms = mesh.config.sync_interval_ms;
    mesh.run_for(5 * interval_ms);
    let rounds = 20;
    let before = mesh.bytes_sent;
    let started = Instant::now();
    mesh.run_for(rounds * interval_ms);
    let cpu = started.elapsed();
    assert!(mesh.converged(), "an idle mesh stays converged");
    let bytes = (mesh.bytes_sent - before) as f64 / (n_peers as f64 * rounds as f64);
    (bytes, cpu.as_secs_f64() * 1e3 / (n_peers as f64 * rounds as f64))
}

fn bench_idle() {
    println!("== idle mesh: 3 converged peers, nothing changes, fanout 2, bytes sent per peer per round");
    let cases = [(10, 1_000), (10, 100_000), (100, 1_000)];
    let mut figures = Vec::new();
    for (origins, cells) in cases {
        let (bytes, cpu_ms) = idle_bytes_per_peer_per_round(origins, cells);
        println!(
            "  {origins:>3} origins x {:>7} cells: {:>8} B per peer per round   ({:.2} ms of wall time per peer per round)",
            thousands(cells as f64),
            thousands(bytes),
            cpu_ms
        );
        figures.push(bytes);
    }
    let baseline = figures[0];
    println!("  baseline: 10 origins x 1,000 cells, {} B", thousands(baseline));
    println!(
        "  ratio 10 x 100,000 cells / baseline: {:>6.2}   (target ~1: grows with origins, not cells)",
        figures[1] / baseline
    );
    println!("  ratio 100 x 1,000 cells  / baseline: {:>6.2}   (10x the origins)", figures[2] / baseline);
    println!();
}
