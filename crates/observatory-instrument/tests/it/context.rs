//! Headers in and out: the W3C rules for `traceparent` and `tracestate`, our baggage
//! member, pass-through of other members, and sizes.

use http::HeaderMap;
use observatory_instrument::baggage::{CONTEXT_BYTES_MAX, FLOWS_MAX};
use observatory_instrument::{Context, Flow, MessageHeaders, ServiceName, TraceParent, extract};

const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    map
}

#[test]
fn traceparent_follows_the_w3c_rules() {
    // (value, taken?)
    let cases: &[(&str, bool)] = &[
        (VALID, true),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", true),
        // Upper-case hex is not allowed.
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01", false),
        // All-zero ids.
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", false),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false),
        // Version ff is forbidden; version 00 has exactly 55 characters.
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", false),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1", false),
        // A future version may have more, after a dash.
        ("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-will-be-like", true),
        ("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01what", false),
        ("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true),
        // Wrong separators, non-hex, short ids.
        ("00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01", false),
        ("00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", false),
        ("00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01xx", false),
        ("0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-.1", false),
        ("", false),
    ];
    for (value, taken) in cases {
        let incoming = extract(&headers(&[("traceparent", value)]));
        assert_eq!(incoming.has_context(), *taken, "{value}");
        if *taken {
            assert_eq!(
                incoming.context.trace.trace_id.to_string(),
                &value[3..35],
                "{value}: the trace goes on"
            );
            assert_ne!(incoming.context.trace.span_id.to_string(), &value[36..52], "{value}: a new span");
            assert_eq!(incoming.parent.unwrap().to_string(), &value[36..52]);
        } else {
            assert_ne!(incoming.context.trace.trace_id.to_string(), value.get(3..35).unwrap_or(""));
        }
    }
}

#[test]
fn two_traceparent_headers_start_a_new_trace() {
    let incoming = extract(&headers(&[("traceparent", VALID), ("traceparent", VALID)]));
    assert!(!incoming.has_context());
    assert!(incoming.traceparent_present);
}

