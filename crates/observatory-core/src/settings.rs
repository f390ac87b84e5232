//! Settings that must agree mesh-wide (and their fingerprint), and the local limits.

use crate::histogram::{LATENCY_SIGNIFICANT_DIGITS, LATENCY_US_HIGHEST, LATENCY_US_LOWEST};
use crate::model::Resolution;

/// A duration in milliseconds as people write it: `500ms`, `15m`, `1h 30m`, `35d`.
pub fn human_ms(ms: i64) -> String {
    if ms < 0 {
        return format!("-{}", human_ms(ms.saturating_neg()));
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let units = [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)];
    let mut left = ms;
    let mut parts = Vec::new();
    for (name, size) in units {
        if left >= size {
            parts.push(format!("{}{name}", left / size));
            left %= size;
        }
        if parts.len() == 2 {
            break;
        }
    }
    parts.join(" ")
}

/// At most this many resolutions (their index is a `u8` in cell keys; keep it small).
pub const RESOLUTIONS_MAX: usize = 16;

/// Settings every peer of a mesh must share: resolutions with their retentions, and the
/// latency histogram bounds. Peers compare their [`Settings::fingerprint`] and refuse to
/// merge state with a mismatched peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    resolutions: Vec<Resolution>,
}

/// Why a list of resolutions is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// No bucketed resolution was given.
    #[error("at least one resolution with a bucket width is needed")]
    NoResolution,
    /// Too many resolutions.
    #[error("at most {RESOLUTIONS_MAX} resolutions are supported, {0} were given")]
    TooMany(usize),
    /// A resolution is malformed.
    #[error("resolution {name:?}: {reason}")]
    Invalid {
        /// The resolution's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl Settings {
    /// Builds settings from bucketed resolutions, finest first; `total` is appended.
    ///
    /// Each width must be a whole multiple of the finest width (so one fine bucket lies in
    /// exactly one coarse bucket), widths must grow, names must be unique, and retention
    /// must be at least the width.
    pub fn new(bucketed: Vec<Resolution>) -> Result<Self, SettingsError> {
        if bucketed.is_empty() {
            return Err(SettingsError::NoResolution);
        }
        if bucketed.len() + 1 > RESOLUTIONS_MAX {
            return Err(SettingsError::TooMany(bucketed.len() + 1));
        }
        let invalid =
            |r: &Resolution, reason: String| SettingsError::Invalid { name: r.name.clone(), reason };
        let mut finest = None;
        let mut previous_width = 0;
        for (i, r) in bucketed.iter().enumerate() {
            let width = r.width_ms.ok_or_else(|| invalid(r, "needs a bucket width".into()))?;
            if width <= 0 {
                return Err(invalid(r, "bucket width must be positive".into()));
            }
            if width <= previous_width {
                return Err(invalid(
                    r,
                    format!(
                        "resolutions must be listed from finest to coarsest, and {} is not wider than {}",
                        human_ms(width),
                        human_ms(previous_width)
                    ),
                ));
            }
            let finest_width = *finest.get_or_insert(width);
            if width % finest_width != 0 {
                return Err(invalid(
                    r,
                    format!(
                        "width {} is not a multiple of the finest width {}",
                        human_ms(width),
                        human_ms(finest_width)
                    ),
                ));
            }
            previous_width = width;
            match r.retention_ms {
                Some(retention) if retention < width => {
                    return Err(invalid(r, "retention must be at least the bucket width".into()));
                }
                _ => {}
            }
            if r.name.is_empty() || r.name == "total" {
                return Err(invalid(r, "name must be non-empty and not `total`".into()));
            }
            if bucketed[..i].iter().any(|other| other.name == r.name) {
                return Err(invalid(r, "name is used twice".into()));
            }
        }
        let mut resolutions = bucketed;
        resolutions.push(Resolution::total());
        Ok(Self { resolutions })
    }

    /// The resolutions, finest first, `total` last.
    pub fn resolutions(&self) -> &[Resolution] {
        &self.resolutions
    }

    /// The finest bucket width in milliseconds.
    pub fn finest_width_ms(&self) -> i64 {
        self.resolutions[0].width_ms.expect("the finest resolution has a width")
    }

    /// A short stable text naming everything that must agree mesh-wide.
    pub fn canonical(&self) -> String {
        let mut text =
            format!("v1;latency_us:{LATENCY_US_LOWEST}..{LATENCY_US_HIGHEST}/{LATENCY_SIGNIFICANT_DIGITS}");
        for r in &self.resolutions {
            let width = r.width_ms.map_or("inf".to_string(), |w| w.to_string());
            let retention = r.retention_ms.map_or("inf".to_string(), |w| w.to_string());
            text.push_str(&format!(";{}:{width}ms@{retention}ms", r.name));
        }
        text
    }

    /// Fingerprint of [`Settings::canonical`]: 16 hex digits of its XXH3 hash.
    pub fn fingerprint(&self) -> String {
        format!("{:016x}", xxhash_rust::xxh3::xxh3_64(self.canonical().as_bytes()))
    }
}

/// Local limits of a peer: what it accepts from its clients (`limits.*` and `ingest.*` in
/// the configuration, which holds the defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most distinct nodes in the graph; events that would add more are rejected.
    pub nodes_max: usize,
    /// Most distinct edges in the graph; events that would add more are rejected. Each
    /// flow and propagation mark of a `from -> to` counts as an edge.
    pub edges_max: usize,
    /// Most distinct flows; events of further flows are counted in the flow `other`.
    pub flows_max: usize,
    /// How far in the future an event's timestamp may be.
    pub max_clock_skew_ms: i64,
    /// How far in the past an event's timestamp may be; also when a bucket is sealed.
    pub max_lateness_ms: i64,
    /// Most cells one seq may touch; a larger batch takes several seqs, so that deltas
    /// can be paged at seq boundaries.
    pub cells_per_seq_max: usize,
}
