//! The libp2p driver: runs the [`Protocol`] over a [`net`](crate::net) swarm.
//!
//! One task owns the swarm and the protocol. It turns swarm events into protocol inputs
//! (connections, messages, malformed messages), ticks the protocol every 100 ms, sends
//! what it queues, and keeps the peer book: every peer met (bootstrap addresses, mDNS,
//! identify, peers listed by other peers, peers persisted by an earlier run), redialled
//! with exponential backoff while disconnected. It publishes a [`MeshStatus`] for the
//! HTTP API twice a second.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libp2p::futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol as AddrPart;
use libp2p::request_response::{self, Message as RrMessage};
use libp2p::swarm::SwarmEvent;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId, Swarm, identify, mdns};
use observatory_correlate::Handoff;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::net::{Behaviour, BehaviourEvent, NetConfig, NetError, build_swarm};
use crate::protocol::{
    Action, Agreement, MeshCounters, Message, PeerReport, Protocol, ProtocolConfig, Replica,
};
use crate::wire::{self, ADDRS_PER_PEER_MAX, PEERS_LISTED_MAX};

/// What the driver needs of the peer beyond [`Replica`].
pub trait PeerReplica: Replica + Send + 'static {
    /// Cells merged from peers and not yet persisted. While this is above
    /// [`BACKLOG_CELLS_MAX`], messages with pages are dropped (the sessions end early and
    /// later rounds catch up), so memory stays bounded when the disk is slow.
    fn backlog_cells(&self) -> usize;
    /// Persists the peer book (peer id, multiaddrs), so that a restart finds the mesh.
    fn save_known_peers(&self, peers: Vec<(String, Vec<String>)>);
}

/// See [`PeerReplica::backlog_cells`].
pub const BACKLOG_CELLS_MAX: usize = 200_000;
/// First redial delay; doubles after every failure up to [`REDIAL_MAX`].
const REDIAL_MIN: Duration = Duration::from_secs(1);
/// Longest redial delay.
const REDIAL_MAX: Duration = Duration::from_secs(60);
/// How often the peer book is sent to connected peers.
const GOSSIP_EVERY: Duration = Duration::from_secs(10);
/// How often a changed peer book is persisted.
const SAVE_PEERS_EVERY: Duration = Duration::from_secs(5);
/// The response to every message: "received" (libp2p request-response wants one).
const ACK: &[u8] = b"\x01";
const TICK: Duration = Duration::from_millis(100);
const PUBLISH_EVERY: Duration = Duration::from_millis(500);

/// Settings of the mesh of one peer.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// Multiaddrs to listen on.
    pub listen: Vec<Multiaddr>,
    /// Multiaddrs to join (with or without `/p2p/<peer id>`; `/dns4/` names work).
    pub bootstrap: Vec<Multiaddr>,
    /// Peers known from an earlier run.
    pub known_peers: Vec<(PeerId, Vec<Multiaddr>)>,
    /// The network layer.
    pub net: NetConfig,
    /// The protocol.
    pub protocol: ProtocolConfig,
    /// Fingerprint and canonical text of the mesh-wide settings.
    pub fingerprint: String,
    /// See `fingerprint`.
    pub settings: String,
}

/// Why the mesh could not start.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// Building the swarm failed.
    #[error(transparent)]
    Net(#[from] NetError),
    /// A listen address was refused.
    #[error("cannot listen on {addr} (mesh.listen): {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
}

/// What `/api/v1/peers` and `/api/v1/status` show of the mesh.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MeshStatus {
    /// This peer's id.
    pub peer_id: String,
    /// Addresses other peers can dial, with `/p2p/<peer id>`.
    pub listen: Vec<String>,
    /// Counters since start.
    pub counters: MeshCounters,
    /// Every peer known, connected or not.
    pub peers: Vec<PeerStatus>,
}

/// One known peer.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    /// Its addresses.
    pub addresses: Vec<String>,
    /// What the protocol knows of it.
    #[serde(flatten)]
    pub report: PeerReport<String>,
    /// Milliseconds since its last successful sync.
    pub last_sync_age_ms: Option<i64>,
}

