//! The peer book as a sans-IO state machine: which peers this peer knows, when to dial
//! them, what to tell other peers, what to save, and when to forget.
//!
//! # Driving contract
//! [`PeerBook`] owns no socket, file or clock. A driver (the libp2p driver, or the
//! simulator) feeds it what it learns and carries out what it asks:
//!
//! - [`PeerBook::learn`] for every peer and addresses met (bootstrap addresses with a peer
//!   id, mDNS, identify, the book persisted by an earlier run), [`PeerBook::add_bootstrap`]
//!   for bootstrap addresses without one, [`PeerBook::handle_gossip`] for a list of peers
//!   another peer sent.
//! - [`PeerBook::connected`] / [`PeerBook::disconnected`] as connections come and go, and
//!   [`PeerBook::shun`] when the protocol asks to refuse a peer for a while.
//! - [`PeerBook::handle_tick`] at [`PeerBook::poll_timeout`] (or more often); it dials
//!   what is due, gossips, saves and forgets.
//! - After each call, drain [`PeerBook::poll_output`]: dials, peer lists to send, the
//!   book to save, peers to disconnect, peers forgotten.
//!
//! A disconnected peer is redialled after `redial_min`, the delay doubling after every
//! dial up to `redial_max` and starting again from `redial_min` once a connection comes
//! up. Every call takes `now_ms` on one clock that does not go backwards.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Display;

use crate::wire::{ADDRS_PER_PEER_MAX, PEERS_LISTED_MAX};
use observatory_core::backoff::Backoff;

/// Settings of the peer book (`mesh.*` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerBookConfig {
    /// First redial delay (`mesh.redial_min`).
    pub redial_min_ms: i64,
    /// Longest redial delay (`mesh.redial_max`).
    pub redial_max_ms: i64,
    /// A peer not connected for this long is forgotten; `None` keeps every peer.
    pub forget_after_ms: Option<i64>,
    /// Most forgotten peers remembered, so that gossip does not bring them straight back
    /// (`mesh.forgotten_peers_max`).
    pub forgotten_max: usize,
    /// Most peers kept (`mesh.known_peers_max`): beyond, peers learned from gossip or
    /// identify are ignored; bootstrap peers and connections are always taken.
    pub known_max: usize,
    /// How often connected peers are sent the book (`mesh.gossip_interval`).
    pub gossip_interval_ms: i64,
    /// How often a changed book is saved (`mesh.save_peers_interval`).
    pub save_interval_ms: i64,
}

/// Something the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BookOutput<P, A> {
    /// Dial `peer` at these addresses (unless already connected or dialling).
    Dial {
        /// The peer.
        peer: P,
        /// Its addresses.
        addrs: Vec<A>,
    },
    /// Dial a bootstrap address whose peer is not known yet.
    DialAddress(A),
    /// Send `peers` (peer and addresses, this peer's own among them) to `to`.
    Gossip {
        /// The receiver.
        to: P,
        /// The list.
        peers: Vec<(P, Vec<A>)>,
    },
    /// Persist the book: each peer with its addresses, replacing what was saved of it; a
    /// peer without addresses (forgotten) is deleted.
    Save(Vec<(P, Vec<A>)>),
    /// Close the connections to a shunned peer that connected.
    Disconnect(P),
    /// The peer was forgotten: the driver drops what else it keeps of it.
    Forgotten(P),
}

#[derive(Debug)]
struct Known<A> {
    addrs: BTreeSet<A>,
    connections: u32,
    next_dial_ms: i64,
    backoff: Backoff,
    shunned_until_ms: Option<i64>,
    /// When it was last connected, or learned if never.
    seen_ms: i64,
    /// Named in the bootstrap list: never forgotten.
    pinned: bool,
}

#[derive(Debug)]
struct Bootstrap<A> {
    addr: A,
    next_dial_ms: i64,
    backoff: Backoff,
}

