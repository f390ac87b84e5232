//! What a peer knows of its mesh, as published by the driver for the rest of the peer:
//! the peers, how each stands, the counters, and what that means for an answer's
//! completeness and for the choice of trace owners.

use crate::protocol::{Agreement, MeshCounters, PeerReport};

/// A snapshot of the mesh as one peer sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MeshStatus {
    /// This peer's id.
    pub peer_id: String,
    /// The fingerprint of this peer's objectives (empty: none).
    pub objectives: String,
    /// Addresses other peers can dial, with `/p2p/<peer id>`.
    pub listen: Vec<String>,
    /// Counters since start.
    pub counters: MeshCounters,
    /// Every peer known, connected or not, by id.
    pub peers: Vec<PeerStatus>,
}

/// What a status says of the peer itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Local {
    /// Its id.
    pub peer_id: String,
    /// Its objectives' fingerprint.
    pub objectives: String,
    /// Its listen addresses.
    pub listen: Vec<String>,
    /// Its counters.
    pub counters: MeshCounters,
}

/// One known peer.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerStatus {
    /// Its addresses.
    pub addresses: Vec<String>,
    /// What the protocol knows of it.
    pub report: PeerReport<String>,
    /// Milliseconds since its last successful sync.
    pub last_sync_age_ms: Option<i64>,
}

/// How complete this peer's picture is, as far as the mesh goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completeness {
    /// Peers known whose settings agree (or are not known yet).
    pub peers_known: usize,
    /// Of those, connected now.
    pub peers_connected: usize,
    /// Of those, synced within `fresh_ms` with nothing left to take.
    pub peers_in_sync: usize,
    /// How recent a sync counts as in sync: three sync intervals and a second.
    pub fresh_ms: i64,
    /// Whether every known peer is in sync: this peer then holds everything the mesh
    /// held `fresh_ms` ago.
    pub complete: bool,
}

/// How recent a sync counts as in sync, with rounds every `sync_interval_ms`.
fn fresh_ms(sync_interval_ms: i64) -> i64 {
    3 * sync_interval_ms + 1000
}

impl PeerStatus {
    fn counts(&self) -> bool {
        !matches!(self.report.settings, Agreement::Differs { .. })
    }

    fn in_sync(&self, fresh_ms: i64) -> bool {
        self.report.connected
            && self.last_sync_age_ms.is_some_and(|age| age <= fresh_ms)
            && self.report.we_lack_cells == Some(0)
    }
}

impl MeshStatus {
    /// The status from what the protocol reports of its peers and what the peer book
    /// knows (`(peer, addresses, connected)` for every peer in it), at `now_ms`.
    pub fn assemble<P: Ord + std::fmt::Display>(
        now_ms: i64,
        local: Local,
        reports: Vec<PeerReport<P>>,
        book: impl IntoIterator<Item = (P, Vec<String>, bool)>,
    ) -> Self {
        let mut book: std::collections::BTreeMap<P, (Vec<String>, bool)> =
            book.into_iter().map(|(peer, addresses, connected)| (peer, (addresses, connected))).collect();
        let mut peers: Vec<PeerStatus> = Vec::new();
        for report in reports {
            let (addresses, connected) = book.remove(&report.peer).unwrap_or_default();
            let peer = report.peer.to_string();
            peers.push(PeerStatus {
                addresses,
                last_sync_age_ms: report.last_sync_ms.map(|t| now_ms - t),
                report: PeerReport { connected, ..report.with_peer(peer) },
            });
        }
        for (peer, (addresses, connected)) in book {
            peers.push(PeerStatus {
                addresses,
                last_sync_age_ms: None,
                report: PeerReport::unknown(peer.to_string(), connected),
            });
        }
        peers.sort_by(|a, b| a.report.peer.cmp(&b.report.peer));
        MeshStatus {
            peer_id: local.peer_id,
            objectives: local.objectives,
            listen: local.listen,
            counters: local.counters,
            peers,
        }
    }

    /// Known peers whose settings agree (or are not known yet) and which are not in sync
    /// with this one: what they wrote lately may be missing here.
    pub fn missing_peers(&self, sync_interval_ms: i64) -> Vec<String> {
        let fresh_ms = fresh_ms(sync_interval_ms);
        self.peers
            .iter()
            .filter(|p| p.counts() && !p.in_sync(fresh_ms))
            .map(|p| p.report.peer.clone())
            .collect()
    }

    /// How complete an answer from this peer is, with rounds every `sync_interval_ms`.
    /// Peers whose settings differ are never synced with and do not count.
    pub fn completeness(&self, sync_interval_ms: i64) -> Completeness {
        let fresh_ms = fresh_ms(sync_interval_ms);
        let peers: Vec<_> = self.peers.iter().filter(|p| p.counts()).collect();
        let connected = peers.iter().filter(|p| p.report.connected).count();
        let in_sync = peers.iter().filter(|p| p.in_sync(fresh_ms)).count();
        Completeness {
            peers_known: peers.len(),
            peers_connected: connected,
            peers_in_sync: in_sync,
            fresh_ms,
            complete: in_sync == peers.len(),
        }
    }

    /// This peer and every connected peer whose settings and objectives agree, sorted: the
    /// peers that share the sending of alerts.
    pub fn alert_peers(&self) -> Vec<String> {
        let mut peers: Vec<String> = self
            .peers
            .iter()
            .filter(|p| p.report.connected && p.report.settings == Agreement::Agrees)
            .filter(|p| p.report.objectives.as_deref() == Some(self.objectives.as_str()))
            .map(|p| p.report.peer.clone())
            .chain([self.peer_id.clone()])
            .collect();
        peers.sort();
        peers.dedup();
        peers
    }

    /// This peer and every connected peer whose settings agree, sorted: the peers that
    /// own traces and tokens.
    pub fn live_peers(&self) -> Vec<String> {
        let mut live: Vec<String> = self
            .peers
            .iter()
            .filter(|p| p.report.connected && p.report.settings == Agreement::Agrees)
            .map(|p| p.report.peer.clone())
            .chain([self.peer_id.clone()])
            .collect();
        live.sort();
        live.dedup();
        live
    }
}
