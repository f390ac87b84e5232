//! A misbehaving mesh peer for the end-to-end tests: it dials an observer, waits for its
//! hello, sends it bad messages on the anti-entropy protocol, then exits.
//!
//! ```text
//! garbage-peer MULTIADDR MESSAGE...
//! ```
//!
//! `MULTIADDR` must end with `/p2p/<peer id>`. Each `MESSAGE` is one request, sent in order,
//! each after the answer to (or the failure of) the one before:
//!
//! - `random:N`: N requests of random bytes, 1 to 2048 of them;
//! - `version`: a well-formed CBOR envelope of wire version 99 holding a hello;
//! - `corrupt-cell`: a well-formed sync message whose page holds a cell with more errors
//!   than calls;
//! - `edge-index`: a sync message whose cell names edge 7 of a table of one;
//! - `bad-histogram`: a sync message whose cell's latency histogram is garbage bytes;
//! - `oversized`: 4 MiB + 1 bytes, one more than the default `mesh.message_bytes_max`.
//!
//! It prints one JSON line: its peer id, and how many requests were sent, answered and
//! failed. Every identity is fresh, so a peer that shuns one run does not shun the next.
//! It exits 1 if it cannot connect or hear the hello within 15 s.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use ciborium::Value as Cbor;
use observatory_core::{Cell, CellData, CellKey, Edge, LatencyHistogram, NodeName, Origin, OriginDelta};
use observatory_net::libp2p::futures::StreamExt;
use observatory_net::libp2p::identity::Keypair;
use observatory_net::libp2p::multiaddr::Protocol as AddrPart;
use observatory_net::libp2p::request_response::{self, Message as RrMessage, OutboundRequestId};
use observatory_net::libp2p::swarm::SwarmEvent;
use observatory_net::libp2p::{Multiaddr, PeerId};
use observatory_net::net::{BehaviourEvent, NetConfig, build_swarm};
use observatory_sync::wire::{self, MeshMessage};
use observatory_sync::{Hello, Message, SyncMessage};
use rand::Rng;
use serde_json::json;

/// How long the whole run may take.
const RUN_DEADLINE: Duration = Duration::from_secs(15);
/// The default `mesh.message_bytes_max` of a peer.
const PEER_MESSAGE_BYTES_MAX: usize = 4 << 20;

/// One bad message to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Garbage {
    Random,
    Version,
    CorruptCell,
    EdgeIndex,
    BadHistogram,
    Oversized,
}

fn parse_messages(args: &[String]) -> anyhow::Result<Vec<Garbage>> {
    let mut messages = Vec::new();
    for arg in args {
        let (name, count) = match arg.split_once(':') {
            Some((name, count)) => (name, count.parse::<usize>().with_context(|| format!("count in {arg}"))?),
            None => (arg.as_str(), 1),
        };
        let garbage = match name {
            "random" => Garbage::Random,
            "version" => Garbage::Version,
            "corrupt-cell" => Garbage::CorruptCell,
            "edge-index" => Garbage::EdgeIndex,
            "bad-histogram" => Garbage::BadHistogram,
            "oversized" => Garbage::Oversized,
            _ => bail!("unknown message kind `{name}`"),
        };
        messages.extend(std::iter::repeat_n(garbage, count));
    }
    Ok(messages)
}

/// A sync step of `fingerprint` carrying one page of `local`'s origin with one cell.
fn sync_with_cell(fingerprint: &str, local: PeerId, data: CellData) -> Message {
    let node = |name: &str| NodeName::new(name, 200).expect("a valid node name");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis() as i64;
    // The finest default resolution is 10 s; a misaligned bucket would be refused for
    // another reason than the one each message is about.
    let key = CellKey {
        edge: Edge::new(node("garbage"), node("victim")),
        resolution: 0,
        bucket_start_ms: now_ms - now_ms % 10_000,
    };
    let page = OriginDelta {
        origin: Origin::new(&local.to_string(), 1),
        after_seq: 0,
        upto_seq: 1,
        complete: true,
        to_seq: 1,
        changed_at_ms: Some(now_ms),
        cells: vec![(key, Cell { seq: 1, data })],
        sender: Some(Origin::new(&local.to_string(), 1)),
    };
    let head = SyncMessage {
        fingerprint: fingerprint.to_string(),
        session: 1,
        step: 0,
        reply: false,
        want: None,
        lag_cells: None,
    };
    Message::Sync(head, vec![page])
}

