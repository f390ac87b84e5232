//! The configuration of a peer: one YAML schema, one set of defaults.
//!
//! The documented defaults are `config/observatory.yaml`, embedded here as
//! [`DEFAULT_YAML`]; [`Config::defaults`] is that file parsed, and every part of the peer
//! takes its numbers from a [`Config`] (the conversions below, or a `from_config` in the
//! crate that owns the part), so no default is written down twice.
//!
//! [`Config::load`] layers the defaults, a YAML file, `OBSERVATORY_*` environment
//! variables (`OBSERVATORY_HTTP__ADDR` sets `http.addr`) and command-line
//! [`Overrides`], then validates. Unknown keys and bad values are errors that name the
//! key. Values only the network layer can parse (multiaddrs, peer ids, the pre-shared
//! key) are checked by `observatory-net` when it builds its settings.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Yaml};
use observatory_core::commit::{AckMode, CommitConfig};
use observatory_core::{Limits, NodeName, Resolution, Settings};
use observatory_correlate::CorrelationConfig;
use observatory_sync::{PeerBookConfig, ProtocolConfig};
use serde::{Deserialize, Serialize};

/// The documented default configuration, shipped as `config/observatory.yaml`.
pub const DEFAULT_YAML: &str = include_str!("../../../config/observatory.yaml");

/// Lower bound of `mesh.message_bytes_max`.
const MESSAGE_BYTES_MIN: usize = 1 << 20;

/// Upper bound of `ingest.queue_requests_max`.
const QUEUE_REQUESTS_MAX: usize = 1_000_000;

/// Why a configuration was refused. The message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file given does not exist.
    #[error("config file {} does not exist", .0.display())]
    Missing(PathBuf),
    /// A key is unknown or a value is bad; the text names the key.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// Keys that are unknown or whose values do not parse, each as `key: reason`.
    #[error("invalid configuration:\n  {}", .0.join("\n  "))]
    Keys(Vec<String>),
}

fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(message.into())
}

/// The whole configuration of a peer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `http.*`: the HTTP API.
    pub http: HttpSection,
    /// `store.*`: persistence.
    pub store: StoreSection,
    /// `ingest.*`: taking events in.
    pub ingest: IngestSection,
    /// `limits.*`: what clients may send.
    pub limits: LimitsSection,
    /// `resolutions`, finest first (`total` is always added).
    pub resolutions: Vec<ResolutionSection>,
    /// `mesh.*`: the mesh of peers.
    pub mesh: MeshSection,
    /// `otlp.*`: the OTLP/HTTP receiver's own listener.
    pub otlp: OtlpSection,
    /// `correlation.*`: pairing span halves and correlating token sightings.
    pub correlation: CorrelationSection,
    /// `objectives.*`: what the flow should do, and how it is evaluated.
    pub objectives: ObjectivesSection,
    /// `alerts.*`: where alerts go.
    pub alerts: AlertsSection,
    /// `ui.*`: the live picture.
    pub ui: UiSection,
}

/// `ui.*`: how the page and `graph --format svg` colour what has no objective, and the
/// live streams.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UiSection {
    /// An edge failing at least this share of calls is drawn amber.
    pub error_ratio_warn: f64,
    /// ... and at least this share, red.
    pub error_ratio_bad: f64,
    /// An edge whose p99 is at least this is drawn amber.
    #[serde(with = "humantime_serde")]
    pub p99_warn: Duration,
    /// ... and at least this, red.
    #[serde(with = "humantime_serde")]
    pub p99_bad: Duration,
    /// Time between two updates of a live stream.
    #[serde(with = "humantime_serde")]
    pub live_interval: Duration,
    /// Most live streams open at once; more get 503.
    pub live_streams_max: usize,
    /// A picture of more nodes than this is drawn with nodes collapsed into groups.
    pub group_above: usize,
    /// Named groups, tried in order before grouping by name prefix.
    pub groups: Vec<UiGroup>,
}

