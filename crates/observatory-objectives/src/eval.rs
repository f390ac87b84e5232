//! Evaluating objectives on the global view, deterministically.
//!
//! # Driving contract
//! An [`Evaluator`] reads no clock and keeps no socket. Its driver, every
//! `objectives.eval_interval` (and no more often than [`Evaluator::poll_timeout`] says):
//! takes the global view's changes since its last call
//! ([`observatory_core::FlowState::take_changes`]), then calls [`Evaluator::evaluate`]
//! with `now_ms`, the state (under its read lock) and how complete the peer's picture
//! is. The answer holds every objective's figures and every alert's state.
//!
//! # Determinism
//! Evaluation happens at *steps*, `now_ms` rounded down to a multiple of the interval.
//! What an alert is at a step is a pure function of the global view and the steps:
//! every step's condition (is the page pair of burn rates above its factor? the ticket
//! pair? the flow below its rate?) is computed from bucket sums of the global view, and
//! the alert's state (inactive, pending, firing, resolved) and its `startsAt` replay
//! those conditions over the last `objectives.lookback`. Whenever the global view
//! changes at some time, every step after it is computed again, so once two peers hold
//! the same view they compute the same alerts, label for label and timestamp for
//! timestamp, whatever they saw before. (The replay starts from the state the alert was
//! in when the lookback's oldest step left it; an alert older than the lookback thus
//! keeps the start this peer saw, and a change older than the lookback no longer
//! changes history.)
//!
//! Figures come from dense per-objective series of bucket sums at the resolutions the
//! windows need, kept up to date from the changes: an evaluation reads only the buckets
//! that changed, and windows are differences of prefix sums.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use observatory_core::settings::human_ms;
use observatory_core::{Edge, FlowState, GlobalChanges, Origin, Resolution, Settings};

use crate::model::{Goal, Objective, ObjectiveError, ObjectiveSet, Severity};

/// The burn-rate pairs of the SRE workbook for a 30-day objective: `(long, short, factor)`.
/// Both windows above the factor is a breach. Scaled to an objective's own window.
const PAGE_PAIRS: [(i64, i64, f64); 2] = [(3_600_000, 300_000, 14.4), (21_600_000, 1_800_000, 6.0)];
/// See [`PAGE_PAIRS`].
const TICKET_PAIRS: [(i64, i64, f64); 2] = [(86_400_000, 7_200_000, 3.0), (259_200_000, 21_600_000, 1.0)];
/// The window the workbook's pairs are given for.
const WORKBOOK_WINDOW_MS: i64 = 30 * 86_400_000;
/// A window's resolution keeps its buckets at least this much longer than the window and
/// the lookback, so that no bucket a step reads expires while the step is replayed (even
/// on a peer whose clock runs a few minutes ahead).
const RETENTION_MARGIN_MS: i64 = 600_000;

/// Settings of evaluation (`objectives.*` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalConfig {
    /// Steps are this far apart (`objectives.eval_interval`).
    pub eval_interval_ms: i64,
    /// How far back alert states are replayed (`objectives.lookback`).
    pub lookback_ms: i64,
    /// How long a resolved alert is still reported, so that senders send its end.
    pub resolved_hold_ms: i64,
}

/// How complete the peer's picture is, for coverage-aware evaluation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Every peer of the mesh is in sync.
    pub complete: bool,
    /// When partial: the edges the missing peers' origins wrote, as far as known; `None`
    /// when a missing peer's writes are unknown (it may have written any edge).
    pub missing_edges: Option<BTreeSet<Edge>>,
}

impl Coverage {
    /// A complete picture.
    pub fn complete() -> Self {
        Self { complete: true, missing_edges: Some(BTreeSet::new()) }
    }

    /// The picture with `missing` peers out of sync (complete when there are none): the
    /// edges their origins wrote, as far as `state` holds them (`peer_of` names the
    /// peer that writes an origin). A missing peer of which nothing is held may have
    /// written any edge.
    pub fn of_missing(missing: &[String], state: &FlowState, peer_of: impl Fn(&Origin) -> String) -> Self {
        if missing.is_empty() {
            return Self::complete();
        }
        let mut edges = BTreeSet::new();
        let origins: Vec<Origin> = state.coverage().into_iter().map(|c| c.origin).collect();
        for peer in missing {
            let theirs: Vec<&Origin> = origins.iter().filter(|o| &peer_of(o) == peer).collect();
            if theirs.is_empty() {
                return Self { complete: false, missing_edges: None };
            }
            for origin in theirs {
                edges.extend(state.edges_of_origin(origin));
            }
        }
        Self { complete: false, missing_edges: Some(edges) }
    }

