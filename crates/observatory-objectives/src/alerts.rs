//! Alerts for Alertmanager, and who sends them when.
//!
//! [`alerts_of`] turns an evaluation into alerts: one per firing or recently resolved
//! alert, labelled `alertname`, `objective`, `severity`, `from`, `to`, `kind` (never a peer
//! id), so that every converged peer builds the very same alert.
//!
//! # Driving contract of [`AlertSender`]
//! Sans-IO, like the rest of the crate. After each evaluation, call
//! [`AlertSender::update`] with the alerts and the live peers that run the same
//! objectives: the sender keeps the alerts this peer owns (the winner of rendezvous
//! hashing of the alert's fingerprint). Then drain [`AlertSender::poll_transmit`]: each
//! batch goes to one Alertmanager (by index); report how it went with
//! [`AlertSender::handle_result`]. Wake it at [`AlertSender::poll_timeout`] and call
//! [`AlertSender::handle_tick`]. A batch holds every alert this peer owns, firing ones with
//! `endsAt` a few resends ahead, resolved ones with their end; batches go every
//! `resend_interval`, and at once when an alert starts or ends. A failed batch is retried
//! with backoff; at most one batch per Alertmanager is in flight, and a newer one
//! replaces a waiting one, so the queue stays bounded.

use std::collections::BTreeMap;

use observatory_core::backoff::Backoff;
use observatory_core::settings::human_ms;

use crate::eval::{AlertState, Evaluation, ObjectiveStatus};
use crate::model::{Goal, Severity};

/// An alert as Alertmanager takes it (`POST /api/v2/alerts`).
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Identity: the same on every peer.
    pub labels: BTreeMap<String, String>,
    /// What a person reads: figures, which change from step to step.
    pub annotations: BTreeMap<String, String>,
    /// When it started firing.
    pub starts_at_ms: i64,
    /// When it stopped, if it has.
    pub resolved_at_ms: Option<i64>,
    /// Path on the sending peer showing the objective (`/api/v1/objectives?name=...`).
    pub generator_path: String,
    /// Path on the sending peer showing the graph over the alert's window
    /// (`/api/v1/graph?window=...`).
    pub graph_path: String,
}

impl Alert {
    /// A stable hash of the labels: the alert's identity.
    pub fn fingerprint(&self) -> u64 {
        let mut text = String::new();
        for (key, value) in &self.labels {
            text.push_str(key);
            text.push('\u{0}');
            text.push_str(value);
            text.push('\u{0}');
        }
        xxhash_rust::xxh3::xxh3_64(text.as_bytes())
    }
}

fn percent(share: f64) -> String {
    let percent = share * 100.0;
    if percent >= 99.0 { format!("{percent:.3}%") } else { format!("{percent:.2}%") }
}

fn summary(status: &ObjectiveStatus) -> String {
    let objective = &status.objective;
    let edges = format!("{} -> {}", objective.selector.from.as_str(), objective.selector.to.as_str());
    let window = human_ms(objective.window_ms);
    match &objective.goal {
        Goal::Latency { threshold_us, target } => format!(
            "{edges}: {} of calls within {} over {window} (target {})",
            status.sli.map_or("no calls".into(), percent),
            human_ms((*threshold_us / 1000) as i64),
            percent(*target)
        ),
        Goal::Errors { target } => format!(
            "{edges}: {} of calls without error over {window} (target {})",
            status.sli.map_or("no calls".into(), percent),
            percent(*target)
        ),
        Goal::Flow { rate_at_least_per_s, for_ms, .. } => format!(
            "{edges}: {} over the last {}, expected at least {}",
            crate::model::rate_text(status.flow_rate_per_s.unwrap_or(0.0)),
            human_ms(*for_ms),
            crate::model::rate_text(*rate_at_least_per_s)
        ),
    }
}

