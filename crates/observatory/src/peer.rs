//! `observatory peer`: opens the data dir, starts the writer and the HTTP API, and on
//! SIGTERM or Ctrl-C stops taking requests, finishes the ones in flight and flushes.

use std::io::Write;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use observatory_api::{ApiContext, ApiLimits, Counters, PeerInfo, events::ParseLimits};
use observatory_store::{WriterConfig, open_peer, spawn_writer};
use serde_json::json;
use tokio::sync::watch;

use crate::config::Config;

/// Runs a peer until it is told to stop.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let settings = config.settings()?;
    let data_dir = config.store.path.clone();
    let opened = open_peer(&data_dir, settings, config.core_limits())?;
    let store_size = opened.store.size_probe();
    let peer_id = opened.origin.peer.to_string();
    let incarnation = opened.origin.incarnation;
    let stats = opened.state.stats();
    tracing::info!(
        %peer_id, incarnation, edges = stats.edges, cells = stats.cells, origins = stats.origins,
        data_dir = %data_dir.display(), "state loaded"
    );
    let state = Arc::new(RwLock::new(opened.state));

    let (stop_writer, writer_shutdown) = watch::channel(false);
    let writer_config = WriterConfig {
        ack: config.ingest.ack,
        queue_requests_max: config.ingest.queue_requests_max,
        flush_interval: config.store.flush_interval,
        ..WriterConfig::default()
    };
    let (ingest, writer) = spawn_writer(state.clone(), opened.store, writer_config, writer_shutdown);

    let listener = tokio::net::TcpListener::bind(config.http.addr).await.with_context(|| {
        format!(
            "cannot listen for HTTP on {}; is another peer running there? choose another address with --http",
            config.http.addr
        )
    })?;
    let http_addr = listener.local_addr().context("reading the HTTP listen address")?;

    let limits = &config.limits;
    let context = Arc::new(ApiContext {
        state,
        ingest,
        info: PeerInfo {
            peer_id: peer_id.clone(),
            incarnation,
            version: env!("CARGO_PKG_VERSION").to_string(),
            data_dir: data_dir.display().to_string(),
        },
        limits: ApiLimits {
            body_bytes_max: limits.body_bytes_max,
            errors_listed_max: limits.errors_listed_max,
            parse: ParseLimits {
                events_per_request_max: limits.events_per_request_max,
                node_name_bytes_max: limits.node_name_bytes_max,
                event_count_max: limits.event_count_max,
            },
            request_timeout: config.http.request_timeout,
        },
        store_size,
        counters: Counters::default(),
    });

    // One JSON line on stdout says where we listen, for people and for scripts.
    let started = json!({
        "event": "listening",
        "peer_id": peer_id,
        "incarnation": incarnation,
        "http": http_addr.to_string(),
        "data_dir": data_dir.display().to_string(),
    });
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{started}").and_then(|_| stdout.flush()).context("writing the startup line")?;
    drop(stdout);
    tracing::info!(%http_addr, "HTTP API listening");

    let app = observatory_api::router(context);
    let (stopping, mut stopping_seen) = watch::channel(false);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        stop_signal().await;
        let _ = stopping.send(true);
    });
    // A graceful stop waits for requests in flight, but a stalled client must not keep
    // the peer up for ever: after the grace period it stops anyway.
    let grace = config.http.shutdown_grace;
    let grace_over = async move {
        let _ = stopping_seen.wait_for(|stopping| *stopping).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        served = server => served.context("serving HTTP")?,
        _ = grace_over => tracing::warn!(?grace, "requests still open after http.shutdown_grace; closing them"),
    }

    tracing::info!("HTTP stopped; waiting for the writer to finish");
    let _ = stop_writer.send(true);
    writer.await.context("the writer task failed")??;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
async fn stop_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C received; stopping"),
        _ = terminate => tracing::info!("SIGTERM received; stopping"),
    }
}