    fn touches(&self, edges: &[Edge]) -> bool {
        if self.complete {
            return false;
        }
        match &self.missing_edges {
            None => true,
            Some(missing) => edges.iter().any(|e| missing.contains(e)),
        }
    }
}

/// The state of one alert at a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertState {
    /// No breach.
    Inactive,
    /// Breaching since `since_ms`, not yet for the objective's `for`.
    Pending {
        /// The first step of the breach.
        since_ms: i64,
    },
    /// Firing since `starts_at_ms`.
    Firing {
        /// When it started firing.
        starts_at_ms: i64,
    },
    /// Fired from `starts_at_ms` to `ends_at_ms`; reported for a while after it ended.
    Resolved {
        /// When it started firing.
        starts_at_ms: i64,
        /// When it stopped.
        ends_at_ms: i64,
    },
}

impl AlertState {
    /// `inactive`, `pending`, `firing` or `resolved`.
    pub fn as_str(&self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending { .. } => "pending",
            AlertState::Firing { .. } => "firing",
            AlertState::Resolved { .. } => "resolved",
        }
    }

    /// Since when the state holds (none for inactive).
    pub fn since_ms(&self) -> Option<i64> {
        match *self {
            AlertState::Inactive => None,
            AlertState::Pending { since_ms } => Some(since_ms),
            AlertState::Firing { starts_at_ms } => Some(starts_at_ms),
            AlertState::Resolved { ends_at_ms, .. } => Some(ends_at_ms),
        }
    }
}

/// The replayed state machine of one alert (`inactive → pending → firing → resolved`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Machine {
    state: AlertState,
    /// While firing: the last step that breached.
    last_breach_ms: i64,
}

impl Machine {
    const START: Machine = Machine { state: AlertState::Inactive, last_breach_ms: i64::MIN };

    fn step(mut self, at_ms: i64, breach: bool, for_ms: i64, keep_ms: i64, hold_ms: i64) -> Machine {
        self.state = match self.state {
            AlertState::Inactive | AlertState::Resolved { .. } if breach => {
                self.last_breach_ms = at_ms;
                if for_ms == 0 {
                    AlertState::Firing { starts_at_ms: at_ms }
                } else {
                    AlertState::Pending { since_ms: at_ms }
                }
            }
            AlertState::Resolved { ends_at_ms, .. } if at_ms - ends_at_ms >= hold_ms => AlertState::Inactive,
            state @ (AlertState::Inactive | AlertState::Resolved { .. }) => state,
            AlertState::Pending { since_ms } if breach => {
                self.last_breach_ms = at_ms;
                if at_ms - since_ms >= for_ms {
                    AlertState::Firing { starts_at_ms: at_ms }
                } else {
                    AlertState::Pending { since_ms }
                }
            }
            AlertState::Pending { .. } => AlertState::Inactive,
            AlertState::Firing { starts_at_ms } if breach => {
                self.last_breach_ms = at_ms;
                AlertState::Firing { starts_at_ms }
            }
            AlertState::Firing { starts_at_ms } if at_ms - self.last_breach_ms > keep_ms => {
                AlertState::Resolved { starts_at_ms, ends_at_ms: at_ms }
            }
            state @ AlertState::Firing { .. } => state,
        };
        self
    }
}

/// A burn rate over one window, and whether the window had enough calls to count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurnRate {
    /// The window, as scaled to the objective.
    pub window_ms: i64,
    /// How fast the error budget burns: 1 spends it exactly over the objective's window.
    pub rate: f64,
    /// Calls (or latency samples) in the window.
    pub calls: u64,
    /// Whether `calls` reached `min_calls` (below it the window never breaches).
    pub counted: bool,
}

/// One alert of an objective at a step.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertStatus {
    /// `page` or `ticket`.
    pub severity: Severity,
    /// Its state.
    pub state: AlertState,
}

