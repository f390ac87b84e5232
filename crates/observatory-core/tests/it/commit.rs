//! Group commit on a scripted clock: which requests share a turn, what is written, and
//! which reply waits for which flush.

use observatory_core::commit::{AckMode, Changes, CommitConfig, CommitOutput, CommitQueue, Write};
use observatory_core::{Event, FlowState, Origin};

use crate::{NOW_MS, default_limits, default_settings, edge};

fn config(ack: AckMode) -> CommitConfig {
    CommitConfig { ack, flush_interval_ms: 500, expire_interval_ms: 10_000 }
}

fn state() -> FlowState {
    let mut state = FlowState::new(default_settings(), default_limits());
    state.set_local(Origin::new("p", 1));
    state
}

fn event(ts_ms: i64) -> Event {
    Event { edge: edge("web", "api"), ts_ms, latency_us: Some(900), error: false, bytes: 1, count: 1 }
}

/// The outputs as short words, replies with their ticket and accepted count.
fn drain(queue: &mut CommitQueue<u32>) -> Vec<String> {
    std::iter::from_fn(|| queue.poll_output())
        .map(|output| match output {
            CommitOutput::Write(Write::Local { keys, seq, .. }) => {
                format!("write local {} cells seq {seq}", keys.len())
            }
            CommitOutput::Write(Write::Merged(changes)) => format!("write merged {}", changes.origins.len()),
            CommitOutput::Flush { upto } => format!("flush {upto}"),
            CommitOutput::Reply(ticket, applied) => format!("reply {ticket}: {}", applied.accepted),
            CommitOutput::Maintain { now_ms } => format!("maintain {}", now_ms - NOW_MS),
        })
        .collect()
}

fn merged() -> Changes {
    Changes { cells: Vec::new(), origins: vec![(Origin::new("q", 1), 3, None)] }
}

#[test]
fn durable_requests_of_one_turn_share_a_write_and_reply_after_its_flush() {
    let mut queue = CommitQueue::new(config(AckMode::Durable));
    let mut state = state();
    queue.submit(1, vec![event(NOW_MS)]);
    queue.submit(2, vec![event(NOW_MS), event(NOW_MS)]);
    queue.handle_tick(NOW_MS, &mut state);
    // One atomic write for the turn (the four cells of one edge), one seq per request.
    assert_eq!(drain(&mut queue), ["maintain 0", "write local 4 cells seq 2", "flush 1"]);
    queue.flushed(1);
    assert_eq!(drain(&mut queue), ["reply 1: 1", "reply 2: 2"]);
    assert_eq!(state.origin_seq(&Origin::new("p", 1)), 2);
}

#[test]
fn a_durable_reply_waits_for_the_flush_after_its_own_write() {
    let mut queue = CommitQueue::new(config(AckMode::Durable));
    let mut state = state();
    queue.submit(1, vec![event(NOW_MS)]);
    queue.handle_tick(NOW_MS, &mut state);
    drain(&mut queue);
    queue.submit(2, vec![event(NOW_MS)]);
    queue.handle_tick(NOW_MS + 10, &mut state);
    assert_eq!(drain(&mut queue), ["write local 4 cells seq 2", "flush 2"]);
    queue.flushed(1);
    assert_eq!(drain(&mut queue), ["reply 1: 1"], "the first flush covers only the first write");
    queue.flushed(2);
    assert_eq!(drain(&mut queue), ["reply 2: 1"]);
}

#[test]
fn accepted_requests_reply_at_once_and_are_flushed_on_the_interval() {
    let mut queue = CommitQueue::new(config(AckMode::Accepted));
    let mut state = state();
    queue.handle_tick(NOW_MS, &mut state);
    assert_eq!(drain(&mut queue), ["maintain 0"]);
    assert_eq!(queue.poll_timeout(), NOW_MS + 10_000, "nothing written: no flush due");
    queue.submit(7, vec![event(NOW_MS)]);
    queue.handle_tick(NOW_MS + 100, &mut state);
    assert_eq!(drain(&mut queue), ["write local 4 cells seq 1", "reply 7: 1"]);
    assert_eq!(queue.poll_timeout(), NOW_MS + 500, "written and not flushed: the next flush is due");
    queue.handle_tick(NOW_MS + 400, &mut state);
    assert!(drain(&mut queue).is_empty());
    queue.handle_tick(NOW_MS + 500, &mut state);
    assert_eq!(drain(&mut queue), ["flush 1"]);
    queue.handle_tick(NOW_MS + 1_000, &mut state);
    assert!(drain(&mut queue).is_empty(), "nothing new to flush");
}

