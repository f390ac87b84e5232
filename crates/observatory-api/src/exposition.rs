//! The graph in other tools' formats, so that their UIs read it from any peer:
//! Prometheus' text exposition (`GET /metrics`, for Grafana's service graph panel) and
//! the dependency links of Zipkin (`GET /api/v2/dependencies`) and Jaeger
//! (`GET /api/dependencies`).
//!
//! `/metrics` gives the mesh-wide graph since the beginning (the global view at the
//! `total` resolution) under the names of Tempo's metrics-generator, which the panel
//! reads: `traces_service_graph_request_total`, `traces_service_graph_request_failed_total`
//! and the histogram `traces_service_graph_request_server_seconds`, labelled `client`,
//! `server` and `connection_type`; then `observatory_*` metrics about the peer itself,
//! and the objectives' figures (`observatory_objective_sli`, `..._budget_remaining`,
//! `..._burn_rate{window}`, `..._state{severity}`, labelled `objective`).
//! Every peer answers with the same service graph figures once the mesh has converged,
//! so Prometheus may scrape any one of them (scraping several and summing would count
//! the graph once per peer; use `max` or scrape one).
//!
//! The dependency APIs read a window `[endTs - lookback, endTs)` like `/api/v1/graph`,
//! summing the edge kinds of each `(parent, child)`.

use std::collections::BTreeMap;
use std::fmt::Display;

use axum::Json;
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use observatory_core::histogram::median_value_at;
use observatory_core::settings::human_ms;
use observatory_core::{Edge, EdgeKind, FlowState, QueryError, StateStats};
use observatory_objectives::{AlertState, ObjectiveStatus};
use serde::{Deserialize, Serialize};

use crate::{Api, ApiError, Counters, Ctx, ObjectivesView, PeerApi};

/// The content type of Prometheus' text format, version 0.0.4.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The upper bounds of `traces_service_graph_request_server_seconds`' buckets: the `le`
/// label as written, and in microseconds (Prometheus' default buckets; `+Inf` follows).
const LATENCY_BUCKETS: [(&str, u64); 11] = [
    ("0.005", 5_000),
    ("0.01", 10_000),
    ("0.025", 25_000),
    ("0.05", 50_000),
    ("0.1", 100_000),
    ("0.25", 250_000),
    ("0.5", 500_000),
    ("1", 1_000_000),
    ("2.5", 2_500_000),
    ("5", 5_000_000),
    ("10", 10_000_000),
];

/// How far back the dependency APIs look when not told (one day, as Zipkin's
/// `QUERY_LOOKBACK` and Jaeger's default).
const DEPENDENCIES_LOOKBACK_MS_DEFAULT: i64 = 86_400_000;

/// `GET /metrics`.
pub(crate) async fn get_metrics<P: PeerApi>(axum::extract::State(api): Ctx<P>) -> Response {
    let (edges, stats) = api.peer.read(|state| (service_graph(state), state.stats()));
    let mut text = MetricsText::default();
    text.service_graph(&edges);
    for family in peer_families(&api, &stats) {
        text.peer_family(&family);
    }
    text.objectives(&api.peer.objectives());
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text.out).into_response()
}

/// One edge of the mesh-wide graph since the beginning, as the service graph shows it.
#[derive(Debug)]
struct ServiceGraphEdge {
    client: String,
    server: String,
    connection_type: &'static str,
    requests: u64,
    failed: u64,
    /// Latency samples at or below each of [`LATENCY_BUCKETS`].
    latency_buckets: [u64; LATENCY_BUCKETS.len()],
    /// Latency samples (calls that reported no latency have none).
    latency_count: u64,
    latency_sum_seconds: f64,
}

impl ServiceGraphEdge {
    fn labels(&self) -> [(&'static str, &str); 3] {
        [("client", &self.client), ("server", &self.server), ("connection_type", self.connection_type)]
    }
}

/// Tempo's `connection_type` for an edge: empty for plain calls, `virtual_node` for calls
/// to or from a virtual node (databases and queues keep their own type, as there).
fn connection_type(edge: &Edge) -> &'static str {
    match (edge.kind, edge.virtual_node) {
        (EdgeKind::Request, None) => "",
        (EdgeKind::Request, Some(_)) => "virtual_node",
        (EdgeKind::Messaging, _) => "messaging_system",
        (EdgeKind::Database, _) => "database",
    }
}

