//! The reporter: takes reports on the service's threads without blocking them, and posts
//! them in batches (CBOR, `POST /api/v1/events`) to the local peer from one task.
//!
//! A report goes into a bounded lock-free queue; when it is full the report is dropped and
//! counted, never waited for. The task wakes when a batch is full or every
//! `flush_interval`, posts, and retries a failed post with exponential backoff (jittered)
//! while new reports keep queueing. [`Reporter::shutdown`] posts what is queued, within
//! `shutdown_timeout`, and joins the task. Every post names the service and says how many
//! reports were dropped so far (headers `observatory-reporter` and
//! `observatory-reporter-dropped`); the peer does not read them yet.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What flowed on an edge, as the peer's events name it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A call answered by the callee.
    #[default]
    Request,
    /// A message through a queue or topic: the latency is the transit time.
    Messaging,
    /// A call to a database.
    Database,
}

/// Whether a call carried its caller's context, as the peer's propagation verdicts read it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContextMark {
    /// Not said.
    #[default]
    Unknown,
    /// The caller sent on the context of the request it was serving.
    Continued,
    /// The caller served no request (or lost its context) and started a new trace.
    Started,
    /// The callee got no context (reported by the callee, from the entry node).
    Missing,
}

impl ContextMark {
    fn is_unknown(&self) -> bool {
        *self == ContextMark::Unknown
    }
}

/// One call or message on an edge, as the peer takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The sending node.
    pub from: Arc<str>,
    /// The receiving node.
    pub to: Box<str>,
    /// What flowed.
    pub kind: Kind,
    /// When it started, in milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// How long it took, in microseconds.
    pub latency_us: u64,
    /// Whether it failed.
    pub error: bool,
    /// Bytes carried, if known.
    pub bytes: Option<u64>,
    /// The flow the call belongs to: the context's flow labels, joined by `,`.
    pub flow: Option<Arc<str>>,
    /// Whether the call carried its caller's context.
    pub context: ContextMark,
}

/// How the reporter talks to its peer.
#[derive(Debug, Clone)]
pub struct ReporterConfig {
    /// The peer's base URL, e.g. `http://127.0.0.1:7070`.
    pub peer_url: String,
    /// Most reports waiting; more are dropped and counted.
    pub queue_max: usize,
    /// Most reports in one post; a full batch is posted at once.
    pub batch_max: usize,
    /// Longest a report waits for its batch.
    pub flush_interval: Duration,
    /// First delay before retrying a failed post.
    pub retry_min: Duration,
    /// Longest delay between retries.
    pub retry_max: Duration,
    /// Longest one post may take.
    pub request_timeout: Duration,
    /// Longest [`Reporter::shutdown`] spends posting what is left.
    pub shutdown_timeout: Duration,
}

