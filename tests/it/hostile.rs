//! Hostile and misbehaving clients against a real peer over real sockets.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use observatory_e2e::{Peer, event, now_ms};
use serde_json::json;

#[test]
fn clients_trickling_bodies_a_byte_at_a_time_do_not_block_ingest() {
    let peer = Peer::start();
    let addr = peer.startup().http.clone();
    // More slow clients than the 32 ingest places: each sends its headers, then a byte of
    // its 1,000-byte body every 300 ms.
    let slow: Vec<std::thread::JoinHandle<String>> = (0..40)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(&addr).expect("connecting");
                stream.set_read_timeout(Some(Duration::from_secs(3))).expect("a read timeout");
                let head = "POST /api/v1/events HTTP/1.1\r\nHost: peer\r\nContent-Type: application/json\r\n\
                            Content-Length: 1000\r\nConnection: close\r\n\r\n";
                stream.write_all(head.as_bytes()).expect("writing the head");
                let started = Instant::now();
                while started.elapsed() < Duration::from_secs(3) {
                    if stream.write_all(b" ").is_err() {
                        break; // the peer closed it
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
                // The answer, as far as it came (the peer may keep the connection open).
                let mut answer = Vec::new();
                let _ = stream.read_to_end(&mut answer);
                String::from_utf8_lossy(&answer).into_owned()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // A normal client meanwhile: answered at once, not after the slow ones' 30 s timeout.
    let started = Instant::now();
    let answer = peer.post_ndjson(&[event("web", "api", json!({"ts": now_ms() - 1_000}))]);
    let took = started.elapsed();
    assert_eq!(answer["accepted"], 1, "{answer}");
    assert!(took < Duration::from_secs(5), "a normal ingest waited {took:?} behind the slow clients");
    for client in slow {
        let answer = client.join().expect("a slow client");
        assert!(answer.starts_with("HTTP/1.1 408"), "a slow body is refused: {answer}");
        assert!(answer.contains("http.body_min_rate"), "{answer}");
    }
}

#[test]
fn idle_connections_beyond_the_cap_are_closed_and_idle_ones_time_out() {
    let peer = Peer::builder()
        .env("OBSERVATORY_HTTP__CONNECTIONS_MAX", "64")
        .env("OBSERVATORY_HTTP__HEADER_READ_TIMEOUT", "1s")
        .spawn();
    let addr = peer.startup().http.clone();
    // Two hundred connections that never send a byte.
    let idle: Vec<TcpStream> = (0..200).map(|_| TcpStream::connect(&addr).expect("connecting")).collect();
    // Every one is closed by the peer: those beyond the cap at once, the others once the
    // header timeout has passed without a request head.
    for mut stream in idle {
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("a read timeout");
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("an idle connection was not closed: {other:?}"),
        }
    }
    let status = peer.status();
    let ingest = &status["ingest"];
    // More came at once than the 64 places: some were refused at once.
    assert!(ingest["connections_refused"].as_u64().is_some_and(|n| n > 0), "{status}");
    // The peer still answers, and holds no connection but the one asking.
    let answer = peer.post_ndjson(&[event("web", "api", json!({"ts": now_ms() - 1_000}))]);
    assert_eq!(answer["accepted"], 1, "{answer}");
    assert!(peer.status()["ingest"]["connections_open"].as_u64().is_some_and(|n| n <= 2), "{status}");
}