/// Every edge's cell of the `total` resolution in the global view, by client, server and
/// connection type.
fn service_graph(state: &FlowState) -> Vec<ServiceGraphEdge> {
    let resolutions = state.settings().resolutions();
    let Some(total) = resolutions.iter().position(|r| r.width_ms.is_none()) else {
        return Vec::new();
    };
    // The core offers no iterator over one resolution, so this walks every cell of the
    // global view (each edge has exactly one `total` cell). It is linear in the global
    // cells, under the read lock, once per scrape.
    let mut edges: Vec<ServiceGraphEdge> = state
        .global_cells()
        .filter(|(key, _)| usize::from(key.resolution) == total)
        .map(|(key, data)| {
            let latency = &data.latency;
            // Each counter's samples counted at the middle of its range, as the mean of
            // the graph API: exact below 256 µs, within 0.4% above (2 significant digits).
            // (Folded from +0: an empty `f64` sum is -0, which would read "-0".)
            let sum_us = latency
                .counters()
                .fold(0.0, |sum, (index, count)| sum + median_value_at(index) as f64 * count as f64);
            ServiceGraphEdge {
                client: key.edge.from.to_string(),
                server: key.edge.to.to_string(),
                connection_type: connection_type(&key.edge),
                requests: data.calls,
                failed: data.errors,
                latency_buckets: LATENCY_BUCKETS.map(|(_, bound_us)| latency.count_at_or_below(bound_us)),
                latency_count: latency.len(),
                latency_sum_seconds: sum_us / 1e6,
            }
        })
        .collect();
    edges.sort_by(|a, b| {
        (&a.client, &a.server, a.connection_type).cmp(&(&b.client, &b.server, b.connection_type))
    });
    // The flows and propagation marks of one edge are one series: summed. (Its virtual
    // variant is a series of its own, as in Tempo.)
    let mut summed: Vec<ServiceGraphEdge> = Vec::with_capacity(edges.len());
    for edge in edges {
        match summed.last_mut() {
            Some(last) if last.labels() == edge.labels() => {
                last.requests += edge.requests;
                last.failed += edge.failed;
                for (sum, add) in last.latency_buckets.iter_mut().zip(edge.latency_buckets) {
                    *sum += add;
                }
                last.latency_count += edge.latency_count;
                last.latency_sum_seconds += edge.latency_sum_seconds;
            }
            _ => summed.push(edge),
        }
    }
    summed
}