/// One of `ui.groups`: the nodes whose names match `match` (exact, or with `*`) are drawn
/// as one node named `name`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UiGroup {
    /// The group's name in pictures.
    pub name: String,
    /// Which node names belong to it.
    #[serde(rename = "match")]
    pub pattern: String,
}

/// `objectives.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ObjectivesSection {
    /// Files of objectives; relative paths in a config file are relative to that file.
    pub files: Vec<figment::value::magic::RelativePathBuf>,
    /// Time between evaluation steps.
    #[serde(with = "humantime_serde")]
    pub eval_interval: Duration,
    /// How far back alert states are replayed.
    #[serde(with = "humantime_serde")]
    pub lookback: Duration,
    /// How long a resolved alert is still reported.
    #[serde(with = "humantime_serde")]
    pub resolved_hold: Duration,
    /// Default `min_calls` of an objective.
    pub min_calls: u64,
    /// Default `for` of an objective.
    #[serde(rename = "for", with = "humantime_serde")]
    pub for_: Duration,
    /// Default `keep_firing_for` of an objective.
    #[serde(with = "humantime_serde")]
    pub keep_firing_for: Duration,
}

/// `alerts.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertsSection {
    /// Base URLs of Alertmanagers.
    pub alertmanagers: Vec<String>,
    /// How often every alert is sent again.
    #[serde(with = "humantime_serde")]
    pub resend_interval: Duration,
    /// A firing alert's `endsAt` lies this many resends ahead.
    pub ends_at_resends: u32,
    /// First retry delay.
    #[serde(with = "humantime_serde")]
    pub retry_min: Duration,
    /// Longest retry delay.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Longest time one send may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Base of the links in alerts; `null`: this peer's `http.addr`.
    pub link_base_url: Option<String>,
}

/// Why the objectives could not be loaded: the file, the objective and the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ObjectivesError {
    /// The file.
    pub file: String,
    /// What is wrong, naming the key (`objectives[2].latency.target: ...`).
    pub message: String,
}

/// The objectives of a file, as read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ObjectivesFile {
    objectives: Vec<observatory_objectives::ObjectiveSpec>,
}

/// `otlp.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OtlpSection {
    /// Where OTLP/HTTP is also served (`null`: only on `http.addr`).
    pub addr: Option<SocketAddr>,
    /// Where OTLP/gRPC (`TraceService/Export`) is served (`null`: not at all).
    pub grpc_addr: Option<SocketAddr>,
    /// Whether `addr` was asked for (config file, environment, `--otlp`) rather than
    /// left at the default: a taken default port is a warning, a taken chosen one an error.
    #[serde(skip)]
    pub addr_chosen: bool,
    /// The same for `grpc_addr`.
    #[serde(skip)]
    pub grpc_addr_chosen: bool,
}

/// `correlation.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CorrelationSection {
    /// How long a span half waits for its other half.
    #[serde(with = "humantime_serde")]
    pub pending_ttl: Duration,
    /// Most span halves waiting at once.
    pub pending_spans_max: usize,
    /// The node that calls root SERVER spans.
    pub entry_node: String,
    /// How long a token must be quiet before its sightings become edges.
    #[serde(with = "humantime_serde")]
    pub idle: Duration,
    /// Most tokens tracked at once.
    pub tokens_max: usize,
    /// Most sightings kept per token.
    pub sightings_per_token_max: usize,
    /// Spans remembered so that a retried export counts once (0: none).
    pub recent_spans_max: usize,
    /// Span attributes naming the node on the other side of a CLIENT span (and of a
    /// PRODUCER or CONSUMER without a destination), in order; the first non-empty wins.
    pub peer_attributes: Vec<String>,
    /// The node CLIENT halves that nobody answered and that name nothing go to
    /// (`null`: counted as unpaired instead).
    pub unknown_node: Option<String>,
    /// The span (or resource) attribute holding a span's sampling ratio in `(0, 1]`
    /// (Tempo's `span_multiplier_key`); `null` reads none.
    pub sample_ratio_attribute: Option<String>,
    /// Longest time between two looks at waiting halves and quiet tokens.
    #[serde(with = "humantime_serde")]
    pub tick_interval: Duration,
}

