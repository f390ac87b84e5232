//! Queries over the global view: the graph of a window, and one edge's time series.
//!
//! A window `[end - length, end)` is read at the finest resolution whose retention covers
//! it, from the bucket holding `end - length` to the one holding `end - 1`: every bucket
//! the window touches, so the newest (partly elapsed) bucket is included and a window
//! shorter than a bucket still reaches back far enough. Rates divide the calls by the time
//! those buckets cover up to `end`.

use std::ops::Range;

use crate::histogram::{LatencyAccumulator, LatencyHistogram, LatencySummary};
use std::collections::BTreeMap;

use crate::model::{CellData, Edge, NodeName, Resolution};
use crate::settings::human_ms;
use crate::state::{EdgeCells, FlowState};

/// Longest window a query may ask for (100 years).
pub const WINDOW_MS_MAX: i64 = 100 * 366 * 86_400_000;
/// Latest end a query may ask for (the year 2262, far below `i64::MAX` ms).
pub const END_MS_MAX: i64 = 9_200_000_000_000;

/// Most points one series query may return.
pub const SERIES_POINTS_MAX: i64 = 10_000;

/// Why a query cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The window is not positive.
    #[error("window must be positive")]
    WindowNotPositive,
    /// The end of the window lies outside 1970 to 2262.
    #[error("the window's end must lie between 1970 and 2262")]
    EndOutOfRange,
    /// No resolution keeps data for that long.
    #[error("a window of {} is longer than the longest retention ({})", human_ms(*window_ms), human_ms(*retention_ms))]
    WindowTooLong {
        /// The window asked for.
        window_ms: i64,
        /// The longest retention configured.
        retention_ms: i64,
    },
    /// The step is not a whole multiple of any resolution that covers the window.
    #[error("a step of {} fits no resolution covering the window: it must be a positive multiple of one of {widths}", human_ms(*step_ms))]
    StepUnfit {
        /// The step asked for.
        step_ms: i64,
        /// The widths that cover the window.
        widths: String,
    },
    /// The series would have too many points.
    #[error("window / step gives {points} points, more than {SERIES_POINTS_MAX}")]
    TooManyPoints {
        /// Points the query would give.
        points: i64,
    },
}

/// The figures of one edge over a span of time.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    /// Calls.
    pub calls: u64,
    /// Failed calls.
    pub errors: u64,
    /// Bytes carried.
    pub bytes: u64,
    /// Calls per second over the elapsed span.
    pub rate_per_s: f64,
    /// Latency distribution, if any call reported one.
    pub latency: Option<LatencySummary>,
    /// Whether some of the calls are estimates from sampled traces.
    pub calls_estimated: bool,
    /// Then a 95% interval of the calls (`None` when no sampled call says how spread the
    /// weights are, as for consumers without a producer, which report no latency).
    pub calls_interval: Option<CallsEstimate>,
}

/// How good an estimated number of calls is: a 95% interval around it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallsEstimate {
    /// The interval's low end (at least the calls seen, exact ones plus sampled pairs).
    pub low: u64,
    /// Its high end.
    pub high: u64,
}

impl CallsEstimate {
    /// The interval of `exact` calls plus estimated variants, each `(estimated calls,
    /// sampled calls)`: Horvitz-Thompson with the variance `Σ w (w - 1)` over the sampled
    /// calls, taking each variant's weight `w` as its mean adjusted count (exact when a
    /// variant's traces share one sampling probability, an underestimate of the spread
    /// otherwise). `None` when a variant has no sampled calls to judge by.
    pub fn of(exact: u64, variants: impl IntoIterator<Item = (u64, u64)>) -> Option<Self> {
        let (mut estimated, mut seen, mut variance) = (0u64, 0u64, 0.0f64);
        for (calls, sampled) in variants {
            if sampled == 0 {
                return None;
            }
            let weight = calls as f64 / sampled as f64;
            variance += calls as f64 * (weight - 1.0).max(0.0);
            estimated += calls;
            seen += sampled;
        }
        let half = 1.96 * variance.sqrt();
        let centre = (exact + estimated) as f64;
        Some(CallsEstimate {
            low: ((centre - half).floor().max(0.0) as u64).max(exact + seen),
            high: (centre + half).ceil() as u64,
        })
    }
}

