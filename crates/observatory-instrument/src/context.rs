//! The context a request carries, and the carriers it travels in.
//!
//! A [`Context`] is the current span of a trace (W3C `traceparent`), the `tracestate` to
//! pass on, the flow labels, and the other `baggage` members to pass on. [`extract`]
//! reads one from a carrier (HTTP headers or a message's headers) as a receiver sees it
//! ([`Incoming`]: the context plus who sent it); [`Context::inject`] writes it for a send,
//! naming the sending node and the send time in our baggage member.

use std::sync::Arc;

use crate::baggage::{self, BAGGAGE, Flow, Flows, Hop};
use crate::traceparent::{SpanId, TRACEPARENT, TraceParent};
use crate::tracestate::{TRACESTATE, parse_tracestate};

/// Where a context is read from: the values of a header, in order.
pub trait Extract {
    /// How many values header `name` (lower case) has.
    fn value_count(&self, name: &str) -> usize;
    /// The `index`th value of header `name`.
    fn value(&self, name: &str, index: usize) -> Option<&[u8]>;
}

fn values<'a, C: Extract + ?Sized>(carrier: &'a C, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    (0..carrier.value_count(name)).filter_map(move |i| carrier.value(name, i))
}

/// Where a context is written to.
pub trait Inject {
    /// Sets header `name` (lower case) to `value`, replacing what it held.
    fn set(&mut self, name: &'static str, value: &[u8]);
    /// Removes header `name`.
    fn remove(&mut self, name: &'static str);
}

impl Extract for http::HeaderMap {
    fn value_count(&self, name: &str) -> usize {
        self.get_all(name).iter().count()
    }
    fn value(&self, name: &str, index: usize) -> Option<&[u8]> {
        self.get_all(name).iter().nth(index).map(http::HeaderValue::as_bytes)
    }
}

impl Inject for http::HeaderMap {
    fn set(&mut self, name: &'static str, value: &[u8]) {
        // Every value we write is visible ASCII (hex, digits, baggage octets) or came in
        // as a header value already, so this only fails on a bug; a bad value is skipped.
        if let Ok(value) = http::HeaderValue::from_bytes(value) {
            self.insert(name, value);
        }
    }
    fn remove(&mut self, name: &'static str) {
        http::HeaderMap::remove(self, name);
    }
}

/// The headers of a message, as Kafka records carry them: an ordered list of key and
/// bytes. Keys are compared exactly (the library writes them in lower case).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageHeaders(pub Vec<(String, Vec<u8>)>);

impl Extract for MessageHeaders {
    fn value_count(&self, name: &str) -> usize {
        self.0.iter().filter(|(key, _)| key == name).count()
    }
    fn value(&self, name: &str, index: usize) -> Option<&[u8]> {
        self.0.iter().filter(|(key, _)| key == name).nth(index).map(|(_, value)| value.as_slice())
    }
}

impl Inject for MessageHeaders {
    fn set(&mut self, name: &'static str, value: &[u8]) {
        self.0.retain(|(key, _)| key != name);
        self.0.push((name.to_string(), value.to_vec()));
    }
    fn remove(&mut self, name: &'static str) {
        self.0.retain(|(key, _)| key != name);
    }
}

/// The context of the work being done: a span of a trace, and what travels with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// The trace and the current span.
    pub trace: TraceParent,
    /// The flow labels.
    pub flows: Flows,
    tracestate: Option<Arc<str>>,
    foreign_baggage: Option<Arc<str>>,
}

/// A context as a receiver reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The receiver's context: the caller's trace with a new span (or a new trace).
    pub context: Context,
    /// The sender's span, if a valid `traceparent` came.
    pub parent: Option<SpanId>,
    /// Who sent it, if our baggage member came, was valid, and was written by the sender
    /// of this `traceparent`.
    pub hop: Option<Hop>,
    /// Whether our member came but was written further up (its hop does not match the
    /// `traceparent`): a service without the library passed it on.
    pub member_forwarded: bool,
    /// Whether any `traceparent` header came, valid or not.
    pub traceparent_present: bool,
}

