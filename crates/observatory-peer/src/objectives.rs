//! Objectives at the peer: the evaluator and the alert sender (both sans-IO, from
//! `observatory-objectives`), driven by one task, with the files they come from.
//!
//! Every `objectives.eval_interval` the task takes the global view's changes (under the
//! write lock, briefly), evaluates under the read lock with the coverage the mesh
//! reports, hands the alerts to the sender with the peers that share the sending, and
//! posts the batches the sender gives out to the Alertmanagers, each post a task of its
//! own (at most one per Alertmanager at a time). A reload replaces the evaluator only if
//! every file reads and checks; otherwise the objectives in force stay and the error is
//! kept for the status.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use observatory_api::ObjectivesView;
use observatory_api::PeerApi;
use observatory_api::objectives::{AlertmanagerAlert, AlertmanagerClient};
use observatory_config::Config;
use observatory_core::{FlowState, Settings};
use observatory_objectives::{
    AlertSender, Coverage, EvalConfig, Evaluation, Evaluator, ObjectiveDefaults, ObjectiveSet, alerts_of,
};
use observatory_sync::status::MeshStatus;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::Peer;

/// The objectives in force and how they stand.
#[derive(Debug)]
pub(crate) struct Objectives {
    files: Vec<PathBuf>,
    defaults: ObjectiveDefaults,
    eval: EvalConfig,
    settings: Settings,
    evaluator: Evaluator,
    sender: AlertSender,
    latest: Option<Evaluation>,
    reload_error: Option<String>,
    alertmanagers: Vec<String>,
    link_base_url: String,
    ends_at_ahead_ms: i64,
    /// Evaluate at once (after a reload), not at the next step.
    due_now: bool,
}

/// Reads `files` and builds their evaluator; an error names the file, the objective and
/// the key.
fn load(
    files: &[PathBuf],
    defaults: ObjectiveDefaults,
    settings: &Settings,
    eval: EvalConfig,
) -> Result<Evaluator, String> {
    let set = observatory_config::load_objective_files(files, defaults).map_err(|e| e.to_string())?;
    evaluator(set, settings, eval).map_err(|e| {
        let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        format!("{}: {e}", files.join(", "))
    })
}

fn evaluator(set: ObjectiveSet, settings: &Settings, eval: EvalConfig) -> Result<Evaluator, String> {
    Evaluator::new(set, settings, eval).map_err(|e| e.to_string())
}

impl Objectives {
    /// The objectives of `config`'s files, over state with `settings`; links in alerts go
    /// to `http` unless `alerts.link_base_url` says otherwise.
    pub(crate) fn load(
        config: &Config,
        settings: &Settings,
        http: std::net::SocketAddr,
    ) -> Result<Self, String> {
        let files = config.objective_files();
        let defaults = config.objective_defaults();
        let eval = config.evaluation();
        let evaluator = load(&files, defaults, settings, eval)?;
        let sender = config.sender();
        Ok(Self {
            files,
            defaults,
            eval,
            settings: settings.clone(),
            evaluator,
            sender: AlertSender::new(sender),
            latest: None,
            reload_error: None,
            alertmanagers: config.alerts.alertmanagers.clone(),
            link_base_url: config.alerts.link_base_url.clone().unwrap_or_else(|| format!("http://{http}")),
            ends_at_ahead_ms: sender.resend_interval_ms * sender.ends_at_resends,
            due_now: true,
        })
    }

    /// Links in alerts go to `http` (the address bound, once known).
    pub(crate) fn set_link_base(&mut self, http: std::net::SocketAddr) {
        self.link_base_url = format!("http://{http}");
    }

    /// The fingerprint of the objectives in force.
    pub(crate) fn fingerprint(&self) -> String {
        self.evaluator.objectives().fingerprint()
    }

    /// Reads the files again: the new objectives replace the old only if all of them
    /// check.
    pub(crate) fn reload(&mut self) -> Result<(), String> {
        match load(&self.files, self.defaults, &self.settings, self.eval) {
            Ok(evaluator) => {
                self.evaluator = evaluator;
                self.reload_error = None;
                self.latest = None;
                self.due_now = true;
                Ok(())
            }
            Err(error) => {
                self.reload_error = Some(error.clone());
                Err(error)
            }
        }
    }

