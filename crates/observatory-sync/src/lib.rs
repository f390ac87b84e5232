//! The mesh's logic, sans-IO: the anti-entropy protocol ([`protocol`]), the peer book
//! ([`peer_book`]), their wire format ([`wire`]) and what the mesh's state means for the
//! rest of the peer ([`status`]).
//!
//! Nothing here touches a socket, a file or the clock: every state machine takes `now_ms`
//! and inputs and is polled for outputs, with its driving contract on the type. The
//! libp2p driver (`observatory-net`) and the simulator (`observatory-sim`) drive the very
//! same [`Protocol`] and [`PeerBook`].

pub mod peer_book;
pub mod protocol;
pub mod status;
pub mod wire;

pub use observatory_core::backoff::Backoff;
pub use peer_book::{BookOutput, PeerBook, PeerBookConfig};
pub use protocol::{
    Action, Agreement, Hello, MeshCounters, Message, PeerReport, Protocol, ProtocolConfig, Replica,
    SyncMessage,
};
pub use status::{Completeness, MeshStatus, PeerStatus};
pub use wire::MeshMessage;