/// One `observatory_*` family about the peer itself.
#[derive(Debug)]
struct PeerFamily {
    name: &'static str,
    /// `counter` or `gauge`.
    kind: &'static str,
    help: &'static str,
    /// The samples: `(label, value)`, with `label` as `(name, value)` if any.
    samples: Vec<(Option<(&'static str, String)>, u64)>,
}

fn counter(name: &'static str, help: &'static str, value: u64) -> PeerFamily {
    PeerFamily { name, kind: "counter", help, samples: vec![(None, value)] }
}

fn gauge(name: &'static str, help: &'static str, value: u64) -> PeerFamily {
    PeerFamily { name, kind: "gauge", help, samples: vec![(None, value)] }
}

fn counter_by(
    name: &'static str,
    help: &'static str,
    label: &'static str,
    values: BTreeMap<String, u64>,
) -> PeerFamily {
    let samples = values.into_iter().map(|(value, n)| (Some((label, value)), n)).collect();
    PeerFamily { name, kind: "counter", help, samples }
}

/// The metrics about the peer itself, one line each.
fn peer_families<P: PeerApi>(api: &Api<P>, stats: &StateStats) -> Vec<PeerFamily> {
    let counters = &api.counters;
    let correlation = api.peer.correlation();
    let applied = api.peer.applied();
    let mut events_rejected = counters.events_invalid.snapshot();
    for (reason, n) in applied.events_rejected {
        *events_rejected.entry(reason).or_default() += n;
    }
    let mut families = vec![
        counter(
            "observatory_ingest_requests_total",
            "Ingest requests answered 200.",
            Counters::get(&counters.ingest_requests),
        ),
        counter(
            "observatory_events_ingested_total",
            "Events applied to the flow graph.",
            applied.events_accepted,
        ),
        counter(
            "observatory_flows_folded_total",
            "Events applied in the flow `other` because their flow was beyond limits.flows_max.",
            applied.flows_folded,
        ),
        counter_by(
            "observatory_events_rejected_total",
            "Events refused, by reason.",
            "reason",
            events_rejected,
        ),
        counter_by(
            "observatory_requests_rejected_total",
            "Requests refused whole, by reason.",
            "reason",
            counters.requests_rejected.snapshot(),
        ),
        gauge(
            "observatory_origins",
            "Origins (runs of peers) whose cells this peer holds.",
            stats.origins as u64,
        ),
        gauge("observatory_cells", "Cells held, over all origins.", stats.cells as u64),
        gauge(
            "observatory_global_cells",
            "Cells of the global view (the sums over origins).",
            stats.global_cells as u64,
        ),
        gauge("observatory_nodes", "Nodes of the flow graph.", stats.nodes as u64),
        gauge(
            "observatory_edges",
            "Edges of the flow graph, each flow and propagation mark of a from -> to counted apart (as limits.edges_max counts them).",
            stats.edges as u64,
        ),
        gauge("observatory_store_bytes", "Bytes the store takes on disk.", api.peer.store_bytes()),
        counter(
            "observatory_spans_received_total",
            "Spans received (OTLP and Zipkin), refused ones included.",
            Counters::get(&counters.spans_received),
        ),
        counter_by(
            "observatory_spans_rejected_total",
            "Spans refused, by reason.",
            "reason",
            counters.spans_rejected.snapshot(),
        ),
        counter(
            "observatory_sightings_received_total",
            "Token sightings received, refused ones included.",
            Counters::get(&counters.sightings_received),
        ),
        counter_by(
            "observatory_sightings_rejected_total",
            "Token sightings refused, by reason.",
            "reason",
            counters.sightings_rejected.snapshot(),
        ),
        gauge(
            "observatory_spans_pending",
            "Span halves waiting for their other half here.",
            correlation.spans_pending,
        ),
        counter(
            "observatory_spans_unpaired_total",
            "Span halves given up with nothing to name the other side (lost to the graph).",
            correlation.spans_unpaired,
        ),
        counter(
            "observatory_spans_unpaired_sampled_total",
            "Sampled caller halves given up whose other half a stricter sampler dropped (the kept pairs count them).",
            correlation.spans_unpaired_sampled,
        ),
        counter(
            "observatory_spans_rerouted_total",
            "Span halves of handoffs their owner did not acknowledge, sent on to the next owner or held here.",
            correlation.spans_rerouted,
        ),
        counter(
            "observatory_spans_lost_in_crash_total",
            "Span halves the previous run of this peer was holding when it crashed.",
            correlation.spans_lost_in_crash,
        ),
        counter(
            "observatory_edges_estimated_total",
            "Edges counted from sampled spans, weighted by their adjusted count.",
            correlation.edges_estimated,
        ),
        counter(
            "observatory_spans_evicted_total",
            "Span halves given up early because correlation.pending_spans_max was reached.",
            correlation.spans_evicted,
        ),
        counter(
            "observatory_spans_handed_off_total",
            "Span halves sent to their trace's owner.",
            correlation.spans_handed_off,
        ),
        counter(
            "observatory_spans_handed_in_total",
            "Span halves received from other peers as their trace's owner.",
            correlation.spans_handed_in,
        ),
        counter("observatory_edges_paired_total", "Edges from a span pair.", correlation.edges_paired),
        counter(
            "observatory_edges_virtual_total",
            "Edges to or from a virtual node.",
            correlation.edges_virtual,
        ),
        counter(
            "observatory_edges_unknown_total",
            "Edges to correlation.unknown_node from CLIENT halves nobody answered that named nothing.",
            correlation.edges_unknown,
        ),
        counter(
            "observatory_edges_root_total",
            "Edges from the entry node to a root span.",
            correlation.edges_root,
        ),
        counter(
            "observatory_edges_from_tokens_total",
            "Edges from token sightings.",
            correlation.edges_from_tokens,
        ),
        gauge("observatory_tokens_pending", "Tokens waiting to go idle here.", correlation.tokens_pending),
    ];
    if let Some(mesh) = api.peer.mesh() {
        let status = mesh.status;
        let sync = &status.counters;
        let connected = status.peers.iter().filter(|p| p.report.connected).count();
        families.extend([
            gauge(
                "observatory_peers_known",
                "Other peers known, connected or not.",
                status.peers.len() as u64,
            ),
            gauge("observatory_peers_connected", "Other peers connected.", connected as u64),
            counter("observatory_sync_rounds_total", "Anti-entropy rounds started.", sync.rounds),
            counter("observatory_sync_received_messages_total", "Sync messages received.", sync.messages_in),
            counter("observatory_sync_sent_messages_total", "Sync messages sent.", sync.messages_out),
            counter(
                "observatory_sync_received_bytes_total",
                "Bytes of sync messages received.",
                sync.bytes_in,
            ),
            counter("observatory_sync_sent_bytes_total", "Bytes of sync messages sent.", sync.bytes_out),
            counter(
                "observatory_sync_rejected_messages_total",
                "Sync messages rejected (malformed, oversized or corrupt).",
                sync.rejected,
            ),
            counter(
                "observatory_sync_cells_applied_total",
                "Cells taken from other peers.",
                sync.cells_applied,
            ),
        ]);
    }
    families
}

/// Prometheus' text format 0.0.4, written by hand.
///
/// Not the `prometheus-client` crate: its registry is built for metric objects that live
/// and are updated in place, while our families are rebuilt from the global view at every
/// scrape, and its histograms take observations, not the cumulative counts we read off
/// a latency histogram (that would need a custom collector per family). The format itself
/// is a few lines: `# HELP`, `# TYPE`, then `name{label="value"} number` per sample.
#[derive(Debug, Default)]
struct MetricsText {
    out: String,
}

impl MetricsText {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        for c in help.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                c => self.out.push(c),
            }
        }
        self.out.push_str("\n# TYPE ");
        self.out.push_str(name);
        self.out.push(' ');
        self.out.push_str(kind);
        self.out.push('\n');
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, text)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(label);
                self.out.push_str("=\"");
                push_label_value(&mut self.out, text);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        self.out.push_str(&value.to_string());
        self.out.push('\n');
    }

    fn service_graph(&mut self, edges: &[ServiceGraphEdge]) {
        let name = "traces_service_graph_request_total";
        self.family(
            name,
            "counter",
            "Calls (or messages) from client to server, mesh-wide, since the beginning.",
        );
        for edge in edges {
            self.sample(name, &edge.labels(), edge.requests);
        }
        let name = "traces_service_graph_request_failed_total";
        self.family(name, "counter", "Failed calls from client to server, mesh-wide, since the beginning.");
        for edge in edges {
            self.sample(name, &edge.labels(), edge.failed);
        }
        let name = "traces_service_graph_request_server_seconds";
        self.family(
            name,
            "histogram",
            "Latency of the calls that reported one (the server's time; transit time for messaging), mesh-wide.",
        );
        let (bucket, sum, count) = (format!("{name}_bucket"), format!("{name}_sum"), format!("{name}_count"));
        for edge in edges {
            let [client, server, connection_type] = edge.labels();
            for ((le, _), n) in LATENCY_BUCKETS.iter().zip(edge.latency_buckets) {
                self.sample(&bucket, &[client, server, connection_type, ("le", le)], n);
            }
            self.sample(&bucket, &[client, server, connection_type, ("le", "+Inf")], edge.latency_count);
            self.sample(&sum, &edge.labels(), edge.latency_sum_seconds);
            self.sample(&count, &edge.labels(), edge.latency_count);
        }
    }

    /// The objectives' figures, labelled by objective (and severity, window), so that
    /// dashboards plot them; a figure without a value (no calls yet) has no sample.
    fn objectives(&mut self, view: &ObjectivesView) {
        let statuses: &[ObjectiveStatus] = view.evaluation.as_ref().map_or(&[], |e| &e.objectives);
        type Figure = fn(&ObjectiveStatus) -> Option<f64>;
        let figures: [(&str, &str, Figure); 5] = [
            ("observatory_objective_sli", "Share of good calls over the objective's window.", |s| s.sli),
            ("observatory_objective_target", "Share of good calls the objective aims at.", |s| {
                s.objective.target()
            }),
            (
                "observatory_objective_budget_remaining",
                "Share of the error budget left (1 untouched, below 0 overspent).",
                |s| s.budget_remaining,
            ),
            ("observatory_objective_flow_rate", "A flow objective's rate per second over its `for`.", |s| {
                s.flow_rate_per_s
            }),
            ("observatory_objective_calls", "Calls (latency samples) over the objective's window.", |s| {
                Some(s.calls as f64)
            }),
        ];
        for (name, help, figure) in figures {
            self.family(name, "gauge", help);
            for status in statuses {
                if let Some(value) = figure(status) {
                    self.sample(name, &[("objective", &status.objective.name)], value);
                }
            }
        }
        let name = "observatory_objective_burn_rate";
        self.family(
            name,
            "gauge",
            "How fast the error budget burns over a window (1: exactly over the objective's window).",
        );
        for status in statuses {
            // Short objectives scale several pairs' windows to the finest bucket: one
            // sample per window.
            let mut written = Vec::new();
            for burn in &status.burn_rates {
                if written.contains(&burn.window_ms) {
                    continue;
                }
                written.push(burn.window_ms);
                let window = human_ms(burn.window_ms).replace(' ', "");
                self.sample(name, &[("objective", &status.objective.name), ("window", &window)], burn.rate);
            }
        }
        let name = "observatory_objective_state";
        self.family(
            name,
            "gauge",
            "State of an objective's alert: 0 inactive, 1 pending, 2 firing, 3 resolved.",
        );
        for status in statuses {
            for alert in &status.alerts {
                let value = match alert.state {
                    AlertState::Inactive => 0,
                    AlertState::Pending { .. } => 1,
                    AlertState::Firing { .. } => 2,
                    AlertState::Resolved { .. } => 3,
                };
                self.sample(
                    name,
                    &[("objective", &status.objective.name), ("severity", alert.severity.as_str())],
                    value,
                );
            }
        }
        let sender = view.sender;
        let families = [
            (
                "observatory_alerts_owned",
                "gauge",
                "Alerts this peer sends (it wins their rendezvous).",
                sender.alerts_owned,
            ),
            (
                "observatory_alert_batches_sent_total",
                "counter",
                "Batches of alerts posted to Alertmanagers.",
                sender.batches_sent,
            ),
            (
                "observatory_alert_batches_failed_total",
                "counter",
                "Batches that failed (then retried).",
                sender.batches_failed,
            ),
            (
                "observatory_alerts_delivered_total",
                "counter",
                "Alerts delivered, counted per batch.",
                sender.alerts_delivered,
            ),
        ];
        for (name, kind, help, value) in families {
            self.family(name, kind, help);
            self.sample(name, &[], value);
        }
    }

    fn peer_family(&mut self, family: &PeerFamily) {
        self.family(family.name, family.kind, family.help);
        for (label, value) in &family.samples {
            match label {
                Some((label, text)) => self.sample(family.name, &[(label, text.as_str())], value),
                None => self.sample(family.name, &[], value),
            }
        }
    }
}

