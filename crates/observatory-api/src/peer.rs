//! What the HTTP edge needs of a peer: the narrow interface [`PeerApi`] that the
//! application layer (`observatory-peer`) implements and the router tests fake.
//!
//! The edge decodes and validates requests into core and correlate types, hands them to
//! the peer, and turns what the peer answers into JSON. It never sees the writer, the
//! mesh driver, the store or the clock behind this interface.

use std::collections::BTreeMap;
use std::future::Future;

use observatory_core::commit::Applied;
use observatory_core::{Event, FlowState};
use observatory_correlate::{CorrelationCounters, Sighting, Span};
use observatory_objectives::{Evaluation, SenderCounters};
use observatory_sync::MeshStatus;

/// Who the peer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// libp2p peer id.
    pub peer_id: String,
    /// Incarnation of this run.
    pub incarnation: u32,
    /// Version of the observatory binary.
    pub version: String,
    /// Where the data dir is.
    pub data_dir: String,
    /// Where OTLP/HTTP is served besides the HTTP API, if anywhere.
    pub otlp: Option<String>,
    /// Where OTLP/gRPC is served, if anywhere.
    pub otlp_grpc: Option<String>,
}

/// Why the peer did not take what it was given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The writer's queue stayed full; retry later (503).
    #[error("{0}")]
    Overloaded(String),
    /// The peer is stopping (503).
    #[error("the peer is shutting down")]
    ShuttingDown,
    /// The store failed (500).
    #[error("{0}")]
    Store(String),
}

/// What the peer applied since it started, as its writer saw it (client events and
/// events derived from spans and sightings).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedCounters {
    /// Events applied.
    pub events_accepted: u64,
    /// Events applied in the flow `other`, their own being beyond `limits.flows_max`.
    pub flows_folded: u64,
    /// Events refused by the state (too old, too far ahead, beyond the node and edge
    /// limits...), by reason.
    pub events_rejected: BTreeMap<String, u64>,
}

/// The mesh as the peer sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct MeshView {
    /// The latest published status.
    pub status: MeshStatus,
    /// Time between anti-entropy rounds, which says how fresh "in sync" is.
    pub sync_interval_ms: i64,
}

/// The peer's objectives: what is loaded, how they stand, and how sending goes.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectivesView {
    /// The fingerprint of the objectives in force (peers compare it).
    pub fingerprint: String,
    /// The files they were read from.
    pub files: Vec<String>,
    /// Why the last reload was refused, if it was (the objectives before stay).
    pub reload_error: Option<String>,
    /// The latest evaluation, once there is one.
    pub evaluation: Option<Evaluation>,
    /// Alertmanagers alerts go to.
    pub alertmanagers: Vec<String>,
    /// How sending went.
    pub sender: SenderCounters,
    /// The labels of the alerts this peer sends (it wins their rendezvous).
    pub sends: Vec<std::collections::BTreeMap<String, String>>,
    /// Base of the links in alerts.
    pub link_base_url: String,
    /// How far ahead of now a firing alert's `endsAt` lies (resends × interval).
    pub ends_at_ahead_ms: i64,
}

/// A peer, as the HTTP edge sees it.
pub trait PeerApi: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch by the peer's clock: the default timestamp of an
    /// event and the default end of a query window.
    fn now_ms(&self) -> i64;

    /// Applies client events; answers once the writer's ack mode allows.
    fn submit_events(&self, events: Vec<Event>) -> impl Future<Output = Result<Applied, SubmitError>> + Send;

    /// Takes validated spans: pairs what it can, hands halves to their traces' owners,
    /// applies the edges found. Answers once those edges are applied.
    fn submit_spans(&self, spans: Vec<Span>) -> impl Future<Output = Result<(), SubmitError>> + Send;

    /// Takes validated token sightings, like [`PeerApi::submit_spans`].
    fn submit_sightings(
        &self,
        sightings: Vec<Sighting>,
    ) -> impl Future<Output = Result<(), SubmitError>> + Send;

    /// Reads the flow state (under its read lock: keep `read` short).
    fn read<R>(&self, read: impl FnOnce(&FlowState) -> R) -> R;

    /// Who the peer is.
    fn info(&self) -> PeerInfo;

    /// Bytes its store takes on disk.
    fn store_bytes(&self) -> u64;

    /// What its writer applied and refused.
    fn applied(&self) -> AppliedCounters;

    /// What its correlator paired, gave up and holds.
    fn correlation(&self) -> CorrelationCounters;

    /// Its mesh, if it runs one.
    fn mesh(&self) -> Option<MeshView>;

    /// Its objectives and how they stand.
    fn objectives(&self) -> ObjectivesView;

    /// Reads the objectives' files again; on an error the objectives in force stay and
    /// the error says which file, objective and key.
    fn reload_objectives(&self) -> impl Future<Output = Result<ObjectivesView, String>> + Send;
}