/// `http.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Address the HTTP API listens on.
    pub addr: SocketAddr,
    /// Longest time one ingest request may take, reading its body included.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Slowest an ingest body may arrive, in bytes per second after its first second
    /// (0: no minimum); slower bodies are refused (408) and free their place.
    pub body_min_rate: u64,
    /// Most connections open at once over the HTTP API and the OTLP listeners; more are
    /// closed at once.
    pub connections_max: usize,
    /// How long a new connection may stay silent before its first request; HTTP/2
    /// connections are pinged this often.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// On SIGTERM or Ctrl-C, how long requests in flight may still take before the
    /// peer closes them and stops anyway.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

/// `store.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// The data dir.
    pub path: PathBuf,
    /// How often written changes are flushed when no ack waits for them.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// How often expired cells are deleted and sealed buckets packed.
    #[serde(with = "humantime_serde")]
    pub expire_interval: Duration,
}

/// `ingest.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IngestSection {
    /// `durable` or `accepted`.
    pub ack: AckMode,
    /// How far in the future an event may be.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// How far in the past an event may be.
    #[serde(with = "humantime_serde")]
    pub max_lateness: Duration,
    /// Most requests waiting for the writer.
    pub queue_requests_max: usize,
    /// How long a request waits for a place in the writer's queue before it is refused.
    #[serde(with = "humantime_serde")]
    pub queue_wait: Duration,
    /// Most cells one seq may touch.
    pub cells_per_seq_max: usize,
}

/// `limits.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Largest request body.
    pub body_bytes_max: usize,
    /// Most ingest requests read and parsed at once.
    pub ingest_requests_in_flight_max: usize,
    /// Most events in one request.
    pub events_per_request_max: usize,
    /// Longest node name in bytes (1 to 1024).
    pub node_name_bytes_max: usize,
    /// Most distinct nodes.
    pub nodes_max: usize,
    /// Most distinct edges.
    pub edges_max: usize,
    /// Most distinct flows (events of more go to the flow `other`).
    pub flows_max: usize,
    /// Largest `count` of one event.
    pub event_count_max: u64,
    /// Most per-event errors listed in an ingest answer.
    pub errors_listed_max: usize,
    /// Most spans in one OTLP or Zipkin request.
    pub spans_per_request_max: usize,
}

/// One entry of `resolutions`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResolutionSection {
    /// Bucket width.
    #[serde(with = "humantime_serde")]
    pub width: Duration,
    /// How long a bucket is kept after it ends.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

