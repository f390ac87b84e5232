//! The mesh of peers: the anti-entropy protocol as a sans-IO state machine
//! ([`protocol`]), its wire format ([`wire`]), the libp2p networking ([`net`]) and the
//! driver that runs the protocol over libp2p ([`driver`]).
//!
//! The protocol never touches sockets, files or the clock; the simulator drives the same
//! [`protocol::Protocol`] as the peer does.

pub use libp2p;

pub mod driver;
pub mod net;
pub mod protocol;
pub mod wire;

pub use protocol::{
    Action, Agreement, Hello, MeshCounters, Message, PeerReport, Protocol, ProtocolConfig, Replica,
    SyncMessage,
};
