//! The libp2p layer over real sockets on 127.0.0.1: pre-shared keys, the allow list, message
//! size limits, and reading key files. Every wait has a deadline, so a broken layer fails a
//! test instead of hanging it.

use std::{future::Future, io, time::Duration};

use libp2p::{
    Multiaddr, PeerId, Swarm, allow_block_list,
    futures::{StreamExt, future::select_all, io::Cursor},
    identify,
    identity::Keypair,
    multiaddr::Protocol,
    pnet::PreSharedKey,
    request_response::{self, Codec, InboundFailure, Message, OutboundFailure},
    swarm::{DialError, ListenError, SwarmEvent, dial_opts::DialOpts},
};
use observatory_net::net::{
    Behaviour, BehaviourEvent, IDENTIFY_PROTOCOL_VERSION, NetConfig, NetError, PskFileProblem,
    RESPONSE_BYTES_MAX, SYNC_PROTOCOL, WireCodec, build_swarm, read_psk_file,
};
use tokio::time::{Instant, timeout, timeout_at};

type Event = SwarmEvent<BehaviourEvent>;
type SyncEvent = request_response::Event<Vec<u8>, Vec<u8>>;

/// No test here should take longer than this, even on a slow, busy machine.
const TEST_TIMEOUT: Duration = Duration::from_secs(30);

fn config() -> NetConfig {
    NetConfig {
        psk: None,
        allow_peers: Vec::new(),
        mdns: false,
        message_bytes_max: 64 * 1024,
        request_timeout: Duration::from_secs(5),
        idle_connection_timeout: Duration::from_secs(10),
        established_max: 16,
        pending_max: 8,
    }
}

fn with_psk(psk: PreSharedKey) -> NetConfig {
    NetConfig { psk: Some(psk), ..config() }
}

fn new_swarm(config: &NetConfig) -> (Swarm<Behaviour>, PeerId) {
    let keypair = Keypair::generate_ed25519();
    let peer = keypair.public().to_peer_id();
    (build_swarm(keypair, config).expect("swarm builds"), peer)
}

/// Runs a test body with the overall deadline.
async fn within<F: Future<Output = ()>>(body: F) {
    timeout(TEST_TIMEOUT, body).await.expect("test timed out");
}

/// Starts listening on a free port of 127.0.0.1 and returns the address once it is bound.
async fn listen(swarm: &mut Swarm<Behaviour>) -> Multiaddr {
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")).expect("listen");
    timeout(Duration::from_secs(5), async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                return address;
            }
        }
    })
    .await
    .expect("listening within 5 s")
}

