//! One observer peer: the application layer.
//!
//! A [`Peer`] owns the flow state, the writer (over the store), the correlator and its
//! task, the mesh (over libp2p) and the clock, and is what the HTTP edge talks to
//! through [`PeerApi`]. [`start`] opens everything from a [`Config`]; the returned
//! [`Running`] serves HTTP and, once the one stop signal given to [`Running::run_until`]
//! fires, stops the parts in order: HTTP (after the requests in flight, within
//! `http.shutdown_grace`), the correlator (giving up what waits, applied), the mesh (its
//! book saved), and last the writer (everything flushed). Every task is owned and joined.
//!
//! This is the only crate that reads the system clock ([`SystemClock`]); every other
//! part is handed the [`Clock`] it was given.

mod correlation;
mod objectives;
mod pending_record;
mod replica;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use observatory_api::{
    Api, ApiLimits, AppliedCounters, MeshView, ObjectivesView, PeerApi, PeerInfo, ReasonCounts, SubmitError,
};
use observatory_config::{Config, ConfigError};
use observatory_core::commit::Applied;
use observatory_core::{Clock, Event, FlowState};
use observatory_correlate::{CorrelationCounters, Correlator, Output, Sighting, Span};
use observatory_net::{MeshError, MeshHandle, MeshSettings};
use observatory_store::{IdentityScheme, IngestError, IngestHandle, SizeProbe, StoreError, WriterConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::replica::PersistedReplica;

/// The system clock: milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// The store's identity is the network's keypair, kept as bytes.
struct NetIdentity;

impl IdentityScheme for NetIdentity {
    fn generate(&self) -> Vec<u8> {
        observatory_net::identity::generate()
    }

    fn peer_id(&self, identity: &[u8]) -> Result<String, String> {
        observatory_net::identity::peer_id(identity)
    }
}

/// Why a peer could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is not usable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An HTTP listener could not be bound.
    #[error("cannot listen for {what} on {addr}; {hint}")]
    Listen {
        /// Which listener.
        what: &'static str,
        /// Where.
        addr: SocketAddr,
        /// What to do about it.
        hint: &'static str,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The data dir could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The identity in the data dir is not a keypair.
    #[error("the identity in the data dir is damaged: {0}; move the data dir away to start with a new one")]
    Identity(String),
    /// The mesh could not start.
    #[error("starting the mesh")]
    Mesh(#[from] MeshError),
    /// The objectives' files do not read or check.
    #[error("the objectives are not usable: {0}")]
    Objectives(String),
}

/// Why a running peer stopped other than when asked.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The writer failed or ended, so no event could be taken any more.
    #[error("the store writer stopped, so the peer cannot take events any more: {0}")]
    Writer(String),
    /// Serving HTTP failed.
    #[error("serving HTTP")]
    Http(#[source] std::io::Error),
}

/// What the writer applied and refused, counted once for client and derived events.
#[derive(Debug, Default)]
struct AppliedTally {
    accepted: AtomicU64,
    flows_folded: AtomicU64,
    rejected: ReasonCounts,
}

#[derive(Debug)]
struct Inner {
    state: observatory_store::SharedState,
    ingest: IngestHandle,
    correlator: Mutex<Correlator>,
    mesh: Option<MeshHandle>,
    clock: Arc<dyn Clock>,
    info: PeerInfo,
    store_size: SizeProbe,
    applied: AppliedTally,
    objectives: Mutex<objectives::Objectives>,
    /// Wakes the objectives task after a reload.
    objectives_reloaded: Arc<tokio::sync::Notify>,
}

/// A running peer, as the HTTP edge and the correlation task see it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Peer {
    inner: Arc<Inner>,
}

fn submit_error(error: IngestError) -> SubmitError {
    match error {
        IngestError::Overloaded => SubmitError::Overloaded(error.to_string()),
        IngestError::ShuttingDown => SubmitError::ShuttingDown,
        IngestError::Store(_) => SubmitError::Store(error.to_string()),
    }
}

impl Peer {
    /// Applies events through the writer and counts what it applied and refused.
    async fn apply(&self, events: Vec<Event>) -> Result<Applied, SubmitError> {
        let applied = self.inner.ingest.submit(events).await.map_err(submit_error)?;
        let tally = &self.inner.applied;
        tally.accepted.fetch_add(applied.accepted as u64, Ordering::Relaxed);
        tally.flows_folded.fetch_add(applied.flows_folded as u64, Ordering::Relaxed);
        for (_, rejection) in &applied.rejected {
            tally.rejected.add(rejection.reason_code(), 1);
        }
        Ok(applied)
    }

    /// Applies events derived from spans and sightings (refusals are counted like those
    /// of client events).
    async fn apply_derived(&self, events: Vec<Event>) -> Result<(), SubmitError> {
        if !events.is_empty() {
            self.apply(events).await?;
        }
        Ok(())
    }

    /// This peer and the live peers of the mesh: the candidates to own a trace.
    fn live_peers(&self) -> Vec<String> {
        match &self.inner.mesh {
            Some(mesh) => mesh.live_peers(),
            None => vec![self.inner.info.peer_id.clone()],
        }
    }

    fn correlator(&self) -> std::sync::MutexGuard<'_, Correlator> {
        self.inner.correlator.lock().expect("no correlator call panics")
    }

    fn objectives(&self) -> std::sync::MutexGuard<'_, objectives::Objectives> {
        self.inner.objectives.lock().expect("no evaluation panics")
    }

    /// Sends handoffs to their owners; what the mesh cannot take is correlated here.
    fn dispatch(&self, now_ms: i64, output: Output) -> Vec<Event> {
        let mut events = output.events;
        for (peer, handoff) in output.handoffs {
            for handoff in observatory_sync::wire::split_handoff(handoff) {
                let refused = match &self.inner.mesh {
                    Some(mesh) => mesh.hand_off(&peer, handoff).err().map(|r| r.handoff),
                    None => Some(handoff),
                };
                if let Some(handoff) = refused {
                    tracing::debug!(%peer, "handoff not queued; correlating here");
                    events.extend(self.correlator().take_back(now_ms, handoff));
                }
            }
        }
        events
    }
}

