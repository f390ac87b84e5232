//! The anti-entropy protocol as a sans-IO state machine.
//!
//! # Driving contract
//! [`Protocol`] owns no socket, file, clock or entropy source. A driver (the libp2p
//! driver of the peer, or the simulator) does all IO and feeds it:
//!
//! - [`Protocol::peer_connected`] / [`Protocol::peer_disconnected`] when a connection to
//!   a peer comes up or goes away. On connect the protocol sends a [`Hello`] with the
//!   settings fingerprint; it syncs only with peers whose fingerprint agrees.
//! - [`Protocol::handle_message`] for every message decoded from a peer, and
//!   [`Protocol::handle_malformed`] for every message that could not be decoded or was
//!   too large. Both may change the replica (merging pages) and queue messages.
//! - [`Protocol::handle_tick`] often (every 100 ms or so); it starts a round every
//!   `sync_interval` and re-sends hellos that went unanswered.
//!   [`Protocol::poll_timeout`] says when it next has work, for drivers that keep timers.
//! - After each call, drain [`Protocol::poll_transmit`] (messages to send, in order) and
//!   [`Protocol::poll_action`] (peers to disconnect and shun for a while).
//! - [`Protocol::forget`] when the peer book forgets a peer.
//! - Optionally report message sizes with [`Protocol::note_bytes`].
//!
//! A message with cells is dropped unread while the replica has no room for more merged
//! cells ([`Replica::has_room`]: the writer is behind); the session ends early and a
//! later round brings the cells again, so memory stays bounded when the disk is slow.
//!
//! Every call takes `now_ms`, milliseconds on any clock that does not go backwards (the
//! same clock for every call). The protocol is deterministic: the same calls with the
//! same seed give the same messages.
//!
//! # The exchange
//! A round picks up to `fanout` live peers, least recently synced first (ties broken by
//! the seeded RNG), and opens a session with each by sending what it wants (its
//! [`SyncRequest`]). The other side answers with a page of what it has that the asker
//! lacks, along with its own want (push-pull). Each side keeps answering the other's
//! want and asking again while the last page it got taught it something; a page that
//! teaches nothing ends that side's part. Messages may be lost, duplicated or reordered:
//! pages are idempotent and the core's [`Transfer`] rules keep version vectors honest, so
//! a lost message only ends a session early; the next round starts another.

use std::collections::{BTreeMap, VecDeque};

