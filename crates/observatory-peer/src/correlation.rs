//! The correlation task: the correlator's clock, and the handoffs other peers send this
//! peer as the owner of their traces and tokens.

use std::time::Duration;

use observatory_api::PeerApi;
use observatory_correlate::Handoff;
use observatory_net::ReturnedHandoff;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::Peer;
use crate::pending_record::PendingRecord;

/// Ticks the correlator (at its `poll_timeout`, and at least every `tick_interval`) and
/// takes handoffs from other peers, until `stop`. On the way out, every waiting half and
/// token is given up (virtual-node edges where their attributes allow), since another
/// peer will own their traces from now on. `record` says how many halves wait (for the
/// next run to count after a crash), and `clean` at the end.
pub(crate) async fn run(
    peer: Peer,
    mut handoffs_in: mpsc::Receiver<(String, Handoff)>,
    mut handoffs_returned: mpsc::UnboundedReceiver<ReturnedHandoff>,
    mut record: PendingRecord,
    tick_interval: Duration,
    stop: CancellationToken,
) {
    let mut recorded_at_ms = i64::MIN;
    let tick_ms = i64::try_from(tick_interval.as_millis()).unwrap_or(i64::MAX);
    let mut next_tick_ms = peer.now_ms();
    loop {
        let now_ms = peer.now_ms();
        if now_ms.saturating_sub(recorded_at_ms) >= 1_000 {
            recorded_at_ms = now_ms;
            record.waiting(peer.correlator().counters().spans_pending);
        }
        let due_ms = peer.correlator().poll_timeout().unwrap_or(i64::MAX).min(next_tick_ms);
        if now_ms >= due_ms {
            // Due work first: a stream of handoffs must not starve the clock.
            next_tick_ms = now_ms.saturating_add(tick_ms);
            let events = peer.correlator().handle_tick(now_ms);
            if let Err(error) = peer.apply_derived(events).await {
                tracing::warn!(%error, "edges from spans could not be applied and are lost");
            }
            continue;
        }
        let wait = Duration::from_millis(u64::try_from(due_ms - now_ms).unwrap_or(0));
        let events = tokio::select! {
            _ = tokio::time::sleep(wait) => peer.correlator().handle_tick(peer.now_ms()),
            Some((from, handoff)) = handoffs_in.recv() => {
                tracing::trace!(%from, spans = handoff.spans.len(), sightings = handoff.sightings.len(), "handoff received");
                peer.correlator().handle_handoff(peer.now_ms(), handoff)
            }
            // Not acknowledged by its owner: on to the next owner, or held here.
            Some(returned) = handoffs_returned.recv() => {
                tracing::debug!(peer = %returned.peer, reason = %returned.reason, "a handoff came back; sending it on");
                let now_ms = peer.now_ms();
                let live = peer.live_peers();
                let local = peer.inner.info.peer_id.clone();
                if returned.send_on {
                    let output = peer.correlator().reroute(now_ms, returned.handoff, &returned.peer, &local, &live);
                    peer.dispatch(now_ms, output)
                } else {
                    // Busy or too large: held here, so that it does not travel between busy peers.
                    peer.correlator().take_back(now_ms, returned.handoff)
                }
            }
            _ = stop.cancelled() => break,
        };
        if let Err(error) = peer.apply_derived(events).await {
            tracing::warn!(%error, "edges from spans could not be applied and are lost");
        }
    }
    let events = peer.correlator().handle_tick(i64::MAX);
    if let Err(error) = peer.apply_derived(events).await {
        tracing::warn!(%error, "edges from the last waiting spans could not be applied and are lost");
    }
    record.clean();
}
