//! What a peer knows of its mesh, as published by the driver for the rest of the peer:
//! the peers, how each stands, the counters, and what that means for an answer's
//! completeness and for the choice of trace owners.

use crate::protocol::{Agreement, MeshCounters, PeerReport};

/// A snapshot of the mesh as one peer sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MeshStatus {
    /// This peer's id.
    pub peer_id: String,
    /// Addresses other peers can dial, with `/p2p/<peer id>`.
    pub listen: Vec<String>,
    /// Counters since start.
    pub counters: MeshCounters,
    /// Every peer known, connected or not, by id.
    pub peers: Vec<PeerStatus>,
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

impl MeshStatus {
    /// How complete an answer from this peer is, with rounds every `sync_interval_ms`.
    /// Peers whose settings differ are never synced with and do not count.
    pub fn completeness(&self, sync_interval_ms: i64) -> Completeness {
        let fresh_ms = 3 * sync_interval_ms + 1000;
        let peers: Vec<_> =
            self.peers.iter().filter(|p| !matches!(p.report.settings, Agreement::Differs { .. })).collect();
        let connected = peers.iter().filter(|p| p.report.connected).count();
        let in_sync = peers
            .iter()
            .filter(|p| {
                p.report.connected
                    && p.last_sync_age_ms.is_some_and(|age| age <= fresh_ms)
                    && p.report.we_lack_cells == Some(0)
            })
            .count();
        Completeness {
            peers_known: peers.len(),
            peers_connected: connected,
            peers_in_sync: in_sync,
            fresh_ms,
            complete: in_sync == peers.len(),
        }
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
