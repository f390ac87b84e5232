//! Objectives and alerts over HTTP: `GET /api/v1/objectives`, `POST
//! /api/v1/objectives/reload`, `GET /api/v1/alerts` (in Alertmanager's format), and the
//! client that posts alerts to Alertmanager's `POST /api/v2/alerts`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use observatory_core::settings::human_ms;
use observatory_objectives::{AlertState, Goal, ObjectiveStatus, OutAlert, alerts_of};
use serde::{Deserialize, Serialize};

use crate::time_text::format_time;
use crate::{Api, ApiError, ObjectivesView, PeerApi};

/// What an objective asks, in the answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GoalJson {
    /// A share of calls at or below a latency.
    Latency {
        /// The threshold in milliseconds.
        threshold_ms: f64,
        /// The share aimed at.
        target: f64,
    },
    /// A share of calls without error.
    Errors {
        /// The share aimed at.
        target: f64,
    },
    /// An expected flow.
    Flow {
        /// The least rate expected.
        rate_at_least_per_s: f64,
        /// For how long a lower rate is a breach.
        #[serde(rename = "for")]
        for_: String,
    },
}

/// One burn rate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BurnRateJson {
    /// The window (scaled to the objective's).
    pub window: String,
    /// How fast the budget burns (1: exactly over the objective's window).
    pub rate: f64,
    /// Calls in the window.
    pub calls: u64,
    /// Whether the window had `min_calls` calls (else it never breaches).
    pub counted: bool,
}

/// One alert of an objective.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AlertStateJson {
    /// `page` or `ticket`.
    pub severity: String,
    /// `inactive`, `pending`, `firing` or `resolved`.
    pub state: String,
    /// Since when: pending since, firing since, or resolved at.
    pub since: Option<String>,
}

/// One objective in `GET /api/v1/objectives`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ObjectiveJson {
    /// Its name.
    pub name: String,
    /// The edges' sender (a name or a pattern).
    pub from: String,
    /// The edges' receiver.
    pub to: String,
    /// The kind, or `*`.
    pub kind: String,
    /// The rolling window.
    pub window: String,
    /// What it asks.
    pub goal: GoalJson,
    /// Edges selected now.
    pub edges: usize,
    /// Calls (latency samples for a latency goal) over the window.
    pub calls: u64,
    /// The share of good calls over the window.
    pub sli: Option<f64>,
    /// Bounds of `sli` where the latency threshold falls inside a histogram counter.
    pub sli_low: Option<f64>,
    /// See `sli_low`.
    pub sli_high: Option<f64>,
    /// The share aimed at.
    pub target: Option<f64>,
    /// The share of the error budget left (below 0: overspent).
    pub budget_remaining: Option<f64>,
    /// How long until the budget is spent at the current burn (none: never).
    pub exhaustion: Option<String>,
    /// Burn rates of the page pairs then the ticket pairs, long then short.
    pub burn_rates: Vec<BurnRateJson>,
    /// A flow goal's rate over its window.
    pub flow_rate_per_s: Option<f64>,
    /// The worst state of its alerts.
    pub state: String,
    /// Since when that state holds.
    pub since: Option<String>,
    /// Each alert.
    pub alerts: Vec<AlertStateJson>,
    /// `complete`, or `partial` when missing peers may hold calls of these edges (a firing
    /// alert is then not resolved, and a flow alert does not fire).
    pub coverage: String,
}

/// Answer to `GET /api/v1/objectives` (and to a reload).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ObjectivesAnswer {
    /// The fingerprint of the objectives in force.
    pub fingerprint: String,
    /// The step evaluated last.
    pub at: Option<String>,
    /// The files read.
    pub files: Vec<String>,
    /// Why the last reload was refused.
    pub reload_error: Option<String>,
    /// Alertmanagers alerts go to.
    pub alertmanagers: Vec<String>,
    /// How sending went: alerts this peer owns, batches sent and failed, alerts delivered.
    pub sending: BTreeMap<String, u64>,
    /// The labels of the alerts this peer sends.
    pub sends: Vec<BTreeMap<String, String>>,
    /// Every objective, by name.
    pub objectives: Vec<ObjectiveJson>,
}

