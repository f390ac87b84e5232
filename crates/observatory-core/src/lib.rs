//! The flow graph of an observed system as a state-based CRDT.
//!
//! Every peer holds, for each *origin* (one run of one peer), grow-only *cells* keyed by
//! `(edge, resolution, bucket)` and stamped with the origin's *seq*. Joining keeps, per
//! origin and cell key, the cell with the larger seq; the *global view* (the sum over
//! origins) is maintained incrementally and is what queries read.
//!
//! This crate performs no IO and never reads the clock: callers pass `now_ms` (a
//! [`Clock`] is only a trait here; the application owns the one that reads the time).
//! Start at [`FlowState`]; [`commit`] is the group commit that the writer and the
//! simulator drive.

pub mod backoff;
pub mod clock;
pub mod commit;
pub mod histogram;
pub mod model;
pub mod propagation;
pub mod query;
pub mod settings;
pub mod state;

pub use clock::{Clock, ManualClock};
pub use histogram::{BelowThreshold, LatencyAccumulator, LatencyHistogram, LatencySummary};
pub use model::{
    Cell, CellData, CellKey, ContextMark, Edge, EdgeKind, Event, Marks, NodeName, NodeNameError, Origin,
    Resolution, VirtualSide,
};
pub use propagation::{MarkCounts, NodePropagation, Verdict};
pub use query::{CallsEstimate, EdgeFigures, Figures, GraphView, QueryError, SeriesPoint, SeriesView, Span};
pub use settings::{Limits, Settings, SettingsError};
pub use state::{
    FlowState, GlobalChanges, LocalOutcome, MergeError, MergeOutcome, OTHER_FLOW, OriginCoverage,
    OriginDelta, Rejection, StateStats, SyncRequest, Transfer, VersionVector,
};
