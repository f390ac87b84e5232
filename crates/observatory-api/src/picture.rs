//! The live picture over HTTP: the page at `/` (embedded, no outside fetch), the drawing
//! as JSON (`GET /api/v1/layout`), as SVG (`GET /graph.svg`, also what the page shows
//! without JavaScript) and pushed as server-sent events (`GET /api/v1/live`).
//!
//! The drawing comes from `observatory-layout`. The edge keeps the last drawing it made
//! and hands it to the next one, so that every client sees the same positions and a
//! node, once drawn, does not move while it stays in the graph (`?fresh=true` tidies).
//!
//! `GET /api/v1/live?window=1m` sends a `graph` event (a whole [`PictureAnswer`]) first
//! and whenever the set of edges changes, and a `figures` event every `ui.live_interval`
//! otherwise: only the edges whose rounded figures changed, as
//! `[index, rate_per_s, error_ratio, p50_ms, p99_ms, health]` (index into the last graph
//! event's edges; health 0 idle, 1 good, 2 warn, 3 bad), and the coverage.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use observatory_config::Config;
use observatory_layout::{
    Decor, Direction, EdgeDecor, EdgeKey, Health, Layout, LayoutConfig, NodeDecor, Shape,
};
use observatory_objectives::model::{Pattern, Selector};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::objectives::ObjectiveJson;
use crate::query::{graph_answer, graph_answer_grouped};
use crate::wire::{Coverage, FiguresJson, GraphAnswer, WindowJson};
use crate::{Api, ApiError, PeerApi};

const PAGE: &str = include_str!("../ui/index.html");
const SCRIPT: &str = include_str!("../ui/app.js");
const STYLE: &str = include_str!("../ui/app.css");

/// How pictures are coloured and how live streams run (`ui.*`).
#[derive(Debug, Clone)]
pub struct PictureSettings {
    /// Amber from this error ratio on.
    pub error_ratio_warn: f64,
    /// Red from this error ratio on.
    pub error_ratio_bad: f64,
    /// Amber from this p99 on, in milliseconds.
    pub p99_warn_ms: f64,
    /// Red from this p99 on, in milliseconds.
    pub p99_bad_ms: f64,
    /// Time between two updates of a live stream.
    pub live_interval: Duration,
    /// Most live streams open at once.
    pub live_streams_max: usize,
    /// Over this many nodes, nodes are collapsed into groups.
    pub group_above: usize,
    /// Named groups, tried in order: (name, pattern).
    pub groups: Vec<(String, Pattern)>,
}

impl PictureSettings {
    /// The settings in `config`.
    pub fn from_config(config: &Config) -> Self {
        let ui = &config.ui;
        PictureSettings {
            error_ratio_warn: ui.error_ratio_warn,
            error_ratio_bad: ui.error_ratio_bad,
            p99_warn_ms: ui.p99_warn.as_secs_f64() * 1000.0,
            p99_bad_ms: ui.p99_bad.as_secs_f64() * 1000.0,
            live_interval: ui.live_interval,
            live_streams_max: ui.live_streams_max,
            group_above: ui.group_above,
            // The config crate checked these; a pattern it let through always parses.
            groups: ui
                .groups
                .iter()
                .filter_map(|g| {
                    Pattern::parse("ui.groups.match", &g.pattern).ok().map(|p| (g.name.clone(), p))
                })
                .collect(),
        }
    }
}

/// The edge's part of the picture: the settings, the last drawing, places for live
/// streams, and the signal that ends them when the server stops.
#[derive(Debug)]
pub(crate) struct Pictures {
    pub(crate) settings: PictureSettings,
    drawings: Mutex<Drawings>,
    live_slots: Arc<tokio::sync::Semaphore>,
    pub(crate) shutdown: CancellationToken,
}

impl Pictures {
    pub(crate) fn new(settings: PictureSettings, shutdown: CancellationToken) -> Self {
        let live_slots = Arc::new(tokio::sync::Semaphore::new(settings.live_streams_max));
        Pictures { settings, drawings: Mutex::new(Drawings::default()), live_slots, shutdown }
    }
}

