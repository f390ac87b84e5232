//! Laws every drawing keeps: no two nodes overlap, bend points stay clear of nodes, edges
//! run rightwards unless reversed to break a cycle, one bend per rank crossed; and
//! stability: an unchanged topology draws identically, an extended one moves nothing it
//! held.

use std::collections::{BTreeMap, BTreeSet};

use observatory_layout::{Direction, EdgeKey, Layout, LayoutConfig, RoutedEdge, layout};
use proptest::prelude::*;

const KINDS: [&str; 3] = ["request", "messaging", "database"];

fn edges_strategy(nodes: usize, edges: usize) -> impl Strategy<Value = BTreeSet<EdgeKey>> {
    prop::collection::btree_set((0..nodes, 0..nodes, 0..3usize), 1..edges).prop_map(|set| {
        set.into_iter()
            .map(|(a, b, k)| EdgeKey::new(format!("svc-{a:02}"), format!("svc-{b:02}"), KINDS[k]))
            .collect()
    })
}

fn check_no_overlap(drawing: &Layout, config: &LayoutConfig) -> Result<(), TestCaseError> {
    let mut columns: BTreeMap<i32, Vec<(f64, f64, String)>> = BTreeMap::new();
    for node in &drawing.nodes {
        prop_assert!((node.x - f64::from(node.rank) * config.rank_gap).abs() < 1e-9, "x follows the rank");
        columns.entry(node.rank).or_default().push((node.y, config.node_height / 2.0, node.name.clone()));
    }
    for edge in &drawing.edges {
        if matches!(edge.direction, Direction::Loop | Direction::Flat) {
            continue;
        }
        for p in &edge.points[1..edge.points.len() - 1] {
            let rank = (p[0] / config.rank_gap).round() as i32;
            prop_assert!((p[0] - f64::from(rank) * config.rank_gap).abs() < 1e-9, "bends sit on a rank");
            columns.entry(rank).or_default().push((p[1], 0.0, format!("bend of {}->{}", edge.from, edge.to)));
        }
    }
    // Neighbours in a rank keep their gap, so nothing overlaps.
    for (rank, things) in &mut columns {
        things.sort_by(|a, b| a.0.total_cmp(&b.0));
        for pair in things.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            {
                // Two nodes are at least a bend's clearance on both sides apart: a route may
                // have run between them (node_gap applies where nothing did).
                let gap = if a.1 > 0.0 && b.1 > 0.0 { 2.0 * config.route_gap } else { config.route_gap };
                // Two bends of edges with the same ends share their place.
                if a.1 == 0.0 && b.1 == 0.0 && (a.0 - b.0).abs() < 1e-9 {
                    continue;
                }
                prop_assert!(
                    (a.0 - b.0).abs() >= a.1 + b.1 + gap - 0.02,
                    "rank {rank}: {} at {} and {} at {} overlap",
                    a.2,
                    a.0,
                    b.2,
                    b.0
                );
            }
        }
    }
    Ok(())
}

/// Whether `from` reaches `to` along the drawn directions of every edge but `except`.
fn reaches_drawn(drawing: &Layout, except: &RoutedEdge, from: &str, to: &str) -> bool {
    let arcs: Vec<(&str, &str)> = drawing
        .edges
        .iter()
        .filter(|e| !(e.from == except.from && e.to == except.to))
        .map(|e| match e.direction {
            Direction::Backward => (e.to.as_str(), e.from.as_str()),
            _ => (e.from.as_str(), e.to.as_str()),
        })
        .collect();
    let mut seen = BTreeSet::new();
    let mut stack = vec![from];
    while let Some(v) = stack.pop() {
        if v == to {
            return true;
        }
        if seen.insert(v) {
            stack.extend(arcs.iter().filter(|a| a.0 == v).map(|a| a.1));
        }
    }
    false
}

fn check_directions(drawing: &Layout, edges: &BTreeSet<EdgeKey>) -> Result<(), TestCaseError> {
    // Forward edges alone are acyclic: ranks rise along them (checked below).

    prop_assert_eq!(drawing.edges.len(), edges.len());
    for edge in &drawing.edges {
        let (from, to) = (drawing.node(&edge.from).unwrap(), drawing.node(&edge.to).unwrap());
        match edge.direction {
            Direction::Loop => prop_assert_eq!(&edge.from, &edge.to),
            Direction::Forward => prop_assert!(from.rank < to.rank),
            Direction::Backward => {
                prop_assert!(from.rank > to.rank);
                // Only what is needed is reversed: running it forwards would close a cycle.
                prop_assert!(
                    reaches_drawn(drawing, edge, &edge.to, &edge.from),
                    "{} -> {} is reversed though running it forwards closes no cycle",
                    edge.from,
                    edge.to
                );
            }
            Direction::Flat => prop_assert!(false, "a fresh drawing has no flat edge: {:?}", edge),
        }
        if matches!(edge.direction, Direction::Forward | Direction::Backward) {
            prop_assert_eq!(
                edge.points.len() as i32,
                (from.rank - to.rank).abs() + 1,
                "one bend per rank crossed"
            );
        }
    }
    Ok(())
}