use observatory_core::commit::Changes;
use observatory_core::{
    Cell, CellKey, FlowState, MergeError, MergeOutcome, OriginDelta, SyncRequest, Transfer, VersionVector,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What the protocol needs of the flow state it keeps in sync.
///
/// [`FlowState`] implements it directly (the simulator uses that); a peer implements it
/// over its shared, persisted state.
pub trait Replica {
    /// Reads the state (a peer takes its read lock around `read`).
    fn read<T>(&self, read: impl FnOnce(&FlowState) -> T) -> T;
    /// See [`FlowState::sync_request`].
    fn sync_request(&self, transfer: &Transfer) -> SyncRequest {
        self.read(|state| state.sync_request(transfer))
    }
    /// A page of what `request` lacks, of at most about `bytes_max` bytes on the wire
    /// (see [`FlowState::delta_within`]).
    fn page_for(&self, request: &SyncRequest, bytes_max: usize) -> Vec<OriginDelta> {
        self.read(|state| state.delta_within(request, bytes_max, wire_cost))
    }
    /// See [`FlowState::lag_behind`].
    fn lag_behind(&self, known: &VersionVector) -> (u64, u64) {
        self.read(|state| state.lag_behind(known))
    }
    /// See [`FlowState::version_vector`].
    fn version_vector(&self) -> VersionVector {
        self.read(FlowState::version_vector)
    }
    /// Whether it can take more merged cells now. While it cannot, messages with pages are
    /// dropped unread (the writer is behind; a later round brings them again).
    fn has_room(&self) -> bool {
        true
    }
    /// Checks every page, then merges them all, or none if any is corrupt. The pages name
    /// distinct origins.
    fn merge_pages(
        &mut self,
        now_ms: i64,
        pages: Vec<OriginDelta>,
        transfer: &mut Transfer,
    ) -> Result<Vec<MergeOutcome>, MergeError>;
}

/// [`Replica::page_for`]'s cost of one cell: an upper estimate of its size on the wire.
pub fn wire_cost(key: &CellKey, cell: &Cell) -> usize {
    cell.wire_size_hint(key)
}

/// [`Replica::merge_pages`] for a plain [`FlowState`]: check all, then merge all.
pub fn merge_pages_into(
    state: &mut FlowState,
    now_ms: i64,
    pages: Vec<OriginDelta>,
    transfer: &mut Transfer,
) -> Result<Vec<MergeOutcome>, MergeError> {
    for page in &pages {
        state.check_delta(page)?;
    }
    Ok(pages
        .into_iter()
        .map(|page| {
            state.merge_delta(now_ms, page, transfer).expect("checked just before, under the same borrow")
        })
        .collect())
}

/// [`merge_pages_into`], then a snapshot of what changed (the cells at their new version
/// and every merged origin's seq), taken under the same borrow, for the writer: written in
/// one atomic batch, a seq on disk never claims cells that are not there.
pub fn merge_pages_snapshot(
    state: &mut FlowState,
    now_ms: i64,
    pages: Vec<OriginDelta>,
    transfer: &mut Transfer,
) -> Result<(Vec<MergeOutcome>, Changes), MergeError> {
    let origins: Vec<_> = pages.iter().map(|p| p.origin.clone()).collect();
    let outcomes = merge_pages_into(state, now_ms, pages, transfer)?;
    let mut changes = Changes::default();
    for (origin, outcome) in origins.iter().zip(&outcomes) {
        if outcome.changed.is_empty() && !outcome.advanced {
            continue;
        }
        for key in &outcome.changed {
            if let Some(cell) = state.cell(origin, key) {
                changes.cells.push((origin.clone(), key.clone(), cell.clone()));
            }
        }
        changes.origins.push((origin.clone(), state.origin_seq(origin), state.origin_changed_at_ms(origin)));
    }
    Ok((outcomes, changes))
}

impl Replica for FlowState {
    fn read<T>(&self, read: impl FnOnce(&FlowState) -> T) -> T {
        read(self)
    }

    fn merge_pages(
        &mut self,
        now_ms: i64,
        pages: Vec<OriginDelta>,
        transfer: &mut Transfer,
    ) -> Result<Vec<MergeOutcome>, MergeError> {
        merge_pages_into(self, now_ms, pages, transfer)
    }
}

/// Settings of the protocol (`mesh.*` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolConfig {
    /// Time between rounds (`mesh.sync_interval`).
    pub sync_interval_ms: i64,
    /// Peers per round (`mesh.fanout`).
    pub fanout: usize,
    /// Largest message (`mesh.message_bytes_max`); pages are sized to fit below it.
    pub message_bytes_max: usize,
    /// Offences (corrupt or malformed messages) after which a peer is disconnected.
    pub offences_max: u32,
    /// How long a disconnected offender is shunned.
    pub shun_ms: i64,
    /// Most messages one side sends in one session (`mesh.session_messages_max`).
    pub session_messages_max: u32,
}

/// Sent on connect: the settings that must agree mesh-wide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// [`observatory_core::Settings::fingerprint`].
    pub fingerprint: String,
    /// [`observatory_core::Settings::canonical`], to say what differs.
    pub settings: String,
    /// Whether the receiver should answer with its own hello (it does unless this hello
    /// is itself an answer).
    pub answer_me: bool,
    /// The fingerprint of the sender's objectives (empty for none). Peers with the same
    /// objectives share the sending of alerts; peers with other ones are only shown.
    pub objectives: String,
}

/// The head of one step of a session (its pages travel beside it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncMessage {
    /// The sender's settings fingerprint.
    pub fingerprint: String,
    /// Which session (chosen by the side that opened it).
    pub session: u64,
    /// How many messages of this session came before.
    pub step: u32,
    /// Whether the pages answer the receiver's last want (possibly with nothing).
    pub reply: bool,
    /// What the sender wants: it lacks what lies above this.
    pub want: Option<SyncRequest>,
    /// With a reply: the cells the sender held above the receiver's version vector when
    /// it built the pages (these pages included), so the receiver knows how far behind
    /// it is.
    pub lag_cells: Option<u64>,
}

/// What the protocol sends and receives (the wire carries other messages beside these:
/// see [`crate::wire::MeshMessage`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// Settings fingerprint.
    Hello(Hello),
    /// A step of a session, with its pages.
    Sync(SyncMessage, Vec<OriginDelta>),
}