/// Writes a label value escaped as the text format wants: backslash, double quote and
/// line feed.
fn push_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// The query of both dependency APIs (other parameters are ignored, as those UIs may
/// send more).
#[derive(Debug, Deserialize)]
pub(crate) struct DependencyParams {
    #[serde(rename = "endTs")]
    end_ts: Option<String>,
    lookback: Option<String>,
}

/// A positive integer of milliseconds in parameter `param`.
fn positive_ms(param: &str, text: &str) -> Result<i64, ApiError> {
    match text.trim().parse::<i64>() {
        Ok(ms) if ms > 0 => Ok(ms),
        _ => Err(ApiError::bad_param(
            param,
            format!("must be a positive integer of milliseconds, got `{text}`"),
        )),
    }
}

/// One dependency link: calls from `parent` to `child` over the window, all kinds.
#[derive(Debug, Default)]
struct Link {
    calls: u64,
    errors: u64,
}

/// The links of `[end_ms - lookback_ms, end_ms)` by `(parent, child)`.
fn dependency_links<P: PeerApi>(
    api: &Api<P>,
    params: &DependencyParams,
    end_ms_default: Option<i64>,
) -> Result<BTreeMap<(String, String), Link>, ApiError> {
    let end_ms = match (&params.end_ts, end_ms_default) {
        (Some(text), _) => positive_ms("endTs", text)?,
        (None, Some(default)) => default,
        (None, None) => {
            return Err(ApiError::bad_param("endTs", "is required (milliseconds since the epoch)"));
        }
    };
    let lookback_ms = match &params.lookback {
        Some(text) => positive_ms("lookback", text)?,
        None => DEPENDENCIES_LOOKBACK_MS_DEFAULT,
    };
    let now_ms = api.peer.now_ms();
    let view = api.peer.read(|state| state.graph_as_of(lookback_ms, end_ms, now_ms)).map_err(|e| {
        let param = match e {
            QueryError::EndOutOfRange => "endTs",
            _ => "lookback",
        };
        ApiError::bad_param(param, e)
    })?;
    let mut links: BTreeMap<(String, String), Link> = BTreeMap::new();
    for edge in view.edges {
        let link = links.entry((edge.edge.from.to_string(), edge.edge.to.to_string())).or_default();
        link.calls += edge.figures.calls;
        link.errors += edge.figures.errors;
    }
    Ok(links)
}

