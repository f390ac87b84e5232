//! From spans and token sightings to flow-graph events.
//!
//! Services report *spans* (OpenTelemetry, Zipkin) or *sightings* of a propagated token;
//! this crate works out the edges between nodes the way span-to-graph tools do: a CLIENT
//! span with its SERVER child is a request edge, a PRODUCER with its CONSUMER a messaging
//! edge, a CLIENT nobody answered (or a database call) an edge to a virtual node named by
//! its attributes, a root SERVER span an edge from the configured entry node (`user`).
//!
//! Halves of one call can land at different peers. Every trace (and token) has an *owner*
//! among the live peers ([`owner`], rendezvous hashing); a half that cannot be paired
//! where it landed is handed to the owner, which holds it in a bounded pending store until
//! its other half arrives or its time is up.
//!
//! Like the core, this crate is sans-IO: it never reads the clock and sends nothing.
//! Drive a [`Correlator`] with `now_ms` and inputs ([`Correlator::handle_spans`],
//! [`Correlator::handle_handoff`], [`Correlator::handle_sightings`]) and call
//! [`Correlator::handle_tick`] at [`Correlator::poll_timeout`] or sooner; each returns the
//! [`Event`](observatory_core::Event)s to apply and the halves to hand to other peers.

mod correlator;
mod owner;
mod span;

pub use correlator::{CorrelationConfig, CorrelationCounters, Correlator, Handoff, Output};
pub use owner::owner;
pub use span::{
    ADJUSTED_COUNT_MAX, Remote, Sighting, Span, SpanKind, THRESHOLD_SCALE, threshold_of_probability,
};
