//! The peer's replica for the mesh: the shared flow state, with every merge persisted.
//!
//! Reads take the read lock. A merge takes the write lock, checks every page, merges
//! them and, still under the lock, snapshots what changed (the cells and the merged
//! origins' seqs) for the writer, which writes each snapshot in one atomic batch. So the
//! store never holds a seq without the cells it covers, whatever order the writer and
//! the mesh take the lock in. While the writer is behind, the protocol merges nothing
//! ([`Replica::has_room`]).

use observatory_core::{FlowState, MergeError, MergeOutcome, OriginDelta, Transfer};
use observatory_net::PeerReplica;
use observatory_store::{PersistHandle, SharedState};
use observatory_sync::Replica;
use observatory_sync::protocol::merge_pages_snapshot;

/// See the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct PersistedReplica {
    /// The state shared with the writer and the API.
    pub(crate) state: SharedState,
    /// Where merged changes go to be written.
    pub(crate) persist: PersistHandle,
}

impl Replica for PersistedReplica {
    fn read<T>(&self, read: impl FnOnce(&FlowState) -> T) -> T {
        read(&self.state.read().expect("state lock"))
    }

    fn has_room(&self) -> bool {
        self.persist.has_room()
    }

    fn merge_pages(
        &mut self,
        now_ms: i64,
        pages: Vec<OriginDelta>,
        transfer: &mut Transfer,
    ) -> Result<Vec<MergeOutcome>, MergeError> {
        let mut state = self.state.write().expect("state lock");
        let (outcomes, changes) = merge_pages_snapshot(&mut state, now_ms, pages, transfer)?;
        drop(state);
        if !changes.is_empty()
            && let Err(error) = self.persist.merged(changes)
        {
            tracing::warn!(%error, "merged changes are kept in memory only; the mesh brings them again after a restart");
        }
        Ok(outcomes)
    }
}

impl PeerReplica for PersistedReplica {
    fn save_known_peers(&self, peers: Vec<(String, Vec<String>)>) {
        self.persist.known_peers(peers);
    }
}
