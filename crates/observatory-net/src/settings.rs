//! The mesh's settings, built from the configuration: the parts only libp2p can parse
//! (multiaddrs, peer ids, the pre-shared key) are checked here, and errors name the key.

use std::time::Duration;

use libp2p::pnet::PreSharedKey;
use libp2p::{Multiaddr, PeerId};
use observatory_config::{Config, ConfigError};
use observatory_sync::{PeerBookConfig, ProtocolConfig};

use crate::net::{NetConfig, read_psk_file};

/// Everything the driver needs, from `mesh.*` and the mesh-wide settings.
#[derive(Debug, Clone)]
pub struct MeshSettings {
    /// `mesh.listen`
    pub listen: Vec<Multiaddr>,
    /// `mesh.bootstrap`
    pub bootstrap: Vec<Multiaddr>,
    /// The swarm.
    pub net: NetConfig,
    /// The anti-entropy protocol.
    pub protocol: ProtocolConfig,
    /// The peer book.
    pub book: PeerBookConfig,
    /// `mesh.status_interval`
    pub status_interval: Duration,
    /// `mesh.handoffs_queued_max`
    pub handoffs_queued_max: usize,
    /// Fingerprint of the mesh-wide settings.
    pub fingerprint: String,
    /// The mesh-wide settings in canonical form, to say what differs.
    pub canonical: String,
}

fn invalid(message: String) -> ConfigError {
    ConfigError::Invalid(message)
}

fn multiaddrs(key: &str, list: &[String]) -> Result<Vec<Multiaddr>, ConfigError> {
    list.iter()
        .map(|text| {
            text.parse::<Multiaddr>().map_err(|e| {
                invalid(format!(
                    "{key}: `{text}` is not a multiaddr ({e}); write e.g. /ip4/10.0.0.2/tcp/7000 or /dns4/host/tcp/7000"
                ))
            })
        })
        .collect()
}

impl MeshSettings {
    /// The settings of `config`, reading `mesh.psk_file`. Errors name the key.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let mesh = &config.mesh;
        let allow_peers = mesh
            .allow_peers
            .iter()
            .map(|text| {
                text.parse::<PeerId>()
                    .map_err(|e| invalid(format!("mesh.allow_peers: `{text}` is not a peer id ({e})")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let psk: Option<PreSharedKey> = match &mesh.psk_file {
            Some(path) => Some(read_psk_file(path).map_err(|e| invalid(format!("mesh.psk_file: {e}")))?),
            None => None,
        };
        let sync_interval = mesh.sync_interval;
        let settings = config.settings()?;
        Ok(MeshSettings {
            listen: multiaddrs("mesh.listen", &mesh.listen)?,
            bootstrap: multiaddrs("mesh.bootstrap", &mesh.bootstrap)?,
            net: NetConfig {
                psk,
                allow_peers,
                mdns: mesh.mdns,
                message_bytes_max: mesh.message_bytes_max,
                // A message not acked by then means a dead connection; the driver closes it.
                request_timeout: mesh.request_timeout.max(sync_interval * 5),
                // Rounds reach every peer long before this; known peers are redialled anyway.
                idle_connection_timeout: mesh.idle_connection_timeout.max(sync_interval * 30),
                established_max: mesh.connections_established_max,
                pending_max: mesh.connections_pending_max,
            },
            protocol: config.protocol(),
            book: config.peer_book(),
            status_interval: mesh.status_interval,
            handoffs_queued_max: mesh.handoffs_queued_max,
            fingerprint: settings.fingerprint(),
            canonical: settings.canonical(),
        })
    }
}
