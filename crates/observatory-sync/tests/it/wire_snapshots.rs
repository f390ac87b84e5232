//! The bytes of every body of the wire version, pinned.
//!
//! `snapshots/wire-v3.hex` holds one sample of each body (a hello, a sync step with pages
//! of all three edge kinds, a want alone, a peer list, a handoff with every span kind and
//! a sighting), as encoded when wire version 2 was made. The test encodes the same
//! messages and compares byte for byte, and decodes the snapshot back into them. A test
//! that fails here means the encoding changed: that needs a new `WIRE_VERSION` (and a new
//! snapshot file), never an edited one. `snapshots/wire-v2.hex` is the version before
//! (without the objectives' fingerprint in the hello): a peer refuses it, naming the
//! version.

use observatory_core::{Edge, EdgeKind, Event, FlowState, NodeName, Origin, Transfer};
use observatory_correlate::{Handoff, Remote, Sighting, Span, SpanKind};
use observatory_sync::protocol::{Hello, Message, SyncMessage, wire_cost};
use observatory_sync::wire::{self, MeshMessage, WIRE_VERSION};

use crate::{default_limits, default_settings};

const SNAPSHOT: &str = include_str!("snapshots/wire-v3.hex");
const SNAPSHOT_V2: &str = include_str!("snapshots/wire-v2.hex");
const NOW: i64 = 1_800_000_000_000;

fn name(s: &str) -> NodeName {
    NodeName::new(s, 200).expect("a valid name")
}

/// Two peers' states: `a` wrote two batches, `b` one.
fn states() -> (FlowState, FlowState) {
    let mut a = FlowState::new(default_settings(), default_limits());
    a.set_local(Origin::new("12D3KooWA", 3));
    let event =
        |edge, ts_ms, latency_us, error, bytes, count| Event { edge, ts_ms, latency_us, error, bytes, count };
    let events = vec![
        event(Edge::new(name("web"), name("checkout")), NOW - 5_000, Some(12_500), false, 512, 3),
        event(
            Edge::with_kind(name("checkout"), name("orders"), EdgeKind::Messaging),
            NOW - 1_000,
            Some(900),
            true,
            0,
            1,
        ),
        event(
            Edge::with_kind(name("checkout"), name("postgres"), EdgeKind::Database),
            NOW - 20_000,
            None,
            false,
            10,
            2,
        ),
    ];
    a.apply_local(NOW, &events);
    a.apply_local(NOW + 10, &events[..1]);
    let mut b = FlowState::new(default_settings(), default_limits());
    b.set_local(Origin::new("12D3KooWB", 1));
    b.apply_local(NOW, &events[1..]);
    (a, b)
}

/// The sample messages, named as in the snapshot file.
fn samples() -> Vec<(&'static str, MeshMessage)> {
    let (a, b) = states();
    let hello = Hello {
        fingerprint: "0123456789abcdef".into(),
        settings: default_settings().canonical(),
        answer_me: true,
        objectives: "fedcba9876543210".into(),
    };
    let want = b.sync_request(&Transfer::default());
    let head = SyncMessage {
        fingerprint: "0123456789abcdef".into(),
        session: 7,
        step: 1,
        reply: true,
        want: Some(want.clone()),
        lag_cells: Some(42),
    };
    let pages = a.delta_within(&want, 1 << 20, wire_cost);
    let want_only = SyncMessage {
        fingerprint: "0123456789abcdef".into(),
        session: 8,
        step: 0,
        reply: false,
        want: Some(want),
        lag_cells: None,
    };
    let peers = vec![
        ("12D3KooWA".to_string(), vec!["/ip4/127.0.0.1/tcp/7000/p2p/12D3KooWA".to_string()]),
        ("12D3KooWB".to_string(), vec![]),
    ];
    let span = |kind, remote| Span {
        trace_id: 0x0102030405060708090a0b0c0d0e0f10,
        span_id: 0x1112131415161718,
        parent_span_id: Some(0x2122232425262728),
        kind,
        service: name("checkout"),
        start_ns: 1_800_000_000_000_000_000,
        end_ns: 1_800_000_000_012_000_000,
        error: false,
        remote,
        sampling_threshold: 0,
    };
    let handoff = Handoff {
        spans: vec![
            span(SpanKind::Client, Some(Remote { node: name("payments"), kind: EdgeKind::Request })),
            Span { parent_span_id: None, error: true, ..span(SpanKind::Server, None) },
            span(SpanKind::Producer, Some(Remote { node: name("orders"), kind: EdgeKind::Messaging })),
            span(SpanKind::Consumer, None),
            span(SpanKind::Internal, None),
        ],
        sightings: vec![Sighting {
            token: "order-17".into(),
            node: name("shipping"),
            ts_ms: NOW,
            error: true,
            kind: EdgeKind::Messaging,
        }],
    };
    vec![
        ("hello", Message::Hello(hello).into()),
        ("sync", Message::Sync(head, pages).into()),
        ("sync_want", Message::Sync(want_only, Vec::new()).into()),
        ("peers", MeshMessage::Peers(peers)),
        ("handoff", MeshMessage::Handoff(handoff)),
    ]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex")).collect()
}

