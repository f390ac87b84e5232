//! Is context propagated correctly? Verdicts per node from the propagation marks of the
//! edges' calls (see [`ContextMark`]), over a window of the global view.
//!
//! Instrumentation that knows reports, with every call, whether the caller sent on the
//! context of the request it was serving (`continued`) or started a new trace
//! (`started`), and a callee reports the calls that reached it without any context as
//! edges from the entry node (`missing`). From those:
//!
//! - **drops context outbound**: on one of the node's outbound edges, of at least
//!   [`CALLS_MIN`] marked calls, some continue the context and at least [`SHARE_MIN`] of
//!   them start new traces. A service that
//!   loses its context on some code paths (work moved to a task that does not carry it)
//!   shows this way. An edge whose calls *all* start traces is a background job (a
//!   poller, a cron), not a fault: it is told apart only by the mix.
//! - **drops context inbound**: the node is called by other nodes, and at least
//!   [`SHARE_MIN`] of the (at least [`CALLS_MIN`]) calls reaching it came without context (a caller or a proxy in
//!   between does not propagate it, or the node does not read it).
//! - **unknown**: fewer than [`CALLS_MIN`] calls of the node carry a mark (spans and plain
//!   events carry none).
//! - **ok** otherwise.
//!
//! The entry node is not judged, and front ends (nodes called by nobody but the entry
//! node: outside traffic comes without context by nature) only by their outbound calls.

use std::collections::BTreeMap;

use crate::model::{ContextMark, NodeName};
use crate::query::{QueryError, Span};
use crate::state::FlowState;

/// The share of calls without context from which a node is flagged (5%).
pub const SHARE_MIN: f64 = 0.05;

/// Fewer marked calls than this (in the window) give no verdict.
pub const CALLS_MIN: u64 = 20;

/// What a node's evidence says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Propagation looks right.
    Ok,
    /// Calls reach the node without context.
    DropsInbound,
    /// The node loses the context on some of its outbound calls.
    DropsOutbound,
    /// Too little evidence.
    Unknown,
}

impl Verdict {
    /// `ok`, `drops context inbound`, `drops context outbound` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::DropsInbound => "drops context inbound",
            Verdict::DropsOutbound => "drops context outbound",
            Verdict::Unknown => "unknown",
        }
    }
}

/// Calls by mark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MarkCounts {
    /// Calls that continued the caller's context.
    pub continued: u64,
    /// Calls whose caller started a new trace.
    pub started: u64,
    /// Calls that reached the callee without context.
    pub missing: u64,
    /// Calls without a mark.
    pub unknown: u64,
}

impl MarkCounts {
    fn add(&mut self, mark: ContextMark, calls: u64) {
        match mark {
            ContextMark::Continued => self.continued += calls,
            ContextMark::Started => self.started += calls,
            ContextMark::Missing => self.missing += calls,
            ContextMark::Unknown => self.unknown += calls,
        }
    }

    /// Calls with a mark.
    pub fn marked(&self) -> u64 {
        self.continued + self.started + self.missing
    }
}

/// One node's evidence and verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct NodePropagation {
    /// The node.
    pub node: NodeName,
    /// The verdict.
    pub verdict: Verdict,
    /// Calls reaching the node, by mark (`missing`: without context, from the entry node).
    pub inbound: MarkCounts,
    /// Calls the node made, by mark.
    pub outbound: MarkCounts,
    /// Sentences saying what the verdict rests on.
    pub evidence: Vec<String>,
}

impl FlowState {
    /// The propagation verdict of every node but the entry nodes, over the window
    /// `[end_ms - window_ms, end_ms)` asked at `now_ms` (see [`FlowState::graph_as_of`]),
    /// with `entry_node` the name edges from outside the system start at.
    pub fn propagation_as_of(
        &self,
        window_ms: i64,
        end_ms: i64,
        now_ms: i64,
        entry_node: &NodeName,
    ) -> Result<(Span, Vec<NodePropagation>), QueryError> {
        let view = self.graph_labelled_as_of(window_ms, end_ms, now_ms, None, true)?;
        // (from, to) -> calls by mark, over kinds and flows.
        let mut by_pair: BTreeMap<(&NodeName, &NodeName), MarkCounts> = BTreeMap::new();
        for e in &view.edges {
            by_pair.entry((&e.edge.from, &e.edge.to)).or_default().add(e.edge.context, e.figures.calls);
        }
        let mut nodes: BTreeMap<&NodeName, (MarkCounts, MarkCounts, u64, Vec<String>)> = BTreeMap::new();
        for (&(from, to), counts) in &by_pair {
            let callee = nodes.entry(to).or_default();
            callee.0.continued += counts.continued;
            callee.0.started += counts.started;
            callee.0.missing += counts.missing;
            callee.0.unknown += counts.unknown;
            if from != entry_node {
                callee.2 += counts.continued + counts.started + counts.missing + counts.unknown;
            }
            let caller = nodes.entry(from).or_default();
            caller.1.continued += counts.continued;
            caller.1.started += counts.started;
            caller.1.unknown += counts.unknown;
            let sent = counts.continued + counts.started;
            if counts.continued > 0 && sent >= CALLS_MIN && counts.started as f64 >= SHARE_MIN * sent as f64 {
                caller.3.push(format!(
                    "{from} -> {to}: {} of {sent} calls ({:.0}%) started a new trace while the others went on in their request's context",
                    counts.started,
                    100.0 * counts.started as f64 / sent as f64
                ));
            }
        }
        let mut answer = Vec::new();
        for (node, (inbound, outbound, from_nodes, outbound_evidence)) in nodes {
            // A front end (called by nobody but the entry node) is judged by its outbound
            // calls only: outside traffic comes without context by nature.
            let front = from_nodes == 0;
            if node == entry_node || (front && outbound.marked() == 0) {
                continue;
            }
            let mut evidence = Vec::new();
            let reaching = inbound.continued + inbound.started + inbound.missing;
            let drops_inbound = !front
                && inbound.missing > 0
                && reaching >= CALLS_MIN
                && inbound.missing as f64 >= SHARE_MIN * reaching as f64;
            if drops_inbound {
                evidence.push(format!(
                    "{} of {reaching} calls reaching {node} ({:.0}%) came without context, while other nodes call it",
                    inbound.missing,
                    100.0 * inbound.missing as f64 / reaching as f64
                ));
            }
            let drops_outbound = !outbound_evidence.is_empty();
            evidence.extend(outbound_evidence);
            let marked = if front { outbound.marked() } else { inbound.marked() + outbound.marked() };
            let verdict = if drops_outbound {
                Verdict::DropsOutbound
            } else if drops_inbound {
                Verdict::DropsInbound
            } else if marked < CALLS_MIN {
                evidence.push(format!(
                    "{marked} calls to or from {node} say whether they carried context; {CALLS_MIN} are needed"
                ));
                Verdict::Unknown
            } else {
                Verdict::Ok
            };
            answer.push(NodePropagation { node: node.clone(), verdict, inbound, outbound, evidence });
        }
        Ok((view.span, answer))
    }
}
