//! Objectives as declared: a selector of edges, a rolling window, and one goal (latency,
//! errors, or an expected flow), checked and fingerprinted.
//!
//! [`ObjectiveSpec`] is the file format (what `objectives.files` hold); [`Objective`] is
//! one that passed every check. Errors name the key (`latency.threshold`, `window`...).

use std::fmt;

use observatory_core::settings::human_ms;
use observatory_core::{Edge, EdgeKind};
use serde::{Deserialize, Serialize};

/// Shortest objective window.
pub const WINDOW_MS_MIN: i64 = 3_600_000;
/// Longest objective window (28 days).
pub const WINDOW_MS_MAX: i64 = 28 * 86_400_000;
/// Longest objective name, in bytes.
pub const NAME_BYTES_MAX: usize = 128;

/// A share given as `"95%"` or as a number (`0.95`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ShareSpec {
    /// `"99.9%"`.
    Text(String),
    /// `0.999`.
    Number(f64),
}

/// `latency: {threshold: 200ms, target: 95%}`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LatencySpec {
    /// Calls at or below this are good: `200ms`, `1.5s`, `750us`.
    pub threshold: String,
    /// The share of good calls aimed at.
    pub target: ShareSpec,
}

/// `errors: {target: 99.9%}`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorsSpec {
    /// The share of calls that did not fail, aimed at.
    pub target: ShareSpec,
}

/// `flow: {rate_at_least: 1/s, for: 5m}`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FlowSpec {
    /// The least rate expected: `1/s`, `30/m`, `100/h`.
    pub rate_at_least: String,
    /// How long the rate must stay below before the alert fires.
    #[serde(rename = "for")]
    pub for_: String,
}

/// One objective as a file declares it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectiveSpec {
    /// A unique name: letters, digits, `-`, `_`, `.`, `:`.
    pub name: String,
    /// The edges' sender: a node name, or a pattern with `*`.
    pub from: String,
    /// The edges' receiver: a node name, or a pattern with `*`.
    pub to: String,
    /// `request`, `messaging` or `database`; absent: every kind.
    #[serde(default)]
    pub kind: Option<String>,
    /// The rolling window: `1h` to `28d`.
    pub window: String,
    /// A latency goal.
    #[serde(default)]
    pub latency: Option<LatencySpec>,
    /// An error goal.
    #[serde(default)]
    pub errors: Option<ErrorsSpec>,
    /// An expected flow.
    #[serde(default)]
    pub flow: Option<FlowSpec>,
    /// Fewer calls than this in a burn-rate window never breach it.
    #[serde(default)]
    pub min_calls: Option<u64>,
    /// How long a breach must last before the alert fires.
    #[serde(default, rename = "for")]
    pub for_: Option<String>,
    /// How long a fired alert keeps firing after the breach ends.
    #[serde(default)]
    pub keep_firing_for: Option<String>,
    /// `page` or `ticket`: the severity of a flow objective's alert.
    #[serde(default)]
    pub severity: Option<String>,
}

/// What an objective's spec leaves out, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectiveDefaults {
    /// `objectives.min_calls`.
    pub min_calls: u64,
    /// `objectives.for`.
    pub for_ms: i64,
    /// `objectives.keep_firing_for`.
    pub keep_firing_for_ms: i64,
}

/// Why an objective is not usable: the key at fault and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct ObjectiveError {
    /// The key, relative to the objective (`latency.target`).
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

fn error(key: &str, reason: impl Into<String>) -> ObjectiveError {
    ObjectiveError { key: key.to_string(), reason: reason.into() }
}

/// How urgent an alert is: a page wakes someone, a ticket waits for working hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Act now.
    Page,
    /// Act soon.
    Ticket,
}

impl Severity {
    /// `page` or `ticket`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Page => "page",
            Severity::Ticket => "ticket",
        }
    }
}

/// A node name to match: exact, or a pattern where `*` stands for any run of characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
}

