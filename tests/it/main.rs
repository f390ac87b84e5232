//! End-to-end tests: real `observatory` processes on loopback.
//!
//! Every test starts its own peers on temporary data dirs and port 0, so they run in
//! parallel. Build the binary first (`cargo build -p observatory`), or run
//! `cargo test --workspace`, which does. `architecture` checks the invariants of
//! ARCHITECTURE.md on the workspace itself.

mod alerts;
mod architecture;
mod config;
mod demo;
mod handoff;
mod hostile;
mod mesh;
mod otel;
mod otel_propagation;
mod page;
mod partition;
mod prometheus;
mod readme;
mod restart;
mod sim;
mod single_peer;
mod top;
