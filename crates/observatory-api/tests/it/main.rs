//! The HTTP edge at its boundary: requests through the router, against a fake peer.
//!
//! [`FakePeer`] is what the edge's interface needs and nothing more: a real flow state and
//! a real correlator in memory, events applied at once (no writer, no store, no mesh), and
//! the system clock. It ticks its correlator whenever it is read, instead of on a timer,
//! so a test that waits for an expired half sees it on its next query. The real peer
//! behind the same router is tested in `observatory-peer`.

mod exposition;
mod grpc;
mod ingest;
mod objectives;
mod picture;
mod query;
mod spans;

use std::sync::{Arc, Mutex, RwLock};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use observatory_api::{
    Api, ApiLimits, AppliedCounters, MeshView, ObjectivesView, PeerApi, PeerInfo, SubmitError, router,
};
use observatory_config::Config;
use observatory_core::commit::Applied;
use observatory_core::{Event, FlowState, Origin};
use observatory_correlate::{CorrelationConfig, CorrelationCounters, Correlator, Sighting, Span};
use observatory_objectives::{Coverage, Evaluation, Evaluator, SenderCounters};
use serde_json::Value;
use tower::ServiceExt;

/// The limits of a peer with the documented defaults.
pub fn default_limits() -> ApiLimits {
    ApiLimits::from_config(Config::defaults())
}

/// The correlator's settings in the documented defaults.
pub fn default_correlation() -> CorrelationConfig {
    Config::defaults().correlation().expect("valid")
}

#[derive(Debug)]
struct Inner {
    state: RwLock<FlowState>,
    correlator: Mutex<Correlator>,
    applied: Mutex<AppliedCounters>,
    info: PeerInfo,
    objectives: Mutex<FakeObjectives>,
}

/// Objectives read from files, evaluated whenever they are asked for (not on a timer).
#[derive(Debug)]
struct FakeObjectives {
    files: Vec<std::path::PathBuf>,
    evaluator: Evaluator,
    reload_error: Option<String>,
}

