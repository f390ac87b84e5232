//! A layered drawing of the flow graph, computed on the peer so that the page, `/graph.svg`
//! and `observatory graph --format svg` all draw the same picture.
//!
//! [`layout`] is a pure function of the edges, the previous drawing and a [`LayoutConfig`]:
//!
//! - **Fresh** (no previous drawing, or none of its nodes is left): the Sugiyama steps.
//!   Cycles are broken by reversing the links a greedy order (Eades, Lin and Smyth)
//!   leaves pointing backwards, only those that are needed;
//!   ranks are longest paths from the sources, with sources pulled next to their first
//!   successor; long edges get one bend point per rank they cross; crossings are reduced by
//!   barycenter sweeps, keeping the best order seen; coordinates balance each node between
//!   its neighbours while keeping the order and the gaps.
//! - **Extended** (a previous drawing shares nodes): every node the previous drawing held
//!   keeps its rank and position, and every edge it held keeps its route. New nodes are
//!   ranked after their placed callers (or before their placed callees) and put in the free
//!   place nearest to their neighbours; new edges get bend points in free places. So an
//!   unchanged topology draws identically and a new edge moves nothing it does not touch.
//!   An edge added between two held nodes against their ranks is drawn backwards (or, within
//!   one rank, as a flat arc) rather than moving anything; ask for a fresh drawing to tidy.
//!
//! Ranks run left to right (`x = rank × rank_gap`), the order within a rank top to bottom.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

mod order;
pub mod palette;
mod svg;

pub use svg::{Decor, EdgeDecor, Health, NodeDecor, route_path, svg};

/// One edge of the flow graph, as the drawing knows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EdgeKey {
    /// Sender.
    pub from: String,
    /// Receiver.
    pub to: String,
    /// `request`, `messaging` or `database`.
    pub kind: String,
}

impl EdgeKey {
    /// An edge from `from` to `to` of `kind`.
    pub fn new(from: impl Into<String>, to: impl Into<String>, kind: impl Into<String>) -> Self {
        EdgeKey { from: from.into(), to: to.into(), kind: kind.into() }
    }
}

/// Sizes of the drawing, in pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayoutConfig {
    /// Horizontal distance between ranks; more than `node_width`, so ranks never overlap.
    pub rank_gap: f64,
    /// Width of a node's box.
    pub node_width: f64,
    /// Height of a node's box.
    pub node_height: f64,
    /// Least vertical space between two nodes of one rank.
    pub node_gap: f64,
    /// Least vertical space between a bend point and anything else in its rank.
    pub route_gap: f64,
    /// Most barycenter sweeps (down and up) of crossing reduction.
    pub sweeps: usize,
}

impl Default for LayoutConfig {
    fn default() -> Self {
        LayoutConfig {
            rank_gap: 330.0,
            node_width: 168.0,
            node_height: 40.0,
            node_gap: 28.0,
            route_gap: 10.0,
            sweeps: 12,
        }
    }
}

/// How a node is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// A service: a rounded box.
    Service,
    /// Receives only database calls and sends nothing: a cylinder.
    Database,
}

/// A node with its place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacedNode {
    /// Name.
    pub name: String,
    /// Rank (column); may be negative in an extended drawing.
    pub rank: i32,
    /// Centre, horizontally.
    pub x: f64,
    /// Centre, vertically.
    pub y: f64,
    /// How it is drawn.
    pub shape: Shape,
}

/// Which way an edge runs in the drawing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// To a higher rank (rightwards).
    Forward,
    /// To a lower rank: reversed to break a cycle (or, extended, to keep ranks).
    Backward,
    /// Within one rank (extended drawings only): an arc on the right.
    Flat,
    /// From a node to itself.
    Loop,
}

/// An edge with its route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutedEdge {
    /// Sender.
    pub from: String,
    /// Receiver.
    pub to: String,
    /// Kind.
    pub kind: String,
    /// Which way it runs.
    pub direction: Direction,
    /// From the sender's side to the receiver's side, with one bend point per rank crossed.
    pub points: Vec<[f64; 2]>,
}

/// The box everything is drawn in.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bounds {
    /// Left.
    pub min_x: f64,
    /// Top.
    pub min_y: f64,
    /// Right.
    pub max_x: f64,
    /// Bottom.
    pub max_y: f64,
}

