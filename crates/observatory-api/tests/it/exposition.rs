//! `GET /metrics` (Prometheus text format) and the Zipkin and Jaeger dependency APIs.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::{TestPeer, default_limits, now_ms};

/// One sample of the text format.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub(crate) name: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) value: f64,
}

/// A parsed exposition: the `# TYPE` of every family and the samples in order.
#[derive(Debug, Default)]
pub(crate) struct Exposition {
    pub(crate) types: BTreeMap<String, String>,
    helps: BTreeMap<String, String>,
    pub(crate) samples: Vec<Sample>,
}

impl Exposition {
    /// Parses the text format strictly enough to catch what Prometheus would refuse:
    /// label syntax and escapes, a TYPE line before a family's samples, each family's
    /// samples together.
    fn parse(text: &str) -> Exposition {
        let mut exposition = Exposition::default();
        let mut families_seen: Vec<String> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP name text");
                exposition.helps.insert(name.into(), help.into());
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert!(exposition.types.insert(name.into(), kind.into()).is_none(), "{name} typed twice");
                continue;
            }
            assert!(!line.is_empty() && !line.starts_with('#'), "unexpected line {line:?}");
            let sample = parse_sample(line);
            let family = exposition.family_of(&sample.name);
            assert!(exposition.helps.contains_key(&family), "{} has no HELP and TYPE before it", sample.name);
            if families_seen.last() != Some(&family) {
                assert!(!families_seen.contains(&family), "the samples of {family} are not together");
                families_seen.push(family);
            }
            exposition.samples.push(sample);
        }
        exposition
    }

    /// The family a sample belongs to (a histogram's `_bucket`, `_sum`, `_count`).
    fn family_of(&self, name: &str) -> String {
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix)
                && self.types.get(base).is_some_and(|t| t == "histogram")
            {
                return base.to_string();
            }
        }
        name.to_string()
    }

    /// The value of the one sample of `name` with exactly `labels`.
    pub(crate) fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let wanted: BTreeMap<String, String> =
            labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let found: Vec<&Sample> =
            self.samples.iter().filter(|s| s.name == name && s.labels == wanted).collect();
        assert_eq!(found.len(), 1, "one sample {name}{wanted:?}; samples: {:#?}", self.samples);
        found[0].value
    }

    /// Every sample named `name`.
    pub(crate) fn named(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.name == name).collect()
    }
}

/// `name{label="value",...} number`, undoing the escapes of label values.
fn parse_sample(line: &str) -> Sample {
    let bytes = line.as_bytes();
    let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("no value in {line:?}"));
    let name = &line[..name_end];
    assert!(
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "bad metric name in {line:?}"
    );
    let mut at = name_end;
    let mut labels = BTreeMap::new();
    if bytes[at] == b'{' {
        at += 1;
        while bytes.get(at) != Some(&b'}') {
            let eq = at + line[at..].find("=\"").unwrap_or_else(|| panic!("label without =\" in {line:?}"));
            let label = &line[at..eq];
            assert!(
                !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "bad label name {label:?} in {line:?}"
            );
            at = eq + 2;
            let mut value = Vec::new();
            loop {
                match bytes.get(at) {
                    None => panic!("unterminated label value in {line:?}"),
                    Some(b'\\') => {
                        value.push(match bytes.get(at + 1) {
                            Some(b'\\') => b'\\',
                            Some(b'"') => b'"',
                            Some(b'n') => b'\n',
                            other => panic!("bad escape {other:?} in {line:?}"),
                        });
                        at += 2;
                    }
                    Some(b'"') => {
                        at += 1;
                        break;
                    }
                    Some(&b) => {
                        value.push(b);
                        at += 1;
                    }
                }
            }
            let value = String::from_utf8(value).expect("UTF-8 label value");
            assert!(labels.insert(label.to_string(), value).is_none(), "label {label} twice in {line:?}");
            match bytes.get(at) {
                Some(b',') => at += 1,
                Some(b'}') => {}
                other => panic!("expected , or }} after a label value, got {other:?} in {line:?}"),
            }
        }
        at += 1;
    }
    let value =
        line[at..].strip_prefix(' ').unwrap_or_else(|| panic!("no space before the value in {line:?}"));
    let value = match value {
        "+Inf" => f64::INFINITY,
        text => text.parse().unwrap_or_else(|_| panic!("bad value {text:?} in {line:?}")),
    };
    Sample { name: name.to_string(), labels, value }
}