fn evaluator_of(files: &[std::path::PathBuf]) -> Result<Evaluator, String> {
    let config = Config::defaults();
    let set = observatory_config::load_objective_files(files, config.objective_defaults())
        .map_err(|e| e.to_string())?;
    Evaluator::new(set, &config.settings().expect("valid"), config.evaluation()).map_err(|e| e.to_string())
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct FakePeer(Arc<Inner>);

impl FakePeer {
    fn new(correlation: CorrelationConfig, objective_files: Vec<std::path::PathBuf>) -> Self {
        let evaluator = evaluator_of(&objective_files).expect("valid objectives");
        let config = Config::defaults();
        let mut state = FlowState::new(config.settings().expect("valid"), config.core_limits());
        state.set_local(Origin::new("12D3KooWFake", 1));
        FakePeer(Arc::new(Inner {
            state: RwLock::new(state),
            correlator: Mutex::new(Correlator::new(correlation)),
            applied: Mutex::new(AppliedCounters::default()),
            info: PeerInfo {
                peer_id: "12D3KooWFake".into(),
                incarnation: 1,
                version: "test".into(),
                data_dir: "/nowhere".into(),
                otlp: None,
                otlp_grpc: Some("127.0.0.1:4317".into()),
            },
            objectives: Mutex::new(FakeObjectives { files: objective_files, evaluator, reload_error: None }),
        }))
    }

    fn view(&self, objectives: &FakeObjectives, evaluation: Option<Evaluation>) -> ObjectivesView {
        ObjectivesView {
            fingerprint: objectives.evaluator.objectives().fingerprint(),
            files: objectives.files.iter().map(|f| f.display().to_string()).collect(),
            reload_error: objectives.reload_error.clone(),
            evaluation,
            alertmanagers: Vec::new(),
            sender: SenderCounters::default(),
            sends: Vec::new(),
            link_base_url: "http://fake.example".into(),
            ends_at_ahead_ms: 240_000,
        }
    }

    fn apply(&self, events: &[Event]) -> Applied {
        let outcome = self.0.state.write().unwrap().apply_local(self.now_ms(), events);
        let mut applied = self.0.applied.lock().unwrap();
        applied.events_accepted += outcome.accepted as u64;
        for (_, rejection) in &outcome.rejected {
            *applied.events_rejected.entry(rejection.reason_code().to_string()).or_default() += 1;
        }
        Applied { accepted: outcome.accepted, rejected: outcome.rejected, flows_folded: outcome.flows_folded }
    }

    fn tick(&self) {
        let events = self.0.correlator.lock().unwrap().handle_tick(self.now_ms());
        self.apply(&events);
    }
}

impl PeerApi for FakePeer {
    fn now_ms(&self) -> i64 {
        now_ms()
    }

    async fn submit_events(&self, events: Vec<Event>) -> Result<Applied, SubmitError> {
        Ok(self.apply(&events))
    }

    async fn submit_spans(&self, spans: Vec<Span>) -> Result<(), SubmitError> {
        let me = vec![self.0.info.peer_id.clone()];
        let output = self.0.correlator.lock().unwrap().handle_spans(self.now_ms(), spans, &me[0], &me);
        assert!(output.handoffs.is_empty(), "a lone peer owns every trace");
        self.apply(&output.events);
        Ok(())
    }

    async fn submit_sightings(&self, sightings: Vec<Sighting>) -> Result<(), SubmitError> {
        let me = vec![self.0.info.peer_id.clone()];
        let output =
            self.0.correlator.lock().unwrap().handle_sightings(self.now_ms(), sightings, &me[0], &me);
        self.apply(&output.events);
        Ok(())
    }

    fn read<R>(&self, read: impl FnOnce(&FlowState) -> R) -> R {
        self.tick();
        read(&self.0.state.read().unwrap())
    }

    fn info(&self) -> PeerInfo {
        self.0.info.clone()
    }

    fn store_bytes(&self) -> u64 {
        4096
    }

    fn applied(&self) -> AppliedCounters {
        self.0.applied.lock().unwrap().clone()
    }

    fn correlation(&self) -> CorrelationCounters {
        self.0.correlator.lock().unwrap().counters()
    }

    fn mesh(&self) -> Option<MeshView> {
        None
    }

    fn objectives(&self) -> ObjectivesView {
        let mut objectives = self.0.objectives.lock().unwrap();
        let changes = self.0.state.write().unwrap().take_changes();
        let state = self.0.state.read().unwrap();
        let evaluation =
            objectives.evaluator.evaluate(self.now_ms(), &state, &changes, &Coverage::complete());
        self.view(&objectives, Some(evaluation))
    }

    async fn reload_objectives(&self) -> Result<ObjectivesView, String> {
        let mut objectives = self.0.objectives.lock().unwrap();
        match evaluator_of(&objectives.files) {
            Ok(evaluator) => {
                objectives.evaluator = evaluator;
                objectives.reload_error = None;
                Ok(self.view(&objectives, None))
            }
            Err(error) => {
                objectives.reload_error = Some(error.clone());
                Err(error)
            }
        }
    }
}

/// A router over a fresh fake peer.
#[allow(missing_debug_implementations)]
pub struct TestPeer {
    pub app: Router,
    /// The OTLP/gRPC routes over the same edge (its ingest places shared with `app`).
    pub grpc: Router,
    pub peer: FakePeer,
}

impl TestPeer {
    pub fn new(limits: ApiLimits) -> Self {
        Self::with_correlation(limits, None)
    }

    /// A peer whose correlator runs with `config`.
    pub fn with_correlation(limits: ApiLimits, config: Option<CorrelationConfig>) -> Self {
        let peer = FakePeer::new(config.unwrap_or_else(default_correlation), Vec::new());
        let api = Api::new(peer.clone(), limits);
        Self { app: router(api.clone()), grpc: observatory_api::grpc::grpc_router(api), peer }
    }

    /// A peer evaluating the objectives of `files`.
    pub fn with_objectives(files: Vec<std::path::PathBuf>) -> Self {
        let peer = FakePeer::new(default_correlation(), files);
        let api = Api::new(peer.clone(), default_limits());
        Self { app: router(api.clone()), grpc: observatory_api::grpc::grpc_router(api), peer }
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
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_millis() as i64
}