impl Figures {
    /// Errors over calls (0 without calls).
    pub fn error_ratio(&self) -> f64 {
        if self.calls == 0 { 0.0 } else { self.errors as f64 / self.calls as f64 }
    }
}

/// One edge of a graph answer.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeFigures {
    /// The edge.
    pub edge: Edge,
    /// Its figures over the window.
    pub figures: Figures,
}

/// Which buckets a query read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// Name of the resolution read.
    pub resolution: String,
    /// Width of its buckets.
    pub width_ms: i64,
    /// Start of the first bucket read.
    pub from_ms: i64,
    /// End of the last bucket read (may lie after `end`).
    pub to_ms: i64,
    /// Where the window ends (now, or the `at` asked for).
    pub end_ms: i64,
}

impl Span {
    fn elapsed_ms(&self, from_ms: i64, to_ms: i64) -> i64 {
        (to_ms.min(self.end_ms) - from_ms).max(1)
    }
}

/// The graph of a window.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphView {
    /// What was read.
    pub span: Span,
    /// Every edge with at least one call in the window.
    pub edges: Vec<EdgeFigures>,
}

/// One point of a series.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesPoint {
    /// Start of the step.
    pub start_ms: i64,
    /// Figures over the step.
    pub figures: Figures,
}

/// One edge's figures step by step.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesView {
    /// What was read.
    pub span: Span,
    /// Step width.
    pub step_ms: i64,
    /// One point per step, oldest first, also for steps without calls.
    pub points: Vec<SeriesPoint>,
}

fn longest_retention(resolutions: &[Resolution]) -> i64 {
    resolutions
        .iter()
        .filter(|r| r.width_ms.is_some())
        .filter_map(|r| r.retention_ms)
        .max()
        .unwrap_or(i64::MAX)
}

fn covers(resolution: &Resolution, window_ms: i64) -> bool {
    resolution.width_ms.is_some() && resolution.retention_ms.is_none_or(|r| r >= window_ms)
}

fn span_for(r: usize, resolution: &Resolution, end_ms: i64, window_ms: i64) -> (usize, Span) {
    let width = resolution.width_ms.expect("bucketed resolution");
    let span = Span {
        resolution: resolution.name.clone(),
        width_ms: width,
        from_ms: resolution.bucket_start(end_ms - window_ms),
        to_ms: resolution.bucket_start(end_ms - 1) + width,
        end_ms,
    };
    (r, span)
}

impl FlowState {
    /// Whether the global view holds any cell of `edge` (in any flow and mark).
    pub fn has_edge(&self, edge: &Edge) -> bool {
        self.global.contains_key(edge) || self.global.keys().any(|e| e.same_base(edge))
    }