/// Most handoffs queued for sending, and most received ones waiting to be correlated.
pub const HANDOFFS_QUEUED_MAX: usize = 1024;

/// A handle on the running mesh.
#[derive(Debug, Clone)]
pub struct MeshHandle {
    status: Arc<Mutex<MeshStatus>>,
    live: Arc<Mutex<Vec<String>>>,
    handoffs_out: mpsc::Sender<(PeerId, Handoff)>,
}

/// Why a handoff was not queued; it comes back so the caller can keep it.
#[derive(Debug)]
pub struct HandoffRefused {
    /// What was not sent.
    pub handoff: Handoff,
    /// Why.
    pub reason: &'static str,
}

impl MeshHandle {
    /// The latest published status.
    pub fn status(&self) -> MeshStatus {
        self.status.lock().expect("no publisher panicked holding the status").clone()
    }

    /// This peer and every connected peer whose settings agree with ours (as published
    /// last), sorted: the peers that own traces and tokens.
    pub fn live_peers(&self) -> Vec<String> {
        self.live.lock().expect("no publisher panicked holding the live peers").clone()
    }

    /// Queues span halves and sightings for `peer` (a peer id in text form).
    pub fn hand_off(&self, peer: &str, handoff: Handoff) -> Result<(), HandoffRefused> {
        let Ok(peer) = peer.parse::<PeerId>() else {
            return Err(HandoffRefused { handoff, reason: "not a peer id" });
        };
        self.handoffs_out.try_send((peer, handoff)).map_err(|error| {
            let (_, handoff) = error.into_inner();
            HandoffRefused { handoff, reason: "the mesh's send queue is full or closed" }
        })
    }
}

/// A started mesh: where it listens, its handle, and the task (which ends on shutdown).
#[derive(Debug)]
pub struct StartedMesh {
    /// Listen addresses with `/p2p/<peer id>`.
    pub listen: Vec<Multiaddr>,
    /// The handle for the API.
    pub handle: MeshHandle,
    /// Handoffs from other peers `(peer id, handoff)`, for this peer to correlate as owner.
    /// At most [`HANDOFFS_QUEUED_MAX`] wait; more are dropped and counted.
    pub handoffs_in: mpsc::Receiver<(String, Handoff)>,
    /// The driver task.
    pub task: JoinHandle<()>,
}

fn unix_now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[derive(Debug)]
struct Known {
    addrs: BTreeSet<Multiaddr>,
    connections: u32,
    next_dial_ms: i64,
    backoff: Duration,
    shunned_until_ms: Option<i64>,
}

impl Known {
    fn new() -> Self {
        Self {
            addrs: BTreeSet::new(),
            connections: 0,
            next_dial_ms: 0,
            backoff: REDIAL_MIN,
            shunned_until_ms: None,
        }
    }
}

#[derive(Debug)]
struct Bootstrap {
    addr: Multiaddr,
    next_dial_ms: i64,
    backoff: Duration,
}

