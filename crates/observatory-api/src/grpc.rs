//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export`, served with
//! tonic's gRPC machinery over the axum server on `otlp.grpc_addr` (see [`grpc_router`]).
//!
//! The request message is handed to the same lean decoder, limits and ingest places as
//! OTLP/HTTP protobuf: the codec only frames bytes. gzip is accepted and sent. Status
//! codes follow the OTLP specification: a request that can never succeed (undecodable,
//! too large, spans refused by the limits) is `INVALID_ARGUMENT`, which exporters do not
//! retry; an overloaded peer answers `RESOURCE_EXHAUSTED` (every ingest place taken) or
//! `UNAVAILABLE` (the writer is behind, or the peer is stopping), with a `RetryInfo`
//! both in the status details and in the `google.rpc.retryinfo-bin` trailer, where the
//! SDKs look; refused spans in an accepted request come back as `partial_success`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::http::{Request as HttpRequest, Response as HttpResponse, StatusCode};
use bytes::{Buf, BufMut, Bytes};
use prost::Message;
use tonic::codec::{BufferSettings, Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::server::Grpc;
use tonic::{Code, Status};

use crate::ingest::{Declared, read_body};
use crate::ingest_spans::{body_read_place, ingest_place, span_limits, take_spans};
use crate::{Api, ApiError, PeerApi, otlp};

/// The service's name in gRPC paths.
pub const TRACE_SERVICE: &str = "opentelemetry.proto.collector.trace.v1.TraceService";
/// The one method served.
pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// What overloaded answers ask exporters to wait, as `Retry-After: 1` does over HTTP.
const RETRY_DELAY_SECONDS: i64 = 1;

/// The routes of the OTLP/gRPC listener: `TraceService/Export`, and `UNIMPLEMENTED` for
/// every other path.
pub fn grpc_router<P: PeerApi>(api: Arc<Api<P>>) -> Router {
    Router::new().fallback_service(TraceService { api })
}

/// A codec that passes the request message on as bytes (the decoder is ours) and sends
/// the answer as the bytes it is given; a client may use it to send encoded requests.
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesCodec;

impl Codec for BytesCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = BytesCodec;
    type Decoder = BytesCodec;

    fn encoder(&mut self) -> Self::Encoder {
        BytesCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        BytesCodec
    }
}

impl Encoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.len());
        dst.put_slice(&item);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        buffers()
    }
}

/// Span batches are tens to hundreds of KiB (512 spans of ~170 bytes): read them into a
/// buffer that grows in large steps rather than tonic's default 8 KiB ones.
fn buffers() -> BufferSettings {
    BufferSettings::new(128 * 1024, 32 * 1024)
}

impl Decoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        // The message is a prefix of tonic's buffer: split off, not copied.
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }

    fn buffer_settings(&self) -> BufferSettings {
        buffers()
    }
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, Message)]
struct ProtoAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// `google.rpc.Status` with details, as `grpc-status-details-bin` carries it.
#[derive(Clone, PartialEq, Message)]
struct StatusWithDetails {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<ProtoAny>,
}

/// A retryable status asking the exporter to wait [`RETRY_DELAY_SECONDS`].
fn retry_status(code: Code, message: String) -> Status {
    let retry = RetryInfo { retry_delay: Some(ProtoDuration { seconds: RETRY_DELAY_SECONDS, nanos: 0 }) }
        .encode_to_vec();
    let details = StatusWithDetails {
        code: code as i32,
        message: message.clone(),
        details: vec![ProtoAny {
            type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
            value: retry.clone(),
        }],
    }
    .encode_to_vec();
    let mut metadata = MetadataMap::new();
    metadata.insert_bin("google.rpc.retryinfo-bin", MetadataValue::from_bytes(&retry));
    Status::with_details_and_metadata(code, message, Bytes::from(details), metadata)
}

/// The gRPC status of an ingest error: final for what retrying cannot fix.
pub(crate) fn status_of(error: &ApiError) -> Status {
    let message = error.to_string();
    match error {
        ApiError::TooManyRequests(_) => retry_status(Code::ResourceExhausted, message),
        ApiError::Unavailable(_) | ApiError::Timeout(_) => retry_status(Code::Unavailable, message),
        ApiError::Internal(_) => Status::internal(message),
        _ if error.status() == StatusCode::INTERNAL_SERVER_ERROR => Status::internal(message),
        _ => Status::invalid_argument(message),
    }
}

/// The service: routes `Export`, refuses other methods.
struct TraceService<P> {
    api: Arc<Api<P>>,
}

