//! The client subcommands: `send`, `graph`, `status`, `peers`, `objectives`. They talk
//! to a peer through the API's client and print its answers; `objectives check` reads
//! files.

use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;

use anyhow::Context;
use observatory_api::client::Client;
use observatory_api::objectives::{GoalJson, ObjectiveJson, ObjectivesAnswer};
use observatory_api::wire::{AgreementJson, EdgeJson, GraphAnswer, IngestAnswer, PeersAnswer};
use observatory_config::Config;

/// NDJSON input is sent in requests of at most this many lines.
const NDJSON_LINES_PER_REQUEST: usize = 5_000;

/// Posts events from a file (or `-` for stdin) and prints the combined answer.
/// Returns whether every event was accepted.
pub async fn send(peer: &str, input: &Path) -> anyhow::Result<bool> {
    let mut body = Vec::new();
    if input == Path::new("-") {
        std::io::stdin().read_to_end(&mut body).context("reading events from stdin")?;
    } else {
        body = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    }
    let text = String::from_utf8(body).context("the input is not UTF-8 text (NDJSON or a JSON array)")?;
    let is_array = text.trim_start().starts_with('[');
    let chunks: Vec<String> = if is_array {
        // Split a large array into arrays of the same size as NDJSON requests.
        let events: Vec<&serde_json::value::RawValue> =
            serde_json::from_str(&text).context("the input starts with `[` but is not a JSON array")?;
        events
            .chunks(NDJSON_LINES_PER_REQUEST)
            .map(|chunk| format!("[{}]", chunk.iter().map(|e| e.get()).collect::<Vec<_>>().join(",")))
            .collect()
    } else {
        let lines: Vec<&str> = text.lines().collect();
        lines.chunks(NDJSON_LINES_PER_REQUEST).map(|chunk| chunk.join("\n")).collect()
    };
    let content_type = if is_array { "application/json" } else { "application/x-ndjson" };
    let client = Client::new(peer)?;
    let mut total = IngestAnswer { accepted: 0, rejected: 0, errors: Vec::new(), errors_truncated: false };
    let mut offset = 0;
    for chunk in chunks {
        let events_in_chunk = if is_array {
            serde_json::from_str::<Vec<&serde_json::value::RawValue>>(&chunk).map_or(0, |events| events.len())
        } else {
            chunk.lines().filter(|l| !l.trim().is_empty()).count()
        };
        let answer = client.post_events(chunk, content_type).await?;
        total.accepted += answer.accepted;
        total.rejected += answer.rejected;
        total.errors_truncated |= answer.errors_truncated;
        total.errors.extend(answer.errors.into_iter().map(|mut e| {
            e.index += offset;
            e
        }));
        offset += events_in_chunk;
    }
    println!("{}", serde_json::to_string_pretty(&total)?);
    Ok(total.rejected == 0)
}

/// Output formats of `graph`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphFormat {
    /// A table sorted by rate.
    Table,
    /// The API's JSON answer.
    Json,
    /// Graphviz dot (`| dot -Tsvg > graph.svg`).
    Dot,
    /// A Mermaid flowchart (renders in GitHub and GitLab Markdown).
    Mermaid,
    /// An SVG picture drawn by the peer's layout, the one the page at / shows (no Graphviz).
    Svg,
}

/// Fetches the graph of a window and prints it.
pub async fn graph(
    peer: &str,
    window: &str,
    at: Option<&str>,
    flow: Option<&str>,
    format: GraphFormat,
) -> anyhow::Result<()> {
    if let GraphFormat::Svg = format {
        if flow.is_some() {
            anyhow::bail!("--flow is not drawn yet; use --format table, json, dot or mermaid for one flow");
        }
        let drawn = Client::new(peer)?.layout(window, at).await?;
        print!("{}", observatory_api::picture::picture_svg(&drawn.answer));
        return Ok(());
    }
    let fetched = Client::new(peer)?.graph_of_flow(window, at, flow).await?;
    let answer = &fetched.answer;
    match format {
        GraphFormat::Json => println!("{}", serde_json::to_string_pretty(&fetched.raw)?),
        GraphFormat::Table => print!("{}", table(answer)),
        GraphFormat::Dot => print!("{}", dot(answer)),
        GraphFormat::Mermaid => print!("{}", mermaid(answer)),
        GraphFormat::Svg => unreachable!("drawn above"),
    }
    Ok(())
}

