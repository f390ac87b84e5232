//! `observatory peer`: opens the data dir, starts the writer and the HTTP API, and on
//! SIGTERM or Ctrl-C stops taking requests, finishes the ones in flight and flushes.

use std::io::Write;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use observatory_api::{ApiContext, ApiLimits, PeerInfo, events::ParseLimits};
use observatory_mesh::ProtocolConfig;
use observatory_mesh::driver::{MeshConfig, StartedMesh};
use observatory_mesh::libp2p;
use observatory_mesh::net::NetConfig;
use observatory_store::{PersistHandle, SharedState, WriterConfig, open_peer, spawn_writer};
use serde_json::json;
use tokio::sync::watch;

use crate::config::Config;
use crate::replica::PersistedReplica;

/// Runs a peer until it is told to stop.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let settings = config.settings()?;
    let data_dir = config.store.path.clone();
    // Listen first: a peer that cannot serve must not create or touch a data dir.
    let listener = tokio::net::TcpListener::bind(config.http.addr).await.with_context(|| {
        format!(
            "cannot listen for HTTP on {}; is another peer running there? choose another address with --http",
            config.http.addr
        )
    })?;
    let http_addr = listener.local_addr().context("reading the HTTP listen address")?;
    let otlp_listener = match config.otlp.addr {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!(
                "cannot listen for OTLP/HTTP on {addr}; is another peer or collector running there? \
                 choose another address with --otlp (or otlp.addr: null to serve OTLP on http.addr only)"
            )
        })?),
        None => None,
    };
    let otlp_addr = match &otlp_listener {
        Some(listener) => Some(listener.local_addr().context("reading the OTLP listen address")?),
        None => None,
    };
    let opened = open_peer(&data_dir, settings, config.core_limits())?;
    let store_size = opened.store.size_probe();
    let peer_id = opened.origin.peer.to_string();
    let incarnation = opened.origin.incarnation;
    let stats = opened.state.stats();
    tracing::info!(
        %peer_id, incarnation, edges = stats.edges, cells = stats.cells, origins = stats.origins,
        data_dir = %data_dir.display(), "state loaded"
    );
    tracing::info!(
        ack = ?config.ingest.ack, max_clock_skew = ?config.ingest.max_clock_skew,
        max_lateness = ?config.ingest.max_lateness, settings = %opened.state.settings().canonical(),
        "settings in effect"
    );
    let state = Arc::new(RwLock::new(opened.state));

    let (stop_writer, writer_shutdown) = watch::channel(false);
    let writer_config = WriterConfig {
        ack: config.ingest.ack,
        queue_requests_max: config.ingest.queue_requests_max,
        flush_interval: config.store.flush_interval,
        ..WriterConfig::default()
    };
    let (ingest, persist, mut writer) =
        spawn_writer(state.clone(), opened.store, writer_config, writer_shutdown);

    let (stop_mesh, mesh_shutdown) = watch::channel(false);
    let mut mesh =
        start_mesh(&config, opened.keypair, opened.known_peers, &state, persist, mesh_shutdown).await?;

    let limits = &config.limits;
    let context = Arc::new(
        ApiContext::new(
            state,
            ingest,
            PeerInfo {
                peer_id: peer_id.clone(),
                incarnation,
                version: env!("CARGO_PKG_VERSION").to_string(),
                data_dir: data_dir.display().to_string(),
            },
            ApiLimits {
                body_bytes_max: limits.body_bytes_max,
                ingest_requests_in_flight_max: limits.ingest_requests_in_flight_max,
                errors_listed_max: limits.errors_listed_max,
                parse: ParseLimits {
                    events_per_request_max: limits.events_per_request_max,
                    node_name_bytes_max: limits.node_name_bytes_max,
                    event_count_max: limits.event_count_max,
                },
                request_timeout: config.http.request_timeout,
                spans_per_request_max: limits.spans_per_request_max,
            },
            store_size,
        )
        .with_mesh(mesh.handle.clone(), config.mesh.sync_interval.as_millis() as i64)
        .with_correlation(config.correlation_config()?),
    );
    let (stop_correlation, correlation_shutdown) = watch::channel(false);
    let handoffs_in = std::mem::replace(&mut mesh.handoffs_in, tokio::sync::mpsc::channel(1).1);
    let correlation = tokio::spawn(observatory_api::run_correlation(
        context.clone(),
        Some(handoffs_in),
        correlation_shutdown,
    ));

    let stop_signals = StopSignals::listen()?;
    // One JSON line on stdout says where we listen, for people and for scripts.
    let started = json!({
        "event": "listening",
        "peer_id": peer_id,
        "incarnation": incarnation,
        "http": http_addr.to_string(),
        "otlp": otlp_addr.map(|a| a.to_string()),
        "listen": mesh.listen.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "data_dir": data_dir.display().to_string(),
    });
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{started}").and_then(|_| stdout.flush()).context("writing the startup line")?;
    drop(stdout);
    tracing::info!(%http_addr, "HTTP API listening");

    let app = observatory_api::router(context.clone());
    let (stopping, mut stopping_seen) = watch::channel(false);
    let mut otlp_stopping = stopping.subscribe();
    let otlp_server = otlp_listener.map(|listener| {
        tracing::info!(otlp_addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "OTLP/HTTP listening");
        let app = observatory_api::otlp_router(context.clone());
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = otlp_stopping.wait_for(|stopping| *stopping).await;
                })
                .await
        })
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        stop_signals.recv().await;
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
        // Without its writer the peer can take no event: stop rather than answer 503s.
        ended = &mut writer => {
            let cause = match ended {
                Ok(Ok(())) => anyhow::anyhow!("it stopped without being asked to"),
                Ok(Err(error)) => anyhow::Error::new(error),
                Err(join) => anyhow::anyhow!("it panicked: {join}"),
            };
            return Err(cause.context("the store writer stopped, so the peer cannot take events any more"));
        }
    }

    if let Some(otlp_server) = otlp_server {
        // It stops with the HTTP server; a stalled client is cut off after the grace.
        if tokio::time::timeout(grace, otlp_server).await.is_err() {
            tracing::warn!("OTLP requests still open after http.shutdown_grace; closing them");
        }
    }
    // Waiting span halves are given up (to virtual nodes where they name one) and applied.
    let _ = stop_correlation.send(true);
    let _ = correlation.await;
    tracing::info!("HTTP stopped; stopping the mesh and waiting for the writer to finish");
    let _ = stop_mesh.send(true);
    let _ = mesh.task.await;
    let _ = stop_writer.send(true);
    writer.await.context("the writer task failed")??;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Starts the mesh over the shared state; merged changes go to the writer.
