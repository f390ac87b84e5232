//! The peer book on a scripted clock: what it dials when, what it tells and saves, and
//! what it forgets. Peers are numbers and an address is a string.

use observatory_sync::{BookOutput, PeerBook, PeerBookConfig};

use crate::default_book;

type Book = PeerBook<u32, String>;
type Out = BookOutput<u32, String>;

fn config() -> PeerBookConfig {
    PeerBookConfig {
        redial_min_ms: 1_000,
        redial_max_ms: 8_000,
        forget_after_ms: Some(600_000),
        forgotten_max: 16,
        known_max: 64,
        gossip_interval_ms: 10_000,
        save_interval_ms: 5_000,
    }
}

fn drain(book: &mut Book) -> Vec<Out> {
    std::iter::from_fn(|| book.poll_output()).collect()
}

fn addr(peer: u32) -> String {
    format!("/ip4/10.0.0.{peer}/tcp/7000")
}

/// Ticks every 100 ms from `from_ms` to `to_ms` and returns when each peer was dialled.
fn dials_between(book: &mut Book, from_ms: i64, to_ms: i64) -> Vec<(i64, u32)> {
    let mut dials = Vec::new();
    let mut now = from_ms;
    while now <= to_ms {
        book.handle_tick(now);
        for output in drain(book) {
            if let BookOutput::Dial { peer, .. } = output {
                dials.push((now, peer));
            }
        }
        now += 100;
    }
    dials
}

#[test]
fn the_defaults_are_the_documented_ones() {
    let book = default_book();
    assert_eq!((book.redial_min_ms, book.redial_max_ms), (1_000, 60_000));
    assert_eq!((book.gossip_interval_ms, book.save_interval_ms), (10_000, 5_000));
    assert_eq!(book.forget_after_ms, None, "peers are kept for ever unless told otherwise");
}

#[test]
fn an_unreachable_peer_is_redialled_with_doubling_backoff_up_to_the_cap() {
    let mut book = Book::new(config(), 0);
    book.learn(0, 1, vec![addr(1)], false);
    let dials = dials_between(&mut book, 0, 40_000);
    let times: Vec<i64> = dials.iter().map(|(t, _)| *t).collect();
    // At once, then after 1, 2, 4 and 8 s, then every 8 s (the cap).
    assert_eq!(times, [0, 1_000, 3_000, 7_000, 15_000, 23_000, 31_000, 39_000]);
    assert!(dials.iter().all(|(_, peer)| *peer == 1));
}

#[test]
fn a_connection_resets_the_backoff_and_a_lost_one_is_redialled_after_the_first_delay() {
    let mut book = Book::new(config(), 0);
    book.learn(0, 1, vec![addr(1)], false);
    dials_between(&mut book, 0, 20_000);
    assert!(book.connected(20_050, 1, Vec::new(), 1));
    assert!(book.is_connected(&1));
    assert!(dials_between(&mut book, 20_100, 30_000).is_empty(), "a connected peer is not dialled");
    book.disconnected(30_050, &1, 0);
    let dials = dials_between(&mut book, 30_100, 34_000);
    assert_eq!(dials.iter().map(|(t, _)| *t).collect::<Vec<_>>(), [31_100, 32_100]);
}

#[test]
fn a_bootstrap_address_is_dialled_until_its_peer_is_reached() {
    let mut book = Book::new(config(), 0);
    book.add_bootstrap(0, "/dns4/obs-1/tcp/7000".into());
    book.handle_tick(0);
    assert_eq!(drain(&mut book), [BookOutput::DialAddress("/dns4/obs-1/tcp/7000".into())]);
    book.handle_tick(500);
    assert!(!drain(&mut book).iter().any(|o| matches!(o, BookOutput::DialAddress(_))), "backing off");
    assert!(book.bootstrap_reached(&"/dns4/obs-1/tcp/7000".to_string()));
    assert!(book.connected(600, 7, vec!["/ip4/10.0.0.7/tcp/7000".into()], 1));
    book.handle_tick(10_000);
    let outputs = drain(&mut book);
    assert!(!outputs.iter().any(|o| matches!(o, BookOutput::DialAddress(_))), "{outputs:?}");
    assert_eq!(book.addresses(&7).map(|a| a.len()), Some(1), "its peer is known by id now");
    assert!(!book.bootstrap_reached(&"/dns4/obs-1/tcp/7000".to_string()));
}

#[test]
fn a_shunned_peer_is_not_dialled_and_is_disconnected_when_it_connects() {
    let mut book = Book::new(config(), 0);
    book.learn(0, 1, vec![addr(1)], false);
    book.handle_tick(0);
    drain(&mut book);
    book.shun(100, 1, 60_000);
    assert!(!book.connected(200, 1, Vec::new(), 1), "refused while shunned");
    assert_eq!(drain(&mut book), [BookOutput::Disconnect(1)]);
    book.disconnected(200, &1, 0);
    let dials = dials_between(&mut book, 300, 70_000);
    assert_eq!(
        dials.first().map(|(t, _)| *t),
        Some(60_000),
        "dialled again once the shun is over: {dials:?}"
    );
    assert!(book.connected(70_100, 1, Vec::new(), 1));
}

