//! The layered graph of a fresh drawing: real nodes and one bend vertex per rank a long
//! arc crosses, the order within each rank (barycenter sweeps that keep the best order
//! seen) and the vertical coordinates.

use std::collections::{BTreeMap, BTreeSet};

use crate::LayoutConfig;

pub(crate) struct Layered {
    /// Rank of every vertex; real nodes come first (their ids), bend vertices after.
    pub(crate) rank: Vec<i32>,
    real: usize,
    up: Vec<Vec<usize>>,
    down: Vec<Vec<usize>>,
    /// Vertices of each rank, in drawing order.
    layers: Vec<Vec<usize>>,
    /// Each arc's vertices from its tail to its head.
    chains: BTreeMap<(usize, usize), Vec<usize>>,
}

impl Layered {
    pub(crate) fn new(rank: &[usize], arcs: &BTreeSet<(usize, usize)>) -> Self {
        let real = rank.len();
        let mut ranks: Vec<i32> = rank.iter().map(|&r| r as i32).collect();
        let mut up: Vec<Vec<usize>> = vec![Vec::new(); real];
        let mut down: Vec<Vec<usize>> = vec![Vec::new(); real];
        let mut chains = BTreeMap::new();
        for &(u, v) in arcs {
            let mut chain = vec![u];
            let mut last = u;
            for r in rank[u] + 1..rank[v] {
                let bend = ranks.len();
                ranks.push(r as i32);
                up.push(vec![last]);
                down.push(Vec::new());
                down[last].push(bend);
                chain.push(bend);
                last = bend;
            }
            down[last].push(v);
            up[v].push(last);
            chain.push(v);
            chains.insert((u, v), chain);
        }
        let depth = ranks.iter().max().map_or(0, |&r| r as usize + 1);
        let mut layers: Vec<Vec<usize>> = vec![Vec::new(); depth];
        // Initial order: depth-first from the real nodes in id order, so that what is
        // connected starts out close together.
        let mut seen = vec![false; ranks.len()];
        for root in 0..real {
            let mut stack = vec![root];
            while let Some(v) = stack.pop() {
                if std::mem::replace(&mut seen[v], true) {
                    continue;
                }
                layers[ranks[v] as usize].push(v);
                stack.extend(down[v].iter().rev().copied().filter(|&w| !seen[w]));
            }
        }
        Layered { rank: ranks, real, up, down, layers, chains }
    }

    /// The vertices of arc `(u, v)`, tail first.
    pub(crate) fn chain(&self, u: usize, v: usize) -> Vec<usize> {
        self.chains[&(u, v)].clone()
    }

    fn positions(&self) -> Vec<usize> {
        let mut pos = vec![0; self.rank.len()];
        for layer in &self.layers {
            for (i, &v) in layer.iter().enumerate() {
                pos[v] = i;
            }
        }
        pos
    }

    /// Crossings between rank `r` and rank `r + 1`: inversions of the lower ends once
    /// the arcs are sorted by their upper ends (counted with a Fenwick tree).
    fn crossings_below(&self, r: usize, pos: &[usize]) -> u64 {
        let mut ends: Vec<(usize, usize)> = self.layers[r]
            .iter()
            .flat_map(|&v| self.down[v].iter().map(move |&w| (pos[v], pos[w])))
            .collect();
        ends.sort_unstable();
        let width = self.layers[r + 1].len();
        let mut tree = vec![0u64; width + 1];
        let mut crossings = 0u64;
        for (seen, &(_, lower)) in ends.iter().enumerate() {
            let mut at_or_below = 0;
            let mut i = lower + 1;
            while i > 0 {
                at_or_below += tree[i];
                i -= i & i.wrapping_neg();
            }
            crossings += seen as u64 - at_or_below;
            let mut i = lower + 1;
            while i <= width {
                tree[i] += 1;
                i += i & i.wrapping_neg();
            }
        }
        crossings
    }

    fn crossings(&self) -> u64 {
        let pos = self.positions();
        (0..self.layers.len().saturating_sub(1)).map(|r| self.crossings_below(r, &pos)).sum()
    }

