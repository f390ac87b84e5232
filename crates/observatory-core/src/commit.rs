//! Group commit as a sans-IO state machine: which client requests are applied together,
//! what is written, when the store is flushed, and which answers wait for which flush.
//!
//! # Driving contract
//! [`CommitQueue`] owns no file, clock or task. A driver (the peer's writer task over
//! sled, or the simulator over a simulated disk) feeds it and carries out what it asks:
//!
//! - [`CommitQueue::submit`] for every client request (a batch of events with a ticket
//!   that names who waits for the answer). The driver bounds how many may wait.
//! - [`CommitQueue::persist`] for every merge of pages from peers: those changes were
//!   applied to the state under the lock that merged them and only need writing.
//! - [`CommitQueue::handle_tick`] after inputs arrive, and at
//!   [`CommitQueue::poll_timeout`]: it starts a flush or a maintenance pass when one is
//!   due, and applies every queued request to the state in one turn. (A driver that
//!   locks the state may call its halves, [`CommitQueue::handle_timers`] always and
//!   [`CommitQueue::take_turn`] only when [`CommitQueue::has_queued`].)
//! - Drain [`CommitQueue::poll_output`] in order: [`CommitOutput::Write`] (write these
//!   changes in one atomic batch, in this order), [`CommitOutput::Flush`] (make everything
//!   written so far durable, then call [`CommitQueue::flushed`] with its number),
//!   [`CommitOutput::Reply`] (answer the client) and [`CommitOutput::Maintain`] (delete
//!   expired cells and pack sealed buckets now).
//! - [`CommitQueue::written_outside`] whenever the driver wrote something on its own (a
//!   maintenance pass, the peer book), so that the next timed flush covers it.
//! - [`CommitQueue::shutdown`] once no request can come any more: a last turn for what is
//!   queued, then a final flush.
//!
//! With [`AckMode::Durable`] a reply waits for the flush after the write holding its
//! events; with [`AckMode::Accepted`] it goes right after the write, and written changes
//! are flushed every `flush_interval_ms` (the last interval can be lost in a crash).
//! Merged changes are flushed with the next flush either way. Every call takes `now_ms` on
//! one clock; the queue never reads one.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::model::{Cell, CellKey, Event, Origin};
use crate::state::{FlowState, Rejection};

/// When an ingest request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckMode {
    /// After the batch holding the events is flushed to disk.
    Durable,
    /// As soon as the events are applied in memory (the last flush interval can be lost
    /// on a crash).
    Accepted,
}

/// Settings of group commit (`ingest.ack`, `store.flush_interval`,
/// `store.expire_interval` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitConfig {
    /// When requests are answered.
    pub ack: AckMode,
    /// How often written changes are flushed when no reply waits for a flush.
    pub flush_interval_ms: i64,
    /// How often expired cells are deleted and sealed buckets packed.
    pub expire_interval_ms: i64,
}

/// What became of one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    /// Events applied.
    pub accepted: usize,
    /// Events refused, by index, with the reason.
    pub rejected: Vec<(usize, Rejection)>,
    /// Events applied in the flow `other` because their own was beyond `limits.flows_max`.
    pub flows_folded: usize,
}

/// Cells and seqs to write in one atomic batch, so that a seq on disk never claims cells
/// that are not there.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    /// Changed cells at their new version.
    pub cells: Vec<(Origin, CellKey, Cell)>,
    /// Each changed origin with its seq and the time of its newest change.
    pub origins: Vec<(Origin, u64, Option<i64>)>,
}

impl Changes {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty() && self.origins.is_empty()
    }
}

/// One atomic write.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// A turn of client requests changed these cells of the local origin, which now
    /// stands at `seq`. Only the writer changes the local origin, so the driver reads the
    /// cells from the state when it writes them (no copy is made).
    Local {
        /// The local origin.
        origin: Origin,
        /// The changed cells, sorted, without duplicates.
        keys: Vec<CellKey>,
        /// The origin's seq after the turn.
        seq: u64,
        /// The origin's clock at its newest change.
        changed_at_ms: Option<i64>,
    },
    /// Changes merged from peers, as they stood at the merge.
    Merged(Changes),
}

