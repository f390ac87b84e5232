//! The failure simulator: many peers on one machine, on virtual time, under scripted
//! faults, with exact invariants checked against an oracle.
//!
//! Every simulated peer runs the very code a real peer runs: the core's [`FlowState`],
//! the sans-IO [`Protocol`](observatory_sync::Protocol), peer book and commit queue, and,
//! when the scenario declares objectives, the evaluator and alert sender of
//! `observatory-objectives` (see [`alerting`]). Only the IO is
//! simulated (network, disk, clock), so a thousand peers fit on a laptop and a run is
//! reproducible bit for bit from its scenario and seed.
//!
//! Drive it with a [`Scenario`] (YAML, see `simulations/README.md`):
//! ```no_run
//! # use observatory_sim::{Scenario, Simulation};
//! let scenario = Scenario::load("simulations/partition-heal.yaml".as_ref()).unwrap();
//! let report = Simulation::new(&scenario, 42).run(&mut |_progress| {});
//! assert!(report.ok(), "{}", report.summary());
//! ```
//!
//! [`FlowState`]: observatory_core::FlowState

pub mod alerting;
pub mod check;
mod network;
pub mod report;
pub mod scenario;
pub mod sim;

pub use report::{Percentiles, Report};
pub use scenario::{Scenario, ScenarioError};
pub use sim::{Progress, Simulation};
