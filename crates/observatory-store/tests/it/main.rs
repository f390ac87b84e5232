//! The store at its boundary: opening data dirs, the writer, and what survives a reopen.

use std::path::Path;
use std::sync::{Arc, RwLock};

use observatory_config::Config;
use observatory_core::{Clock, Edge, Event, Limits, NodeName, Resolution, Settings};
use observatory_store::{IdentityScheme, StoreError, WriterConfig, spawn_writer};
use tokio_util::sync::CancellationToken;

fn default_settings() -> Settings {
    Config::defaults().settings().expect("the default settings are valid")
}

fn default_limits() -> Limits {
    Config::defaults().core_limits()
}

fn writer_config() -> WriterConfig {
    WriterConfig::from_config(Config::defaults())
}

/// The test's clock: the system's.
#[derive(Debug)]
struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        unix_now_ms()
    }
}

fn unix_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_millis() as i64
}

fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// An identity of 16 random bytes, named by their hex (the store keeps it opaque).
struct TestIdentity;

impl IdentityScheme for TestIdentity {
    fn generate(&self) -> Vec<u8> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let seed = nanos ^ u128::from(std::process::id()) << 64;
        seed.to_le_bytes().to_vec()
    }

    fn peer_id(&self, identity: &[u8]) -> Result<String, String> {
        if identity.len() != 16 {
            return Err(format!("{} bytes, not 16", identity.len()));
        }
        Ok(identity.iter().map(|b| format!("{b:02x}")).collect())
    }
}

fn open_peer(
    dir: &Path,
    settings: Settings,
    limits: Limits,
) -> Result<observatory_store::OpenedPeer, StoreError> {
    observatory_store::open_peer(dir, settings, limits, &TestIdentity)
}

fn event(from: &str, to: &str, ts_ms: i64, latency_us: u64, error: bool) -> Event {
    Event {
        edge: Edge::new(NodeName::new(from, 200).unwrap(), NodeName::new(to, 200).unwrap()),
        ts_ms,
        latency_us: Some(latency_us),
        error,
        bytes: 10,
        count: 1,
    }
}

/// Opens a data dir this process had open a moment ago. sled's flusher thread holds the
/// dir's lock briefly after the last handle is dropped, so a lock error is retried for a
/// few seconds (a restarted peer is a new process and never meets this).
fn open_when_free(dir: &Path) -> observatory_store::OpenedPeer {
    try_open_when_free(dir, default_settings()).expect("open")
}

