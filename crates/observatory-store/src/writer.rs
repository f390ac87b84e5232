//! The writer task: a thin loop that runs the sans-IO [`CommitQueue`] over sled.
//!
//! Client requests queue on a bounded channel ([`IngestHandle`]); changes merged from
//! peers arrive on another ([`PersistHandle`]), and the peer book in a slot of its own
//! where a newer book replaces one not yet written (deletions carried over). The loop feeds both
//! to the commit queue, wakes it at its `poll_timeout`, and carries out what it asks:
//! writes (each one atomic sled batch), flushes, replies, and expiry and packing passes.
//! Which requests share a turn, when to flush and which reply waits for which flush is
//! decided by the commit queue, exactly as in the simulator.
//!
//! The writer alone changes the local origin's cells, so it writes them from the state
//! after a turn without copying them. Shutdown: when `shutdown` is cancelled or every
//! [`IngestHandle`] is dropped, the writer stops taking requests, applies what was
//! queued, writes what was merged, flushes and returns.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use observatory_config::Config;
use observatory_core::commit::{Applied, Changes, CommitConfig, CommitOutput, CommitQueue, Write};
use observatory_core::{Clock, Event, FlowState};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::sled_store::{Store, StoreError, WriteBatch};

/// The flow state shared by the writer (which alone changes the local origin) and the
/// readers.
pub type SharedState = Arc<RwLock<FlowState>>;

/// Settings of the writer.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Group commit: when requests are answered and the store flushed.
    pub commit: CommitConfig,
    /// Most requests waiting in the queue (`ingest.queue_requests_max`).
    pub queue_requests_max: usize,
    /// How long a request may wait for a place in the queue before it is refused
    /// (`ingest.queue_wait`).
    pub queue_wait: Duration,
    /// Most merges (and peer-book saves) waiting to be written (`mesh.merges_queued_max`).
    pub merges_queued_max: usize,
    /// Merged cells not yet written above which the mesh must not merge more
    /// (`mesh.merged_cells_backlog_max`).
    pub merged_cells_backlog_max: usize,
}

impl WriterConfig {
    /// The writer's settings in `config`.
    pub fn from_config(config: &Config) -> Self {
        Self {
            commit: config.commit(),
            queue_requests_max: config.ingest.queue_requests_max,
            queue_wait: config.ingest.queue_wait,
            merges_queued_max: config.mesh.merges_queued_max,
            merged_cells_backlog_max: config.mesh.merged_cells_backlog_max,
        }
    }
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

type Ticket = oneshot::Sender<Result<Applied, IngestError>>;

#[derive(Debug)]
struct Request {
    events: Vec<Event>,
    reply: Ticket,
}

/// Submits events to the writer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct IngestHandle {
    tx: mpsc::Sender<Request>,
    queue_wait: Duration,
}

impl IngestHandle {
    /// Applies `events` and answers according to the writer's ack mode.
    pub async fn submit(&self, events: Vec<Event>) -> Result<Applied, IngestError> {
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

/// Known peers: peer id and multiaddrs, as text (none: forget the peer).
type Book = Vec<(String, Vec<String>)>;

/// The peer book waiting to be written: latest wins, but a deletion (a peer without
/// addresses) of an overwritten book is kept unless the newer book lists the peer.
#[derive(Debug, Default)]
struct BookSlot {
    peers: std::sync::Mutex<Option<Book>>,
    written: tokio::sync::Notify,
}

impl BookSlot {
    fn put(&self, mut peers: Book) {
        let mut slot = self.peers.lock().expect("no book update panics");
        if let Some(older) = slot.take() {
            let listed: std::collections::BTreeSet<String> = peers.iter().map(|(p, _)| p.clone()).collect();
            peers
                .extend(older.into_iter().filter(|(peer, addrs)| addrs.is_empty() && !listed.contains(peer)));
        }
        *slot = Some(peers);
        drop(slot);
        self.written.notify_one();
    }

    fn take(&self) -> Option<Book> {
        self.peers.lock().expect("no book update panics").take()
    }
}

/// Why a merge or a peer book could not be queued for writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PersistError {
    /// The queue is full (check [`PersistHandle::has_room`] first).
    #[error("the writer's queue of merges is full")]
    Full,
    /// The writer has stopped.
    #[error("the writer has stopped")]
    Stopped,
}

/// Hands changes from the mesh to the writer. Cheap to clone; never blocks: the mesh
/// asks [`PersistHandle::has_room`] before it merges, and drops what it cannot take.
#[derive(Debug, Clone)]
pub struct PersistHandle {
    tx: mpsc::Sender<Changes>,
    book: Arc<BookSlot>,
    backlog: Arc<AtomicUsize>,
    backlog_max: usize,
}

impl PersistHandle {
    /// Whether the writer can take another merge: its queue has a place and fewer than
    /// `mesh.merged_cells_backlog_max` merged cells wait.
    pub fn has_room(&self) -> bool {
        self.tx.capacity() > 0 && self.backlog.load(Ordering::Relaxed) < self.backlog_max
    }