/// Something the driver must do besides sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<P> {
    /// Close the connections to the peer and refuse it until `until_ms`.
    Shun {
        /// The offender.
        peer: P,
        /// When it may connect again.
        until_ms: i64,
    },
}

/// Whether a peer's settings agree with ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Agreement {
    /// No hello from it yet.
    Unknown,
    /// Same fingerprint.
    Agrees,
    /// Another fingerprint: not synced with.
    Differs {
        /// Its fingerprint.
        theirs: String,
        /// What differs, in words.
        reason: String,
    },
}

/// Mesh-wide counters of this peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MeshCounters {
    /// Rounds started.
    pub rounds: u64,
    /// Sessions opened (up to `fanout` per round).
    pub sessions: u64,
    /// Messages received and handled.
    pub messages_in: u64,
    /// Messages queued for sending.
    pub messages_out: u64,
    /// Bytes received (as reported by the driver).
    pub bytes_in: u64,
    /// Bytes sent (as reported by the driver).
    pub bytes_out: u64,
    /// Pages that changed something here.
    pub deltas_applied: u64,
    /// Cells taken from peers.
    pub cells_applied: u64,
    /// Messages rejected (malformed, oversized or corrupt).
    pub rejected: u64,
    /// Peers disconnected for repeated offences.
    pub shunned: u64,
    /// Messages with cells dropped unread because the writer was behind.
    pub pages_dropped_backlog: u64,
    /// Handoffs of span halves received but sent back because the correlator was behind
    /// (set by the driver).
    pub handoffs_dropped: u64,
    /// Span halves of handoffs sent whose owner neither acknowledged nor refused them (the
    /// connection closed or no answer came in time): taken or lost, no one can tell, so
    /// they are not sent again (which could count them twice). Set by the driver.
    pub handoff_spans_unacknowledged: u64,
}

/// What this peer knows of one other peer, for `/api/v1/peers`.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerReport<P> {
    /// The peer.
    pub peer: P,
    /// Whether a connection is up.
    pub connected: bool,
    /// Whether its settings agree with ours.
    pub settings: Agreement,
    /// When we last held everything it had for us (ms, the driver's clock).
    pub last_sync_ms: Option<i64>,
    /// How far we are behind it: seqs (from its last version vector) and cells (as it
    /// told us at its last answer).
    pub we_lack_seqs: Option<u64>,
    /// See `we_lack_seqs`.
    pub we_lack_cells: Option<u64>,
    /// How far it is behind us, from its last version vector: seqs and cells.
    pub it_lacks_seqs: Option<u64>,
    /// See `it_lacks_seqs`.
    pub it_lacks_cells: Option<u64>,
    /// Messages from it that were rejected.
    pub rejected: u64,
    /// The last rejection, in words.
    pub last_rejection: Option<String>,
    /// Until when it is shunned, if it is.
    pub shunned_until_ms: Option<i64>,
    /// Bytes received from it and sent to it.
    pub bytes_in: u64,
    /// See `bytes_in`.
    pub bytes_out: u64,
    /// Its objectives' fingerprint, once its hello came (empty: none).
    pub objectives: Option<String>,
}

impl<P> PeerReport<P> {
    /// The report on a peer the protocol has not heard from.
    pub fn unknown(peer: P, connected: bool) -> Self {
        PeerReport {
            peer,
            connected,
            settings: Agreement::Unknown,
            last_sync_ms: None,
            we_lack_seqs: None,
            we_lack_cells: None,
            it_lacks_seqs: None,
            it_lacks_cells: None,
            rejected: 0,
            last_rejection: None,
            shunned_until_ms: None,
            bytes_in: 0,
            bytes_out: 0,
            objectives: None,
        }
    }

    /// The same report naming the peer otherwise.
    pub fn with_peer<Q>(self, peer: Q) -> PeerReport<Q> {
        PeerReport {
            peer,
            connected: self.connected,
            settings: self.settings,
            last_sync_ms: self.last_sync_ms,
            we_lack_seqs: self.we_lack_seqs,
            we_lack_cells: self.we_lack_cells,
            it_lacks_seqs: self.it_lacks_seqs,
            it_lacks_cells: self.it_lacks_cells,
            rejected: self.rejected,
            last_rejection: self.last_rejection,
            shunned_until_ms: self.shunned_until_ms,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            objectives: self.objectives,
        }
    }
}