impl PeerApi for Peer {
    fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    async fn submit_events(&self, events: Vec<Event>) -> Result<Applied, SubmitError> {
        self.apply(events).await
    }

    async fn submit_spans(&self, spans: Vec<Span>) -> Result<(), SubmitError> {
        let now_ms = self.now_ms();
        let peers = self.live_peers();
        let keys = Correlator::recent_keys(&spans);
        let output = self.correlator().handle_spans(now_ms, spans, &self.inner.info.peer_id, &peers);
        let events = self.dispatch(now_ms, output);
        let applied = self.apply_derived(events).await;
        if applied.is_err() {
            // The client is told to retry: its retry must not be taken for a duplicate.
            self.correlator().forget(&keys);
        }
        applied
    }

    async fn submit_sightings(&self, sightings: Vec<Sighting>) -> Result<(), SubmitError> {
        let now_ms = self.now_ms();
        let peers = self.live_peers();
        let output = self.correlator().handle_sightings(now_ms, sightings, &self.inner.info.peer_id, &peers);
        let events = self.dispatch(now_ms, output);
        self.apply_derived(events).await
    }

    fn read<R>(&self, read: impl FnOnce(&FlowState) -> R) -> R {
        read(&self.inner.state.read().expect("no writer panicked holding the state lock"))
    }

    fn info(&self) -> PeerInfo {
        self.inner.info.clone()
    }

    fn store_bytes(&self) -> u64 {
        self.inner.store_size.size_on_disk()
    }

    fn applied(&self) -> AppliedCounters {
        let tally = &self.inner.applied;
        AppliedCounters {
            events_accepted: tally.accepted.load(Ordering::Relaxed),
            flows_folded: tally.flows_folded.load(Ordering::Relaxed),
            events_rejected: tally.rejected.snapshot(),
        }
    }

    fn correlation(&self) -> CorrelationCounters {
        self.correlator().counters()
    }

    fn mesh(&self) -> Option<MeshView> {
        self.inner
            .mesh
            .as_ref()
            .map(|mesh| MeshView { status: mesh.status(), sync_interval_ms: mesh.sync_interval_ms() })
    }

    fn objectives(&self) -> ObjectivesView {
        Peer::objectives(self).view()
    }