fn severity_rank(state: &AlertState) -> u8 {
    match state {
        AlertState::Firing { .. } => 3,
        AlertState::Pending { .. } => 2,
        AlertState::Resolved { .. } => 1,
        AlertState::Inactive => 0,
    }
}

impl From<&Goal> for GoalJson {
    fn from(goal: &Goal) -> Self {
        match goal {
            Goal::Latency { threshold_us, target } => {
                GoalJson::Latency { threshold_ms: *threshold_us as f64 / 1000.0, target: *target }
            }
            Goal::Errors { target } => GoalJson::Errors { target: *target },
            Goal::Flow { rate_at_least_per_s, for_ms, .. } => {
                GoalJson::Flow { rate_at_least_per_s: *rate_at_least_per_s, for_: human_ms(*for_ms) }
            }
        }
    }
}

impl From<&ObjectiveStatus> for ObjectiveJson {
    fn from(status: &ObjectiveStatus) -> Self {
        let objective = &status.objective;
        let goal = GoalJson::from(&objective.goal);
        let worst = status.alerts.iter().max_by_key(|a| severity_rank(&a.state)).map(|a| a.state);
        ObjectiveJson {
            name: objective.name.clone(),
            from: objective.selector.from.as_str().to_string(),
            to: objective.selector.to.as_str().to_string(),
            kind: objective.selector.kind.map_or("*".to_string(), |k| k.to_string()),
            window: human_ms(objective.window_ms),
            goal,
            edges: status.edges,
            calls: status.calls,
            sli: status.sli,
            sli_low: status.sli_low,
            sli_high: status.sli_high,
            target: objective.target(),
            budget_remaining: status.budget_remaining,
            exhaustion: status.exhaustion_ms.map(human_ms),
            burn_rates: status
                .burn_rates
                .iter()
                .map(|b| BurnRateJson {
                    window: human_ms(b.window_ms),
                    rate: b.rate,
                    calls: b.calls,
                    counted: b.counted,
                })
                .collect(),
            flow_rate_per_s: status.flow_rate_per_s,
            state: worst.map_or("inactive", |s| s.as_str()).to_string(),
            since: worst.and_then(|s| s.since_ms()).map(format_time),
            alerts: status
                .alerts
                .iter()
                .map(|a| AlertStateJson {
                    severity: a.severity.as_str().to_string(),
                    state: a.state.as_str().to_string(),
                    since: a.state.since_ms().map(format_time),
                })
                .collect(),
            coverage: if status.coverage_partial { "partial" } else { "complete" }.to_string(),
        }
    }
}