#[test]
fn sent_traceparent_is_version_00_with_only_known_flags() {
    let incoming =
        extract(&headers(&[("traceparent", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff")]));
    let mut out = HeaderMap::new();
    let sent = incoming.context.inject("svc", 1, &mut out);
    let value = out.get("traceparent").unwrap().to_str().unwrap();
    assert_eq!(
        value,
        format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-03", sent.span_id),
        "sampled and random"
    );
    assert_eq!(TraceParent::parse(value.as_bytes()).unwrap().span_id, sent.span_id);
}

#[test]
fn tracestate_is_passed_on_valid_or_dropped_whole() {
    let cases: &[(&[&str], Option<&str>)] = &[
        (&["foo=1,bar=2"], Some("foo=1,bar=2")),
        // Several headers are one list; empty members and whitespace go.
        (&["foo=1 ,, ", "\tbar=2"], Some("foo=1,bar=2")),
        (&["tenant@vendor=x"], Some("tenant@vendor=x")),
        // A key that comes again is dropped after its first member.
        (&["foo=1,foo=2", "bar=3"], Some("foo=1,bar=3")),
        // A bad key, a bad value, too many members: dropped whole.
        (&["Foo=1"], None),
        (&["@vendor=1"], None),
        (&["foo=bar=baz"], None),
        (&["foo=1,novalue"], None),
    ];
    for (values, expected) in cases {
        let mut pairs = vec![("traceparent", VALID)];
        pairs.extend(values.iter().map(|v| ("tracestate", *v)));
        let incoming = extract(&headers(&pairs));
        assert_eq!(incoming.context.tracestate(), *expected, "{values:?}");
        let mut out = HeaderMap::new();
        incoming.context.inject("svc", 1, &mut out);
        assert_eq!(out.get("tracestate").map(|v| v.to_str().unwrap()), *expected, "{values:?} sent");
    }
    let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
    let many = many.join(",");
    let incoming = extract(&headers(&[("traceparent", VALID), ("tracestate", &many)]));
    assert_eq!(incoming.context.tracestate(), None, "33 members");
    // Without a valid traceparent there is no tracestate to continue.
    let incoming = extract(&headers(&[("traceparent", "garbage"), ("tracestate", "foo=1")]));
    assert_eq!(incoming.context.tracestate(), None);
}

#[test]
fn our_member_names_the_sender_and_others_pass_through_untouched() {
    let sender = ServiceName::new("check out/ü~%,").unwrap();
    let context = Context::new_root().with_flow(Flow::new("checkout-page").unwrap());
    let mut out = HeaderMap::new();
    let sent = context.inject(sender.encoded(), 1_764_700_000_123_456, &mut out);
    let incoming = extract(&out);
    let hop = incoming.hop.as_ref().expect("our member read back");
    assert_eq!(&*hop.node, "check out/ü~%,");
    assert_eq!(hop.sent_at_us, 1_764_700_000_123_456);
    assert_eq!(hop.hop_id, sent.hop_id);
    assert_eq!(incoming.context.flows, context.flows);
    assert_eq!(incoming.context.trace.trace_id, context.trace.trace_id);

    let foreign = "userId=alice, isProduction=false;p=1 , tenant=a%20b";
    // The hop is the low 32 bits of the traceparent's span id (00f067aa0ba902b7).
    let incoming =
        extract(&headers(&[("traceparent", VALID), ("baggage", foreign), ("baggage", "obs=x~1~ba902b7")]));
    assert_eq!(incoming.hop.as_ref().map(|h| &*h.node), Some("x"));
    assert_eq!(incoming.context.foreign_baggage(), Some("userId=alice,isProduction=false;p=1,tenant=a%20b"));
    let mut out = HeaderMap::new();
    incoming.context.inject("me", 2, &mut out);
    let sent = out.get("baggage").unwrap().to_str().unwrap();
    assert!(sent.starts_with("obs=me~2~"), "{sent}");
    assert!(sent.ends_with(",userId=alice,isProduction=false;p=1,tenant=a%20b"), "{sent}");
    // One `obs` member only: the one we write replaces the caller's.
    assert_eq!(sent.matches("obs=").count(), 1, "{sent}");
}

#[test]
fn a_broken_member_is_dropped_and_the_rest_kept() {
    for bad in ["obs=", "obs=x", "obs=x~notanumber~1", "obs=x~1~zz", "obs=%ff~1~1", "obs=x~1~123456789"] {
        let incoming = extract(&headers(&[("traceparent", VALID), ("baggage", &format!("{bad},keep=1"))]));
        assert_eq!(incoming.hop, None, "{bad}");
        assert_eq!(incoming.context.foreign_baggage(), Some("keep=1"), "{bad}");
        assert!(incoming.has_context());
    }
    // Labels we cannot read are dropped, the member stays.
    let incoming = extract(&headers(&[("baggage", "obs=x~1~1~ok~bad label~!")]));
    let flows = &incoming.context.flows;
    assert_eq!(flows.labels().iter().map(|f| f.as_str()).collect::<Vec<_>>(), ["ok"]);
    assert!(flows.overflowed());
}

#[test]
fn context_is_small_typically_and_capped() {
    let typical = ServiceName::new("checkout").unwrap();
    let mut out = HeaderMap::new();
    Context::new_root().inject(typical.encoded(), 1_764_700_000_123_456, &mut out);
    let size = |out: &HeaderMap| out.get("traceparent").unwrap().len() + out.get("baggage").unwrap().len();
    assert!(size(&out) <= 100, "typical context is {} bytes", size(&out));

    // The largest: the longest name that encodes largest, every flow at full length.
    // 'é' is six bytes percent-encoded: 25 of them fill the 150 bytes a name may take.
    let worst_name: String = std::iter::repeat_n('é', 25).collect();
    let worst = ServiceName::new(&worst_name).unwrap();
    let mut context = Context::new_root();
    for i in 0..(FLOWS_MAX + 3) {
        context = context.with_flow(Flow::new(&format!("{i:0>32}")).unwrap());
    }
    assert!(context.flows.overflowed());
    let mut out = HeaderMap::new();
    context.inject(worst.encoded(), u64::MAX, &mut out);
    assert!(size(&out) <= CONTEXT_BYTES_MAX, "largest context is {} bytes", size(&out));
    assert!(ServiceName::new(&"é".repeat(26)).is_err(), "names past 150 bytes encoded are refused");
    assert!(ServiceName::new(&"a".repeat(101)).is_err(), "names past 100 bytes are refused");
}

#[test]
fn message_headers_carry_the_same_context() {
    let context = Context::new_root().with_flow(Flow::new("tenant=acme").unwrap());
    let mut message = MessageHeaders::default();
    message.0.push(("other".into(), b"kept".to_vec()));
    context.inject("producer", 5, &mut message);
    context.inject("producer", 6, &mut message);
    assert_eq!(message.0.iter().filter(|(k, _)| k == "traceparent").count(), 1, "a second send replaces");
    let incoming = extract(&message);
    assert!(incoming.has_context());
    assert_eq!(incoming.hop.unwrap().sent_at_us, 6);
    assert_eq!(incoming.context.flows, context.flows);
    assert!(message.0.contains(&("other".into(), b"kept".to_vec())));
}

#[test]
fn a_member_passed_on_by_a_service_without_the_library_names_nobody() {
    // What a service without the library does: it keeps the trace and the baggage as they
    // came, but sends a span id of its own.
    let mut first = HeaderMap::new();
    Context::new_root().with_flow(Flow::new("tenant=acme").unwrap()).inject("web", 7, &mut first);
    let direct = extract(&first);
    assert_eq!(direct.hop.as_ref().map(|h| &*h.node), Some("web"));
    assert!(!direct.member_forwarded);

    let mut forwarded = first.clone();
    let traceparent = forwarded.get("traceparent").unwrap().to_str().unwrap().to_string();
    let own_span = format!("{}{}{}", &traceparent[..36], "1111111111111111", &traceparent[52..]);
    forwarded.insert("traceparent", own_span.parse().unwrap());
    // OpenTelemetry's baggage propagator percent-encodes values it passes on.
    let bag = forwarded.get("baggage").unwrap().to_str().unwrap().replace('=', "%3D").replacen("%3D", "=", 1);
    forwarded.insert("baggage", bag.parse().unwrap());
    let incoming = extract(&forwarded);
    assert!(incoming.has_context());
    assert_eq!(incoming.hop, None, "web did not send this request");
    assert!(incoming.member_forwarded);
    assert_eq!(incoming.context.flows, direct.context.flows, "the flows hold: {bag}");
    assert_eq!(incoming.context.trace.trace_id, direct.context.trace.trace_id);
}

#[test]
fn what_is_sent_never_carries_leftovers_or_unsendable_bytes() {
    // A tracestate copied on from another request goes when the context has none.
    let mut out = headers(&[("tracestate", "old=1")]);
    Context::new_root().inject("svc", 1, &mut out);
    assert!(out.get("tracestate").is_none());
    // A member with a raw control byte (possible in message headers) is dropped, the rest kept.
    let mut message = MessageHeaders::default();
    message.0.push(("baggage".into(), b"bad=a\x01b,good=1".to_vec()));
    let incoming = extract(&message);
    assert_eq!(incoming.context.foreign_baggage(), Some("good=1"));
    let mut out = HeaderMap::new();
    incoming.context.inject("svc", 1, &mut out);
    assert!(out.get("baggage").unwrap().to_str().unwrap().ends_with(",good=1"));
    // Many long labels are reported as those that fit the peer's name limit.
    let mut context = Context::new_root();
    for i in 0..FLOWS_MAX {
        context = context.with_flow(Flow::new(&format!("{i}{}", "x".repeat(31))).unwrap());
    }
    let reported = context.flows.reported().unwrap();
    assert!(reported.len() <= observatory_instrument::baggage::REPORTED_FLOW_BYTES_MAX, "{reported}");
    assert_eq!(reported.split(',').count(), 3, "{reported}");
}
