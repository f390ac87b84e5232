//! A peer's libp2p identity as bytes, so that the store keeps it without knowing libp2p:
//! the keypair in libp2p's protobuf encoding, and the peer id it gives.

use libp2p::identity::Keypair;

/// A fresh ed25519 identity, encoded.
pub fn generate() -> Vec<u8> {
    Keypair::generate_ed25519().to_protobuf_encoding().expect("ed25519 keypairs encode")
}

/// The keypair of an encoded identity.
pub fn keypair(identity: &[u8]) -> Result<Keypair, String> {
    Keypair::from_protobuf_encoding(identity).map_err(|e| e.to_string())
}

/// The peer id (base58 text) of an encoded identity.
pub fn peer_id(identity: &[u8]) -> Result<String, String> {
    Ok(keypair(identity)?.public().to_peer_id().to_base58())
}
