//! A drawing as a standalone SVG document: what `observatory graph --format svg` prints
//! and what the page shows when JavaScript is off. The colours and fonts are the page's
//! (see [`palette`](crate::palette)).

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::{Direction, EdgeKey, Layout, Shape, palette};

/// How healthy a node or an edge is, which gives its colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Health {
    /// Meets its objectives (or its error ratio and p99 are under the warning thresholds).
    Good,
    /// Pending, or over a warning threshold.
    Warn,
    /// Firing, or over a bad threshold.
    Bad,
    /// No traffic to judge by.
    #[default]
    Idle,
}

impl Health {
    /// The colour it is drawn in.
    pub fn colour(self) -> &'static str {
        match self {
            Health::Good => palette::GOOD,
            Health::Warn => palette::WARN,
            Health::Bad => palette::BAD,
            Health::Idle => palette::IDLE,
        }
    }

    fn id(self) -> &'static str {
        match self {
            Health::Good => "good",
            Health::Warn => "warn",
            Health::Bad => "bad",
            Health::Idle => "idle",
        }
    }
}

/// What is written on a node.
#[derive(Debug, Clone, Default)]
pub struct NodeDecor {
    /// Its colour.
    pub health: Health,
    /// A second line under the name (e.g. calls received per second).
    pub note: String,
    /// A virtual node (named by its neighbours' spans, reporting nothing itself): drawn
    /// with a dashed outline.
    pub dashed: bool,
}

/// How an edge is drawn.
#[derive(Debug, Clone, Default)]
pub struct EdgeDecor {
    /// Its colour.
    pub health: Health,
    /// Stroke width in pixels.
    pub width: f64,
    /// Text at its middle (e.g. rate and p99).
    pub label: String,
}

/// Everything the drawing itself does not say.
#[derive(Debug, Clone, Default)]
pub struct Decor {
    /// A line at the top (window, coverage).
    pub title: String,
    /// By node name; a node not here is drawn idle without a note.
    pub nodes: BTreeMap<String, NodeDecor>,
    /// By edge; an edge not here is drawn idle, 1.5 px wide, without a label.
    pub edges: BTreeMap<EdgeKey, EdgeDecor>,
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            // Not characters XML allows; node names may hold them.
            '\u{FFFE}' | '\u{FFFF}' => out.push('\u{FFFD}'),
            c if c.is_control() && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{FFFD}'),
            _ => out.push(c),
        }
    }
    out
}