    /// The global view's cells of every flow and mark of `edge`'s `from -> to` and kind;
    /// only of `edge.flow` when it names one.
    fn variants<'a>(&'a self, edge: &'a Edge) -> impl Iterator<Item = &'a EdgeCells> + 'a {
        self.global
            .iter()
            .filter(move |(e, _)| {
                e.same_base(edge) && edge.flow.as_ref().is_none_or(|f| in_flow(e.flow.as_ref(), f))
            })
            .map(|(_, cells)| cells)
    }

    /// The flows of the global view with their edges, by name.
    pub fn flows(&self) -> BTreeMap<NodeName, usize> {
        let mut flows = BTreeMap::new();
        for edge in self.global.keys() {
            if let Some(flow) = &edge.flow {
                *flows.entry(flow.clone()).or_default() += 1;
            }
        }
        flows
    }

    fn choose(
        &self,
        window_ms: i64,
        end_ms: i64,
        step_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<(usize, Span), QueryError> {
        if window_ms <= 0 {
            return Err(QueryError::WindowNotPositive);
        }
        if !(0..=END_MS_MAX).contains(&end_ms) {
            return Err(QueryError::EndOutOfRange);
        }
        let resolutions = self.settings().resolutions();
        if window_ms > WINDOW_MS_MAX {
            return Err(QueryError::WindowTooLong {
                window_ms,
                retention_ms: longest_retention(resolutions),
            });
        }
        // The resolution must still hold the window's start now (a window ending in the
        // past reaches further back), and a series reaches back up to one step more, since
        // its steps are aligned to multiples of the step.
        let step_ms = step_ms.map(|step| step.clamp(0, WINDOW_MS_MAX));
        let reach_ms =
            window_ms.max(now_ms.saturating_sub(end_ms).saturating_add(window_ms)) + step_ms.unwrap_or(0);
        let covering: Vec<(usize, &Resolution)> =
            resolutions.iter().enumerate().filter(|(_, r)| covers(r, reach_ms)).collect();
        if covering.is_empty() {
            return Err(QueryError::WindowTooLong {
                window_ms,
                retention_ms: longest_retention(resolutions),
            });
        }
        let fit = match step_ms {
            None => covering.first().copied(),
            Some(step) => covering.iter().copied().find(|(_, r)| {
                let width = r.width_ms.expect("covering resolutions have widths");
                step > 0 && step % width == 0
            }),
        };
        let Some((r, resolution)) = fit else {
            let widths = covering.iter().map(|(_, r)| human_ms(r.width_ms.unwrap_or(0))).collect::<Vec<_>>();
            return Err(QueryError::StepUnfit { step_ms: step_ms.unwrap_or(0), widths: widths.join(", ") });
        };
        Ok(span_for(r, resolution, end_ms, window_ms.max(step_ms.unwrap_or(0))))
    }

    /// The graph of the window `[end_ms - window_ms, end_ms)`.
    pub fn graph(&self, window_ms: i64, end_ms: i64) -> Result<GraphView, QueryError> {
        self.graph_as_of(window_ms, end_ms, end_ms)
    }

    /// The graph of `[end_ms - window_ms, end_ms)` asked at `now_ms`: the resolution read
    /// must still keep the window's start at `now_ms`.
    pub fn graph_as_of(&self, window_ms: i64, end_ms: i64, now_ms: i64) -> Result<GraphView, QueryError> {
        self.graph_labelled_as_of(window_ms, end_ms, now_ms, None, false)
    }

    /// [`FlowState::graph_as_of`] of one flow only (`flow`), or of all (`None`). With
    /// `by_label`, every flow and propagation mark of an edge is an edge of its own in the
    /// answer (the edges carry them); else they are summed into their `from -> to`.
    pub fn graph_labelled_as_of(
        &self,
        window_ms: i64,
        end_ms: i64,
        now_ms: i64,
        flow: Option<&NodeName>,
        by_label: bool,
    ) -> Result<GraphView, QueryError> {
        let (r, span) = self.choose(window_ms, end_ms, None, now_ms)?;
        let plan = self.read_plan(r, span.from_ms, span.to_ms);
        let mut accumulator = LatencyAccumulator::default();
        let mut entries: Vec<(&Edge, &EdgeCells)> = self
            .global
            .iter()
            .filter(|(edge, _)| flow.is_none_or(|f| in_flow(edge.flow.as_ref(), f)))
            .collect();
        // Sorted, the flows and marks of one `from -> to` lie next to each other.
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let same = |a: &(&Edge, &EdgeCells), b: &(&Edge, &EdgeCells)| {
            if by_label { a.0 == b.0 } else { a.0.same_base(b.0) }
        };
        let mut edges = Vec::new();
        for run in entries.chunk_by(same) {
            let buckets = run.iter().flat_map(|(_, cells)| {
                plan.iter().flat_map(|(level, range)| cells.per_resolution[*level].range(range.clone()))
            });
            let buckets = buckets.map(|(_, d)| d);
            if let Some(mut figures) =
                sum(buckets, &mut accumulator, span.elapsed_ms(span.from_ms, span.to_ms))
            {
                // Estimated variants: their calls and sampled calls (one latency sample
                // each), for the interval.
                let estimated: Vec<(u64, u64)> = run
                    .iter()
                    .filter(|(edge, _)| edge.estimated)
                    .map(|(_, cells)| {
                        plan.iter()
                            .flat_map(|(level, range)| cells.per_resolution[*level].range(range.clone()))
                            .fold((0, 0), |(calls, sampled), (_, d)| {
                                (calls + d.calls, sampled + d.latency.len())
                            })
                    })
                    .filter(|(calls, _)| *calls > 0)
                    .collect();
                if !estimated.is_empty() {
                    let exact = figures.calls - estimated.iter().map(|(calls, _)| calls).sum::<u64>();
                    figures.calls_estimated = true;
                    figures.calls_interval = CallsEstimate::of(exact, estimated);
                }
                let edge = if by_label {
                    run[0].0.clone()
                } else {
                    // The sum is virtual when every variant with traffic in the window is,
                    // on the same side (a callee that sometimes reports is no virtual node).
                    let mut sides = run
                        .iter()
                        .filter(|(_, cells)| {
                            plan.iter().any(|(level, range)| {
                                cells.per_resolution[*level].range(range.clone()).any(|(_, d)| d.calls > 0)
                            })
                        })
                        .map(|(edge, _)| edge.virtual_node);
                    let first = sides.next().flatten();
                    let side = if sides.all(|s| s == first) { first } else { None };
                    Edge { virtual_node: side, ..run[0].0.base() }
                };
                edges.push(EdgeFigures { edge, figures });
            }
        }
        Ok(GraphView { span, edges })
    }

    /// The graph of `[end_ms - window_ms, end_ms)` asked at `now_ms` with nodes collapsed:
    /// `group` names the node each node is drawn as (itself when `None`). The figures of
    /// every edge between two groups are those of the edges they collapse, summed exactly
    /// (latency histograms merged, not percentiles averaged); edges within a group become
    /// the group's edge to itself.
    pub fn graph_grouped_as_of(
        &self,
        window_ms: i64,
        end_ms: i64,
        now_ms: i64,
        group: impl Fn(&NodeName) -> Option<NodeName>,
    ) -> Result<GraphView, QueryError> {
        let (r, span) = self.choose(window_ms, end_ms, None, now_ms)?;
        let plan = self.read_plan(r, span.from_ms, span.to_ms);
        let mut sums: BTreeMap<Edge, (u64, u64, u64, LatencyHistogram)> = BTreeMap::new();
        // Per group edge, its estimated variants' (calls, sampled calls).
        let mut estimated: BTreeMap<Edge, Vec<(u64, u64)>> = BTreeMap::new();
        for (edge, cells) in &self.global {
            let buckets =
                plan.iter().flat_map(|(level, range)| cells.per_resolution[*level].range(range.clone()));
            let mut cells = buckets.map(|(_, d)| d).filter(|d| d.calls > 0).peekable();
            if cells.peek().is_none() {
                continue;
            }
            let from = group(&edge.from).unwrap_or_else(|| edge.from.clone());
            let to = group(&edge.to).unwrap_or_else(|| edge.to.clone());
            let grouped = Edge::with_kind(from, to, edge.kind);
            let sum = sums.entry(grouped.clone()).or_insert_with(|| (0, 0, 0, LatencyHistogram::new()));
            let (mut calls, mut sampled) = (0, 0);
            for cell in cells {
                sum.0 += cell.calls;
                sum.1 += cell.errors;
                sum.2 += cell.bytes;
                sum.3.add_saturating(&cell.latency);
                calls += cell.calls;
                sampled += cell.latency.len();
            }
            if edge.estimated {
                estimated.entry(grouped).or_default().push((calls, sampled));
            }
        }
        let elapsed = span.elapsed_ms(span.from_ms, span.to_ms);
        let mut accumulator = LatencyAccumulator::default();
        let edges = sums
            .into_iter()
            .map(|(edge, (calls, errors, bytes, latency))| {
                accumulator.add(&latency);
                let summary = accumulator.summary();
                accumulator.clear();
                let rate_per_s = calls as f64 * 1000.0 / elapsed as f64;
                let variants = estimated.remove(&edge);
                let calls_interval = variants.as_ref().and_then(|v| {
                    let exact = calls - v.iter().map(|(c, _)| c).sum::<u64>();
                    CallsEstimate::of(exact, v.iter().copied())
                });
                let figures = Figures {
                    calls,
                    errors,
                    bytes,
                    rate_per_s,
                    latency: summary,
                    calls_estimated: variants.is_some(),
                    calls_interval,
                };
                EdgeFigures { edge, figures }
            })
            .collect();
        Ok(GraphView { span, edges })
    }

    /// Which buckets to read for `[from_ms, to_ms)` (both multiples of resolution `r`'s
    /// width): whole buckets of coarser resolutions in the middle, finer ones at the ends.
    ///
    /// Every event is added to every resolution, so a coarse bucket lying wholly inside
    /// the range holds exactly what the fine buckets inside it hold: the figures are the
    /// same, read from a handful of cells instead of dozens. Only resolutions whose width
    /// is a multiple of the next finer one in the chain and that keep buckets at least as
    /// long as `r` are used.
    fn read_plan(&self, r: usize, from_ms: i64, to_ms: i64) -> Vec<(usize, Range<i64>)> {
        let resolutions = self.settings().resolutions();
        let fine = &resolutions[r];
        let keeps_as_long = |c: &Resolution| match (c.retention_ms, fine.retention_ms) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(coarse), Some(fine)) => coarse >= fine,
        };
        let mut chain = vec![(r, fine.width_ms.expect("bucketed resolution"))];
        for (index, coarse) in resolutions.iter().enumerate().skip(r + 1) {
            let (Some(width), &(_, last)) = (coarse.width_ms, chain.last().expect("not empty")) else {
                continue;
            };
            if width % last == 0 && keeps_as_long(coarse) {
                chain.push((index, width));
            }
        }
        let mut plan = Vec::new();
        cover(&chain, from_ms, to_ms, &mut plan);
        plan
    }

    /// One edge's figures over `[end_ms - window_ms, end_ms)`, in steps of `step_ms`.
    pub fn series(
        &self,
        edge: &Edge,
        window_ms: i64,
        step_ms: i64,
        end_ms: i64,
    ) -> Result<SeriesView, QueryError> {
        self.series_as_of(edge, window_ms, step_ms, end_ms, end_ms)
    }

    /// [`FlowState::series`] asked at `now_ms` (see [`FlowState::graph_as_of`]).
    pub fn series_as_of(
        &self,
        edge: &Edge,
        window_ms: i64,
        step_ms: i64,
        end_ms: i64,
        now_ms: i64,
    ) -> Result<SeriesView, QueryError> {
        let (r, span) = self.choose(window_ms, end_ms, Some(step_ms), now_ms)?;
        // Align steps so that the last one holds `end - 1`.
        let last_start = (end_ms - 1).div_euclid(step_ms) * step_ms;
        let points = (window_ms + step_ms - 1) / step_ms;
        if points > SERIES_POINTS_MAX {
            return Err(QueryError::TooManyPoints { points });
        }
        let first_start = last_start - (points - 1) * step_ms;
        let span = Span { from_ms: first_start, to_ms: last_start + step_ms, ..span };
        let variants: Vec<&EdgeCells> = self.variants(edge).collect();
        let mut accumulator = LatencyAccumulator::default();
        let points = (0..points)
            .map(|i| {
                let step: Range<i64> = first_start + i * step_ms..first_start + (i + 1) * step_ms;
                let elapsed = span.elapsed_ms(step.start, step.end);
                let plan = self.read_plan(r, step.start, step.end);
                let buckets = variants.iter().flat_map(|cells| {
                    plan.iter().flat_map(|(level, range)| cells.per_resolution[*level].range(range.clone()))
                });
                let figures = sum(buckets.map(|(_, d)| d), &mut accumulator, elapsed).unwrap_or(Figures {
                    calls: 0,
                    errors: 0,
                    bytes: 0,
                    rate_per_s: 0.0,
                    latency: None,
                    calls_estimated: false,
                    calls_interval: None,
                });
                SeriesPoint { start_ms: step.start, figures }
            })
            .collect();
        Ok(SeriesView { span, step_ms, points })
    }

    /// The latency histogram of `edge` over `[end_ms - window_ms, end_ms)` asked at
    /// `now_ms`, summed over every origin: the counters the graph's percentiles are read
    /// from. Empty when the edge has no latency in the window.
    pub fn latency_as_of(
        &self,
        edge: &Edge,
        window_ms: i64,
        end_ms: i64,
        now_ms: i64,
    ) -> Result<(Span, LatencyHistogram), QueryError> {
        let (r, span) = self.choose(window_ms, end_ms, None, now_ms)?;
        let mut merged = LatencyHistogram::new();
        let plan = self.read_plan(r, span.from_ms, span.to_ms);
        for cells in self.variants(edge) {
            for (level, range) in &plan {
                for (_, cell) in cells.per_resolution[*level].range(range.clone()) {
                    merged.add_saturating(&cell.latency);
                }
            }
        }
        Ok((span, merged))
    }
}