impl Pattern {
    /// A pattern from `text`; an error names `key`.
    pub fn parse(key: &str, text: &str) -> Result<Self, ObjectiveError> {
        if text.is_empty() || text.len() > observatory_core::model::NODE_NAME_BYTES_HARD_MAX {
            return Err(error(key, "must be a node name or a pattern with `*`, 1 to 1024 bytes"));
        }
        if text.chars().any(char::is_control) {
            return Err(error(key, "must not hold control characters"));
        }
        Ok(Self { text: text.to_string() })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        let mut parts = self.text.split('*');
        let first = parts.next().unwrap_or("");
        let Some(mut rest) = name.strip_prefix(first) else { return false };
        let parts: Vec<&str> = parts.collect();
        let Some((last, middle)) = parts.split_last() else { return rest.is_empty() };
        for part in middle {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        rest.len() >= last.len() && rest.ends_with(last)
    }
}

/// Which edges an objective is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// Sender.
    pub from: Pattern,
    /// Receiver.
    pub to: Pattern,
    /// The kind, if one.
    pub kind: Option<EdgeKind>,
}

impl Selector {
    /// Whether `edge` is selected.
    pub fn matches(&self, edge: &Edge) -> bool {
        self.kind.is_none_or(|kind| kind == edge.kind)
            && self.from.matches(edge.from.as_str())
            && self.to.matches(edge.to.as_str())
    }
}

/// What an objective asks of its edges.
#[derive(Debug, Clone, PartialEq)]
pub enum Goal {
    /// The share of calls with a latency at or below `threshold_us` is at least `target`.
    Latency {
        /// The threshold.
        threshold_us: u64,
        /// The share aimed at, below 1.
        target: f64,
    },
    /// The share of calls that did not fail is at least `target`.
    Errors {
        /// The share aimed at, below 1.
        target: f64,
    },
    /// The rate never stays below `rate_at_least_per_s` for `for_ms`.
    Flow {
        /// The least rate expected.
        rate_at_least_per_s: f64,
        /// For how long a lower rate is a breach.
        for_ms: i64,
        /// The alert's severity.
        severity: Severity,
    },
}

/// One objective that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct Objective {
    /// Its unique name.
    pub name: String,
    /// The edges it is about.
    pub selector: Selector,
    /// The rolling window of its SLI.
    pub window_ms: i64,
    /// What it asks.
    pub goal: Goal,
    /// Fewer calls in a burn-rate window never breach it.
    pub min_calls: u64,
    /// How long a breach lasts before the alert fires.
    pub for_ms: i64,
    /// How long a fired alert keeps firing after the breach ends.
    pub keep_firing_for_ms: i64,
}

/// A duration as people write it: `200ms`, `1.5s`, `5m`, `28d`, `750us`.
pub fn parse_duration_us(key: &str, text: &str) -> Result<u64, ObjectiveError> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| error(key, format!("`{text}` is not a duration; write e.g. 200ms, 1.5s, 5m or 28d")))?;
    let unit_us = match unit.trim() {
        "us" | "µs" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3_600e6,
        "d" => 86_400e6,
        other => {
            return Err(error(key, format!("`{other}` is not a unit of time; use us, ms, s, m, h or d")));
        }
    };
    let us = value * unit_us;
    if !us.is_finite() || !(0.0..=1e15).contains(&us) {
        return Err(error(key, format!("`{text}` is out of range")));
    }
    Ok(us.round() as u64)
}

fn parse_duration_ms(key: &str, text: &str) -> Result<i64, ObjectiveError> {
    Ok(i64::try_from(parse_duration_us(key, text)? / 1000).unwrap_or(i64::MAX))
}

