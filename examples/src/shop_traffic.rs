//! `shop-traffic`: sends the made-up shop's traffic to an observer peer at a steady rate.
//!
//! The main task paces and encodes batches; each batch is POSTed by a task of a bounded
//! `JoinSet` (at most `--in-flight` at once), which the main task joins as answers come in,
//! so nothing outlives `main`. Ctrl-C stops producing and waits for the batches in flight;
//! a second Ctrl-C abandons them.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Parser;
use observatory_examples::{Shop, ShopEvent, to_cbor, to_ndjson};
use serde::Deserialize;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

/// Sends realistic traffic of a made-up online shop to an Observatory peer.
///
/// Observatory keeps the flow graph of a distributed system: which service calls which,
/// how often, how slowly and how often it fails. Services report each call as an event
/// (`from`, `to`, time, latency, error, bytes) to an observer peer over HTTP. This tool
/// plays such services: it simulates user requests through a shop of about a dozen
/// services (web front end, catalog, search, checkout, payments, inventory, an order
/// queue, fulfilment, shipping, databases and caches) and POSTs the resulting events to
/// `{peer}/api/v1/events`, timestamped with the current time, in batches, at a steady
/// rate. Then look at the result with `observatory graph --peer URL`.
///
/// Without --duration or --events it runs until Ctrl-C. It prints a progress line every
/// second and a summary at the end (all on stderr). It exits with an error when the peer
/// refuses a request (an HTTP 4xx answer, whose message it prints) or stays unreachable
/// or overloaded through all retries.
#[derive(Debug, Parser)]
#[command(name = "shop-traffic", version)]
struct Args {
    /// Base URL of the peer's HTTP API, as printed by `observatory peer` (plain HTTP).
    #[arg(long, env = "OBSERVATORY_PEER", default_value = "http://127.0.0.1:7070")]
    peer: String,

    /// Events per second to send, over all edges together. One user request makes about a
    /// dozen events.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    rate: u32,

    /// Stop after this long, e.g. `30s`, `5m`, `1h 30m`: rate × duration events, or fewer
    /// if the peer cannot keep up.
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "events")]
    duration: Option<Duration>,

    /// Stop after sending exactly this many events.
    #[arg(long)]
    events: Option<u64>,

    /// Events per HTTP request. Peers refuse requests above their
    /// `limits.events_per_request_max` (10,000 by default).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    batch: u32,

    /// Encoding of the request bodies.
    #[arg(long, value_enum, default_value_t = Format::Ndjson)]
    format: Format,

    /// Seed of the simulation: the same seed gives the same sequence of requests (their
    /// timestamps follow the clock).
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// HTTP requests in flight at once. When all are busy the tool waits, and the
    /// achieved rate falls below --rate.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    in_flight: u32,

    /// How often one request is retried, with growing pauses, when the peer cannot be
    /// reached or answers 502, 503 or 504, before the tool gives up.
    #[arg(long, default_value_t = 5)]
    retries: u32,
}

/// Body encodings the peer takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// One JSON object per line (Content-Type: application/x-ndjson).
    Ndjson,
    /// A CBOR array of maps (Content-Type: application/cbor).
    Cbor,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::Ndjson => "application/x-ndjson",
            Format::Cbor => "application/cbor",
        }
    }

    fn encode(self, events: &[ShopEvent]) -> Vec<u8> {
        match self {
            Format::Ndjson => to_ndjson(events),
            Format::Cbor => to_cbor(events),
        }
    }
}

/// Longest pause between two attempts of one request.
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(5);
/// Pause before the first retry; it doubles at each further one.
const RETRY_PAUSE_FIRST: Duration = Duration::from_millis(100);
/// How long one HTTP request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How late after --duration the last batch may still go out.
const DEADLINE_SLACK: Duration = Duration::from_millis(100);
/// Distinct rejection reasons printed, so that a peer refusing everything does not flood.
const REJECTION_REASONS_PRINTED_MAX: usize = 10;

fn unix_now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The peer's answer to an accepted request.
#[derive(Debug, Deserialize)]
struct IngestAnswer {
    accepted: u64,
    rejected: u64,
    #[serde(default)]
    errors: Vec<IngestErrorItem>,
}

#[derive(Debug, Deserialize)]
struct IngestErrorItem {
    #[serde(default)]
    field: String,
    #[serde(default)]
    reason: String,
}

/// What became of one batch.
#[derive(Debug)]
struct BatchOutcome {
    accepted: u64,
    rejected: u64,
    /// `field: reason` of the rejected events the peer listed.
    rejection_reasons: Vec<String>,
    retries: u32,
}

