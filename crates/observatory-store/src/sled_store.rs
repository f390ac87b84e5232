//! All sled code lives here, so that the backend can be swapped.
//!
//! One tree holds everything a peer must keep, so that a batch of changes (cells and the
//! origin seqs that cover them) is applied atomically:
//!
//! | key                                   | value                                   |
//! |---------------------------------------|-----------------------------------------|
//! | `m` + name                            | meta: format, settings, identity, incarnation |
//! | `o` + origin id (u32 BE)              | CBOR `(peer, incarnation, seq, changed_at_ms)` |
//! | `e` + edge id (u32 BE)                | CBOR `(from, to, kind code)` (`(from, to)`, a request edge, before edge kinds; `(from, to, kind code, flow or null, context mark code)` for an edge with a flow or mark) |
//! | `c` + origin id + edge id + resolution (u8) + bucket start (i64 BE, sign flipped) | CBOR `(seq, calls, errors, bytes, latency)` |
//!
//! | `s` + origin id + resolution + bucket start | a sealed bucket: CBOR array of `(edge id, seq, calls, errors, bytes, latency)` |
//! | `p` + peer id (text)                   | a known peer: CBOR array of its multiaddrs (text) |
//!
//! Origins and edges are interned to small ids so that a cell key is 18 bytes. Cells of
//! open buckets are kept one record each, since they change with every batch; once a
//! bucket is sealed the writer packs all of an origin's cells of it into one `s` record,
//! which saves the per-record overhead and compresses better (sled compresses pages with
//! zstd). A cell may be found in both forms (one that arrived by sync after its bucket was
//! packed); the higher seq wins.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use observatory_core::model::from_marks_code;
use observatory_core::{
    Cell, CellData, CellKey, Edge, EdgeKind, LatencyHistogram, NodeName, Origin, Settings,
};
use serde::{Deserialize, Serialize};

const FORMAT_VERSION: u64 = 1;
const META_FORMAT: &[u8] = b"mformat";
const META_SETTINGS: &[u8] = b"msettings";
const META_IDENTITY: &[u8] = b"midentity";
const META_INCARNATION: &[u8] = b"mincarnation";
const META_PACKED: &[u8] = b"mpacked";

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data dir could not be opened.
    #[error(
        "cannot open the data dir {path}: {cause}\n\
         hint: if another observatory peer uses this data dir, stop it or choose another with --data-dir; \
         if the data is damaged, move the directory away (nothing is deleted for you): \
         the peer then starts empty (in a mesh it re-learns the graph from the other peers)"
    )]
    Open {
        /// The data dir.
        path: PathBuf,
        /// What sled said.
        cause: sled::Error,
    },
    /// The data dir was written with other mesh-wide settings.
    #[error(
        "the data dir {path} was written with other resolutions or histogram settings\n  stored:  {stored}\n  current: {current}\n\
         hint: restore the old `resolutions` in the config, or move the data dir away to start empty"
    )]
    SettingsChanged {
        /// The data dir.
        path: PathBuf,
        /// Canonical settings on disk.
        stored: String,
        /// Canonical settings now.
        current: String,
    },
    /// A record on disk cannot be decoded.
    #[error(
        "the data dir {path} holds a damaged record ({what}): {detail}\n\
         hint: move the data dir away; the peer then starts empty (in a mesh it re-learns the graph from the other peers)"
    )]
    Corrupt {
        /// The data dir.
        path: PathBuf,
        /// Which record.
        what: String,
        /// Why it cannot be read.
        detail: String,
    },
    /// Reading or writing failed.
    #[error("store IO on {path}: {cause}")]
    Io {
        /// The data dir.
        path: PathBuf,
        /// What sled said.
        cause: sled::Error,
    },
}

/// One origin as found on disk.
#[derive(Debug, Clone)]
pub struct StoredOrigin {
    /// The origin.
    pub origin: Origin,
    /// The seq persisted for it.
    pub seq: u64,
    /// The origin's clock at its newest change.
    pub changed_at_ms: Option<i64>,
    /// Its cells.
    pub cells: Vec<(CellKey, Cell)>,
}

