//! `cargo bench -p observatory-bench [-- apply|ingest|query|cells]`
//!
//! Prints the figures the issues ask for, each next to a baseline measured in the same
//! run (machines are noisy; ratios travel better than absolute numbers).

use std::alloc::System;
use std::sync::Arc;
use std::time::Duration;

use observatory_api::events::{BodyFormat, parse_body};
use observatory_bench::{
    NetIdentity, ServedPeer, core_events, default_limits, default_settings, median_time, rate_per_s,
    thousands, unix_now_ms,
};
use observatory_core::commit::AckMode;
use observatory_core::{Edge, Event, FlowState, LatencyHistogram, Limits, NodeName, Origin};
use observatory_store::{Store, WriteBatch};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rustc_hash::FxHashMap;

#[global_allocator]
static ALLOCATOR: cap::Cap<System> = cap::Cap::new(System, usize::MAX);

const NOW_MS: i64 = 1_800_000_000_000;

fn main() {
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wanted = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    println!("observatory benchmarks (figures, with same-run baselines)\n");
    if wanted("apply") {
        bench_apply();
    }
    if wanted("ingest") {
        bench_ingest();
    }
    if wanted("query") {
        bench_query();
    }
    if wanted("cells") {
        bench_cells();
    }
}

fn fresh_state() -> FlowState {
    let mut state = FlowState::new(default_settings(), default_limits());
    state.set_local(Origin::new("bench", 1));
    state
}

/// Core apply throughput on one core, against a plain per-edge/bucket count.
fn bench_apply() {
    println!("== core apply (one thread, shop traffic, batches of 1,000 events)");
    let shop = observatory_examples::Shop::new(1).events(200_000, NOW_MS - 120_000, 120_000);
    let events = core_events(&shop);
    let batches: Vec<&[Event]> = events.chunks(1000).collect();
    let mut state = fresh_state();
    let n = events.len() as u64;
    let apply = rate_per_s(n, Duration::from_secs(3), || {
        for batch in &batches {
            let outcome = state.apply_local(NOW_MS, batch);
            assert_eq!(outcome.accepted, batch.len());
        }
    });
    let mut plain: FxHashMap<(Edge, i64), (u64, u64, u64)> = FxHashMap::default();
    let baseline = rate_per_s(n, Duration::from_secs(3), || {
        for event in &events {
            let entry = plain.entry((event.edge.clone(), event.ts_ms / 10_000)).or_default();
            entry.0 += event.count;
            entry.1 += u64::from(event.error);
            entry.2 += event.bytes;
        }
    });
    println!("  apply_local:                  {:>12} events/s   (target >= 2,000,000)", thousands(apply));
    println!("  baseline: plain counts by edge and 10s bucket, no histograms, one resolution:");
    println!("                                {:>12} events/s", thousands(baseline));
    println!("  ratio apply / baseline:       {:>12.2}\n", apply / baseline);
}

/// HTTP ingest end to end (real listener on loopback, real client), against parse-only.
fn bench_ingest() {
    println!("== HTTP ingest end to end, batches of 1,000 events, 8 requests in flight");
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let limits = observatory_api::ApiLimits::from_config(observatory_config::Config::defaults()).parse;
    for ack in [AckMode::Durable, AckMode::Accepted] {
        for format in [BodyFormat::Ndjson, BodyFormat::Cbor] {
            let now = unix_now_ms();
            let mut shop = observatory_examples::Shop::new(7);
            let payloads: Vec<Vec<u8>> = (0..40)
                .map(|i| {
                    let events = shop.events(1000, now - 60_000 + i, 1000);
                    let events = &events[..1000];
                    match format {
                        BodyFormat::Cbor => observatory_examples::to_cbor(events),
                        _ => observatory_examples::to_ndjson(events),
                    }
                })
                .collect();
            let parse_only = rate_per_s(40_000, Duration::from_secs(2), || {
                for payload in &payloads {
                    let parsed = parse_body(format, payload, now, &limits).expect("parse");
                    assert_eq!(parsed.events.len(), 1000);
                }
            });
            let end_to_end = runtime.block_on(ingest_end_to_end(&payloads, format, ack));
            println!(
                "  {:<7} ack={:<8}  end to end {:>10} events/s   parse-only {:>10} events/s   ratio {:.2} (target >= 0.40)",
                if format == BodyFormat::Cbor { "CBOR" } else { "NDJSON" },
                format!("{ack:?}").to_lowercase(),
                thousands(end_to_end),
                thousands(parse_only),
                end_to_end / parse_only
            );
        }
    }
    println!();
}

