//! Configuration: defaults, then the YAML file, then `OBSERVATORY_*` environment
//! variables (`OBSERVATORY_HTTP__ADDR` sets `http.addr`), then command-line flags.
//! Unknown keys and bad values are errors that name the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Yaml};
use observatory_core::{Limits, Resolution, Settings};
use observatory_mesh::libp2p::pnet::PreSharedKey;
use observatory_mesh::libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

/// The documented default configuration, shipped as `config/observatory.yaml`.
pub const DEFAULT_YAML: &str = include_str!("../../../config/observatory.yaml");

/// Lower bound of `mesh.message_bytes_max`.
const MESSAGE_BYTES_MIN: usize = 1 << 20;

/// Upper bound of `ingest.queue_requests_max`.
const QUEUE_REQUESTS_MAX: usize = 1_000_000;

/// The whole configuration of a peer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTP API.
    pub http: HttpConfig,
    /// Persistence.
    pub store: StoreConfig,
    /// Taking events in.
    pub ingest: IngestConfig,
    /// Limits on what clients send.
    pub limits: LimitsConfig,
    /// Resolutions, finest first (`total` is always added).
    pub resolutions: Vec<ResolutionConfig>,
    /// The mesh of peers.
    pub mesh: MeshConfig,
    /// The OTLP/HTTP receiver's own listener.
    pub otlp: OtlpConfig,
    /// Pairing span halves and correlating token sightings.
    pub correlation: CorrelationSection,
}

/// `otlp.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// Where OTLP/HTTP is also served (`null`: only on `http.addr`).
    pub addr: Option<SocketAddr>,
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
}

/// `http.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address the HTTP API listens on.
    pub addr: SocketAddr,
    /// Longest time one ingest request may take, reading its body included.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// On SIGTERM or Ctrl-C, how long requests in flight may still take before the
    /// peer closes them and stops anyway.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

/// `store.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The data dir.
    pub path: PathBuf,
    /// With `ingest.ack: accepted`, how often the store is flushed.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
}

/// `ingest.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// `durable` or `accepted`.
    pub ack: observatory_store::AckMode,
    /// How far in the future an event may be.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// How far in the past an event may be.
    #[serde(with = "humantime_serde")]
    pub max_lateness: Duration,
    /// Most requests waiting for the writer.
    pub queue_requests_max: usize,
}