/// What the edge remembers of its drawings.
#[derive(Debug, Default)]
struct Drawings {
    /// Every place drawn so far (nodes and routes that left the graph included), handed to
    /// the next drawing so that what comes back comes back to its place.
    memory: Option<Layout>,
    /// The last drawing, with the edges it drew: the same edges draw the same again.
    last: Option<(BTreeSet<EdgeKey>, Layout)>,
    /// Counts fresh drawings (`fresh=true`): a live stream that drew with an older version
    /// sends its client the new places.
    version: u64,
}

impl Drawings {
    fn draw(&mut self, keys: BTreeSet<EdgeKey>, fresh: bool) -> (Layout, u64) {
        let config = LayoutConfig::default();
        if fresh {
            self.version += 1;
            let drawing = observatory_layout::layout(&keys, None, &config);
            self.memory = Some(drawing.clone());
            self.last = Some((keys, drawing.clone()));
            return (drawing, self.version);
        }
        if let Some((last_keys, drawing)) = &self.last
            && *last_keys == keys
        {
            return (drawing.clone(), self.version);
        }
        let drawing = observatory_layout::layout(&keys, self.memory.as_ref(), &config);
        self.memory = Some(match &self.memory {
            Some(memory) => drawing.remembering(memory, &config),
            None => drawing.clone(),
        });
        self.last = Some((keys, drawing.clone()));
        (drawing, self.version)
    }
}

/// A health as the answers write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthJson {
    /// No calls to judge by.
    Idle,
    /// Meets its objectives, or under the warning thresholds.
    Good,
    /// Pending, or over a warning threshold.
    Warn,
    /// Firing, or over a bad threshold.
    Bad,
}

impl HealthJson {
    fn drawn(self) -> Health {
        match self {
            HealthJson::Idle => Health::Idle,
            HealthJson::Good => Health::Good,
            HealthJson::Warn => Health::Warn,
            HealthJson::Bad => Health::Bad,
        }
    }
}

/// One node of the picture.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PictureNode {
    /// Name.
    pub name: String,
    /// Column.
    pub rank: i32,
    /// Centre.
    pub x: f64,
    /// Centre.
    pub y: f64,
    /// `service`, `database` or `group`.
    pub shape: String,
    /// Calls it received in the window.
    pub calls_in: u64,
    /// Calls it sent in the window.
    pub calls_out: u64,
    /// The worst health of the edges into it (of those out of it, for a caller only).
    pub health: HealthJson,
    /// For a group: how many nodes it collapses (absent for a node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<usize>,
    /// A virtual node (see the graph answer's nodes): drawn dashed.
    #[serde(default, rename = "virtual", skip_serializing_if = "std::ops::Not::not")]
    pub virtual_node: bool,
}

/// An objective on an edge.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EdgeObjectiveJson {
    /// Its name.
    pub name: String,
    /// `inactive`, `pending`, `firing` or `resolved`.
    pub state: String,
}

/// One edge of the picture.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PictureEdge {
    /// Sender.
    pub from: String,
    /// Receiver.
    pub to: String,
    /// `request`, `messaging` or `database`.
    pub kind: String,
    /// Which end is a virtual node (`client` or `server`), as in the graph answer.
    #[serde(default, rename = "virtual", skip_serializing_if = "Option::is_none")]
    pub virtual_node: Option<String>,
    /// `forward`, `backward` (reversed to break a cycle), `flat` or `loop`.
    pub direction: String,
    /// Its route, sender side first.
    pub points: Vec<[f64; 2]>,
    /// Figures over the window.
    #[serde(flatten)]
    pub figures: FiguresJson,
    /// By its objectives' state if it has any, else by error ratio and p99.
    pub health: HealthJson,
    /// The objectives that select it (for an edge between groups, those whose patterns
    /// match the groups' names, such as `checkout-*`).
    pub objectives: Vec<EdgeObjectiveJson>,
}