/// Everything about one objective at a step.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectiveStatus {
    /// The objective.
    pub objective: Objective,
    /// The step evaluated.
    pub at_ms: i64,
    /// Edges selected now.
    pub edges: usize,
    /// Calls (latency samples for a latency goal) over the objective's window.
    pub calls: u64,
    /// The share of good calls over the window (none without calls); for a flow goal,
    /// none.
    pub sli: Option<f64>,
    /// Bounds of `sli` where a latency threshold falls inside a histogram counter.
    pub sli_low: Option<f64>,
    /// See `sli_low`.
    pub sli_high: Option<f64>,
    /// The share of the error budget left (1 untouched, 0 spent, below 0 overspent).
    pub budget_remaining: Option<f64>,
    /// When the budget runs out at the current (shortest page window's) burn rate.
    pub exhaustion_ms: Option<i64>,
    /// Burn rates of the page and ticket pairs, long then short.
    pub burn_rates: Vec<BurnRate>,
    /// For a flow goal: the rate over its `for` window.
    pub flow_rate_per_s: Option<f64>,
    /// The alerts (page and ticket for burn-rate goals, one for a flow goal).
    pub alerts: Vec<AlertStatus>,
    /// Whether missing peers may hold calls of these edges (then a firing alert is not
    /// resolved and a flow alert does not fire).
    pub coverage_partial: bool,
}

/// A whole evaluation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evaluation {
    /// The step evaluated.
    pub at_ms: i64,
    /// Every objective, by name.
    pub objectives: Vec<ObjectiveStatus>,
}

/// Sums of one bucket (or of a window) over an objective's edges.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Agg {
    calls: u64,
    errors: u64,
    samples: u64,
    good_low: u64,
    good_high: u64,
    /// The estimate of good samples, in thousandths (integers add up exactly).
    good_milli: u64,
}

impl Agg {
    fn add(&mut self, o: &Agg) {
        self.calls += o.calls;
        self.errors += o.errors;
        self.samples += o.samples;
        self.good_low += o.good_low;
        self.good_high += o.good_high;
        self.good_milli += o.good_milli;
    }

    fn minus(&self, o: &Agg) -> Agg {
        Agg {
            calls: self.calls - o.calls,
            errors: self.errors - o.errors,
            samples: self.samples - o.samples,
            good_low: self.good_low - o.good_low,
            good_high: self.good_high - o.good_high,
            good_milli: self.good_milli - o.good_milli,
        }
    }

    /// `(total, good estimate, good low, good high)` for `goal`.
    fn shares(&self, goal: &Goal) -> (u64, f64, u64, u64) {
        match goal {
            Goal::Latency { .. } => {
                (self.samples, self.good_milli as f64 / 1000.0, self.good_low, self.good_high)
            }
            _ => {
                let good = self.calls - self.errors.min(self.calls);
                (self.calls, good as f64, good, good)
            }
        }
    }
}

/// One window an objective reads at each step: its length, and the level of the
/// resolution chain its body is read at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    length_ms: i64,
    level: usize,
}

/// Dense bucket sums of an objective's edges at one resolution: `[start, end)`.
#[derive(Debug, Clone)]
struct Series {
    resolution: u8,
    width_ms: i64,
    start_ms: i64,
    buckets: VecDeque<Agg>,
    /// Prefix sums of `buckets` (one more entry), rebuilt after every change.
    prefix: Vec<Agg>,
}

impl Series {
    fn end_ms(&self) -> i64 {
        self.start_ms + self.buckets.len() as i64 * self.width_ms
    }

    fn rebuild_prefix(&mut self) {
        self.prefix.clear();
        let mut running = Agg::default();
        self.prefix.push(running);
        for bucket in &self.buckets {
            running.add(bucket);
            self.prefix.push(running);
        }
    }

    /// The sum of the buckets in `[from_ms, to_ms)`, both multiples of the width.
    fn sum(&self, from_ms: i64, to_ms: i64) -> Agg {
        let index =
            |ms: i64| ((ms - self.start_ms) / self.width_ms).clamp(0, self.buckets.len() as i64) as usize;
        let (first, last) = (index(from_ms), index(to_ms));
        if last <= first {
            return Agg::default();
        }
        self.prefix[last].minus(&self.prefix[first])
    }
}

