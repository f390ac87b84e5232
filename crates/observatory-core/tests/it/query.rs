//! Graphs and series over events spread across several origins, against oracles computed
//! from the events themselves (and `hdrhistogram` for latencies).

use crdts::CvRDT;
use observatory_core::histogram::LATENCY_US_HIGHEST;
use observatory_core::{Edge, Event, Figures, FlowState, Origin, QueryError};
use proptest::prelude::*;

use crate::{NODES, NOW_MS, cases, default_limits, default_settings, edge, event, hdr, node};

const SECOND: i64 = 1_000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// Applies each event at one of `origins` origins (all at `NOW_MS`) and joins them all.
fn state_of(events: &[(usize, Event)], origins: usize) -> FlowState {
    let mut joined = FlowState::new(default_settings(), default_limits());
    joined.set_local(Origin::new("reader", 1));
    for o in 0..origins {
        let mut state = FlowState::new(default_settings(), default_limits());
        state.set_local(Origin::new(&format!("peer{o}"), 1));
        let mine: Vec<Event> = events.iter().filter(|(at, _)| *at == o).map(|(_, e)| e.clone()).collect();
        let outcome = state.apply_local(NOW_MS, &mine);
        assert_eq!(outcome.accepted, mine.len(), "{:?}", outcome.rejected);
        joined.validate_merge(&state).expect("honest states");
        joined.merge(state);
    }
    assert!(joined.global_view_recomputed_matches());
    joined
}

/// The figures of the events on `edge` within `[from_ms, to_ms)`, computed from scratch.
fn expected(
    events: &[(usize, Event)],
    edge: &Edge,
    from_ms: i64,
    to_ms: i64,
) -> (u64, u64, u64, hdrhistogram::Histogram<u64>) {
    let mut oracle = hdr();
    let (mut calls, mut errors, mut bytes) = (0, 0, 0);
    // A base edge sums its flows and marks; an edge with a flow is that flow only.
    let of_edge = |e: &Edge| e.same_base(edge) && (edge.flow.is_none() || e.flow == edge.flow);
    for (_, e) in events.iter().filter(|(_, e)| of_edge(&e.edge) && (from_ms..to_ms).contains(&e.ts_ms)) {
        calls += e.count;
        errors += if e.error { e.count } else { 0 };
        bytes += e.bytes;
        if let Some(latency) = e.latency_us {
            oracle.record_n(latency.min(LATENCY_US_HIGHEST), e.count).expect("within the bounds");
        }
    }
    (calls, errors, bytes, oracle)
}

fn check_figures(
    figures: &Figures,
    events: &[(usize, Event)],
    edge: &Edge,
    from_ms: i64,
    to_ms: i64,
    elapsed_ms: i64,
) -> Result<(), TestCaseError> {
    let (calls, errors, bytes, oracle) = expected(events, edge, from_ms, to_ms);
    prop_assert_eq!((figures.calls, figures.errors, figures.bytes), (calls, errors, bytes), "{:?}", edge);
    prop_assert_eq!(figures.rate_per_s, calls as f64 * 1000.0 / elapsed_ms as f64);
    match &figures.latency {
        None => prop_assert!(oracle.is_empty()),
        Some(latency) => {
            prop_assert_eq!(latency.samples, oracle.len());
            prop_assert_eq!(latency.p50_us, oracle.value_at_quantile(0.5));
            prop_assert_eq!(latency.p90_us, oracle.value_at_quantile(0.9));
            prop_assert_eq!(latency.p99_us, oracle.value_at_quantile(0.99));
            prop_assert_eq!(latency.max_us, oracle.max());
            prop_assert!((latency.mean_us - oracle.mean()).abs() <= 1e-6 * oracle.mean().max(1.0));
        }
    }
    Ok(())
}

fn events() -> impl Strategy<Value = (Vec<(usize, Event)>, usize)> {
    (1usize..4).prop_flat_map(|origins| {
        (proptest::collection::vec((0..origins, event(NODES.len(), 10 * MINUTE)), 0..60), Just(origins))
    })
}

