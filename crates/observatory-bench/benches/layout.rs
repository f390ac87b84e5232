//! `cargo bench -p observatory-bench --bench layout`
//!
//! The drawing of a big system: 1,000 services in ten tiers and 5,000 edges (most to the
//! next tier, some two tiers on, 2% calling back up, so that cycles must be broken).
//! Target: a fresh layout in at most 200 ms on the peer. Also the refresh paths: the same
//! topology with the previous drawing (what every refresh of an unchanged graph costs),
//! one new edge to a new service, and the SVG of the whole drawing. Baseline in the same
//! run: serialising the drawing as JSON, which every answer pays anyway.

use std::collections::BTreeSet;

use observatory_bench::{median_time, tiered_system};
use observatory_layout::{Decor, EdgeKey, LayoutConfig, layout, svg};

fn main() {
    let config = LayoutConfig::default();
    let edges: BTreeSet<EdgeKey> = tiered_system(10, 100, 5_000)
        .into_iter()
        .map(|(from, to, kind)| EdgeKey::new(from, to, kind))
        .collect();
    let nodes: BTreeSet<&str> = edges.iter().flat_map(|e| [e.from.as_str(), e.to.as_str()]).collect();
    let drawing = layout(&edges, None, &config);
    let backward =
        drawing.edges.iter().filter(|e| e.direction == observatory_layout::Direction::Backward).count();
    let bends: usize = drawing.edges.iter().map(|e| e.points.len().saturating_sub(2)).sum();
    println!(
        "layout: {} nodes, {} edges ({backward} drawn backwards to break cycles, {bends} bend points), {} ranks",
        nodes.len(),
        edges.len(),
        drawing.nodes.iter().map(|n| n.rank).max().unwrap_or(0) + 1
    );
    let runs = 9;
    let baseline = median_time(runs, || {
        std::hint::black_box(serde_json::to_vec(&drawing).unwrap());
    });
    let fresh = median_time(runs, || {
        std::hint::black_box(layout(&edges, None, &config));
    });
    let unchanged = median_time(runs, || {
        std::hint::black_box(layout(&edges, Some(&drawing), &config));
    });
    let mut more = edges.clone();
    more.insert(EdgeKey::new("t3-svc-007", "a-new-service", "request"));
    let extended = median_time(runs, || {
        std::hint::black_box(layout(&more, Some(&drawing), &config));
    });
    let picture = median_time(runs, || {
        std::hint::black_box(svg(&drawing, &Decor::default()));
    });
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    let ratio = |d: std::time::Duration| d.as_secs_f64() / baseline.as_secs_f64();
    println!("  baseline: the drawing as JSON       {:>8.1} ms", ms(baseline));
    println!(
        "  fresh layout                        {:>8.1} ms  ({:.1}x baseline; target <= 200 ms)",
        ms(fresh),
        ratio(fresh)
    );
    println!("  refresh, unchanged topology         {:>8.1} ms  ({:.1}x)", ms(unchanged), ratio(unchanged));
    println!("  refresh, one new edge and service   {:>8.1} ms  ({:.1}x)", ms(extended), ratio(extended));
    println!("  SVG of the whole drawing            {:>8.1} ms  ({:.1}x)", ms(picture), ratio(picture));
}