/// The resolutions an objective reads, finest first, each width a multiple of the one
/// before: windows end exactly at a step (whole buckets of the finest level at the end,
/// coarser ones further back), and no bucket is read that a step's time has not passed.
fn chain(resolutions: &[Resolution], lookback_ms: i64) -> Vec<(usize, i64)> {
    let mut chain: Vec<(usize, i64)> = Vec::new();
    for (r, resolution) in resolutions.iter().enumerate() {
        let (Some(width), Some(retention)) = (resolution.width_ms, resolution.retention_ms) else { continue };
        if chain.last().is_some_and(|&(_, last)| width % last != 0) {
            continue;
        }
        chain.push((r, width));
        let _ = retention;
    }
    // A level serves as the tail of the next one: it must keep a step's tail (up to the
    // next width) for the whole lookback.
    while chain.len() > 1 {
        let (r, _) = chain[0];
        let next_width = chain[1].1;
        let keeps = resolutions[r]
            .retention_ms
            .is_some_and(|retention| retention >= lookback_ms + next_width + RETENTION_MARGIN_MS);
        if keeps {
            break;
        }
        chain.remove(0);
    }
    chain
}

/// What the evaluator keeps of one objective.
#[derive(Debug, Clone)]
struct Tracked {
    objective: Objective,
    edges: Vec<Edge>,
    /// The resolution chain: `(resolution index, width)`, finest first.
    levels: Vec<(usize, i64)>,
    sli_window: Window,
    /// Page pairs then ticket pairs: `(long, short, factor)` windows.
    pairs: Vec<(Window, Window, f64, Severity)>,
    flow_window: Option<Window>,
    /// One per level.
    series: Vec<Series>,
    /// For a flow goal: calls of the edges before the end of the flow window level's
    /// series (from the all-time totals), so that a step can tell whether the flow had
    /// ever started before its `for` window: a flow that never started is not missing.
    flow_calls_before_end: u64,
    /// The same, before the series' start: when it changes (data older than the series
    /// arrived), every step is computed again.
    flow_calls_before_start: u64,
    /// Per step in the lookback: `(at, page breach, ticket breach, flow breach)`.
    steps: VecDeque<(i64, bool, bool, bool)>,
    /// Each alert's machine as the oldest step of `steps` left it.
    boundary: [Machine; 3],
    /// What was published last (coverage-aware evaluation holds on to it).
    published: Vec<AlertStatus>,
}

/// Evaluates a set of objectives; see the module documentation.
#[derive(Debug, Clone)]
pub struct Evaluator {
    config: EvalConfig,
    set: ObjectiveSet,
    tracked: Vec<Tracked>,
    edge_set_generation: Option<u64>,
    /// Which objectives select each edge.
    by_edge: BTreeMap<Edge, Vec<usize>>,
    last_step_ms: Option<i64>,
}

fn scaled(length_ms: i64, window_ms: i64, finest_ms: i64) -> i64 {
    let scaled = (length_ms as f64 * window_ms as f64 / WORKBOOK_WINDOW_MS as f64).round() as i64;
    scaled.max(finest_ms)
}

impl Evaluator {
    /// An evaluator of `set` over state with `settings`. Objectives whose windows no
    /// resolution keeps for the lookback are errors naming the objective.
    pub fn new(set: ObjectiveSet, settings: &Settings, config: EvalConfig) -> Result<Self, ObjectiveError> {
        let resolutions = settings.resolutions().to_vec();
        let levels = chain(&resolutions, config.lookback_ms);
        // Windows end at the last boundary of the finest level read, at or before the step.
        let finest_ms = levels.first().map_or(settings.finest_width_ms(), |&(_, w)| w);
        let window = |name: &str, key: &str, length_ms: i64| {
            levels
                .iter()
                .position(|&(r, _)| {
                    resolutions[r].retention_ms.is_some_and(|retention| {
                        retention >= length_ms.saturating_add(config.lookback_ms).saturating_add(RETENTION_MARGIN_MS)
                    })
                })
                .map(|level| Window { length_ms, level })
                .ok_or_else(|| ObjectiveError {
                    key: format!("{name}: {key}"),
                    reason: format!(
                        "a window of {} is longer than any resolution keeps with objectives.lookback ({}) on top",
                        human_ms(length_ms),
                        human_ms(config.lookback_ms)
                    ),
                })
        };
        let mut tracked = Vec::new();
        for objective in set.objectives() {
            let name = &objective.name;
            let sli_window = window(name, "window", objective.window_ms)?;
            let mut pairs = Vec::new();
            let mut flow_window = None;
            match &objective.goal {
                Goal::Flow { for_ms, .. } => flow_window = Some(window(name, "flow.for", *for_ms)?),
                _ => {
                    for (pairs_of, severity) in
                        [(&PAGE_PAIRS, Severity::Page), (&TICKET_PAIRS, Severity::Ticket)]
                    {
                        for &(long, short, factor) in pairs_of {
                            let long = window(name, "window", scaled(long, objective.window_ms, finest_ms))?;
                            let short =
                                window(name, "window", scaled(short, objective.window_ms, finest_ms))?;
                            pairs.push((long, short, factor, severity));
                        }
                    }
                }
            }
            tracked.push(Tracked {
                objective: objective.clone(),
                edges: Vec::new(),
                levels: levels.clone(),
                sli_window,
                pairs,
                flow_window,
                series: Vec::new(),
                flow_calls_before_end: 0,
                flow_calls_before_start: 0,
                steps: VecDeque::new(),
                boundary: [Machine::START; 3],
                published: Vec::new(),
            });
        }
        Ok(Self {
            config,
            set,
            tracked,
            edge_set_generation: None,
            by_edge: BTreeMap::new(),
            last_step_ms: None,
        })
    }