/// Every edge that appears in the events, without flows and marks (as graphs show them).
fn edges_of(events: &[(usize, Event)]) -> Vec<Edge> {
    let mut edges: Vec<Edge> = events.iter().map(|(_, e)| e.edge.base()).collect();
    edges.sort();
    edges.dedup();
    edges
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// With an end on a bucket edge the window is read exactly, at the expected resolution.
    #[test]
    fn graph_sums_the_window_exactly((events, origins) in events()) {
        let state = state_of(&events, origins);
        for (window_ms, end_ms, resolution) in [
            (5 * MINUTE, NOW_MS + 10 * SECOND, "10s"),
            (HOUR, NOW_MS + 10 * SECOND, "10s"),
            (2 * HOUR, NOW_MS + MINUTE, "1m"),
            (7 * DAY, NOW_MS + HOUR, "1h"),
        ] {
            let graph = state.graph(window_ms, end_ms).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(graph.span.resolution.as_str(), resolution, "window {} ms", window_ms);
            prop_assert_eq!((graph.span.from_ms, graph.span.to_ms, graph.span.end_ms), (end_ms - window_ms, end_ms, end_ms));
            let in_window: Vec<Edge> = edges_of(&events)
                .into_iter()
                .filter(|edge| expected(&events, edge, end_ms - window_ms, end_ms).0 > 0)
                .collect();
            prop_assert_eq!(graph.edges.iter().map(|e| e.edge.base()).collect::<Vec<_>>(), in_window);
            for e in &graph.edges {
                check_figures(&e.figures, &events, &e.edge, end_ms - window_ms, end_ms, window_ms)?;
            }
        }
    }

    /// With any end, the span read is every bucket from the one holding `end - window` to
    /// the one holding `end - 1`, and the figures are those of the events in it.
    #[test]
    fn graph_reads_the_buckets_around_any_end(
        (events, origins) in events(),
        end_offset_ms in -5 * MINUTE..5 * MINUTE,
        window_ms in prop_oneof![1..=HOUR, HOUR + 1..=48 * HOUR, 48 * HOUR + 1..=35 * DAY],
    ) {
        let state = state_of(&events, origins);
        let end_ms = NOW_MS + end_offset_ms;
        let graph = state.graph(window_ms, end_ms).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let span = &graph.span;
        let width = if window_ms <= HOUR { 10 * SECOND } else if window_ms <= 48 * HOUR { MINUTE } else { HOUR };
        prop_assert_eq!(span.width_ms, width);
        prop_assert!(span.to_ms - width < end_ms && end_ms <= span.to_ms, "{:?}", span);
        prop_assert_eq!(span.from_ms, (end_ms - window_ms).div_euclid(width) * width, "from the bucket holding end - window");
        prop_assert_eq!(span.from_ms.rem_euclid(width), 0);
        let elapsed = span.to_ms.min(end_ms) - span.from_ms;
        let mut seen = 0;
        for edge in edges_of(&events) {
            match graph.edges.iter().find(|e| e.edge.base() == edge) {
                Some(e) => {
                    check_figures(&e.figures, &events, &edge, span.from_ms, span.to_ms, elapsed)?;
                    seen += 1;
                }
                None => prop_assert_eq!(expected(&events, &edge, span.from_ms, span.to_ms).0, 0),
            }
        }
        prop_assert_eq!(seen, graph.edges.len());
    }

    /// A series of one-minute steps over an hour adds up to the graph of that hour, and
    /// each step holds the events of its minute.
    #[test]
    fn series_steps_add_up_to_the_graph((events, origins) in events(), end_offset_ms in 0..5 * MINUTE) {
        let state = state_of(&events, origins);
        let end_ms = NOW_MS + end_offset_ms;
        let graph = state.graph(HOUR, end_ms).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for edge in edges_of(&events) {
            let series = state.series(&edge, HOUR, MINUTE, end_ms).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(series.step_ms, MINUTE);
            prop_assert_eq!(MINUTE % series.span.width_ms, 0);
            prop_assert_eq!(series.points.len(), 60);
            let last = series.points.last().expect("60 points").start_ms;
            prop_assert!(last < end_ms && end_ms <= last + MINUTE);
            let mut sums = (0, 0, 0);
            for (i, point) in series.points.iter().enumerate() {
                prop_assert_eq!(point.start_ms, series.points[0].start_ms + i as i64 * MINUTE);
                let elapsed = (point.start_ms + MINUTE).min(end_ms) - point.start_ms;
                check_figures(&point.figures, &events, &edge, point.start_ms, point.start_ms + MINUTE, elapsed.max(1))?;
                sums.0 += point.figures.calls;
                sums.1 += point.figures.errors;
                sums.2 += point.figures.bytes;
            }
            // All events lie within the last ten minutes, so both cover all of them.
            let in_graph = graph.edges.iter().find(|e| e.edge.base() == edge).expect("the edge has events");
            prop_assert_eq!(sums, (in_graph.figures.calls, in_graph.figures.errors, in_graph.figures.bytes));
            let (calls, _, _, _) = expected(&events, &edge, i64::MIN, i64::MAX);
            prop_assert_eq!(sums.0, calls);
        }
    }
}