/// Prints the propagation verdicts as a table (or the JSON answer); returns whether any
/// node is flagged.
pub async fn propagation(peer: &str, window: &str, at: Option<&str>, json: bool) -> anyhow::Result<bool> {
    let fetched = Client::new(peer)?.propagation(window, at).await?;
    let answer = &fetched.answer;
    let flagged = answer.nodes.iter().any(|n| n.verdict.starts_with("drops"));
    if json {
        println!("{}", serde_json::to_string_pretty(&fetched.raw)?);
        return Ok(flagged);
    }
    let w = &answer.window;
    println!(
        "window {} ending {}: {} nodes judged ({} is the entry node; front ends, which only it calls, by their outbound calls)",
        w.length,
        w.end,
        answer.nodes.len(),
        answer.entry_node
    );
    let header = [
        "NODE",
        "VERDICT",
        "IN CONTINUED",
        "IN STARTED",
        "IN MISSING",
        "OUT CONTINUED",
        "OUT STARTED",
        "UNMARKED",
    ];
    let rows: Vec<[String; 8]> = answer
        .nodes
        .iter()
        .map(|n| {
            [
                n.node.clone(),
                n.verdict.clone(),
                n.inbound.continued.to_string(),
                n.inbound.started.to_string(),
                n.inbound.missing.to_string(),
                n.outbound.continued.to_string(),
                n.outbound.started.to_string(),
                (n.inbound.unknown + n.outbound.unknown).to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i < 2 {
                let _ = write!(text, "{cell:<width$}  ");
            } else {
                let _ = write!(text, "{cell:>width$}  ");
            }
        }
        text.trim_end().to_string()
    };
    println!("{}", line(&header.map(String::from)));
    for row in &rows {
        println!("{}", line(row));
    }
    for node in answer.nodes.iter().filter(|n| !n.evidence.is_empty()) {
        for sentence in &node.evidence {
            println!("  {}: {sentence}", node.node);
        }
    }
    Ok(flagged)
}

/// Prints the peer's status as JSON.
pub async fn status(peer: &str) -> anyhow::Result<()> {
    let fetched = Client::new(peer)?.status().await?;
    println!("{}", serde_json::to_string_pretty(&fetched.raw)?);
    Ok(())
}

fn ms(value: Option<f64>) -> String {
    match value {
        None => "-".into(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// The graph as an aligned text table, busiest edges first.
pub fn table(answer: &GraphAnswer) -> String {
    let mut edges: Vec<&EdgeJson> = answer.edges.iter().collect();
    edges.sort_by(|a, b| b.figures.rate_per_s.total_cmp(&a.figures.rate_per_s));
    let header =
        ["EDGE", "RATE/S", "CALLS", "ERRORS", "ERR%", "P50 MS", "P95 MS", "P99 MS", "MAX MS", "BYTES"];
    let rows: Vec<[String; 10]> = edges
        .iter()
        .map(|e| {
            let f = &e.figures;
            let latency = f.latency_ms.as_ref();
            [
                edge_text(e),
                format!("{:.2}", f.rate_per_s),
                // Estimated from sampled traces: `~calls`, with the 95% interval.
                match (f.calls_estimated, f.calls_interval) {
                    (false, _) => f.calls.to_string(),
                    (true, Some([low, high])) => format!("~{} ({low}-{high})", f.calls),
                    (true, None) => format!("~{}", f.calls),
                },
                f.errors.to_string(),
                format!("{:.2}", f.error_ratio * 100.0),
                ms(latency.map(|l| l.p50)),
                ms(latency.map(|l| l.p95)),
                ms(latency.map(|l| l.p99)),
                ms(latency.map(|l| l.max)),
                human_bytes(f.bytes),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let w = &answer.window;
    let origins = answer.coverage.origins.len();
    let mesh = match &answer.coverage.mesh {
        Some(m) if m.complete => {
            format!("; complete ({} of {} peers in sync)", m.peers_in_sync, m.peers_known)
        }
        Some(m) => format!("; partial ({} of {} peers in sync)", m.peers_in_sync, m.peers_known),
        None => String::new(),
    };
    let flow = match &answer.flow {
        Some(flow) => format!(" of flow {flow}"),
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "window {} ending {} (resolution {}){flow}, {} edges, {} nodes, {} origin{}{mesh}",
        w.length,
        w.end,
        w.resolution,
        answer.edges.len(),
        answer.nodes.len(),
        origins,
        if origins == 1 { "" } else { "s" }
    );
    let line = |cells: &[String]| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i == 0 {
                let _ = write!(text, "{cell:<width$}");
            } else {
                let _ = write!(text, "  {cell:>width$}");
            }
        }
        text.trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(&header.map(str::to_string)));
    for row in &rows {
        let _ = writeln!(out, "{}", line(row));
    }
    if rows.is_empty() {
        let _ = writeln!(out, "(no traffic in this window)");
    }
    out
}

/// `from -> to`, with the kind when it is not a plain request and the virtual side if any.
fn edge_text(edge: &EdgeJson) -> String {
    let mut notes = Vec::new();
    if edge.kind != "request" {
        notes.push(edge.kind.clone());
    }
    if let Some(side) = &edge.virtual_node {
        notes.push(format!("virtual {side}"));
    }
    if notes.is_empty() {
        format!("{} -> {}", edge.from, edge.to)
    } else {
        format!("{} -> {} ({})", edge.from, edge.to, notes.join(", "))
    }
}

/// An edge's label: rate, error ratio, p95 and (unless a request) its kind, one per line.
fn edge_label_lines(edge: &EdgeJson) -> Vec<String> {
    let f = &edge.figures;
    let mut lines = Vec::new();
    if edge.kind != "request" {
        lines.push(edge.kind.clone());
    }
    lines.push(format!("{:.2}/s", f.rate_per_s));
    lines.push(format!("{:.2}% err", f.error_ratio * 100.0));
    if let Some(latency) = &f.latency_ms {
        lines.push(format!("p95 {} ms", ms(Some(latency.p95))));
    }
    lines
}

fn dot_id(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The graph in Graphviz dot, edges labelled with rate, errors and p95.
pub fn dot(answer: &GraphAnswer) -> String {
    let mut out = String::from("digraph observatory {\n  rankdir=LR;\n  node [shape=box, style=rounded];\n");
    for node in &answer.nodes {
        let style = if node.virtual_node { " [style=\"rounded,dashed\"]" } else { "" };
        let _ = writeln!(out, "  {}{style};", dot_id(&node.name));
    }
    for e in &answer.edges {
        let color = if e.figures.error_ratio >= 0.05 { ", color=red" } else { "" };
        let style = if e.kind == "messaging" { ", style=dashed" } else { "" };
        let _ = writeln!(
            out,
            "  {} -> {} [label={}{color}{style}];",
            dot_id(&e.from),
            dot_id(&e.to),
            dot_label(&edge_label_lines(e)),
        );
    }
    out.push_str("}\n");
    out
}

/// A quoted dot label of several lines.
fn dot_label(lines: &[String]) -> String {
    let lines: Vec<String> = lines.iter().map(|l| l.replace('\\', "\\\\").replace('"', "\\\"")).collect();
    format!("\"{}\"", lines.join("\\n"))
}

/// Text for a Mermaid label inside double quotes: quotes and angle brackets as entities.
fn mermaid_text(text: &str) -> String {
    text.replace('"', "#quot;").replace('<', "#lt;").replace('>', "#gt;")
}

/// The graph as a Mermaid flowchart: requests `-->`, messaging `-.->`, database calls
/// `==>`; nodes get ids `n0`, `n1`, ... so that any name is safe.
pub fn mermaid(answer: &GraphAnswer) -> String {
    let mut out = String::from("flowchart LR\n");
    let mut ids = std::collections::BTreeMap::new();
    for (i, node) in answer.nodes.iter().enumerate() {
        ids.insert(node.name.as_str(), format!("n{i}"));
        let _ = writeln!(out, "  n{i}[\"{}\"]", mermaid_text(&node.name));
    }
    let virtual_ids: Vec<String> = answer
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.virtual_node)
        .map(|(i, _)| format!("n{i}"))
        .collect();
    if !virtual_ids.is_empty() {
        let _ = writeln!(out, "  classDef virtual stroke-dasharray: 5 3");
        let _ = writeln!(out, "  class {} virtual", virtual_ids.join(","));
    }
    for e in &answer.edges {
        let (Some(from), Some(to)) = (ids.get(e.from.as_str()), ids.get(e.to.as_str())) else { continue };
        let arrow = match e.kind.as_str() {
            "messaging" => "-.->",
            "database" => "==>",
            _ => "-->",
        };
        let label: Vec<String> = edge_label_lines(e).iter().map(|line| mermaid_text(line)).collect();
        let label = label.join("<br/>");
        let _ = writeln!(out, "  {from} {arrow}|\"{label}\"| {to}");
    }
    out
}

/// `observatory peers`: the peers of the mesh as `peer` sees them.
pub async fn peers(peer: &str, json: bool) -> anyhow::Result<()> {
    let fetched = Client::new(peer)?.peers().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&fetched.raw)?);
    } else {
        print!("{}", peers_table(&fetched.answer));
    }
    Ok(())
}

/// `observatory objectives`: the objectives as `peer` evaluates them. Returns whether an
/// alert is firing.
pub async fn objectives(peer: &str, name: Option<&str>, json: bool) -> anyhow::Result<bool> {
    let fetched = Client::new(peer)?.objectives(name).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&fetched.raw)?);
    } else {
        print!("{}", objectives_table(&fetched.answer));
    }
    Ok(fetched.answer.objectives.iter().any(|o| o.state == "firing"))
}

