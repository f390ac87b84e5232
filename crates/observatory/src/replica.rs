//! The peer's replica for the mesh: the shared flow state, with every merge persisted.
//!
//! Reads take the read lock. A merge takes the write lock, checks every page, merges
//! them, and, still under the lock, snapshots what changed (the cells and the merged
//! origins' seqs) for the writer, which writes each snapshot in one atomic batch. So the
//! store never holds a seq without the cells it covers, whatever order the writer and
//! the mesh take the lock in.

use observatory_core::{MergeError, MergeOutcome, OriginDelta, SyncRequest, Transfer, VersionVector};
use observatory_mesh::Replica;
use observatory_mesh::driver::PeerReplica;
use observatory_mesh::protocol::{merge_pages_into, wire_cost};
use observatory_store::{PersistHandle, RemoteBatch, SharedState};

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct PersistedReplica {
    /// The state shared with the writer and the API.
    pub state: SharedState,
    /// Where merged changes go to be written.
    pub persist: PersistHandle,
}

impl Replica for PersistedReplica {
    fn sync_request(&self, transfer: &Transfer) -> SyncRequest {
        self.state.read().expect("state lock").sync_request(transfer)
    }

    fn page_for(&self, request: &SyncRequest, bytes_max: usize) -> Vec<OriginDelta> {
        self.state.read().expect("state lock").delta_within(request, bytes_max, wire_cost)
    }

    fn lag_behind(&self, known: &VersionVector) -> (u64, u64) {
        self.state.read().expect("state lock").lag_behind(known)
    }

    fn version_vector(&self) -> VersionVector {
        self.state.read().expect("state lock").version_vector()
    }

    fn merge_pages(
        &mut self,
        now_ms: i64,
        pages: Vec<OriginDelta>,
        transfer: &mut Transfer,
    ) -> Result<Vec<MergeOutcome>, MergeError> {
        let origins: Vec<_> = pages.iter().map(|p| p.origin.clone()).collect();
        let mut state = self.state.write().expect("state lock");
        let outcomes = merge_pages_into(&mut state, now_ms, pages, transfer)?;
        let mut batch = RemoteBatch::default();
        for (origin, outcome) in origins.iter().zip(&outcomes) {
            if outcome.changed.is_empty() && !outcome.advanced {
                continue;
            }
            for key in &outcome.changed {
                if let Some(cell) = state.cell(origin, key) {
                    batch.cells.push((origin.clone(), key.clone(), cell.clone()));
                }
            }
            batch.origins.push((
                origin.clone(),
                state.origin_seq(origin),
                state.origin_changed_at_ms(origin),
            ));
        }
        drop(state);
        if !batch.origins.is_empty() && !self.persist.remote(batch) {
            tracing::warn!("the writer has stopped; merged changes are kept in memory only");
        }
        Ok(outcomes)
    }
}

impl PeerReplica for PersistedReplica {
    fn backlog_cells(&self) -> usize {
        self.persist.backlog_cells()
    }

    fn save_known_peers(&self, peers: Vec<(String, Vec<String>)>) {
        let _ = self.persist.known_peers(peers);
    }
}
