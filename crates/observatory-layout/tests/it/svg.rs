//! The SVG document: every node and edge drawn, names escaped, colours by health.

use std::collections::BTreeSet;

use observatory_layout::{Decor, EdgeDecor, EdgeKey, Health, LayoutConfig, NodeDecor, layout, palette, svg};

#[test]
fn every_node_and_edge_is_drawn_with_its_look() {
    let edges: BTreeSet<EdgeKey> = [
        EdgeKey::new("web", "checkout", "request"),
        EdgeKey::new("checkout", "orders<db>", "database"),
        EdgeKey::new("checkout", "queue", "messaging"),
        EdgeKey::new("queue", "checkout", "messaging"),
    ]
    .into();
    let drawing = layout(&edges, None, &LayoutConfig::default());
    let mut decor = Decor { title: "graph of the last 5m".into(), ..Decor::default() };
    decor
        .nodes
        .insert("checkout".into(), NodeDecor { health: Health::Bad, note: "12/s".into(), dashed: false });
    decor.edges.insert(
        EdgeKey::new("web", "checkout", "request"),
        EdgeDecor { health: Health::Warn, width: 4.0, label: "12/s · p99 310 ms".into() },
    );
    let text = svg(&drawing, &decor);
    assert!(text.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(text.trim_end().ends_with("</svg>"));
    assert_eq!(text.matches("<g class=\"node\">").count(), 4);
    assert_eq!(text.matches("<path class=\"edge").count(), 4);
    assert_eq!(
        text.matches(" transform=\"translate(0,").count(),
        2,
        "the two ways between checkout and queue side by side"
    );
    assert!(text.contains("orders&lt;db&gt;") && !text.contains("orders<db>"), "names are escaped");
    assert!(text.contains("graph of the last 5m") && text.contains("12/s · p99 310 ms"));
    assert!(
        text.contains(&format!("stroke=\"{}\" stroke-width=\"4.0\"", palette::WARN)),
        "edge colour and width"
    );
    assert!(text.contains(&format!("stroke=\"{}\" stroke-width=\"2\"", palette::BAD)), "node colour");
    assert!(text.contains("stroke-dasharray=\"9 5\""), "messaging is dashed");
    assert!(text.contains("stroke-dasharray=\"2 4\""), "database calls are dotted");
}
