//! Reading the peer: the graph of a window, one edge's series, the peer's status and its
//! mesh.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use observatory_core::{Edge, EdgeKind, NodeName, QueryError};
use serde::Deserialize;

use crate::wire::{self, Coverage, PeersAnswer, StatusMesh};
use crate::{Api, ApiError, Counters, PeerApi, time_text};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GraphParams {
    window: Option<String>,
    at: Option<String>,
    flow: Option<String>,
}

/// The window length and end a query asks for; the end defaults to now.
pub(crate) fn window_and_end(
    window: Option<&str>,
    at: Option<&str>,
    default_window: &str,
    now_ms: i64,
) -> Result<(i64, i64), ApiError> {
    let window = window.unwrap_or(default_window);
    let window_ms = time_text::parse_duration_ms(window).map_err(|e| ApiError::bad_param("window", e))?;
    let end_ms = match at {
        Some(at) => time_text::parse_time(at).map_err(|e| ApiError::bad_param("at", e))?,
        None => now_ms,
    };
    Ok((window_ms, end_ms))
}

/// The query parameter a query error is about.
pub(crate) fn query_param(error: &QueryError) -> &'static str {
    match error {
        QueryError::WindowNotPositive | QueryError::WindowTooLong { .. } => "window",
        QueryError::EndOutOfRange => "at",
        QueryError::StepUnfit { .. } | QueryError::TooManyPoints { .. } => "step",
    }
}

/// What an answer includes: the origins summed, and how this peer stands with its mesh.
fn coverage<P: PeerApi>(api: &Api<P>, origins: &[observatory_core::OriginCoverage], now_ms: i64) -> Coverage {
    let mut coverage = Coverage::from_core(origins, now_ms);
    coverage.mesh = api.peer.mesh().map(|mesh| mesh.status.completeness(mesh.sync_interval_ms).into());
    coverage
}

pub(crate) async fn get_graph<P: PeerApi>(
    State(api): State<Arc<Api<P>>>,
    params: Result<Query<GraphParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<wire::GraphAnswer>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let flow = match params.flow.as_deref() {
        None => None,
        Some(flow) => Some(
            NodeName::new(flow, api.limits.parse.node_name_bytes_max)
                .map_err(|e| ApiError::bad_param("flow", format!("a flow name {e}")))?,
        ),
    };
    let now_ms = api.peer.now_ms();
    let (window_ms, end_ms) = window_and_end(params.window.as_deref(), params.at.as_deref(), "5m", now_ms)?;
    let (view, flows, origins) = api.peer.read(|state| {
        let view = state.graph_labelled_as_of(window_ms, end_ms, now_ms, flow.as_ref(), false);
        (view, state.flows(), state.coverage())
    });
    let view = view.map_err(|e| ApiError::bad_param(query_param(&e), e))?;
    let coverage = coverage(&api, &origins, now_ms);
    let mut answer = wire::GraphAnswer::from_core(view, window_ms, coverage);
    answer.flow = flow.map(|f| f.to_string());
    answer.flows = flows.into_keys().map(|f| f.to_string()).collect();
    Ok(Json(answer))
}

/// The graph of the window `window` (default 5m) ending at `at` (default now).
pub(crate) fn graph_answer<P: PeerApi>(
    api: &Api<P>,
    window: Option<&str>,
    at: Option<&str>,
) -> Result<wire::GraphAnswer, ApiError> {
    graph_answer_grouped(api, window, at, &BTreeMap::new())
}