    /// Queues a merge's changes for writing.
    pub fn merged(&self, changes: Changes) -> Result<(), PersistError> {
        let cells = changes.cells.len().max(1);
        self.backlog.fetch_add(cells, Ordering::Relaxed);
        self.tx.try_send(changes).map_err(|error| {
            self.backlog.fetch_sub(cells, Ordering::Relaxed);
            match error {
                mpsc::error::TrySendError::Full(_) => PersistError::Full,
                mpsc::error::TrySendError::Closed(_) => PersistError::Stopped,
            }
        })
    }

    /// Hands the writer the peer book (peer id, multiaddrs; none means forget it). Never
    /// refused: a newer book replaces one not yet written.
    pub fn known_peers(&self, peers: Vec<(String, Vec<String>)>) {
        self.book.put(peers);
    }

    /// Merged cells queued and not yet written.
    pub fn backlog_cells(&self) -> usize {
        self.backlog.load(Ordering::Relaxed)
    }
}

/// Starts the writer task. It owns the store until it returns.
pub fn spawn_writer(
    state: SharedState,
    store: Store,
    config: WriterConfig,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> (IngestHandle, PersistHandle, JoinHandle<Result<(), StoreError>>) {
    let (tx, rx) = mpsc::channel(config.queue_requests_max);
    let handle = IngestHandle { tx, queue_wait: config.queue_wait };
    let (persist_tx, persist_rx) = mpsc::channel(config.merges_queued_max);
    let backlog = Arc::new(AtomicUsize::new(0));
    let book = Arc::new(BookSlot::default());
    let persist = PersistHandle {
        tx: persist_tx,
        book: book.clone(),
        backlog: backlog.clone(),
        backlog_max: config.merged_cells_backlog_max,
    };
    let writer = Writer {
        state,
        store,
        queue: CommitQueue::new(config.commit),
        clock,
        rx,
        persist_rx,
        book,
        backlog,
        shutdown,
    };
    (handle, persist, tokio::spawn(writer.run()))
}

struct Writer {
    state: SharedState,
    store: Store,
    queue: CommitQueue<Ticket>,
    clock: Arc<dyn Clock>,
    rx: mpsc::Receiver<Request>,
    persist_rx: mpsc::Receiver<Changes>,
    book: Arc<BookSlot>,
    backlog: Arc<AtomicUsize>,
    shutdown: CancellationToken,
}

impl Writer {
    async fn run(mut self) -> Result<(), StoreError> {
        let result = self.serve().await;
        if let Err(error) = &result {
            // Whoever still waits learns why instead of "shutting down".
            for ticket in self.queue.abandon() {
                let _ = ticket.send(Err(IngestError::Store(error.to_string())));
            }
        }
        result
    }

    async fn serve(&mut self) -> Result<(), StoreError> {
        loop {
            let now = self.clock.now_ms();
            let wake = Duration::from_millis(
                u64::try_from(self.queue.poll_timeout().saturating_sub(now)).unwrap_or(0),
            );
            tokio::select! {
                received = self.rx.recv() => match received {
                    Some(request) => {
                        self.queue.submit(request.reply, request.events);
                        while let Ok(request) = self.rx.try_recv() {
                            self.queue.submit(request.reply, request.events);
                        }
                    }
                    None => break,
                },
                Some(changes) = self.persist_rx.recv() => {
                    self.queue.persist(changes);
                    while let Ok(changes) = self.persist_rx.try_recv() {
                        self.queue.persist(changes);
                    }
                }
                _ = self.book.written.notified() => self.write_book()?,
                _ = tokio::time::sleep(wake) => {}
                _ = self.shutdown.cancelled() => break,
            }
            self.tick().await?;
        }
        // Shutting down: take what is queued, then write and flush everything.
        self.rx.close();
        while let Some(request) = self.rx.recv().await {
            self.queue.submit(request.reply, request.events);
        }
        while let Ok(changes) = self.persist_rx.try_recv() {
            self.queue.persist(changes);
        }
        self.write_book()?;
        let now = self.clock.now_ms();
        self.queue.shutdown(now, &mut self.state.write().expect("no writer panicked holding the state lock"));
        self.carry_out().await?;
        self.store.flush().await?;
        tracing::info!("store flushed; writer stopped");
        Ok(())
    }

    /// Runs the commit queue's timers, and a turn (under the write lock) when requests
    /// wait; then carries out what it asks.
    async fn tick(&mut self) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        self.queue.handle_timers(now);
        if self.queue.has_queued() {
            self.queue
                .take_turn(now, &mut self.state.write().expect("no writer panicked holding the state lock"));
        }
        self.carry_out().await
    }

    /// Writes the peer book waiting in its slot, if any.
    fn write_book(&mut self) -> Result<(), StoreError> {
        let Some(peers) = self.book.take() else { return Ok(()) };
        let mut batch = WriteBatch::default();
        for (peer_id, addrs) in &peers {
            self.store.put_known_peer(&mut batch, peer_id, addrs);
        }
        self.store.apply(batch)?;
        self.queue.written_outside();
        Ok(())
    }

    /// Carries out what the commit queue asks, in order.
    async fn carry_out(&mut self) -> Result<(), StoreError> {
        while let Some(output) = self.queue.poll_output() {
            match output {
                CommitOutput::Write(Write::Local { origin, keys, seq, changed_at_ms }) => {
                    let mut batch = WriteBatch::default();
                    {
                        let state = self.state.read().expect("no writer panicked holding the state lock");
                        for key in &keys {
                            let cell =
                                state.cell(&origin, key).expect("a changed cell of the local origin exists");
                            self.store.put_cell(&mut batch, &origin, key, cell);
                        }
                    }
                    self.store.put_origin(&mut batch, &origin, seq, changed_at_ms);
                    self.store.apply(batch)?;
                }
                CommitOutput::Write(Write::Merged(changes)) => {
                    let cells = changes.cells.len().max(1);
                    let mut batch = WriteBatch::default();
                    for (origin, key, cell) in &changes.cells {
                        self.store.put_cell(&mut batch, origin, key, cell);
                    }
                    for (origin, seq, changed_at_ms) in &changes.origins {
                        self.store.put_origin(&mut batch, origin, *seq, *changed_at_ms);
                    }
                    let written = self.store.apply(batch);
                    self.backlog.fetch_sub(cells, Ordering::Relaxed);
                    written?;
                }
                CommitOutput::Flush { upto } => {
                    self.store.flush().await?;
                    self.queue.flushed(upto);
                }
                CommitOutput::Reply(ticket, applied) => {
                    let _ = ticket.send(Ok(applied));
                }
                CommitOutput::Maintain { now_ms } => {
                    let expired = self.expire(now_ms)?;
                    let packed = self.pack_sealed(now_ms)?;
                    if expired || packed {
                        self.queue.written_outside();
                    }
                }
            }
        }
        Ok(())
    }

    /// Packs the buckets sealed since the last pass; returns whether anything was written.
    fn pack_sealed(&mut self, now_ms: i64) -> Result<bool, StoreError> {
        let mut batch = WriteBatch::default();
        {
            let mut state = self.state.write().expect("state lock");
            pack_sealed_buckets(&mut state, &mut self.store, now_ms, &mut batch);
        }
        if batch.is_empty() {
            return Ok(false);
        }
        tracing::debug!(writes = batch.len(), "sealed buckets packed");
        self.store.apply(batch)?;
        Ok(true)
    }

    /// Deletes expired cells; returns whether anything was written.
    fn expire(&mut self, now_ms: i64) -> Result<bool, StoreError> {
        let removed = self.state.write().expect("state lock").expire(now_ms);
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