/// Builds the swarm, starts listening, and spawns the driver task. Returns once every
/// listen address is known (or after 5 s).
pub async fn start<R: PeerReplica>(
    keypair: Keypair,
    config: MeshConfig,
    replica: R,
    mut shutdown: watch::Receiver<bool>,
) -> Result<StartedMesh, MeshError> {
    let local = keypair.public().to_peer_id();
    let mut swarm = build_swarm(keypair, &config.net)?;
    let mut listeners = HashSet::new();
    for addr in &config.listen {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| MeshError::Listen { addr: addr.clone(), reason: e.to_string() })?;
        listeners.insert(id);
    }
    // Wait for the real addresses (port 0 gets one assigned).
    let mut listen = Vec::new();
    let deadline = tokio::time::sleep(Duration::from_secs(5));
    tokio::pin!(deadline);
    let mut pending = listeners.clone();
    while !pending.is_empty() {
        tokio::select! {
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { listener_id, address } => {
                    pending.remove(&listener_id);
                    listen.push(address);
                }
                SwarmEvent::ListenerClosed { listener_id, reason, .. } if listeners.contains(&listener_id) => {
                    let addr = config.listen.first().cloned().unwrap_or_else(Multiaddr::empty);
                    let reason = match reason { Err(e) => e.to_string(), Ok(()) => "closed".into() };
                    return Err(MeshError::Listen { addr, reason });
                }
                SwarmEvent::ListenerError { error, .. } => {
                    let addr = config.listen.first().cloned().unwrap_or_else(Multiaddr::empty);
                    return Err(MeshError::Listen { addr, reason: error.to_string() });
                }
                _ => {}
            },
            _ = &mut deadline => break,
        }
    }
    // Let more addresses of wildcard listeners arrive briefly.
    let settle = tokio::time::sleep(Duration::from_millis(50));
    tokio::pin!(settle);
    loop {
        tokio::select! {
            event = swarm.select_next_some() => if let SwarmEvent::NewListenAddr { address, .. } = event {
                listen.push(address);
            },
            _ = &mut settle => break,
        }
    }
    let listen: Vec<Multiaddr> =
        listen.into_iter().map(|a| a.with_p2p(local).unwrap_or_else(|a| a)).collect();

    let now = unix_now_ms();
    let seed =
        u64::from_le_bytes(local.to_bytes()[local.to_bytes().len() - 8..].try_into().expect("8 bytes"))
            ^ now as u64;
    let protocol =
        Protocol::new(config.protocol.clone(), config.fingerprint.clone(), config.settings.clone(), seed);
    let status = Arc::new(Mutex::new(MeshStatus {
        peer_id: local.to_string(),
        listen: listen.iter().map(ToString::to_string).collect(),
        ..MeshStatus::default()
    }));
    let live = Arc::new(Mutex::new(vec![local.to_string()]));
    let (handoffs_out, mut handoffs_to_send) = mpsc::channel(HANDOFFS_QUEUED_MAX);
    let (handoffs_received, handoffs_in) = mpsc::channel(HANDOFFS_QUEUED_MAX);
    let mut driver = Driver {
        live: live.clone(),
        handoffs_received,
        handoffs_dropped: 0,
        local,
        swarm,
        protocol,
        replica,
        known: BTreeMap::new(),
        bootstrap: Vec::new(),
        listen: listen.clone(),
        status: status.clone(),
        peers_dirty: false,
        message_bytes_max: config.net.message_bytes_max,
    };
    for (peer, addrs) in config.known_peers {
        driver.learn(peer, addrs, false);
    }
    for addr in config.bootstrap {
        match peer_of(&addr) {
            Some(peer) => driver.learn(peer, vec![addr], true),
            None => driver.bootstrap.push(Bootstrap { addr, next_dial_ms: 0, backoff: REDIAL_MIN }),
        }
    }
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_publish = 0i64;
        let mut next_gossip = 0i64;
        let mut next_save = 0i64;
        loop {
            tokio::select! {
                event = driver.swarm.select_next_some() => driver.on_event(event),
                Some((peer, handoff)) = handoffs_to_send.recv() => driver.send(peer, Message::Handoff(handoff)),
                _ = tick.tick() => {
                    let now = unix_now_ms();
                    driver.protocol.handle_tick(now, &driver.replica);
                    driver.redial(now);
                    if now >= next_gossip {
                        next_gossip = now + GOSSIP_EVERY.as_millis() as i64;
                        driver.gossip_all();
                    }
                    if now >= next_save {
                        next_save = now + SAVE_PEERS_EVERY.as_millis() as i64;
                        driver.save_peers();
                    }
                    if now >= next_publish {
                        next_publish = now + PUBLISH_EVERY.as_millis() as i64;
                        driver.publish(now);
                    }
                }
                _ = shutdown.changed() => break,
            }
            driver.flush();
        }
        driver.peers_dirty = true;
        driver.save_peers();
        tracing::info!("mesh stopped");
    });
    Ok(StartedMesh { listen, handle: MeshHandle { status, live, handoffs_out }, handoffs_in, task })
}