/// Answer to `GET /api/v1/layout` and the `graph` events of `GET /api/v1/live`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PictureAnswer {
    /// What was read.
    pub window: WindowJson,
    /// Which origins the answer sums, and how the peer stands with its mesh.
    pub coverage: Coverage,
    /// Node box size.
    pub node_width: f64,
    /// Node box size.
    pub node_height: f64,
    /// `[min_x, min_y, max_x, max_y]` of everything drawn.
    pub bounds: [f64; 4],
    /// Nodes by name.
    pub nodes: Vec<PictureNode>,
    /// Edges by (from, to, kind).
    pub edges: Vec<PictureEdge>,
}

fn shape_text(shape: Shape) -> &'static str {
    match shape {
        Shape::Service => "service",
        Shape::Database => "database",
    }
}

fn direction_text(direction: Direction) -> &'static str {
    match direction {
        Direction::Forward => "forward",
        Direction::Backward => "backward",
        Direction::Flat => "flat",
        Direction::Loop => "loop",
    }
}

fn figures_health(settings: &PictureSettings, figures: &FiguresJson) -> HealthJson {
    if figures.calls == 0 {
        return HealthJson::Idle;
    }
    let by_errors = if figures.error_ratio >= settings.error_ratio_bad {
        HealthJson::Bad
    } else if figures.error_ratio >= settings.error_ratio_warn {
        HealthJson::Warn
    } else {
        HealthJson::Good
    };
    let p99 = figures.latency_ms.as_ref().map_or(0.0, |l| l.p99);
    let by_latency = if p99 >= settings.p99_bad_ms {
        HealthJson::Bad
    } else if p99 >= settings.p99_warn_ms {
        HealthJson::Warn
    } else {
        HealthJson::Good
    };
    by_errors.max(by_latency)
}

fn objectives_health(states: &[EdgeObjectiveJson]) -> HealthJson {
    states
        .iter()
        .map(|o| match o.state.as_str() {
            "firing" => HealthJson::Bad,
            "pending" => HealthJson::Warn,
            _ => HealthJson::Good,
        })
        .max()
        .unwrap_or(HealthJson::Idle)
}

fn selects(selector: &Selector, from: &str, to: &str, kind: &str) -> bool {
    selector.kind.is_none_or(|k| Some(k) == observatory_core::EdgeKind::from_name(kind))
        && selector.from.matches(from)
        && selector.to.matches(to)
}

/// How a picture collapses nodes: `group=auto` (the default: over `ui.group_above`
/// nodes) or `off`, and the groups to show expanded (`expand=a-*,b-*`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Grouping {
    off: bool,
    expanded: BTreeSet<String>,
}

impl Grouping {
    fn from_params(group: Option<&str>, expand: Option<&str>) -> Result<Self, ApiError> {
        let off = match group {
            None | Some("auto") => false,
            Some("off") => true,
            Some(other) => {
                return Err(ApiError::bad_param("group", format!("must be auto or off, not `{other}`")));
            }
        };
        let expanded = expand
            .into_iter()
            .flat_map(|e| e.split(','))
            .filter(|g| !g.is_empty())
            .map(str::to_string)
            .collect();
        Ok(Grouping { off, expanded })
    }
}

/// The group a node is drawn in: the first named group it matches, else its name up to
/// and with the first `-`, `.`, `_`, `/` or `:` (not at its start) and a `*`.
fn group_of(settings: &PictureSettings, name: &str) -> Option<String> {
    if let Some((group, _)) = settings.groups.iter().find(|(_, pattern)| pattern.matches(name)) {
        return Some(group.clone());
    }
    let cut = name.char_indices().skip(1).find(|(_, c)| matches!(c, '-' | '.' | '_' | '/' | ':'))?.0;
    Some(format!("{}*", &name[..=cut]))
}

