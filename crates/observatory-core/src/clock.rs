//! The time, as the parts of a peer that need it are given it.
//!
//! Nothing in the core reads a clock: state machines take `now_ms` as an argument. The
//! application owns the one [`Clock`] that reads the system time and hands it to the
//! tasks that drive those machines; tests hand them a [`ManualClock`] instead.

use std::sync::atomic::{AtomicI64, Ordering};

/// Milliseconds since the Unix epoch, by some clock.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The time now.
    fn now_ms(&self) -> i64;
}

/// A clock that says what it is told: for tests and simulations.
#[derive(Debug)]
pub struct ManualClock {
    now_ms: AtomicI64,
}

impl ManualClock {
    /// A clock standing at `now_ms`.
    pub fn new(now_ms: i64) -> Self {
        Self { now_ms: AtomicI64::new(now_ms) }
    }

    /// Moves the clock to `now_ms`.
    pub fn set(&self, now_ms: i64) {
        self.now_ms.store(now_ms, Ordering::SeqCst);
    }

    /// Moves the clock on by `ms`.
    pub fn advance(&self, ms: i64) {
        self.now_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}
