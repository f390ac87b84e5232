//! Objectives in the simulator: every peer runs the real evaluator and alert sender of
//! `observatory-objectives` on its own view, with the coverage its mesh status gives,
//! and posts to one simulated Alertmanager (the *sink*). An oracle evaluator runs on the
//! truth with a complete picture; the objective invariants compare the two:
//!
//! - `objective_states_match_oracle`: at the end, every up peer with a complete picture
//!   and an unskewed clock computes the same alert states (and `startsAt`) and the same
//!   call counts as the oracle, objective by objective.
//! - `transitions_reach_sink`: every alert the oracle fired reached the sink with the
//!   oracle's `startsAt`, and every one it resolved reached it with its end.
//! - `notifications_agree`: no two notifications of one alert differ in labels, and
//!   every `startsAt` the sink saw is one the oracle computed (no peer told of a start
//!   the global view does not have).
//! - `one_sender_per_alert`: outside membership changes (a connection up or down, a
//!   partition until it heals, plus an evaluation interval to notice) each alert came
//!   from at most one peer per resend interval.

use std::collections::{BTreeMap, BTreeSet};

use observatory_core::{Edge, FlowState};
use observatory_objectives::{
    AlertSender, AlertStatus, EvalConfig, Evaluation, Evaluator, ObjectiveSet, OutAlert, SenderConfig,
    alerts_of,
};
use serde::Serialize;

use crate::check::Violation;
use crate::report;
use crate::sim::{PeerIx, START_MS};

/// The objective invariants, in the order they are reported.
pub const INVARIANTS: [&str; 4] = [
    "objective_states_match_oracle",
    "transitions_reach_sink",
    "notifications_agree",
    "one_sender_per_alert",
];

/// One peer process's evaluator and sender.
#[derive(Debug)]
pub(crate) struct PeerAlerting {
    pub(crate) evaluator: Evaluator,
    pub(crate) sender: AlertSender,
    /// When its next wake is scheduled (true time).
    pub(crate) wake_at_ms: Option<i64>,
    /// Names the process, so that a result for a crashed one is dropped.
    pub(crate) process: u64,
    pub(crate) latest: Option<Evaluation>,
}

/// One alert as the sink received it.
#[derive(Debug, Clone)]
pub(crate) struct Notification {
    pub(crate) at_ms: i64,
    pub(crate) from: PeerIx,
    pub(crate) fingerprint: u64,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) starts_at_ms: i64,
    pub(crate) ends_at_ms: i64,
    pub(crate) resolved: bool,
}

/// One firing of an alert, as the oracle saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Episode {
    pub(crate) starts_at_ms: i64,
    pub(crate) resolved_at_ms: Option<i64>,
}

/// The alerting side of a run.
#[derive(Debug)]
pub(crate) struct Alerting {
    pub(crate) set: ObjectiveSet,
    pub(crate) eval: EvalConfig,
    pub(crate) sender: SenderConfig,
    pub(crate) fingerprint: String,
    oracle: Evaluator,
    /// Per alert (by fingerprint): its labels and the oracle's episodes.
    pub(crate) episodes: BTreeMap<u64, (BTreeMap<String, String>, Vec<Episode>)>,
    /// When the oracle's alerts last changed (true time).
    pub(crate) last_transition_ms: i64,
    pub(crate) sink: Vec<Notification>,
    /// True times at which a connection came up or went down, a peer crashed or started.
    pub(crate) membership_changes: Vec<i64>,
    /// Partitions: from, and until the heal (open while cut).
    pub(crate) partitions: Vec<(i64, Option<i64>)>,
    /// `traffic` faults: when, and the flows' edges they changed.
    pub(crate) traffic: Vec<(i64, Vec<Edge>)>,
    /// Whether the sink takes posts.
    pub(crate) sink_up: bool,
    /// Posts the sink refused.
    pub(crate) refused: u64,
    next_process: u64,
}