/// [`open_when_free`] with other settings, giving the error other than the lock's.
fn try_open_when_free(dir: &Path, settings: Settings) -> Result<observatory_store::OpenedPeer, StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match open_peer(dir, settings.clone(), default_limits()) {
            Err(StoreError::Open { cause, .. })
                if cause.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

fn graph_calls(state: &observatory_core::FlowState, now_ms: i64) -> Vec<(String, u64, u64, u64)> {
    let view = state.graph(15 * 60 * 1000, now_ms + 1).expect("graph");
    view.edges
        .iter()
        .map(|e| (format!("{:?}", e.edge), e.figures.calls, e.figures.errors, e.figures.bytes))
        .collect()
}

async fn ingest(dir: &Path, batches: &[Vec<Event>]) {
    let opened = open_when_free(dir);
    let state = Arc::new(RwLock::new(opened.state));
    let stop = CancellationToken::new();
    let (handle, _persist, writer) =
        spawn_writer(state, opened.store, writer_config(), clock(), stop.clone());
    for batch in batches {
        let reply = handle.submit(batch.clone()).await.expect("submit");
        assert_eq!(reply.accepted, batch.len(), "{reply:?}");
    }
    stop.cancel();
    writer.await.expect("join").expect("writer ok");
}

#[tokio::test]
async fn reopening_keeps_identity_and_cells_and_takes_a_new_incarnation() {
    let dir = tempfile::tempdir().unwrap();
    let now = unix_now_ms();
    let batches: Vec<Vec<Event>> = (0..5)
        .map(|i| {
            (0..50)
                .map(|j| {
                    event(
                        "web",
                        if j % 2 == 0 { "a" } else { "b" },
                        now - j * 1000,
                        j as u64 * 100,
                        (i + j) % 7 == 0,
                    )
                })
                .collect()
        })
        .collect();
    ingest(dir.path(), &batches).await;
    let first = open_when_free(dir.path());
    let peer = first.origin.peer.clone();
    assert_eq!(first.origin.incarnation, 2, "the first run was incarnation 1");
    let totals = graph_calls(&first.state, now);
    let calls: u64 = totals.iter().map(|t| t.1).sum();
    assert_eq!(calls, 250, "{totals:?}");
    assert!(first.state.global_view_recomputed_matches());
    drop(first);

    ingest(dir.path(), &batches[..1]).await; // incarnation 3
    let second = open_when_free(dir.path());
    assert_eq!(second.origin.peer, peer, "the identity is kept");
    assert_eq!(second.origin.incarnation, 4);
    let calls: u64 = graph_calls(&second.state, now).iter().map(|t| t.1).sum();
    assert_eq!(calls, 300);
    let coverage = second.state.coverage();
    let incarnations: Vec<u32> = coverage.iter().map(|c| c.origin.incarnation).collect();
    assert_eq!(incarnations, [1, 3, 4], "each run that wrote is an origin; the new one is empty");
}

#[tokio::test]
async fn other_settings_are_refused_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    ingest(dir.path(), &[vec![event("a", "b", unix_now_ms(), 1, false)]]).await;
    let other = Settings::new(vec![Resolution {
        name: "30s".into(),
        width_ms: Some(30_000),
        retention_ms: Some(3_600_000),
    }])
    .unwrap();
    let error = try_open_when_free(dir.path(), other).expect_err("other settings");
    assert!(matches!(error, StoreError::SettingsChanged { .. }), "{error}");
    assert!(error.to_string().contains("resolutions"), "{error}");
    let reopened = open_when_free(dir.path());
    assert_eq!(reopened.state.stats().edges, 1);
}

#[tokio::test]
async fn a_damaged_record_stops_the_open_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    ingest(dir.path(), &[vec![event("a", "b", unix_now_ms(), 1, false)]]).await;
    {
        let db = sled::Config::new().path(dir.path()).use_compression(true).open().unwrap();
        let tree = db.open_tree("state").unwrap();
        let key = tree.scan_prefix(b"c").next().unwrap().unwrap().0;
        tree.insert(key, b"\xff\x00garbage".to_vec()).unwrap();
        db.flush().unwrap();
    }
    let error = try_open_when_free(dir.path(), default_settings()).expect_err("damaged");
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
    assert!(error.to_string().contains("move the data dir away"), "{error}");
    assert!(dir.path().join("db").exists(), "nothing was deleted");
}

#[tokio::test]
async fn a_data_dir_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _held = open_peer(dir.path(), default_settings(), default_limits()).expect("first");
    let error = open_peer(dir.path(), default_settings(), default_limits()).expect_err("second");
    assert!(matches!(error, StoreError::Open { .. }), "{error}");
    assert!(error.to_string().contains("another observatory peer"), "{error}");
}

#[tokio::test]
async fn the_writer_answers_rejections_per_event() {
    let dir = tempfile::tempdir().unwrap();
    let opened = open_peer(dir.path(), default_settings(), default_limits()).expect("open");
    let state = Arc::new(RwLock::new(opened.state));
    let (handle, _persist, _writer) =
        spawn_writer(state.clone(), opened.store, writer_config(), clock(), CancellationToken::new());
    let now = unix_now_ms();
    let reply = handle
        .submit(vec![event("a", "b", now, 1, false), event("a", "b", now - 3_600_000, 1, false)])
        .await
        .expect("submit");
    assert_eq!(reply.accepted, 1);
    assert_eq!(reply.rejected.len(), 1);
    assert_eq!(reply.rejected[0].0, 1);
    assert_eq!(reply.rejected[0].1.field(), "ts");
    assert_eq!(state.read().unwrap().stats().cells, 4);
}

