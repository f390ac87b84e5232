//! Which peer owns a trace or token: rendezvous (highest random weight) hashing.
//!
//! Every peer that sees the same live peers picks the same owner, and when a peer joins
//! or leaves only the keys it wins or held move; the others keep their owner.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// The peer among `peers` that owns `key`: the one with the highest hash of
/// `(peer, key)`. `None` when `peers` is empty.
pub fn owner<'a, P: AsRef<str>>(key: &[u8], peers: &'a [P]) -> Option<&'a P> {
    let weight = |peer: &P| {
        let seed = xxh3_64_with_seed(peer.as_ref().as_bytes(), 0x6f62_7365_7276_6521);
        xxh3_64_with_seed(key, seed)
    };
    peers
        .iter()
        .map(|peer| (weight(peer), peer))
        // Ties (practically impossible) break by name, so every peer agrees.
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.as_ref().cmp(b.1.as_ref())))
        .map(|(_, peer)| peer)
}