/// How a peer's identity is made and named. The store keeps the identity as opaque
/// bytes; the network layer knows what they are (a libp2p keypair).
pub trait IdentityScheme {
    /// A fresh identity, encoded.
    fn generate(&self) -> Vec<u8>;
    /// The peer id of an encoded identity, or why it is not one.
    fn peer_id(&self, identity: &[u8]) -> Result<String, String>;
}

/// What [`Store::open`] found and took.
#[derive(Debug)]
pub struct Opened {
    /// The peer's persistent identity, as [`IdentityScheme`] encodes it.
    pub identity: Vec<u8>,
    /// Its peer id in text form.
    pub peer_id: String,
    /// The incarnation taken for this run (already persisted and flushed).
    pub incarnation: u32,
    /// Every origin and its cells.
    pub origins: Vec<StoredOrigin>,
    /// Peers of the mesh met before: peer id and multiaddrs, as text.
    pub known_peers: Vec<(String, Vec<String>)>,
}

/// A set of writes applied atomically by [`Store::apply`].
#[derive(Debug, Default)]
pub struct WriteBatch {
    batch: sled::Batch,
    writes: usize,
}

impl WriteBatch {
    /// Number of writes in the batch.
    pub fn len(&self) -> usize {
        self.writes
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.writes == 0
    }
}

/// An `e` record: a request edge as written before edge kinds, an edge with its kind, or
/// (when it has them) with its flow and propagation mark too.
#[derive(Deserialize)]
#[serde(untagged)]
enum EdgeRecord {
    Labelled(NodeName, NodeName, u8, Option<NodeName>, u8),
    Kind(NodeName, NodeName, u8),
    Request(NodeName, NodeName),
}

#[derive(Serialize, Deserialize)]
struct OriginRecord {
    peer: String,
    incarnation: u32,
    seq: u64,
    changed_at_ms: Option<i64>,
}

/// The sled-backed store of one peer. Owned by one writer; not shared.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    db: sled::Db,
    tree: sled::Tree,
    origin_ids: BTreeMap<Origin, u32>,
    edge_ids: HashMap<Edge, u32>,
    next_edge_id: u32,
    /// Per resolution, the start of the first bucket not packed yet.
    packed_watermarks: BTreeMap<u8, i64>,
}

fn cbor<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).expect("writing CBOR to memory cannot fail");
    out
}

fn encode_bucket(start_ms: i64) -> [u8; 8] {
    // Flip the sign bit so that byte order matches numeric order.
    ((start_ms as u64) ^ (1 << 63)).to_be_bytes()
}