    /// Orders rank `r` by the mean position of each vertex's neighbours in the adjacent
    /// rank (`up` when sweeping down); a vertex without any keeps its place.
    fn sort_by_barycenter(&mut self, r: usize, pos: &mut [usize], sweeping_down: bool) {
        let neighbours = if sweeping_down { &self.up } else { &self.down };
        let mut keyed: Vec<(f64, usize, usize)> = self.layers[r]
            .iter()
            .map(|&v| {
                let near = &neighbours[v];
                let bary = if near.is_empty() {
                    pos[v] as f64
                } else {
                    near.iter().map(|&w| pos[w] as f64).sum::<f64>() / near.len() as f64
                };
                (bary, pos[v], v)
            })
            .collect();
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        self.layers[r] = keyed.into_iter().map(|(_, _, v)| v).collect();
        for (i, &v) in self.layers[r].iter().enumerate() {
            pos[v] = i;
        }
    }

    pub(crate) fn reduce_crossings(&mut self, sweeps: usize) {
        let mut best = self.layers.clone();
        let mut best_crossings = self.crossings();
        let mut pos = self.positions();
        for _ in 0..sweeps {
            if best_crossings == 0 {
                break;
            }
            for r in 1..self.layers.len() {
                self.sort_by_barycenter(r, &mut pos, true);
            }
            for r in (0..self.layers.len().saturating_sub(1)).rev() {
                self.sort_by_barycenter(r, &mut pos, false);
            }
            let crossings = self.crossings();
            if crossings < best_crossings {
                best_crossings = crossings;
                best = self.layers.clone();
            }
        }
        self.layers = best;
    }

    /// Vertical centres: each vertex pulled towards its neighbours, the order and the gaps
    /// kept (the mean of a downward and an upward packing, both of which keep them).
    pub(crate) fn coordinates(&self, config: &LayoutConfig) -> Vec<f64> {
        let half = |v: usize| if v < self.real { config.node_height / 2.0 } else { 0.0 };
        let gap = |a: usize, b: usize| {
            half(a)
                + half(b)
                + if a < self.real && b < self.real { config.node_gap } else { config.route_gap }
        };
        let mut y = vec![0.0; self.rank.len()];
        for layer in &self.layers {
            let mut at = 0.0;
            for (i, &v) in layer.iter().enumerate() {
                if i > 0 {
                    at += gap(layer[i - 1], v);
                }
                y[v] = at;
            }
            let middle = layer.last().map_or(0.0, |&v| y[v]) / 2.0;
            for &v in layer {
                y[v] -= middle;
            }
        }
        for round in 0..8 {
            for layer in &self.layers {
                let want: Vec<f64> = layer
                    .iter()
                    .map(|&v| {
                        let (up, down) = (&self.up[v], &self.down[v]);
                        let near: (&[usize], &[usize]) = match round % 3 {
                            0 => (up, &[]),
                            1 => (&[], down),
                            _ => (up, down),
                        };
                        let count = near.0.len() + near.1.len();
                        if count == 0 {
                            y[v]
                        } else {
                            near.0.iter().chain(near.1).map(|&w| y[w]).sum::<f64>() / count as f64
                        }
                    })
                    .collect();
                let k = layer.len();
                let mut low = want.clone();
                for i in 1..k {
                    low[i] = low[i].max(low[i - 1] + gap(layer[i - 1], layer[i]));
                }
                let mut high = want;
                for i in (0..k.saturating_sub(1)).rev() {
                    high[i] = high[i].min(high[i + 1] - gap(layer[i], layer[i + 1]));
                }
                for (i, &v) in layer.iter().enumerate() {
                    y[v] = (low[i] + high[i]) / 2.0;
                }
            }
        }
        let top = (0..self.real).map(|v| y[v]).fold(f64::INFINITY, f64::min);
        let top = if top.is_finite() { top } else { 0.0 };
        y.iter().map(|&c| ((c - top) * 100.0).round() / 100.0).collect()
    }
}