#[tokio::test]
async fn sealed_buckets_are_packed_and_read_back_the_same() {
    use observatory_store::{WriteBatch, pack_sealed_buckets};
    let dir = tempfile::tempdir().unwrap();
    let now = unix_now_ms();
    let mut opened = open_peer(dir.path(), default_settings(), default_limits()).expect("open");
    let origin = opened.origin.clone();
    let events: Vec<Event> = (0..600)
        .map(|i| {
            event(
                ["web", "api", "db"][i % 3],
                ["a", "b"][i % 2],
                now - (i as i64) * 1000,
                i as u64 * 37,
                i % 11 == 0,
            )
        })
        .collect();
    let outcome = opened.state.apply_local(now, &events);
    assert_eq!(outcome.accepted, 600);
    let mut batch = WriteBatch::default();
    for key in &outcome.changed {
        let cell = opened.state.cell(&origin, key).unwrap().clone();
        opened.store.put_cell(&mut batch, &origin, key, &cell);
    }
    opened.store.put_origin(&mut batch, &origin, opened.state.origin_seq(&origin), None);
    opened.store.apply(batch).unwrap();

    // Twenty minutes later every 10 s and 1 m bucket of those events is sealed.
    let later = now + 20 * 60 * 1000;
    let mut batch = WriteBatch::default();
    pack_sealed_buckets(&mut opened.state, &mut opened.store, later, &mut batch);
    assert!(!batch.is_empty(), "sealed buckets were packed");
    opened.store.apply(batch).unwrap();
    let mut again = WriteBatch::default();
    pack_sealed_buckets(&mut opened.state, &mut opened.store, later, &mut again);
    assert!(again.is_empty(), "a second pass at the same time packs nothing: {}", again.len());
    opened.store.flush().await.unwrap();
    let before = opened.state.clone();
    drop(opened);

    let reopened = open_when_free(dir.path());
    assert!(reopened.state == before, "the packed state reads back the same");
    assert!(reopened.state.global_view_recomputed_matches());
    let calls: u64 = graph_calls(&reopened.state, now).iter().map(|t| t.1).sum();
    assert_eq!(calls, 600);
}

#[tokio::test]
async fn flows_and_propagation_marks_come_back_after_a_restart() {
    use observatory_core::ContextMark;
    let dir = tempfile::tempdir().unwrap();
    let now = unix_now_ms();
    let labelled = |flow: Option<&str>, mark: ContextMark| {
        let mut e = event("web", "catalog", now - 1_000, 2_000, false);
        e.edge = e.edge.labelled(flow.map(|f| NodeName::new(f, 200).unwrap()), mark);
        e
    };
    let batch = vec![
        event("web", "catalog", now - 1_000, 2_000, false),
        labelled(Some("checkout-page"), ContextMark::Continued),
        labelled(Some("checkout-page"), ContextMark::Started),
        labelled(None, ContextMark::Missing),
        {
            let mut e = labelled(None, ContextMark::Unknown);
            e.edge = e.edge.with_virtual(observatory_core::VirtualSide::Server);
            e
        },
    ];
    ingest(dir.path(), std::slice::from_ref(&batch)).await;
    let reopened = open_when_free(dir.path());
    let by_label =
        reopened.state.graph_labelled_as_of(15 * 60 * 1000, now + 1, now + 1, None, true).expect("graph");
    let mut read: Vec<Edge> = by_label.edges.iter().map(|e| e.edge.clone()).collect();
    let mut written: Vec<Edge> = batch.iter().map(|e| e.edge.clone()).collect();
    read.sort();
    written.sort();
    assert_eq!(read, written, "every flow, mark and virtual side is an edge of its own on disk");
    assert_eq!(graph_calls(&reopened.state, now), [("web -> catalog".to_string(), 5, 0, 50)]);
    assert!(reopened.state.global_view_recomputed_matches());
}