    /// The objectives evaluated.
    pub fn objectives(&self) -> &ObjectiveSet {
        &self.set
    }

    /// The step `now_ms` falls in.
    pub fn step_of(&self, now_ms: i64) -> i64 {
        now_ms.div_euclid(self.config.eval_interval_ms) * self.config.eval_interval_ms
    }

    /// When the next step begins (evaluating more often only re-reads changes).
    pub fn poll_timeout(&self) -> i64 {
        match self.last_step_ms {
            Some(step) => step + self.config.eval_interval_ms,
            None => i64::MIN,
        }
    }

    /// Evaluates every objective at the step of `now_ms`. `changes` are the global view's
    /// changes since the last call (every change must be passed once, in order).
    pub fn evaluate(
        &mut self,
        now_ms: i64,
        state: &FlowState,
        changes: &GlobalChanges,
        coverage: &Coverage,
    ) -> Evaluation {
        let at_ms = self.step_of(now_ms);
        self.last_step_ms = Some(at_ms);
        if self.edge_set_generation != Some(changes.edge_set_generation) {
            self.edge_set_generation = Some(changes.edge_set_generation);
            self.rematch(state);
        }
        let resolutions = state.settings().resolutions().len();
        let mut changed_from: Vec<Vec<i64>> = vec![vec![i64::MAX; resolutions]; self.tracked.len()];
        for (edge, from_ms) in &changes.edges {
            for &i in self.by_edge.get(edge).into_iter().flatten() {
                for (mine, theirs) in changed_from[i].iter_mut().zip(from_ms) {
                    *mine = (*mine).min(*theirs);
                }
            }
        }
        let config = self.config;
        let objectives = self
            .tracked
            .iter_mut()
            .zip(changed_from)
            .map(|(tracked, changed)| tracked.evaluate(at_ms, state, &changed, coverage, config))
            .collect();
        Evaluation { at_ms, objectives }
    }

    fn rematch(&mut self, state: &FlowState) {
        self.by_edge.clear();
        for (i, tracked) in self.tracked.iter_mut().enumerate() {
            let mut edges: Vec<Edge> =
                state.edges().filter(|e| tracked.objective.selector.matches(e)).cloned().collect();
            edges.sort();
            if edges != tracked.edges {
                tracked.edges = edges;
                tracked.series.clear();
                tracked.steps.clear();
            }
            for edge in &tracked.edges {
                self.by_edge.entry(edge.clone()).or_default().push(i);
            }
        }
    }
}

/// The bucket sums of `edges` in one bucket.
fn read_bucket(
    state: &FlowState,
    edges: &[Edge],
    resolution: u8,
    start_ms: i64,
    width_ms: i64,
    goal: &Goal,
) -> Agg {
    let mut agg = Agg::default();
    for edge in edges {
        for (_, data) in state.edge_buckets(edge, resolution, start_ms..start_ms + width_ms) {
            agg.calls += data.calls;
            agg.errors += data.errors;
            if let Goal::Latency { threshold_us, .. } = goal {
                let below = data.latency.count_at_or_below_bounds(*threshold_us);
                agg.samples += data.latency.len();
                agg.good_low += below.low;
                agg.good_high += below.high;
                agg.good_milli += (below.estimate * 1000.0).round() as u64;
            }
        }
    }
    agg
}