/// The graph to draw, with nodes collapsed when there are too many, and how many nodes
/// each group holds.
pub(crate) fn picture_graph<P: PeerApi>(
    api: &Api<P>,
    window: Option<&str>,
    at: Option<&str>,
    grouping: &Grouping,
) -> Result<(GraphAnswer, BTreeMap<String, usize>), ApiError> {
    let plain = graph_answer(api, window, at)?;
    let settings = &api.pictures.settings;
    if grouping.off || plain.nodes.len() <= settings.group_above {
        return Ok((plain, BTreeMap::new()));
    }
    let mut members: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for node in &plain.nodes {
        if let Some(group) = group_of(settings, &node.name).filter(|g| !grouping.expanded.contains(g)) {
            members.entry(group).or_default().push(&node.name);
        }
    }
    // A group of one is that node.
    members.retain(|_, names| names.len() > 1);
    let mut groups = BTreeMap::new();
    for (group, names) in &members {
        let Ok(group_name) =
            observatory_core::NodeName::new(group, observatory_core::model::NODE_NAME_BYTES_HARD_MAX)
        else {
            continue;
        };
        for name in names {
            groups.insert(name.to_string(), group_name.clone());
        }
    }
    let grouped = graph_answer_grouped(api, window, at, &groups)?;
    Ok((grouped, members.into_iter().map(|(g, names)| (g, names.len())).collect()))
}

/// Draws `graph`, extending what was drawn before unless `fresh`; also says which
/// version of the places it drew with. `members` says which nodes are groups.
pub(crate) fn draw<P: PeerApi>(
    api: &Api<P>,
    graph: GraphAnswer,
    fresh: bool,
    members: &BTreeMap<String, usize>,
) -> (PictureAnswer, u64) {
    let keys: BTreeSet<EdgeKey> =
        graph.edges.iter().map(|e| EdgeKey::new(e.from.clone(), e.to.clone(), e.kind.clone())).collect();
    let (drawing, version) = {
        // A drawing that panicked leaves nothing half done worth keeping: start over.
        let mut drawings = api.pictures.drawings.lock().unwrap_or_else(|poisoned| {
            let mut drawings = poisoned.into_inner();
            *drawings = Drawings::default();
            drawings
        });
        drawings.draw(keys, fresh)
    };
    let view = api.peer.objectives();
    let objectives: Vec<(&Selector, EdgeObjectiveJson)> = view
        .evaluation
        .iter()
        .flat_map(|e| &e.objectives)
        .map(|status| {
            let state = ObjectiveJson::from(status).state;
            (&status.objective.selector, EdgeObjectiveJson { name: status.objective.name.clone(), state })
        })
        .collect();
    let settings = &api.pictures.settings;
    let mut figures: BTreeMap<(&str, &str, &str), (&FiguresJson, &Option<String>)> = graph
        .edges
        .iter()
        .map(|e| ((e.from.as_str(), e.to.as_str(), e.kind.as_str()), (&e.figures, &e.virtual_node)))
        .collect();
    let edges: Vec<PictureEdge> = drawing
        .edges
        .iter()
        .map(|routed| {
            let (figures, virtual_node) = figures
                .remove(&(routed.from.as_str(), routed.to.as_str(), routed.kind.as_str()))
                .expect("every drawn edge is in the graph");
            let figures = figures.clone();
            let on_edge: Vec<EdgeObjectiveJson> = objectives
                .iter()
                .filter(|(selector, _)| selects(selector, &routed.from, &routed.to, &routed.kind))
                .map(|(_, o)| o.clone())
                .collect();
            // Objectives colour an edge with calls, or one they page about; an edge with
            // neither is grey like any other without calls.
            let by_objectives = objectives_health(&on_edge);
            let health = if on_edge.is_empty() || (figures.calls == 0 && by_objectives < HealthJson::Warn) {
                figures_health(settings, &figures)
            } else {
                by_objectives
            };
            PictureEdge {
                from: routed.from.clone(),
                to: routed.to.clone(),
                kind: routed.kind.clone(),
                virtual_node: virtual_node.clone(),
                direction: direction_text(routed.direction).to_string(),
                points: routed.points.iter().map(|p| [round2(p[0]), round2(p[1])]).collect(),
                figures,
                health,
                objectives: on_edge,
            }
        })
        .collect();
    let calls: BTreeMap<&str, (u64, u64, bool)> =
        graph.nodes.iter().map(|n| (n.name.as_str(), (n.calls_in, n.calls_out, n.virtual_node))).collect();
    // The worst health into and out of each node, in one pass over the edges (this runs
    // for every live stream every second).
    let mut worst: BTreeMap<&str, (Option<HealthJson>, Option<HealthJson>)> = BTreeMap::new();
    for e in &edges {
        let into = &mut worst.entry(e.to.as_str()).or_default().0;
        *into = (*into).max(Some(e.health));
        let out = &mut worst.entry(e.from.as_str()).or_default().1;
        *out = (*out).max(Some(e.health));
    }
    let nodes = drawing
        .nodes
        .iter()
        .map(|node| {
            let (into, out) = worst.get(node.name.as_str()).copied().unwrap_or_default();
            let (calls_in, calls_out, virtual_node) =
                calls.get(node.name.as_str()).copied().unwrap_or_default();
            PictureNode {
                name: node.name.clone(),
                rank: node.rank,
                x: round2(node.x),
                y: round2(node.y),
                shape: if members.contains_key(&node.name) { "group" } else { shape_text(node.shape) }
                    .to_string(),
                calls_in,
                calls_out,
                health: into.or(out).unwrap_or(HealthJson::Idle),
                members: members.get(&node.name).copied(),
                virtual_node,
            }
        })
        .collect();
    let b = drawing.bounds;
    let answer = PictureAnswer {
        window: graph.window,
        coverage: graph.coverage,
        node_width: drawing.node_width,
        node_height: drawing.node_height,
        bounds: [b.min_x, b.min_y, b.max_x, b.max_y].map(round2),
        nodes,
        edges,
    };
    (answer, version)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A rate as a person writes it: `12/s`, `3.5/m`.
fn rate_label(per_s: f64) -> String {
    observatory_objectives::model::rate_text(sig(per_s, 3))
}

/// `x` rounded to `digits` significant digits.
fn sig(x: f64, digits: i32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return 0.0;
    }
    let scale = 10f64.powi(digits - x.abs().log10().ceil() as i32);
    (x * scale).round() / scale
}