impl ReporterConfig {
    /// The defaults, posting to `peer_url`.
    pub fn new(peer_url: impl Into<String>) -> Self {
        Self {
            peer_url: peer_url.into(),
            queue_max: 16_384,
            batch_max: 2_000,
            flush_interval: Duration::from_secs(1),
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

/// What the reporter has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReporterStats {
    /// Reports taken.
    pub recorded: u64,
    /// Reports the peer accepted.
    pub accepted: u64,
    /// Reports the peer refused (it says why in its answer and its log).
    pub rejected: u64,
    /// Reports dropped: the queue was full, or shutdown ran out of time.
    pub dropped: u64,
    /// Posts that failed and were retried.
    pub posts_failed: u64,
    /// Reports waiting now.
    pub queued: u64,
}

#[derive(Debug)]
struct Shared {
    queue: ArrayQueue<Report>,
    batch_max: usize,
    /// A batch is full.
    wake: Notify,
    /// Shutdown began (apart from `wake`, so that full batches do not cut a retry's
    /// backoff short).
    stop: Notify,
    stopping: AtomicBool,
    recorded: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    dropped: AtomicU64,
    posts_failed: AtomicU64,
}

/// Why a reporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReporterError {
    /// `peer_url` is not an http URL.
    #[error("peer_url {0:?} is not an http:// or https:// URL")]
    PeerUrl(String),
    /// A size limit is zero.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// Not inside a tokio runtime.
    #[error("the reporter needs a tokio runtime to run its task in (start it inside one)")]
    NoRuntime,
    /// The HTTP client could not be built.
    #[error("could not build the HTTP client: {0}")]
    Client(String),
}

/// The reporter: a handle to the queue and the task that posts it.
#[derive(Debug)]
pub struct Reporter {
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Reporter {
    /// Starts the reporter's task on the current tokio runtime.
    pub fn start(service: &str, config: ReporterConfig) -> Result<Self, ReporterError> {
        let url = config.peer_url.trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ReporterError::PeerUrl(config.peer_url.clone()));
        }
        if config.queue_max == 0 {
            return Err(ReporterError::Zero("queue_max"));
        }
        if config.batch_max == 0 {
            return Err(ReporterError::Zero("batch_max"));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ReporterError::NoRuntime)?;
        let client = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .build()
            .map_err(|e| ReporterError::Client(e.to_string()))?;
        let shared = Arc::new(Shared {
            queue: ArrayQueue::new(config.queue_max),
            batch_max: config.batch_max,
            wake: Notify::new(),
            stop: Notify::new(),
            stopping: AtomicBool::new(false),
            recorded: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            posts_failed: AtomicU64::new(0),
        });
        let worker = Worker {
            shared: shared.clone(),
            client,
            events_url: format!("{url}/api/v1/events"),
            // A header value is visible ASCII: the name goes percent-encoded.
            service: percent_encoding::utf8_percent_encode(service, percent_encoding::CONTROLS).to_string(),
            config,
        };
        let task = runtime.spawn(worker.run());
        Ok(Self { shared, task: Mutex::new(Some(task)) })
    }

    /// Takes a report; never blocks. When the queue is full the report is dropped and
    /// counted.
    pub fn record(&self, report: Report) {
        let shared = &*self.shared;
        shared.recorded.fetch_add(1, Ordering::Relaxed);
        // After shutdown began, nothing will post it.
        if shared.stopping.load(Ordering::Relaxed) || shared.queue.push(report).is_err() {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if shared.queue.len() >= shared.batch_max {
            shared.wake.notify_one();
        }
    }

    /// What the reporter has done so far.
    pub fn stats(&self) -> ReporterStats {
        let s = &*self.shared;
        ReporterStats {
            recorded: s.recorded.load(Ordering::Relaxed),
            accepted: s.accepted.load(Ordering::Relaxed),
            rejected: s.rejected.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            posts_failed: s.posts_failed.load(Ordering::Relaxed),
            queued: s.queue.len() as u64,
        }
    }

    /// Posts what is queued (within `shutdown_timeout`), stops the task and waits for it.
    /// Reports recorded afterwards are dropped and counted. Calling it again does nothing.
    pub async fn shutdown(&self) -> ReporterStats {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.stop.notify_one();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task
            && let Err(error) = task.await
        {
            tracing::error!(%error, "the observatory reporter's task failed");
        }
        // Whatever came in after the task's last look was not sent.
        let mut late = 0;
        while self.shared.queue.pop().is_some() {
            late += 1;
        }
        self.shared.dropped.fetch_add(late, Ordering::Relaxed);
        self.stats()
    }
}

struct Worker {
    shared: Arc<Shared>,
    client: reqwest::Client,
    events_url: String,
    service: String,
    config: ReporterConfig,
}

/// How one post ended.
enum Posted {
    Done { accepted: u64, rejected: u64 },
    Retry(String),
    Refused(String),
}

#[derive(Serialize)]
struct WireEvent<'a> {
    from: &'a str,
    to: &'a str,
    ts: i64,
    latency_ms: f64,
    error: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
    kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    flow: Option<&'a str>,
    #[serde(skip_serializing_if = "ContextMark::is_unknown")]
    context: ContextMark,
}

#[derive(Deserialize)]
struct IngestAnswer {
    accepted: u64,
    rejected: u64,
}

