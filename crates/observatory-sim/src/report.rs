//! What a run found: [`Report`] (written as `report.json`), the summary table and the
//! convergence chart (`convergence.svg`). All three depend only on the scenario, the seed
//! and the code, never on the wall clock.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::alerting::{self, ObjectivesReport};
use crate::check::{FinalOutcome, INVARIANTS, Violation};
use crate::sim::{START_MS, Simulation};

/// Version of the `report.json` schema (documented in `simulations/README.md`).
pub const REPORT_SCHEMA: u32 = 1;

/// Milliseconds as seconds, rounded to the millisecond.
pub(crate) fn seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// p50, p99 and max over peers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    fn of(mut values: Vec<f64>) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let rank = |q: f64| values[((q * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
        Some(Self { p50: round3(rank(0.5)), p99: round3(rank(0.99)), max: round3(values[values.len() - 1]) })
    }
}

/// A fault on the timeline, for the chart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultMark {
    /// Simulated seconds since the start.
    pub at_s: f64,
    /// What happened.
    pub label: String,
}

/// Peers at the start, at most, and up at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PeerCounts {
    /// At the start.
    pub start: usize,
    /// Ever started.
    pub total: usize,
    /// Up at the end.
    pub up_at_end: usize,
}

/// What the network carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MessageCounts {
    /// Messages sent (encoded).
    pub sent: u64,
    /// Delivered to a peer.
    pub delivered: u64,
    /// Lost by the network model.
    pub lost: u64,
    /// Delivered twice by the network model.
    pub duplicated: u64,
    /// Above `sync.message_bytes_max`, so never sent.
    pub oversized: u64,
    /// Dropped because the connection or the receiver was gone.
    pub undeliverable: u64,
    /// Bytes of all messages sent.
    pub bytes: u64,
    /// Of those, bytes of hellos (sent once per connection, to compare settings).
    pub hello_bytes: u64,
}

/// One invariant's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InvariantResult {
    /// Its name (see [`crate::check`]).
    pub name: &'static str,
    /// Whether it held throughout.
    pub ok: bool,
    /// The first violation, or what was checked.
    pub detail: String,
    /// How many violations were found.
    pub violations: usize,
}

/// Everything a run found; `report.json` is this, serialized.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// [`REPORT_SCHEMA`].
    pub schema: u32,
    /// The scenario's name.
    pub scenario: String,
    /// The seed of the run.
    pub seed: u64,
    /// Peer counts.
    pub peers: PeerCounts,
    /// Whether every up peer ended exact and every invariant held.
    pub converged: bool,
    /// Simulated seconds from the start to the last write or fault, from which
    /// convergence is measured.
    pub settle_from_s: f64,
    /// Sync rounds from `settle_from_s` until each up peer's view was exact for good
    /// (simulated seconds over the sync interval); absent when some never converged.
    pub rounds_to_converge: Option<Percentiles>,
    /// The same in simulated seconds.
    pub seconds_to_converge: Option<Percentiles>,
    /// Simulated seconds the run lasted.
    pub simulated_seconds: f64,
    /// Bytes of sync messages (hellos left out: they are sent once per connection) over
    /// all peers, divided by the rounds they started.
    pub bytes_per_peer_per_round: f64,
    /// The largest message, in bytes.
    pub max_message_bytes: u64,
    /// What the network carried.
    pub messages: MessageCounts,
    /// Events peers accepted (with their `count`).
    pub events_accepted: u64,
    /// Events peers rejected, by reason.
    pub events_rejected: BTreeMap<String, u64>,
    /// Accepted events no up peer holds at the end.
    pub events_lost: u64,
    /// Why losing events was allowed, if the scenario allows it.
    pub loss_reason: Option<String>,
    /// Every invariant, in a fixed order.
    pub invariants: Vec<InvariantResult>,
    /// The earliest violation, if any.
    pub first_violation: Option<Violation>,
    /// The timeline's faults as they happened.
    pub faults: Vec<FaultMark>,
    /// `[simulated seconds, share of up peers that are exact]`, at every change.
    pub convergence: Vec<[f64; 2]>,
    /// Objectives and alerts, when the scenario declares objectives.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objectives: Option<ObjectivesReport>,
}