/// A share below 1: `95%`, `99.9%` or `0.999`.
fn parse_share(key: &str, share: &ShareSpec) -> Result<f64, ObjectiveError> {
    let value = match share {
        ShareSpec::Number(value) => *value,
        ShareSpec::Text(text) => {
            let text = text.trim();
            let Some(percent) = text.strip_suffix('%') else {
                return Err(error(key, format!("`{text}` is not a share; write e.g. 99.9% or 0.999")));
            };
            let percent = percent.trim();
            let valid = !percent.is_empty() && percent.chars().all(|c| c.is_ascii_digit() || c == '.');
            // Shifting the decimal point as text reads 99.9% as the double nearest 0.999.
            let shifted: Option<f64> = valid.then(|| format!("{percent}e-2").parse().ok()).flatten();
            shifted.ok_or_else(|| error(key, format!("`{text}` is not a percentage")))?
        }
    };
    if !(value > 0.0 && value < 1.0) {
        return Err(error(key, format!("must lie strictly between 0% and 100%, got {}%", value * 100.0)));
    }
    Ok(value)
}

/// A rate per second as a person writes it: `2/s`, `10/m` or `30/h`, whichever shows it
/// in a whole number or with the fewest decimals.
pub fn rate_text(per_s: f64) -> String {
    let trimmed = |x: f64| {
        let text = format!("{x:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    };
    if per_s >= 1.0 || per_s == 0.0 {
        format!("{}/s", trimmed(per_s))
    } else if per_s * 60.0 >= 1.0 {
        format!("{}/m", trimmed(per_s * 60.0))
    } else {
        format!("{}/h", trimmed(per_s * 3600.0))
    }
}

/// A rate: `1/s`, `30/m`, `100/h`.
fn parse_rate(key: &str, text: &str) -> Result<f64, ObjectiveError> {
    let bad = || error(key, format!("`{text}` is not a rate; write e.g. 1/s, 30/m or 100/h"));
    let (count, per) = text.trim().split_once('/').ok_or_else(bad)?;
    let count: f64 = count.trim().parse().map_err(|_| bad())?;
    let per_s = match per.trim() {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    let rate = count / per_s;
    if !(rate.is_finite() && rate > 0.0) {
        return Err(error(key, "must be above zero"));
    }
    Ok(rate)
}

impl Objective {
    /// Checks `spec`, filling what it leaves out from `defaults`.
    pub fn from_spec(spec: &ObjectiveSpec, defaults: ObjectiveDefaults) -> Result<Self, ObjectiveError> {
        let name = spec.name.trim();
        if name.is_empty()
            || name.len() > NAME_BYTES_MAX
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        {
            return Err(error(
                "name",
                format!(
                    "`{}` must be 1 to {NAME_BYTES_MAX} letters, digits, `-`, `_`, `.` or `:`",
                    spec.name
                ),
            ));
        }
        let kind = match spec.kind.as_deref() {
            None | Some("*") => None,
            Some(kind) => Some(EdgeKind::from_name(kind).ok_or_else(|| {
                error("kind", format!("must be request, messaging or database, got `{kind}`"))
            })?),
        };
        let selector =
            Selector { from: Pattern::parse("from", &spec.from)?, to: Pattern::parse("to", &spec.to)?, kind };
        let window_ms = parse_duration_ms("window", &spec.window)?;
        if !(WINDOW_MS_MIN..=WINDOW_MS_MAX).contains(&window_ms) {
            return Err(error("window", format!("must be from 1h to 28d, got {}", human_ms(window_ms))));
        }
        let goals = [spec.latency.is_some(), spec.errors.is_some(), spec.flow.is_some()];
        if goals.iter().filter(|&&g| g).count() != 1 {
            return Err(error("latency", "an objective has exactly one of latency, errors and flow"));
        }
        let goal = if let Some(latency) = &spec.latency {
            let threshold_us = parse_duration_us("latency.threshold", &latency.threshold)?;
            if threshold_us == 0 {
                return Err(error("latency.threshold", "must be above zero"));
            }
            Goal::Latency { threshold_us, target: parse_share("latency.target", &latency.target)? }
        } else if let Some(errors) = &spec.errors {
            Goal::Errors { target: parse_share("errors.target", &errors.target)? }
        } else {
            let flow = spec.flow.as_ref().expect("one goal is given");
            let for_ms = parse_duration_ms("flow.for", &flow.for_)?;
            if !(10_000..=window_ms).contains(&for_ms) {
                return Err(error("flow.for", "must be from 10s to the objective's window"));
            }
            let severity = match spec.severity.as_deref() {
                None | Some("page") => Severity::Page,
                Some("ticket") => Severity::Ticket,
                Some(other) => {
                    return Err(error("severity", format!("must be page or ticket, got `{other}`")));
                }
            };
            Goal::Flow {
                rate_at_least_per_s: parse_rate("flow.rate_at_least", &flow.rate_at_least)?,
                for_ms,
                severity,
            }
        };
        if spec.severity.is_some() && !matches!(goal, Goal::Flow { .. }) {
            return Err(error(
                "severity",
                "only a flow objective takes a severity (burn-rate alerts page or ticket by rate)",
            ));
        }
        let duration = |key: &str, value: &Option<String>, default: i64| match value {
            Some(text) => parse_duration_ms(key, text),
            None => Ok(default),
        };
        Ok(Objective {
            name: name.to_string(),
            selector,
            window_ms,
            goal,
            min_calls: spec.min_calls.unwrap_or(defaults.min_calls),
            for_ms: duration("for", &spec.for_, defaults.for_ms)?,
            keep_firing_for_ms: duration(
                "keep_firing_for",
                &spec.keep_firing_for,
                defaults.keep_firing_for_ms,
            )?,
        })
    }

    /// A stable text naming everything the objective asks.
    pub fn canonical(&self) -> String {
        let kind = self.selector.kind.map_or("*", EdgeKind::as_str);
        let goal = match &self.goal {
            Goal::Latency { threshold_us, target } => format!("latency:{threshold_us}us@{target}"),
            Goal::Errors { target } => format!("errors@{target}"),
            Goal::Flow { rate_at_least_per_s, for_ms, severity } => {
                format!("flow:{rate_at_least_per_s}/s@{for_ms}ms:{}", severity.as_str())
            }
        };
        format!(
            "{}|{}|{}|{kind}|{}ms|{goal}|min_calls:{}|for:{}ms|keep:{}ms",
            self.name,
            self.selector.from.as_str(),
            self.selector.to.as_str(),
            self.window_ms,
            self.min_calls,
            self.for_ms,
            self.keep_firing_for_ms
        )
    }

    /// 16 hex digits of the XXH3 hash of [`Objective::canonical`].
    pub fn fingerprint(&self) -> String {
        format!("{:016x}", xxhash_rust::xxh3::xxh3_64(self.canonical().as_bytes()))
    }

    /// The target share, for burn-rate goals.
    pub fn target(&self) -> Option<f64> {
        match self.goal {
            Goal::Latency { target, .. } | Goal::Errors { target } => Some(target),
            Goal::Flow { .. } => None,
        }
    }
}

impl fmt::Display for Objective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// Every objective of a peer, by name, with one fingerprint peers compare.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObjectiveSet {
    objectives: Vec<Objective>,
}

impl ObjectiveSet {
    /// The set of `objectives`; two of one name are an error naming the second.
    pub fn new(mut objectives: Vec<Objective>) -> Result<Self, ObjectiveError> {
        objectives.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(pair) = objectives.windows(2).find(|pair| pair[0].name == pair[1].name) {
            return Err(error("name", format!("`{}` names two objectives", pair[1].name)));
        }
        Ok(Self { objectives })
    }

    /// The objectives, by name.
    pub fn objectives(&self) -> &[Objective] {
        &self.objectives
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.objectives.is_empty()
    }

    /// 16 hex digits naming the whole set (the same on every peer with the same
    /// objectives, whatever the files' order).
    pub fn fingerprint(&self) -> String {
        let canonical: Vec<String> = self.objectives.iter().map(Objective::canonical).collect();
        format!("{:016x}", xxhash_rust::xxh3::xxh3_64(canonical.join("\n").as_bytes()))
    }
}