async fn ingest_end_to_end(payloads: &[Vec<u8>], format: BodyFormat, ack: AckMode) -> f64 {
    let peer = ServedPeer::serve(ack).await;
    let addr = peer.addr;
    let content_type = if format == BodyFormat::Cbor { "application/cbor" } else { "application/x-ndjson" };
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/api/v1/events");
    let payloads: Arc<Vec<Vec<u8>>> = Arc::new(payloads.to_vec());
    let start = std::time::Instant::now();
    let deadline = Duration::from_secs(3);
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let (client, url, payloads) = (client.clone(), url.clone(), payloads.clone());
        tasks.push(tokio::spawn(async move {
            let mut accepted = 0u64;
            let mut i = worker;
            while start.elapsed() < deadline {
                let body = payloads[i % payloads.len()].clone();
                let response = client
                    .post(&url)
                    .header("content-type", content_type)
                    .body(body)
                    .send()
                    .await
                    .expect("post");
                assert!(response.status().is_success(), "{}", response.status());
                let text = response.text().await.expect("answer");
                let accepted_here: u64 = text
                    .split("\"accepted\":")
                    .nth(1)
                    .and_then(|rest| rest.split(',').next())
                    .and_then(|n| n.trim().parse().ok())
                    .expect("accepted count");
                accepted += accepted_here;
                i += 8;
            }
            accepted
        }));
    }
    let mut accepted = 0;
    for task in tasks {
        accepted += task.await.expect("client task");
    }
    let rate = accepted as f64 / start.elapsed().as_secs_f64();
    peer.stop().await;
    rate
}

/// Draws a log-normal latency in microseconds around `median_us`.
fn log_normal_us(rng: &mut StdRng, median_us: f64, sigma: f64) -> u64 {
    // Box-Muller: a standard normal from two uniforms.
    let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    (median_us * (sigma * z).exp()).round() as u64
}

fn synthetic_state(n_edges: usize, events_per_bucket: usize, buckets: i64) -> FlowState {
    let mut state = FlowState::new(
        default_settings(),
        Limits { edges_max: 1_000_000, nodes_max: 1_000_000, ..default_limits() },
    );
    state.set_local(Origin::new("bench", 1));
    let mut rng = StdRng::seed_from_u64(3);
    let side = (n_edges as f64).sqrt().ceil() as usize + 1;
    let names: Vec<NodeName> =
        (0..2 * side).map(|i| NodeName::new(&format!("svc-{i}"), 200).unwrap()).collect();
    let edges: Vec<Edge> =
        (0..n_edges).map(|i| Edge::new(names[i % side].clone(), names[side + i / side].clone())).collect();
    let medians: Vec<f64> = (0..n_edges).map(|_| rng.random_range(500.0..200_000.0)).collect();
    for b in 0..buckets {
        let bucket_start = NOW_MS - (buckets - b) * 10_000;
        let mut batch = Vec::with_capacity(n_edges * events_per_bucket);
        for (edge, median) in edges.iter().zip(&medians) {
            for k in 0..events_per_bucket {
                batch.push(Event {
                    edge: edge.clone(),
                    ts_ms: bucket_start + (k as i64 * 10_000 / events_per_bucket as i64),
                    latency_us: Some(log_normal_us(&mut rng, *median, 0.6)),
                    error: rng.random_bool(0.01),
                    bytes: 300,
                    count: 1,
                });
            }
        }
        for chunk in batch.chunks(10_000) {
            let outcome = state.apply_local(bucket_start + 10_000, chunk);
            assert_eq!(outcome.accepted, chunk.len());
        }
    }
    state
}