fn floor(ms: i64, width: i64) -> i64 {
    ms.div_euclid(width) * width
}

impl Tracked {
    /// How far back from a step each level is read: the longest window whose body it
    /// holds, and the next level's width (a step's tail).
    fn reach_by_level(&self) -> Vec<i64> {
        let mut reach: Vec<i64> = (0..self.levels.len())
            .map(|level| self.levels.get(level + 1).map_or(0, |&(_, width)| width))
            .collect();
        let windows = self
            .pairs
            .iter()
            .flat_map(|(long, short, _, _)| [*long, *short])
            .chain([self.sli_window])
            .chain(self.flow_window);
        for window in windows {
            reach[window.level] = reach[window.level].max(window.length_ms);
        }
        reach
    }

    /// Brings the series up to step `at_ms`: drops what no step reads, adds the buckets
    /// steps passed since (read from the view) and re-reads every bucket that changed.
    fn update_series(&mut self, at_ms: i64, state: &FlowState, changed_from_ms: &[i64], config: EvalConfig) {
        let reach = self.reach_by_level();
        if self.series.len() != self.levels.len() {
            self.series = self
                .levels
                .iter()
                .map(|&(r, width)| Series {
                    resolution: r as u8,
                    width_ms: width,
                    start_ms: 0,
                    buckets: VecDeque::new(),
                    prefix: Vec::new(),
                })
                .collect();
        }
        let goal = &self.objective.goal;
        for (series, reach_ms) in self.series.iter_mut().zip(reach) {
            let width = series.width_ms;
            let r = series.resolution;
            let start = floor(at_ms - config.lookback_ms - reach_ms, width);
            let end = floor(at_ms, width);
            if series.buckets.is_empty() || series.start_ms > start || series.end_ms() < start {
                series.start_ms = start;
                series.buckets = (0..(end - start) / width)
                    .map(|i| read_bucket(state, &self.edges, r, start + i * width, width, goal))
                    .collect();
            } else {
                while series.start_ms < start && !series.buckets.is_empty() {
                    series.buckets.pop_front();
                    series.start_ms += width;
                }
                let old_end = series.end_ms();
                let changed = changed_from_ms[usize::from(r)];
                if changed != i64::MAX {
                    let mut bucket = floor(changed, width).max(series.start_ms);
                    while bucket < old_end.min(end) {
                        let index = ((bucket - series.start_ms) / width) as usize;
                        series.buckets[index] = read_bucket(state, &self.edges, r, bucket, width, goal);
                        bucket += width;
                    }
                }
                let mut bucket = old_end;
                while bucket < end {
                    series.buckets.push_back(read_bucket(state, &self.edges, r, bucket, width, goal));
                    bucket += width;
                }
                while series.end_ms() > end {
                    series.buckets.pop_back();
                }
            }
            series.rebuild_prefix();
        }
        if let Some(window) = self.flow_window {
            let series = &self.series[window.level];
            let total = state.settings().resolutions().len() - 1;
            let mut all_time = 0;
            let mut after_end = 0;
            for edge in &self.edges {
                all_time += state
                    .edge_buckets(edge, total as u8, i64::MIN..i64::MAX)
                    .map(|(_, d)| d.calls)
                    .sum::<u64>();
                after_end += state
                    .edge_buckets(edge, series.resolution, series.end_ms()..i64::MAX)
                    .map(|(_, d)| d.calls)
                    .sum::<u64>();
            }
            self.flow_calls_before_end = all_time.saturating_sub(after_end);
        }
    }

    /// Calls of a flow goal's edges before `ms` (rounded down to the flow level's width).
    fn flow_calls_before(&self, ms: i64) -> u64 {
        let Some(window) = self.flow_window else { return 0 };
        let series = &self.series[window.level];
        let from = floor(ms, series.width_ms);
        self.flow_calls_before_end.saturating_sub(series.sum(from, series.end_ms()).calls)
    }