    /// What the status shows.
    pub(crate) fn view(&self) -> ObjectivesView {
        ObjectivesView {
            fingerprint: self.fingerprint(),
            files: self.files.iter().map(|f| f.display().to_string()).collect(),
            reload_error: self.reload_error.clone(),
            evaluation: self.latest.clone(),
            alertmanagers: self.alertmanagers.clone(),
            sender: self.sender.counters(),
            sends: self.sender.owned().map(|alert| alert.labels.clone()).collect(),
            link_base_url: self.link_base_url.clone(),
            ends_at_ahead_ms: self.ends_at_ahead_ms,
        }
    }

    /// When the task should wake next.
    fn next_due_ms(&self) -> i64 {
        if self.due_now {
            return i64::MIN;
        }
        self.evaluator.poll_timeout().min(self.sender.poll_timeout())
    }
}

/// How complete this peer's picture is for evaluation: complete when every known peer
/// is in sync; otherwise the edges the missing peers' origins wrote.
fn coverage(status: Option<&MeshStatus>, sync_interval_ms: i64, state: &FlowState) -> Coverage {
    let Some(status) = status else { return Coverage::complete() };
    Coverage::of_missing(&status.missing_peers(sync_interval_ms), state, |origin| origin.peer.to_string())
}

/// Evaluates and sends until `stop`; a `reloaded` notification evaluates at once.
pub(crate) async fn run(peer: Peer, reloaded: Arc<Notify>, timeout: Duration, stop: CancellationToken) {
    let client = match AlertmanagerClient::new(timeout) {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "no HTTP client for Alertmanager; alerts will not be sent");
            return;
        }
    };
    let mut posts: JoinSet<(u64, usize, Result<(), String>)> = JoinSet::new();
    loop {
        let now_ms = peer.now_ms();
        if now_ms >= peer.objectives().next_due_ms() {
            evaluate(&peer, now_ms);
        }
        send_due(&peer, &client, &mut posts, now_ms);
        let due_ms = peer.objectives().next_due_ms();
        let wait = Duration::from_millis(u64::try_from(due_ms.saturating_sub(now_ms)).unwrap_or(0).max(1));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            () = reloaded.notified() => {}
            Some(joined) = posts.join_next(), if !posts.is_empty() => {
                let Ok((id, alerts, result)) = joined else { continue };
                if let Err(error) = &result {
                    tracing::warn!(%error, alerts, "sending alerts failed; retrying with backoff");
                }
                peer.objectives().sender.handle_result(peer.now_ms(), id, result.is_ok(), alerts);
            }
            _ = stop.cancelled() => break,
        }
    }
    // Posts in flight finish (each within alerts.timeout), so that an end just decided
    // still reaches Alertmanager.
    while posts.join_next().await.is_some() {}
}

/// Evaluates at `now_ms` and hands the alerts to the sender (the task posts them).
pub(crate) fn evaluate(peer: &Peer, now_ms: i64) {
    let inner = &peer.inner;
    let mesh = inner.mesh.as_ref().map(|m| (m.status(), m.sync_interval_ms()));
    let changes = inner.state.write().expect("no writer panicked holding the state lock").take_changes();
    let state = inner.state.read().expect("no writer panicked holding the state lock");
    let coverage = coverage(mesh.as_ref().map(|(s, _)| s), mesh.as_ref().map_or(0, |(_, i)| *i), &state);
    let mut objectives = peer.objectives();
    objectives.due_now = false;
    let evaluation = objectives.evaluator.evaluate(now_ms, &state, &changes, &coverage);
    drop(state);
    let alerts = alerts_of(&evaluation);
    let local = &inner.info.peer_id;
    let peers = mesh.map_or_else(|| vec![local.clone()], |(status, _)| status.alert_peers());
    objectives.sender.update(now_ms, alerts, &peers, local);
    objectives.latest = Some(evaluation);
}

fn send_due(
    peer: &Peer,
    client: &AlertmanagerClient,
    posts: &mut JoinSet<(u64, usize, Result<(), String>)>,
    now_ms: i64,
) {
    let mut objectives = peer.objectives();
    while let Some(batch) = objectives.sender.poll_transmit(now_ms) {
        let Some(url) = objectives.alertmanagers.get(batch.target).cloned() else { continue };
        let alerts: Vec<AlertmanagerAlert> =
            batch.alerts.iter().map(|a| AlertmanagerAlert::new(a, &objectives.link_base_url)).collect();
        let client = client.clone();
        let count = alerts.len();
        posts.spawn(async move { (batch.id, count, client.post(&url, &alerts).await) });
    }
}
