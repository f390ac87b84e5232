//! The client subcommands: `send`, `graph`, `status`, `peers`. They talk to a peer
//! through the API's client and print its answers.

use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;

use anyhow::Context;
use observatory_api::client::Client;
use observatory_api::wire::{AgreementJson, EdgeJson, GraphAnswer, IngestAnswer, PeersAnswer};

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
}

/// Fetches the graph of a window and prints it.
pub async fn graph(peer: &str, window: &str, at: Option<&str>, format: GraphFormat) -> anyhow::Result<()> {
    let fetched = Client::new(peer)?.graph(window, at).await?;
    let answer = &fetched.answer;
    match format {
        GraphFormat::Json => println!("{}", serde_json::to_string_pretty(&fetched.raw)?),
        GraphFormat::Table => print!("{}", table(answer)),
        GraphFormat::Dot => print!("{}", dot(answer)),
        GraphFormat::Mermaid => print!("{}", mermaid(answer)),
    }
    Ok(())
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
                f.calls.to_string(),
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
    let _ = writeln!(
        out,
        "window {} ending {} (resolution {}), {} edges, {} nodes, {} origin{}{mesh}",
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

/// `from -> to`, with the kind when it is not a plain request.
fn edge_text(edge: &EdgeJson) -> String {
    match edge.kind.as_str() {
        "request" => format!("{} -> {}", edge.from, edge.to),
        kind => format!("{} -> {} ({kind})", edge.from, edge.to),
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
        let _ = writeln!(out, "  {};", dot_id(&node.name));
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
    let header = ["PEER", "CONNECTED", "SETTINGS", "LAST SYNC", "WE LACK", "IT LACKS", "REJECTED", "ADDRESS"];
    let rows: Vec<[String; 8]> = answer
        .peers
        .iter()
        .map(|p| {
            let settings = match &p.settings {
                AgreementJson::Differs { theirs, .. } => format!("DIFFER ({theirs})"),
                AgreementJson::Agrees => "agrees".into(),
                AgreementJson::Unknown => "unknown".into(),
            };
            [
                p.peer.clone(),
                if p.connected { "yes".into() } else { "no".into() },
                settings,
                age(p.last_sync_age_ms),
                lag(p.we_lack_seqs, p.we_lack_cells),
                lag(p.it_lacks_seqs, p.it_lacks_cells),
                p.rejected.to_string(),
                p.addresses.first().cloned().unwrap_or_else(|| "-".into()),
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
        let mut out = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            let _ = write!(out, "{}{cell:<width$}", if i == 0 { "" } else { "  " });
        }
        out.trim_end().to_string()
    };
    let mut out = String::new();
    let coverage = &answer.coverage;
    let _ = writeln!(
        out,
        "peer {}: {} peers known, {} connected, {} in sync; picture {}",
        answer.peer_id,
        coverage.peers_known,
        coverage.peers_connected,
        coverage.peers_in_sync,
        if coverage.complete { "complete" } else { "partial" }
    );
    let _ = writeln!(out, "{}", line(&header.map(str::to_string)));
    for row in &rows {
        let _ = writeln!(out, "{}", line(row));
    }
    if rows.is_empty() {
        let _ = writeln!(out, "(no peers known yet)");
    }
    out
}