fn snapshot() -> Vec<(&'static str, &'static str)> {
    lines(SNAPSHOT)
}

fn lines(text: &'static str) -> Vec<(&'static str, &'static str)> {
    text.lines().map(|line| line.split_once(' ').expect("`name hex` per line")).collect()
}

#[test]
fn every_body_encodes_byte_for_byte_as_the_wire_version() {
    assert_eq!(WIRE_VERSION, 3, "a new wire version needs a snapshot file of its own");
    if std::env::var_os("WRITE_WIRE_SNAPSHOT").is_some() {
        // Only when a new wire version is made: writes its file once.
        let text: String =
            samples().into_iter().map(|(name, m)| format!("{name} {}\n", hex(&wire::encode(m)))).collect();
        std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/snapshots/wire-v3.hex"), text).unwrap();
    }
    let pinned = snapshot();
    let samples = samples();
    assert_eq!(
        pinned.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        samples.iter().map(|(n, _)| *n).collect::<Vec<_>>()
    );
    for ((name, expected), (_, message)) in pinned.into_iter().zip(samples) {
        assert_eq!(hex(&wire::encode(message)), expected, "the encoding of `{name}` changed");
    }
}

#[test]
fn the_pinned_bytes_decode_into_the_same_messages() {
    for ((name, bytes), (_, message)) in snapshot().into_iter().zip(samples()) {
        assert_eq!(wire::decode(&unhex(bytes)).as_ref(), Ok(&message), "`{name}` decodes otherwise");
    }
}

#[test]
fn the_version_before_is_refused_naming_it() {
    for (name, bytes) in lines(SNAPSHOT_V2) {
        assert_eq!(wire::decode(&unhex(bytes)), Err(wire::WireError::Version(2)), "`{name}` of version 2");
    }
}

#[test]
fn edges_with_flows_and_marks_travel_as_they_are() {
    use observatory_core::ContextMark;
    let (mut a, b) = states();
    let events: Vec<Event> = [
        (Some("checkout-page"), ContextMark::Continued),
        (None, ContextMark::Started),
        (Some("tenant=acme"), ContextMark::Unknown),
        (None, ContextMark::Unknown),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (flow, mark))| Event {
        edge: {
            let edge = Edge::new(name("web"), name("checkout")).labelled(flow.map(name), mark);
            // The last is virtual on the server side, the first on the client side.
            match i {
                0 => edge.with_virtual(observatory_core::VirtualSide::Client),
                3 => edge.with_virtual(observatory_core::VirtualSide::Server),
                _ => edge,
            }
        },
        ts_ms: NOW - 2_000,
        latency_us: Some(4_000),
        error: false,
        bytes: 10,
        count: 2,
    })
    .collect();
    assert_eq!(a.apply_local(NOW, &events).accepted, 4);
    let want = b.sync_request(&Transfer::default());
    let head = SyncMessage {
        fingerprint: "0123456789abcdef".into(),
        session: 9,
        step: 1,
        reply: true,
        want: Some(want.clone()),
        lag_cells: None,
    };
    let pages = a.delta_within(&want, 1 << 20, wire_cost);
    let message: MeshMessage = Message::Sync(head, pages).into();
    let decoded = wire::decode(&wire::encode(message.clone())).expect("decodes");
    assert_eq!(decoded, message, "every flow, mark and virtual side comes back");
    // Edges without either are still written as they were before flows existed.
    let text = hex(&wire::encode(message));
    assert!(text.contains(&hex(b"checkout-page")));
}

#[test]
fn a_sampled_span_keeps_its_threshold_in_a_handoff_and_others_travel_as_before() {
    let sampled = Span {
        trace_id: 7,
        span_id: 8,
        parent_span_id: None,
        kind: SpanKind::Client,
        service: name("checkout"),
        start_ns: 1_800_000_000_000_000_000,
        end_ns: 1_800_000_000_012_000_000,
        error: false,
        remote: None,
        sampling_threshold: 0xe6_6666_6666_6666, // kept with probability 0.1
    };
    let plain = Span { sampling_threshold: 0, span_id: 9, ..sampled.clone() };
    let message =
        MeshMessage::Handoff(Handoff { spans: vec![sampled, plain.clone()], sightings: Vec::new() });
    let decoded = wire::decode(&wire::encode(message.clone())).expect("decodes");
    assert_eq!(decoded, message);
    let alone = wire::encode(MeshMessage::Handoff(Handoff { spans: vec![plain], sightings: Vec::new() }));
    assert!(!hex(&alone).contains(&hex(b"sampling_threshold")), "an unsampled span has no threshold field");
}
