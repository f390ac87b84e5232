//! The writer task: applies client events to the shared state and persists them by
//! group commit.
//!
//! Requests queue on a bounded channel. Each turn the writer takes every queued request,
//! applies each to the state (one seq or more each), writes the changed cells and the
//! local origin's seq in one atomic batch, answers `accepted` requests, flushes, and then
//! answers `durable` ones. While it flushes, new requests queue up for the next turn, so
//! a busy peer flushes once for many requests.
//!
//! Changes merged from peers reach the writer as [`RemoteBatch`]es through a
//! [`PersistHandle`]: each is a snapshot taken under the write lock at merge time (cells
//! and the seqs that cover them), written in order in one atomic batch each and flushed
//! with the next flush tick. Known peers of the mesh are persisted the same way.
//!
//! Shutdown: when the shutdown signal fires or every [`IngestHandle`] is dropped, the
//! writer stops taking requests, applies what was queued, flushes and returns.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use observatory_core::{Cell, CellKey, Event, FlowState, Origin, Rejection};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::sled_store::{Store, StoreError, WriteBatch};

/// The flow state shared by the writer (which alone changes it) and the readers.
pub type SharedState = Arc<RwLock<FlowState>>;

/// Milliseconds since the Unix epoch by the system clock.
pub fn unix_now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// When an ingest request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AckMode {
    /// After the batch holding the events is flushed to disk.
    #[default]
    Durable,
    /// As soon as the events are applied in memory (the last flush interval can be lost
    /// on a crash).
    Accepted,
}

/// Settings of the writer.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// When requests are answered.
    pub ack: AckMode,
    /// Most requests waiting in the queue.
    pub queue_requests_max: usize,
    /// How long a request may wait for a place in the queue before it is refused.
    pub queue_wait: Duration,
    /// How often expired cells are deleted.
    pub expire_interval: Duration,
    /// With `accepted` acks, how often the store is flushed anyway.
    pub flush_interval: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            ack: AckMode::Durable,
            queue_requests_max: 1024,
            queue_wait: Duration::from_secs(5),
            expire_interval: Duration::from_secs(10),
            flush_interval: Duration::from_millis(500),
        }
    }
}

/// What became of one ingest request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IngestReply {
    /// Events applied.
    pub accepted: usize,
    /// Events refused, by index, with the reason.
    pub rejected: Vec<(usize, Rejection)>,
}

/// Why an ingest request was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// The queue stayed full for longer than `queue_wait`.
    #[error("the peer is overloaded: its ingest queue stayed full; retry later")]
    Overloaded,
    /// The peer is shutting down.
    #[error("the peer is shutting down")]
    ShuttingDown,
    /// The store failed; the events may be in memory but are not durable.
    #[error("the store failed: {0}")]
    Store(String),
}

#[derive(Debug)]
struct Request {
    events: Vec<Event>,
    reply: oneshot::Sender<Result<IngestReply, IngestError>>,
}

/// Submits events to the writer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct IngestHandle {
    tx: mpsc::Sender<Request>,
    queue_wait: Duration,
}

impl IngestHandle {
    /// Applies `events` and answers according to the writer's ack mode.
    pub async fn submit(&self, events: Vec<Event>) -> Result<IngestReply, IngestError> {
        let permit = match tokio::time::timeout(self.queue_wait, self.tx.reserve()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(IngestError::ShuttingDown),
            Err(_) => return Err(IngestError::Overloaded),
        };
        let (reply, answer) = oneshot::channel();
        permit.send(Request { events, reply });
        answer.await.unwrap_or(Err(IngestError::ShuttingDown))
    }
}

/// What a merge of pages from peers changed, as it stood right after the merge: the
/// cells that changed and every merged origin's seq. Written in one atomic batch, so the
/// seq on disk never claims cells that are not there.
#[derive(Debug, Default)]
pub struct RemoteBatch {
    /// Changed cells, at their new version.
    pub cells: Vec<(Origin, CellKey, Cell)>,
    /// Each merged origin with its seq and the time of its newest change.
    pub origins: Vec<(Origin, u64, Option<i64>)>,
}

#[derive(Debug)]
enum Persist {
    Remote(RemoteBatch),
    Peers(Vec<(String, Vec<String>)>),
}

/// Hands changes from the mesh to the writer. Cheap to clone; never blocks: callers
/// check [`PersistHandle::backlog_cells`] and wait while it is high.
#[derive(Debug, Clone)]
pub struct PersistHandle {
    tx: mpsc::UnboundedSender<Persist>,
    backlog: Arc<AtomicUsize>,
}

