//! Objectives, not-flow and alerts, sans-IO.
//!
//! An objective says what an edge (or a set of edges) should do over a rolling window:
//! "95% of requests from checkout to payments within 200 ms", "99.9% without error", or
//! "at least one message a second from orders to the queue" (a *not-flow* objective: it
//! fires when an expected flow stops). [`model`] checks objectives as files declare them;
//! [`eval`] evaluates them on the global view, deterministically, into figures and alert
//! states; [`alerts`] turns those into Alertmanager alerts and decides, with a sans-IO
//! [`alerts::AlertSender`], which peer sends which alert when.
//!
//! Nothing here touches a socket, a file or the clock: the driver passes `now_ms`.

pub mod alerts;
pub mod eval;
pub mod model;

pub use alerts::{Alert, AlertSender, Batch, OutAlert, SenderConfig, SenderCounters, alerts_of};
pub use eval::{
    AlertState, AlertStatus, BurnRate, Coverage, EvalConfig, Evaluation, Evaluator, ObjectiveStatus,
};
pub use model::{Goal, Objective, ObjectiveDefaults, ObjectiveError, ObjectiveSet, ObjectiveSpec, Severity};
