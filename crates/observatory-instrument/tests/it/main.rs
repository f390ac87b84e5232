//! Tests of the instrumentation library at its boundaries: headers in and out, the
//! baggage laws, the layers over real sockets, and the reporter against a fake peer.

mod context;
mod laws;
mod layers;
mod support;