pub(crate) async fn metrics(peer: &TestPeer) -> (String, Exposition) {
    let request = Request::get("/metrics").body(Body::empty()).expect("request");
    let response = peer.app.clone().oneshot(request).await.expect("router answers");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers().get(header::CONTENT_TYPE).expect("a content type").clone();
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    let text = String::from_utf8(bytes.to_vec()).expect("UTF-8");
    let exposition = Exposition::parse(&text);
    (text, exposition)
}

async fn post(peer: &TestPeer, events: Value) -> Value {
    let (status, answer) = peer.post("application/json", events.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer
}

const SERVICE_GRAPH: [&str; 3] = [
    "traces_service_graph_request_total",
    "traces_service_graph_request_failed_total",
    "traces_service_graph_request_server_seconds",
];

const BUCKETS: [&str; 12] =
    ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"];

#[tokio::test]
async fn metrics_give_the_service_graph_with_exact_counts_and_buckets() {
    let peer = TestPeer::new(default_limits());
    let ts = now_ms();
    let answer = post(
        &peer,
        json!([
            {"from": "web", "to": "checkout", "ts": ts, "latency_ms": 3, "count": 2},
            {"from": "web", "to": "checkout", "ts": ts, "latency_ms": 30, "error": true},
            {"from": "web", "to": "checkout", "ts": ts, "latency_ms": 700, "context": "started"},
            {"from": "web", "to": "checkout", "ts": ts, "count": 3, "flow": "checkout-page", "context": "continued"},
            {"from": "orders", "to": "queue", "ts": ts, "kind": "messaging", "latency_ms": 12, "count": 2, "error": true},
            {"from": "orders", "to": "queue", "ts": ts},
            {"from": "checkout", "to": "db", "ts": ts, "kind": "database", "latency_ms": 0.2, "count": 5},
            {"from": "checkout", "to": "db", "ts": ts, "latency_ms": "slow"},
        ]),
    )
    .await;
    assert_eq!((answer["accepted"].as_u64(), answer["rejected"].as_u64()), (Some(7), Some(1)), "{answer}");

    let (_, m) = metrics(&peer).await;
    for name in SERVICE_GRAPH {
        assert!(m.helps.contains_key(name), "{name} has a HELP line");
    }
    assert_eq!(m.types[SERVICE_GRAPH[0]], "counter");
    assert_eq!(m.types[SERVICE_GRAPH[1]], "counter");
    assert_eq!(m.types[SERVICE_GRAPH[2]], "histogram");

    let web = [("client", "web"), ("server", "checkout"), ("connection_type", "")];
    let queue = [("client", "orders"), ("server", "queue"), ("connection_type", "messaging_system")];
    let orders_plain = [("client", "orders"), ("server", "queue"), ("connection_type", "")];
    let db = [("client", "checkout"), ("server", "db"), ("connection_type", "database")];
    let requests = |labels: &[(&str, &str)]| m.value("traces_service_graph_request_total", labels);
    let failed = |labels: &[(&str, &str)]| m.value("traces_service_graph_request_failed_total", labels);
    assert_eq!((requests(&web), failed(&web)), (7.0, 1.0));
    assert_eq!((requests(&queue), failed(&queue)), (2.0, 2.0));
    assert_eq!((requests(&orders_plain), failed(&orders_plain)), (1.0, 0.0), "kinds are separate series");
    assert_eq!((requests(&db), failed(&db)), (5.0, 0.0));
    assert_eq!(
        m.named("traces_service_graph_request_total").len(),
        4,
        "one series per edge and kind: flows and marks summed"
    );

    let buckets = |labels: &[(&str, &str)]| -> Vec<f64> {
        BUCKETS
            .iter()
            .map(|le| {
                let mut labels = labels.to_vec();
                labels.push(("le", le));
                m.value("traces_service_graph_request_server_seconds_bucket", &labels)
            })
            .collect()
    };
    let count =
        |labels: &[(&str, &str)]| m.value("traces_service_graph_request_server_seconds_count", labels);
    let sum = |labels: &[(&str, &str)]| m.value("traces_service_graph_request_server_seconds_sum", labels);
    // 3 ms twice, 30 ms, 700 ms; the three calls without latency are no samples.
    assert_eq!(buckets(&web), [2., 2., 2., 3., 3., 3., 3., 4., 4., 4., 4., 4.]);
    assert_eq!(count(&web), 4.0);
    let web_sum = sum(&web);
    assert!((web_sum - 0.736).abs() < 0.736 * 0.01, "sum within the histogram's precision: {web_sum}");
    assert_eq!(buckets(&queue), [0., 0., 2., 2., 2., 2., 2., 2., 2., 2., 2., 2.]);
    assert_eq!(count(&queue), 2.0);
    assert_eq!(buckets(&orders_plain), [0.0; 12], "an edge without latencies has empty buckets");
    assert_eq!((count(&orders_plain), sum(&orders_plain)), (0.0, 0.0));
    assert!(sum(&orders_plain).is_sign_positive(), "an empty sum reads 0, not -0");
    assert_eq!(buckets(&db), [5.0; 12]);
    // 200 µs is below 256 µs, where the histogram counts every microsecond: exact.
    assert_eq!((count(&db), sum(&db)), (5.0, 0.001));

    // The peer's own figures.
    let gauge = |name: &str| {
        assert_eq!(m.types[name], "gauge", "{name}");
        m.value(name, &[])
    };
    assert_eq!(m.types["observatory_events_ingested_total"], "counter");
    assert_eq!(m.value("observatory_events_ingested_total", &[]), 7.0);
    assert_eq!(m.value("observatory_ingest_requests_total", &[]), 1.0);
    assert_eq!(m.value("observatory_events_rejected_total", &[("reason", "invalid_latency_ms")]), 1.0);
    assert_eq!(m.named("observatory_events_rejected_total").len(), 1);
    assert_eq!(gauge("observatory_nodes"), 5.0);
    assert_eq!(gauge("observatory_edges"), 6.0, "web -> checkout in three flow and mark variants");
    assert_eq!(gauge("observatory_origins"), 1.0);
    assert!(gauge("observatory_cells") >= 4.0 * 4.0, "four edges in four resolutions at least");
    assert!(gauge("observatory_global_cells") >= 16.0);
    assert!(gauge("observatory_store_bytes") > 0.0);
    assert!(m.named("observatory_peers_known").is_empty(), "no mesh, no mesh metrics");

    // A refused request is counted by reason.
    let (status, _) = peer.post("application/json", "[{").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, m) = metrics(&peer).await;
    assert_eq!(m.value("observatory_requests_rejected_total", &[("reason", "malformed_body")]), 1.0);
}