#[test]
fn windows_beyond_every_retention_are_refused() {
    let state = state_of(&[], 1);
    assert_eq!(
        state.graph(60 * DAY, NOW_MS),
        Err(QueryError::WindowTooLong { window_ms: 60 * DAY, retention_ms: 35 * DAY })
    );
    assert_eq!(state.graph(0, NOW_MS), Err(QueryError::WindowNotPositive));
    assert_eq!(state.graph(35 * DAY, NOW_MS).map(|g| g.span.resolution), Ok("1h".to_string()));
    assert!(matches!(
        state.series(&edge("checkout", "payments"), HOUR, 15 * SECOND, NOW_MS),
        Err(QueryError::StepUnfit { step_ms: 15_000, .. })
    ));
    assert!(matches!(
        state.series(&edge("checkout", "payments"), HOUR, 0, NOW_MS),
        Err(QueryError::StepUnfit { .. })
    ));
}

#[test]
fn a_series_of_an_unknown_edge_is_all_zero() {
    let event = Event {
        edge: edge("checkout", "payments"),
        ts_ms: NOW_MS - 1,
        latency_us: Some(1_000),
        error: false,
        bytes: 1,
        count: 1,
    };
    let state = state_of(&[(0, event)], 1);
    let series =
        state.series(&Edge::new(node("payments"), node("checkout")), HOUR, MINUTE, NOW_MS).expect("fits");
    assert_eq!(series.points.len(), 60);
    assert!(series.points.iter().all(|p| p.figures.calls == 0 && p.figures.latency.is_none()));
    let known = state.series(&edge("checkout", "payments"), HOUR, MINUTE, NOW_MS).expect("fits");
    assert_eq!(known.points.iter().filter(|p| p.figures.calls > 0).count(), 1);
    assert_eq!(known.points.last().map(|p| p.figures.calls), Some(1));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// The graph of one flow holds exactly that flow's events, and the graphs of every
    /// flow plus the events without one add up to the whole graph.
    #[test]
    fn graphs_per_flow_add_up_to_the_graph((events, origins) in events()) {
        let state = state_of(&events, origins);
        let (window_ms, end_ms) = (HOUR, NOW_MS + 10 * SECOND);
        let whole = state.graph(window_ms, end_ms).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut summed: std::collections::BTreeMap<Edge, u64> = std::collections::BTreeMap::new();
        for flow in crate::FLOWS {
            let flow = node(flow);
            let graph = state
                .graph_labelled_as_of(window_ms, end_ms, end_ms, Some(&flow), false)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            for e in &graph.edges {
                prop_assert!(e.edge.flow.is_none(), "answers name base edges");
                let in_flow = e.edge.clone().labelled(Some(flow.clone()), Default::default());
                check_figures(&e.figures, &events, &in_flow, end_ms - window_ms, end_ms, window_ms)?;
                *summed.entry(e.edge.base()).or_default() += e.figures.calls;
            }
        }
        for (_, event) in events.iter().filter(|(_, e)| e.edge.flow.is_none()) {
            *summed.entry(event.edge.base()).or_default() += event.count;
        }
        let whole: std::collections::BTreeMap<Edge, u64> =
            whole.edges.iter().map(|e| (e.edge.base(), e.figures.calls)).collect();
        prop_assert_eq!(summed, whole);
    }

    /// Asked by label, every flow and mark of an edge is an edge of its own, with exactly
    /// its events.
    #[test]
    fn graph_by_label_keeps_flows_and_marks_apart((events, origins) in events()) {
        let state = state_of(&events, origins);
        let (window_ms, end_ms) = (HOUR, NOW_MS + 10 * SECOND);
        let graph = state
            .graph_labelled_as_of(window_ms, end_ms, end_ms, None, true)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut labelled: Vec<Edge> = events.iter().map(|(_, e)| e.edge.clone()).collect();
        labelled.sort();
        labelled.dedup();
        prop_assert_eq!(graph.edges.iter().map(|e| e.edge.clone()).collect::<Vec<_>>(), labelled);
        for e in &graph.edges {
            let calls: u64 = events.iter().filter(|(_, ev)| ev.edge == e.edge).map(|(_, ev)| ev.count).sum();
            prop_assert_eq!(e.figures.calls, calls);
        }
    }
}