pub(crate) fn build(sim: &Simulation, outcome: FinalOutcome) -> Report {
    let FinalOutcome { violations: final_violations, events_lost, loss_reason } = outcome;
    let mut violations = sim.violations.clone();
    let end_s = seconds(sim.now_ms - START_MS);
    violations.extend(final_violations.into_iter().map(|mut v| {
        v.at_s = end_s;
        v
    }));
    let settle_from_ms = sim.settle_from_ms();
    let up: Vec<_> = sim.peers.iter().filter(|p| p.up).collect();
    let all_converged = up.iter().all(|p| p.converged_since_ms.is_some());
    let since: Vec<f64> = up
        .iter()
        .filter_map(|p| p.converged_since_ms)
        .map(|t| seconds((t - settle_from_ms).max(0)))
        .collect();
    let (seconds_to_converge, rounds_to_converge) = if all_converged && !up.is_empty() {
        let interval_s = sim.interval_s();
        (Percentiles::of(since.clone()), Percentiles::of(since.iter().map(|s| s / interval_s).collect()))
    } else {
        (None, None)
    };
    let objective_invariants: &[&'static str] =
        if sim.alerting.is_some() { &alerting::INVARIANTS } else { &[] };
    let invariants: Vec<InvariantResult> = INVARIANTS
        .iter()
        .chain(objective_invariants)
        .map(|&name| {
            let of_this: Vec<&Violation> = violations.iter().filter(|v| v.invariant == name).collect();
            let detail = match of_this.first() {
                Some(v) => format!("at {} s: {}", v.at_s, v.detail),
                None => match name {
                    "exact_after_quiescence" => format!("{} up peers exact, cell by cell", up.len()),
                    "never_exceeds_truth" => "no global cell above the truth".into(),
                    "version_vectors_honest" => "every claimed seq backed by the cells".into(),
                    "settings_isolated" => "no origin crossed a settings boundary".into(),
                    "objective_states_match_oracle" => {
                        format!(
                            "{} up peers with a complete picture agree with the oracle",
                            sim.compared_peers
                        )
                    }
                    "transitions_reach_sink" => "every firing and every end reached the sink".into(),
                    "notifications_agree" => "one set of labels per alert, only the oracle's starts".into(),
                    "one_sender_per_alert" => "at most one sender per alert per resend interval".into(),
                    _ => match &loss_reason {
                        Some(reason) if events_lost > 0 => {
                            format!("{events_lost} events lost by design: {reason}")
                        }
                        _ => "no accepted event lost".into(),
                    },
                },
            };
            InvariantResult { name, ok: of_this.is_empty(), detail, violations: of_this.len() }
        })
        .collect();
    let first_violation = violations.iter().min_by(|a, b| a.at_s.total_cmp(&b.at_s)).cloned();
    let totals = &sim.totals;
    let rounds = totals.rounds.max(1);
    Report {
        schema: REPORT_SCHEMA,
        scenario: sim.scenario().name.clone(),
        seed: sim.seed(),
        peers: PeerCounts { start: sim.scenario().peers, total: sim.peers.len(), up_at_end: up.len() },
        converged: all_converged && first_violation.is_none(),
        settle_from_s: seconds(settle_from_ms - START_MS),
        rounds_to_converge,
        seconds_to_converge,
        simulated_seconds: end_s,
        bytes_per_peer_per_round: round3(
            (totals.bytes_sent - totals.hello_bytes_sent) as f64 / rounds as f64,
        ),
        max_message_bytes: totals.max_message_bytes,
        messages: MessageCounts {
            sent: totals.messages_sent,
            delivered: totals.messages_delivered,
            lost: totals.messages_lost,
            duplicated: totals.messages_duplicated,
            oversized: totals.messages_oversized,
            undeliverable: totals.messages_undeliverable,
            bytes: totals.bytes_sent,
            hello_bytes: totals.hello_bytes_sent,
        },
        events_accepted: totals.events_accepted,
        events_rejected: totals.events_rejected.clone(),
        events_lost,
        loss_reason,
        invariants,
        first_violation,
        faults: sim.marks.clone(),
        convergence: sim.series.iter().map(|&(t, share)| [seconds(t), round3(share)]).collect(),
        objectives: sim.alerting.as_ref().map(alerting::report),
    }
}

impl Report {
    /// Whether every invariant held.
    pub fn ok(&self) -> bool {
        self.invariants.iter().all(|i| i.ok)
    }

    /// `report.json`: pretty JSON with a final newline.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("reports serialize");
        text.push('\n');
        text
    }

    /// The summary table printed at the end of a run.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let p = |x: &Option<Percentiles>| match x {
            Some(p) => format!("p50 {:.1}  p99 {:.1}  max {:.1}", p.p50, p.p99, p.max),
            None => "not every peer converged".into(),
        };
        let rows: Vec<(&str, String)> = vec![
            ("scenario", format!("{} (seed {})", self.scenario, self.seed)),
            (
                "peers",
                format!(
                    "{} at start, {} in all, {} up at the end",
                    self.peers.start, self.peers.total, self.peers.up_at_end
                ),
            ),
            ("settled from", format!("{:.1} s (last write or fault)", self.settle_from_s)),
            ("rounds to converge", p(&self.rounds_to_converge)),
            ("seconds to converge", p(&self.seconds_to_converge)),
            ("simulated", format!("{:.1} s", self.simulated_seconds)),
            ("bytes per peer per round", format!("{:.0}", self.bytes_per_peer_per_round)),
            ("largest message", format!("{} B", self.max_message_bytes)),
            (
                "messages",
                format!(
                    "{} sent, {} lost, {} duplicated, {} undeliverable",
                    self.messages.sent,
                    self.messages.lost,
                    self.messages.duplicated,
                    self.messages.undeliverable
                ),
            ),
            ("events accepted", self.events_accepted.to_string()),
            (
                "events rejected",
                if self.events_rejected.is_empty() {
                    "0".into()
                } else {
                    self.events_rejected
                        .iter()
                        .map(|(k, v)| format!("{v} {k}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            ),
            ("events lost", self.events_lost.to_string()),
        ];
        let mut rows = rows;
        if let Some(objectives) = &self.objectives {
            for o in &objectives.objectives {
                rows.push((
                    "objective",
                    format!(
                        "{}: {} firings ({} resolved), {} notifications from {} peers, detected {}",
                        o.name,
                        o.episodes,
                        o.resolved,
                        o.notifications,
                        o.senders,
                        o.detection_delay_s.map_or("-".to_string(), |d| format!("{d:.1} s after the breach"))
                    ),
                ));
            }
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0).max(24);
        for (key, value) in rows {
            let _ = writeln!(out, "  {key:<width$}  {value}");
        }
        let _ = writeln!(out);
        for invariant in &self.invariants {
            let mark = if invariant.ok { "pass" } else { "FAIL" };
            let _ = writeln!(out, "  {mark}  {:<29}  {}", invariant.name, invariant.detail);
        }
        out
    }

    /// `convergence.svg`: the share of up peers whose view is exact over simulated time,
    /// with the faults marked.
    pub fn convergence_svg(&self) -> String {
        use observatory_layout::palette::{ACCENT, BAD, FONT, IDLE, INK, PAPER, RULE};
        const W: f64 = 800.0;
        const H: f64 = 360.0;
        const LEFT: f64 = 56.0;
        const RIGHT: f64 = 16.0;
        const TOP: f64 = 40.0;
        const BOTTOM: f64 = 44.0;
        let plot_w = W - LEFT - RIGHT;
        let plot_h = H - TOP - BOTTOM;
        let end = self.simulated_seconds.max(1.0);
        let x = |t: f64| LEFT + plot_w * (t / end).clamp(0.0, 1.0);
        let y = |share: f64| TOP + plot_h * (1.0 - share.clamp(0.0, 1.0));
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="{FONT}" font-size="12">"#
        );
        let _ = writeln!(svg, r#"<rect width="{W}" height="{H}" fill="{PAPER}"/>"#);
        let _ = writeln!(
            svg,
            r#"<text x="{LEFT}" y="22" font-size="14">{}: share of peers with an exact view (seed {})</text>"#,
            escape(&self.scenario),
            self.seed
        );
        for tick in 0..=4 {
            let share = f64::from(tick) / 4.0;
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="{RULE}"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}%</text>"##,
                W - RIGHT,
                y(share),
                y(share),
                LEFT - 6.0,
                y(share) + 4.0,
                tick * 25
            );
        }
        let step = nice_step(end);
        let mut t = 0.0;
        while t <= end + 1e-9 {
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                x(t),
                H - BOTTOM + 16.0,
                t
            );
            t += step;
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">simulated seconds</text>"#,
            LEFT + plot_w / 2.0,
            H - 8.0
        );
        for (i, mark) in self.faults.iter().enumerate() {
            let label_y = TOP + 12.0 + 14.0 * (i % 4) as f64;
            let _ = writeln!(
                svg,
                r##"<line x1="{0:.1}" x2="{0:.1}" y1="{TOP}" y2="{1:.1}" stroke="{BAD}" stroke-dasharray="4 3"/><text x="{2:.1}" y="{3:.1}" fill="{BAD}">{4}</text>"##,
                x(mark.at_s),
                TOP + plot_h,
                x(mark.at_s) + 3.0,
                label_y,
                escape(&mark.label)
            );
        }
        let settle = x(self.settle_from_s);
        let _ = writeln!(
            svg,
            r##"<line x1="{settle:.1}" x2="{settle:.1}" y1="{TOP}" y2="{:.1}" stroke="{IDLE}"/>"##,
            TOP + plot_h
        );
        // A step line: the share holds until the next change.
        let mut points = String::new();
        let mut previous: Option<f64> = None;
        for &[t, share] in &self.convergence {
            if let Some(before) = previous {
                let _ = write!(points, "{:.1},{:.1} ", x(t), y(before));
            }
            let _ = write!(points, "{:.1},{:.1} ", x(t), y(share));
            previous = Some(share);
        }
        if let Some(last) = previous {
            let _ = write!(points, "{:.1},{:.1}", x(end), y(last));
        }
        let _ = writeln!(
            svg,
            r##"<polyline points="{}" fill="none" stroke="{ACCENT}" stroke-width="2"/>"##,
            points.trim_end()
        );
        let _ = writeln!(
            svg,
            r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="{INK}"/>"##
        );
        svg.push_str("</svg>\n");
        svg
    }
}

fn nice_step(end: f64) -> f64 {
    let raw = end / 8.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|&s| s >= raw).unwrap_or(10.0 * magnitude)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