/// `mesh.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MeshSection {
    /// libp2p listen multiaddrs.
    pub listen: Vec<String>,
    /// Multiaddrs of peers to join.
    pub bootstrap: Vec<String>,
    /// Find peers on the LAN.
    pub mdns: bool,
    /// Time between anti-entropy rounds.
    #[serde(with = "humantime_serde")]
    pub sync_interval: Duration,
    /// Peers synced with per round.
    pub fanout: usize,
    /// Largest mesh message.
    pub message_bytes_max: usize,
    /// Pre-shared key file.
    pub psk_file: Option<PathBuf>,
    /// Only these peer ids may connect (empty: any).
    pub allow_peers: Vec<String>,
    /// How long a message may wait for its acknowledgement (at least five sync
    /// intervals are waited).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long an idle connection is kept (at least 30 sync intervals).
    #[serde(with = "humantime_serde")]
    pub idle_connection_timeout: Duration,
    /// Most established connections, in and out together.
    pub connections_established_max: u32,
    /// Most connections being set up, in and out each.
    pub connections_pending_max: u32,
    /// First redial delay.
    #[serde(with = "humantime_serde")]
    pub redial_min: Duration,
    /// Longest redial delay.
    #[serde(with = "humantime_serde")]
    pub redial_max: Duration,
    /// A peer not connected for this long is forgotten (`null`: never).
    #[serde(with = "humantime_serde")]
    pub forget_after: Option<Duration>,
    /// Most forgotten peers remembered, so that gossip does not bring them back.
    pub forgotten_peers_max: usize,
    /// Most peers kept in the book.
    pub known_peers_max: usize,
    /// How often connected peers are told the known peers.
    #[serde(with = "humantime_serde")]
    pub gossip_interval: Duration,
    /// How often a changed peer list is saved.
    #[serde(with = "humantime_serde")]
    pub save_peers_interval: Duration,
    /// How often the mesh's state is published.
    #[serde(with = "humantime_serde")]
    pub status_interval: Duration,
    /// Offences after which a peer is disconnected.
    pub offences_max: u32,
    /// How long a disconnected offender is refused.
    #[serde(with = "humantime_serde")]
    pub shun_for: Duration,
    /// Most messages one side sends in one session.
    pub session_messages_max: u32,
    /// Merged cells not yet written above which messages with cells are dropped.
    pub merged_cells_backlog_max: usize,
    /// Most merges waiting for the writer.
    pub merges_queued_max: usize,
    /// Most handoffs waiting to be sent, and received ones waiting to be correlated.
    pub handoffs_queued_max: usize,
}

/// Values given on the command line, which override everything else.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--data-dir`
    pub data_dir: Option<PathBuf>,
    /// `--http`
    pub http_addr: Option<SocketAddr>,
    /// `--listen` (repeatable; replaces mesh.listen)
    pub listen: Vec<String>,
    /// `--bootstrap` (repeatable; replaces mesh.bootstrap)
    pub bootstrap: Vec<String>,
    /// `--no-mdns`
    pub no_mdns: bool,
    /// `--otlp`
    pub otlp_addr: Option<SocketAddr>,
    /// `--otlp-grpc`
    pub otlp_grpc_addr: Option<SocketAddr>,
}

/// Milliseconds of a duration, saturating.
pub fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn duration_text(d: Duration) -> String {
    observatory_core::settings::human_ms(millis(d))
}