#[test]
fn flows_beyond_the_limit_are_counted_in_the_flow_other() {
    let limits = observatory_core::Limits { flows_max: 2, ..default_limits() };
    let mut state = FlowState::new(default_settings(), limits);
    state.set_local(Origin::new("p", 1));
    let in_flow = |flow: &str| Event {
        edge: edge("web", "catalog").labelled(Some(node(flow)), Default::default()),
        ts_ms: NOW_MS,
        latency_us: Some(1_000),
        error: false,
        bytes: 0,
        count: 1,
    };
    let batch: Vec<Event> = ["a", "b", "c", "a", "d"].iter().map(|f| in_flow(f)).collect();
    let outcome = state.apply_local(NOW_MS, &batch);
    assert_eq!((outcome.accepted, outcome.flows_folded), (5, 2), "{:?}", outcome.rejected);
    let flows: Vec<(String, usize)> = state.flows().into_iter().map(|(f, n)| (f.to_string(), n)).collect();
    assert_eq!(flows, [("a".into(), 1), ("b".into(), 1), ("other".into(), 1)]);
    let other = state
        .graph_labelled_as_of(5 * MINUTE, NOW_MS + SECOND, NOW_MS, Some(&node("other")), false)
        .expect("a graph");
    assert_eq!(other.edges[0].figures.calls, 2, "c and d");
    // A later batch in a known flow is not folded; a new one still is.
    let outcome = state.apply_local(NOW_MS, &[in_flow("b"), in_flow("e")]);
    assert_eq!(outcome.flows_folded, 1);
    assert_eq!(state.graph(5 * MINUTE, NOW_MS + SECOND).expect("a graph").edges[0].figures.calls, 7);
}

#[test]
fn propagation_flags_the_node_that_loses_context_and_no_other() {
    use observatory_core::{ContextMark, Verdict};
    let mut state = FlowState::new(default_settings(), default_limits());
    state.set_local(Origin::new("p", 1));
    let calls = |from: &str, to: &str, mark: ContextMark, n: u64| Event {
        edge: edge(from, to).labelled(None, mark),
        ts_ms: NOW_MS,
        latency_us: Some(1_000),
        error: false,
        bytes: 0,
        count: n,
    };
    use ContextMark::*;
    let events = [
        // users is an entry node: it starts every trace and nobody calls it.
        calls("users", "web", Continued, 100),
        calls("web", "cart", Continued, 100),
        // cart loses the context on 30% of its calls to catalog.
        calls("cart", "catalog", Continued, 70),
        calls("cart", "catalog", Started, 30),
        // shipping polls the queue on its own: every poll starts a trace, which is no fault.
        calls("web", "shipping", Continued, 50),
        calls("shipping", "queue", Started, 200),
        // payments is reached without context by 10 of 110 calls, though web calls it.
        calls("web", "payments", Continued, 100),
        calls("user", "payments", Missing, 10),
        // legacy has only unmarked calls (spans, plain events).
        calls("web", "legacy", Unknown, 500),
    ];
    assert_eq!(state.apply_local(NOW_MS, &events).accepted, events.len());
    let (_, nodes) =
        state.propagation_as_of(5 * MINUTE, NOW_MS + SECOND, NOW_MS, &node("user")).expect("verdicts");
    let verdicts: Vec<(&str, Verdict)> = nodes.iter().map(|n| (n.node.as_str(), n.verdict)).collect();
    assert_eq!(
        verdicts,
        [
            ("cart", Verdict::DropsOutbound),
            ("catalog", Verdict::Ok),
            ("legacy", Verdict::Unknown),
            ("payments", Verdict::DropsInbound),
            ("queue", Verdict::Ok),
            ("shipping", Verdict::Ok),
            ("users", Verdict::Ok),
            ("web", Verdict::Ok),
        ],
        "users, a front end, is judged by its outbound calls; the entry node user not at all"
    );
    let cart = &nodes[0];
    assert_eq!((cart.outbound.continued, cart.outbound.started), (70, 30));
    assert!(cart.evidence[0].contains("cart -> catalog: 30 of 100 calls (30%)"), "{:?}", cart.evidence);
    let payments = nodes.iter().find(|n| n.node.as_str() == "payments").unwrap();
    assert_eq!((payments.inbound.missing, payments.inbound.continued), (10, 100));
}