/// `observatory objectives reload`.
pub async fn reload_objectives(peer: &str) -> anyhow::Result<()> {
    let fetched = Client::new(peer)?.reload_objectives().await?;
    println!(
        "reloaded: {} objectives, fingerprint {}",
        fetched.answer.objectives.len(),
        fetched.answer.fingerprint
    );
    Ok(())
}

/// `observatory objectives check`: every objective of `files` with its fingerprint, as
/// a peer with `config` would evaluate them.
pub fn check_objectives(config: &Config, files: &[std::path::PathBuf]) -> anyhow::Result<String> {
    let set = observatory_config::load_objective_files(files, config.objective_defaults())?;
    let settings = config.settings()?;
    observatory_objectives::Evaluator::new(set.clone(), &settings, config.evaluation())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let header = ["OBJECTIVE", "EDGES", "WINDOW", "GOAL", "FINGERPRINT"];
    let rows: Vec<[String; 5]> = set
        .objectives()
        .iter()
        .map(|o| {
            let kind = o.selector.kind.map_or(String::new(), |k| format!(" ({k})"));
            [
                o.name.clone(),
                format!("{} -> {}{kind}", o.selector.from.as_str(), o.selector.to.as_str()),
                observatory_core::settings::human_ms(o.window_ms),
                goal_text(&GoalJson::from(&o.goal)),
                o.fingerprint(),
            ]
        })
        .collect();
    let mut out = aligned(&header, &rows);
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let _ = writeln!(
        out,
        "{}: ok, {} objectives, fingerprint {}",
        names.join(", "),
        rows.len(),
        set.fingerprint()
    );
    Ok(out)
}