#[derive(Debug)]
struct PeerState {
    connected: bool,
    agreement: Agreement,
    hello_sent_ms: Option<i64>,
    /// The receiving side of pages from this peer.
    transfer: Transfer,
    last_sync_ms: Option<i64>,
    /// Last time a session with it started, either way.
    last_session_ms: Option<i64>,
    /// Its version vector as of its last want.
    their_known: Option<VersionVector>,
    we_lack_cells: Option<u64>,
    rejected: u64,
    last_rejection: Option<String>,
    /// Offences since it was last shunned.
    offences: u32,
    shunned_until_ms: Option<i64>,
    bytes_in: u64,
    bytes_out: u64,
    /// Its objectives' fingerprint, from its last hello.
    objectives: Option<String>,
}

impl PeerState {
    fn new() -> Self {
        Self {
            connected: false,
            agreement: Agreement::Unknown,
            hello_sent_ms: None,
            transfer: Transfer::default(),
            last_sync_ms: None,
            last_session_ms: None,
            their_known: None,
            we_lack_cells: None,
            rejected: 0,
            last_rejection: None,
            offences: 0,
            shunned_until_ms: None,
            bytes_in: 0,
            bytes_out: 0,
            objectives: None,
        }
    }

    fn shunned(&self, now_ms: i64) -> bool {
        self.shunned_until_ms.is_some_and(|until| now_ms < until)
    }
}

/// Most bytes kept free in a message for its head (envelope, counters) when sizing pages
/// (an eighth of the message for small caps), besides the wants' own estimate.
const HEAD_RESERVE_BYTES: usize = 64 * 1024;
/// Bytes per origin of a want, an upper estimate.
const WANT_BYTES_PER_ORIGIN: usize = 160;

/// The anti-entropy state machine of one peer. `P` names peers (a libp2p `PeerId`, or a
/// number in the simulator). See the module documentation for how to drive it.
#[derive(Debug)]
pub struct Protocol<P> {
    config: ProtocolConfig,
    hello: Hello,
    rng: StdRng,
    peers: BTreeMap<P, PeerState>,
    outbox: VecDeque<(P, Message)>,
    actions: VecDeque<Action<P>>,
    next_round_ms: Option<i64>,
    next_session: u64,
    counters: MeshCounters,
}