impl Alerting {
    /// The alerting of a run with `set`, evaluated every `eval.eval_interval_ms`.
    pub(crate) fn new(set: ObjectiveSet, eval: EvalConfig, sender: SenderConfig) -> Self {
        let settings =
            observatory_config::Config::defaults().settings().expect("the default settings are valid");
        let oracle = Evaluator::new(set.clone(), &settings, eval).expect("checked with the scenario");
        Self {
            fingerprint: set.fingerprint(),
            set,
            eval,
            sender,
            oracle,
            episodes: BTreeMap::new(),
            last_transition_ms: START_MS,
            sink: Vec::new(),
            membership_changes: Vec::new(),
            partitions: Vec::new(),
            traffic: Vec::new(),
            sink_up: true,
            refused: 0,
            next_process: 1,
        }
    }

    /// A new peer process's evaluator and sender.
    pub(crate) fn for_process(&mut self) -> PeerAlerting {
        let settings =
            observatory_config::Config::defaults().settings().expect("the default settings are valid");
        let process = self.next_process;
        self.next_process += 1;
        PeerAlerting {
            evaluator: Evaluator::new(self.set.clone(), &settings, self.eval)
                .expect("checked with the scenario"),
            sender: AlertSender::new(self.sender),
            wake_at_ms: None,
            process,
            latest: None,
        }
    }

    /// The oracle evaluates the truth at `now_ms` (true time), with a complete picture,
    /// and records its alerts' episodes.
    pub(crate) fn evaluate_oracle(&mut self, now_ms: i64, truth: &mut FlowState) -> Evaluation {
        let changes = truth.take_changes();
        let evaluation =
            self.oracle.evaluate(now_ms, truth, &changes, &observatory_objectives::Coverage::complete());
        for alert in alerts_of(&evaluation) {
            let fingerprint = alert.fingerprint();
            let (_, episodes) =
                self.episodes.entry(fingerprint).or_insert_with(|| (alert.labels.clone(), Vec::new()));
            let episode = Episode { starts_at_ms: alert.starts_at_ms, resolved_at_ms: alert.resolved_at_ms };
            let changed = match episodes.last_mut() {
                Some(last) if last.starts_at_ms == episode.starts_at_ms => {
                    std::mem::replace(last, episode) != episode
                }
                // A start revised by late data replaces the open episode it revises.
                Some(last) if last.resolved_at_ms.is_none() => {
                    *last = episode;
                    true
                }
                _ => {
                    episodes.push(episode);
                    true
                }
            };
            if changed {
                self.last_transition_ms = now_ms;
            }
        }
        evaluation
    }

    /// The sink takes a batch from `from`.
    pub(crate) fn deliver(&mut self, at_ms: i64, from: PeerIx, alerts: &[OutAlert]) {
        for out in alerts {
            self.sink.push(Notification {
                at_ms,
                from,
                fingerprint: out.alert.fingerprint(),
                labels: out.alert.labels.clone(),
                starts_at_ms: out.alert.starts_at_ms,
                ends_at_ms: out.ends_at_ms,
                resolved: out.alert.resolved_at_ms.is_some(),
            });
        }
    }

    fn exempt(&self, from_ms: i64, to_ms: i64) -> bool {
        let settle_ms = self.eval.eval_interval_ms + 1000;
        self.membership_changes.iter().any(|&t| t + settle_ms >= from_ms && t < to_ms)
            || self.partitions.iter().any(|&(cut, healed)| {
                cut < to_ms && healed.is_none_or(|healed| healed + settle_ms >= from_ms)
            })
    }
}

/// What the report says of objectives and alerts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectivesReport {
    /// The objectives' fingerprint.
    pub fingerprint: String,
    /// Notifications the sink received.
    pub notifications: usize,
    /// Posts it refused while down (the senders retried them).
    pub posts_refused: u64,
    /// Per objective.
    pub objectives: Vec<ObjectiveReport>,
}

