//! The mesh over libp2p: the only crate that knows libp2p.
//!
//! [`net`] assembles the swarm (TCP, pnet with `mesh.psk_file`, noise, yamux, DNS;
//! identify, mDNS, allow list, connection limits, the request-response codec with the
//! size cap). [`driver`] is a thin loop that runs the sans-IO protocol and peer book of
//! `observatory-sync` over it. [`settings`] builds its settings from the configuration,
//! and [`identity`] turns the identity the store keeps as bytes into a keypair.

pub mod driver;
pub mod identity;
pub mod net;
pub mod settings;

pub use driver::{HandoffRefused, MeshHandle, PeerReplica, ReturnedHandoff, StartedMesh, start};
pub use net::NetError;
pub use settings::MeshSettings;

/// The libp2p crate, for the end-to-end tests' misbehaving peer.
pub use libp2p;

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
        addr: libp2p::Multiaddr,
        /// Why.
        reason: String,
    },
}