#[test]
fn connected_peers_are_told_the_book_with_our_own_addresses_and_gossip_teaches_new_peers() {
    let mut book = Book::new(config(), 0);
    book.set_local_addrs(vec![addr(0)]);
    book.learn(0, 1, vec![addr(1)], false);
    book.learn(0, 2, vec![addr(2)], false);
    assert!(book.connected(0, 1, Vec::new(), 1));
    book.handle_tick(0);
    let gossip: Vec<Out> =
        drain(&mut book).into_iter().filter(|o| matches!(o, BookOutput::Gossip { .. })).collect();
    assert_eq!(
        gossip,
        [BookOutput::Gossip {
            to: 1,
            peers: vec![(1, vec![addr(1)]), (2, vec![addr(2)]), (0, vec![addr(0)])]
        }],
        "only connected peers are told"
    );
    book.handle_tick(5_000);
    assert!(
        !drain(&mut book).iter().any(|o| matches!(o, BookOutput::Gossip { .. })),
        "not before the interval"
    );
    let new = book.handle_gossip(5_100, vec![(0, vec![addr(0)]), (2, vec![addr(2)]), (3, vec![addr(3)])]);
    assert_eq!(new, [3], "ourselves and known peers are not new");
    book.handle_tick(5_200);
    let dialled: Vec<u32> = drain(&mut book)
        .into_iter()
        .filter_map(|o| if let BookOutput::Dial { peer, .. } = o { Some(peer) } else { None })
        .collect();
    assert!(dialled.contains(&3), "a peer learned from gossip is dialled: {dialled:?}");
}

#[test]
fn the_book_is_saved_when_it_changed_and_all_of_it_on_the_way_out() {
    let mut book = Book::new(config(), 0);
    book.learn(0, 1, vec![addr(1)], false);
    book.handle_tick(0);
    let saves: Vec<Out> = drain(&mut book).into_iter().filter(|o| matches!(o, BookOutput::Save(_))).collect();
    assert_eq!(saves, [BookOutput::Save(vec![(1, vec![addr(1)])])]);
    book.handle_tick(5_000);
    assert!(!drain(&mut book).iter().any(|o| matches!(o, BookOutput::Save(_))), "nothing changed");
    book.learn(5_100, 1, vec![addr(11)], false);
    book.handle_tick(10_000);
    let saves: Vec<Out> = drain(&mut book).into_iter().filter(|o| matches!(o, BookOutput::Save(_))).collect();
    assert_eq!(saves, [BookOutput::Save(vec![(1, vec![addr(1), addr(11)])])]);
    book.save_all();
    assert_eq!(drain(&mut book), [BookOutput::Save(vec![(1, vec![addr(1), addr(11)])])]);
}

#[test]
fn a_peer_gone_too_long_is_forgotten_and_gossip_does_not_bring_it_back() {
    let mut book = Book::new(config(), 0);
    book.learn(0, 1, vec![addr(1)], false);
    book.learn_pinned(0, 2, vec![addr(2)]);
    book.learn(0, 3, vec![addr(3)], false);
    assert!(book.connected(0, 3, Vec::new(), 1));
    dials_between(&mut book, 0, 599_900);
    assert!(book.addresses(&1).is_some(), "not yet");
    book.handle_tick(600_000);
    let outputs = drain(&mut book);
    assert!(outputs.contains(&BookOutput::Forgotten(1)), "{outputs:?}");
    assert!(!outputs.contains(&BookOutput::Forgotten(2)), "a bootstrap peer is never forgotten");
    assert!(!outputs.contains(&BookOutput::Forgotten(3)), "a connected peer is not forgotten");
    assert!(book.addresses(&1).is_none());
    let saved: Vec<&Out> = outputs.iter().filter(|o| matches!(o, BookOutput::Save(_))).collect();
    let [BookOutput::Save(peers)] = &saved[..] else { panic!("one save: {saved:?}") };
    assert!(peers.contains(&(1, Vec::new())), "the forgotten peer is deleted from the data dir: {peers:?}");
    assert!(book.handle_gossip(606_000, vec![(1, vec![addr(1)])]).is_empty());
    assert!(book.addresses(&1).is_none(), "gossip about a forgotten peer is ignored");
    assert!(book.connected(607_000, 1, vec![addr(1)], 1), "a connection brings it back");
    assert!(book.addresses(&1).is_some());
}

#[test]
fn poll_timeout_says_when_the_next_dial_is_due() {
    let mut book = Book::new(config(), 0);
    assert_eq!(book.poll_timeout(), i64::MIN, "before the first tick");
    book.learn(0, 1, vec![addr(1)], false);
    book.handle_tick(0);
    drain(&mut book);
    assert_eq!(book.poll_timeout(), 1_000);
    book.handle_tick(1_000);
    drain(&mut book);
    assert_eq!(book.poll_timeout(), 3_000);
}

#[test]
fn gossip_cannot_fill_the_book_beyond_its_bound_but_connections_always_count() {
    let mut book = Book::new(PeerBookConfig { known_max: 3, ..config() }, 0);
    let listed: Vec<(u32, Vec<String>)> = (1..=10).map(|p| (p, vec![addr(p)])).collect();
    assert_eq!(book.handle_gossip(0, listed), [1, 2, 3]);
    assert!(book.addresses(&4).is_none(), "beyond known_max");
    assert!(book.connected(10, 9, vec![addr(9)], 1), "a connection is always taken");
    assert!(book.is_connected(&9));
    book.learn(20, 8, vec![addr(8)], true);
    assert!(book.addresses(&8).is_some(), "found on the LAN to be dialled now");
}