/// A link in Zipkin's format.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ZipkinLink {
    parent: String,
    child: String,
    call_count: u64,
    error_count: u64,
}

/// `GET /api/v2/dependencies?endTs=<ms>&lookback=<ms>`: Zipkin's dependency links.
pub(crate) async fn get_zipkin_dependencies<P: PeerApi>(
    axum::extract::State(api): Ctx<P>,
    params: Result<Query<DependencyParams>, QueryRejection>,
) -> Result<Json<Vec<ZipkinLink>>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let links = dependency_links(&api, &params, None)?;
    let links = links
        .into_iter()
        .map(|((parent, child), link)| ZipkinLink {
            parent,
            child,
            call_count: link.calls,
            error_count: link.errors,
        })
        .collect();
    Ok(Json(links))
}

/// A link in Jaeger's format.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JaegerLink {
    parent: String,
    child: String,
    call_count: u64,
    source: &'static str,
}

/// Jaeger's query-service envelope.
#[derive(Debug, Serialize)]
pub(crate) struct JaegerAnswer {
    data: Vec<JaegerLink>,
    total: usize,
    limit: usize,
    offset: usize,
    errors: Option<Vec<String>>,
}

/// `GET /api/dependencies?endTs=<ms>&lookback=<ms>`: Jaeger's dependency links. As in
/// Jaeger, `endTs` defaults to now.
pub(crate) async fn get_jaeger_dependencies<P: PeerApi>(
    axum::extract::State(api): Ctx<P>,
    params: Result<Query<DependencyParams>, QueryRejection>,
) -> Result<Json<JaegerAnswer>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let links = dependency_links(&api, &params, Some(api.peer.now_ms()))?;
    let data: Vec<JaegerLink> = links
        .into_iter()
        .map(|((parent, child), link)| JaegerLink {
            parent,
            child,
            call_count: link.calls,
            source: "observatory",
        })
        .collect();
    Ok(Json(JaegerAnswer { total: data.len(), data, limit: 0, offset: 0, errors: None }))
}