/// Where and how batches are sent; shared by the sending tasks.
#[derive(Debug)]
struct Sender {
    client: reqwest::Client,
    peer: String,
    events_url: String,
    content_type: &'static str,
    retries_max: u32,
}

/// `error` with its causes, which is where reqwest says what actually went wrong.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The message of an error answer `{"error": {"code", "message"}}`, or the body as it is.
fn error_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|value| value["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string())
}

impl Sender {
    /// POSTs one batch, retrying while the peer is unreachable or overloaded.
    ///
    /// A retry after the body went out (a timeout, a connection reset) can count the batch
    /// twice if the peer had applied it; for a traffic generator that is acceptable.
    async fn post(&self, body: Vec<u8>, n_events: usize) -> anyhow::Result<BatchOutcome> {
        let mut retries = 0;
        loop {
            let sent = self
                .client
                .post(&self.events_url)
                .header(reqwest::header::CONTENT_TYPE, self.content_type)
                .body(body.clone())
                .send()
                .await;
            let (why_retry, retry_after) = match sent {
                Ok(response) if response.status().is_success() => {
                    let answer: IngestAnswer = response
                        .json()
                        .await
                        .context("the peer answered 200 but not with an ingest answer")?;
                    return Ok(BatchOutcome {
                        accepted: answer.accepted,
                        rejected: answer.rejected,
                        rejection_reasons: answer
                            .errors
                            .into_iter()
                            .map(|e| format!("{}: {}", e.field, e.reason))
                            .collect(),
                        retries,
                    });
                }
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let message = error_message(&response.text().await.unwrap_or_default());
                    let retryable = matches!(status.as_u16(), 502..=504);
                    if !retryable {
                        bail!("the peer refused a batch of {n_events} events with HTTP {status}: {message}");
                    }
                    (format!("HTTP {status}: {message}"), retry_after)
                }
                Err(error) => (error_chain(&error), None),
            };
            if retries >= self.retries_max {
                bail!(
                    "giving up on a batch of {n_events} events after {retries} retries: {why_retry}\n\
                     hint: is a peer running at {}? Start one with `observatory peer`, or pass --peer URL",
                    self.peer
                );
            }
            let backoff = RETRY_PAUSE_FIRST.saturating_mul(1 << retries.min(16)).min(RETRY_PAUSE_MAX);
            let pause = retry_after.map_or(backoff, |after| after.max(backoff));
            retries += 1;
            eprintln!(
                "shop-traffic: retry {retries}/{} in {} ms: {why_retry}",
                self.retries_max,
                pause.as_millis()
            );
            tokio::time::sleep(pause).await;
        }
    }
}

/// Counts shown in the progress lines and the summary.
#[derive(Debug, Default)]
struct Totals {
    events_sent: u64,
    requests_sent: u64,
    accepted: u64,
    rejected: u64,
    retries: u64,
}

impl Totals {
    fn answered(&self) -> u64 {
        self.accepted + self.rejected
    }

    fn describe(&self) -> String {
        format!(
            "sent {} events in {} requests, accepted {}, rejected {}, {} retries",
            self.events_sent, self.requests_sent, self.accepted, self.rejected, self.retries
        )
    }
}

/// Turns the shop's requests into batches of events stamped with the current time.
#[derive(Debug)]
struct Batcher {
    shop: Shop,
    /// Events of the last request that did not fit in the previous batch.
    pending: Vec<ShopEvent>,
    rate_per_s: f64,
}