/// Something the driver must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum CommitOutput<T> {
    /// Write these changes in one atomic batch.
    Write(Write),
    /// Flush everything written so far, then call [`CommitQueue::flushed`] with `upto`.
    Flush {
        /// The number of the flush.
        upto: u64,
    },
    /// Answer the client that holds `ticket`.
    Reply(T, Applied),
    /// Delete expired cells and pack sealed buckets at `now_ms`.
    Maintain {
        /// The time of the pass.
        now_ms: i64,
    },
}

/// Group commit of one peer. `T` names a waiting client (a reply channel in the writer,
/// anything in the simulator). See the module documentation for how to drive it.
#[derive(Debug)]
pub struct CommitQueue<T> {
    config: CommitConfig,
    queued: Vec<(T, Vec<Event>)>,
    /// Durable replies and the write after which they may go.
    waiting: VecDeque<(u64, T, Applied)>,
    outputs: VecDeque<CommitOutput<T>>,
    /// Writes handed out so far.
    writes: u64,
    /// Writes covered by the last flush handed out.
    flush_asked: u64,
    /// Writes since the last flush was asked: a timed flush is due.
    dirty: bool,
    /// A timed flush was left to the turn that follows (which may write nothing).
    flush_owed: bool,
    next_flush_ms: Option<i64>,
    next_maintain_ms: Option<i64>,
}

impl<T> CommitQueue<T> {
    /// An empty queue.
    pub fn new(config: CommitConfig) -> Self {
        Self {
            config,
            queued: Vec::new(),
            waiting: VecDeque::new(),
            outputs: VecDeque::new(),
            writes: 0,
            flush_asked: 0,
            dirty: false,
            flush_owed: false,
            next_flush_ms: None,
            next_maintain_ms: None,
        }
    }

    /// The settings in use.
    pub fn config(&self) -> &CommitConfig {
        &self.config
    }

    /// Queues a client request for the next turn.
    pub fn submit(&mut self, ticket: T, events: Vec<Event>) {
        self.queued.push((ticket, events));
    }

    /// Queues changes merged from peers for writing (flushed with the next flush).
    pub fn persist(&mut self, changes: Changes) {
        if changes.is_empty() {
            return;
        }
        self.write(Write::Merged(changes));
    }

    fn write(&mut self, write: Write) {
        self.writes += 1;
        self.dirty = true;
        self.outputs.push_back(CommitOutput::Write(write));
    }

    fn flush(&mut self) {
        self.flush_asked = self.writes;
        self.dirty = false;
        self.flush_owed = false;
        self.outputs.push_back(CommitOutput::Flush { upto: self.writes });
    }

    /// Applies the queued requests to `state` in one turn, and asks for a timed flush or
    /// a maintenance pass when one is due.
    ///
    /// # Panics
    /// If requests are queued and `state` has no local origin (writing without an
    /// incarnation is a bug).
    pub fn handle_tick(&mut self, now_ms: i64, state: &mut FlowState) {
        self.handle_timers(now_ms);
        self.take_turn(now_ms, state);
    }

    /// Whether requests wait for a turn.
    pub fn has_queued(&self) -> bool {
        !self.queued.is_empty()
    }

    /// The first half of [`CommitQueue::handle_tick`]: a flush or a maintenance pass, when
    /// due.
    pub fn handle_timers(&mut self, now_ms: i64) {
        // A clock stepped back must not put off a flush or a pass by more than a period.
        let flush_interval_ms = self.config.flush_interval_ms;
        let expire_interval_ms = self.config.expire_interval_ms;
        if let Some(next) = self.next_flush_ms.as_mut() {
            *next = (*next).min(now_ms.saturating_add(flush_interval_ms));
        }
        if let Some(next) = self.next_maintain_ms.as_mut() {
            *next = (*next).min(now_ms.saturating_add(expire_interval_ms));
        }
        let flush_due = *self.next_flush_ms.get_or_insert(now_ms) <= now_ms;
        if flush_due {
            self.next_flush_ms = Some(now_ms + self.config.flush_interval_ms);
            // A durable turn flushes anyway, and its flush covers these writes too.
            let turn_flushes = self.config.ack == AckMode::Durable && !self.queued.is_empty();
            if self.dirty && turn_flushes {
                self.flush_owed = true;
            } else if self.dirty {
                self.flush();
            }
        }
        if *self.next_maintain_ms.get_or_insert(now_ms) <= now_ms {
            self.next_maintain_ms = Some(now_ms + self.config.expire_interval_ms);
            self.outputs.push_back(CommitOutput::Maintain { now_ms });
        }
    }