impl Incoming {
    /// Whether the sender propagated a trace (a valid `traceparent`).
    pub fn has_context(&self) -> bool {
        self.parent.is_some()
    }
}

/// Reads the context a carrier holds. Never fails: what is invalid is left out (a bad
/// `traceparent` starts a new trace and drops `tracestate`, as W3C asks).
pub fn extract(carrier: &impl Extract) -> Incoming {
    let traceparents = carrier.value_count(TRACEPARENT);
    // Several traceparent headers are ambiguous: none is trusted.
    let parent = match traceparents {
        1 => carrier.value(TRACEPARENT, 0).and_then(|value| TraceParent::parse(value).ok()),
        _ => None,
    };
    let tracestate = parent.and_then(|_| parse_tracestate(values(carrier, TRACESTATE)).map(Arc::from));
    let bag = baggage::parse_baggage(values(carrier, BAGGAGE));
    let trace = match parent {
        Some(parent) => parent.child(),
        None => TraceParent::new_root(),
    };
    let (hop, member_forwarded) = match bag.hop {
        Some(hop) if parent.is_some_and(|p| hop_of(p.span_id) == hop.hop_id) => (Some(hop), false),
        Some(_) => (None, true),
        None => (None, false),
    };
    Incoming {
        context: Context {
            trace,
            flows: bag.flows,
            tracestate,
            foreign_baggage: (!bag.foreign.is_empty()).then(|| Arc::from(bag.foreign)),
        },
        parent: parent.map(|p| p.span_id),
        hop,
        member_forwarded,
        traceparent_present: traceparents > 0,
    }
}

/// The hop id of a send: the low 32 bits of its span id.
fn hop_of(span_id: SpanId) -> u32 {
    u32::from_be_bytes([span_id.0[4], span_id.0[5], span_id.0[6], span_id.0[7]])
}

/// What a send wrote, for the sender's report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// The span id the receiver sees as its parent.
    pub span_id: SpanId,
    /// The hop id in our member.
    pub hop_id: u32,
}

impl Context {
    /// A new trace with no flows.
    pub fn new_root() -> Self {
        Self { trace: TraceParent::new_root(), flows: Flows::new(), tracestate: None, foreign_baggage: None }
    }

    /// The same context with a flow label added.
    pub fn with_flow(mut self, flow: Flow) -> Self {
        self.flows.insert(flow);
        self
    }

    /// The `tracestate` passed on, if any.
    pub fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }

    /// The other baggage members passed on, if any.
    pub fn foreign_baggage(&self) -> Option<&str> {
        self.foreign_baggage.as_deref()
    }

    /// Fan-out: two contexts of the same span carrying the same flows.
    pub fn branch(&self) -> (Context, Context) {
        (self.clone(), self.clone())
    }

    /// Fan-in: this context's span, with the union of both sides' flows.
    pub fn join(&self, other: &Context) -> Context {
        Context { flows: self.flows.join(&other.flows), ..self.clone() }
    }

    /// Writes the context for a send by `node` (as [`crate::ServiceName`] encodes it) at
    /// `now_us`: a new span id as the receiver's parent, and our baggage member.
    pub fn inject(&self, node_encoded: &str, now_us: u64, carrier: &mut impl Inject) -> Sent {
        let span_id = SpanId::random();
        let hop_id = hop_of(span_id);
        let traceparent = TraceParent { span_id, ..self.trace };
        carrier.set(TRACEPARENT, &traceparent.encode());
        // A tracestate left from another trace (headers copied on) must not go with this one.
        match &self.tracestate {
            Some(state) => carrier.set(TRACESTATE, state.as_bytes()),
            None => carrier.remove(TRACESTATE),
        }
        let mut bag = String::with_capacity(64 + self.foreign_baggage.as_deref().map_or(0, str::len));
        baggage::encode_member(&mut bag, node_encoded, now_us, hop_id, &self.flows);
        if let Some(foreign) = &self.foreign_baggage {
            bag.push(',');
            bag.push_str(foreign);
        }
        carrier.set(BAGGAGE, bag.as_bytes());
        Sent { span_id, hop_id }
    }
}