    /// The sums over `[at - length, at)`: whole buckets of the window's level for its
    /// body (its oldest bucket read whole), then finer levels for the tail, so that the
    /// window ends exactly at the step.
    fn window_sum(&self, window: Window, at_ms: i64) -> Agg {
        let finest = self.levels[0].1;
        let end = floor(at_ms, finest);
        let start = end - window.length_ms;
        let mut agg = Agg::default();
        let (_, body_width) = self.levels[window.level];
        let body_to = floor(end, body_width);
        agg.add(&self.series[window.level].sum(floor(start, body_width), body_to));
        let mut from = body_to;
        for level in (0..window.level).rev() {
            let to = floor(end, self.levels[level].1);
            agg.add(&self.series[level].sum(from, to));
            from = to;
        }
        agg
    }

    fn burn(&self, window: Window, at_ms: i64, target: f64) -> BurnRate {
        let agg = self.window_sum(window, at_ms);
        let (total, good, _, _) = agg.shares(&self.objective.goal);
        let counted = total > 0 && total >= self.objective.min_calls;
        let rate = if total == 0 { 0.0 } else { (1.0 - good / total as f64).max(0.0) / (1.0 - target) };
        BurnRate { window_ms: window.length_ms, rate, calls: total, counted }
    }

    /// The conditions at step `at_ms`: (page breach, ticket breach, flow breach).
    fn conditions(&self, at_ms: i64) -> (bool, bool, bool) {
        match &self.objective.goal {
            Goal::Flow { rate_at_least_per_s, for_ms, .. } => {
                let window = self.flow_window.expect("a flow goal has its window");
                let calls = self.window_sum(window, at_ms).calls;
                let low = (calls as f64) < rate_at_least_per_s * (*for_ms as f64 / 1000.0);
                // Missing only if it had flowed before the window began.
                (false, false, low && self.flow_calls_before(at_ms - for_ms) > 0)
            }
            goal => {
                let target = match goal {
                    Goal::Latency { target, .. } | Goal::Errors { target } => *target,
                    Goal::Flow { .. } => unreachable!("handled above"),
                };
                let mut breach = [false, false];
                for (long, short, factor, severity) in &self.pairs {
                    let (l, s) = (self.burn(*long, at_ms, target), self.burn(*short, at_ms, target));
                    if l.counted && s.counted && l.rate > *factor && s.rate > *factor {
                        breach[usize::from(*severity == Severity::Ticket)] = true;
                    }
                }
                (breach[0], breach[1], false)
            }
        }
    }

    fn evaluate(
        &mut self,
        at_ms: i64,
        state: &FlowState,
        changed_from_ms: &[i64],
        coverage: &Coverage,
        config: EvalConfig,
    ) -> ObjectiveStatus {
        self.update_series(at_ms, state, changed_from_ms, config);
        let mut changed_from_ms = changed_from_ms.to_vec();
        if let Some(window) = self.flow_window {
            let before_start = self.flow_calls_before(self.series[window.level].start_ms);
            if before_start != self.flow_calls_before_start {
                self.flow_calls_before_start = before_start;
                changed_from_ms.iter_mut().for_each(|from| *from = i64::MIN);
            }
        }
        let changed_from_ms = &changed_from_ms[..];
        let interval = config.eval_interval_ms;
        let first = (at_ms - config.lookback_ms).div_euclid(interval) * interval;
        let (for_ms, keep_ms, hold_ms) =
            (self.objective.for_ms, self.objective.keep_firing_for_ms, config.resolved_hold_ms);
        // Steps leaving the lookback move the boundary machines on; then every step at or
        // after a change is computed again, and new steps are added.
        while let Some(&(step, page, ticket, flow)) = self.steps.front() {
            if step >= first {
                break;
            }
            for (machine, breach) in self.boundary.iter_mut().zip([page, ticket, flow]) {
                *machine = machine.step(step, breach, for_ms, keep_ms, hold_ms);
            }
            self.steps.pop_front();
        }
        // A step reads a level's buckets up to the one ending at the step: a change in a
        // bucket changes the steps from its end on.
        let recompute_from = self
            .series
            .iter()
            .map(|series| changed_from_ms[usize::from(series.resolution)].saturating_add(series.width_ms))
            .min()
            .unwrap_or(i64::MAX);
        let again: Vec<(usize, (bool, bool, bool))> = self
            .steps
            .iter()
            .enumerate()
            .filter(|(_, (step, ..))| *step >= recompute_from)
            .map(|(i, &(step, ..))| (i, self.conditions(step)))
            .collect();
        for (i, (page, ticket, flow)) in again {
            self.steps[i] = (self.steps[i].0, page, ticket, flow);
        }
        let mut next = self.steps.back().map_or(first, |&(step, ..)| step + interval);
        while next <= at_ms {
            let (page, ticket, flow) = self.conditions(next);
            self.steps.push_back((next, page, ticket, flow));
            next += interval;
        }
        let mut machines = self.boundary;
        for &(step, page, ticket, flow) in &self.steps {
            for (machine, breach) in machines.iter_mut().zip([page, ticket, flow]) {
                *machine = machine.step(step, breach, for_ms, keep_ms, hold_ms);
            }
        }
        self.status(at_ms, machines, coverage)
    }