/// The peers one peer knows. `P` names peers, `A` is an address. See the module
/// documentation for how to drive it.
#[derive(Debug)]
pub struct PeerBook<P, A> {
    config: PeerBookConfig,
    local: P,
    local_addrs: Vec<A>,
    known: BTreeMap<P, Known<A>>,
    bootstrap: Vec<Bootstrap<A>>,
    /// Forgotten peers and until when gossip about them is ignored.
    tombstones: BTreeMap<P, i64>,
    forgotten_unsaved: Vec<P>,
    dirty: bool,
    next_gossip_ms: Option<i64>,
    next_save_ms: Option<i64>,
    outputs: VecDeque<BookOutput<P, A>>,
}

impl<P: Clone + Ord + Display, A: Clone + Ord> PeerBook<P, A> {
    /// An empty book of the peer `local`.
    pub fn new(config: PeerBookConfig, local: P) -> Self {
        Self {
            config,
            local,
            local_addrs: Vec::new(),
            known: BTreeMap::new(),
            bootstrap: Vec::new(),
            tombstones: BTreeMap::new(),
            forgotten_unsaved: Vec::new(),
            dirty: false,
            next_gossip_ms: None,
            next_save_ms: None,
            outputs: VecDeque::new(),
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(self.config.redial_min_ms, self.config.redial_max_ms)
    }

    /// The addresses other peers can dial this one at (told with gossip).
    pub fn set_local_addrs(&mut self, addrs: Vec<A>) {
        self.local_addrs = addrs.into_iter().take(ADDRS_PER_PEER_MAX).collect();
    }

    /// Adds a peer and addresses (at most [`ADDRS_PER_PEER_MAX`] are kept). With
    /// `dial_now` it is dialled at the next tick, whatever its backoff.
    ///
    /// A new peer beyond `known_max` is ignored unless it is to be dialled now (found by
    /// mDNS), so that gossip cannot fill the book.
    pub fn learn(&mut self, now_ms: i64, peer: P, addrs: Vec<A>, dial_now: bool) {
        let full = self.known.len() >= self.config.known_max;
        if full && !dial_now && !self.known.contains_key(&peer) {
            return;
        }
        self.learn_always(now_ms, peer, addrs, dial_now);
    }

    fn learn_always(&mut self, now_ms: i64, peer: P, addrs: Vec<A>, dial_now: bool) {
        if peer == self.local {
            return;
        }
        self.tombstones.remove(&peer);
        let backoff = self.backoff();
        let known = self.known.entry(peer).or_insert_with(|| {
            self.dirty = true;
            Known {
                addrs: BTreeSet::new(),
                connections: 0,
                next_dial_ms: now_ms,
                backoff,
                shunned_until_ms: None,
                seen_ms: now_ms,
                pinned: false,
            }
        });
        for addr in addrs {
            if known.addrs.len() < ADDRS_PER_PEER_MAX && known.addrs.insert(addr) {
                self.dirty = true;
            }
        }
        if dial_now {
            known.next_dial_ms = now_ms;
        }
    }

    /// Learns a peer named in the bootstrap list: dialled now and never forgotten.
    pub fn learn_pinned(&mut self, now_ms: i64, peer: P, addrs: Vec<A>) {
        let pinned = peer.clone();
        self.learn_always(now_ms, peer, addrs, true);
        if let Some(known) = self.known.get_mut(&pinned) {
            known.pinned = true;
        }
    }

    /// A bootstrap address without a peer id: dialled with backoff until a connection to
    /// it comes up (then its peer is known by id).
    pub fn add_bootstrap(&mut self, now_ms: i64, addr: A) {
        let backoff = self.backoff();
        self.bootstrap.push(Bootstrap { addr, next_dial_ms: now_ms, backoff });
    }

    /// A list of peers from `from`. Peers forgotten lately are not taken back from gossip
    /// (only a connection, mDNS or the bootstrap list brings them back). Returns the peers
    /// that were new.
    pub fn handle_gossip(&mut self, now_ms: i64, peers: Vec<(P, Vec<A>)>) -> Vec<P> {
        let mut new = Vec::new();
        for (peer, addrs) in peers {
            if peer == self.local || self.tombstones.get(&peer).is_some_and(|&until| now_ms < until) {
                continue;
            }
            let was_known = self.known.contains_key(&peer);
            self.learn(now_ms, peer.clone(), addrs, false);
            if !was_known && self.known.contains_key(&peer) {
                new.push(peer);
            }
        }
        new
    }

    /// A connection we dialled to `addr` came up: if it was a bootstrap address without a
    /// peer id, it is no longer dialled as such (its peer is known by id now). Returns
    /// whether it was one.
    pub fn bootstrap_reached(&mut self, addr: &A) -> bool {
        let before = self.bootstrap.len();
        self.bootstrap.retain(|boot| &boot.addr != addr);
        self.bootstrap.len() != before
    }

    /// A connection to `peer` came up; `addrs` are addresses learned from it (the one we
    /// dialled, if we did). `established` counts its connections now. Returns false when
    /// the peer is shunned (the book then asks to disconnect it).
    pub fn connected(&mut self, now_ms: i64, peer: P, addrs: Vec<A>, established: u32) -> bool {
        self.learn_always(now_ms, peer.clone(), addrs, false);
        let known = self.known.get_mut(&peer).expect("learned just above");
        if known.shunned_until_ms.is_some_and(|until| now_ms < until) {
            self.outputs.push_back(BookOutput::Disconnect(peer));
            return false;
        }
        known.connections = established;
        known.backoff.reset();
        known.seen_ms = now_ms;
        true
    }

    /// A connection to `peer` went away; `remaining` are still up.
    pub fn disconnected(&mut self, now_ms: i64, peer: &P, remaining: u32) {
        if let Some(known) = self.known.get_mut(peer) {
            known.connections = remaining;
            known.seen_ms = now_ms;
            known.next_dial_ms = now_ms + known.backoff.delay_ms();
        }
    }

    /// Refuse `peer` until `until_ms` (the protocol's verdict after repeated offences).
    pub fn shun(&mut self, now_ms: i64, peer: P, until_ms: i64) {
        self.learn_always(now_ms, peer.clone(), Vec::new(), false);
        if let Some(known) = self.known.get_mut(&peer) {
            known.shunned_until_ms = Some(until_ms);
            known.next_dial_ms = known.next_dial_ms.max(until_ms);
        }
    }

    /// Dials what is due, gossips and saves when due, and forgets peers gone too long.
    pub fn handle_tick(&mut self, now_ms: i64) {
        self.forget_gone(now_ms);
        for (peer, known) in &mut self.known {
            if known.connections > 0 || known.addrs.is_empty() || now_ms < known.next_dial_ms {
                continue;
            }
            if known.shunned_until_ms.is_some_and(|until| now_ms < until) {
                continue;
            }
            known.next_dial_ms = now_ms + known.backoff.next_ms();
            let addrs = known.addrs.iter().cloned().collect();
            self.outputs.push_back(BookOutput::Dial { peer: peer.clone(), addrs });
        }
        for boot in &mut self.bootstrap {
            if now_ms < boot.next_dial_ms {
                continue;
            }
            boot.next_dial_ms = now_ms + boot.backoff.next_ms();
            self.outputs.push_back(BookOutput::DialAddress(boot.addr.clone()));
        }
        if self.next_gossip_ms.is_none_or(|at| now_ms >= at) {
            self.next_gossip_ms = Some(now_ms + self.config.gossip_interval_ms);
            let connected: Vec<P> =
                self.known.iter().filter(|(_, k)| k.connections > 0).map(|(p, _)| p.clone()).collect();
            for peer in connected {
                self.gossip(peer);
            }
        }
        if self.next_save_ms.is_none_or(|at| now_ms >= at) {
            self.next_save_ms = Some(now_ms + self.config.save_interval_ms);
            self.save_if_changed();
        }
    }

    fn forget_gone(&mut self, now_ms: i64) {
        let Some(after_ms) = self.config.forget_after_ms else { return };
        let gone: Vec<P> = self
            .known
            .iter()
            .filter(|(_, k)| k.connections == 0 && !k.pinned && now_ms - k.seen_ms >= after_ms)
            .map(|(p, _)| p.clone())
            .collect();
        for peer in gone {
            tracing::info!(%peer, "forgetting a peer not seen for mesh.forget_after");
            self.known.remove(&peer);
            if self.tombstones.len() >= self.config.forgotten_max.max(1)
                && let Some(oldest) =
                    self.tombstones.iter().min_by_key(|(_, until)| **until).map(|(p, _)| p.clone())
            {
                self.tombstones.remove(&oldest);
            }
            self.tombstones.insert(peer.clone(), now_ms + after_ms);
            self.forgotten_unsaved.push(peer.clone());
            self.dirty = true;
            self.outputs.push_back(BookOutput::Forgotten(peer));
        }
        self.tombstones.retain(|_, until| now_ms < *until);
    }

    /// Sends the book to `to` (also right after it connects).
    pub fn gossip(&mut self, to: P) {
        let mut peers = self.listed();
        if !self.local_addrs.is_empty() && peers.len() < PEERS_LISTED_MAX {
            peers.push((self.local.clone(), self.local_addrs.clone()));
        }
        self.outputs.push_back(BookOutput::Gossip { to, peers });
    }

    fn listed(&self) -> Vec<(P, Vec<A>)> {
        self.known
            .iter()
            .filter(|(_, k)| !k.addrs.is_empty())
            .take(PEERS_LISTED_MAX)
            .map(|(p, k)| (p.clone(), k.addrs.iter().cloned().collect()))
            .collect()
    }

    fn save_if_changed(&mut self) {
        if self.dirty {
            self.save_all();
        }
    }

    /// Asks to save the whole book now (as the peer stops).
    pub fn save_all(&mut self) {
        self.dirty = false;
        let mut peers = self.listed();
        peers.extend(self.forgotten_unsaved.drain(..).map(|peer| (peer, Vec::new())));
        self.outputs.push_back(BookOutput::Save(peers));
    }

    /// When [`PeerBook::handle_tick`] has work next; `i64::MIN` before the first tick.
    pub fn poll_timeout(&self) -> i64 {
        let (Some(gossip), Some(save)) = (self.next_gossip_ms, self.next_save_ms) else { return i64::MIN };
        let dials = self
            .known
            .values()
            .filter(|k| k.connections == 0 && !k.addrs.is_empty())
            .map(|k| k.next_dial_ms.max(k.shunned_until_ms.unwrap_or(i64::MIN)));
        let boots = self.bootstrap.iter().map(|b| b.next_dial_ms);
        let forget = self.config.forget_after_ms.and_then(|after| {
            self.known.values().filter(|k| k.connections == 0 && !k.pinned).map(|k| k.seen_ms + after).min()
        });
        dials.chain(boots).chain(forget).fold(gossip.min(save), i64::min)
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<BookOutput<P, A>> {
        self.outputs.pop_front()
    }

    /// Every known peer with its addresses and whether it is connected, by peer.
    pub fn peers(&self) -> impl Iterator<Item = (&P, &BTreeSet<A>, bool)> {
        self.known.iter().map(|(p, k)| (p, &k.addrs, k.connections > 0))
    }

    /// Whether `peer` has a connection up.
    pub fn is_connected(&self, peer: &P) -> bool {
        self.known.get(peer).is_some_and(|k| k.connections > 0)
    }

    /// The addresses known for `peer`.
    pub fn addresses(&self, peer: &P) -> Option<&BTreeSet<A>> {
        self.known.get(peer).map(|k| &k.addrs)
    }
}