/// `limits.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
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
pub struct ResolutionConfig {
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
pub struct MeshConfig {
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
}

fn duration_text(d: Duration) -> String {
    observatory_core::settings::human_ms(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Config {
    /// Loads defaults, `file` (if any), the environment and `overrides`, and validates.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Config> {
        let mut figment = Figment::from(Yaml::string(DEFAULT_YAML));
        if let Some(file) = file {
            if !file.exists() {
                bail!("config file {} does not exist", file.display());
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
        if overrides.no_mdns {
            figment = figment.merge(Serialized::default("mesh.mdns", false));
        }
        let config: Config = figment.extract().map_err(|e| {
            let messages: Vec<String> = e.into_iter().map(|e| describe(&e)).collect();
            anyhow::anyhow!("invalid configuration:\n  {}", messages.join("\n  "))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot, naming the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        let positive = [
            ("limits.body_bytes_max", self.limits.body_bytes_max as u64),
            ("limits.ingest_requests_in_flight_max", self.limits.ingest_requests_in_flight_max as u64),
            ("limits.events_per_request_max", self.limits.events_per_request_max as u64),
            ("limits.nodes_max", self.limits.nodes_max as u64),
            ("limits.edges_max", self.limits.edges_max as u64),
            ("limits.event_count_max", self.limits.event_count_max),
            ("ingest.queue_requests_max", self.ingest.queue_requests_max as u64),
            ("mesh.fanout", self.mesh.fanout as u64),
            ("mesh.message_bytes_max", self.mesh.message_bytes_max as u64),
            ("limits.spans_per_request_max", self.limits.spans_per_request_max as u64),
            ("correlation.pending_spans_max", self.correlation.pending_spans_max as u64),
            ("correlation.tokens_max", self.correlation.tokens_max as u64),
            ("correlation.sightings_per_token_max", self.correlation.sightings_per_token_max as u64),
        ];
        for (key, value) in positive {
            if value == 0 {
                bail!("invalid configuration: {key} must be at least 1");
            }
        }
        if !(1..=1024).contains(&self.limits.node_name_bytes_max) {
            bail!("invalid configuration: limits.node_name_bytes_max must be between 1 and 1024");
        }
        for (key, value) in [
            ("ingest.max_lateness", self.ingest.max_lateness),
            ("store.flush_interval", self.store.flush_interval),
            ("http.request_timeout", self.http.request_timeout),
            ("correlation.pending_ttl", self.correlation.pending_ttl),
            ("correlation.idle", self.correlation.idle),
        ] {
            if value.is_zero() {
                bail!("invalid configuration: {key} must be longer than 0");
            }
        }
        if self.ingest.queue_requests_max > QUEUE_REQUESTS_MAX {
            bail!("invalid configuration: ingest.queue_requests_max must be at most {QUEUE_REQUESTS_MAX}");
        }
        if self.mesh.message_bytes_max < MESSAGE_BYTES_MIN {
            bail!(
                "invalid configuration: mesh.message_bytes_max must be at least {MESSAGE_BYTES_MIN} \
                 (one batch of cells must fit in a message)"
            );
        }
        if self.mesh.sync_interval < Duration::from_millis(10) {
            bail!("invalid configuration: mesh.sync_interval must be at least 10ms");
        }
        self.correlation_config()?;
        self.mesh_parts()?;
        let settings = self.settings()?;
        for r in settings.resolutions() {
            if let Some(retention) = r.retention_ms
                && retention < self.ingest.max_lateness.as_millis() as i64
            {
                bail!(
                    "invalid configuration: resolutions: `{}` keeps buckets for less than ingest.max_lateness ({}), \
                     so late events would land in expired buckets",
                    r.name,
                    duration_text(self.ingest.max_lateness)
                );
            }
        }
        Ok(())
    }

    /// The correlator's configuration; errors name the key.
    pub fn correlation_config(&self) -> anyhow::Result<observatory_api::CorrelationConfig> {
        let c = &self.correlation;
        let entry_node = observatory_core::NodeName::new(&c.entry_node, self.limits.node_name_bytes_max)
            .map_err(|e| anyhow::anyhow!("invalid configuration: correlation.entry_node: the name {e}"))?;
        Ok(observatory_api::CorrelationConfig {
            pending_ttl_ms: c.pending_ttl.as_millis().min(i64::MAX as u128) as i64,
            pending_spans_max: c.pending_spans_max,
            entry_node,
            idle_ms: c.idle.as_millis().min(i64::MAX as u128) as i64,
            tokens_max: c.tokens_max,
            sightings_per_token_max: c.sightings_per_token_max,
        })
    }

    /// The mesh-wide settings.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let resolutions = self
            .resolutions
            .iter()
            .map(|r| {
                let width_ms = r.width.as_millis() as i64;
                Resolution {
                    name: duration_text(r.width).replace(' ', ""),
                    width_ms: Some(width_ms),
                    retention_ms: Some(r.retention.as_millis() as i64),
                }
            })
            .collect();
        Settings::new(resolutions).context("invalid configuration: resolutions")
    }

    /// The mesh settings parsed: listen and bootstrap multiaddrs, allowed peers and the
    /// pre-shared key (read from `mesh.psk_file`). Errors name the key.
    pub fn mesh_parts(&self) -> anyhow::Result<MeshParts> {
        let addrs = |key: &str, list: &[String]| -> anyhow::Result<Vec<Multiaddr>> {
            list.iter()
                .map(|text| {
                    text.parse::<Multiaddr>().map_err(|e| {
                        anyhow::anyhow!(
                            "invalid configuration: {key}: `{text}` is not a multiaddr ({e}); \
                             write e.g. /ip4/10.0.0.2/tcp/7000 or /dns4/host/tcp/7000"
                        )
                    })
                })
                .collect()
        };
        let listen = addrs("mesh.listen", &self.mesh.listen)?;
        let bootstrap = addrs("mesh.bootstrap", &self.mesh.bootstrap)?;
        let allow_peers = self
            .mesh
            .allow_peers
            .iter()
            .map(|text| {
                text.parse::<PeerId>().map_err(|e| {
                    anyhow::anyhow!(
                        "invalid configuration: mesh.allow_peers: `{text}` is not a peer id ({e})"
                    )
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let psk = match &self.mesh.psk_file {
            Some(path) => Some(
                observatory_mesh::net::read_psk_file(path).context("invalid configuration: mesh.psk_file")?,
            ),
            None => None,
        };
        Ok(MeshParts { listen, bootstrap, allow_peers, psk })
    }

    /// The core's limits.
    pub fn core_limits(&self) -> Limits {
        Limits {
            nodes_max: self.limits.nodes_max,
            edges_max: self.limits.edges_max,
            max_clock_skew_ms: self.ingest.max_clock_skew.as_millis() as i64,
            max_lateness_ms: self.ingest.max_lateness.as_millis() as i64,
            ..Limits::default()
        }
    }
}

/// The parsed parts of `mesh.*`.
#[derive(Debug, Clone)]
pub struct MeshParts {
    /// `mesh.listen`
    pub listen: Vec<Multiaddr>,
    /// `mesh.bootstrap`
    pub bootstrap: Vec<Multiaddr>,
    /// `mesh.allow_peers`
    pub allow_peers: Vec<PeerId>,
    /// The key in `mesh.psk_file`.
    pub psk: Option<PreSharedKey>,
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

#[cfg(test)]
mod tests {
    use super::*;

    const THREE_HOSTS: &str = include_str!("../../../config/mesh-three-hosts.yaml");

    fn load_yaml(yaml: &str) -> anyhow::Result<Config> {
        let config: Config = Figment::from(Yaml::string(DEFAULT_YAML)).merge(Yaml::string(yaml)).extract()?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn the_three_host_example_is_valid_once_its_key_file_exists() {
        // As shipped it names /etc/observatory/swarm.key, which this machine lacks.
        let error = load_yaml(THREE_HOSTS).expect_err("the key file is missing here");
        let text = format!("{error:#}");
        assert!(text.contains("mesh.psk_file") && text.contains("/etc/observatory/swarm.key"), "{text}");

        let dir = tempfile::tempdir().expect("temp dir");
        let key = dir.path().join("swarm.key");
        std::fs::write(&key, format!("/key/swarm/psk/1.0.0/\n/base16/\n{}\n", "ab".repeat(32)))
            .expect("write");
        let yaml = THREE_HOSTS.replace("/etc/observatory/swarm.key", &key.display().to_string());
        let config = load_yaml(&yaml).expect("valid with the key file present");
        let parts = config.mesh_parts().expect("mesh parts");
        assert_eq!(parts.bootstrap.len(), 3);
        assert!(parts.bootstrap.iter().all(|a| a.to_string().starts_with("/dns4/obs-")));
        assert!(parts.psk.is_some());
        assert!(!config.mesh.mdns);
    }

    #[test]
    fn bad_mesh_values_are_named_with_their_key() {
        for (yaml, needle) in [
            ("mesh: {listen: [\"tcp/7000\"]}", "mesh.listen"),
            ("mesh: {bootstrap: [\"/ip4/1.2.3.4/tcp/x\"]}", "mesh.bootstrap"),
            ("mesh: {allow_peers: [\"not-a-peer\"]}", "mesh.allow_peers"),
            ("mesh: {message_bytes_max: 1000}", "mesh.message_bytes_max"),
            ("mesh: {sync_interval: 1ms}", "mesh.sync_interval"),
            ("mesh: {fanout: 0}", "mesh.fanout"),
        ] {
            let error = load_yaml(yaml).expect_err(yaml);
            assert!(format!("{error:#}").contains(needle), "{yaml}: {error:#}");
        }
    }
}