/// Global graph query latency for a 5-minute window.
fn bench_query() {
    println!("== graph query, 5 min window (30 buckets of 10 s per edge, 20 calls each, log-normal latency)");
    for n_edges in [1000, 5000] {
        let state = synthetic_state(n_edges, 20, 30);
        let query = median_time(15, || {
            let view = state.graph(5 * 60 * 1000, NOW_MS).expect("graph");
            assert_eq!(view.edges.len(), n_edges);
        });
        // Baseline: the dense-histogram design: merge 30 hdrhistograms per edge and read
        // the same quantiles, for 100 edges, scaled to n_edges.
        let mut rng = StdRng::seed_from_u64(5);
        let dense: Vec<Vec<hdrhistogram::Histogram<u64>>> = (0..100)
            .map(|_| {
                (0..30)
                    .map(|_| {
                        let mut h = hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 2).unwrap();
                        for _ in 0..20 {
                            h.saturating_record(log_normal_us(&mut rng, 20_000.0, 0.6));
                        }
                        h
                    })
                    .collect()
            })
            .collect();
        let dense_time = median_time(5, || {
            for cells in &dense {
                let mut sum = hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 2).unwrap();
                for h in cells {
                    sum.add(h).unwrap();
                }
                for q in [0.5, 0.9, 0.95, 0.99] {
                    std::hint::black_box(sum.value_at_quantile(q));
                }
            }
        }) * (n_edges as u32 / 100);
        println!(
            "  {n_edges:>5} edges: {:>8.2} ms (target < 50 ms at 5,000)   dense-hdrhistogram merge baseline {:>8.2} ms   ratio {:.2}",
            query.as_secs_f64() * 1e3,
            dense_time.as_secs_f64() * 1e3,
            query.as_secs_f64() / dense_time.as_secs_f64()
        );
    }
    println!();
}

/// Bytes per sealed cell: encoded, in memory, on disk; against hdrhistogram V2+DEFLATE.
fn bench_cells() {
    println!("== bytes per sealed cell, all resolutions (10s, 1m, 1h, total)");
    // Typical: 1,000 edges at 5 calls/s each for 30 min (50 samples per 10 s cell).
    let before = ALLOCATOR.allocated();
    let state = synthetic_state(1000, 50, 180);
    let memory = ALLOCATOR.allocated() - before;
    report_cells("typical: 1,000 edges x 5 calls/s x 30 min", &state, memory);
    report_sealed_memory(state, memory);

    // Heavy: the shop at 2,000 events/s for 10 min, 20 edges (hundreds of samples per cell).
    let before = ALLOCATOR.allocated();
    let mut state = fresh_state();
    let mut shop = observatory_examples::Shop::new(11);
    let start = NOW_MS - 10 * 60 * 1000;
    for second in 0..600 {
        let events = core_events(&shop.events(2000, start + second * 1000, 1000));
        let outcome = state.apply_local(start + second * 1000 + 1000, &events);
        assert_eq!(outcome.rejected.len(), 0);
    }
    let memory = ALLOCATOR.allocated() - before;
    report_cells("heavy: the shop at 2,000 events/s x 10 min", &state, memory);
    println!("  baseline dense hdrhistogram in memory: {} B per histogram\n", dense_hdr_bytes());
}

/// Memory per cell once every sealed bucket is packed (three hours later).
fn report_sealed_memory(mut state: FlowState, memory: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(dir.path(), &default_settings(), &NetIdentity).expect("store");
    let cells = state.stats().cells;
    let before = ALLOCATOR.allocated();
    let mut batch = WriteBatch::default();
    observatory_store::pack_sealed_buckets(&mut state, &mut store, NOW_MS + 3 * 3_600_000, &mut batch);
    drop(batch);
    let freed = before.saturating_sub(ALLOCATOR.allocated());
    println!(
        "    in memory once sealed {:>6.0} B per cell (histograms held packed)",
        (memory - freed) as f64 / cells as f64
    );
}