/// Whether an edge of flow `flow` belongs to flow `wanted`: its flow is `wanted`, or one of
/// the labels it joins with `,` is (a call in a context with several labels is in each).
fn in_flow(flow: Option<&NodeName>, wanted: &NodeName) -> bool {
    flow.is_some_and(|f| f == wanted || f.as_str().split(',').any(|label| label == wanted.as_str()))
}

/// Covers `[from, to)` with the coarsest whole buckets of `chain` (finest first).
fn cover(chain: &[(usize, i64)], from: i64, to: i64, plan: &mut Vec<(usize, Range<i64>)>) {
    if from >= to {
        return;
    }
    let Some((&(level, width), finer)) = chain.split_last() else { return };
    if finer.is_empty() {
        plan.push((level, from..to));
        return;
    }
    let inner_from = from.div_euclid(width) * width + if from.rem_euclid(width) == 0 { 0 } else { width };
    let inner_to = to.div_euclid(width) * width;
    if inner_from < inner_to {
        cover(finer, from, inner_from, plan);
        plan.push((level, inner_from..inner_to));
        cover(finer, inner_to, to, plan);
    } else {
        cover(finer, from, to, plan);
    }
}

fn sum<'a>(
    cells: impl Iterator<Item = &'a CellData>,
    accumulator: &mut LatencyAccumulator,
    elapsed_ms: i64,
) -> Option<Figures> {
    let (mut calls, mut errors, mut bytes) = (0u64, 0u64, 0u64);
    for cell in cells {
        calls += cell.calls;
        errors += cell.errors;
        bytes += cell.bytes;
        accumulator.add(&cell.latency);
    }
    let latency = accumulator.summary();
    accumulator.clear();
    (calls > 0).then(|| Figures {
        calls,
        errors,
        bytes,
        rate_per_s: calls as f64 * 1000.0 / elapsed_ms as f64,
        latency,
        calls_estimated: false,
        calls_interval: None,
    })
}
