//! The test service the W3C trace-context validation suite drives
//! (<https://github.com/w3c/trace-context>, `test/`): it takes `POST /test` with a JSON
//! array of `{url, arguments}` and, for each, posts `arguments` to `url` through the
//! library's layers, so that the suite sees how our `traceparent` and `tracestate`
//! handling continues, restarts or drops what it sent.
//!
//! ```text
//! cargo run -p observatory-instrument --example w3c_test_service -- 127.0.0.1:5000
//! python test/test.py http://127.0.0.1:5000/test      # in a checkout of w3c/trace-context
//! ```
//! `tests/w3c-trace-context.sh` does both. Reports go to a peer at `OBSERVATORY_URL` if
//! one runs; without one they are dropped and counted, which does not matter here.

use std::net::SocketAddr;

use axum::Json;
use axum::routing::post;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use observatory_instrument::{Instrument, InstrumentConfig};
use serde_json::Value;
use tower::{Service, ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:5000".into()).parse()?;
    let instrument = Instrument::start(InstrumentConfig::from_env("w3c-test-service")?)?;
    let client = ServiceBuilder::new()
        .layer(instrument.client_layer())
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
    let app = axum::Router::new()
        .route(
            "/test",
            post(move |Json(calls): Json<Vec<Value>>| {
                let client = client.clone();
                async move {
                    for call in calls {
                        let (Some(url), arguments) = (call["url"].as_str(), &call["arguments"]) else {
                            continue;
                        };
                        let request = http::Request::post(url)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(serde_json::to_vec(arguments).unwrap_or_default())))
                            .expect("a request");
                        let mut client = client.clone();
                        if let Ok(ready) = client.ready().await {
                            let _ = ready.call(request).await;
                        }
                    }
                    "ok"
                }
            }),
        )
        .layer(instrument.server_layer());
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("w3c test service on http://{}/test", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
