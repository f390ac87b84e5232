//! The baggage laws of Tracing Plane for flow labels: join is commutative, associative and
//! idempotent, branch then join is the identity, trimming is deterministic, and what is
//! sent is what is received.

use http::HeaderMap;
use observatory_instrument::baggage::FLOWS_MAX;
use observatory_instrument::{Context, Flow, Flows, extract};
use proptest::prelude::*;

fn flow() -> impl Strategy<Value = Flow> {
    // A small alphabet makes overlaps between sets likely.
    "[a-c][a-c0-9=:-]{0,5}".prop_map(|s| Flow::new(&s).unwrap())
}

fn flows() -> impl Strategy<Value = Flows> {
    (prop::collection::vec(flow(), 0..(FLOWS_MAX + 6)), any::<bool>()).prop_map(|(labels, overflowed)| {
        let flows = Flows::of(labels);
        if overflowed {
            // Overflowed sets occur: joined with a full set they carry the mark.
            let full = Flows::of((0..=FLOWS_MAX).map(|i| Flow::new(&format!("0{i:02}")).unwrap()));
            flows.join(&full)
        } else {
            flows
        }
    })
}

proptest! {
    #[test]
    fn join_is_commutative(a in flows(), b in flows()) {
        prop_assert_eq!(a.join(&b), b.join(&a));
    }

    #[test]
    fn join_is_associative(a in flows(), b in flows(), c in flows()) {
        prop_assert_eq!(a.join(&b).join(&c), a.join(&b.join(&c)));
    }

    #[test]
    fn join_is_idempotent(a in flows()) {
        prop_assert_eq!(a.join(&a), a);
    }

    #[test]
    fn branch_then_join_is_the_identity(a in flows()) {
        let (left, right) = a.branch();
        prop_assert_eq!(left.join(&right), a);
    }

    #[test]
    fn trimming_is_deterministic(labels in prop::collection::vec(flow(), 0..20), seed in any::<u64>()) {
        // Any insertion order gives the same set; the kept labels are the smallest.
        let mut shuffled = labels.clone();
        let n = shuffled.len();
        for i in 0..n {
            let j = (seed.rotate_left(i as u32) as usize) % n;
            shuffled.swap(i, j);
        }
        let mut one_by_one = Flows::new();
        for label in &shuffled {
            one_by_one.insert(label.clone());
        }
        let at_once = Flows::of(labels.clone());
        prop_assert_eq!(&one_by_one, &at_once);
        let mut distinct = labels.clone();
        distinct.sort();
        distinct.dedup();
        prop_assert_eq!(at_once.overflowed(), distinct.len() > FLOWS_MAX);
        distinct.truncate(FLOWS_MAX);
        prop_assert_eq!(at_once.labels(), &distinct[..]);
    }

    #[test]
    fn what_is_sent_is_received(a in flows()) {
        let mut context = Context::new_root();
        context.flows = a.clone();
        let mut headers = HeaderMap::new();
        context.inject("svc", 1, &mut headers);
        prop_assert_eq!(extract(&headers).context.flows, a);
    }
}
