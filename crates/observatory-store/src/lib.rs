//! Durable state of a peer: its identity, incarnation and cells, kept in sled and
//! written by group commit. The only crate that knows sled.
//!
//! [`open_peer`] opens the data dir, restores every origin into a [`FlowState`] and takes a
//! fresh incarnation; [`spawn_writer`] then owns the store and runs the core's sans-IO
//! commit queue over it. Only [`sled_store`] knows sled.

pub mod sled_store;
pub mod writer;

use std::path::Path;

use observatory_core::{FlowState, Limits, Origin, Settings};

pub use sled_store::{IdentityScheme, SizeProbe, Store, StoreError, WriteBatch};
pub use writer::{
    IngestError, IngestHandle, PersistError, PersistHandle, SharedState, WriterConfig, pack_sealed_buckets,
    spawn_writer,
};

/// A peer's state as opened from its data dir.
#[derive(Debug)]
pub struct OpenedPeer {
    /// The store, to hand to the writer.
    pub store: Store,
    /// Everything persisted, with the new local origin set.
    pub state: FlowState,
    /// The persistent identity, as the [`IdentityScheme`] encodes it.
    pub identity: Vec<u8>,
    /// The origin this run writes under.
    pub origin: Origin,
    /// Peers of the mesh met before: peer id and multiaddrs, as text.
    pub known_peers: Vec<(String, Vec<String>)>,
}

/// Opens the data dir at `path`: loads identity and cells, and takes a new incarnation
/// (persisted and flushed before anything is written under it).
pub fn open_peer(
    path: &Path,
    settings: Settings,
    limits: Limits,
    identity: &dyn IdentityScheme,
) -> Result<OpenedPeer, StoreError> {
    let (store, opened) = Store::open(path, &settings, identity)?;
    let mut state = FlowState::new(settings, limits);
    for stored in opened.origins {
        let origin = stored.origin.clone();
        state.restore_origin(stored.origin, stored.seq, stored.changed_at_ms, stored.cells).map_err(|e| {
            StoreError::Corrupt {
                path: path.to_path_buf(),
                what: format!("cells of origin {origin}"),
                detail: e.to_string(),
            }
        })?;
    }
    let origin = Origin::new(&opened.peer_id, opened.incarnation);
    state.set_local(origin.clone());
    Ok(OpenedPeer { store, state, identity: opened.identity, origin, known_peers: opened.known_peers })
}