/// The alerts of an evaluation: every alert firing, or resolved within the hold.
pub fn alerts_of(evaluation: &Evaluation) -> Vec<Alert> {
    let mut alerts = Vec::new();
    for status in &evaluation.objectives {
        let objective = &status.objective;
        for alert in &status.alerts {
            let (starts_at_ms, resolved_at_ms) = match alert.state {
                AlertState::Firing { starts_at_ms } => (starts_at_ms, None),
                AlertState::Resolved { starts_at_ms, ends_at_ms } => (starts_at_ms, Some(ends_at_ms)),
                AlertState::Inactive | AlertState::Pending { .. } => continue,
            };
            let alertname = match objective.goal {
                Goal::Flow { .. } => "ObservatoryFlowMissing",
                _ => "ObservatoryObjectiveBurn",
            };
            let kind = objective.selector.kind.map_or("*", |k| k.as_str());
            let labels: BTreeMap<String, String> = [
                ("alertname", alertname),
                ("objective", objective.name.as_str()),
                ("severity", alert.severity.as_str()),
                ("from", objective.selector.from.as_str()),
                ("to", objective.selector.to.as_str()),
                ("kind", kind),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            let mut annotations = BTreeMap::new();
            annotations.insert("summary".to_string(), summary(status));
            if let Some(sli) = status.sli {
                annotations.insert("sli".into(), format!("{sli:.6}"));
            }
            if let (Some(low), Some(high)) = (status.sli_low, status.sli_high)
                && low != high
            {
                annotations.insert("sli_bounds".into(), format!("{low:.6}..{high:.6}"));
            }
            if let Some(target) = objective.target() {
                annotations.insert("target".into(), format!("{target}"));
            }
            if let Some(budget) = status.budget_remaining {
                annotations.insert("budget_remaining".into(), format!("{budget:.4}"));
            }
            if !status.burn_rates.is_empty() {
                let mut windows = Vec::new();
                let rates: Vec<String> = status
                    .burn_rates
                    .iter()
                    .filter(|b| {
                        let new = !windows.contains(&b.window_ms);
                        windows.push(b.window_ms);
                        new
                    })
                    .map(|b| format!("{}: {:.2}", human_ms(b.window_ms).replace(' ', ""), b.rate))
                    .collect();
                annotations.insert("burn_rates".into(), rates.join(", "));
            }
            let severity_window = match (&objective.goal, alert.severity) {
                (Goal::Flow { for_ms, .. }, _) => *for_ms,
                (_, Severity::Page) => 3_600_000,
                (_, Severity::Ticket) => 86_400_000,
            };
            alerts.push(Alert {
                labels,
                annotations,
                starts_at_ms,
                resolved_at_ms,
                generator_path: format!("/api/v1/objectives?name={}", objective.name),
                graph_path: format!("/api/v1/graph?window={}", human_ms(severity_window).replace(' ', "")),
            });
        }
    }
    alerts
}

/// The owner of `key` among `peers`: the highest hash of `(peer, key)` (rendezvous), ties
/// by name; `None` for no peers.
pub fn owner(key: u64, peers: &[String]) -> Option<&String> {
    peers
        .iter()
        .map(|peer| {
            let seed = xxhash_rust::xxh3::xxh3_64(peer.as_bytes());
            (xxhash_rust::xxh3::xxh3_64_with_seed(&key.to_le_bytes(), seed), peer)
        })
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)))
        .map(|(_, peer)| peer)
}

/// Settings of sending (`alerts.*` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderConfig {
    /// Alertmanagers to send to.
    pub targets: usize,
    /// How often every alert is sent again (`alerts.resend_interval`).
    pub resend_interval_ms: i64,
    /// A firing alert's `endsAt` lies this many resends ahead.
    pub ends_at_resends: i64,
    /// First retry delay of a failed batch, doubling up to `retry_max_ms`.
    pub retry_min_ms: i64,
    /// Longest retry delay.
    pub retry_max_ms: i64,
}

/// One alert in a batch, with its `endsAt`.
#[derive(Debug, Clone, PartialEq)]
pub struct OutAlert {
    /// The alert.
    pub alert: Alert,
    /// `endsAt`: a few resends ahead while firing, the end once resolved.
    pub ends_at_ms: i64,
}

/// A batch for one Alertmanager.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Names the batch in [`AlertSender::handle_result`].
    pub id: u64,
    /// Which Alertmanager.
    pub target: usize,
    /// What to send.
    pub alerts: Vec<OutAlert>,
}

/// What sending did since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderCounters {
    /// Alerts this peer owns now (and sends).
    pub alerts_owned: u64,
    /// Batches handed out.
    pub batches_sent: u64,
    /// Batches that failed (then retried).
    pub batches_failed: u64,
    /// Alerts delivered, counted per batch.
    pub alerts_delivered: u64,
}

#[derive(Debug, Clone)]
struct Target {
    next_send_ms: i64,
    in_flight: Option<u64>,
    backoff: Backoff,
    failing: bool,
}