fn decode_bucket(bytes: [u8; 8]) -> i64 {
    (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64
}

impl Store {
    /// Opens (or creates) the store in `path`, checks it was written with `settings`,
    /// loads the identity (made by `identity` the first time) and everything persisted,
    /// and takes and flushes a new incarnation.
    pub fn open(
        path: &Path,
        settings: &Settings,
        identity: &dyn IdentityScheme,
    ) -> Result<(Store, Opened), StoreError> {
        let open_err = |cause| StoreError::Open { path: path.to_path_buf(), cause };
        let db = sled::Config::new().path(path).use_compression(true).open().map_err(open_err)?;
        let tree = db.open_tree("state").map_err(open_err)?;
        let mut store = Store {
            path: path.to_path_buf(),
            db,
            tree,
            origin_ids: BTreeMap::new(),
            edge_ids: HashMap::new(),
            next_edge_id: 0,
            packed_watermarks: BTreeMap::new(),
        };
        store.check_format_and_settings(settings)?;
        let (identity, peer_id) = store.identity(identity)?;
        if let Some(raw) = store.tree.get(META_PACKED).map_err(|e| store.io(e))? {
            store.packed_watermarks =
                ciborium::from_reader(&raw[..]).map_err(|e| store.corrupt("packing watermarks", e))?;
        }
        let origins = store.load_all()?;
        // Above the counter and above any run of ours found on disk, so that an
        // incarnation is never taken twice even if the counter was lost.
        let highest_own = origins
            .iter()
            .filter(|o| *o.origin.peer == *peer_id)
            .map(|o| o.origin.incarnation)
            .max()
            .unwrap_or(0);
        let incarnation = store.take_incarnation(highest_own)?;
        let known_peers = store.load_known_peers()?;
        Ok((store, Opened { identity, peer_id, incarnation, origins, known_peers }))
    }

    fn io(&self, source: sled::Error) -> StoreError {
        StoreError::Io { path: self.path.clone(), cause: source }
    }

    fn corrupt(&self, what: impl Into<String>, detail: impl ToString) -> StoreError {
        StoreError::Corrupt { path: self.path.clone(), what: what.into(), detail: detail.to_string() }
    }

    fn check_format_and_settings(&mut self, settings: &Settings) -> Result<(), StoreError> {
        let canonical = settings.canonical();
        match self.tree.get(META_FORMAT).map_err(|e| self.io(e))? {
            None => {
                let mut batch = sled::Batch::default();
                batch.insert(META_FORMAT, cbor(&FORMAT_VERSION));
                batch.insert(META_SETTINGS, canonical.as_bytes());
                self.tree.apply_batch(batch).map_err(|e| self.io(e))?;
            }
            Some(raw) => {
                let version: u64 =
                    ciborium::from_reader(&raw[..]).map_err(|e| self.corrupt("format version", e))?;
                if version != FORMAT_VERSION {
                    return Err(self.corrupt(
                        "format version",
                        format!("format {version} is not the {FORMAT_VERSION} this build reads"),
                    ));
                }
                let stored = self.tree.get(META_SETTINGS).map_err(|e| self.io(e))?.unwrap_or_default();
                let stored = String::from_utf8_lossy(&stored).into_owned();
                if stored != canonical {
                    return Err(StoreError::SettingsChanged {
                        path: self.path.clone(),
                        stored,
                        current: canonical,
                    });
                }
            }
        }
        Ok(())
    }

    fn identity(&mut self, scheme: &dyn IdentityScheme) -> Result<(Vec<u8>, String), StoreError> {
        if let Some(raw) = self.tree.get(META_IDENTITY).map_err(|e| self.io(e))? {
            let peer_id = scheme.peer_id(&raw).map_err(|e| self.corrupt("identity keypair", e))?;
            return Ok((raw.to_vec(), peer_id));
        }
        let identity = scheme.generate();
        let peer_id = scheme.peer_id(&identity).map_err(|e| self.corrupt("identity keypair", e))?;
        self.tree.insert(META_IDENTITY, identity.as_slice()).map_err(|e| self.io(e))?;
        Ok((identity, peer_id))
    }

    fn take_incarnation(&mut self, highest_own: u32) -> Result<u32, StoreError> {
        let counter: u32 = match self.tree.get(META_INCARNATION).map_err(|e| self.io(e))? {
            Some(raw) => ciborium::from_reader(&raw[..]).map_err(|e| self.corrupt("incarnation", e))?,
            None => 0,
        };
        let previous = counter.max(highest_own);
        let incarnation = previous
            .checked_add(1)
            .ok_or_else(|| self.corrupt("incarnation", "the incarnation counter is exhausted"))?;
        self.tree.insert(META_INCARNATION, cbor(&incarnation)).map_err(|e| self.io(e))?;
        // The new incarnation must be durable before the first write under it.
        self.db.flush().map_err(|e| self.io(e))?;
        Ok(incarnation)
    }

    fn load_all(&mut self) -> Result<Vec<StoredOrigin>, StoreError> {
        let mut by_id: BTreeMap<u32, StoredOrigin> = BTreeMap::new();
        for item in self.tree.scan_prefix(b"o") {
            let (key, value) = item.map_err(|e| self.io(e))?;
            let id = id_from(&key[1..]).ok_or_else(|| self.corrupt("origin key", "wrong length"))?;
            let record: OriginRecord =
                ciborium::from_reader(&value[..]).map_err(|e| self.corrupt(format!("origin {id}"), e))?;
            let origin = Origin::new(&record.peer, record.incarnation);
            self.origin_ids.insert(origin.clone(), id);
            by_id.insert(
                id,
                StoredOrigin {
                    origin,
                    seq: record.seq,
                    changed_at_ms: record.changed_at_ms,
                    cells: Vec::new(),
                },
            );
        }
        let mut edges: BTreeMap<u32, Edge> = BTreeMap::new();
        for item in self.tree.scan_prefix(b"e") {
            let (key, value) = item.map_err(|e| self.io(e))?;
            let id = id_from(&key[1..]).ok_or_else(|| self.corrupt("edge key", "wrong length"))?;
            let record: EdgeRecord =
                ciborium::from_reader(&value[..]).map_err(|e| self.corrupt(format!("edge {id}"), e))?;
            let kind_of = |code: u8| {
                EdgeKind::from_code(code)
                    .ok_or_else(|| self.corrupt(format!("edge {id}"), format!("unknown kind {code}")))
            };
            let edge = match record {
                EdgeRecord::Request(from, to) => Edge::new(from, to),
                EdgeRecord::Kind(from, to, code) => Edge::with_kind(from, to, kind_of(code)?),
                EdgeRecord::Labelled(from, to, code, flow, mark) => {
                    let marks = from_marks_code(mark)
                        .ok_or_else(|| self.corrupt(format!("edge {id}"), format!("unknown marks {mark}")))?;
                    Edge::with_kind(from, to, kind_of(code)?)
                        .labelled(flow, Default::default())
                        .with_marks(marks)
                }
            };
            self.edge_ids.insert(edge.clone(), id);
            self.next_edge_id = self.next_edge_id.max(id + 1);
            edges.insert(id, edge);
        }
        let mut cells: BTreeMap<u32, HashMap<CellKey, Cell>> = BTreeMap::new();
        let mut keep = |origin_id: u32, key: CellKey, cell: Cell| {
            let held = cells.entry(origin_id).or_default();
            if held.get(&key).is_none_or(|old| old.seq < cell.seq) {
                held.insert(key, cell);
            }
        };
        for item in self.tree.scan_prefix(b"c") {
            let (key, value) = item.map_err(|e| self.io(e))?;
            let what = || format!("cell key {key:?}");
            if key.len() != 18 {
                return Err(self.corrupt(what(), "wrong length"));
            }
            let origin_id = id_from(&key[1..5]).expect("length checked");
            let edge_id = id_from(&key[5..9]).expect("length checked");
            let resolution = key[9];
            let bucket_start_ms = decode_bucket(key[10..18].try_into().expect("length checked"));
            let edge = edges.get(&edge_id).ok_or_else(|| self.corrupt(what(), "unknown edge id"))?;
            let cell = decode_cell(&value).map_err(|e| self.corrupt(what(), e))?;
            keep(origin_id, CellKey { edge: edge.clone(), resolution, bucket_start_ms }, cell);
        }
        for item in self.tree.scan_prefix(b"s") {
            let (key, value) = item.map_err(|e| self.io(e))?;
            let what = || format!("sealed bucket key {key:?}");
            if key.len() != 14 {
                return Err(self.corrupt(what(), "wrong length"));
            }
            let origin_id = id_from(&key[1..5]).expect("length checked");
            let resolution = key[5];
            let bucket_start_ms = decode_bucket(key[6..14].try_into().expect("length checked"));
            let packed: Vec<PackedCell> =
                ciborium::from_reader(&value[..]).map_err(|e| self.corrupt(what(), e))?;
            for (edge_id, seq, calls, errors, bytes, latency) in packed {
                let edge = edges.get(&edge_id).ok_or_else(|| self.corrupt(what(), "unknown edge id"))?;
                let data = CellData { calls, errors, bytes, latency };
                data.check_consistent().map_err(|e| self.corrupt(what(), e))?;
                keep(
                    origin_id,
                    CellKey { edge: edge.clone(), resolution, bucket_start_ms },
                    Cell { seq, data },
                );
            }
        }
        for (origin_id, held) in cells {
            let what = format!("cells of origin id {origin_id}");
            let origin = by_id.get_mut(&origin_id).ok_or_else(|| self.corrupt(what, "unknown origin id"))?;
            origin.cells.extend(held);
        }
        Ok(by_id.into_values().collect())
    }

    fn origin_id(&mut self, origin: &Origin, batch: &mut WriteBatch) -> u32 {
        if let Some(&id) = self.origin_ids.get(origin) {
            return id;
        }
        let id = self.origin_ids.len() as u32;
        self.origin_ids.insert(origin.clone(), id);
        // Written with a seq of 0; the caller records the real seq in the same batch.
        let record = OriginRecord {
            peer: origin.peer.to_string(),
            incarnation: origin.incarnation,
            seq: 0,
            changed_at_ms: None,
        };
        batch.batch.insert([b"o".as_slice(), &id.to_be_bytes()].concat(), cbor(&record));
        batch.writes += 1;
        id
    }

    fn edge_id(&mut self, edge: &Edge, batch: &mut WriteBatch) -> u32 {
        if let Some(&id) = self.edge_ids.get(edge) {
            return id;
        }
        let id = self.next_edge_id;
        self.next_edge_id += 1;
        self.edge_ids.insert(edge.clone(), id);
        // Edges without flow or mark keep the record they always had.
        let record = if edge.is_base() {
            cbor(&(&edge.from, &edge.to, edge.kind.code()))
        } else {
            cbor(&(&edge.from, &edge.to, edge.kind.code(), &edge.flow, edge.marks_code()))
        };
        batch.batch.insert([b"e".as_slice(), &id.to_be_bytes()].concat(), record);
        batch.writes += 1;
        id
    }

    fn cell_key(&mut self, origin: &Origin, key: &CellKey, batch: &mut WriteBatch) -> [u8; 18] {
        let origin_id = self.origin_id(origin, batch);
        let edge_id = self.edge_id(&key.edge, batch);
        let mut out = [0u8; 18];
        out[0] = b'c';
        out[1..5].copy_from_slice(&origin_id.to_be_bytes());
        out[5..9].copy_from_slice(&edge_id.to_be_bytes());
        out[9] = key.resolution;
        out[10..18].copy_from_slice(&encode_bucket(key.bucket_start_ms));
        out
    }

    /// Adds the write of one origin's cell to `batch`.
    pub fn put_cell(&mut self, batch: &mut WriteBatch, origin: &Origin, key: &CellKey, cell: &Cell) {
        let k = self.cell_key(origin, key, batch);
        batch.batch.insert(&k, encode_cell(cell));
        batch.writes += 1;
    }

    /// Adds the deletion of one origin's cell to `batch`.
    pub fn delete_cell(&mut self, batch: &mut WriteBatch, origin: &Origin, key: &CellKey) {
        let k = self.cell_key(origin, key, batch);
        batch.batch.remove(&k);
        batch.writes += 1;
    }

    fn packed_key(
        &mut self,
        origin: &Origin,
        resolution: u8,
        bucket_start_ms: i64,
        batch: &mut WriteBatch,
    ) -> [u8; 14] {
        let origin_id = self.origin_id(origin, batch);
        let mut out = [0u8; 14];
        out[0] = b's';
        out[1..5].copy_from_slice(&origin_id.to_be_bytes());
        out[5] = resolution;
        out[6..14].copy_from_slice(&encode_bucket(bucket_start_ms));
        out
    }

    /// Adds to `batch` the packing of a sealed bucket: one record holding `cells` (all of
    /// one origin's cells of that bucket), replacing their records one by one.
    pub fn put_sealed_bucket(
        &mut self,
        batch: &mut WriteBatch,
        origin: &Origin,
        resolution: u8,
        bucket_start_ms: i64,
        cells: &[(CellKey, Cell)],
    ) {
        let mut packed: Vec<PackedCellRef<'_>> = Vec::with_capacity(cells.len());
        for (key, cell) in cells {
            debug_assert_eq!((key.resolution, key.bucket_start_ms), (resolution, bucket_start_ms));
            let edge_id = self.edge_id(&key.edge, batch);
            let d = &cell.data;
            packed.push((edge_id, cell.seq, d.calls, d.errors, d.bytes, &d.latency));
            let single = self.cell_key(origin, key, batch);
            batch.batch.remove(&single);
        }
        packed.sort_by_key(|p| p.0);
        let k = self.packed_key(origin, resolution, bucket_start_ms, batch);
        batch.batch.insert(&k, cbor(&packed));
        batch.writes += 1 + cells.len();
    }

    /// Adds the deletion of a sealed bucket's record to `batch` (when it expires).
    pub fn delete_sealed_bucket(
        &mut self,
        batch: &mut WriteBatch,
        origin: &Origin,
        resolution: u8,
        bucket_start_ms: i64,
    ) {
        let k = self.packed_key(origin, resolution, bucket_start_ms, batch);
        batch.batch.remove(&k);
        batch.writes += 1;
    }

    /// The start of the first bucket of `resolution` not packed yet, if any was packed.
    pub fn packed_watermark(&self, resolution: u8) -> Option<i64> {
        self.packed_watermarks.get(&resolution).copied()
    }

    /// Records in `batch` that every bucket of `resolution` before `next_ms` is packed.
    pub fn set_packed_watermark(&mut self, batch: &mut WriteBatch, resolution: u8, next_ms: i64) {
        self.packed_watermarks.insert(resolution, next_ms);
        batch.batch.insert(META_PACKED, cbor(&self.packed_watermarks));
        batch.writes += 1;
    }

    /// Adds the write of an origin's seq to `batch`. Put it in the same batch as the cells
    /// it covers: a seq on disk must never claim cells that are not.
    pub fn put_origin(
        &mut self,
        batch: &mut WriteBatch,
        origin: &Origin,
        seq: u64,
        changed_at_ms: Option<i64>,
    ) {
        let id = self.origin_id(origin, batch);
        let record = OriginRecord {
            peer: origin.peer.to_string(),
            incarnation: origin.incarnation,
            seq,
            changed_at_ms,
        };
        batch.batch.insert([b"o".as_slice(), &id.to_be_bytes()].concat(), cbor(&record));
        batch.writes += 1;
    }

    /// Adds to `batch` the write of a known peer and its addresses (replacing what was
    /// known of it); with no addresses, its removal.
    pub fn put_known_peer(&mut self, batch: &mut WriteBatch, peer_id: &str, addrs: &[String]) {
        let key = [b"p".as_slice(), peer_id.as_bytes()].concat();
        if addrs.is_empty() {
            batch.batch.remove(key);
        } else {
            batch.batch.insert(key, cbor(&addrs));
        }
        batch.writes += 1;
    }

    fn load_known_peers(&self) -> Result<Vec<(String, Vec<String>)>, StoreError> {
        let mut peers = Vec::new();
        for item in self.tree.scan_prefix(b"p") {
            let (key, value) = item.map_err(|e| self.io(e))?;
            let peer_id =
                String::from_utf8(key[1..].to_vec()).map_err(|e| self.corrupt("known peer id", e))?;
            let addrs: Vec<String> = ciborium::from_reader(&value[..])
                .map_err(|e| self.corrupt(format!("addresses of peer {peer_id}"), e))?;
            peers.push((peer_id, addrs));
        }
        Ok(peers)
    }

    /// Applies a batch atomically (not yet durable: see [`Store::flush`]).
    pub fn apply(&mut self, batch: WriteBatch) -> Result<(), StoreError> {
        self.tree.apply_batch(batch.batch).map_err(|e| self.io(e))
    }

    /// Makes everything applied so far durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await.map(|_| ()).map_err(|e| self.io(e))
    }

    /// Bytes the store takes on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// A handle that can report the size on disk from other tasks.
    pub fn size_probe(&self) -> SizeProbe {
        SizeProbe { db: self.db.clone() }
    }
}