/// The peer id at the end of a multiaddr, if any.
fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|part| match part {
        AddrPart::P2p(peer) => Some(peer),
        _ => None,
    })
}

/// Whether an address is worth dialling (not a wildcard, not a memory or relay address).
fn dialable(addr: &Multiaddr) -> bool {
    !addr.iter().any(|part| match part {
        AddrPart::Ip4(ip) => ip.is_unspecified(),
        AddrPart::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}

struct Driver<R> {
    local: PeerId,
    live: Arc<Mutex<Vec<String>>>,
    handoffs_received: mpsc::Sender<(String, Handoff)>,
    handoffs_dropped: u64,
    swarm: Swarm<Behaviour>,
    protocol: Protocol<PeerId>,
    replica: R,
    known: BTreeMap<PeerId, Known>,
    bootstrap: Vec<Bootstrap>,
    listen: Vec<Multiaddr>,
    status: Arc<Mutex<MeshStatus>>,
    peers_dirty: bool,
    message_bytes_max: usize,
}

impl<R: PeerReplica> Driver<R> {
    /// Adds a peer and addresses to the book; `now` dials it at the next tick.
    fn learn(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, now: bool) {
        if peer == self.local {
            return;
        }
        let known = self.known.entry(peer).or_insert_with(|| {
            self.peers_dirty = true;
            Known::new()
        });
        for addr in addrs {
            let addr = match peer_of(&addr) {
                Some(_) => addr,
                None => addr.with_p2p(peer).unwrap_or_else(|a| a),
            };
            if dialable(&addr) && known.addrs.len() < ADDRS_PER_PEER_MAX && known.addrs.insert(addr) {
                self.peers_dirty = true;
            }
        }
        if now {
            known.next_dial_ms = 0;
        }
    }

    fn redial(&mut self, now: i64) {
        let mut dials = Vec::new();
        for (peer, known) in &mut self.known {
            if known.connections > 0 || known.addrs.is_empty() || now < known.next_dial_ms {
                continue;
            }
            if known.shunned_until_ms.is_some_and(|until| now < until) {
                continue;
            }
            known.next_dial_ms = now + known.backoff.as_millis() as i64;
            known.backoff = (known.backoff * 2).min(REDIAL_MAX);
            dials.push((*peer, known.addrs.iter().cloned().collect::<Vec<_>>()));
        }
        for (peer, addrs) in dials {
            let opts = DialOpts::peer_id(peer)
                .addresses(addrs)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if let Err(error) = self.swarm.dial(opts) {
                tracing::debug!(%peer, %error, "dial not started");
            }
        }
        for boot in &mut self.bootstrap {
            if now < boot.next_dial_ms {
                continue;
            }
            // Once its peer is known by id, the peer book dials it.
            boot.next_dial_ms = now + boot.backoff.as_millis() as i64;
            boot.backoff = (boot.backoff * 2).min(REDIAL_MAX);
            if let Err(error) = self.swarm.dial(boot.addr.clone()) {
                tracing::debug!(addr = %boot.addr, %error, "bootstrap dial not started");
            }
        }
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        let now = unix_now_ms();
        match event {
            SwarmEvent::ConnectionEstablished { peer_id, endpoint, num_established, .. } => {
                if endpoint.is_dialer() {
                    let addr = endpoint.get_remote_address().clone();
                    // A bootstrap address without a peer id: now we know whose it is.
                    if let Some(at) = self.bootstrap.iter().position(|b| b.addr == addr) {
                        let boot = self.bootstrap.swap_remove(at);
                        tracing::info!(peer = %peer_id, addr = %boot.addr, "bootstrap peer reached");
                    }
                    self.learn(peer_id, vec![addr], false);
                } else {
                    self.learn(peer_id, Vec::new(), false);
                }
                let known = self.known.get_mut(&peer_id).expect("learned just above");
                if known.shunned_until_ms.is_some_and(|until| now < until) {
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                known.connections = num_established.get();
                known.backoff = REDIAL_MIN;
                if num_established.get() == 1 {
                    tracing::info!(peer = %peer_id, "peer connected");
                    self.protocol.peer_connected(now, peer_id);
                    self.gossip(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established, cause, .. } => {
                if let Some(known) = self.known.get_mut(&peer_id) {
                    known.connections = num_established;
                    known.next_dial_ms = now + known.backoff.as_millis() as i64;
                }
                if num_established == 0 {
                    tracing::info!(peer = %peer_id, cause = ?cause.map(|c| c.to_string()), "peer disconnected");
                    self.protocol.peer_disconnected(now, peer_id);
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(peer = ?peer_id, %error, "dial failed");
            }
            SwarmEvent::IncomingConnectionError { send_back_addr, error, .. } => {
                tracing::debug!(from = %send_back_addr, %error, "incoming connection failed");
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                let address = address.with_p2p(self.local).unwrap_or_else(|a| a);
                if !self.listen.contains(&address) {
                    tracing::info!(%address, "listening for peers");
                    self.listen.push(address);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(event)) => self.on_sync_event(now, event),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                self.learn(peer_id, info.listen_addrs, false);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    tracing::debug!(%peer, %addr, "found by mDNS");
                    self.learn(peer, vec![addr], true);
                }
            }
            _ => {}
        }
    }

    fn on_sync_event(&mut self, now: i64, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        match event {
            request_response::Event::Message {
                peer,
                message: RrMessage::Request { request, channel, .. },
                ..
            } => {
                let _ = self.swarm.behaviour_mut().sync.send_response(channel, ACK.to_vec());
                self.protocol.note_bytes(&peer, true, request.len());
                match wire::decode_message(&request) {
                    Ok(Message::Peers(peers)) => self.on_peers(peers),
                    Ok(Message::Handoff(handoff)) => {
                        if self.handoffs_received.try_send((peer.to_string(), handoff)).is_err() {
                            self.handoffs_dropped += 1;
                            tracing::warn!(%peer, "a handoff of span halves was dropped: the correlator is behind");
                        }
                    }
                    Ok(message) => {
                        let has_pages = matches!(&message, Message::Sync(_, pages) if !pages.is_empty());
                        if has_pages && self.replica.backlog_cells() > BACKLOG_CELLS_MAX {
                            tracing::debug!(%peer, "store backlog high; pages dropped, a later round brings them");
                            return;
                        }
                        self.protocol.handle_message(now, peer, message, &mut self.replica);
                    }
                    Err(error) => self.protocol.handle_malformed(now, peer, &error.to_string()),
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                // Failures reported here are of our answer (a closed connection, a
                // timeout), not of the peer's message: a message too large to read is
                // refused by the codec before libp2p reports it (and logged there).
                tracing::debug!(%peer, %error, "inbound message failed");
            }
            request_response::Event::OutboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "message not delivered");
                // No ack within the request timeout: the connection is most likely dead
                // (a cut cable leaves TCP retransmitting for many minutes). Close it, so
                // the peer counts as down and is redialled.
                if matches!(error, request_response::OutboundFailure::Timeout) {
                    tracing::info!(%peer, "peer did not answer in time; closing the connection to redial");
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
            }
            _ => {}
        }
    }

    fn on_peers(&mut self, peers: Vec<(String, Vec<String>)>) {
        for (peer, addrs) in peers {
            let Ok(peer) = peer.parse::<PeerId>() else { continue };
            let addrs: Vec<Multiaddr> = addrs.iter().filter_map(|a| a.parse().ok()).collect();
            if !self.known.contains_key(&peer) && peer != self.local {
                tracing::info!(%peer, "learned of a peer from another peer");
            }
            self.learn(peer, addrs, false);
        }
    }

    fn book(&self) -> Vec<(String, Vec<String>)> {
        self.known
            .iter()
            .filter(|(_, k)| !k.addrs.is_empty())
            .take(PEERS_LISTED_MAX)
            .map(|(p, k)| (p.to_string(), k.addrs.iter().map(ToString::to_string).collect()))
            .collect()
    }

    fn gossip(&mut self, to: PeerId) {
        let mut book = self.book();
        // Tell it how to reach us too.
        let ours: Vec<String> = self.listen.iter().filter(|a| dialable(a)).map(ToString::to_string).collect();
        if !ours.is_empty() && book.len() < PEERS_LISTED_MAX {
            book.push((self.local.to_string(), ours.into_iter().take(ADDRS_PER_PEER_MAX).collect()));
        }
        self.send(to, Message::Peers(book));
    }

    fn gossip_all(&mut self) {
        let connected: Vec<PeerId> =
            self.known.iter().filter(|(_, k)| k.connections > 0).map(|(p, _)| *p).collect();
        for peer in connected {
            self.gossip(peer);
        }
    }

    fn save_peers(&mut self) {
        if self.peers_dirty {
            self.peers_dirty = false;
            self.replica.save_known_peers(self.book());
        }
    }

    fn send(&mut self, to: PeerId, message: Message) {
        let bytes = wire::encode_message(message);
        if bytes.len() > self.message_bytes_max {
            tracing::error!(
                peer = %to, bytes = bytes.len(), max = self.message_bytes_max,
                "a message came out larger than mesh.message_bytes_max and was not sent; \
                 raise mesh.message_bytes_max on every peer"
            );
            return;
        }
        self.protocol.note_bytes(&to, false, bytes.len());
        self.swarm.behaviour_mut().sync.send_request(&to, bytes);
    }

    /// Sends what the protocol queued and carries out its actions.
    fn flush(&mut self) {
        while let Some((to, message)) = self.protocol.poll_transmit() {
            self.send(to, message);
        }
        while let Some(action) = self.protocol.poll_action() {
            match action {
                Action::Shun { peer, until_ms } => {
                    self.known.entry(peer).or_insert_with(Known::new).shunned_until_ms = Some(until_ms);
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
            }
        }
    }

    fn publish(&mut self, now: i64) {
        let reports = self.protocol.peer_reports(now, &self.replica);
        let mut peers: BTreeMap<PeerId, PeerStatus> = BTreeMap::new();
        for report in reports {
            let addresses = self
                .known
                .get(&report.peer)
                .map(|k| k.addrs.iter().map(ToString::to_string).collect())
                .unwrap_or_default();
            let peer = report.peer;
            let connected = self.known.get(&peer).is_some_and(|k| k.connections > 0);
            peers.insert(
                peer,
                PeerStatus {
                    addresses,
                    last_sync_age_ms: report.last_sync_ms.map(|t| now - t),
                    report: PeerReport { connected, ..report.with_peer(peer.to_string()) },
                },
            );
        }
        for (peer, known) in &self.known {
            peers.entry(*peer).or_insert_with(|| PeerStatus {
                addresses: known.addrs.iter().map(ToString::to_string).collect(),
                last_sync_age_ms: None,
                report: PeerReport {
                    peer: peer.to_string(),
                    connected: known.connections > 0,
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
                },
            });
        }
        let mut live: Vec<String> = peers
            .values()
            .filter(|p| p.report.connected && matches!(p.report.settings, Agreement::Agrees))
            .map(|p| p.report.peer.clone())
            .chain([self.local.to_string()])
            .collect();
        live.sort();
        *self.live.lock().expect("no reader panics holding the live peers") = live;
        let status = MeshStatus {
            peer_id: self.local.to_string(),
            listen: self.listen.iter().map(ToString::to_string).collect(),
            counters: MeshCounters { handoffs_dropped: self.handoffs_dropped, ..self.protocol.counters() },
            peers: peers.into_values().collect(),
        };
        *self.status.lock().expect("no publisher panicked holding the status") = status;
    }
}