fn sound_cell() -> CellData {
    CellData { calls: 1, errors: 0, bytes: 10, latency: LatencyHistogram::new() }
}

/// Calls `change` on every cell (`[edge index, resolution, bucket, seq, calls, errors,
/// bytes, latency]`) of an encoded sync message.
fn change_cells(value: &mut Cbor, change: &dyn Fn(&mut Vec<Cbor>)) {
    match value {
        Cbor::Map(entries) => {
            for (key, value) in entries.iter_mut() {
                match (key.as_text(), value) {
                    (Some("cells"), Cbor::Array(cells)) => {
                        for cell in cells.iter_mut() {
                            if let Cbor::Array(fields) = cell {
                                change(fields);
                            }
                        }
                    }
                    (_, value) => change_cells(value, change),
                }
            }
        }
        Cbor::Array(items) => items.iter_mut().for_each(|item| change_cells(item, change)),
        _ => {}
    }
}

/// Encodes `message`, then lets `change` spoil its cells.
fn spoiled(message: Message, change: &dyn Fn(&mut Vec<Cbor>)) -> Vec<u8> {
    let bytes = wire::encode(message);
    let mut value: Cbor = ciborium::from_reader(&bytes[..]).expect("our own encoding reads back");
    change_cells(&mut value, change);
    let mut out = Vec::new();
    ciborium::into_writer(&value, &mut out).expect("writing CBOR to a Vec");
    out
}

fn garbage_bytes(garbage: Garbage, fingerprint: &str, local: PeerId) -> Vec<u8> {
    let mut rng = rand::rng();
    match garbage {
        Garbage::Random => {
            let len = rng.random_range(1..=2048);
            (0..len).map(|_| rng.random::<u8>()).collect()
        }
        Garbage::Version => {
            // Our own encoding of a hello, with the envelope's version changed to 99.
            let hello = Message::Hello(Hello {
                fingerprint: fingerprint.to_string(),
                settings: String::new(),
                answer_me: true,
                objectives: String::new(),
            });
            let mut value: Cbor =
                ciborium::from_reader(&wire::encode(hello)[..]).expect("our own encoding reads back");
            if let Cbor::Array(items) = &mut value {
                items[0] = Cbor::Integer(99u32.into());
            }
            let mut out = Vec::new();
            ciborium::into_writer(&value, &mut out).expect("writing CBOR to a Vec");
            out
        }
        Garbage::CorruptCell => {
            let data = CellData { calls: 1, errors: 5, ..sound_cell() };
            wire::encode(sync_with_cell(fingerprint, local, data))
        }
        Garbage::EdgeIndex => spoiled(sync_with_cell(fingerprint, local, sound_cell()), &|cell| {
            cell[0] = Cbor::Integer(7u32.into())
        }),
        Garbage::BadHistogram => spoiled(sync_with_cell(fingerprint, local, sound_cell()), &|cell| {
            if let Some(latency) = cell.last_mut() {
                *latency = Cbor::Bytes(vec![0xde, 0xad, 0xbe, 0xef, 0xff, 0xff, 0xff]);
            }
        }),
        Garbage::Oversized => vec![0xa5; PEER_MESSAGE_BYTES_MAX + 1],
    }
}

/// What a run did, printed as JSON.
#[derive(Debug, Default)]
struct Report {
    sent: usize,
    answered: usize,
    failures: Vec<String>,
}