/// The SVG document of a picture: what `graph --format svg` prints.
pub fn picture_svg(answer: &PictureAnswer) -> String {
    let max_rate = answer.edges.iter().map(|e| e.figures.rate_per_s).fold(0.0, f64::max);
    let mut decor = Decor::default();
    let complete = answer.coverage.mesh.as_ref().is_none_or(|m| m.complete);
    decor.title = format!(
        "flow over the last {} to {} · {} nodes, {} edges · picture {}",
        answer.window.length,
        answer.window.end,
        answer.nodes.len(),
        answer.edges.len(),
        if complete { "complete" } else { "partial" }
    );
    for node in &answer.nodes {
        let note =
            if node.calls_in > 0 { format!("{} in", answer_rate(answer, node)) } else { String::new() };
        decor.nodes.insert(
            node.name.clone(),
            NodeDecor { health: node.health.drawn(), note, dashed: node.virtual_node },
        );
    }
    for edge in &answer.edges {
        let mut label = rate_label(edge.figures.rate_per_s);
        if let Some(latency) = &edge.figures.latency_ms {
            label.push_str(&format!(" · p99 {} ms", sig(latency.p99, 3)));
        }
        if edge.figures.errors > 0 {
            label.push_str(&format!(" · {:.1}% err", edge.figures.error_ratio * 100.0));
        }
        decor.edges.insert(
            EdgeKey::new(edge.from.clone(), edge.to.clone(), edge.kind.clone()),
            EdgeDecor {
                health: edge.health.drawn(),
                width: edge_width(edge.figures.rate_per_s, max_rate),
                label,
            },
        );
    }
    observatory_layout::svg(&to_layout(answer), &decor)
}

fn answer_rate(answer: &PictureAnswer, node: &PictureNode) -> String {
    rate_label(answer.edges.iter().filter(|e| e.to == node.name).map(|e| e.figures.rate_per_s).sum())
}

/// Stroke width by rate on a log scale: 1.5 px for a trickle, 9 px for the busiest edge.
pub fn edge_width(rate_per_s: f64, max_rate_per_s: f64) -> f64 {
    if rate_per_s <= 0.0 || max_rate_per_s <= 0.0 {
        return 1.5;
    }
    let share = (1.0 + rate_per_s).ln() / (1.0 + max_rate_per_s).ln();
    round2(1.5 + 7.5 * share.clamp(0.0, 1.0))
}