#[test]
fn merged_changes_are_written_in_order_and_flushed_with_the_next_flush() {
    let mut queue = CommitQueue::new(config(AckMode::Durable));
    let mut state = state();
    queue.handle_tick(NOW_MS, &mut state);
    drain(&mut queue);
    queue.persist(merged());
    queue.persist(Changes::default());
    queue.persist(merged());
    queue.handle_tick(NOW_MS + 100, &mut state);
    assert_eq!(drain(&mut queue), ["write merged 1", "write merged 1"], "empty changes write nothing");
    queue.handle_tick(NOW_MS + 500, &mut state);
    assert_eq!(drain(&mut queue), ["flush 2"]);
    // A durable turn's flush covers merges written before it.
    queue.persist(merged());
    queue.submit(1, vec![event(NOW_MS + 900)]);
    queue.handle_tick(NOW_MS + 1_000, &mut state);
    assert_eq!(drain(&mut queue), ["write merged 1", "write local 4 cells seq 1", "flush 4"]);
}

#[test]
fn a_request_whose_events_are_all_refused_is_answered_at_once() {
    let mut queue = CommitQueue::new(config(AckMode::Durable));
    let mut state = state();
    queue.submit(3, vec![event(NOW_MS - 3_600_000)]);
    queue.handle_tick(NOW_MS, &mut state);
    assert_eq!(drain(&mut queue), ["maintain 0", "reply 3: 0"]);
}

#[test]
fn maintenance_runs_every_expire_interval_and_what_it_writes_is_flushed() {
    let mut queue = CommitQueue::new(config(AckMode::Durable));
    let mut state = state();
    queue.handle_tick(NOW_MS, &mut state);
    assert_eq!(drain(&mut queue), ["maintain 0"]);
    queue.handle_tick(NOW_MS + 9_999, &mut state);
    assert!(drain(&mut queue).is_empty());
    queue.handle_tick(NOW_MS + 10_000, &mut state);
    assert_eq!(drain(&mut queue), ["maintain 10000"]);
    queue.written_outside();
    queue.handle_tick(NOW_MS + 10_500, &mut state);
    assert_eq!(drain(&mut queue), ["flush 1"]);
}

#[test]
fn a_clock_stepped_back_puts_nothing_off_by_more_than_a_period() {
    let mut queue = CommitQueue::new(config(AckMode::Accepted));
    let mut state = state();
    queue.handle_tick(NOW_MS, &mut state);
    queue.submit(1, vec![event(NOW_MS)]);
    queue.handle_tick(NOW_MS + 100, &mut state);
    drain(&mut queue);
    // The clock jumps an hour back: the flush is due one interval later, not an hour.
    let back = NOW_MS - 3_600_000;
    queue.handle_tick(back, &mut state);
    assert!(drain(&mut queue).is_empty());
    queue.handle_tick(back + 500, &mut state);
    assert_eq!(drain(&mut queue), ["flush 1"]);
}

#[test]
fn shutdown_takes_a_last_turn_and_flushes_and_abandon_gives_back_every_waiting_ticket() {
    let mut queue = CommitQueue::new(config(AckMode::Accepted));
    let mut state = state();
    queue.submit(1, vec![event(NOW_MS)]);
    queue.shutdown(NOW_MS, &mut state);
    assert_eq!(drain(&mut queue), ["write local 4 cells seq 1", "reply 1: 1", "flush 1"]);

    let mut queue = CommitQueue::new(config(AckMode::Durable));
    queue.submit(1, vec![event(NOW_MS)]);
    queue.handle_tick(NOW_MS, &mut state);
    queue.submit(2, vec![event(NOW_MS)]);
    let mut abandoned = queue.abandon();
    abandoned.sort();
    assert_eq!(abandoned, [1, 2], "the one waiting for a flush and the one queued");
    assert!(queue.poll_output().is_none());
}