/// The next event of any of `swarms`, with the index of the swarm it came from, or `None`
/// once `deadline` passes.
async fn next_event(swarms: &mut [&mut Swarm<Behaviour>], deadline: Instant) -> Option<(usize, Event)> {
    let nexts = swarms.iter_mut().map(|swarm| swarm.select_next_some());
    timeout_at(deadline, select_all(nexts)).await.ok().map(|(event, index, _)| (index, event))
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn response_to(request: &[u8]) -> Vec<u8> {
    format!("got {} bytes", request.len()).into_bytes()
}

/// Answers `event` with [`response_to`] if it is a request to `swarm`; hands back any other
/// event.
fn answer_requests(swarm: &mut Swarm<Behaviour>, event: Event) -> Option<Event> {
    match event {
        SwarmEvent::Behaviour(BehaviourEvent::Sync(SyncEvent::Message {
            message: Message::Request { request, channel, .. },
            ..
        })) => {
            let response = response_to(&request);
            swarm.behaviour_mut().sync.send_response(channel, response).expect("response channel open");
            None
        }
        other => Some(other),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_with_the_same_psk_exchange_a_request_and_its_response() {
    within(async {
        let psk = PreSharedKey::new([7; 32]);
        let (mut listener, listener_id) = new_swarm(&with_psk(psk));
        let (mut dialer, dialer_id) = new_swarm(&with_psk(psk));
        let address = listen(&mut listener).await;
        // Dial by name, to see DNS resolution at work.
        let port = address.iter().find_map(|protocol| match protocol {
            Protocol::Tcp(port) => Some(port),
            _ => None,
        });
        let address: Multiaddr =
            format!("/dns4/localhost/tcp/{}", port.expect("a TCP port")).parse().expect("valid multiaddr");

        let request = payload(40_000);
        let request_id =
            dialer.behaviour_mut().sync.send_request_with_addresses(&listener_id, request.clone(), vec![address]);

        let (mut request_seen, mut response_seen, mut identified) = (false, false, false);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(request_seen && response_seen && identified) {
            let Some((index, event)) = next_event(&mut [&mut listener, &mut dialer], deadline).await else {
                panic!("deadline: request seen {request_seen}, response seen {response_seen}, identified {identified}");
            };
            match (index, event) {
                (0, SwarmEvent::Behaviour(BehaviourEvent::Sync(SyncEvent::Message { peer, message, .. }))) => {
                    let Message::Request { request: received, channel, .. } = message else {
                        panic!("listener got a response");
                    };
                    assert_eq!(peer, dialer_id);
                    assert!(received == request, "request bytes changed on the way");
                    let response = response_to(&received);
                    listener.behaviour_mut().sync.send_response(channel, response).expect("channel open");
                    request_seen = true;
                }
                (1, SwarmEvent::Behaviour(BehaviourEvent::Sync(SyncEvent::Message { peer, message, .. }))) => {
                    let Message::Response { request_id: answered, response } = message else {
                        panic!("dialer got a request");
                    };
                    assert_eq!(peer, listener_id);
                    assert_eq!(answered, request_id);
                    assert_eq!(response, b"got 40000 bytes");
                    response_seen = true;
                }
                (1, SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                    peer_id,
                    info,
                    ..
                }))) => {
                    assert_eq!(peer_id, listener_id);
                    assert_eq!(info.protocol_version, IDENTIFY_PROTOCOL_VERSION);
                    assert!(info.agent_version.starts_with("observatory/"), "agent {}", info.agent_version);
                    assert!(info.protocols.contains(&SYNC_PROTOCOL), "protocols {:?}", info.protocols);
                    identified = true;
                }
                (0, SwarmEvent::Behaviour(BehaviourEvent::Sync(SyncEvent::ResponseSent { .. }))) => {}
                (_, SwarmEvent::Behaviour(BehaviourEvent::Sync(failure))) => panic!("sync failed: {failure:?}"),
                (_, SwarmEvent::OutgoingConnectionError { error, .. }) => panic!("dial failed: {error}"),
                (_, SwarmEvent::IncomingConnectionError { error, .. }) => panic!("accept failed: {error}"),
                _ => {}
            }
        }
    })
    .await;
}

