//! The libp2p driver: runs the sans-IO [`Protocol`] and [`PeerBook`] over a
//! [`net`](crate::net) swarm.
//!
//! One task owns the swarm and both state machines, and does only IO: it turns swarm
//! events into their inputs (connections, messages, malformed messages, addresses
//! learned), wakes them at their `poll_timeout`, and carries out what they ask (send,
//! dial, disconnect, save the book). What to do and when is decided by the state
//! machines, exactly as in the simulator. The task publishes a [`MeshStatus`] every
//! `mesh.status_interval` for the rest of the peer, and ends when `shutdown` is
//! cancelled, saving the book on the way out.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol as AddrPart;
use libp2p::request_response::{self, Message as RrMessage};
use libp2p::swarm::SwarmEvent;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId, Swarm, identify, mdns};
use observatory_core::Clock;
use observatory_correlate::Handoff;
use observatory_sync::protocol::{Action, MeshCounters, Protocol, Replica};
use observatory_sync::status::Local;
use observatory_sync::wire::{self, MeshMessage};
use observatory_sync::{BookOutput, MeshStatus, PeerBook};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::net::{Behaviour, BehaviourEvent, build_swarm};
use crate::settings::MeshSettings;
use crate::{MeshError, NetError};

/// What the driver needs of the peer beyond [`Replica`].
pub trait PeerReplica: Replica + Send + 'static {
    /// Persists the peer book (peer id, multiaddrs; none means forget it), so that a
    /// restart finds the mesh.
    fn save_known_peers(&self, peers: Vec<(String, Vec<String>)>);
}

/// The response to every message: "received" (libp2p request-response wants one). For a
/// handoff it means "taken": the owner's correlator has it queued.
const ACK: &[u8] = b"\x01";

/// The response to a handoff the owner could not queue (its correlator is behind): the
/// sender takes it back. (Peers before acknowledgements answered ACK to everything.)
const BUSY: &[u8] = b"\x02";

/// A handoff this peer sent that its owner certainly did not take.
#[derive(Debug)]
pub struct ReturnedHandoff {
    /// The peer it was sent to.
    pub peer: String,
    /// What it held.
    pub handoff: Handoff,
    /// Why it came back.
    pub reason: String,
    /// Whether to send it on to the next owner (it never reached this one: no connection
    /// could be made); else the sender holds it (the owner was busy, or it was too large
    /// to send), so that it does not travel between busy peers.
    pub send_on: bool,
}

/// A handle on the running mesh.
#[derive(Debug, Clone)]
pub struct MeshHandle {
    status: Arc<Mutex<MeshStatus>>,
    live: Arc<Mutex<Vec<String>>>,
    handoffs_out: mpsc::Sender<(PeerId, Handoff)>,
    objectives: tokio::sync::watch::Sender<String>,
    sync_interval_ms: i64,
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

    /// The time between anti-entropy rounds (`mesh.sync_interval`).
    pub fn sync_interval_ms(&self) -> i64 {
        self.sync_interval_ms
    }

    /// This peer and every connected peer whose settings agree with ours (as published
    /// last), sorted: the peers that own traces and tokens.
    pub fn live_peers(&self) -> Vec<String> {
        self.live.lock().expect("no publisher panicked holding the live peers").clone()
    }