#[tokio::test]
async fn metrics_of_an_empty_peer_have_families_but_no_service_graph_series() {
    let peer = TestPeer::new(default_limits());
    let (_, m) = metrics(&peer).await;
    for name in SERVICE_GRAPH {
        assert!(m.types.contains_key(name), "{name} is declared");
    }
    assert!(m.named("traces_service_graph_request_total").is_empty());
    assert_eq!(m.value("observatory_events_ingested_total", &[]), 0.0);
    assert_eq!(m.value("observatory_edges", &[]), 0.0);
}

#[tokio::test]
async fn label_values_are_escaped() {
    let peer = TestPeer::new(default_limits());
    let odd = r#"say "hi" \ back"#;
    post(&peer, json!([{"from": odd, "to": "b", "ts": now_ms(), "count": 3}])).await;
    let (text, m) = metrics(&peer).await;
    assert!(
        text.contains(r#"traces_service_graph_request_total{client="say \"hi\" \\ back",server="b",connection_type=""} 3"#),
        "{text}"
    );
    let labels = [("client", odd), ("server", "b"), ("connection_type", "")];
    assert_eq!(m.value("traces_service_graph_request_total", &labels), 3.0);
}

/// `(parent, child) -> (calls, errors)` of a Zipkin answer, checking its fields.
fn zipkin_links(answer: &Value) -> BTreeMap<(String, String), (u64, u64)> {
    answer
        .as_array()
        .unwrap_or_else(|| panic!("an array: {answer}"))
        .iter()
        .map(|link| {
            let fields: Vec<&str> = link.as_object().expect("an object").keys().map(String::as_str).collect();
            assert_eq!(fields, ["callCount", "child", "errorCount", "parent"], "{link}");
            let text = |k: &str| link[k].as_str().expect("text").to_string();
            let number = |k: &str| link[k].as_u64().expect("a count");
            ((text("parent"), text("child")), (number("callCount"), number("errorCount")))
        })
        .collect()
}

fn links(expected: &[(&str, &str, u64, u64)]) -> BTreeMap<(String, String), (u64, u64)> {
    expected.iter().map(|&(p, c, calls, errors)| ((p.into(), c.into()), (calls, errors))).collect()
}

#[tokio::test]
async fn zipkin_and_jaeger_dependencies_sum_the_kinds_of_each_pair() {
    let peer = TestPeer::new(default_limits());
    let now = now_ms();
    let old = now - 10 * 60 * 1000;
    post(
        &peer,
        json!([
            {"from": "web", "to": "checkout", "ts": now, "count": 4, "error": true},
            {"from": "web", "to": "checkout", "ts": now, "count": 6},
            {"from": "orders", "to": "queue", "ts": now, "kind": "messaging", "count": 2, "error": true},
            {"from": "orders", "to": "queue", "ts": now, "kind": "request", "count": 3},
            {"from": "checkout", "to": "db", "ts": now, "kind": "database"},
            {"from": "web", "to": "checkout", "ts": old, "count": 100},
            {"from": "old", "to": "gone", "ts": old},
        ]),
    )
    .await;
    let end = now + 1000;

    let (status, answer) = peer.get(&format!("/api/v2/dependencies?endTs={end}&lookback=300000")).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let recent = links(&[("checkout", "db", 1, 0), ("orders", "queue", 5, 2), ("web", "checkout", 10, 4)]);
    assert_eq!(zipkin_links(&answer), recent, "{answer}");

    // The default lookback is a day: the old events count too.
    let (status, answer) = peer.get(&format!("/api/v2/dependencies?endTs={end}")).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let day = links(&[
        ("checkout", "db", 1, 0),
        ("old", "gone", 1, 0),
        ("orders", "queue", 5, 2),
        ("web", "checkout", 110, 4),
    ]);
    assert_eq!(zipkin_links(&answer), day, "{answer}");

    // A window that ended before anything happened.
    let (_, answer) = peer.get(&format!("/api/v2/dependencies?endTs={}&lookback=60000", old - 120_000)).await;
    assert_eq!(answer, json!([]));

    let (status, answer) = peer.get(&format!("/api/dependencies?endTs={end}&lookback=300000")).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer,
        json!({
            "data": [
                {"parent": "checkout", "child": "db", "callCount": 1, "source": "observatory"},
                {"parent": "orders", "child": "queue", "callCount": 5, "source": "observatory"},
                {"parent": "web", "child": "checkout", "callCount": 10, "source": "observatory"},
            ],
            "total": 3,
            "limit": 0,
            "offset": 0,
            "errors": null,
        })
    );
    // Jaeger's endTs defaults to now, its lookback to a day.
    let (status, answer) = peer.get("/api/dependencies").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["total"], 4, "{answer}");
    let web = answer["data"].as_array().unwrap().iter().find(|l| l["parent"] == "web").cloned();
    assert_eq!(web.map(|l| l["callCount"].clone()), Some(json!(110)), "{answer}");
}