impl Config {
    /// The documented defaults ([`DEFAULT_YAML`]), parsed once.
    pub fn defaults() -> &'static Config {
        static DEFAULTS: OnceLock<Config> = OnceLock::new();
        DEFAULTS.get_or_init(|| {
            let config: Config = Figment::from(Yaml::string(DEFAULT_YAML))
                .extract()
                .expect("the embedded config/observatory.yaml parses");
            config.validate().expect("the embedded config/observatory.yaml is valid");
            config
        })
    }

    /// The defaults with `yaml` (a partial config) merged over them, validated; for
    /// tests and tools that change a few keys.
    pub fn from_yaml(yaml: &str) -> Result<Config, ConfigError> {
        Self::extract(Figment::from(Yaml::string(yaml)))
    }

    /// Loads defaults, `file` (if any), the environment and `overrides`, and validates.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Missing(file.to_path_buf()));
            }
            figment = figment.merge(Yaml::file_exact(file));
        }
        // Only variables with a `__` name config keys; others (OBSERVATORY_REQUIRE_ALL,
        // OBSERVATORY_LOG) are not configuration.
        figment = figment
            .merge(Env::prefixed("OBSERVATORY_").filter(|key| key.as_str().contains("__")).split("__"));
        if let Some(path) = &overrides.data_dir {
            figment = figment.merge(Serialized::default("store.path", path));
        }
        if let Some(addr) = &overrides.http_addr {
            figment = figment.merge(Serialized::default("http.addr", addr.to_string()));
        }
        if !overrides.listen.is_empty() {
            figment = figment.merge(Serialized::default("mesh.listen", &overrides.listen));
        }
        if !overrides.bootstrap.is_empty() {
            figment = figment.merge(Serialized::default("mesh.bootstrap", &overrides.bootstrap));
        }
        if let Some(addr) = &overrides.otlp_addr {
            figment = figment.merge(Serialized::default("otlp.addr", addr.to_string()));
        }
        if let Some(addr) = &overrides.otlp_grpc_addr {
            figment = figment.merge(Serialized::default("otlp.grpc_addr", addr.to_string()));
        }
        if overrides.no_mdns {
            figment = figment.merge(Serialized::default("mesh.mdns", false));
        }
        Self::extract(figment)
    }

    /// `chosen`: what the user gave (file, environment, flags), merged over the defaults.
    fn extract(chosen: Figment) -> Result<Config, ConfigError> {
        let addr_chosen = chosen.find_value("otlp.addr").is_ok();
        let grpc_addr_chosen = chosen.find_value("otlp.grpc_addr").is_ok();
        let mut config: Config = Figment::from(Yaml::string(DEFAULT_YAML))
            .merge(chosen)
            .extract()
            .map_err(|e| ConfigError::Keys(e.into_iter().map(|e| describe(&e)).collect()))?;
        config.otlp.addr_chosen = addr_chosen;
        config.otlp.grpc_addr_chosen = grpc_addr_chosen;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mesh = &self.mesh;
        let positive = [
            ("limits.body_bytes_max", self.limits.body_bytes_max as u64),
            ("limits.ingest_requests_in_flight_max", self.limits.ingest_requests_in_flight_max as u64),
            ("limits.events_per_request_max", self.limits.events_per_request_max as u64),
            ("limits.nodes_max", self.limits.nodes_max as u64),
            ("limits.edges_max", self.limits.edges_max as u64),
            ("limits.flows_max", self.limits.flows_max as u64),
            ("limits.event_count_max", self.limits.event_count_max),
            ("limits.errors_listed_max", self.limits.errors_listed_max as u64),
            ("ingest.queue_requests_max", self.ingest.queue_requests_max as u64),
            ("ingest.cells_per_seq_max", self.ingest.cells_per_seq_max as u64),
            ("mesh.fanout", mesh.fanout as u64),
            ("mesh.message_bytes_max", mesh.message_bytes_max as u64),
            ("mesh.connections_established_max", u64::from(mesh.connections_established_max)),
            ("mesh.connections_pending_max", u64::from(mesh.connections_pending_max)),
            ("mesh.offences_max", u64::from(mesh.offences_max)),
            ("mesh.session_messages_max", u64::from(mesh.session_messages_max)),
            ("mesh.merged_cells_backlog_max", mesh.merged_cells_backlog_max as u64),
            ("mesh.merges_queued_max", mesh.merges_queued_max as u64),
            ("mesh.handoffs_queued_max", mesh.handoffs_queued_max as u64),
            ("mesh.forgotten_peers_max", mesh.forgotten_peers_max as u64),
            ("mesh.known_peers_max", mesh.known_peers_max as u64),
            ("limits.spans_per_request_max", self.limits.spans_per_request_max as u64),
            ("correlation.pending_spans_max", self.correlation.pending_spans_max as u64),
            ("correlation.tokens_max", self.correlation.tokens_max as u64),
            ("correlation.sightings_per_token_max", self.correlation.sightings_per_token_max as u64),
            ("alerts.ends_at_resends", u64::from(self.alerts.ends_at_resends)),
            ("ui.live_streams_max", self.ui.live_streams_max as u64),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(invalid(format!("{key} must be at least 1")));
        }
        if !(1..=1024).contains(&self.limits.node_name_bytes_max) {
            return Err(invalid("limits.node_name_bytes_max must be between 1 and 1024"));
        }
        let longer_than_zero = [
            ("ingest.max_lateness", self.ingest.max_lateness),
            ("store.flush_interval", self.store.flush_interval),
            ("store.expire_interval", self.store.expire_interval),
            ("http.request_timeout", self.http.request_timeout),
            ("correlation.pending_ttl", self.correlation.pending_ttl),
            ("correlation.idle", self.correlation.idle),
            ("correlation.tick_interval", self.correlation.tick_interval),
            ("mesh.request_timeout", mesh.request_timeout),
            ("mesh.idle_connection_timeout", mesh.idle_connection_timeout),
            ("mesh.redial_min", mesh.redial_min),
            ("mesh.gossip_interval", mesh.gossip_interval),
            ("mesh.save_peers_interval", mesh.save_peers_interval),
            ("mesh.status_interval", mesh.status_interval),
            ("objectives.eval_interval", self.objectives.eval_interval),
            ("objectives.lookback", self.objectives.lookback),
            ("alerts.resend_interval", self.alerts.resend_interval),
            ("alerts.retry_min", self.alerts.retry_min),
            ("alerts.timeout", self.alerts.timeout),
            ("ui.live_interval", self.ui.live_interval),
            ("ui.p99_warn", self.ui.p99_warn),
        ];
        if let Some((key, _)) = longer_than_zero.iter().find(|(_, value)| value.is_zero()) {
            return Err(invalid(format!("{key} must be longer than 0")));
        }
        if mesh.redial_max < mesh.redial_min {
            return Err(invalid("mesh.redial_max must be at least mesh.redial_min"));
        }
        let ui = &self.ui;
        for (key, share) in
            [("ui.error_ratio_warn", ui.error_ratio_warn), ("ui.error_ratio_bad", ui.error_ratio_bad)]
        {
            if !(share > 0.0 && share <= 1.0) {
                return Err(invalid(format!("{key} must be a share above 0 and at most 1, such as 0.01")));
            }
        }
        if ui.error_ratio_bad < ui.error_ratio_warn {
            return Err(invalid("ui.error_ratio_bad must be at least ui.error_ratio_warn"));
        }
        if ui.p99_bad < ui.p99_warn {
            return Err(invalid("ui.p99_bad must be at least ui.p99_warn"));
        }
        for (i, group) in ui.groups.iter().enumerate() {
            for (key, text) in [("name", &group.name), ("match", &group.pattern)] {
                if text.is_empty() || text.len() > 1024 || text.chars().any(char::is_control) {
                    return Err(invalid(format!(
                        "ui.groups[{i}].{key} must be 1 to 1024 bytes without control characters"
                    )));
                }
            }
        }
        if self.http.connections_max == 0 {
            return Err(invalid("http.connections_max must be at least 1"));
        }
        if self.http.header_read_timeout.is_zero() {
            return Err(invalid("http.header_read_timeout must be more than 0"));
        }
        let peer_attributes = &self.correlation.peer_attributes;
        if peer_attributes.len() > 32 {
            return Err(invalid(format!(
                "correlation.peer_attributes lists {} attributes; at most 32",
                peer_attributes.len()
            )));
        }
        let named = peer_attributes
            .iter()
            .enumerate()
            .map(|(i, a)| (format!("correlation.peer_attributes[{i}]"), a))
            .chain(
                self.correlation
                    .sample_ratio_attribute
                    .iter()
                    .map(|a| ("correlation.sample_ratio_attribute".into(), a)),
            );
        for (key, attribute) in named {
            if attribute.is_empty() || attribute.len() > 256 || attribute.chars().any(char::is_control) {
                return Err(invalid(format!(
                    "{key} must be an attribute name of 1 to 256 bytes without control characters"
                )));
            }
        }
        if self.alerts.retry_max < self.alerts.retry_min {
            return Err(invalid("alerts.retry_max must be at least alerts.retry_min"));
        }
        for (i, url) in self.alerts.alertmanagers.iter().chain(&self.alerts.link_base_url).enumerate() {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                let key = if i < self.alerts.alertmanagers.len() {
                    format!("alerts.alertmanagers[{i}]")
                } else {
                    "alerts.link_base_url".to_string()
                };
                return Err(invalid(format!("{key}: `{url}` is not an http:// or https:// URL")));
            }
        }
        if mesh.forget_after.is_some_and(|after| after < mesh.redial_max) {
            return Err(invalid("mesh.forget_after must be at least mesh.redial_max (or null: never)"));
        }
        if self.ingest.queue_requests_max > QUEUE_REQUESTS_MAX {
            return Err(invalid(format!("ingest.queue_requests_max must be at most {QUEUE_REQUESTS_MAX}")));
        }
        if mesh.message_bytes_max < MESSAGE_BYTES_MIN {
            return Err(invalid(format!(
                "mesh.message_bytes_max must be at least {MESSAGE_BYTES_MIN} \
                 (one batch of cells must fit in a message)"
            )));
        }
        if mesh.sync_interval < Duration::from_millis(10) {
            return Err(invalid("mesh.sync_interval must be at least 10ms"));
        }
        self.correlation()?;
        let settings = self.settings()?;
        for r in settings.resolutions() {
            if let Some(retention) = r.retention_ms
                && retention < millis(self.ingest.max_lateness)
            {
                return Err(invalid(format!(
                    "resolutions: `{}` keeps buckets for less than ingest.max_lateness ({}), \
                     so late events would land in expired buckets",
                    r.name,
                    duration_text(self.ingest.max_lateness)
                )));
            }
        }
        Ok(())
    }

    /// The mesh-wide settings.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let resolutions = self
            .resolutions
            .iter()
            .map(|r| Resolution {
                name: duration_text(r.width).replace(' ', ""),
                width_ms: Some(millis(r.width)),
                retention_ms: Some(millis(r.retention)),
            })
            .collect();
        Settings::new(resolutions).map_err(|e| invalid(format!("resolutions: {e}")))
    }

    /// The core's limits on what clients send.
    pub fn core_limits(&self) -> Limits {
        Limits {
            nodes_max: self.limits.nodes_max,
            edges_max: self.limits.edges_max,
            flows_max: self.limits.flows_max,
            max_clock_skew_ms: millis(self.ingest.max_clock_skew),
            max_lateness_ms: millis(self.ingest.max_lateness),
            cells_per_seq_max: self.ingest.cells_per_seq_max,
        }
    }

    /// When the writer answers and flushes.
    pub fn commit(&self) -> CommitConfig {
        CommitConfig {
            ack: self.ingest.ack,
            flush_interval_ms: millis(self.store.flush_interval),
            expire_interval_ms: millis(self.store.expire_interval),
        }
    }

    /// The anti-entropy protocol's settings.
    pub fn protocol(&self) -> ProtocolConfig {
        let mesh = &self.mesh;
        ProtocolConfig {
            sync_interval_ms: millis(mesh.sync_interval),
            fanout: mesh.fanout,
            message_bytes_max: mesh.message_bytes_max,
            offences_max: mesh.offences_max,
            shun_ms: millis(mesh.shun_for),
            session_messages_max: mesh.session_messages_max,
        }
    }

    /// The peer book's settings.
    pub fn peer_book(&self) -> PeerBookConfig {
        let mesh = &self.mesh;
        PeerBookConfig {
            redial_min_ms: millis(mesh.redial_min),
            redial_max_ms: millis(mesh.redial_max),
            forget_after_ms: mesh.forget_after.map(millis),
            forgotten_max: mesh.forgotten_peers_max,
            known_max: mesh.known_peers_max,
            gossip_interval_ms: millis(mesh.gossip_interval),
            save_interval_ms: millis(mesh.save_peers_interval),
        }
    }

    /// How objectives are evaluated.
    pub fn evaluation(&self) -> observatory_objectives::EvalConfig {
        observatory_objectives::EvalConfig {
            eval_interval_ms: millis(self.objectives.eval_interval),
            lookback_ms: millis(self.objectives.lookback),
            resolved_hold_ms: millis(self.objectives.resolved_hold),
        }
    }

    /// What objectives leave out.
    pub fn objective_defaults(&self) -> observatory_objectives::ObjectiveDefaults {
        observatory_objectives::ObjectiveDefaults {
            min_calls: self.objectives.min_calls,
            for_ms: millis(self.objectives.for_),
            keep_firing_for_ms: millis(self.objectives.keep_firing_for),
        }
    }

    /// How alerts are sent.
    pub fn sender(&self) -> observatory_objectives::SenderConfig {
        let alerts = &self.alerts;
        observatory_objectives::SenderConfig {
            targets: alerts.alertmanagers.len(),
            resend_interval_ms: millis(alerts.resend_interval),
            ends_at_resends: i64::from(alerts.ends_at_resends),
            retry_min_ms: millis(alerts.retry_min),
            retry_max_ms: millis(alerts.retry_max),
        }
    }

    /// Reads and checks the objectives of `objectives.files`.
    pub fn load_objectives(&self) -> Result<observatory_objectives::ObjectiveSet, ObjectivesError> {
        load_objective_files(&self.objective_files(), self.objective_defaults())
    }

    /// The files of `objectives.files`, resolved (relative to the config file that named
    /// them, else to the working directory).
    pub fn objective_files(&self) -> Vec<PathBuf> {
        self.objectives.files.iter().map(|f| f.relative()).collect()
    }

    /// The correlator's settings; errors name the key.
    pub fn correlation(&self) -> Result<CorrelationConfig, ConfigError> {
        let c = &self.correlation;
        let entry_node = NodeName::new(&c.entry_node, self.limits.node_name_bytes_max)
            .map_err(|e| invalid(format!("correlation.entry_node: the name {e}")))?;
        let unknown_node = c
            .unknown_node
            .as_deref()
            .map(|name| NodeName::new(name, self.limits.node_name_bytes_max))
            .transpose()
            .map_err(|e| invalid(format!("correlation.unknown_node: the name {e}")))?;
        Ok(CorrelationConfig {
            pending_ttl_ms: millis(c.pending_ttl),
            pending_spans_max: c.pending_spans_max,
            entry_node,
            idle_ms: millis(c.idle),
            tokens_max: c.tokens_max,
            sightings_per_token_max: c.sightings_per_token_max,
            recent_spans_max: c.recent_spans_max,
            unknown_node,
        })
    }
}