    fn status(&mut self, at_ms: i64, machines: [Machine; 3], coverage: &Coverage) -> ObjectiveStatus {
        let objective = &self.objective;
        let partial = coverage.touches(&self.edges);
        let sli_agg = self.window_sum(self.sli_window, at_ms);
        let (total, good, good_low, good_high) = sli_agg.shares(&objective.goal);
        let mut alerts: Vec<AlertStatus> = match &objective.goal {
            Goal::Flow { severity, .. } => {
                vec![AlertStatus { severity: *severity, state: machines[2].state }]
            }
            _ => vec![
                AlertStatus { severity: Severity::Page, state: machines[0].state },
                AlertStatus { severity: Severity::Ticket, state: machines[1].state },
            ],
        };
        if partial {
            // Missing peers may hold calls of these edges: what looks like a recovery
            // may not be one, and what looks like a missing flow may be elsewhere.
            for (alert, previous) in alerts.iter_mut().zip(&self.published) {
                let was_firing = matches!(previous.state, AlertState::Firing { .. });
                match (&objective.goal, alert.state) {
                    (_, AlertState::Resolved { .. } | AlertState::Inactive | AlertState::Pending { .. })
                        if was_firing =>
                    {
                        alert.state = previous.state;
                    }
                    (Goal::Flow { .. }, AlertState::Firing { .. }) if !was_firing => {
                        alert.state = previous.state;
                    }
                    _ => {}
                }
            }
            if self.published.is_empty() && matches!(objective.goal, Goal::Flow { .. }) {
                for alert in &mut alerts {
                    if matches!(alert.state, AlertState::Firing { .. }) {
                        alert.state = AlertState::Inactive;
                    }
                }
            }
        }
        self.published = alerts.clone();
        let (sli, sli_low, sli_high, budget_remaining, exhaustion_ms, burn_rates, flow_rate_per_s) =
            match &objective.goal {
                Goal::Flow { for_ms, .. } => {
                    let window = self.flow_window.expect("flow window");
                    let calls = self.window_sum(window, at_ms).calls;
                    (None, None, None, None, None, Vec::new(), Some(calls as f64 * 1000.0 / *for_ms as f64))
                }
                goal => {
                    let target = objective.target().expect("a burn-rate goal has a target");
                    let share = |n: f64| (total > 0).then(|| n / total as f64);
                    let sli = share(good);
                    let budget = sli.map(|sli| 1.0 - (1.0 - sli) / (1.0 - target));
                    let burn_rates: Vec<BurnRate> = self
                        .pairs
                        .iter()
                        .flat_map(|(long, short, _, _)| [*long, *short])
                        .map(|w| self.burn(w, at_ms, target))
                        .collect();
                    // The page pair's long window tells the current pace.
                    let pace = burn_rates.first().map_or(0.0, |b| b.rate);
                    let exhaustion = budget
                        .filter(|_| pace > 0.0)
                        .map(|budget| (budget.max(0.0) * objective.window_ms as f64 / pace).round() as i64);
                    let exact = matches!(goal, Goal::Latency { .. }) && good_low != good_high;
                    let (low, high) =
                        if exact { (share(good_low as f64), share(good_high as f64)) } else { (sli, sli) };
                    (sli, low, high, budget, exhaustion, burn_rates, None)
                }
            };
        ObjectiveStatus {
            objective: objective.clone(),
            at_ms,
            edges: self.edges.len(),
            calls: total,
            sli,
            sli_low,
            sli_high,
            budget_remaining,
            exhaustion_ms,
            burn_rates,
            flow_rate_per_s,
            alerts,
            coverage_partial: partial,
        }
    }
}