#[test]
fn a_few_calls_are_not_enough_to_flag_a_node() {
    use observatory_core::{ContextMark, Verdict};
    let mut state = FlowState::new(default_settings(), default_limits());
    state.set_local(Origin::new("p", 1));
    let calls = |from: &str, to: &str, mark: ContextMark, n: u64| Event {
        edge: edge(from, to).labelled(None, mark),
        ts_ms: NOW_MS,
        latency_us: None,
        error: false,
        bytes: 0,
        count: n,
    };
    let events = [
        calls("web", "cart", ContextMark::Continued, 30),
        calls("cart", "catalog", ContextMark::Continued, 10),
        calls("cart", "catalog", ContextMark::Started, 5),
    ];
    state.apply_local(NOW_MS, &events);
    let (_, nodes) =
        state.propagation_as_of(5 * MINUTE, NOW_MS + SECOND, NOW_MS, &node("user")).expect("verdicts");
    let cart = nodes.iter().find(|n| n.node.as_str() == "cart").unwrap();
    assert_eq!(cart.verdict, Verdict::Ok, "15 calls on the edge are fewer than the 20 needed: {cart:?}");
}

#[test]
fn a_front_end_that_loses_context_is_flagged_though_outside_calls_come_without() {
    use observatory_core::{ContextMark, Verdict};
    let mut state = FlowState::new(default_settings(), default_limits());
    state.set_local(Origin::new("p", 1));
    let calls = |from: &str, to: &str, mark: ContextMark, n: u64| Event {
        edge: edge(from, to).labelled(None, mark),
        ts_ms: NOW_MS,
        latency_us: None,
        error: false,
        bytes: 0,
        count: n,
    };
    // Browsers reach web without context (reported by web, from the entry node).
    let events = [
        calls("user", "web", ContextMark::Missing, 100),
        calls("web", "catalog", ContextMark::Continued, 60),
        calls("web", "catalog", ContextMark::Started, 40),
    ];
    state.apply_local(NOW_MS, &events);
    let (_, nodes) =
        state.propagation_as_of(5 * MINUTE, NOW_MS + SECOND, NOW_MS, &node("user")).expect("verdicts");
    let verdicts: Vec<(&str, Verdict)> = nodes.iter().map(|n| (n.node.as_str(), n.verdict)).collect();
    assert_eq!(verdicts, [("catalog", Verdict::Ok), ("web", Verdict::DropsOutbound)], "{nodes:?}");
}

#[test]
fn an_edge_is_virtual_when_every_call_of_the_window_was_counted_from_one_half() {
    use observatory_core::VirtualSide;
    let mut state = FlowState::new(default_settings(), default_limits());
    state.set_local(Origin::new("p", 1));
    let calls = |from: &str, to: &str, side: Option<VirtualSide>, ago_ms: i64, n: u64| Event {
        edge: Edge { virtual_node: side, ..edge(from, to) },
        ts_ms: NOW_MS - ago_ms,
        latency_us: Some(1_000),
        error: false,
        bytes: 0,
        count: n,
    };
    let events = [
        // Only ever named by checkout's client spans.
        calls("checkout", "stripe", Some(VirtualSide::Server), 0, 5),
        calls("user", "web", Some(VirtualSide::Client), 0, 9),
        // payments answers, but some of its server halves were lost.
        calls("checkout", "payments", None, 0, 40),
        calls("checkout", "payments", Some(VirtualSide::Server), 0, 2),
        // cart lost its halves only long before the window.
        calls("web", "cart", None, 0, 7),
        calls("web", "cart", Some(VirtualSide::Server), 10 * MINUTE, 3),
    ];
    assert_eq!(state.apply_local(NOW_MS, &events).accepted, events.len());
    let view = state.graph(5 * MINUTE, NOW_MS + SECOND).expect("a graph");
    let mut got: Vec<(String, Option<VirtualSide>, u64)> = view
        .edges
        .iter()
        .map(|e| (format!("{:?}", e.edge.base()), e.edge.virtual_node, e.figures.calls))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("checkout -> payments".to_string(), None, 42),
            ("checkout -> stripe".to_string(), Some(VirtualSide::Server), 5),
            ("user -> web".to_string(), Some(VirtualSide::Client), 9),
            ("web -> cart".to_string(), None, 7),
        ]
    );
    // Over an hour cart's virtual calls are in the window, and still not all of them.
    let view = state.graph(60 * MINUTE, NOW_MS + SECOND).expect("a graph");
    let cart = view.edges.iter().find(|e| e.edge.to.as_str() == "cart").expect("cart");
    assert_eq!((cart.edge.virtual_node, cart.figures.calls), (None, 10));
}