/// `text` cut to `chars` characters, with an ellipsis when cut.
fn fit(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(chars.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// The SVG path of an edge's route: horizontal tangents at every point, so that routes
/// leave and enter nodes sideways and bend smoothly through their bend points.
pub fn route_path(direction: Direction, points: &[[f64; 2]], bulge: f64) -> String {
    let mut d = String::new();
    let Some(first) = points.first() else { return d };
    let _ = write!(d, "M{:.1},{:.1}", first[0], first[1]);
    if points.len() < 2 {
        return d;
    }
    match direction {
        Direction::Loop => {
            let last = points[points.len() - 1];
            let _ = write!(
                d,
                " C{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}",
                first[0] + 36.0,
                first[1] - 22.0,
                last[0] + 36.0,
                last[1] + 22.0,
                last[0],
                last[1]
            );
        }
        Direction::Flat => {
            let last = points[points.len() - 1];
            let _ = write!(
                d,
                " C{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}",
                first[0] + bulge,
                first[1],
                last[0] + bulge,
                last[1],
                last[0],
                last[1]
            );
        }
        Direction::Forward | Direction::Backward => {
            for pair in points.windows(2) {
                let (a, b) = (pair[0], pair[1]);
                let half = (b[0] - a[0]) / 2.0;
                let _ = write!(
                    d,
                    " C{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}",
                    a[0] + half,
                    a[1],
                    b[0] - half,
                    b[1],
                    b[0],
                    b[1]
                );
            }
        }
    }
    d
}

/// Where an edge's label goes: the middle of its route.
fn middle(points: &[[f64; 2]]) -> [f64; 2] {
    let n = points.len();
    if n == 0 {
        return [0.0, 0.0];
    }
    if n % 2 == 1 {
        points[n / 2]
    } else {
        let (a, b) = (points[n / 2 - 1], points[n / 2]);
        [(a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0]
    }
}

fn label_at(edge: &crate::RoutedEdge, bulge: f64) -> [f64; 2] {
    match edge.direction {
        Direction::Flat => {
            let m = middle(&edge.points);
            [m[0] + bulge * 0.75, m[1]]
        }
        Direction::Loop if edge.points.len() >= 2 => [edge.points[1][0] + 8.0, edge.points[1][1]],
        _ => middle(&edge.points),
    }
}

/// The drawing as an SVG document.
pub fn svg(layout: &Layout, decor: &Decor) -> String {
    let b = layout.bounds;
    let title_height = if decor.title.is_empty() { 0.0 } else { 28.0 };
    let (width, height) = (b.max_x - b.min_x, b.max_y - b.min_y + title_height);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="{:.1} {:.1} {width:.1} {height:.1}" font-family="{}" font-size="13">"#,
        b.min_x,
        b.min_y - title_height,
        palette::FONT
    );
    let _ = writeln!(
        out,
        r#"<rect x="{:.1}" y="{:.1}" width="{width:.1}" height="{height:.1}" fill="{}"/>"#,
        b.min_x,
        b.min_y - title_height,
        palette::PAPER
    );
    out.push_str("<defs>");
    for health in [Health::Good, Health::Warn, Health::Bad, Health::Idle] {
        let _ = write!(
            out,
            r#"<marker id="arrow-{}" viewBox="0 0 10 10" refX="9" refY="5" markerUnits="userSpaceOnUse" markerWidth="11" markerHeight="11" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{}"/></marker>"#,
            health.id(),
            health.colour()
        );
    }
    out.push_str("</defs>\n");
    if !decor.title.is_empty() {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" font-size="14" fill="{}">{}</text>"#,
            b.min_x + 12.0,
            b.min_y - title_height + 20.0,
            palette::INK,
            escape(&decor.title)
        );
    }
    let bulge = 80.0;
    let mut labels = String::new();
    // Labels that would overlap one already placed are left out (edges come busiest first
    // when the decor gives widths); titles still name every edge.
    let mut placed: Vec<[f64; 4]> = Vec::new();
    let looks: Vec<Option<&EdgeDecor>> = layout
        .edges
        .iter()
        .map(|e| decor.edges.get(&EdgeKey::new(e.from.clone(), e.to.clone(), e.kind.clone())))
        .collect();
    let mut order: Vec<usize> = (0..layout.edges.len()).collect();
    let width_of = |i: usize| looks[i].map_or(0.0, |d| d.width);
    order.sort_by(|&a, &b| width_of(b).total_cmp(&width_of(a)).then(a.cmp(&b)));
    let mut shown = vec![false; layout.edges.len()];
    // Edges between the same two nodes (several kinds, or both ways) share a route: side
    // by side, a few pixels apart.
    fn pair(e: &crate::RoutedEdge) -> (&String, &String) {
        if e.from <= e.to { (&e.from, &e.to) } else { (&e.to, &e.from) }
    }
    let mut twins: BTreeMap<(&String, &String), usize> = BTreeMap::new();
    for e in &layout.edges {
        *twins.entry(pair(e)).or_default() += 1;
    }
    let mut seen: BTreeMap<(&String, &String), usize> = BTreeMap::new();
    let shifts: Vec<String> = layout
        .edges
        .iter()
        .map(|e| {
            let count = twins[&pair(e)];
            let index = seen.entry(pair(e)).or_default();
            let shift = (*index as f64 - (count as f64 - 1.0) / 2.0) * 6.0;
            *index += 1;
            if count > 1 { format!(r#" transform="translate(0,{shift:.1})""#) } else { String::new() }
        })
        .collect();
    for &i in &order {
        // At most 400 labels: beyond, a label helps less than it costs.
        if placed.len() >= 400 {
            break;
        }
        let edge = &layout.edges[i];
        let Some(look) = looks[i].filter(|d| !d.label.is_empty()) else { continue };
        let [x, y] = label_at(edge, bulge);
        let half = look.label.chars().count() as f64 * 2.9;
        let b = [x - half, y - 16.0, x + half, y - 2.0];
        if placed.iter().all(|p| b[2] < p[0] || b[0] > p[2] || b[3] < p[1] || b[1] > p[3]) {
            placed.push(b);
            shown[i] = true;
        }
    }
    for (i, edge) in layout.edges.iter().enumerate() {
        let key = EdgeKey::new(edge.from.clone(), edge.to.clone(), edge.kind.clone());
        let look = decor.edges.get(&key).cloned().unwrap_or(EdgeDecor { width: 1.5, ..EdgeDecor::default() });
        let dash = match edge.kind.as_str() {
            "messaging" => r#" stroke-dasharray="9 5""#,
            "database" => r#" stroke-dasharray="2 4""#,
            _ => "",
        };
        let _ = writeln!(
            out,
            r#"<path class="edge {}" d="{}"{} fill="none" stroke="{}" stroke-width="{:.1}"{dash} marker-end="url(#arrow-{})"><title>{} → {} ({})</title></path>"#,
            escape(&edge.kind),
            shifts[i],
            route_path(edge.direction, &edge.points, bulge),
            look.health.colour(),
            look.width.max(0.5),
            look.health.id(),
            escape(&edge.from),
            escape(&edge.to),
            escape(&edge.kind)
        );
        if shown[i] {
            let [x, y] = label_at(edge, bulge);
            let _ = writeln!(
                labels,
                r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle" font-size="11" fill="{}" stroke="{}" stroke-width="3" paint-order="stroke">{}</text>"#,
                y - 5.0,
                palette::MUTED,
                palette::PAPER,
                escape(&look.label)
            );
        }
    }
    out.push_str(&labels);
    let (w, h) = (layout.node_width, layout.node_height);
    for node in &layout.nodes {
        let look = decor.nodes.get(&node.name).cloned().unwrap_or_default();
        let (x0, y0) = (node.x - w / 2.0, node.y - h / 2.0);
        let (class, title_note, dash) =
            if look.dashed { (" virtual", " (virtual)", r#" stroke-dasharray="5 3""#) } else { ("", "", "") };
        let _ = write!(out, r#"<g class="node{class}"><title>{}{title_note}</title>"#, escape(&node.name));
        match node.shape {
            Shape::Service => {
                let _ = write!(
                    out,
                    r#"<rect x="{x0:.1}" y="{y0:.1}" width="{w:.1}" height="{h:.1}" rx="8" fill="{}" stroke="{}" stroke-width="2"{dash}/>"#,
                    palette::PAPER,
                    look.health.colour()
                );
            }
            Shape::Database => {
                let e = 6.0;
                let _ = write!(
                    out,
                    r#"<path d="M{x0:.1},{:.1} a{:.1},{e} 0 0,1 {w:.1},0 v{:.1} a{:.1},{e} 0 0,1 -{w:.1},0 z M{x0:.1},{:.1} a{:.1},{e} 0 0,0 {w:.1},0" fill="{}" stroke="{}" stroke-width="2"{dash}/>"#,
                    y0 + e,
                    w / 2.0,
                    h - 2.0 * e,
                    w / 2.0,
                    y0 + e,
                    w / 2.0,
                    palette::PAPER,
                    look.health.colour()
                );
            }
        }
        let (name_y, note_y) =
            if look.note.is_empty() { (node.y + 4.5, 0.0) } else { (node.y - 2.0, node.y + 12.0) };
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{name_y:.1}" text-anchor="middle" fill="{}">{}</text>"#,
            node.x,
            palette::INK,
            escape(&fit(&node.name, 22))
        );
        if !look.note.is_empty() {
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{note_y:.1}" text-anchor="middle" font-size="11" fill="{}">{}</text>"#,
                node.x,
                palette::MUTED,
                escape(&look.note)
            );
        }
        out.push_str("</g>\n");
    }
    out.push_str("</svg>\n");
    out
}