impl<P> Clone for TraceService<P> {
    fn clone(&self) -> Self {
        Self { api: self.api.clone() }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<P: PeerApi> tower::Service<HttpRequest<Body>> for TraceService<P> {
    type Response = HttpResponse<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: HttpRequest<Body>) -> <Self as tower::Service<HttpRequest<Body>>>::Future {
        let api = self.api.clone();
        Box::pin(async move {
            let path = request.uri().path();
            if path != EXPORT_PATH {
                api.counters.requests_rejected.add("not_found", 1);
                let status = Status::unimplemented(format!(
                    "{path} is not served here; this listener takes {TRACE_SERVICE}/Export only"
                ));
                return Ok(status.into_http());
            }
            // The message is read first, holding one of the read places and under
            // http.body_min_rate, as OTLP/HTTP's body: a client trickling it holds no
            // ingest place, and memory is bounded by the places.
            let _reading = match body_read_place(&api) {
                Ok(place) => place,
                Err(error) => {
                    api.counters.requests_rejected.add(error.code(), 1);
                    return Ok(status_of(&error).into_http());
                }
            };
            let (parts, body) = request.into_parts();
            let limits = &api.limits;
            // One message: its 5-byte frame head and at most limits.body_bytes_max.
            let read = read_body(
                limits.body_bytes_max.saturating_add(5),
                limits.request_timeout,
                limits.body_min_rate,
                Declared::default(),
                body,
            )
            .await;
            let message = match read {
                Ok(message) => message,
                Err(error) => {
                    api.counters.requests_rejected.add(error.code(), 1);
                    let status = match error {
                        ApiError::PayloadTooLarge(_) => Status::invalid_argument(format!(
                            "the request message is larger than limits.body_bytes_max ({} bytes)",
                            limits.body_bytes_max
                        )),
                        other => status_of(&other),
                    };
                    return Ok(status.into_http());
                }
            };
            let request = HttpRequest::from_parts(parts, Body::from(message));
            let _place = match ingest_place(&api) {
                Ok(place) => place,
                Err(error) => {
                    api.counters.requests_rejected.add(error.code(), 1);
                    return Ok(status_of(&error).into_http());
                }
            };
            let mut grpc = Grpc::new(BytesCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(api.limits.body_bytes_max);
            let reached = Arc::new(AtomicBool::new(false));
            let export = Export { api: api.clone(), reached: reached.clone() };
            let response = grpc.unary(export, request).await;
            // tonic refuses a message over the limit before our service sees it, with a
            // code exporters retry (OUT_OF_RANGE, or RESOURCE_EXHAUSTED when compressed):
            // the same request would be refused again, so say it is final.
            let refused = Status::from_header_map(response.headers());
            if let Some(refused) =
                refused.filter(|s| matches!(s.code(), Code::OutOfRange | Code::ResourceExhausted))
                && !reached.load(Ordering::Acquire)
            {
                api.counters.requests_rejected.add(ApiError::PayloadTooLarge(String::new()).code(), 1);
                let status = Status::invalid_argument(format!(
                    "the request message is larger than limits.body_bytes_max ({} bytes): {}",
                    api.limits.body_bytes_max,
                    refused.message()
                ));
                return Ok(status.into_http());
            }
            Ok(response)
        })
    }
}

/// `Export` itself: the same ingest as OTLP/HTTP protobuf.
struct Export<P> {
    api: Arc<Api<P>>,
    reached: Arc<AtomicBool>,
}

impl<P: PeerApi> tower::Service<tonic::Request<Bytes>> for Export<P> {
    type Response = tonic::Response<Bytes>;
    type Error = Status;
    type Future = BoxFuture<Result<Self::Response, Status>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(
        &mut self,
        request: tonic::Request<Bytes>,
    ) -> <Self as tower::Service<tonic::Request<Bytes>>>::Future {
        self.reached.store(true, Ordering::Release);
        let api = self.api.clone();
        Box::pin(async move {
            let result = async {
                let decoded = otlp::decode_protobuf(request.into_inner(), &span_limits(&api))
                    .map_err(ApiError::BadRequest)?;
                take_spans(&api, decoded).await
            }
            .await;
            match result {
                Ok((rejected, message)) => {
                    Ok(tonic::Response::new(Bytes::from(otlp::response(rejected, &message, false))))
                }
                Err(error) => {
                    api.counters.requests_rejected.add(error.code(), 1);
                    Err(status_of(&error))
                }
            }
        })
    }
}