impl PersistHandle {
    /// Queues a merge's changes for writing. Returns false when the writer has stopped.
    pub fn remote(&self, batch: RemoteBatch) -> bool {
        self.backlog.fetch_add(batch.cells.len().max(1), Ordering::Relaxed);
        self.tx.send(Persist::Remote(batch)).is_ok()
    }

    /// Queues known peers (peer id, multiaddrs; none means forget it) for writing.
    pub fn known_peers(&self, peers: Vec<(String, Vec<String>)>) -> bool {
        self.tx.send(Persist::Peers(peers)).is_ok()
    }

    /// Cells queued and not yet written.
    pub fn backlog_cells(&self) -> usize {
        self.backlog.load(Ordering::Relaxed)
    }
}

/// Starts the writer task. It owns the store until it returns.
pub fn spawn_writer(
    state: SharedState,
    store: Store,
    config: WriterConfig,
    shutdown: watch::Receiver<bool>,
) -> (IngestHandle, PersistHandle, JoinHandle<Result<(), StoreError>>) {
    let (tx, rx) = mpsc::channel(config.queue_requests_max);
    let handle = IngestHandle { tx, queue_wait: config.queue_wait };
    let (persist_tx, persist_rx) = mpsc::unbounded_channel();
    let backlog = Arc::new(AtomicUsize::new(0));
    let persist = PersistHandle { tx: persist_tx, backlog: backlog.clone() };
    let writer = Writer { state, store, config, rx, persist_rx, backlog, shutdown };
    (handle, persist, tokio::spawn(writer.run()))
}

struct Writer {
    state: SharedState,
    store: Store,
    config: WriterConfig,
    rx: mpsc::Receiver<Request>,
    persist_rx: mpsc::UnboundedReceiver<Persist>,
    backlog: Arc<AtomicUsize>,
    shutdown: watch::Receiver<bool>,
}

impl Writer {
    async fn run(mut self) -> Result<(), StoreError> {
        let mut expire = tokio::time::interval(self.config.expire_interval);
        let mut flush = tokio::time::interval(self.config.flush_interval);
        let mut dirty = false;
        loop {
            let mut requests = Vec::new();
            tokio::select! {
                received = self.rx.recv() => match received {
                    Some(request) => requests.push(request),
                    None => break,
                },
                _ = expire.tick() => {
                    dirty |= self.expire()?;
                    dirty |= self.pack_sealed()?;
                }
                Some(persist) = self.persist_rx.recv() => {
                    self.persist(persist)?;
                    while let Ok(persist) = self.persist_rx.try_recv() {
                        self.persist(persist)?;
                    }
                    dirty = true;
                }
                _ = flush.tick(), if dirty => {
                    self.store.flush().await?;
                    dirty = false;
                }
                _ = self.shutdown.changed() => break,
            }
            if requests.is_empty() {
                continue;
            }
            while let Ok(request) = self.rx.try_recv() {
                requests.push(request);
            }
            self.turn(requests).await?;
            dirty = self.config.ack == AckMode::Accepted;
        }
        // Shutting down: take what is queued, then flush everything.
        self.rx.close();
        let mut requests = Vec::new();
        while let Some(request) = self.rx.recv().await {
            requests.push(request);
        }
        if !requests.is_empty() {
            self.turn(requests).await?;
        }
        while let Ok(persist) = self.persist_rx.try_recv() {
            self.persist(persist)?;
        }
        self.store.flush().await?;
        tracing::info!("store flushed; writer stopped");
        Ok(())
    }

    /// Applies, writes and flushes one group of requests, answering each.
    async fn turn(&mut self, requests: Vec<Request>) -> Result<(), StoreError> {
        let now_ms = unix_now_ms();
        let mut batch = WriteBatch::default();
        let mut replies = Vec::with_capacity(requests.len());
        {
            let mut state = self.state.write().expect("no writer panicked while holding the state lock");
            let origin: Origin =
                state.local_origin().expect("the peer sets its origin before writing").clone();
            let mut changed = Vec::new();
            for request in requests {
                let outcome = state.apply_local(now_ms, &request.events);
                changed.extend(outcome.changed);
                replies.push((
                    request.reply,
                    IngestReply { accepted: outcome.accepted, rejected: outcome.rejected },
                ));
            }
            changed.sort_unstable();
            changed.dedup();
            for key in &changed {
                let cell = state.cell(&origin, key).expect("a changed cell exists");
                self.store.put_cell(&mut batch, &origin, key, cell);
            }
            if !changed.is_empty() {
                let seq = state.origin_seq(&origin);
                self.store.put_origin(&mut batch, &origin, seq, state.origin_changed_at_ms(&origin));
            }
        }
        let written = match self.store.apply(batch) {
            Ok(()) if self.config.ack == AckMode::Durable => self.store.flush().await,
            other => other,
        };
        match written {
            Ok(()) => {
                for (reply, answer) in replies {
                    let _ = reply.send(Ok(answer));
                }
                Ok(())
            }
            Err(error) => {
                for (reply, _) in replies {
                    let _ = reply.send(Err(IngestError::Store(error.to_string())));
                }
                Err(error)
            }
        }
    }

