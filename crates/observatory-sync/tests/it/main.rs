//! Integration tests of `observatory-sync`, at its public API.
//!
//! - `protocol`: the anti-entropy protocol driven in memory through the wire format
//!   (loss, duplication, reordering, chains, paging, corrupt pages, shunning, restarts).
//! - `wire_snapshots`: every body of wire version 2, byte for byte.
//! - `peer_book`: dials, redial backoff, bootstrap addresses, shunning, gossip, saving and
//!   forgetting, on a scripted clock.

mod peer_book;
mod protocol;
mod wire_snapshots;

use observatory_config::Config;
use observatory_core::{Limits, Settings};
use observatory_sync::{PeerBookConfig, ProtocolConfig};

/// The mesh-wide settings of a peer with the documented defaults.
pub fn default_settings() -> Settings {
    Config::defaults().settings().expect("the default settings are valid")
}

/// The limits of a peer with the documented defaults.
pub fn default_limits() -> Limits {
    Config::defaults().core_limits()
}

/// The protocol's settings in the documented defaults.
pub fn default_protocol() -> ProtocolConfig {
    Config::defaults().protocol()
}

/// The peer book's settings in the documented defaults.
pub fn default_book() -> PeerBookConfig {
    Config::defaults().peer_book()
}