impl ObjectivesAnswer {
    /// From the peer's view, optionally only the objective `name`.
    pub fn new(view: &ObjectivesView, name: Option<&str>) -> Self {
        let sending = [
            ("alerts_owned", view.sender.alerts_owned),
            ("batches_sent", view.sender.batches_sent),
            ("batches_failed", view.sender.batches_failed),
            ("alerts_delivered", view.sender.alerts_delivered),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        ObjectivesAnswer {
            fingerprint: view.fingerprint.clone(),
            at: view.evaluation.as_ref().map(|e| format_time(e.at_ms)),
            files: view.files.clone(),
            reload_error: view.reload_error.clone(),
            alertmanagers: view.alertmanagers.clone(),
            sending,
            sends: view.sends.clone(),
            objectives: view
                .evaluation
                .iter()
                .flat_map(|e| &e.objectives)
                .filter(|s| name.is_none_or(|name| s.objective.name == name))
                .map(ObjectiveJson::from)
                .collect(),
        }
    }
}

/// An alert as Alertmanager's v2 API takes and shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerAlert {
    /// Identity.
    pub labels: BTreeMap<String, String>,
    /// What a person reads.
    pub annotations: BTreeMap<String, String>,
    /// When it started firing.
    pub starts_at: String,
    /// When it ends (a few resends ahead while firing).
    pub ends_at: String,
    /// A link to the sending peer's view of it.
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

impl AlertmanagerAlert {
    /// From an alert on its way out, with links under `link_base_url`.
    pub fn new(out: &OutAlert, link_base_url: &str) -> Self {
        let alert = &out.alert;
        let base = link_base_url.trim_end_matches('/');
        let mut annotations = alert.annotations.clone();
        annotations.insert("graph".into(), format!("{base}{}", alert.graph_path));
        AlertmanagerAlert {
            labels: alert.labels.clone(),
            annotations,
            starts_at: format_time(alert.starts_at_ms),
            ends_at: format_time(out.ends_at_ms),
            generator_url: format!("{base}{}", alert.generator_path),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ObjectivesParams {
    name: Option<String>,
}

pub(crate) async fn get_objectives<P: PeerApi>(
    State(api): State<Arc<Api<P>>>,
    params: Result<Query<ObjectivesParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ObjectivesAnswer>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let view = api.peer.objectives();
    if let Some(name) = &params.name
        && !view.evaluation.iter().flat_map(|e| &e.objectives).any(|s| &s.objective.name == name)
    {
        return Err(ApiError::NotFound(format!("no objective is named `{name}`")));
    }
    Ok(Json(ObjectivesAnswer::new(&view, params.name.as_deref())))
}

pub(crate) async fn post_reload<P: PeerApi>(
    State(api): State<Arc<Api<P>>>,
) -> Result<Json<ObjectivesAnswer>, ApiError> {
    match api.peer.reload_objectives().await {
        Ok(view) => Ok(Json(ObjectivesAnswer::new(&view, None))),
        Err(error) => Err(ApiError::BadRequest(format!(
            "the objectives were not reloaded (those in force stay): {error}"
        ))),
    }
}

/// `GET /api/v1/alerts`: every alert the mesh has firing or just resolved, as every peer
/// computes them (the same on every converged peer), in Alertmanager's format.
pub(crate) async fn get_alerts<P: PeerApi>(State(api): State<Arc<Api<P>>>) -> Json<Vec<AlertmanagerAlert>> {
    let view = api.peer.objectives();
    let Some(evaluation) = &view.evaluation else { return Json(Vec::new()) };
    let ahead_ms = view.ends_at_ahead_ms;
    let alerts = alerts_of(evaluation)
        .into_iter()
        .map(|alert| {
            let ends_at_ms = alert.resolved_at_ms.unwrap_or(evaluation.at_ms + ahead_ms);
            AlertmanagerAlert::new(&OutAlert { alert, ends_at_ms }, &view.link_base_url)
        })
        .collect();
    Json(alerts)
}

/// Posts alerts to one Alertmanager (`{base}/api/v2/alerts`).
#[derive(Debug, Clone)]
pub struct AlertmanagerClient {
    http: reqwest::Client,
}

impl AlertmanagerClient {
    /// A client whose every post takes at most `timeout`.
    pub fn new(timeout: Duration) -> Result<Self, String> {
        let http = reqwest::Client::builder().timeout(timeout).build().map_err(|e| e.to_string())?;
        Ok(Self { http })
    }

    /// Posts `alerts` to the Alertmanager at `base_url`; an error says why.
    pub async fn post(&self, base_url: &str, alerts: &[AlertmanagerAlert]) -> Result<(), String> {
        let url = format!("{}/api/v2/alerts", base_url.trim_end_matches('/'));
        let response = self.http.post(&url).json(alerts).send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        Err(format!("{url} answered {status}: {}", body.chars().take(200).collect::<String>()))
    }
}