    /// Writes one batch of changes from the mesh.
    fn persist(&mut self, persist: Persist) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        match persist {
            Persist::Remote(remote) => {
                let cells = remote.cells.len().max(1);
                for (origin, key, cell) in &remote.cells {
                    self.store.put_cell(&mut batch, origin, key, cell);
                }
                for (origin, seq, changed_at_ms) in &remote.origins {
                    self.store.put_origin(&mut batch, origin, *seq, *changed_at_ms);
                }
                let written = self.store.apply(batch);
                self.backlog.fetch_sub(cells, Ordering::Relaxed);
                written
            }
            Persist::Peers(peers) => {
                for (peer_id, addrs) in &peers {
                    self.store.put_known_peer(&mut batch, peer_id, addrs);
                }
                self.store.apply(batch)
            }
        }
    }

    /// Packs the buckets sealed since the last pass; returns whether anything was written.
    fn pack_sealed(&mut self) -> Result<bool, StoreError> {
        let mut batch = WriteBatch::default();
        {
            let mut state = self.state.write().expect("state lock");
            pack_sealed_buckets(&mut state, &mut self.store, unix_now_ms(), &mut batch);
        }
        if batch.is_empty() {
            return Ok(false);
        }
        tracing::debug!(writes = batch.len(), "sealed buckets packed");
        self.store.apply(batch)?;
        Ok(true)
    }

    /// Deletes expired cells; returns whether anything was written.
    fn expire(&mut self) -> Result<bool, StoreError> {
        let removed = self.state.write().expect("state lock").expire(unix_now_ms());
        if removed.is_empty() {
            return Ok(false);
        }
        let mut batch = WriteBatch::default();
        let mut buckets = std::collections::BTreeSet::new();
        for (origin, key) in &removed {
            self.store.delete_cell(&mut batch, origin, key);
            buckets.insert((origin, key.resolution, key.bucket_start_ms));
        }
        for (origin, resolution, bucket_start_ms) in buckets {
            self.store.delete_sealed_bucket(&mut batch, origin, resolution, bucket_start_ms);
        }
        tracing::debug!(cells = removed.len(), "expired cells deleted");
        self.store.apply(batch)?;
        Ok(true)
    }
}

/// Adds to `batch` the packing of every bucket sealed at `now_ms` since the last pass
/// (see [`Store::put_sealed_bucket`]), and seals those buckets in `state` (giving back
/// their spare memory). A bucket is sealed once it ended more than `max_lateness` ago.
pub fn pack_sealed_buckets(state: &mut FlowState, store: &mut Store, now_ms: i64, batch: &mut WriteBatch) {
    let lateness_ms = state.limits().max_lateness_ms;
    let resolutions = state.settings().resolutions().to_vec();
    for (r, resolution) in resolutions.iter().enumerate() {
        let r = r as u8;
        let Some(width) = resolution.width_ms else { continue };
        let Some(mut next) = store.packed_watermark(r).or_else(|| state.oldest_bucket_ms(r)) else {
            continue;
        };
        if let Some(retention) = resolution.retention_ms {
            // Buckets that expired meanwhile need no packing.
            next = next.max(resolution.bucket_start(now_ms - retention - width));
        }
        let start = next;
        while next + width + lateness_ms <= now_ms {
            let sealed = state.seal_bucket(r, next);
            for chunk in sealed.chunk_by(|a, b| a.0 == b.0) {
                let cells: Vec<_> = chunk.iter().map(|(_, k, c)| (k.clone(), c.clone())).collect();
                store.put_sealed_bucket(batch, &chunk[0].0, r, next, &cells);
            }
            next += width;
        }
        if next != start || store.packed_watermark(r).is_none() {
            store.set_packed_watermark(batch, r, next);
        }
    }
}