fn goal_text(goal: &GoalJson) -> String {
    let percent = |share: f64| format!("{}%", share * 100.0);
    match goal {
        GoalJson::Latency { threshold_ms, target } => {
            format!("{} within {threshold_ms} ms", percent(*target))
        }
        GoalJson::Errors { target } => format!("{} without error", percent(*target)),
        GoalJson::Flow { rate_at_least_per_s, for_ } => {
            format!("at least {} for {for_}", observatory_objectives::model::rate_text(*rate_at_least_per_s))
        }
    }
}

fn state_rank(state: &str) -> u8 {
    match state {
        "firing" => 0,
        "pending" => 1,
        "resolved" => 2,
        _ => 3,
    }
}

/// The answer of `/api/v1/objectives` as an aligned table, breached first (firing, then
/// pending, then the least budget left).
pub fn objectives_table(answer: &ObjectivesAnswer) -> String {
    let mut objectives: Vec<&ObjectiveJson> = answer.objectives.iter().collect();
    objectives.sort_by(|a, b| {
        state_rank(&a.state)
            .cmp(&state_rank(&b.state))
            .then(
                a.budget_remaining
                    .unwrap_or(f64::INFINITY)
                    .total_cmp(&b.budget_remaining.unwrap_or(f64::INFINITY)),
            )
            .then(a.name.cmp(&b.name))
    });
    let share = |value: Option<f64>| value.map_or("-".to_string(), |v| format!("{:.3}%", v * 100.0));
    let header =
        ["OBJECTIVE", "EDGES", "GOAL", "WINDOW", "SLI", "BUDGET LEFT", "BURN (PAGE)", "STATE", "SINCE"];
    let rows: Vec<[String; 9]> = objectives
        .iter()
        .map(|o| {
            let kind = if o.kind == "*" { String::new() } else { format!(" ({})", o.kind) };
            let sli = match (&o.goal, o.sli, o.sli_low, o.sli_high) {
                (GoalJson::Flow { .. }, ..) => {
                    o.flow_rate_per_s.map_or("-".into(), observatory_objectives::model::rate_text)
                }
                (_, Some(_), Some(low), Some(high)) if high - low > 5e-5 => {
                    format!("{} ({}..{})", share(o.sli), share(Some(low)), share(Some(high)))
                }
                _ => share(o.sli),
            };
            let burn = o
                .burn_rates
                .iter()
                .take(2)
                .map(|b| format!("{} {:.1}", b.window.replace(' ', ""), b.rate))
                .collect::<Vec<_>>()
                .join(", ");
            let mut state = o.state.clone();
            if o.coverage == "partial" {
                state.push_str(" (partial)");
            }
            [
                o.name.clone(),
                format!("{} -> {}{kind} [{}]", o.from, o.to, o.edges),
                goal_text(&o.goal),
                o.window.clone(),
                sli,
                o.budget_remaining.map_or("-".into(), |b| format!("{:.1}%", b * 100.0)),
                if burn.is_empty() { "-".into() } else { burn },
                state,
                o.since.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut out = String::new();
    let firing = answer.objectives.iter().filter(|o| o.state == "firing").count();
    let _ = writeln!(
        out,
        "{} objectives at {}, {firing} firing; fingerprint {}",
        answer.objectives.len(),
        answer.at.as_deref().unwrap_or("(not evaluated yet)"),
        if answer.fingerprint.is_empty() { "-" } else { &answer.fingerprint }
    );
    if let Some(error) = &answer.reload_error {
        let _ = writeln!(out, "the last reload was refused (the objectives before stay): {error}");
    }
    out.push_str(&aligned(&header, &rows));
    if rows.is_empty() {
        let _ = writeln!(out, "(no objectives; name files in objectives.files)");
    }
    let failed = answer.sending.get("batches_failed").copied().unwrap_or(0);
    let _ = writeln!(
        out,
        "alerts: {} owned by this peer, {} batches sent, {failed} failed, to {}",
        answer.sending.get("alerts_owned").copied().unwrap_or(0),
        answer.sending.get("batches_sent").copied().unwrap_or(0),
        if answer.alertmanagers.is_empty() {
            "no Alertmanager".to_string()
        } else {
            answer.alertmanagers.join(", ")
        }
    );
    out
}

/// Rows under a header, columns aligned.
fn aligned<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (i, (cell, width)) in cells.zip(widths).enumerate() {
            let _ = write!(out, "{}{cell:<width$}", if i == 0 { "" } else { "  " });
        }
        out.trim_end().to_string()
    };
    let mut out = String::new();
    let _ = writeln!(out, "{}", line(&mut header.iter().copied()));
    for row in rows {
        let _ = writeln!(out, "{}", line(&mut row.iter().map(String::as_str)));
    }
    out
}

/// How far behind one side is, as the table shows it.
fn lag(seqs: Option<u64>, cells: Option<u64>) -> String {
    match (seqs, cells) {
        (None, None) => "-".to_string(),
        (s, c) => format!(
            "{} seqs, {} cells",
            s.map_or("?".into(), |s| s.to_string()),
            c.map_or("?".into(), |c| c.to_string())
        ),
    }
}

/// The answer of `/api/v1/peers` as an aligned text table.
pub fn peers_table(answer: &PeersAnswer) -> String {
    let age = |ms: Option<i64>| match ms {
        None => "never".to_string(),
        Some(ms) => format!("{} ago", observatory_core::settings::human_ms(ms.max(0))),
    };
    let header = [
        "PEER",
        "CONNECTED",
        "SETTINGS",
        "OBJECTIVES",
        "LAST SYNC",
        "WE LACK",
        "IT LACKS",
        "REJECTED",
        "ADDRESS",
    ];
    let rows: Vec<[String; 9]> = answer
        .peers
        .iter()
        .map(|p| {
            let settings = match &p.settings {
                AgreementJson::Differs { theirs, .. } => format!("DIFFER ({theirs})"),
                AgreementJson::Agrees => "agrees".into(),
                AgreementJson::Unknown => "unknown".into(),
            };
            let objectives = match (&p.objectives, p.objectives_agree) {
                (None, _) => "unknown".to_string(),
                (Some(_), Some(true)) => "agree".to_string(),
                (Some(theirs), _) if theirs.is_empty() => "DIFFER (none)".to_string(),
                (Some(theirs), _) => format!("DIFFER ({theirs})"),
            };
            [
                p.peer.clone(),
                if p.connected { "yes".into() } else { "no".into() },
                settings,
                objectives,
                age(p.last_sync_age_ms),
                lag(p.we_lack_seqs, p.we_lack_cells),
                lag(p.it_lacks_seqs, p.it_lacks_cells),
                p.rejected.to_string(),
                p.addresses.first().cloned().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut out = String::new();
    let coverage = &answer.coverage;
    let _ = writeln!(
        out,
        "peer {}: {} known, {} connected, {} in sync; picture {}",
        answer.peer_id,
        match coverage.peers_known {
            1 => "1 other peer".to_string(),
            n => format!("{n} other peers"),
        },
        coverage.peers_connected,
        coverage.peers_in_sync,
        if coverage.complete { "complete" } else { "partial" }
    );
    out.push_str(&aligned(&header, &rows));
    if rows.is_empty() {
        let _ = writeln!(out, "(no peers known yet)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> GraphAnswer {
        let figures = serde_json::json!({
            "calls": 10, "errors": 0, "error_ratio": 0.0, "rate_per_s": 0.5, "bytes": 0, "latency_ms": null
        });
        let edge = |from: &str, to: &str, kind: &str, side: Option<&str>| {
            let mut edge = serde_json::json!({ "from": from, "to": to, "kind": kind });
            if let Some(side) = side {
                edge["virtual"] = side.into();
            }
            if kind == "database" {
                edge["calls_estimated"] = true.into();
                edge["calls_interval"] = serde_json::json!([4, 17]);
            }
            edge.as_object_mut().unwrap().extend(figures.as_object().unwrap().clone());
            edge
        };
        let node = |name: &str, virtual_node: bool| serde_json::json!({ "name": name, "calls_in": 10, "calls_out": 10, "virtual": virtual_node });
        serde_json::from_value(serde_json::json!({
            "window": { "length": "5m", "resolution": "10s", "from": "a", "end": "b", "to": "c" },
            "nodes": [node("checkout", false), node("orders-db", true), node("stripe", true), node("web", false)],
            "edges": [
                edge("web", "checkout", "request", None),
                edge("checkout", "stripe", "request", Some("server")),
                edge("checkout", "orders-db", "database", Some("server")),
            ],
            "coverage": { "origins": [] },
        }))
        .expect("a graph answer")
    }

    #[test]
    fn virtual_edges_and_nodes_are_marked_in_every_format() {
        let answer = answer();
        let table = table(&answer);
        assert!(table.contains("checkout -> stripe (virtual server) "), "{table}");
        assert!(table.contains("checkout -> orders-db (database, virtual server) "), "{table}");
        assert!(table.contains(" ~10 (4-17) "), "estimated calls say so: {table}");
        assert!(table.contains("web -> checkout "), "{table}");
        let dot = dot(&answer);
        assert!(dot.contains("\"stripe\" [style=\"rounded,dashed\"];"), "{dot}");
        assert!(dot.contains("  \"web\";"), "{dot}");
        let mermaid = mermaid(&answer);
        assert!(mermaid.contains("class n1,n2 virtual"), "{mermaid}");
    }
}
