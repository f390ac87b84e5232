//! The HTTP API at its boundary: requests through the router, with a real store and writer.

mod exposition;
mod ingest;
mod query;
mod spans;

use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use observatory_api::{ApiContext, ApiLimits, PeerInfo, router};
use observatory_core::{Limits, Settings};
use observatory_store::{WriterConfig, open_peer, spawn_writer};
use serde_json::Value;
use tower::ServiceExt;

/// A router over a fresh peer in a temporary data dir.
#[allow(missing_debug_implementations)]
pub struct TestPeer {
    pub app: Router,
    pub context: Arc<ApiContext>,
    _dir: tempfile::TempDir,
    _shutdown: tokio::sync::watch::Sender<bool>,
}

impl TestPeer {
    pub fn new(limits: ApiLimits) -> Self {
        Self::with_correlation(limits, None)
    }

    /// A peer whose correlator runs with `config` (its clock task too, when given).
    pub fn with_correlation(limits: ApiLimits, config: Option<observatory_api::CorrelationConfig>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let opened = open_peer(dir.path(), Settings::default(), Limits::default()).expect("open peer");
        let store_size = opened.store.size_probe();
        let state = Arc::new(RwLock::new(opened.state));
        let (shutdown, watch) = tokio::sync::watch::channel(false);
        let (ingest, _persist, _writer) =
            spawn_writer(state.clone(), opened.store, WriterConfig::default(), watch);
        let info = PeerInfo {
            peer_id: opened.origin.peer.to_string(),
            incarnation: opened.origin.incarnation,
            version: "test".into(),
            data_dir: dir.path().display().to_string(),
        };
        let mut context = ApiContext::new(state, ingest, info, limits, store_size);
        if let Some(config) = config {
            context = context.with_correlation(config);
        }
        let context = Arc::new(context);
        tokio::spawn(observatory_api::run_correlation(context.clone(), None, shutdown.subscribe()));
        Self { app: router(context.clone()), context, _dir: dir, _shutdown: shutdown }
    }

    pub async fn request(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self.app.clone().oneshot(request).await.expect("router answers");
        let status = response.status();
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value)
    }

    pub async fn post(&self, content_type: &str, body: impl Into<Body>) -> (StatusCode, Value) {
        let request = Request::post("/api/v1/events")
            .header("content-type", content_type)
            .body(body.into())
            .expect("request");
        self.request(request).await
    }

    pub async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.request(Request::get(uri).body(Body::empty()).expect("request")).await
    }
}

pub fn now_ms() -> i64 {
    observatory_store::unix_now_ms()
}