/// One objective in the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectiveReport {
    /// Its name.
    pub name: String,
    /// Firings the oracle saw, over its alerts.
    pub episodes: usize,
    /// Of those, resolved.
    pub resolved: usize,
    /// Peers that sent any of its alerts.
    pub senders: usize,
    /// Notifications of its alerts.
    pub notifications: usize,
    /// Simulated seconds from the `traffic` fault that broke it (the last one naming its
    /// edges before the oracle first fired) to the sink's first notification.
    pub detection_delay_s: Option<f64>,
}

fn violation(invariant: &'static str, detail: String) -> Violation {
    Violation { at_s: 0.0, invariant, detail }
}

fn describe(labels: &BTreeMap<String, String>) -> String {
    format!(
        "{}/{}",
        labels.get("objective").map_or("?", String::as_str),
        labels.get("severity").map_or("?", String::as_str)
    )
}

/// A peer's final evaluation, for the comparison with the oracle's.
pub(crate) struct Final<'a> {
    pub(crate) ix: PeerIx,
    pub(crate) evaluation: &'a Evaluation,
}

/// The objective invariants at the end of a run: `finals` are the up peers' final
/// evaluations that can be compared (complete picture, unskewed clock), `oracle` the
/// oracle's at the same step; `end_ms` is the end (true time).
pub(crate) fn final_checks(
    alerting: &Alerting,
    finals: &[Final<'_>],
    oracle: &Evaluation,
    end_ms: i64,
    resend_ms: i64,
) -> Vec<Violation> {
    let mut found = Vec::new();
    let state = |statuses: &[AlertStatus]| statuses.iter().map(|a| (a.severity, a.state)).collect::<Vec<_>>();
    for f in finals {
        for (mine, truth) in f.evaluation.objectives.iter().zip(&oracle.objectives) {
            if f.evaluation.at_ms != oracle.at_ms {
                continue;
            }
            if state(&mine.alerts) != state(&truth.alerts) || mine.calls != truth.calls {
                found.push(violation(
                    "objective_states_match_oracle",
                    format!(
                        "peer p{} at {} s: {} is {:?} over {} calls, the oracle {:?} over {}",
                        f.ix,
                        report::seconds(oracle.at_ms - START_MS),
                        mine.objective.name,
                        state(&mine.alerts),
                        mine.calls,
                        state(&truth.alerts),
                        truth.calls
                    ),
                ));
            }
        }
    }
    // Every firing and every end reached the sink, unless it happened too close to the
    // end for a post to arrive.
    let grace_ms = alerting.eval.eval_interval_ms + 2000;
    for (fingerprint, (labels, episodes)) in &alerting.episodes {
        for episode in episodes {
            let of_alert = || alerting.sink.iter().filter(|n| n.fingerprint == *fingerprint);
            if episode.starts_at_ms + grace_ms < end_ms
                && !of_alert().any(|n| n.starts_at_ms == episode.starts_at_ms)
            {
                found.push(violation(
                    "transitions_reach_sink",
                    format!(
                        "{} fired at {} s, and no notification with that start reached the sink",
                        describe(labels),
                        report::seconds(episode.starts_at_ms - START_MS)
                    ),
                ));
            }
            if let Some(resolved) = episode.resolved_at_ms
                && resolved + grace_ms < end_ms
                && !of_alert()
                    .any(|n| n.starts_at_ms == episode.starts_at_ms && n.resolved && n.ends_at_ms == resolved)
            {
                found.push(violation(
                    "transitions_reach_sink",
                    format!(
                        "{} resolved at {} s, and no notification with that end reached the sink",
                        describe(labels),
                        report::seconds(resolved - START_MS)
                    ),
                ));
            }
        }
    }
    // One alert, one set of labels and only the oracle's starts.
    let mut labels_of: BTreeMap<(String, String), &BTreeMap<String, String>> = BTreeMap::new();
    for n in &alerting.sink {
        let key = (
            n.labels.get("objective").cloned().unwrap_or_default(),
            n.labels.get("severity").cloned().unwrap_or_default(),
        );
        let first = labels_of.entry(key).or_insert(&n.labels);
        if *first != &n.labels {
            found.push(violation(
                "notifications_agree",
                format!("{}: notifications with labels {first:?} and {:?}", describe(&n.labels), n.labels),
            ));
        }
        let known = alerting
            .episodes
            .get(&n.fingerprint)
            .is_some_and(|(_, episodes)| episodes.iter().any(|e| e.starts_at_ms == n.starts_at_ms));
        if !known {
            found.push(violation(
                "notifications_agree",
                format!(
                    "p{} told the sink at {} s that {} started at {} s, a start the oracle never computed",
                    n.from,
                    report::seconds(n.at_ms - START_MS),
                    describe(&n.labels),
                    report::seconds(n.starts_at_ms - START_MS)
                ),
            ));
        }
    }
    // At most one sender per alert per resend interval, outside membership changes.
    let mut senders: BTreeMap<(u64, i64), BTreeSet<PeerIx>> = BTreeMap::new();
    for n in &alerting.sink {
        let window = (n.at_ms - START_MS).div_euclid(resend_ms);
        senders.entry((n.fingerprint, window)).or_default().insert(n.from);
    }
    for ((fingerprint, window), from) in senders {
        let start = START_MS + window * resend_ms;
        if from.len() > 1 && !alerting.exempt(start, start + resend_ms) {
            let labels =
                alerting.sink.iter().find(|n| n.fingerprint == fingerprint).map(|n| describe(&n.labels));
            found.push(violation(
                "one_sender_per_alert",
                format!(
                    "{} came from {} peers ({:?}) between {} s and {} s, with no membership change",
                    labels.unwrap_or_default(),
                    from.len(),
                    from,
                    report::seconds(start - START_MS),
                    report::seconds(start + resend_ms - START_MS)
                ),
            ));
        }
    }
    found
}

/// The report's section.
pub(crate) fn report(alerting: &Alerting) -> ObjectivesReport {
    let objectives = alerting
        .set
        .objectives()
        .iter()
        .map(|objective| {
            let of_objective =
                |labels: &BTreeMap<String, String>| labels.get("objective") == Some(&objective.name);
            let episodes: Vec<&Episode> = alerting
                .episodes
                .values()
                .filter(|(labels, _)| of_objective(labels))
                .flat_map(|(_, e)| e)
                .collect();
            let notifications: Vec<&Notification> =
                alerting.sink.iter().filter(|n| of_objective(&n.labels)).collect();
            let first_fired = episodes.iter().map(|e| e.starts_at_ms).min();
            let broken_at = first_fired.and_then(|fired| {
                alerting
                    .traffic
                    .iter()
                    .filter(|(at, edges)| *at <= fired && edges.iter().any(|e| objective.selector.matches(e)))
                    .map(|(at, _)| *at)
                    .max()
            });
            let first_notified = notifications
                .iter()
                .filter(|n| broken_at.is_some_and(|b| n.at_ms >= b))
                .map(|n| n.at_ms)
                .min();
            ObjectiveReport {
                name: objective.name.clone(),
                episodes: episodes.len(),
                resolved: episodes.iter().filter(|e| e.resolved_at_ms.is_some()).count(),
                senders: notifications.iter().map(|n| n.from).collect::<BTreeSet<_>>().len(),
                notifications: notifications.len(),
                detection_delay_s: broken_at.zip(first_notified).map(|(b, n)| report::seconds(n - b)),
            }
        })
        .collect();
    ObjectivesReport {
        fingerprint: alerting.fingerprint.clone(),
        notifications: alerting.sink.len(),
        posts_refused: alerting.refused,
        objectives,
    }
}