    async fn reload_objectives(&self) -> Result<ObjectivesView, String> {
        let peer = self.clone();
        // Files are read off the runtime's threads.
        let reloaded = tokio::task::spawn_blocking(move || {
            let mut objectives = Peer::objectives(&peer);
            let reloaded = objectives.reload();
            let fingerprint = objectives.fingerprint();
            drop(objectives);
            // The answer shows the new objectives evaluated, not an empty list.
            if reloaded.is_ok() {
                objectives::evaluate(&peer, peer.now_ms());
            }
            (reloaded, fingerprint)
        })
        .await
        .map_err(|e| format!("the reload failed: {e}"))?;
        let (reloaded, fingerprint) = reloaded;
        match &reloaded {
            Ok(()) => {
                tracing::info!(%fingerprint, "objectives reloaded");
                if let Some(mesh) = &self.inner.mesh {
                    mesh.set_objectives(fingerprint);
                }
                self.inner.objectives_reloaded.notify_one();
            }
            Err(error) => tracing::warn!(%error, "objectives not reloaded; those in force stay"),
        }
        reloaded.map(|()| Peer::objectives(self).view())
    }
}

/// Where a started peer listens, for the startup line.
#[derive(Debug, Clone)]
pub struct Listening {
    /// The peer id.
    pub peer_id: String,
    /// The incarnation of this run.
    pub incarnation: u32,
    /// The HTTP API.
    pub http: SocketAddr,
    /// The OTLP/HTTP listener, if any.
    pub otlp: Option<SocketAddr>,
    /// The OTLP/gRPC listener, if any.
    pub otlp_grpc: Option<SocketAddr>,
    /// The mesh's listen addresses, with `/p2p/<peer id>`.
    pub listen: Vec<String>,
    /// The data dir.
    pub data_dir: String,
}

/// A started peer: the parts, the listeners and the tasks, until [`Running::run_until`].
#[derive(Debug)]
pub struct Running {
    /// The peer.
    pub peer: Peer,
    /// Where it listens.
    pub listening: Listening,
    config: Config,
    http: tokio::net::TcpListener,
    otlp: Option<tokio::net::TcpListener>,
    otlp_grpc: Option<tokio::net::TcpListener>,
    writer: JoinHandle<Result<(), StoreError>>,
    writer_stop: CancellationToken,
    mesh_task: JoinHandle<()>,
    mesh_stop: CancellationToken,
    correlation_stop: CancellationToken,
    objectives_stop: CancellationToken,
    tasks: TaskTracker,
}

/// Binds a listener that may be off (`None`). A default address (one the user did not
/// choose) that cannot be bound is a warning: the SDKs' default ports are one per host,
/// and a second peer there still serves what `without` says. A chosen one must be bound.
async fn bind_optional(
    what: &'static str,
    addr: Option<SocketAddr>,
    chosen: bool,
    without: &'static str,
    hint: &'static str,
) -> Result<Option<tokio::net::TcpListener>, StartError> {
    let Some(addr) = addr else { return Ok(None) };
    if chosen {
        return bind(what, addr, hint).await.map(Some);
    }
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => Ok(Some(listener)),
        Err(error) => {
            tracing::warn!(
                listener = what, %addr, %error,
                "the default address is taken (another peer or collector on this host?); {without}"
            );
            Ok(None)
        }
    }
}

async fn bind(
    what: &'static str,
    addr: SocketAddr,
    hint: &'static str,
) -> Result<tokio::net::TcpListener, StartError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|source| StartError::Listen {
        what,
        addr,
        hint,
        source,
    })
}