/// The drawing a picture answer carries, back in the layout crate's types.
pub fn to_layout(answer: &PictureAnswer) -> Layout {
    let [min_x, min_y, max_x, max_y] = answer.bounds;
    Layout {
        nodes: answer
            .nodes
            .iter()
            .map(|n| observatory_layout::PlacedNode {
                name: n.name.clone(),
                rank: n.rank,
                x: n.x,
                y: n.y,
                shape: if n.shape == "database" { Shape::Database } else { Shape::Service },
            })
            .collect(),
        edges: answer
            .edges
            .iter()
            .map(|e| observatory_layout::RoutedEdge {
                from: e.from.clone(),
                to: e.to.clone(),
                kind: e.kind.clone(),
                direction: match e.direction.as_str() {
                    "backward" => Direction::Backward,
                    "flat" => Direction::Flat,
                    "loop" => Direction::Loop,
                    _ => Direction::Forward,
                },
                points: e.points.clone(),
            })
            .collect(),
        node_width: answer.node_width,
        node_height: answer.node_height,
        bounds: observatory_layout::Bounds { min_x, min_y, max_x, max_y },
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PictureParams {
    window: Option<String>,
    at: Option<String>,
    fresh: Option<bool>,
    group: Option<String>,
    expand: Option<String>,
}

fn params<T>(params: Result<Query<T>, axum::extract::rejection::QueryRejection>) -> Result<T, ApiError> {
    params.map(|Query(p)| p).map_err(|e| ApiError::BadRequest(e.body_text()))
}

async fn drawn<P: PeerApi>(api: Arc<Api<P>>, params: PictureParams) -> Result<PictureAnswer, ApiError> {
    // A big graph takes a while to draw: off the async threads.
    tokio::task::spawn_blocking(move || {
        let grouping = Grouping::from_params(params.group.as_deref(), params.expand.as_deref())?;
        let (graph, members) =
            picture_graph(&api, params.window.as_deref(), params.at.as_deref(), &grouping)?;
        Ok(draw(&api, graph, params.fresh.unwrap_or(false), &members).0)
    })
    .await
    .map_err(|join| ApiError::Internal(format!("drawing the graph failed: {join}")))?
}

pub(crate) async fn get_layout<P: PeerApi>(
    State(api): State<Arc<Api<P>>>,
    query: Result<Query<PictureParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<PictureAnswer>, ApiError> {
    Ok(Json(drawn(api, params(query)?).await?))
}

pub(crate) async fn get_svg<P: PeerApi>(
    State(api): State<Arc<Api<P>>>,
    query: Result<Query<PictureParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let answer = drawn(api, params(query)?).await?;
    Ok(([(header::CONTENT_TYPE, "image/svg+xml; charset=utf-8")], picture_svg(&answer)).into_response())
}

pub(crate) async fn get_page() -> Html<&'static str> {
    Html(PAGE)
}

pub(crate) async fn get_script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT).into_response()
}

pub(crate) async fn get_style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LiveParams {
    window: Option<String>,
    group: Option<String>,
    expand: Option<String>,
}

/// The rounded figures a `figures` event carries for one edge.
type Sent = (f64, f64, Option<f64>, Option<f64>, u8);

fn health_code(health: HealthJson) -> u8 {
    match health {
        HealthJson::Idle => 0,
        HealthJson::Good => 1,
        HealthJson::Warn => 2,
        HealthJson::Bad => 3,
    }
}

/// A whole number written without `.0`: the stream's bytes are mostly numbers.
fn compact(x: f64) -> serde_json::Value {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        serde_json::Value::from(x as i64)
    } else {
        serde_json::Value::from(x)
    }
}

fn rounded(edge: &PictureEdge) -> Sent {
    let latency = edge.figures.latency_ms.as_ref();
    (
        sig(edge.figures.rate_per_s, 2),
        sig(edge.figures.error_ratio, 2),
        latency.map(|l| sig(l.p50, 2)),
        latency.map(|l| sig(l.p99, 2)),
        health_code(edge.health),
    )
}