impl Batcher {
    /// The next `n_events` events. Their requests are spread over the time the batch
    /// stands for at the requested rate, ending at `now_ms`, as if a client had buffered
    /// them as they happened.
    fn next_batch(&mut self, n_events: usize, now_ms: i64) -> Vec<ShopEvent> {
        let batch_span_ms = n_events as f64 / self.rate_per_s * 1000.0;
        while self.pending.len() < n_events {
            let done = self.pending.len() as f64 / n_events as f64;
            let ts_ms = now_ms - (batch_span_ms * (1.0 - done)) as i64;
            self.shop.next_request(ts_ms, &mut self.pending);
        }
        let rest = self.pending.split_off(n_events);
        std::mem::replace(&mut self.pending, rest)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` prints the causes on one line; a backtrace would only hide the message.
            eprintln!("shop-traffic: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let peer = args.peer.trim_end_matches('/').to_string();
    let url = reqwest::Url::parse(&peer).with_context(|| format!("--peer `{peer}` is not a URL"))?;
    if url.scheme() != "http" {
        bail!("--peer `{peer}`: only plain http:// URLs are supported");
    }
    let client =
        reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().context("building the HTTP client")?;
    let sender = Arc::new(Sender {
        client,
        events_url: format!("{peer}/api/v1/events"),
        peer,
        content_type: args.format.content_type(),
        retries_max: args.retries,
    });

    let rate_per_s = f64::from(args.rate);
    let events_target = match (args.events, args.duration) {
        (Some(events), _) => Some(events),
        (None, Some(duration)) => Some((rate_per_s * duration.as_secs_f64()).round() as u64),
        (None, None) => None,
    };
    let mut batcher = Batcher { shop: Shop::new(args.seed), pending: Vec::new(), rate_per_s };
    let in_flight_max = args.in_flight as usize;

    eprintln!(
        "shop-traffic: sending {} to {} at {} events/s in batches of {} ({:?}); Ctrl-C stops",
        events_target.map_or("events".to_string(), |n| format!("{n} events")),
        sender.events_url,
        args.rate,
        args.batch,
        args.format,
    );

    let started = Instant::now();
    // When the peer cannot keep up, --duration still ends the run on time, with fewer events.
    let deadline = args.duration.map(|duration| started + duration);
    let mut totals = Totals::default();
    let mut tasks: JoinSet<anyhow::Result<BatchOutcome>> = JoinSet::new();
    let mut reasons_printed = BTreeSet::new();
    let mut progress = tokio::time::interval_at(started + Duration::from_secs(1), Duration::from_secs(1));
    progress.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let (mut answered_at_last_tick, mut last_tick) = (0, started);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut stopping = false;
    let mut fatal: Option<anyhow::Error> = None;

    loop {
        let remaining = events_target.map_or(u64::MAX, |target| target - totals.events_sent);
        let n_events = remaining.min(u64::from(args.batch)) as usize;
        // The batch is due when, at the requested rate, its last event has happened.
        let due =
            started + Duration::from_secs_f64((totals.events_sent + n_events as u64) as f64 / rate_per_s);
        // The last batch of a run on schedule is due right at the deadline, hence the slack.
        let in_time = deadline.is_none_or(|deadline| Instant::now().max(due) <= deadline + DEADLINE_SLACK);
        let producing = !stopping && remaining > 0 && in_time;
        if !producing && tasks.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            signal = &mut ctrl_c => {
                signal.context("listening for Ctrl-C")?;
                if stopping {
                    tasks.shutdown().await;
                    fatal = Some(anyhow::anyhow!("interrupted; requests in flight were abandoned"));
                    break;
                }
                stopping = true;
                eprintln!("shop-traffic: stopping; waiting for {} requests in flight (Ctrl-C again abandons them)", tasks.len());
                ctrl_c.set(tokio::signal::ctrl_c());
            }
            Some(joined) = tasks.join_next() => {
                match joined.context("a sending task failed").and_then(|outcome| outcome) {
                    Ok(outcome) => {
                        totals.accepted += outcome.accepted;
                        totals.rejected += outcome.rejected;
                        totals.retries += u64::from(outcome.retries);
                        for reason in outcome.rejection_reasons {
                            if reasons_printed.len() < REJECTION_REASONS_PRINTED_MAX && reasons_printed.insert(reason.clone()) {
                                eprintln!("shop-traffic: the peer rejected events: {reason}");
                            }
                        }
                    }
                    Err(error) => {
                        tasks.shutdown().await;
                        fatal = Some(error);
                        break;
                    }
                }
            }
            _ = progress.tick() => {
                let now = Instant::now();
                let answered = totals.answered();
                let rate = (answered - answered_at_last_tick) as f64 / (now - last_tick).as_secs_f64();
                (answered_at_last_tick, last_tick) = (answered, now);
                eprintln!(
                    "shop-traffic: {:>4}s  sent {}  accepted {}  rejected {}  {:.0} events/s  ({} in flight, {} retries)",
                    started.elapsed().as_secs(),
                    totals.events_sent,
                    totals.accepted,
                    totals.rejected,
                    rate,
                    tasks.len(),
                    totals.retries,
                );
            }
            _ = tokio::time::sleep_until(due), if producing && tasks.len() < in_flight_max => {
                let batch = batcher.next_batch(n_events, unix_now_ms());
                let body = args.format.encode(&batch);
                totals.events_sent += n_events as u64;
                totals.requests_sent += 1;
                let sender = Arc::clone(&sender);
                tasks.spawn(async move { sender.post(body, n_events).await });
            }
        }
    }

    let elapsed_s = started.elapsed().as_secs_f64();
    eprintln!(
        "shop-traffic: {} after {elapsed_s:.1}s: {}; {:.0} events/s on average",
        if fatal.is_some() { "stopped" } else { "done" },
        totals.describe(),
        totals.answered() as f64 / elapsed_s.max(1e-3),
    );
    match fatal {
        Some(error) => Err(error),
        None => Ok(()),
    }
}