fn check_kept(before: &Layout, after: &Layout) -> Result<(), TestCaseError> {
    for node in &before.nodes {
        if let Some(now) = after.node(&node.name) {
            // Its shape may change (a database that starts calling out is a service).
            prop_assert_eq!((now.rank, now.x, now.y), (node.rank, node.x, node.y), "{} moved", node.name);
        }
    }
    for edge in &before.edges {
        if let Some(now) =
            after.edges.iter().find(|e| (&e.from, &e.to, &e.kind) == (&edge.from, &edge.to, &edge.kind))
        {
            prop_assert_eq!(now, edge, "a held route changed");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn fresh_drawings_keep_their_laws(edges in edges_strategy(16, 40)) {
        let config = LayoutConfig::default();
        let drawing = layout(&edges, None, &config);
        check_no_overlap(&drawing, &config)?;
        check_directions(&drawing, &edges)?;
        prop_assert_eq!(&layout(&edges, None, &config), &drawing, "the same edges draw the same");
        prop_assert_eq!(&layout(&edges, Some(&drawing), &config), &drawing, "an unchanged topology does not move");
    }

    #[test]
    fn new_edges_move_nothing_held(edges in edges_strategy(12, 30), more in edges_strategy(20, 12)) {
        let config = LayoutConfig::default();
        let before = layout(&edges, None, &config);
        let extended: BTreeSet<EdgeKey> = edges.union(&more).cloned().collect();
        let after = layout(&extended, Some(&before), &config);
        check_kept(&before, &after)?;
        check_no_overlap(&after, &config)?;
        prop_assert_eq!(after.edges.len(), extended.len());
        // And a drawing of the extended graph is stable in its turn.
        prop_assert_eq!(&layout(&extended, Some(&after), &config), &after);
    }

    #[test]
    fn removed_edges_move_nothing_left(edges in edges_strategy(14, 40), drop in prop::collection::vec(any::<prop::sample::Index>(), 1..6)) {
        let config = LayoutConfig::default();
        let before = layout(&edges, None, &config);
        let list: Vec<&EdgeKey> = edges.iter().collect();
        let gone: BTreeSet<&EdgeKey> = drop.iter().map(|i| *i.get(&list)).collect();
        let fewer: BTreeSet<EdgeKey> = edges.iter().filter(|e| !gone.contains(e)).cloned().collect();
        prop_assume!(!fewer.is_empty());
        let after = layout(&fewer, Some(&before), &config);
        check_kept(&before, &after)?;
        check_no_overlap(&after, &config)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// With the remembered drawing, nodes that left the graph come back to their place,
    /// and what arrived meanwhile did not take it.
    #[test]
    fn nodes_that_leave_and_return_keep_their_place(
        edges in edges_strategy(12, 30),
        drop in prop::collection::vec(any::<prop::sample::Index>(), 1..8),
        meanwhile in edges_strategy(20, 8),
    ) {
        let config = LayoutConfig::default();
        let first = layout(&edges, None, &config);
        let list: Vec<&EdgeKey> = edges.iter().collect();
        let gone: BTreeSet<&EdgeKey> = drop.iter().map(|i| *i.get(&list)).collect();
        let mut fewer: BTreeSet<EdgeKey> = edges.iter().filter(|e| !gone.contains(e)).cloned().collect();
        fewer.extend(meanwhile.iter().cloned());
        let second = layout(&fewer, Some(&first), &config);
        let memory = second.remembering(&first, &config);
        let all: BTreeSet<EdgeKey> = edges.union(&fewer).cloned().collect();
        let third = layout(&all, Some(&memory), &config);
        check_kept(&memory, &third)?;
        check_kept(&second, &third)?;
        if first.nodes.iter().any(|n| second.node(&n.name).is_some()) {
            // Extended, not drawn afresh: everything first drew is remembered.
            check_kept(&first, &third)?;
        }
        check_no_overlap(&third, &config)?;
    }
}

#[test]
fn a_service_chain_reads_left_to_right() {
    let edges: BTreeSet<EdgeKey> = [
        EdgeKey::new("web", "checkout", "request"),
        EdgeKey::new("checkout", "payments", "request"),
        EdgeKey::new("checkout", "orders-db", "database"),
        EdgeKey::new("payments", "checkout", "request"),
    ]
    .into_iter()
    .collect();
    let drawing = layout(&edges, None, &LayoutConfig::default());
    let rank = |name: &str| drawing.node(name).unwrap().rank;
    assert_eq!((rank("web"), rank("checkout"), rank("payments")), (0, 1, 2));
    assert_eq!(rank("orders-db"), 2);
    let back = drawing.edges.iter().find(|e| e.from == "payments").unwrap();
    assert_eq!(back.direction, Direction::Backward, "the cycle is broken on its return edge");
    assert_eq!(drawing.node("orders-db").unwrap().shape, observatory_layout::Shape::Database);
    assert_eq!(drawing.node("checkout").unwrap().shape, observatory_layout::Shape::Service);
    let json = serde_json::to_string(&drawing).unwrap();
    assert_eq!(
        serde_json::from_str::<Layout>(&json).unwrap(),
        drawing,
        "the drawing goes over JSON unchanged"
    );
}

#[test]
fn a_new_caller_joins_without_moving_anyone() {
    let config = LayoutConfig::default();
    let edges: BTreeSet<EdgeKey> =
        [EdgeKey::new("web", "checkout", "request"), EdgeKey::new("checkout", "payments", "request")].into();
    let before = layout(&edges, None, &config);
    let mut more = edges.clone();
    more.insert(EdgeKey::new("mobile", "checkout", "request"));
    more.insert(EdgeKey::new("payments", "ledger", "messaging"));
    let after = layout(&more, Some(&before), &config);
    for name in ["web", "checkout", "payments"] {
        assert_eq!(after.node(name), before.node(name), "{name} stayed");
    }
    let mobile = after.node("mobile").unwrap();
    assert_eq!(mobile.rank, 0, "a new caller sits before its callee");
    assert_ne!(mobile.y, after.node("web").unwrap().y, "next to web, not on it");
    assert_eq!(after.node("ledger").unwrap().rank, 3);
}