    /// Tells the mesh this peer's objectives' fingerprint (peers with the same one share
    /// the sending of alerts).
    pub fn set_objectives(&self, fingerprint: String) {
        self.objectives.send_replace(fingerprint);
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
    /// The handle for the rest of the peer.
    pub handle: MeshHandle,
    /// Handoffs from other peers `(peer id, handoff)`, for this peer to correlate as owner.
    /// At most `mesh.handoffs_queued_max` wait; more are answered busy and go back to
    /// their sender.
    pub handoffs_in: mpsc::Receiver<(String, Handoff)>,
    /// Handoffs this peer sent that their owner did not acknowledge (the connection
    /// failed or closed, the owner did not answer in time, or it was busy): for this peer
    /// to send on to the next owner or to hold.
    pub handoffs_returned: mpsc::UnboundedReceiver<ReturnedHandoff>,
    /// The driver task.
    pub task: JoinHandle<()>,
}

/// Builds the swarm, starts listening, and spawns the driver task. Returns once every
/// listen address is known (or after 5 s). `known_peers` is the book saved by an earlier
/// run; `fingerprint` and `canonical` name the mesh-wide settings.
pub async fn start<R: PeerReplica>(
    keypair: Keypair,
    settings: MeshSettings,
    known_peers: Vec<(String, Vec<String>)>,
    replica: R,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> Result<StartedMesh, MeshError> {
    let local = keypair.public().to_peer_id();
    let mut swarm = build_swarm(keypair, &settings.net).map_err(|e: NetError| MeshError::Net(e))?;
    let listen = listen(&mut swarm, &settings.listen).await?;
    let listen: Vec<Multiaddr> =
        listen.into_iter().map(|a| a.with_p2p(local).unwrap_or_else(|a| a)).collect();

    let now = clock.now_ms();
    let seed =
        u64::from_le_bytes(local.to_bytes()[local.to_bytes().len() - 8..].try_into().expect("8 bytes"))
            ^ now as u64;
    let protocol = Protocol::new(
        settings.protocol.clone(),
        settings.fingerprint.clone(),
        settings.canonical.clone(),
        seed,
    );
    let mut book = PeerBook::new(settings.book.clone(), local);
    book.set_local_addrs(listen.iter().filter(|a| dialable(a)).cloned().collect());
    for (peer, addrs) in known_peers {
        let Ok(peer) = peer.parse::<PeerId>() else { continue };
        let addrs = addrs.iter().filter_map(|a| a.parse().ok()).collect();
        book.learn(now, peer, usable(peer, addrs), false);
    }
    for addr in settings.bootstrap.iter().cloned() {
        match peer_of(&addr) {
            Some(peer) => book.learn_pinned(now, peer, usable(peer, vec![addr])),
            None => book.add_bootstrap(now, addr),
        }
    }
    let status = Arc::new(Mutex::new(MeshStatus {
        peer_id: local.to_string(),
        listen: listen.iter().map(ToString::to_string).collect(),
        ..MeshStatus::default()
    }));
    let live = Arc::new(Mutex::new(vec![local.to_string()]));
    let (handoffs_out, handoffs_to_send) = mpsc::channel(settings.handoffs_queued_max);
    let (handoffs_received, handoffs_in) = mpsc::channel(settings.handoffs_queued_max);
    // Unbounded: it holds only handoffs that were in flight, which are bounded by what was
    // queued to send.
    let (handoffs_back, handoffs_returned) = mpsc::unbounded_channel();
    let (objectives, objectives_rx) = tokio::sync::watch::channel(String::new());
    let handle = MeshHandle {
        status: status.clone(),
        live: live.clone(),
        handoffs_out,
        objectives,
        sync_interval_ms: settings.protocol.sync_interval_ms,
    };
    let driver = Driver {
        local,
        swarm,
        protocol,
        book,
        replica,
        clock,
        listen: listen.clone(),
        status,
        live,
        handoffs_received,
        handoffs_dropped: 0,
        handoff_spans_unacknowledged: 0,
        handoffs_in_flight: HashMap::new(),
        handoffs_back,
        message_bytes_max: settings.net.message_bytes_max,
        status_interval_ms: i64::try_from(settings.status_interval.as_millis()).unwrap_or(i64::MAX),
        next_publish_ms: i64::MIN,
    };
    let task = tokio::spawn(driver.run(handoffs_to_send, objectives_rx, shutdown));
    Ok(StartedMesh { listen, handle, handoffs_in, handoffs_returned, task })
}

/// Starts listening on every address and waits for the real addresses (port 0 gets one
/// assigned), for at most 5 s.
async fn listen(swarm: &mut Swarm<Behaviour>, addrs: &[Multiaddr]) -> Result<Vec<Multiaddr>, MeshError> {
    let mut listeners = HashSet::new();
    for addr in addrs {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| MeshError::Listen { addr: addr.clone(), reason: e.to_string() })?;
        listeners.insert(id);
    }
    let mut listen = Vec::new();
    let first = || addrs.first().cloned().unwrap_or_else(Multiaddr::empty);
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
                    let reason = match reason { Err(e) => e.to_string(), Ok(()) => "closed".into() };
                    return Err(MeshError::Listen { addr: first(), reason });
                }
                SwarmEvent::ListenerError { error, .. } => {
                    return Err(MeshError::Listen { addr: first(), reason: error.to_string() });
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
    Ok(listen)
}

/// The peer id at the end of a multiaddr, if any.
fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|part| match part {
        AddrPart::P2p(peer) => Some(peer),
        _ => None,
    })
}