/// A drawing of the flow graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    /// Nodes by name.
    pub nodes: Vec<PlacedNode>,
    /// Edges by (from, to, kind).
    pub edges: Vec<RoutedEdge>,
    /// Node box width the drawing was made with.
    pub node_width: f64,
    /// Node box height the drawing was made with.
    pub node_height: f64,
    /// Everything drawn lies within, with a margin.
    pub bounds: Bounds,
}

impl Layout {
    /// This drawing, and what `previous` drew that this one does not show, so that a node
    /// or an edge that leaves the graph and comes back is drawn where it was (and nothing
    /// new takes its place meanwhile). The memory to hand to the next [`layout`]. What
    /// `previous` drew where this drawing now has something (it was drawn afresh) is
    /// forgotten.
    pub fn remembering(&self, previous: &Layout, config: &LayoutConfig) -> Layout {
        let half = config.node_height / 2.0;
        // Clear of this drawing's nodes: not overlapping, with a bend's clearance. Fresh
        // drawings round centres to 0.01, so a place drawn right at the clearance may lie up
        // to that much inside it.
        let clear = |rank: i32, y: f64, own_half: f64| {
            self.nodes
                .iter()
                .all(|n| n.rank != rank || (n.y - y).abs() >= half + own_half + config.route_gap - 0.02)
        };
        let mut nodes = self.nodes.clone();
        nodes.extend(
            previous
                .nodes
                .iter()
                .filter(|n| self.node(&n.name).is_none() && clear(n.rank, n.y, half))
                .cloned(),
        );
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let kept = |name: &str| nodes.binary_search_by(|n| n.name.as_str().cmp(name)).is_ok();
        let key = |e: &RoutedEdge| (e.from.clone(), e.to.clone(), e.kind.clone());
        // Routes belong to a pair of nodes (every kind between them shares one): a pair
        // this drawing shows keeps this drawing's route only.
        let shown: BTreeSet<(&str, &str)> =
            self.edges.iter().map(|e| (e.from.as_str(), e.to.as_str())).collect();
        let remembered: Vec<RoutedEdge> = previous
            .edges
            .iter()
            .filter(|e| !shown.contains(&(e.from.as_str(), e.to.as_str())) && kept(&e.from) && kept(&e.to))
            .filter(|e| {
                e.points.iter().skip(1).take(e.points.len().saturating_sub(2)).all(|p| {
                    let rank = (p[0] / config.rank_gap).round() as i32;
                    clear(rank, p[1], 0.0)
                })
            })
            .cloned()
            .collect();
        let mut edges = self.edges.clone();
        edges.extend(remembered);
        edges.sort_by_key(key);
        Layout { nodes, edges, ..self.clone() }
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<&PlacedNode> {
        self.nodes.binary_search_by(|n| n.name.as_str().cmp(name)).ok().map(|i| &self.nodes[i])
    }
}

/// A graph of at least this many nodes of which the previous drawing holds under a
/// quarter is drawn afresh.
const FRESH_BELOW_NODES: usize = 64;

/// Draws `edges`, keeping what `previous` drew of them (see the module header).
pub fn layout(edges: &BTreeSet<EdgeKey>, previous: Option<&Layout>, config: &LayoutConfig) -> Layout {
    let names: Vec<String> = edges
        .iter()
        .flat_map(|e| [e.from.clone(), e.to.clone()])
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let id = |name: &str| names.binary_search_by(|n| n.as_str().cmp(name)).expect("every endpoint is a node");
    let links: BTreeSet<(usize, usize)> =
        edges.iter().map(|e| (id(&e.from), id(&e.to))).filter(|(u, v)| u != v).collect();
    // A previous drawing that holds none of the nodes, or under a quarter of a big graph,
    // would only make a poor drawing of the new graph: draw afresh instead.
    let previous = previous.filter(|p| {
        let held = names.iter().filter(|n| p.node(n).is_some()).count();
        held > 0 && !(names.len() >= FRESH_BELOW_NODES && held * 4 < names.len())
    });
    let placed = match previous {
        Some(previous) => extend(&names, &links, previous, config),
        None => fresh(names.len(), &links, config),
    };
    assemble(edges, &names, placed, config)
}

/// Ranks, centres and routes of one drawing, by node id and by link.
struct Placement {
    rank: Vec<i32>,
    y: Vec<f64>,
    /// Bend points of each link (sender to receiver), between the two ends.
    bends: BTreeMap<(usize, usize), Vec<[f64; 2]>>,
}

fn fresh(n: usize, links: &BTreeSet<(usize, usize)>, config: &LayoutConfig) -> Placement {
    let reversed = back_edges(n, links, |_| true);
    let arcs: BTreeSet<(usize, usize)> =
        links.iter().map(|&(u, v)| if reversed.contains(&(u, v)) { (v, u) } else { (u, v) }).collect();
    let rank = longest_path_ranks(n, &arcs);
    let mut graph = order::Layered::new(&rank, &arcs);
    graph.reduce_crossings(config.sweeps);
    let y = graph.coordinates(config);
    let x = |r: i32| f64::from(r) * config.rank_gap;
    let mut bends = BTreeMap::new();
    for &(u, v) in links {
        let chain = if reversed.contains(&(u, v)) {
            let mut chain = graph.chain(v, u);
            chain.reverse();
            chain
        } else {
            graph.chain(u, v)
        };
        let points = chain[1..chain.len() - 1].iter().map(|&d| [x(graph.rank[d]), y[d]]).collect();
        bends.insert((u, v), points);
    }
    let rank = rank.into_iter().map(|r| r as i32).collect();
    Placement { rank, y: y[..n].to_vec(), bends }
}

/// Links whose reversal makes the graph acyclic, among the nodes for which `among`
/// holds. The order is Eades, Lin and Smyth's greedy one (sinks to the end, sources to
/// the front, else the node with the most surplus of outgoing links, smallest id on
/// ties); the links it leaves pointing backwards are reversed, except those that close
/// no cycle once the others are reversed, which are put back.
fn back_edges(
    n: usize,
    links: &BTreeSet<(usize, usize)>,
    among: impl Fn(usize) -> bool,
) -> BTreeSet<(usize, usize)> {
    let inside: Vec<(usize, usize)> = links.iter().copied().filter(|&(u, v)| among(u) && among(v)).collect();
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut into: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(u, v) in &inside {
        out[u].push(v);
        into[v].push(u);
    }
    let mut alive: BTreeSet<usize> = (0..n).filter(|&v| among(v)).collect();
    let mut outdeg: Vec<usize> = out.iter().map(Vec::len).collect();
    let mut indeg: Vec<usize> = into.iter().map(Vec::len).collect();
    let (mut front, mut back) = (Vec::new(), Vec::new());
    let remove = |v: usize, alive: &mut BTreeSet<usize>, outdeg: &mut Vec<usize>, indeg: &mut Vec<usize>| {
        alive.remove(&v);
        for &w in &out[v] {
            indeg[w] -= 1;
        }
        for &w in &into[v] {
            outdeg[w] -= 1;
        }
    };
    while !alive.is_empty() {
        let mut moved = true;
        while moved {
            moved = false;
            while let Some(&v) = alive.iter().find(|&&v| outdeg[v] == 0) {
                remove(v, &mut alive, &mut outdeg, &mut indeg);
                back.push(v);
                moved = true;
            }
            while let Some(&v) = alive.iter().find(|&&v| indeg[v] == 0) {
                remove(v, &mut alive, &mut outdeg, &mut indeg);
                front.push(v);
                moved = true;
            }
        }
        if let Some(&v) =
            alive.iter().max_by_key(|&&v| (outdeg[v] as i64 - indeg[v] as i64, std::cmp::Reverse(v)))
        {
            remove(v, &mut alive, &mut outdeg, &mut indeg);
            front.push(v);
        }
    }
    front.extend(back.into_iter().rev());
    let mut place = vec![0usize; n];
    for (i, &v) in front.iter().enumerate() {
        place[v] = i;
    }
    let mut reversed: BTreeSet<(usize, usize)> =
        inside.iter().copied().filter(|&(u, v)| place[u] > place[v]).collect();
    // Put back what closes no cycle: (u, v) may run forwards again unless v already
    // reaches u along the drawn directions.
    let mut drawn: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(u, v) in &inside {
        if reversed.contains(&(u, v)) {
            drawn[v].push(u);
        } else {
            drawn[u].push(v);
        }
    }
    // Putting one back flips its drawn arc, which may break the path that justified
    // keeping an earlier one: repeat until nothing more can be put back.
    loop {
        let mut put_back = false;
        for (u, v) in reversed.clone() {
            let at = drawn[v].iter().position(|&w| w == u).expect("a reversed link is drawn");
            drawn[v].swap_remove(at);
            let mut seen = vec![false; n];
            let mut stack = vec![v];
            let mut closes = false;
            while let Some(x) = stack.pop() {
                if x == u {
                    closes = true;
                    break;
                }
                if !std::mem::replace(&mut seen[x], true) {
                    stack.extend(drawn[x].iter().copied().filter(|&w| !seen[w]));
                }
            }
            if closes {
                drawn[v].push(u);
            } else {
                reversed.remove(&(u, v));
                drawn[u].push(v);
                put_back = true;
            }
        }
        if !put_back {
            break;
        }
    }
    reversed
}

/// Topological order of an acyclic `arcs`, smallest id first among the ready.
fn topological(n: usize, arcs: &BTreeSet<(usize, usize)>, among: impl Fn(usize) -> bool) -> Vec<usize> {
    let mut indegree = vec![0usize; n];
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(u, v) in arcs {
        out[u].push(v);
        indegree[v] += 1;
    }
    let mut ready: BTreeSet<usize> = (0..n).filter(|&v| among(v) && indegree[v] == 0).collect();
    let mut sorted = Vec::with_capacity(n);
    while let Some(v) = ready.pop_first() {
        sorted.push(v);
        for &w in &out[v] {
            indegree[w] -= 1;
            if indegree[w] == 0 {
                ready.insert(w);
            }
        }
    }
    sorted
}

fn longest_path_ranks(n: usize, arcs: &BTreeSet<(usize, usize)>) -> Vec<usize> {
    let sorted = topological(n, arcs, |_| true);
    debug_assert_eq!(sorted.len(), n, "the arcs are acyclic");
    let mut preds: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut succs: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(u, v) in arcs {
        preds[v].push(u);
        succs[u].push(v);
    }
    let mut rank = vec![0usize; n];
    for &v in &sorted {
        rank[v] = preds[v].iter().map(|&u| rank[u] + 1).max().unwrap_or(0);
    }
    // A source sits just before its nearest successor rather than in the first column, so
    // that a client calling only deep services does not draw long edges.
    for &v in sorted.iter().rev() {
        if preds[v].is_empty()
            && let Some(nearest) = succs[v].iter().map(|&w| rank[w]).min()
        {
            rank[v] = nearest - 1;
        }
    }
    rank
}

/// What one rank holds in an extended drawing: centres and half heights.
#[derive(Default)]
struct Column {
    /// Centres and half heights, by centre.
    taken: Vec<(f64, f64)>,
    /// The largest half height taken.
    half_max: f64,
}

impl Column {
    /// The free centre nearest to `want` for something `half` high (the lower one of two
    /// as near). Only places near a candidate are looked at: the column is sorted.
    fn nearest_free(&self, want: f64, half: f64, config: &LayoutConfig) -> f64 {
        let gap =
            |other_half: f64| if half > 0.0 && other_half > 0.0 { config.node_gap } else { config.route_gap };
        let reach_max = self.half_max + half + config.node_gap.max(config.route_gap);
        let fits = |y: f64| {
            let from = self.taken.partition_point(|&(c, _)| c < y - reach_max);
            self.taken[from..]
                .iter()
                .take_while(|&&(c, _)| c <= y + reach_max)
                .all(|&(c, h)| (y - c).abs() >= h + half + gap(h) - 1e-9)
        };
        if fits(want) {
            return want;
        }
        // Candidates lie just beside a taken place; places nearer to `want` come first, and
        // once a place is further than the best candidate by more than any reach, stop.
        let at = self.taken.partition_point(|&(c, _)| c < want);
        let (mut below, mut above) = (at, at);
        let mut best: Option<f64> = None;
        loop {
            let down = below.checked_sub(1).map(|i| (want - self.taken[i].0, i));
            let up = (above < self.taken.len()).then(|| (self.taken[above].0 - want, above));
            let (distance, i) = match (down, up) {
                (None, None) => break,
                (Some(d), None) => d,
                (None, Some(u)) => u,
                (Some(d), Some(u)) => {
                    if d.0 <= u.0 {
                        d
                    } else {
                        u
                    }
                }
            };
            if best.is_some_and(|b| distance - reach_max > (b - want).abs()) {
                break;
            }
            if i < at {
                below = i;
            } else {
                above = i + 1;
            }
            let (c, h) = self.taken[i];
            for y in [c - h - half - gap(h), c + h + half + gap(h)] {
                let better = best.is_none_or(|b| {
                    let (dy, db) = ((y - want).abs(), (b - want).abs());
                    dy < db || (dy == db && y < b)
                });
                if better && fits(y) {
                    best = Some(y);
                }
            }
        }
        best.expect("the place beyond the last taken one is free")
    }

