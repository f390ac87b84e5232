//! `POST /api/v1/events`, and reading request bodies for every ingest route: the
//! declared length checked before reading, the body read under the size limit and the
//! time limit, its media type.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, header};

use crate::events::{BodyFormat, parse_body};
use crate::wire::{IngestAnswer, IngestErrorItem};
use crate::{Api, ApiError, Counters, PeerApi, SubmitError};

impl From<SubmitError> for ApiError {
    fn from(error: SubmitError) -> Self {
        match error {
            SubmitError::Overloaded(_) | SubmitError::ShuttingDown => {
                ApiError::Unavailable(error.to_string())
            }
            SubmitError::Store(_) => ApiError::Internal(error.to_string()),
        }
    }
}

/// The media type of a request (`type/subtype`, lower case, parameters dropped); empty
/// when there is none. A header that is not text is refused (415), not taken as absent.
pub(crate) fn media_type(headers: &HeaderMap) -> Result<String, ApiError> {
    let content_type = match headers.get(header::CONTENT_TYPE) {
        None => "",
        Some(value) => value.to_str().map_err(|_| {
            ApiError::UnsupportedMediaType(
                "Content-Type is not text (it holds bytes outside visible ASCII)".into(),
            )
        })?,
    };
    Ok(content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

fn body_format(headers: &HeaderMap, body: &[u8]) -> Result<BodyFormat, ApiError> {
    let essence = media_type(headers)?;
    match essence.as_str() {
        "application/json" => Ok(BodyFormat::Json),
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" => Ok(BodyFormat::Ndjson),
        "application/cbor" => Ok(BodyFormat::Cbor),
        // Clients that send no type (or curl's default) get their body sniffed.
        "" | "text/plain" | "application/x-www-form-urlencoded" | "application/octet-stream" => {
            match body.iter().find(|b| !b.is_ascii_whitespace()) {
                Some(b'[') => Ok(BodyFormat::Json),
                Some(b'{') => Ok(BodyFormat::Ndjson),
                _ if essence == "application/octet-stream" => Ok(BodyFormat::Cbor),
                _ => {
                    let content_type =
                        headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
                    Err(ApiError::UnsupportedMediaType(format!(
                        "cannot tell the body's format from Content-Type `{content_type}`; use application/json, \
                         application/x-ndjson or application/cbor"
                    )))
                }
            }
        }
        other => Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type `{other}` is not supported; use application/json, application/x-ndjson or application/cbor"
        ))),
    }
}

/// How a body came: its declared length and whether it was compressed (the
/// decompression layer in front of the span routes drops both headers, so they are noted
/// before it; see [`crate::ingest_spans`]).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Declared {
    /// `Content-Length`, if given.
    pub(crate) length: Option<u64>,
    /// Whether the body is gzip-compressed and read decompressed.
    pub(crate) gzip: bool,
}

impl Declared {
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let length = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        Self { length, gzip: false }
    }
}

/// Reads the body, refusing it as soon as it is known to be over the limit: from its
/// declared length before reading anything, or while reading (a chunked body, or one
/// that decompresses to more).
///
/// A client that stalls while sending must not hold a request (and a graceful stop) open
/// for ever, so reading is bounded by `http.request_timeout`. Only reading is: once the
/// events are queued they are applied, and a timeout then would invite a retry that
/// counts them twice.
/// How long a body may take to start arriving at `http.body_min_rate`.
const BODY_GRACE: Duration = Duration::from_secs(1);

/// Reads a body of at most `limit` bytes within `timeout`, arriving at `min_rate` bytes
/// per second or faster after its first second (0: any rate).
pub(crate) async fn read_body(
    limit: usize,
    timeout: Duration,
    min_rate: u64,
    declared: Declared,
    body: Body,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        if declared.gzip {
            ApiError::PayloadTooLarge(format!(
                "the body decompresses to more than limits.body_bytes_max ({limit} bytes)"
            ))
        } else {
            ApiError::PayloadTooLarge(format!(
                "the body is larger than limits.body_bytes_max ({limit} bytes)"
            ))
        }
    };
    if declared.length.is_some_and(|length| length > limit as u64) {
        return Err(ApiError::PayloadTooLarge(format!(
            "the body is larger than limits.body_bytes_max ({limit} bytes)"
        )));
    }
    use http_body_util::BodyExt;
    let start = tokio::time::Instant::now();
    // A timeout too long to add is no timeout.
    let end = start.checked_add(timeout).unwrap_or_else(|| start + Duration::from_secs(1 << 32));
    let mut body = http_body_util::Limited::new(body, limit);
    let mut read = bytes::BytesMut::new();
    loop {
        // The next byte is due when the rate so far would fall below the minimum.
        let due = if min_rate == 0 {
            end
        } else {
            let owed = Duration::from_secs_f64((read.len() + 1) as f64 / min_rate as f64);
            (start + BODY_GRACE + owed).min(end)
        };
        let frame = match tokio::time::timeout_at(due, body.frame()).await {
            Ok(frame) => frame,
            Err(_) if due == end => {
                return Err(ApiError::Timeout(format!(
                    "reading the body took longer than http.request_timeout ({timeout:?})"
                )));
            }
            Err(_) => {
                return Err(ApiError::Timeout(format!(
                    "the body arrived slower than http.body_min_rate ({min_rate} bytes/s): {} bytes in {:?}",
                    read.len(),
                    start.elapsed()
                )));
            }
        };
        match frame {
            None => return Ok(read.freeze()),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    read.extend_from_slice(&data);
                }
            }
            Some(Err(error)) => return Err(body_error(error, declared, limit, too_large)),
        }
    }
}