/// Whether an address is worth dialling (not a wildcard).
fn dialable(addr: &Multiaddr) -> bool {
    !addr.iter().any(|part| match part {
        AddrPart::Ip4(ip) => ip.is_unspecified(),
        AddrPart::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}

/// The addresses of `peer` worth keeping: dialable, each ending with `/p2p/<peer>`.
fn usable(peer: PeerId, addrs: Vec<Multiaddr>) -> Vec<Multiaddr> {
    addrs
        .into_iter()
        .map(|addr| match peer_of(&addr) {
            Some(_) => addr,
            None => addr.with_p2p(peer).unwrap_or_else(|a| a),
        })
        .filter(dialable)
        .collect()
}

struct Driver<R> {
    local: PeerId,
    swarm: Swarm<Behaviour>,
    protocol: Protocol<PeerId>,
    book: PeerBook<PeerId, Multiaddr>,
    replica: R,
    clock: Arc<dyn Clock>,
    listen: Vec<Multiaddr>,
    status: Arc<Mutex<MeshStatus>>,
    live: Arc<Mutex<Vec<String>>>,
    handoffs_received: mpsc::Sender<(String, Handoff)>,
    handoffs_dropped: u64,
    handoff_spans_unacknowledged: u64,
    /// Handoffs sent and not yet acknowledged, by request.
    handoffs_in_flight: HashMap<request_response::OutboundRequestId, (PeerId, Handoff)>,
    handoffs_back: mpsc::UnboundedSender<ReturnedHandoff>,
    message_bytes_max: usize,
    status_interval_ms: i64,
    next_publish_ms: i64,
}

impl<R: PeerReplica> Driver<R> {
    async fn run(
        mut self,
        mut handoffs_to_send: mpsc::Receiver<(PeerId, Handoff)>,
        mut objectives: tokio::sync::watch::Receiver<String>,
        shutdown: CancellationToken,
    ) {
        loop {
            let wake_ms = [self.protocol.poll_timeout(), self.book.poll_timeout(), self.next_publish_ms]
                .into_iter()
                .min()
                .expect("three timeouts");
            // Due work first: a swarm that always has an event ready must not starve it.
            let now = self.clock.now_ms();
            if now >= wake_ms {
                self.tick();
                self.carry_out();
                continue;
            }
            let sleep = Duration::from_millis(u64::try_from(wake_ms - now).unwrap_or(0));
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_event(event),
                Some((peer, handoff)) = handoffs_to_send.recv() => self.send_handoff(peer, handoff),
                Ok(()) = objectives.changed() => {
                    let fingerprint = objectives.borrow_and_update().clone();
                    self.protocol.set_objectives(fingerprint);
                    self.next_publish_ms = i64::MIN;
                }
                _ = tokio::time::sleep(sleep) => self.tick(),
                _ = shutdown.cancelled() => break,
            }
            self.carry_out();
        }
        self.book.save_all();
        self.carry_out();
        tracing::info!("mesh stopped");
    }

    fn tick(&mut self) {
        let now = self.clock.now_ms();
        self.protocol.handle_tick(now, &self.replica);
        self.book.handle_tick(now);
        if now >= self.next_publish_ms {
            self.next_publish_ms = now + self.status_interval_ms;
            self.publish(now);
        }
    }

    fn learn(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, dial_now: bool) {
        let now = self.clock.now_ms();
        self.book.learn(now, peer, usable(peer, addrs), dial_now);
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        let now = self.clock.now_ms();
        match event {
            SwarmEvent::ConnectionEstablished { peer_id, endpoint, num_established, .. } => {
                let mut addrs = Vec::new();
                if endpoint.is_dialer() {
                    let addr = endpoint.get_remote_address();
                    // A bootstrap address without a peer id: now we know whose it is.
                    if self.book.bootstrap_reached(addr) {
                        tracing::info!(peer = %peer_id, %addr, "bootstrap peer reached");
                    }
                    addrs = usable(peer_id, vec![addr.clone()]);
                }
                if self.book.connected(now, peer_id, addrs, num_established.get())
                    && num_established.get() == 1
                {
                    tracing::info!(peer = %peer_id, "peer connected");
                    self.protocol.peer_connected(now, peer_id);
                    self.book.gossip(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established, cause, .. } => {
                self.book.disconnected(now, &peer_id, num_established);
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
                    self.book.set_local_addrs(self.listen.iter().filter(|a| dialable(a)).cloned().collect());
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(event)) => self.on_sync_event(now, event),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => self.learn(peer_id, info.listen_addrs, false),
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
                self.protocol.note_bytes(&peer, true, request.len());
                // A handoff is acknowledged once queued for the correlator; anything else
                // on receipt.
                let decoded = match wire::decode(&request) {
                    Ok(MeshMessage::Handoff(handoff)) => {
                        let answer = match self.handoffs_received.try_send((peer.to_string(), handoff)) {
                            Ok(()) => ACK,
                            Err(_) => {
                                self.handoffs_dropped += 1;
                                tracing::warn!(%peer, "a handoff of span halves was sent back: the correlator is behind");
                                BUSY
                            }
                        };
                        let _ = self.swarm.behaviour_mut().sync.send_response(channel, answer.to_vec());
                        return;
                    }
                    other => {
                        let _ = self.swarm.behaviour_mut().sync.send_response(channel, ACK.to_vec());
                        other
                    }
                };
                match decoded {
                    Ok(MeshMessage::Protocol(message)) => {
                        self.protocol.handle_message(now, peer, message, &mut self.replica)
                    }
                    Ok(MeshMessage::Peers(peers)) => self.on_gossip(now, peers),
                    // Taken (and answered) above.
                    Ok(MeshMessage::Handoff(_)) => {}
                    Err(error) => self.protocol.handle_malformed(now, peer, &error.to_string()),
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                // Failures reported here are of our answer (a closed connection, a
                // timeout), not of the peer's message: a message too large to read is
                // refused by the codec before libp2p reports it (and logged there).
                tracing::debug!(%peer, %error, "inbound message failed");
            }
            request_response::Event::Message {
                message: RrMessage::Response { request_id, response },
                ..
            } => {
                if let Some((peer, handoff)) = self.handoffs_in_flight.remove(&request_id)
                    && response == BUSY
                {
                    self.return_handoff(peer, handoff, "the owner was busy".into(), false);
                }
            }
            request_response::Event::OutboundFailure { peer, error, request_id, .. } => {
                tracing::debug!(%peer, %error, "message not delivered");
                if let Some((peer, handoff)) = self.handoffs_in_flight.remove(&request_id) {
                    match error {
                        // Never delivered: on to the next owner.
                        request_response::OutboundFailure::DialFailure
                        | request_response::OutboundFailure::UnsupportedProtocols => {
                            self.return_handoff(peer, handoff, error.to_string(), true)
                        }
                        // Maybe delivered and taken: sending it again could count it twice.
                        _ => {
                            self.handoff_spans_unacknowledged += handoff.spans.len() as u64;
                            tracing::warn!(%peer, %error, spans = handoff.spans.len(),
                                "a handoff was not acknowledged: taken or lost, it is not sent again");
                        }
                    }
                }
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

    fn on_gossip(&mut self, now: i64, peers: Vec<(String, Vec<String>)>) {
        let peers: Vec<(PeerId, Vec<Multiaddr>)> = peers
            .into_iter()
            .filter_map(|(peer, addrs)| {
                let peer = peer.parse::<PeerId>().ok()?;
                let addrs = addrs.iter().filter_map(|a| a.parse().ok()).collect();
                Some((peer, usable(peer, addrs)))
            })
            .collect();
        for peer in self.book.handle_gossip(now, peers) {
            tracing::info!(%peer, "learned of a peer from another peer");
        }
    }

    fn send(&mut self, to: PeerId, message: MeshMessage) -> Option<request_response::OutboundRequestId> {
        let bytes = wire::encode(message);
        if bytes.len() > self.message_bytes_max {
            tracing::error!(
                peer = %to, bytes = bytes.len(), max = self.message_bytes_max,
                "a message came out larger than mesh.message_bytes_max and was not sent; \
                 raise mesh.message_bytes_max on every peer"
            );
            return None;
        }
        self.protocol.note_bytes(&to, false, bytes.len());
        Some(self.swarm.behaviour_mut().sync.send_request(&to, bytes))
    }

    /// Sends a handoff and keeps it until its owner acknowledges it.
    fn send_handoff(&mut self, to: PeerId, handoff: Handoff) {
        match self.send(to, MeshMessage::Handoff(handoff.clone())) {
            Some(id) => {
                self.handoffs_in_flight.insert(id, (to, handoff));
            }
            None => self.return_handoff(to, handoff, "larger than mesh.message_bytes_max".into(), false),
        }
    }

    fn return_handoff(&mut self, peer: PeerId, handoff: Handoff, reason: String, send_on: bool) {
        tracing::debug!(%peer, %reason, spans = handoff.spans.len(), "a handoff came back");
        let _ = self.handoffs_back.send(ReturnedHandoff { peer: peer.to_string(), handoff, reason, send_on });
    }

    /// Sends what the protocol queued and carries out what both state machines ask.
    fn carry_out(&mut self) {
        let now = self.clock.now_ms();
        while let Some((to, message)) = self.protocol.poll_transmit() {
            self.send(to, message.into());
        }
        while let Some(action) = self.protocol.poll_action() {
            match action {
                Action::Shun { peer, until_ms } => {
                    self.book.shun(now, peer, until_ms);
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
            }
        }
        while let Some(output) = self.book.poll_output() {
            match output {
                BookOutput::Dial { peer, addrs } => {
                    let opts = DialOpts::peer_id(peer)
                        .addresses(addrs)
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .build();
                    if let Err(error) = self.swarm.dial(opts) {
                        tracing::debug!(%peer, %error, "dial not started");
                    }
                }
                BookOutput::DialAddress(addr) => {
                    if let Err(error) = self.swarm.dial(addr.clone()) {
                        tracing::debug!(%addr, %error, "bootstrap dial not started");
                    }
                }
                BookOutput::Gossip { to, peers } => {
                    let peers = peers
                        .into_iter()
                        .map(|(p, addrs)| (p.to_string(), addrs.iter().map(ToString::to_string).collect()))
                        .collect();
                    self.send(to, MeshMessage::Peers(peers));
                }
                BookOutput::Save(peers) => {
                    let peers = peers
                        .into_iter()
                        .map(|(p, addrs)| (p.to_string(), addrs.iter().map(ToString::to_string).collect()))
                        .collect();
                    self.replica.save_known_peers(peers);
                }
                BookOutput::Disconnect(peer) => {
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
                BookOutput::Forgotten(peer) => self.protocol.forget(&peer),
            }
        }
    }

    fn publish(&mut self, now: i64) {
        let local = Local {
            peer_id: self.local.to_string(),
            objectives: self.protocol.objectives().to_string(),
            listen: self.listen.iter().map(ToString::to_string).collect(),
            counters: MeshCounters {
                handoffs_dropped: self.handoffs_dropped,
                handoff_spans_unacknowledged: self.handoff_spans_unacknowledged,
                ..self.protocol.counters()
            },
        };
        let book = self.book.peers().map(|(peer, addrs, connected)| {
            (*peer, addrs.iter().map(ToString::to_string).collect(), connected)
        });
        let status = MeshStatus::assemble(now, local, self.protocol.peer_reports(now, &self.replica), book);
        *self.live.lock().expect("no reader panics holding the live peers") = status.live_peers();
        *self.status.lock().expect("no publisher panicked holding the status") = status;
    }
}