/// The same with the nodes of `groups` drawn as the group named (see
/// `FlowState::graph_grouped_as_of`); without groups, the plain graph.
pub(crate) fn graph_answer_grouped<P: PeerApi>(
    api: &Api<P>,
    window: Option<&str>,
    at: Option<&str>,
    groups: &BTreeMap<String, NodeName>,
) -> Result<wire::GraphAnswer, ApiError> {
    let now_ms = api.peer.now_ms();
    let (window_ms, end_ms) = window_and_end(window, at, "5m", now_ms)?;
    let (view, origins) = api.peer.read(|state| {
        let view = if groups.is_empty() {
            state.graph_as_of(window_ms, end_ms, now_ms)
        } else {
            state.graph_grouped_as_of(window_ms, end_ms, now_ms, |name| groups.get(name.as_str()).cloned())
        };
        (view, state.coverage())
    });
    let view = view.map_err(|e| ApiError::bad_param(query_param(&e), e))?;
    let coverage = coverage(api, &origins, now_ms);
    Ok(wire::GraphAnswer::from_core(view, window_ms, coverage))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PropagationParams {
    window: Option<String>,
    at: Option<String>,
}

/// `GET /api/v1/propagation?window=5m`: the propagation verdict of every node.
pub(crate) async fn get_propagation<P: PeerApi>(
    State(api): State<Arc<Api<P>>>,
    params: Result<Query<PropagationParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<wire::PropagationAnswer>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let now_ms = api.peer.now_ms();
    let (window_ms, end_ms) = window_and_end(params.window.as_deref(), params.at.as_deref(), "5m", now_ms)?;
    let entry = NodeName::new(&api.limits.entry_node, observatory_core::model::NODE_NAME_BYTES_HARD_MAX)
        .map_err(|e| ApiError::Internal(format!("correlation.entry_node: {e}")))?;
    let (verdicts, origins) =
        api.peer.read(|state| (state.propagation_as_of(window_ms, end_ms, now_ms, &entry), state.coverage()));
    let (span, nodes) = verdicts.map_err(|e| ApiError::bad_param(query_param(&e), e))?;
    let coverage = coverage(&api, &origins, now_ms);
    Ok(Json(wire::PropagationAnswer::from_core(&span, window_ms, entry.as_str(), nodes, coverage)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SeriesParams {
    window: Option<String>,
    kind: Option<String>,
    step: Option<String>,
    at: Option<String>,
}

pub(crate) async fn get_edge_series<P: PeerApi>(
    State(api): State<Arc<Api<P>>>,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
    params: Result<Query<SeriesParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<wire::SeriesAnswer>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let Path((from, to)) = path.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let edge = edge_of(&api, &from, &to, params.kind.as_deref())?;
    let kind = edge.kind;
    let now_ms = api.peer.now_ms();
    let (window_ms, end_ms) = window_and_end(params.window.as_deref(), params.at.as_deref(), "1h", now_ms)?;
    let step = params.step.as_deref().unwrap_or("1m");
    let step_ms = time_text::parse_duration_ms(step).map_err(|e| ApiError::bad_param("step", e))?;
    let read = api.peer.read(|state| {
        if !state.has_edge(&edge) {
            return None;
        }
        Some((state.series_as_of(&edge, window_ms, step_ms, end_ms, now_ms), state.coverage()))
    });
    let Some((view, origins)) = read else {
        return Err(ApiError::NotFound(format!("no {kind} edge {from} -> {to} is known")));
    };
    let view = view.map_err(|e| ApiError::bad_param(query_param(&e), e))?;
    let coverage = coverage(&api, &origins, now_ms);
    Ok(Json(wire::SeriesAnswer::from_core(&edge, view, window_ms, coverage)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LatencyParams {
    window: Option<String>,
    kind: Option<String>,
    at: Option<String>,
}

pub(crate) async fn get_edge_latency<P: PeerApi>(
    State(api): State<Arc<Api<P>>>,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
    params: Result<Query<LatencyParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<wire::LatencyAnswer>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let Path((from, to)) = path.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let edge = edge_of(&api, &from, &to, params.kind.as_deref())?;
    let now_ms = api.peer.now_ms();
    let (window_ms, end_ms) = window_and_end(params.window.as_deref(), params.at.as_deref(), "5m", now_ms)?;
    let read = api.peer.read(|state| {
        state
            .has_edge(&edge)
            .then(|| (state.latency_as_of(&edge, window_ms, end_ms, now_ms), state.coverage()))
    });
    let Some((latency, origins)) = read else {
        return Err(ApiError::NotFound(format!("no {} edge {from} -> {to} is known", edge.kind)));
    };
    let (span, histogram) = latency.map_err(|e| ApiError::bad_param(query_param(&e), e))?;
    let coverage = coverage(&api, &origins, now_ms);
    Ok(Json(wire::LatencyAnswer::from_core(&edge, &span, &histogram, window_ms, coverage)))
}

/// The edge a path and a `kind` parameter name.
fn edge_of<P: PeerApi>(api: &Api<P>, from: &str, to: &str, kind: Option<&str>) -> Result<Edge, ApiError> {
    let name = |field: &str, value: &str| {
        NodeName::new(value, api.limits.parse.node_name_bytes_max).map_err(|e| ApiError::bad_param(field, e))
    };
    let kind = match kind {
        None => EdgeKind::Request,
        Some(kind) => EdgeKind::from_name(kind)
            .ok_or_else(|| ApiError::bad_param("kind", "must be request, messaging or database"))?,
    };
    Ok(Edge::with_kind(name("from", from)?, name("to", to)?, kind))
}

/// Adds `more` into `into`, reason by reason.
fn merged(mut into: BTreeMap<String, u64>, more: BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    for (reason, n) in more {
        *into.entry(reason).or_default() += n;
    }
    into
}

pub(crate) async fn get_status<P: PeerApi>(State(api): State<Arc<Api<P>>>) -> Json<wire::StatusAnswer> {
    let (stats, settings) = api.peer.read(|state| (state.stats(), state.settings().clone()));
    let info = api.peer.info();
    let applied = api.peer.applied();
    let counters = &api.counters;
    Json(wire::StatusAnswer {
        peer_id: info.peer_id,
        incarnation: info.incarnation,
        version: info.version,
        settings_fingerprint: settings.fingerprint(),
        settings: settings.canonical(),
        data_dir: info.data_dir,
        otlp: info.otlp,
        otlp_grpc: info.otlp_grpc,
        nodes: stats.nodes,
        edges: stats.edges,
        cells: stats.cells,
        global_cells: stats.global_cells,
        origins: stats.origins,
        store_bytes: api.peer.store_bytes(),
        ingest: wire::IngestCounters {
            requests: Counters::get(&counters.ingest_requests),
            events_accepted: applied.events_accepted,
            flows_folded: applied.flows_folded,
            events_rejected: merged(counters.events_invalid.snapshot(), applied.events_rejected),
            requests_rejected: counters.requests_rejected.snapshot(),
            spans_received: Counters::get(&counters.spans_received),
            spans_rejected: counters.spans_rejected.snapshot(),
            sightings_received: Counters::get(&counters.sightings_received),
            sightings_rejected: counters.sightings_rejected.snapshot(),
            connections_open: api.connections.open(api.limits.connections_max) as u64,
            connections_refused: api.connections.refused(),
        },
        correlation: api.peer.correlation().into(),
        mesh: api.peer.mesh().map(|mesh| StatusMesh::from(&mesh.status)),
    })
}

pub(crate) async fn get_peers<P: PeerApi>(
    State(api): State<Arc<Api<P>>>,
) -> Result<Json<PeersAnswer>, ApiError> {
    let Some(mesh) = api.peer.mesh() else {
        return Err(ApiError::NotFound("this peer runs without a mesh".into()));
    };
    Ok(Json(PeersAnswer::new(&mesh.status, mesh.sync_interval_ms)))
}