/// Opens the data dir, starts the writer, the mesh and the correlator, and binds the
/// HTTP listeners (first: a peer that cannot serve must not create or touch a data dir).
/// `version` is the version of the program the peer runs in, for its status.
pub async fn start(config: &Config, clock: Arc<dyn Clock>, version: &str) -> Result<Running, StartError> {
    let settings = config.settings()?;
    let mesh_settings = MeshSettings::from_config(config)?;
    let correlation = config.correlation()?;
    let objectives_loaded = objectives::Objectives::load(config, &settings, config.http.addr);
    let objectives = objectives_loaded.map_err(StartError::Objectives)?;
    let http =
        bind("HTTP", config.http.addr, "is another peer running there? choose another address with --http")
            .await?;
    let otlp = bind_optional(
        "OTLP/HTTP",
        config.otlp.addr,
        config.otlp.addr_chosen,
        "OTLP/HTTP is served on http.addr only (choose an address with --otlp or otlp.addr)",
        "is another peer or collector running there? choose another address with --otlp \
         (or otlp.addr: null to serve OTLP on http.addr only)",
    )
    .await?;
    let otlp_grpc = bind_optional(
        "OTLP/gRPC",
        config.otlp.grpc_addr,
        config.otlp.grpc_addr_chosen,
        "OTLP/gRPC is not served (choose an address with --otlp-grpc or otlp.grpc_addr)",
        "is another peer or collector running there? choose another address with --otlp-grpc \
         (or otlp.grpc_addr: null to serve no OTLP/gRPC)",
    )
    .await?;
    let local_addr = |listener: &tokio::net::TcpListener, addr| listener.local_addr().unwrap_or(addr);
    let http_addr = local_addr(&http, config.http.addr);
    let otlp_addr = otlp.as_ref().zip(config.otlp.addr).map(|(l, addr)| local_addr(l, addr));
    let otlp_grpc_addr = otlp_grpc.as_ref().zip(config.otlp.grpc_addr).map(|(l, addr)| local_addr(l, addr));

    let data_dir = config.store.path.clone();
    let opened = observatory_store::open_peer(&data_dir, settings, config.core_limits(), &NetIdentity)?;
    let store_size = opened.store.size_probe();
    let peer_id = opened.origin.peer.to_string();
    let incarnation = opened.origin.incarnation;
    let stats = opened.state.stats();
    tracing::info!(
        %peer_id, incarnation, edges = stats.edges, cells = stats.cells, origins = stats.origins,
        data_dir = %data_dir.display(), "state loaded"
    );
    tracing::info!(
        ack = ?config.ingest.ack, max_clock_skew = ?config.ingest.max_clock_skew,
        max_lateness = ?config.ingest.max_lateness, settings = %opened.state.settings().canonical(),
        "settings in effect"
    );
    let keypair = observatory_net::identity::keypair(&opened.identity).map_err(StartError::Identity)?;
    let state = Arc::new(std::sync::RwLock::new(opened.state));

    let writer_stop = CancellationToken::new();
    let (ingest, persist, writer) = observatory_store::spawn_writer(
        state.clone(),
        opened.store,
        WriterConfig::from_config(config),
        clock.clone(),
        writer_stop.clone(),
    );
    let mesh_stop = CancellationToken::new();
    let replica = PersistedReplica { state: state.clone(), persist };
    let mesh = observatory_net::start(
        keypair,
        mesh_settings,
        opened.known_peers,
        replica,
        clock.clone(),
        mesh_stop.clone(),
    )
    .await;
    let mesh = match mesh {
        Ok(mesh) => mesh,
        Err(error) => {
            writer_stop.cancel();
            let _ = writer.await;
            return Err(error.into());
        }
    };
    for addr in &mesh.listen {
        tracing::info!(%addr, "listening for peers");
    }
    let mut objectives = objectives;
    if config.alerts.link_base_url.is_none() {
        objectives.set_link_base(http_addr);
    }
    mesh.handle.set_objectives(objectives.fingerprint());
    tracing::info!(fingerprint = %objectives.fingerprint(), files = ?config.objective_files(), "objectives in force");
    let listening = Listening {
        peer_id: peer_id.clone(),
        incarnation,
        http: http_addr,
        otlp: otlp_addr,
        otlp_grpc: otlp_grpc_addr,
        listen: mesh.listen.iter().map(ToString::to_string).collect(),
        data_dir: data_dir.display().to_string(),
    };
    let peer = Peer {
        inner: Arc::new(Inner {
            state,
            ingest,
            correlator: Mutex::new(Correlator::new(correlation)),
            mesh: Some(mesh.handle),
            clock,
            info: PeerInfo {
                peer_id,
                incarnation,
                version: version.to_string(),
                data_dir: data_dir.display().to_string(),
                otlp: otlp_addr.map(|a| a.to_string()),
                otlp_grpc: otlp_grpc_addr.map(|a| a.to_string()),
            },
            store_size,
            applied: AppliedTally::default(),
            objectives: Mutex::new(objectives),
            objectives_reloaded: Arc::new(tokio::sync::Notify::new()),
        }),
    };
    let tasks = TaskTracker::new();
    let pending = pending_record::PendingRecord::new(&data_dir);
    if let Some(lost) = pending.previous() {
        tracing::warn!(
            lost,
            "the previous run stopped without giving up its waiting span halves (a crash): they are lost"
        );
        peer.correlator().note_lost_in_crash(lost);
    }
    let correlation_stop = CancellationToken::new();
    tasks.spawn(correlation::run(
        peer.clone(),
        mesh.handoffs_in,
        mesh.handoffs_returned,
        pending,
        config.correlation.tick_interval,
        correlation_stop.clone(),
    ));
    let objectives_stop = CancellationToken::new();
    tasks.spawn(objectives::run(
        peer.clone(),
        peer.inner.objectives_reloaded.clone(),
        config.alerts.timeout,
        objectives_stop.clone(),
    ));
    Ok(Running {
        peer,
        listening,
        config: config.clone(),
        http,
        otlp,
        otlp_grpc,
        writer,
        writer_stop,
        mesh_task: mesh.task,
        mesh_stop,
        correlation_stop,
        objectives_stop,
        tasks,
    })
}