impl Worker {
    async fn run(self) {
        let mut batch: Vec<Report> = Vec::with_capacity(self.config.batch_max);
        let mut deadline: Option<Instant> = None;
        loop {
            if deadline.is_none() && !self.shared.stopping.load(Ordering::SeqCst) {
                tokio::select! {
                    () = self.shared.wake.notified() => {}
                    () = self.shared.stop.notified() => {}
                    () = tokio::time::sleep(self.config.flush_interval) => {}
                }
            }
            if deadline.is_none() && self.shared.stopping.load(Ordering::SeqCst) {
                deadline = Some(Instant::now() + self.config.shutdown_timeout);
            }
            loop {
                if let Some(deadline) = deadline
                    && Instant::now() >= deadline
                {
                    let mut left = batch.len() as u64;
                    batch.clear();
                    while self.shared.queue.pop().is_some() {
                        left += 1;
                    }
                    self.shared.dropped.fetch_add(left, Ordering::Relaxed);
                    break;
                }
                while batch.len() < self.config.batch_max {
                    match self.shared.queue.pop() {
                        Some(report) => batch.push(report),
                        None => break,
                    }
                }
                if batch.is_empty() {
                    break;
                }
                self.post_until_done(&mut batch, &mut deadline).await;
            }
            if deadline.is_some() {
                return;
            }
        }
    }

    /// Posts `batch` until the peer has it, refuses it, or shutdown's time is up.
    async fn post_until_done(&self, batch: &mut Vec<Report>, deadline: &mut Option<Instant>) {
        let body = encode_batch(batch);
        let mut delay = self.config.retry_min;
        loop {
            match self.post(&body).await {
                Posted::Done { accepted, rejected } => {
                    self.shared.accepted.fetch_add(accepted, Ordering::Relaxed);
                    self.shared.rejected.fetch_add(rejected, Ordering::Relaxed);
                    batch.clear();
                    return;
                }
                Posted::Refused(why) => {
                    tracing::warn!(reports = batch.len(), %why, "the observatory peer refused a batch of reports");
                    self.shared.rejected.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    batch.clear();
                    return;
                }
                Posted::Retry(why) => {
                    self.shared.posts_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%why, ?delay, "posting reports to the observatory peer failed; retrying");
                }
            }
            if deadline.is_none() && self.shared.stopping.load(Ordering::SeqCst) {
                *deadline = Some(Instant::now() + self.config.shutdown_timeout);
            }
            // Jitter spreads the retries of many services after a peer restart.
            let jittered = delay.mul_f64(rand::random_range(0.5..1.0));
            let wake_at = Instant::now() + jittered;
            if let Some(deadline) = *deadline
                && wake_at >= deadline
            {
                tracing::warn!(
                    reports = batch.len(),
                    "shutdown: the observatory peer did not take the last reports"
                );
                self.shared.dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
                batch.clear();
                while self.shared.queue.pop().is_some() {
                    self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(wake_at) => {}
                // Shutdown sets the deadline at once rather than after a long delay.
                () = self.shared.stop.notified(), if deadline.is_none() => {}
            }
            delay = (delay * 2).min(self.config.retry_max);
        }
    }

    async fn post(&self, body: &bytes::Bytes) -> Posted {
        let dropped = self.shared.dropped.load(Ordering::Relaxed);
        let sent = self
            .client
            .post(&self.events_url)
            .header(http::header::CONTENT_TYPE, "application/cbor")
            .header("observatory-reporter", &self.service)
            .header("observatory-reporter-dropped", dropped.to_string())
            .body(body.clone())
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => return Posted::Retry(error.to_string()),
        };
        let status = response.status();
        if status.is_success() {
            return match response.json::<IngestAnswer>().await {
                Ok(answer) => Posted::Done { accepted: answer.accepted, rejected: answer.rejected },
                Err(error) => Posted::Retry(format!("unreadable answer: {error}")),
            };
        }
        let text = response.text().await.unwrap_or_default();
        let why = format!("{status}: {}", text.chars().take(300).collect::<String>());
        if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
            Posted::Retry(why)
        } else {
            Posted::Refused(why)
        }
    }
}

fn encode_batch(batch: &[Report]) -> bytes::Bytes {
    let events: Vec<WireEvent<'_>> = batch
        .iter()
        .map(|r| WireEvent {
            from: &r.from,
            to: &r.to,
            ts: r.ts_ms,
            latency_ms: r.latency_us as f64 / 1000.0,
            error: r.error,
            bytes: r.bytes,
            kind: r.kind,
            flow: r.flow.as_deref(),
            context: r.context,
        })
        .collect();
    let mut out = Vec::with_capacity(64 * batch.len());
    ciborium::into_writer(&events, &mut out).expect("CBOR into a Vec cannot fail");
    out.into()
}