    /// The second half of [`CommitQueue::handle_tick`]: applies the queued requests to
    /// `state` in one turn (nothing when none wait), and a flush left to it.
    pub fn take_turn(&mut self, now_ms: i64, state: &mut FlowState) {
        if !self.queued.is_empty() {
            self.turn(now_ms, state);
        }
        if self.flush_owed {
            self.flush();
        }
    }

    fn turn(&mut self, now_ms: i64, state: &mut FlowState) {
        let origin = state.local_origin().expect("the peer sets its origin before writing").clone();
        let mut keys = Vec::new();
        let mut replies = Vec::with_capacity(self.queued.len());
        for (ticket, events) in std::mem::take(&mut self.queued) {
            let outcome = state.apply_local(now_ms, &events);
            keys.extend(outcome.changed);
            replies.push((
                ticket,
                Applied {
                    accepted: outcome.accepted,
                    rejected: outcome.rejected,
                    flows_folded: outcome.flows_folded,
                },
            ));
        }
        if keys.is_empty() {
            // Nothing to make durable: answer at once.
            self.outputs
                .extend(replies.into_iter().map(|(ticket, applied)| CommitOutput::Reply(ticket, applied)));
            return;
        }
        keys.sort_unstable();
        keys.dedup();
        let seq = state.origin_seq(&origin);
        let changed_at_ms = state.origin_changed_at_ms(&origin);
        self.write(Write::Local { origin, keys, seq, changed_at_ms });
        match self.config.ack {
            AckMode::Accepted => {
                self.outputs.extend(
                    replies.into_iter().map(|(ticket, applied)| CommitOutput::Reply(ticket, applied)),
                );
            }
            AckMode::Durable => {
                let after = self.writes;
                self.waiting.extend(replies.into_iter().map(|(ticket, applied)| (after, ticket, applied)));
                self.flush();
            }
        }
    }

    /// A flush asked for with [`CommitOutput::Flush`] is done: the replies waiting for it
    /// go out.
    pub fn flushed(&mut self, upto: u64) {
        while self.waiting.front().is_some_and(|(after, _, _)| *after <= upto) {
            let (_, ticket, applied) = self.waiting.pop_front().expect("checked just above");
            self.outputs.push_back(CommitOutput::Reply(ticket, applied));
        }
    }

    /// The driver wrote something on its own (a maintenance pass deleted or packed cells,
    /// the peer book was saved): flush it with the next timed flush.
    pub fn written_outside(&mut self) {
        self.writes += 1;
        self.dirty = true;
    }

    /// Gives up every client still waiting (queued, waiting for a flush, or with a reply
    /// not yet handed out), for the driver to tell them why: the store failed.
    pub fn abandon(&mut self) -> Vec<T> {
        let mut tickets: Vec<T> = self.queued.drain(..).map(|(ticket, _)| ticket).collect();
        tickets.extend(self.waiting.drain(..).map(|(_, ticket, _)| ticket));
        tickets.extend(self.outputs.drain(..).filter_map(|output| match output {
            CommitOutput::Reply(ticket, _) => Some(ticket),
            _ => None,
        }));
        tickets
    }

    /// The last turn: applies what is queued, then flushes everything written.
    pub fn shutdown(&mut self, now_ms: i64, state: &mut FlowState) {
        if !self.queued.is_empty() {
            self.turn(now_ms, state);
        }
        if self.flush_asked < self.writes || self.dirty {
            self.flush();
        }
    }

    /// When [`CommitQueue::handle_tick`] has work next: a timed flush (when something is
    /// written and not flushed) or a maintenance pass; `i64::MIN` before the first tick.
    pub fn poll_timeout(&self) -> i64 {
        match (self.next_flush_ms, self.next_maintain_ms) {
            (Some(flush), Some(maintain)) if self.dirty => flush.min(maintain),
            (Some(_), Some(maintain)) => maintain,
            _ => i64::MIN,
        }
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<CommitOutput<T>> {
        self.outputs.pop_front()
    }
}