impl Running {
    /// Serves HTTP until `stop` is cancelled (or the writer fails), then stops every part
    /// in order and joins every task.
    pub async fn run_until(self, stop: CancellationToken) -> Result<(), RunError> {
        let Running {
            peer,
            config,
            http,
            otlp,
            otlp_grpc,
            mut writer,
            writer_stop,
            mesh_task,
            mesh_stop,
            correlation_stop,
            objectives_stop,
            tasks,
            ..
        } = self;
        let grace = config.http.shutdown_grace;
        let api = Api::with_shutdown(peer.clone(), ApiLimits::from_config(&config), stop.clone());
        let connections = api.connections();
        let otlp_served = otlp.map(|otlp| {
            tracing::info!(otlp_addr = %otlp.local_addr().map(|a| a.to_string()).unwrap_or_default(), "OTLP/HTTP listening");
            let app = observatory_api::otlp_router(api.clone());
            let stop = stop.clone();
            let connections = connections.clone();
            tasks.spawn(async move {
                match observatory_api::serve(otlp, app, stop, grace, connections).await {
                    Ok(observatory_api::Served::GraceOver) => {
                        tracing::warn!("OTLP requests still open after http.shutdown_grace; closing them")
                    }
                    Ok(observatory_api::Served::Drained) => {}
                    Err(error) => tracing::error!(%error, "serving OTLP/HTTP failed"),
                }
            })
        });
        let grpc_served = otlp_grpc.map(|listener| {
            tracing::info!(otlp_grpc_addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "OTLP/gRPC listening");
            let app = observatory_api::grpc::grpc_router(api.clone());
            let stop = stop.clone();
            let connections = connections.clone();
            tasks.spawn(async move {
                match observatory_api::serve(listener, app, stop, grace, connections).await {
                    Ok(observatory_api::Served::GraceOver) => {
                        tracing::warn!("OTLP/gRPC requests still open after http.shutdown_grace; closing them")
                    }
                    Ok(observatory_api::Served::Drained) => {}
                    Err(error) => tracing::error!(%error, "serving OTLP/gRPC failed"),
                }
            })
        });
        tracing::info!(http_addr = %http.local_addr().map(|a| a.to_string()).unwrap_or_default(), "HTTP API listening");
        let served =
            observatory_api::serve(http, observatory_api::router(api), stop.clone(), grace, connections);
        let outcome = tokio::select! {
            served = served => match served {
                Ok(observatory_api::Served::GraceOver) => {
                    tracing::warn!(?grace, "requests still open after http.shutdown_grace; closing them");
                    Ok(())
                }
                Ok(observatory_api::Served::Drained) => Ok(()),
                Err(error) => Err(RunError::Http(error)),
            },
            // Without its writer the peer can take no event: stop rather than answer 503s.
            ended = &mut writer => {
                let cause = match ended {
                    Ok(Ok(())) => "it stopped without being asked to".to_string(),
                    Ok(Err(error)) => error.to_string(),
                    Err(join) => format!("it panicked: {join}"),
                };
                stop.cancel();
                correlation_stop.cancel();
                objectives_stop.cancel();
                mesh_stop.cancel();
                tasks.close();
                tasks.wait().await;
                let _ = mesh_task.await;
                return Err(RunError::Writer(cause));
            }
        };
        // The OTLP server stops with the HTTP server (a stalled client is cut off after
        // the grace); then waiting span halves are given up and applied.
        stop.cancel();
        if let Some(otlp_served) = otlp_served {
            let _ = otlp_served.await;
        }
        if let Some(grpc_served) = grpc_served {
            let _ = grpc_served.await;
        }
        correlation_stop.cancel();
        objectives_stop.cancel();
        tasks.close();
        tasks.wait().await;
        tracing::info!("HTTP stopped; stopping the mesh and waiting for the writer to finish");
        mesh_stop.cancel();
        let _ = mesh_task.await;
        writer_stop.cancel();
        let written = writer.await.map_err(|join| RunError::Writer(format!("it panicked: {join}")))?;
        written.map_err(|error| RunError::Writer(error.to_string()))?;
        drop(peer);
        tracing::info!("stopped cleanly");
        outcome
    }
}
