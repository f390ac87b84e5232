//! Sampling the scenario's distributions with the simulation's seeded RNG.

use rand::Rng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, LogNormal, Normal};

use crate::scenario::Delay;

impl Delay {
    /// One delay in microseconds.
    pub fn sample_us(&self, rng: &mut StdRng) -> u64 {
        let us = |d: &std::time::Duration| d.as_micros() as f64;
        let value = match self {
            Delay::Constant { value } => us(value),
            Delay::Uniform { min, max } => {
                if min == max {
                    us(min)
                } else {
                    rng.random_range(us(min)..=us(max))
                }
            }
            Delay::Normal { mean, stddev } => match Normal::new(us(mean), us(stddev)) {
                Ok(normal) => normal.sample(rng),
                Err(_) => us(mean),
            },
            Delay::Lognormal { median, sigma } => match LogNormal::new(us(median).max(1.0).ln(), *sigma) {
                Ok(lognormal) => lognormal.sample(rng),
                Err(_) => us(median),
            },
        };
        // An hour caps runaway tails; real delays beyond it are outages, not latency.
        value.clamp(0.0, 3.6e9) as u64
    }

    /// One delay in whole milliseconds (at least `floor_ms`).
    pub fn sample_ms(&self, rng: &mut StdRng, floor_ms: i64) -> i64 {
        ((self.sample_us(rng) / 1000) as i64).max(floor_ms)
    }
}

/// SplitMix64: derives independent seeds (per peer, per incarnation) from the run's seed.
pub fn mix_seed(seed: u64, a: u64, b: u64) -> u64 {
    let mut z = seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