/// One figment error as `key: reason (source)`.
fn describe(error: &figment::Error) -> String {
    let key = if error.path.is_empty() { "(top level)".to_string() } else { error.path.join(".") };
    let source = error.metadata.as_ref().map(|m| {
        let name = m.source.as_ref().map_or_else(|| m.name.to_string(), |s| format!("{} {s}", m.name));
        format!(" (from {name})")
    });
    format!("{key}: {}{}", error.kind, source.unwrap_or_default())
}

/// Reads and checks objectives files: every error names the file, the objective (by its
/// place and name) and the key.
pub fn load_objective_files(
    files: &[PathBuf],
    defaults: observatory_objectives::ObjectiveDefaults,
) -> Result<observatory_objectives::ObjectiveSet, ObjectivesError> {
    let mut objectives = Vec::new();
    for file in files {
        let name = file.display().to_string();
        let fail = |message: String| ObjectivesError { file: name.clone(), message };
        if !file.exists() {
            return Err(fail("does not exist".into()));
        }
        let parsed: ObjectivesFile = Figment::from(Yaml::file_exact(file)).extract().map_err(|e| {
            let messages: Vec<String> = e.into_iter().map(|e| describe(&e)).collect();
            fail(messages.join("; "))
        })?;
        for (i, spec) in parsed.objectives.iter().enumerate() {
            let objective = observatory_objectives::Objective::from_spec(spec, defaults)
                .map_err(|e| fail(format!("objectives[{i}] ({}): {e}", spec.name)))?;
            objectives.push(objective);
        }
    }
    observatory_objectives::ObjectiveSet::new(objectives).map_err(|e| ObjectivesError {
        file: files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "),
        message: e.to_string(),
    })
}