async fn start_mesh(
    config: &Config,
    keypair: libp2p::identity::Keypair,
    known_peers: Vec<(String, Vec<String>)>,
    state: &SharedState,
    persist: PersistHandle,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<StartedMesh> {
    let parts = config.mesh_parts()?;
    let settings = state.read().expect("state lock").settings().clone();
    let sync_interval = config.mesh.sync_interval;
    let known_peers = known_peers
        .into_iter()
        .filter_map(|(peer, addrs)| {
            let peer = peer.parse().ok()?;
            Some((peer, addrs.iter().filter_map(|a| a.parse().ok()).collect()))
        })
        .collect();
    let mesh_config = MeshConfig {
        listen: parts.listen,
        bootstrap: parts.bootstrap,
        known_peers,
        net: NetConfig {
            psk: parts.psk,
            allow_peers: parts.allow_peers,
            mdns: config.mesh.mdns,
            message_bytes_max: config.mesh.message_bytes_max,
            // A message not acked by then means a dead connection; the driver closes it.
            request_timeout: (sync_interval * 5).max(Duration::from_secs(10)),
            // Rounds reach every peer long before this; known peers are redialled anyway.
            idle_connection_timeout: (sync_interval * 30).max(Duration::from_secs(60)),
            established_max: 512,
            pending_max: 64,
        },
        protocol: ProtocolConfig {
            sync_interval_ms: sync_interval.as_millis() as i64,
            fanout: config.mesh.fanout,
            message_bytes_max: config.mesh.message_bytes_max,
            ..ProtocolConfig::default()
        },
        fingerprint: settings.fingerprint(),
        settings: settings.canonical(),
    };
    let replica = PersistedReplica { state: state.clone(), persist };
    let started = observatory_mesh::driver::start(keypair, mesh_config, replica, shutdown)
        .await
        .context("starting the mesh")?;
    for addr in &started.listen {
        tracing::info!(%addr, "listening for peers");
    }
    Ok(started)
}

/// SIGTERM and Ctrl-C (SIGINT), listened for from the moment this is created: before the
/// startup line is printed, so a signal sent right after it stops the peer gracefully
/// rather than killing it.
struct StopSignals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn listen() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                terminate: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
                interrupt: signal(SignalKind::interrupt()).context("listening for Ctrl-C")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Resolves on the first of the signals.
    async fn recv(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.terminate.recv() => tracing::info!("SIGTERM received; stopping"),
            _ = self.interrupt.recv() => tracing::info!("Ctrl-C received; stopping"),
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("Ctrl-C received; stopping");
        }
    }
}