#[tokio::test]
async fn dependency_parameters_are_checked() {
    let peer = TestPeer::new(default_limits());
    let now = now_ms();
    for (uri, param) in [
        ("/api/v2/dependencies".to_string(), "endTs"),
        ("/api/v2/dependencies?lookback=1000".to_string(), "endTs"),
        ("/api/v2/dependencies?endTs=yesterday".to_string(), "endTs"),
        ("/api/v2/dependencies?endTs=1.5".to_string(), "endTs"),
        ("/api/v2/dependencies?endTs=0".to_string(), "endTs"),
        ("/api/v2/dependencies?endTs=99999999999999999".to_string(), "endTs"),
        (format!("/api/v2/dependencies?endTs={now}&lookback=-5"), "lookback"),
        (format!("/api/v2/dependencies?endTs={now}&lookback=1h"), "lookback"),
        (format!("/api/v2/dependencies?endTs={now}&lookback=31536000000"), "lookback"),
        ("/api/dependencies?endTs=soon".to_string(), "endTs"),
        (format!("/api/dependencies?endTs={now}&lookback=0"), "lookback"),
    ] {
        let (status, answer) = peer.get(&uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {answer}");
        assert_eq!(answer["error"]["param"], param, "{uri}: {answer}");
        assert!(answer["error"]["message"].as_str().unwrap().starts_with(param), "{uri}: {answer}");
    }
}