/// Reports the store's size on disk from any task.
#[derive(Debug, Clone)]
pub struct SizeProbe {
    db: sled::Db,
}

impl SizeProbe {
    /// Bytes the store takes on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

/// One cell in a sealed bucket's record: `(edge id, seq, calls, errors, bytes, latency)`.
type PackedCell = (u32, u64, u64, u64, u64, LatencyHistogram);
type PackedCellRef<'a> = (u32, u64, u64, u64, u64, &'a LatencyHistogram);

fn id_from(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

/// Encodes a cell as a CBOR array `(seq, calls, errors, bytes, latency)`.
pub fn encode_cell(cell: &Cell) -> Vec<u8> {
    let d = &cell.data;
    cbor(&(cell.seq, d.calls, d.errors, d.bytes, &d.latency))
}

/// Decodes what [`encode_cell`] wrote, checking the cell is self-consistent.
pub fn decode_cell(bytes: &[u8]) -> Result<Cell, String> {
    let (seq, calls, errors, bytes, latency): (u64, u64, u64, u64, LatencyHistogram) =
        ciborium::from_reader(bytes).map_err(|e| e.to_string())?;
    let data = CellData { calls, errors, bytes, latency };
    data.check_consistent().map_err(|e| e.to_string())?;
    Ok(Cell { seq, data })
}
