//! `observatory peer`: starts a peer, prints where it listens, reloads its objectives on
//! SIGHUP, and stops it cleanly on SIGTERM or Ctrl-C.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use observatory_api::PeerApi;
use observatory_config::Config;
use observatory_peer::SystemClock;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Runs a peer until it is told to stop.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let running = observatory_peer::start(&config, Arc::new(SystemClock), env!("CARGO_PKG_VERSION")).await?;
    let stop = CancellationToken::new();
    let signals = StopSignals::listen()?;
    #[cfg(unix)]
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("listening for SIGHUP")?;
    #[cfg(not(unix))]
    let hangup = ();
    // One JSON line on stdout says where we listen, for people and for scripts.
    let listening = &running.listening;
    let started = json!({
        "event": "listening",
        "peer_id": listening.peer_id,
        "incarnation": listening.incarnation,
        "http": listening.http.to_string(),
        "otlp": listening.otlp.map(|a| a.to_string()),
        "otlp_grpc": listening.otlp_grpc.map(|a| a.to_string()),
        "listen": listening.listen,
        "data_dir": listening.data_dir,
    });
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{started}").and_then(|_| stdout.flush()).context("writing the startup line")?;
    drop(stdout);
    let on_signal = stop.clone();
    let signal_task = tokio::spawn(async move {
        signals.recv().await;
        on_signal.cancel();
    });
    let reload_task = tokio::spawn(reload_on_hangup(running.peer.clone(), hangup));
    let result = running.run_until(stop).await;
    signal_task.abort();
    reload_task.abort();
    let _ = signal_task.await;
    let _ = reload_task.await;
    result?;
    Ok(())
}

/// Reloads the objectives on every SIGHUP (the peer logs how it went), listened for from
/// before the startup line like the stop signals.
#[cfg(unix)]
async fn reload_on_hangup(peer: observatory_peer::Peer, mut hangup: tokio::signal::unix::Signal) {
    while hangup.recv().await.is_some() {
        tracing::info!("SIGHUP received; reloading the objectives");
        let _ = peer.reload_objectives().await;
    }
}

#[cfg(not(unix))]
async fn reload_on_hangup(_peer: observatory_peer::Peer, _hangup: ()) {}

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