    fn take(&mut self, y: f64, half: f64) {
        let at = self.taken.partition_point(|&(c, _)| c < y);
        self.taken.insert(at, (y, half));
        self.half_max = self.half_max.max(half);
    }
}

fn extend(
    names: &[String],
    links: &BTreeSet<(usize, usize)>,
    previous: &Layout,
    config: &LayoutConfig,
) -> Placement {
    let n = names.len();
    let held: Vec<Option<&PlacedNode>> = names.iter().map(|name| previous.node(name)).collect();
    let mut rank: Vec<Option<i32>> = held.iter().map(|p| p.map(|p| p.rank)).collect();
    let mut y: Vec<f64> = held.iter().map(|p| p.map_or(0.0, |p| p.y)).collect();
    let half_node = config.node_height / 2.0;
    // Every place the previous drawing used stays taken, also those of nodes and routes
    // not in the graph now: they may come back.
    let mut columns: BTreeMap<i32, Column> = BTreeMap::new();
    for p in &previous.nodes {
        columns.entry(p.rank).or_default().take(p.y, half_node);
    }
    for route in &previous.edges {
        if matches!(route.direction, Direction::Forward | Direction::Backward) {
            for p in route.points.iter().skip(1).take(route.points.len().saturating_sub(2)) {
                columns.entry((p[0] / config.rank_gap).round() as i32).or_default().take(p[1], 0.0);
            }
        }
    }
    // Routes between held nodes stay as they were drawn.
    let mut bends = BTreeMap::new();
    let mut old_routes: BTreeMap<(&str, &str), &RoutedEdge> = BTreeMap::new();
    for e in &previous.edges {
        old_routes.entry((e.from.as_str(), e.to.as_str())).or_insert(e);
    }
    for &(u, v) in links {
        if held[u].is_none() || held[v].is_none() {
            continue;
        }
        if let Some(route) = old_routes.get(&(names[u].as_str(), names[v].as_str())) {
            let inner =
                route.points.iter().skip(1).take(route.points.len().saturating_sub(2)).copied().collect();
            bends.insert((u, v), inner);
        }
    }
    // New nodes in a topological order of the links among them (cycles broken as fresh).
    let is_new = |v: usize| held[v].is_none();
    let reversed = back_edges(n, links, is_new);
    let arcs: BTreeSet<(usize, usize)> = links
        .iter()
        .filter(|&&(u, v)| is_new(u) && is_new(v))
        .map(|&(u, v)| if reversed.contains(&(u, v)) { (v, u) } else { (u, v) })
        .collect();
    let bottom = previous.nodes.iter().map(|p| p.y).fold(f64::NEG_INFINITY, f64::max);
    let mut below = if bottom.is_finite() { bottom + config.node_height + config.node_gap } else { 0.0 };
    let mut callers_of: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(a, b) in links {
        callers_of[b].push(a);
    }
    for v in topological(n, &arcs, is_new) {
        let callers: Vec<usize> = callers_of[v]
            .iter()
            .copied()
            .filter(|&a| rank[a].is_some() && !reversed.contains(&(a, v)))
            .collect();
        let callees: Vec<usize> = links
            .range((v, 0)..(v + 1, 0))
            .map(|&(_, b)| b)
            .filter(|&b| rank[b].is_some() && !reversed.contains(&(v, b)))
            .collect();
        let r = match (
            callers.iter().filter_map(|&a| rank[a]).max(),
            callees.iter().filter_map(|&b| rank[b]).min(),
        ) {
            (Some(r), _) => r + 1,
            (None, Some(r)) => r - 1,
            (None, None) => 0,
        };
        let neighbours: Vec<f64> = callers.iter().chain(&callees).map(|&w| y[w]).collect();
        let want = if neighbours.is_empty() {
            let want = below;
            below += config.node_height + config.node_gap;
            want
        } else {
            neighbours.iter().sum::<f64>() / neighbours.len() as f64
        };
        let column = columns.entry(r).or_default();
        let place = column.nearest_free(want, half_node, config);
        column.take(place, half_node);
        rank[v] = Some(r);
        y[v] = place;
    }
    let rank: Vec<i32> = rank.into_iter().map(|r| r.expect("every node is ranked")).collect();
    // New links get bend points in free places of the ranks they cross.
    for &(u, v) in links {
        if bends.contains_key(&(u, v)) {
            continue;
        }
        let (ru, rv) = (rank[u], rank[v]);
        let step = if rv > ru { 1 } else { -1 };
        let mut points = Vec::new();
        let mut r = ru + step;
        while (rv - ru).abs() > 1 && r != rv {
            let t = f64::from(r - ru) / f64::from(rv - ru);
            let want = y[u] + (y[v] - y[u]) * t;
            let column = columns.entry(r).or_default();
            let place = column.nearest_free(want, 0.0, config);
            column.take(place, 0.0);
            points.push([f64::from(r) * config.rank_gap, place]);
            r += step;
        }
        bends.insert((u, v), points);
    }
    Placement { rank, y, bends }
}

fn assemble(edges: &BTreeSet<EdgeKey>, names: &[String], placed: Placement, config: &LayoutConfig) -> Layout {
    let (w, h) = (config.node_width / 2.0, config.node_height / 2.0);
    let id = |name: &str| names.binary_search_by(|n| n.as_str().cmp(name)).expect("every endpoint is a node");
    let x = |v: usize| f64::from(placed.rank[v]) * config.rank_gap;
    let sends: BTreeSet<&str> = edges.iter().map(|e| e.from.as_str()).collect();
    // Whether every call a node receives is a database call, in one pass over the edges.
    let mut receives_only_database: BTreeMap<&str, bool> = BTreeMap::new();
    for e in edges {
        *receives_only_database.entry(e.to.as_str()).or_insert(true) &= e.kind == "database";
    }
    let database_only =
        |name: &str| !sends.contains(name) && receives_only_database.get(name).copied().unwrap_or(false);
    let nodes: Vec<PlacedNode> = names
        .iter()
        .enumerate()
        .map(|(v, name)| PlacedNode {
            name: name.clone(),
            rank: placed.rank[v],
            x: x(v),
            y: placed.y[v],
            shape: if database_only(name) { Shape::Database } else { Shape::Service },
        })
        .collect();
    let routed: Vec<RoutedEdge> = edges
        .iter()
        .map(|e| {
            let (u, v) = (id(&e.from), id(&e.to));
            let (xu, yu, xv, yv) = (x(u), placed.y[u], x(v), placed.y[v]);
            let (direction, points) = if u == v {
                (Direction::Loop, vec![[xu + w, yu - h / 2.0], [xu + w + 28.0, yu], [xu + w, yu + h / 2.0]])
            } else {
                let direction = match placed.rank[u].cmp(&placed.rank[v]) {
                    std::cmp::Ordering::Less => Direction::Forward,
                    std::cmp::Ordering::Greater => Direction::Backward,
                    std::cmp::Ordering::Equal => Direction::Flat,
                };
                let (start, end) = match direction {
                    Direction::Forward => ([xu + w, yu], [xv - w, yv]),
                    Direction::Backward => ([xu - w, yu], [xv + w, yv]),
                    _ => ([xu + w, yu], [xv + w, yv]),
                };
                let mut points = vec![start];
                points.extend(placed.bends.get(&(u, v)).into_iter().flatten().copied());
                points.push(end);
                (direction, points)
            };
            RoutedEdge { from: e.from.clone(), to: e.to.clone(), kind: e.kind.clone(), direction, points }
        })
        .collect();
    let margin = 24.0;
    let mut bounds = Bounds {
        min_x: f64::INFINITY,
        min_y: f64::INFINITY,
        max_x: f64::NEG_INFINITY,
        max_y: f64::NEG_INFINITY,
    };
    let mut cover = |x0: f64, y0: f64, x1: f64, y1: f64| {
        bounds.min_x = bounds.min_x.min(x0 - margin);
        bounds.min_y = bounds.min_y.min(y0 - margin);
        bounds.max_x = bounds.max_x.max(x1 + margin);
        bounds.max_y = bounds.max_y.max(y1 + margin);
    };
    for node in &nodes {
        cover(node.x - w, node.y - h, node.x + w, node.y + h);
    }
    for edge in &routed {
        for p in &edge.points {
            let bulge = if edge.direction == Direction::Flat { config.rank_gap / 3.0 } else { 0.0 };
            cover(p[0], p[1], p[0] + bulge, p[1]);
        }
    }
    if nodes.is_empty() {
        bounds = Bounds { min_x: 0.0, min_y: 0.0, max_x: 0.0, max_y: 0.0 };
    }
    Layout { nodes, edges: routed, node_width: config.node_width, node_height: config.node_height, bounds }
}