/// What one live stream has sent.
struct Live<P> {
    api: Arc<Api<P>>,
    window: String,
    grouping: Grouping,
    keys: Option<Vec<(String, String, String)>>,
    version: u64,
    sent: Vec<Sent>,
    coverage: Option<serde_json::Value>,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

#[derive(Serialize)]
struct FiguresEvent<'a> {
    end: &'a str,
    edges: Vec<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    coverage: Option<serde_json::Value>,
}

/// What a live stream says of coverage between graph events: the mesh's counts and the
/// number of origins (their ages change every second; the page reads them from
/// `/api/v1/peers`).
fn coverage_summary(coverage: &Coverage) -> serde_json::Value {
    serde_json::json!({ "origins": coverage.origins.len(), "mesh": coverage.mesh })
}

impl<P: PeerApi> Live<P> {
    fn next_event(&mut self) -> Result<Event, ApiError> {
        let (graph, members) = picture_graph(&self.api, Some(&self.window), None, &self.grouping)?;
        let keys: Vec<(String, String, String)> = graph
            .edges
            .iter()
            .map(|e| (e.from.clone(), e.to.clone(), e.kind.clone()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let (answer, version) = draw(&self.api, graph, false, &members);
        let coverage = coverage_summary(&answer.coverage);
        // New edges, or new places (another client tidied): the whole drawing again.
        if self.keys.as_ref() != Some(&keys) || self.version != version {
            self.keys = Some(keys);
            self.version = version;
            self.sent = answer.edges.iter().map(rounded).collect();
            self.coverage = Some(coverage);
            let data = serde_json::to_string(&answer).map_err(|e| ApiError::Internal(e.to_string()))?;
            return Ok(Event::default().event("graph").data(data));
        }
        let mut edges = Vec::new();
        for (i, edge) in answer.edges.iter().enumerate() {
            let now = rounded(edge);
            if self.sent[i] != now {
                edges.push(serde_json::json!([
                    i,
                    compact(now.0),
                    compact(now.1),
                    now.2.map(compact),
                    now.3.map(compact),
                    now.4
                ]));
                self.sent[i] = now;
            }
        }
        let coverage = (self.coverage.as_ref() != Some(&coverage)).then(|| {
            self.coverage = Some(coverage.clone());
            coverage
        });
        let event = FiguresEvent { end: &answer.window.end, edges, coverage };
        let data = serde_json::to_string(&event).map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(Event::default().event("figures").data(data))
    }
}

pub(crate) async fn get_live<P: PeerApi>(
    State(api): State<Arc<Api<P>>>,
    query: Result<Query<LiveParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let params = params(query)?;
    let window = params.window.unwrap_or_else(|| "1m".to_string());
    let grouping = Grouping::from_params(params.group.as_deref(), params.expand.as_deref())?;
    // A bad window is a 400 now, not an event later.
    graph_answer(&api, Some(&window), None)?;
    let slot = api.pictures.live_slots.clone().try_acquire_owned().map_err(|_| {
        ApiError::Unavailable(format!(
            "{} live streams are open (ui.live_streams_max); try again later",
            api.pictures.settings.live_streams_max
        ))
    })?;
    let interval = api.pictures.settings.live_interval;
    let shutdown = api.pictures.shutdown.clone();
    let live =
        Live { api, window, grouping, keys: None, version: 0, sent: Vec::new(), coverage: None, _slot: slot };
    let stream = futures_util::stream::unfold((live, true), move |(mut live, first)| {
        let shutdown = shutdown.clone();
        async move {
            if !first {
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = shutdown.cancelled() => return None,
                }
            }
            if shutdown.is_cancelled() {
                return None;
            }
            let (event, live) = tokio::task::spawn_blocking(move || {
                let event = live.next_event();
                (event, live)
            })
            .await
            .ok()?;
            let event = event.unwrap_or_else(|e| Event::default().event("problem").data(e.to_string()));
            Some((Ok::<Event, Infallible>(event), (live, false)))
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}