async fn run(target: Multiaddr, messages: Vec<Garbage>) -> anyhow::Result<(PeerId, Report)> {
    let Some(AddrPart::P2p(target_peer)) = target.iter().last() else {
        bail!("{target} does not end with /p2p/<peer id>");
    };
    let mut secret = [0u8; 32];
    rand::rng().fill(&mut secret);
    let keypair = Keypair::ed25519_from_bytes(secret).context("an ed25519 key from 32 bytes")?;
    let local = keypair.public().to_peer_id();
    let config = NetConfig {
        psk: None,
        allow_peers: Vec::new(),
        mdns: false,
        // Large enough to send the oversized message.
        message_bytes_max: 2 * PEER_MESSAGE_BYTES_MAX,
        request_timeout: Duration::from_secs(10),
        idle_connection_timeout: Duration::from_secs(30),
        established_max: 4,
        pending_max: 4,
    };
    let mut swarm = build_swarm(keypair, &config).context("building the swarm")?;
    swarm.dial(target.clone()).with_context(|| format!("dialling {target}"))?;

    let mut fingerprint: Option<String> = None;
    let mut report = Report::default();
    let mut pending: Option<OutboundRequestId> = None;
    let mut queue = messages.into_iter();
    let deadline = tokio::time::sleep(RUN_DEADLINE);
    tokio::pin!(deadline);
    loop {
        // Send the next message once the hello told us the fingerprint and the last
        // message is done with.
        if pending.is_none()
            && let Some(fingerprint) = &fingerprint
        {
            let Some(garbage) = queue.next() else { break };
            let bytes = garbage_bytes(garbage, fingerprint, local);
            pending = Some(swarm.behaviour_mut().sync.send_request(&target_peer, bytes));
            report.sent += 1;
        }
        let event = tokio::select! {
            event = swarm.select_next_some() => event,
            _ = &mut deadline => {
                if fingerprint.is_none() {
                    bail!("no hello from {target} within {RUN_DEADLINE:?}");
                }
                report.failures.push(format!("the run ended after {RUN_DEADLINE:?}"));
                break;
            }
        };
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Sync(event)) => match event {
                request_response::Event::Message {
                    message: RrMessage::Request { request, channel, .. },
                    ..
                } => {
                    let _ = swarm.behaviour_mut().sync.send_response(channel, b"\x01".to_vec());
                    if let Ok(MeshMessage::Protocol(Message::Hello(hello))) = wire::decode(&request) {
                        fingerprint = Some(hello.fingerprint);
                    }
                }
                request_response::Event::Message {
                    message: RrMessage::Response { request_id, .. }, ..
                } if pending == Some(request_id) => {
                    pending = None;
                    report.answered += 1;
                }
                request_response::Event::OutboundFailure { request_id, error, .. }
                    if pending == Some(request_id) =>
                {
                    pending = None;
                    report.failures.push(error.to_string());
                }
                _ => {}
            },
            SwarmEvent::OutgoingConnectionError { error, .. } if fingerprint.is_none() => {
                bail!("cannot connect to {target}: {error}");
            }
            _ => {}
        }
    }
    Ok((local, report))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.split_first() {
        Some((target, messages)) if !messages.is_empty() => target
            .parse::<Multiaddr>()
            .context("the first argument is not a multiaddr")
            .and_then(|target| Ok((target, parse_messages(messages)?))),
        _ => Err(anyhow::anyhow!("usage: garbage-peer MULTIADDR MESSAGE...")),
    };
    let outcome = parsed.and_then(|(target, messages)| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the tokio runtime")?;
        runtime.block_on(run(target, messages))
    });
    match outcome {
        Ok((local, report)) => {
            let line = json!({
                "peer_id": local.to_string(),
                "sent": report.sent,
                "answered": report.answered,
                "failed": report.failures.len(),
                "failures": report.failures,
            });
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("garbage-peer: {error:#}");
            ExitCode::FAILURE
        }
    }
}