impl<P: Clone + Ord + std::fmt::Display> Protocol<P> {
    /// A protocol for a peer whose settings have `fingerprint` and `canonical` text; its
    /// choices are drawn from an RNG seeded with `seed`.
    pub fn new(config: ProtocolConfig, fingerprint: String, canonical: String, seed: u64) -> Self {
        Self {
            config,
            hello: Hello { fingerprint, settings: canonical, answer_me: true, objectives: String::new() },
            rng: StdRng::seed_from_u64(seed),
            peers: BTreeMap::new(),
            outbox: VecDeque::new(),
            actions: VecDeque::new(),
            next_round_ms: None,
            next_session: 1,
            counters: MeshCounters::default(),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &ProtocolConfig {
        &self.config
    }

    /// A connection to `peer` came up.
    pub fn peer_connected(&mut self, now_ms: i64, peer: P) {
        let state = self.peers.entry(peer.clone()).or_insert_with(PeerState::new);
        if state.connected {
            return;
        }
        state.connected = true;
        // A reconnected peer may have restarted, with other settings too: its transfers
        // start afresh and it is not synced with until its hello (or a sync message with
        // our fingerprint) arrives.
        state.transfer = Transfer::default();
        state.agreement = Agreement::Unknown;
        state.hello_sent_ms = Some(now_ms);
        self.send(peer, Message::Hello(self.hello.clone()));
    }

    /// This peer's objectives changed (loaded or reloaded): tells every connected peer,
    /// with a hello that asks for no answer.
    pub fn set_objectives(&mut self, fingerprint: String) {
        if self.hello.objectives == fingerprint {
            return;
        }
        self.hello.objectives = fingerprint;
        let connected: Vec<P> =
            self.peers.iter().filter(|(_, s)| s.connected).map(|(p, _)| p.clone()).collect();
        for peer in connected {
            self.send(peer, Message::Hello(Hello { answer_me: false, ..self.hello.clone() }));
        }
    }

    /// The fingerprint of this peer's objectives.
    pub fn objectives(&self) -> &str {
        &self.hello.objectives
    }

    /// The last connection to `peer` went away.
    pub fn peer_disconnected(&mut self, _now_ms: i64, peer: P) {
        if let Some(state) = self.peers.get_mut(&peer) {
            state.connected = false;
            state.transfer = Transfer::default();
        }
    }

    /// Forgets everything about a disconnected `peer` (the peer book gave up on it): it is
    /// no longer reported. A connected peer is kept.
    pub fn forget(&mut self, peer: &P) {
        if self.peers.get(peer).is_some_and(|state| !state.connected) {
            self.peers.remove(peer);
        }
    }

    /// Peers that are connected, agree on settings and are not shunned.
    pub fn live_peers(&self, now_ms: i64) -> Vec<P> {
        self.peers
            .iter()
            .filter(|(_, s)| s.connected && s.agreement == Agreement::Agrees && !s.shunned(now_ms))
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// When [`Protocol::handle_tick`] has work next (the next round, or the next re-sent
    /// hello), on the driver's clock; `i64::MIN` before the first tick. A driver may tick
    /// at exactly these times instead of every 100 ms (the simulator does); ticking more
    /// often is harmless.
    pub fn poll_timeout(&self) -> i64 {
        let Some(next_round_ms) = self.next_round_ms else { return i64::MIN };
        let interval = self.config.sync_interval_ms.max(1);
        self.peers
            .values()
            .filter(|s| s.connected && s.agreement == Agreement::Unknown)
            .map(|s| s.hello_sent_ms.map_or(i64::MIN, |t| t + 5 * interval))
            .fold(next_round_ms, i64::min)
    }

    /// Starts a round when one is due, and re-sends unanswered hellos.
    pub fn handle_tick<R: Replica + ?Sized>(&mut self, now_ms: i64, replica: &R) {
        let interval = self.config.sync_interval_ms.max(1);
        let resend: Vec<P> = self
            .peers
            .iter()
            .filter(|(_, s)| {
                s.connected
                    && s.agreement == Agreement::Unknown
                    && s.hello_sent_ms.is_none_or(|t| now_ms - t >= 5 * interval)
            })
            .map(|(p, _)| p.clone())
            .collect();
        for peer in resend {
            if let Some(state) = self.peers.get_mut(&peer) {
                state.hello_sent_ms = Some(now_ms);
            }
            self.send(peer, Message::Hello(self.hello.clone()));
        }
        let due = *self.next_round_ms.get_or_insert(now_ms);
        if now_ms < due {
            return;
        }
        // Up to a tenth of an interval of jitter keeps peers from syncing in lockstep.
        let jitter = self.rng.random_range(0..=interval / 10);
        self.next_round_ms = Some(now_ms + interval - interval / 20 + jitter);
        self.start_round(now_ms, replica);
    }

    fn start_round<R: Replica + ?Sized>(&mut self, now_ms: i64, replica: &R) {
        let mut candidates: Vec<(Option<i64>, u64, P)> = self
            .live_peers(now_ms)
            .into_iter()
            .map(|p| (self.peers[&p].last_session_ms, self.rng.random::<u64>(), p))
            .collect();
        if candidates.is_empty() {
            return;
        }
        self.counters.rounds += 1;
        candidates.sort();
        for (_, _, peer) in candidates.into_iter().take(self.config.fanout) {
            self.open_session(now_ms, peer, replica);
        }
    }

    /// Opens a session with `peer` now, whatever the schedule (a driver may call this
    /// to push fresh changes eagerly).
    pub fn open_session<R: Replica + ?Sized>(&mut self, now_ms: i64, peer: P, replica: &R) {
        let Some(state) = self.peers.get_mut(&peer) else { return };
        state.last_session_ms = Some(now_ms);
        let want = replica.sync_request(&state.transfer);
        let session = self.next_session;
        self.next_session += 1;
        self.counters.sessions += 1;
        let head = SyncMessage {
            fingerprint: self.hello.fingerprint.clone(),
            session,
            step: 0,
            reply: false,
            want: Some(want),
            lag_cells: None,
        };
        self.send(peer, Message::Sync(head, Vec::new()));
    }

    /// A message could not be decoded or was too large: counts an offence.
    pub fn handle_malformed(&mut self, now_ms: i64, from: P, reason: &str) {
        self.offence(now_ms, from, reason.to_string());
    }

    /// Handles one message from `from`.
    pub fn handle_message<R: Replica + ?Sized>(
        &mut self,
        now_ms: i64,
        from: P,
        message: Message,
        replica: &mut R,
    ) {
        let state = self.peers.entry(from.clone()).or_insert_with(PeerState::new);
        if state.shunned(now_ms) {
            return;
        }
        if matches!(&message, Message::Sync(_, pages) if !pages.is_empty()) && !replica.has_room() {
            self.counters.pages_dropped_backlog += 1;
            tracing::debug!(peer = %from, "store backlog high; pages dropped, a later round brings them");
            return;
        }
        self.counters.messages_in += 1;
        match message {
            Message::Hello(hello) => self.handle_hello(from, hello),
            Message::Sync(head, pages) => self.handle_sync(now_ms, from, head, pages, replica),
        }
    }

    fn handle_hello(&mut self, from: P, hello: Hello) {
        let state = self.peers.get_mut(&from).expect("entry made by handle_message");
        let agreement = if hello.fingerprint == self.hello.fingerprint {
            Agreement::Agrees
        } else {
            Agreement::Differs {
                reason: format!(
                    "settings differ (fingerprint {} here, {} there): here {}; there {}",
                    self.hello.fingerprint, hello.fingerprint, self.hello.settings, hello.settings
                ),
                theirs: hello.fingerprint,
            }
        };
        if state.agreement != agreement {
            match &agreement {
                Agreement::Differs { reason, .. } => {
                    tracing::warn!(peer = %from, "not syncing with this peer: {reason}")
                }
                _ => tracing::info!(peer = %from, "peer's settings agree; syncing with it"),
            }
        }
        state.agreement = agreement;
        state.objectives = Some(hello.objectives);
        // Answer, so that both sides know even when our own hello was lost.
        if hello.answer_me {
            self.send(from, Message::Hello(Hello { answer_me: false, ..self.hello.clone() }));
        }
    }

    fn handle_sync<R: Replica + ?Sized>(
        &mut self,
        now_ms: i64,
        from: P,
        head: SyncMessage,
        pages: Vec<OriginDelta>,
        replica: &mut R,
    ) {
        if head.fingerprint != self.hello.fingerprint {
            let state = self.peers.get_mut(&from).expect("entry made by handle_message");
            if !matches!(state.agreement, Agreement::Differs { .. }) {
                // We have not seen its hello yet: ask for it.
                state.agreement = Agreement::Unknown;
                state.hello_sent_ms = Some(now_ms);
                self.send(from, Message::Hello(self.hello.clone()));
            }
            return;
        }
        if let Some(origin) = duplicate_origin(&pages) {
            self.offence(now_ms, from, format!("two pages of origin {origin} in one message"));
            return;
        }
        let state = self.peers.get_mut(&from).expect("entry made by handle_message");
        // It sent our fingerprint: its settings agree now, whatever an earlier run said.
        state.agreement = Agreement::Agrees;
        if head.step == 0 {
            state.last_session_ms = Some(now_ms);
        }
        let before = state.transfer.clone();
        let received_cells: usize = pages.iter().map(|p| p.cells.len()).sum();
        let outcomes = match replica.merge_pages(now_ms, pages, &mut state.transfer) {
            Ok(outcomes) => outcomes,
            Err(error) => {
                self.offence(now_ms, from, format!("corrupt delta: {error}"));
                return;
            }
        };
        let mut learned = state.transfer != before;
        for outcome in &outcomes {
            if !outcome.changed.is_empty() || outcome.advanced {
                learned = true;
                self.counters.deltas_applied += 1;
                self.counters.cells_applied += outcome.changed.len() as u64;
            }
        }
        if head.reply {
            state.we_lack_cells = head.lag_cells.map(|lag| lag.saturating_sub(received_cells as u64));
            if !learned {
                state.last_sync_ms = Some(now_ms);
                state.we_lack_cells = Some(0);
            }
        }
        if head.step + 1 >= self.config.session_messages_max {
            return;
        }
        // Ask (again) while the other side's pages teach us something; the side that did
        // not open the session asks in its first answer (push-pull).
        let ask = (head.reply && learned) || (head.step == 0 && !head.reply);
        let want = ask.then(|| replica.sync_request(&state.transfer));
        let (pages, lag_cells) = match &head.want {
            Some(their_want) => {
                state.their_known = Some(their_want.known.clone());
                let reserve = (self.config.message_bytes_max / 8).min(HEAD_RESERVE_BYTES)
                    + WANT_BYTES_PER_ORIGIN
                        * (their_want.known.dots.len() + want.as_ref().map_or(0, |w| w.known.dots.len()));
                let budget = self.config.message_bytes_max.saturating_sub(reserve).max(1);
                let (_, lag) = replica.lag_behind(&their_want.known);
                (replica.page_for(their_want, budget), Some(lag))
            }
            None => (Vec::new(), None),
        };
        if head.want.is_none() && want.is_none() {
            return; // Nothing to answer and nothing to ask: this side is done.
        }
        let reply = SyncMessage {
            fingerprint: self.hello.fingerprint.clone(),
            session: head.session,
            step: head.step + 1,
            reply: head.want.is_some(),
            want,
            lag_cells,
        };
        self.send(from, Message::Sync(reply, pages));
    }

    fn offence(&mut self, now_ms: i64, from: P, reason: String) {
        let state = self.peers.entry(from.clone()).or_insert_with(PeerState::new);
        state.rejected += 1;
        state.offences += 1;
        self.counters.rejected += 1;
        tracing::warn!(peer = %from, offences = state.offences, "message rejected: {reason}");
        state.last_rejection = Some(reason);
        if state.offences >= self.config.offences_max {
            let until_ms = now_ms + self.config.shun_ms;
            state.offences = 0;
            state.shunned_until_ms = Some(until_ms);
            state.transfer = Transfer::default();
            self.counters.shunned += 1;
            tracing::warn!(peer = %from, shun_ms = self.config.shun_ms, "disconnecting a peer after repeated offences");
            self.actions.push_back(Action::Shun { peer: from, until_ms });
        }
    }

    fn send(&mut self, to: P, message: Message) {
        self.counters.messages_out += 1;
        self.outbox.push_back((to, message));
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<(P, Message)> {
        self.outbox.pop_front()
    }

    /// The next action for the driver.
    pub fn poll_action(&mut self) -> Option<Action<P>> {
        self.actions.pop_front()
    }

    /// Reports the size of a message received from (`inbound`) or sent to a peer.
    pub fn note_bytes(&mut self, peer: &P, inbound: bool, bytes: usize) {
        let bytes = bytes as u64;
        let state = self.peers.entry(peer.clone()).or_insert_with(PeerState::new);
        if inbound {
            state.bytes_in += bytes;
            self.counters.bytes_in += bytes;
        } else {
            state.bytes_out += bytes;
            self.counters.bytes_out += bytes;
        }
    }

    /// The counters.
    pub fn counters(&self) -> MeshCounters {
        self.counters
    }

    /// What we know of every peer we have heard of.
    pub fn peer_reports<R: Replica + ?Sized>(&self, now_ms: i64, replica: &R) -> Vec<PeerReport<P>> {
        let ours = replica.version_vector();
        self.peers
            .iter()
            .map(|(peer, s)| {
                let they_lack = s.their_known.as_ref().map(|known| replica.lag_behind(known));
                let we_lack_seqs = s.their_known.as_ref().map(|theirs| {
                    theirs.dots.iter().map(|(origin, &seq)| seq.saturating_sub(ours.get(origin))).sum()
                });
                PeerReport {
                    peer: peer.clone(),
                    connected: s.connected,
                    settings: s.agreement.clone(),
                    last_sync_ms: s.last_sync_ms,
                    we_lack_seqs,
                    we_lack_cells: s.we_lack_cells,
                    it_lacks_seqs: they_lack.map(|(seqs, _)| seqs),
                    it_lacks_cells: they_lack.map(|(_, cells)| cells),
                    rejected: s.rejected,
                    last_rejection: s.last_rejection.clone(),
                    shunned_until_ms: s.shunned_until_ms.filter(|&until| now_ms < until),
                    bytes_in: s.bytes_in,
                    bytes_out: s.bytes_out,
                    objectives: s.objectives.clone(),
                }
            })
            .collect()
    }
}

fn duplicate_origin(pages: &[OriginDelta]) -> Option<&observatory_core::Origin> {
    let mut seen = std::collections::BTreeSet::new();
    pages.iter().map(|p| &p.origin).find(|origin| !seen.insert(*origin))
}