/// Dials a listener holding `listener_psk` from a peer holding `dialer_psk`, and expects no
/// connection and no request to get through.
async fn assert_cannot_connect(listener_psk: Option<PreSharedKey>, dialer_psk: Option<PreSharedKey>) {
    let (mut listener, listener_id) = new_swarm(&NetConfig { psk: listener_psk, ..config() });
    let (mut dialer, _) = new_swarm(&NetConfig { psk: dialer_psk, ..config() });
    let address = listen(&mut listener).await;
    dialer.behaviour_mut().sync.send_request_with_addresses(&listener_id, payload(100), vec![address]);

    // Depending on who lacks the key, the dial fails fast (garbage where multistream-select
    // should be) or both sides wait for a handshake that never makes sense, until the
    // transport's 10 s timeout. A few seconds without a connection is enough either way: with
    // the right key, peers connect in milliseconds.
    let deadline = Instant::now() + Duration::from_secs(3);
    let (mut dial_failed, mut request_failed) = (false, false);
    while !(dial_failed && request_failed) {
        let Some((index, event)) = next_event(&mut [&mut listener, &mut dialer], deadline).await else {
            break;
        };
        match (index, event) {
            (_, SwarmEvent::ConnectionEstablished { peer_id, .. }) => {
                panic!("connection established with {peer_id} despite the key mismatch")
            }
            (0, SwarmEvent::Behaviour(BehaviourEvent::Sync(event))) => {
                panic!("listener saw sync traffic despite the key mismatch: {event:?}")
            }
            (1, SwarmEvent::OutgoingConnectionError { .. }) => dial_failed = true,
            (1, SwarmEvent::Behaviour(BehaviourEvent::Sync(SyncEvent::OutboundFailure { error, .. }))) => {
                assert!(matches!(error, OutboundFailure::DialFailure), "unexpected failure {error:?}");
                request_failed = true;
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_the_psk_cannot_connect() {
    within(assert_cannot_connect(Some(PreSharedKey::new([7; 32])), None)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_another_psk_cannot_connect() {
    within(assert_cannot_connect(Some(PreSharedKey::new([7; 32])), Some(PreSharedKey::new([8; 32])))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_a_psk_cannot_connect_to_one_without() {
    within(assert_cannot_connect(None, Some(PreSharedKey::new([7; 32])))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allow_list_denies_other_peers_and_admits_listed_ones() {
    within(async {
        let allowed_keypair = Keypair::generate_ed25519();
        let allowed_id = allowed_keypair.public().to_peer_id();
        let (mut listener, listener_id) = new_swarm(&NetConfig { allow_peers: vec![allowed_id], ..config() });
        let (mut stranger, stranger_id) = new_swarm(&config());
        let mut allowed = build_swarm(allowed_keypair, &config()).expect("swarm builds");
        let address = listen(&mut listener).await;
        let stranger_address = listen(&mut stranger).await;

        // Outgoing: the listener refuses to dial a peer outside its list.
        let dial = listener.dial(DialOpts::peer_id(stranger_id).addresses(vec![stranger_address]).build());
        assert!(matches!(dial, Err(DialError::Denied { .. })), "dial to a stranger: {dial:?}");

        // Incoming: the stranger's connection is denied and its request goes nowhere.
        stranger.behaviour_mut().sync.send_request_with_addresses(
            &listener_id,
            payload(100),
            vec![address.clone()],
        );
        let (mut denied, mut request_failed) = (false, false);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(denied && request_failed) {
            let Some((index, event)) = next_event(&mut [&mut listener, &mut stranger], deadline).await else {
                panic!("deadline: denied {denied}, request failed {request_failed}");
            };
            match (index, event) {
                (0, SwarmEvent::IncomingConnectionError { error: ListenError::Denied { cause }, .. }) => {
                    assert!(
                        cause.downcast_ref::<allow_block_list::NotAllowed>().is_some(),
                        "denied for another reason: {cause}"
                    );
                    denied = true;
                }
                (0, SwarmEvent::ConnectionEstablished { peer_id, .. }) => {
                    panic!("listener accepted {peer_id}, who is not in its allow list")
                }
                (0, SwarmEvent::Behaviour(BehaviourEvent::Sync(event))) => {
                    panic!("listener saw sync traffic from a stranger: {event:?}")
                }
                (1, SwarmEvent::Behaviour(BehaviourEvent::Sync(SyncEvent::OutboundFailure { .. }))) => {
                    request_failed = true;
                }
                (1, SwarmEvent::Behaviour(BehaviourEvent::Sync(event))) => {
                    panic!("stranger's request did not fail: {event:?}")
                }
                _ => {}
            }
        }

        // The listed peer gets through, so the denial above was the allow list's doing.
        allowed.behaviour_mut().sync.send_request_with_addresses(&listener_id, payload(100), vec![address]);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let Some((index, event)) = next_event(&mut [&mut listener, &mut allowed], deadline).await else {
                panic!("deadline: the allowed peer got no response");
            };
            let event = if index == 0 { answer_requests(&mut listener, event) } else { Some(event) };
            match (index, event) {
                (
                    1,
                    Some(SwarmEvent::Behaviour(BehaviourEvent::Sync(SyncEvent::Message {
                        message: Message::Response { response, .. },
                        ..
                    }))),
                ) => {
                    assert_eq!(response, b"got 100 bytes");
                    break;
                }
                (0, Some(SwarmEvent::Behaviour(BehaviourEvent::Sync(SyncEvent::ResponseSent { .. })))) => {}
                (_, Some(SwarmEvent::Behaviour(BehaviourEvent::Sync(failure)))) => {
                    panic!("allowed peer's request failed: {failure:?}")
                }
                _ => {}
            }
        }
    })
    .await;
}

fn is_too_large(error: &io::Error, bytes_max: usize) -> bool {
    error.kind() == io::ErrorKind::InvalidData
        && error.to_string() == format!("message larger than {bytes_max} bytes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_larger_than_the_limit_are_refused_by_receiver_and_sender() {
    within(async {
        let limit = 1024;
        let (mut receiver, receiver_id) = new_swarm(&NetConfig { message_bytes_max: limit, ..config() });
        let (mut generous, generous_id) =
            new_swarm(&NetConfig { message_bytes_max: 1024 * 1024, ..config() });
        let (mut strict, strict_id) = new_swarm(&NetConfig { message_bytes_max: limit, ..config() });
        let address = listen(&mut receiver).await;

        // The generous sender writes one byte too many; the receiver must refuse it, then
        // accept a request of exactly the limit on the same connection. libp2p reports a
        // request that fails while being read to neither side's application on the receiver,
        // so the refusal shows as the sender's failure and the absence of a request.
        let too_large = generous.behaviour_mut().sync.send_request_with_addresses(
            &receiver_id,
            payload(limit + 1),
            vec![address.clone()],
        );
        // The strict sender refuses to write it at all.
        let refused_locally = strict.behaviour_mut().sync.send_request_with_addresses(
            &receiver_id,
            payload(limit * 4),
            vec![address],
        );

        let (mut outbound_failed, mut strict_refused) = (false, false);
        let mut at_limit = None;
        let mut at_limit_answered = false;
        let deadline = Instant::now() + Duration::from_secs(15);
        while !(outbound_failed && strict_refused && at_limit_answered) {
            let Some((index, event)) =
                next_event(&mut [&mut receiver, &mut generous, &mut strict], deadline).await
            else {
                panic!(
                    "deadline: outbound failed {outbound_failed}, strict refused {strict_refused}, \
                     at-limit answered {at_limit_answered}"
                );
            };
            if let SwarmEvent::Behaviour(BehaviourEvent::Sync(SyncEvent::Message {
                message: Message::Request { request, .. },
                ..
            })) = &event
            {
                assert_eq!(request.len(), limit, "the receiver saw a request over its limit");
            }
            let event = if index == 0 { answer_requests(&mut receiver, event) } else { Some(event) };
            match (index, event) {
                // Not emitted by libp2p 0.57 for streams that fail while being read, but
                // harmless if a later release does.
                (
                    0,
                    Some(SwarmEvent::Behaviour(BehaviourEvent::Sync(SyncEvent::InboundFailure {
                        peer,
                        error: InboundFailure::Io(_),
                        ..
                    }))),
                ) => {
                    assert!(peer == generous_id || peer == strict_id);
                }
                (
                    0,
                    Some(SwarmEvent::Behaviour(BehaviourEvent::Sync(SyncEvent::ResponseSent {
                        peer, ..
                    }))),
                ) => {
                    assert_eq!(peer, generous_id);
                }
                (
                    1,
                    Some(SwarmEvent::Behaviour(BehaviourEvent::Sync(SyncEvent::OutboundFailure {
                        request_id,
                        error,
                        ..
                    }))),
                ) => {
                    assert_eq!(request_id, too_large);
                    // The receiver dropped the stream at once: a timeout would mean it hung on.
                    assert!(matches!(error, OutboundFailure::Io(_)), "unexpected failure {error:?}");
                    outbound_failed = true;
                    // Now that the connection is up, a request at the limit must go through.
                    at_limit = Some(generous.behaviour_mut().sync.send_request(&receiver_id, payload(limit)));
                }
                (
                    1,
                    Some(SwarmEvent::Behaviour(BehaviourEvent::Sync(SyncEvent::Message {
                        message: Message::Response { request_id, response },
                        ..
                    }))),
                ) => {
                    assert_eq!(Some(request_id), at_limit, "the oversized request got a response");
                    assert_eq!(response, b"got 1024 bytes");
                    at_limit_answered = true;
                }
                (
                    2,
                    Some(SwarmEvent::Behaviour(BehaviourEvent::Sync(SyncEvent::OutboundFailure {
                        request_id,
                        error,
                        ..
                    }))),
                ) => {
                    assert_eq!(request_id, refused_locally);
                    let OutboundFailure::Io(error) = error else {
                        panic!("unexpected outbound failure {error:?}")
                    };
                    assert!(is_too_large(&error, limit), "unexpected error {error}");
                    strict_refused = true;
                }
                (_, Some(SwarmEvent::Behaviour(BehaviourEvent::Sync(event)))) => {
                    panic!("unexpected sync event {event:?}")
                }
                _ => {}
            }
        }
    })
    .await;
}

/// The error of a read that must fail, without printing the bytes if it did not.
fn read_error(read: io::Result<Vec<u8>>) -> io::Error {
    match read {
        Ok(bytes) => panic!("read {} bytes where an error was due", bytes.len()),
        Err(error) => error,
    }
}

#[tokio::test]
async fn the_codec_bounds_messages_and_refuses_empty_ones() {
    let mut codec = WireCodec::new(16);

    let mut written = Cursor::new(Vec::new());
    codec
        .write_response(&SYNC_PROTOCOL, &mut written, vec![1; RESPONSE_BYTES_MAX])
        .await
        .expect("at the limit");
    let read = codec.read_response(&SYNC_PROTOCOL, &mut Cursor::new(written.into_inner())).await;
    assert_eq!(read.expect("at the limit").len(), RESPONSE_BYTES_MAX);

    let error = codec
        .write_response(&SYNC_PROTOCOL, &mut Cursor::new(Vec::new()), vec![1; RESPONSE_BYTES_MAX + 1])
        .await
        .expect_err("over the limit");
    assert!(is_too_large(&error, RESPONSE_BYTES_MAX), "{error}");
    let error = read_error(
        codec.read_response(&SYNC_PROTOCOL, &mut Cursor::new(vec![1; RESPONSE_BYTES_MAX + 1])).await,
    );
    assert!(is_too_large(&error, RESPONSE_BYTES_MAX), "{error}");

    // An empty stream is what a peer that gave up leaves us, so no message may be empty.
    let error = read_error(codec.read_response(&SYNC_PROTOCOL, &mut Cursor::new(Vec::new())).await);
    assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    let error = read_error(codec.read_request(&SYNC_PROTOCOL, &mut Cursor::new(Vec::new())).await);
    assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    codec.write_response(&SYNC_PROTOCOL, &mut Cursor::new(Vec::new()), Vec::new()).await.expect_err("empty");
    codec.write_request(&SYNC_PROTOCOL, &mut Cursor::new(Vec::new()), Vec::new()).await.expect_err("empty");

    let request =
        codec.read_request(&SYNC_PROTOCOL, &mut Cursor::new(vec![5; 16])).await.expect("at the limit");
    assert_eq!(request, vec![5; 16]);
    let error = read_error(codec.read_request(&SYNC_PROTOCOL, &mut Cursor::new(vec![5; 17])).await);
    assert!(is_too_large(&error, 16), "{error}");
}

#[test]
fn read_psk_file_reads_swarm_keys_and_names_the_file_when_it_cannot() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = PreSharedKey::new(core::array::from_fn(|i| i as u8 * 7));
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write key file");
        path
    };

    let path = write("good.key", &key.to_key_file());
    assert_eq!(read_psk_file(&path).expect("valid key file"), key);
    // Windows line endings, upper-case digits, stray spaces and a trailing blank line are fine.
    let hex: String = key.to_key_file().lines().nth(2).expect("key line").to_uppercase();
    let path = write("crlf.key", &format!("/key/swarm/psk/1.0.0/\r\n/base16/\r\n {hex} \r\n\r\n"));
    assert_eq!(read_psk_file(&path).expect("valid key file"), key);

    let good_hex = "00".repeat(32);
    let cases = [
        ("header.key", format!("/key/swarm/psk/2.0.0/\n/base16/\n{good_hex}\n"), "first line"),
        ("encoding.key", format!("/key/swarm/psk/1.0.0/\n/base64/\n{good_hex}\n"), "second line"),
        ("short.key", format!("/key/swarm/psk/1.0.0/\n/base16/\n{}\n", "ab".repeat(31)), "62 characters"),
        ("long.key", format!("/key/swarm/psk/1.0.0/\n/base16/\n{}\n", "ab".repeat(33)), "66 characters"),
        (
            "nothex.key",
            format!("/key/swarm/psk/1.0.0/\n/base16/\n{}zz\n", "ab".repeat(31)),
            "not a hex digit",
        ),
        ("lines.key", "/key/swarm/psk/1.0.0/\n/base16/\n".to_owned(), "2 line(s)"),
        (
            "trailing.key",
            format!("/key/swarm/psk/1.0.0/\n/base16/\n{good_hex}\n\nmore\n"),
            "line 5 has content",
        ),
    ];
    for (name, text, says) in cases {
        let path = write(name, &text);
        let error = read_psk_file(&path).expect_err(name);
        assert!(matches!(error, NetError::PskFileInvalid { .. }), "{name}: {error:?}");
        let message = error.to_string();
        assert!(
            message.contains(&path.display().to_string()),
            "{name}: message does not name the file: {message}"
        );
        assert!(message.contains(says), "{name}: message does not say {says:?}: {message}");
    }

    let path = write(
        "nothex2.key",
        &format!("/key/swarm/psk/1.0.0/\n/base16/\n{}g{}\n", "0".repeat(10), "0".repeat(53)),
    );
    let Err(NetError::PskFileInvalid { problem, .. }) = read_psk_file(&path) else {
        panic!("non-hex accepted")
    };
    assert_eq!(problem, PskFileProblem::NotHex { found: 'g', position: 11 });

    let missing = dir.path().join("missing.key");
    let error = read_psk_file(&missing).expect_err("missing file");
    assert!(
        matches!(&error, NetError::PskFileRead { source, .. } if source.kind() == io::ErrorKind::NotFound)
    );
    assert!(error.to_string().contains(&missing.display().to_string()), "{error}");
}
