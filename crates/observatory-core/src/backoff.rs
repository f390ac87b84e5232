//! Exponential backoff on the caller's clock: the one schedule of retries in the peer
//! (redials of the peer book, resends of alerts).

/// A delay that doubles after every attempt, from `min_ms` up to `max_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    min_ms: i64,
    max_ms: i64,
    delay_ms: i64,
}

impl Backoff {
    /// A backoff at its first delay. `min_ms` is at least 1 and `max_ms` at least `min_ms`.
    pub fn new(min_ms: i64, max_ms: i64) -> Self {
        let min_ms = min_ms.max(1);
        Self { min_ms, max_ms: max_ms.max(min_ms), delay_ms: min_ms }
    }

    /// The delay before the next attempt.
    pub fn delay_ms(&self) -> i64 {
        self.delay_ms
    }

    /// The delay before the next attempt, doubling the one after it.
    pub fn next_ms(&mut self) -> i64 {
        let delay = self.delay_ms;
        self.delay_ms = self.delay_ms.saturating_mul(2).min(self.max_ms);
        delay
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.delay_ms = self.min_ms;
    }
}