fn body_error(
    error: Box<dyn std::error::Error + Send + Sync>,
    declared: Declared,
    limit: usize,
    too_large: impl Fn() -> ApiError,
) -> ApiError {
    match error.downcast::<http_body_util::LengthLimitError>() {
        Ok(_) => too_large(),
        // The body as sent, limited before decompression: the error comes out wrapped.
        Err(other) if over_limit(other.as_ref()) => ApiError::PayloadTooLarge(format!(
            "the body is larger than limits.body_bytes_max ({limit} bytes)"
        )),
        Err(other) if declared.gzip => {
            ApiError::BadRequest(format!("the gzip body does not decompress: {other}"))
        }
        Err(other) => ApiError::BadRequest(format!("cannot read the body: {other}")),
    }
}

/// Whether a body error is, somewhere inside, a length limit.
fn over_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        if let Some(inner) = error.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref())
            && over_limit(inner)
        {
            return true;
        }
        next = error.source();
    }
    false
}

/// `POST /api/v1/events`.
pub(crate) async fn post_events<P: PeerApi>(
    State(api): State<Arc<Api<P>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestAnswer>, ApiError> {
    let result = async {
        let shutting_down = |_| ApiError::Unavailable("the peer is shutting down".into());
        // The body is read before it takes a place: a client trickling it in holds none.
        let _reading = api.body_reads.acquire().await.map_err(shutting_down)?;
        let limits = &api.limits;
        let declared = Declared::of(&headers);
        let body =
            read_body(limits.body_bytes_max, limits.request_timeout, limits.body_min_rate, declared, body)
                .await?;
        let _slot = api.ingest_slots.acquire().await.map_err(shutting_down)?;
        ingest(&api, &headers, body).await
    }
    .await;
    if let Err(error) = &result {
        api.counters.requests_rejected.add(error.code(), 1);
    }
    result
}

async fn ingest<P: PeerApi>(
    api: &Api<P>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Json<IngestAnswer>, ApiError> {
    let limits = &api.limits;
    let format = body_format(headers, &body)?;
    let parsed = parse_body(format, &body, api.peer.now_ms(), &limits.parse)?;
    let (indices, events): (Vec<usize>, Vec<_>) = parsed.events.into_iter().unzip();
    let applied = if events.is_empty() { Default::default() } else { api.peer.submit_events(events).await? };

    let mut errors: Vec<IngestErrorItem> = parsed
        .errors
        .into_iter()
        .map(|e| IngestErrorItem { index: e.index, field: e.field, reason: e.reason })
        .collect();
    for error in &errors {
        // Count by known field only: field names in errors can come from the client.
        let field = match error.field.as_str() {
            known @ ("from" | "to" | "ts" | "latency_ms" | "error" | "bytes" | "count" | "kind" | "flow"
            | "context") => known,
            _ => "event",
        };
        api.counters.events_invalid.add(&format!("invalid_{field}"), 1);
    }
    errors.extend(applied.rejected.iter().map(|(i, rejection)| IngestErrorItem {
        index: indices[*i],
        field: rejection.field().to_string(),
        reason: rejection.to_string(),
    }));
    errors.sort_by_key(|e| e.index);
    let rejected = errors.len();
    let truncated = errors.len() > limits.errors_listed_max;
    errors.truncate(limits.errors_listed_max);
    Counters::add(&api.counters.ingest_requests, 1);
    Ok(Json(IngestAnswer { accepted: applied.accepted, rejected, errors, errors_truncated: truncated }))
}