fn report_cells(name: &str, state: &FlowState, memory: usize) {
    let state = state.clone();
    let origin = state.local_origin().unwrap().clone();
    let deltas = state.to_deltas();
    let cells: Vec<_> = deltas.iter().flat_map(|d| d.cells.iter()).collect();
    let encoded: usize = cells.iter().map(|(_, c)| observatory_store::sled_store::encode_cell(c).len()).sum();
    let hdr_v2_deflate: usize = cells.iter().map(|(_, c)| v2_deflate_len(&c.data.latency)).sum();
    let samples: u64 = cells.iter().map(|(_, c)| c.data.latency.len()).sum();

    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(dir.path(), &default_settings(), &NetIdentity).expect("store");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let empty = store.size_on_disk();
    for chunk in cells.chunks(1000) {
        let mut batch = WriteBatch::default();
        for (key, cell) in chunk {
            store.put_cell(&mut batch, &origin, key, cell);
        }
        store.apply(batch).unwrap();
    }
    runtime.block_on(store.flush()).unwrap();
    let disk = store.size_on_disk().saturating_sub(empty);
    // The same cells once their buckets are sealed and packed (open-ended `total` and
    // the current `1h` buckets stay one record each): packed in place, where sled keeps
    // the superseded records until it cleans their segments, and written afresh.
    let mut sealed_state = state.clone();
    let mut batch = WriteBatch::default();
    observatory_store::pack_sealed_buckets(&mut sealed_state, &mut store, NOW_MS + 3 * 3_600_000, &mut batch);
    store.apply(batch).unwrap();
    runtime.block_on(store.flush()).unwrap();
    let packed_in_place = store.size_on_disk().saturating_sub(empty);
    drop(store);
    let fresh_dir = tempfile::tempdir().unwrap();
    let (mut fresh, _) = Store::open(fresh_dir.path(), &default_settings(), &NetIdentity).expect("store");
    let fresh_empty = fresh.size_on_disk();
    let mut sealed_state = state.clone();
    let mut batch = WriteBatch::default();
    observatory_store::pack_sealed_buckets(&mut sealed_state, &mut fresh, NOW_MS + 3 * 3_600_000, &mut batch);
    fresh.apply(batch).unwrap();
    let mut batch = WriteBatch::default();
    for (key, cell) in cells.iter().filter(|(k, _)| k.resolution == 3 || k.resolution == 2) {
        fresh.put_cell(&mut batch, &origin, key, cell);
    }
    fresh.apply(batch).unwrap();
    runtime.block_on(fresh.flush()).unwrap();
    let packed_fresh = fresh.size_on_disk().saturating_sub(fresh_empty);

    let n = cells.len() as f64;
    println!("  {name}: {} cells, mean {:.0} latency samples per cell", cells.len(), samples as f64 / n);
    println!(
        "    encoded cell record {:>6.0} B   baseline hdrhistogram V2+DEFLATE (latency only) {:>6.0} B   ratio {:.2}",
        encoded as f64 / n,
        hdr_v2_deflate as f64 / n,
        encoded as f64 / hdr_v2_deflate as f64
    );
    println!("    on disk, one record per cell (open buckets) {:>6.0} B per cell", disk as f64 / n);
    println!(
        "    on disk, sealed buckets packed afresh      {:>6.0} B per cell (target <= 200)",
        packed_fresh as f64 / n
    );
    println!(
        "    on disk, packed in place before sled cleans {:>5.0} B per cell",
        packed_in_place as f64 / n
    );
    println!(
        "    in memory {:>6.0} B per cell (cell, its share of the global view, indexes)",
        memory as f64 / n
    );
}

fn v2_deflate_len(histogram: &LatencyHistogram) -> usize {
    use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
    let mut dense = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).unwrap();
    for (index, count) in histogram.counters() {
        dense.record_n(observatory_core::histogram::lowest_value_at(index), count).unwrap();
    }
    let mut out = Vec::new();
    V2DeflateSerializer::new().serialize(&dense, &mut out).unwrap();
    out.len()
}

fn dense_hdr_bytes() -> usize {
    let before = ALLOCATOR.allocated();
    let h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).unwrap();
    let bytes = ALLOCATOR.allocated() - before;
    drop(h);
    bytes
}