/// Which alerts this peer sends, when, and to which Alertmanager; see the module
/// documentation.
#[derive(Debug, Clone)]
pub struct AlertSender {
    config: SenderConfig,
    owned: BTreeMap<u64, Alert>,
    targets: Vec<Target>,
    next_id: u64,
    counters: SenderCounters,
}

impl AlertSender {
    /// A sender to `config.targets` Alertmanagers.
    pub fn new(config: SenderConfig) -> Self {
        let target = Target {
            next_send_ms: i64::MIN,
            in_flight: None,
            backoff: Backoff::new(config.retry_min_ms, config.retry_max_ms),
            failing: false,
        };
        Self {
            config,
            owned: BTreeMap::new(),
            targets: vec![target; config.targets],
            next_id: 1,
            counters: SenderCounters::default(),
        }
    }

    /// The alerts of the latest evaluation: this peer keeps those it owns among `peers`
    /// (every live peer with the same objectives, this one included). An alert that
    /// starts or ends, or that this peer takes over, makes every Alertmanager due at once.
    pub fn update(&mut self, now_ms: i64, alerts: Vec<Alert>, peers: &[String], local: &str) {
        let mut owned = BTreeMap::new();
        for alert in alerts {
            let fingerprint = alert.fingerprint();
            if owner(fingerprint, peers).is_some_and(|p| p == local) {
                owned.insert(fingerprint, alert);
            }
        }
        let changed = owned.len() != self.owned.len()
            || owned.iter().any(|(fingerprint, alert)| {
                self.owned.get(fingerprint).is_none_or(|old| {
                    old.starts_at_ms != alert.starts_at_ms || old.resolved_at_ms != alert.resolved_at_ms
                })
            });
        self.owned = owned;
        self.counters.alerts_owned = self.owned.len() as u64;
        if changed {
            for target in &mut self.targets {
                if !target.failing {
                    target.next_send_ms = target.next_send_ms.min(now_ms);
                }
            }
        }
    }

    /// Nothing to do between batches: the sender is driven by `poll_transmit`.
    pub fn handle_tick(&mut self, _now_ms: i64) {}

    /// The next batch due at `now_ms`, if any.
    pub fn poll_transmit(&mut self, now_ms: i64) -> Option<Batch> {
        if self.owned.is_empty() {
            return None;
        }
        let (index, target) = self
            .targets
            .iter_mut()
            .enumerate()
            .find(|(_, t)| t.in_flight.is_none() && t.next_send_ms <= now_ms)?;
        let id = self.next_id;
        self.next_id += 1;
        target.in_flight = Some(id);
        let ahead_ms = self.config.resend_interval_ms * self.config.ends_at_resends;
        let alerts = self
            .owned
            .values()
            .map(|alert| OutAlert {
                alert: alert.clone(),
                ends_at_ms: alert.resolved_at_ms.unwrap_or(now_ms + ahead_ms),
            })
            .collect::<Vec<_>>();
        self.counters.batches_sent += 1;
        Some(Batch { id, target: index, alerts })
    }

    /// How batch `id` went; a failure is retried with backoff.
    pub fn handle_result(&mut self, now_ms: i64, id: u64, delivered: bool, alerts: usize) {
        let Some(target) = self.targets.iter_mut().find(|t| t.in_flight == Some(id)) else { return };
        target.in_flight = None;
        if delivered {
            target.backoff.reset();
            target.failing = false;
            target.next_send_ms = now_ms + self.config.resend_interval_ms;
            self.counters.alerts_delivered += alerts as u64;
        } else {
            target.failing = true;
            target.next_send_ms = now_ms + target.backoff.next_ms();
            self.counters.batches_failed += 1;
        }
    }

    /// When a batch is due next (`i64::MAX` while nothing is owned).
    pub fn poll_timeout(&self) -> i64 {
        if self.owned.is_empty() {
            return i64::MAX;
        }
        self.targets
            .iter()
            .filter(|t| t.in_flight.is_none())
            .map(|t| t.next_send_ms)
            .min()
            .unwrap_or(i64::MAX)
    }

    /// The counters.
    pub fn counters(&self) -> SenderCounters {
        self.counters
    }

    /// The alerts this peer sends now.
    pub fn owned(&self) -> impl Iterator<Item = &Alert> {
        self.owned.values()
    }
}
