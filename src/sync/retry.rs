//! The one place retry policy lives: capped exponential backoff with full jitter, honouring
//! HQ's Retry-After. Built on the `backoff` crate, which RustSec flags as unmaintained; nothing
//! outside this module names it, so it can be swapped for another crate here alone.

use std::time::Duration;

use backoff::backoff::Backoff;
use backoff::exponential::ExponentialBackoff;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How retry delays are spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Uniform in `[floor, ceiling]` (the default: spreads a fleet's retries apart).
    Full,
    /// Exactly the exponential ceiling (for measuring what jitter buys).
    None,
}

/// Settings of a retry policy.
#[derive(Debug, Clone, Copy)]
pub struct RetryConfig {
    /// Ceiling of the first delay.
    pub initial: Duration,
    /// Largest ceiling.
    pub max: Duration,
    /// Spread.
    pub jitter: Jitter,
}

/// Shortest delay ever returned, so that a zero draw never spins.
const FLOOR: Duration = Duration::from_millis(10);

/// Delays between attempts of one retried activity (upload, outcome pull, CDX download).
/// Transient failures are retried forever: there is no give-up time.
pub struct RetryPolicy {
    backoff: ExponentialBackoff<backoff::SystemClock>,
    config: RetryConfig,
    rng: StdRng,
}

impl RetryPolicy {
    /// A policy; `seed` makes the jitter reproducible (use a random seed in production).
    pub fn new(config: RetryConfig, seed: u64) -> Self {
        let backoff = backoff::ExponentialBackoffBuilder::new()
            .with_initial_interval(config.initial)
            .with_max_interval(config.max)
            .with_multiplier(2.0)
            // The jitter is ours (full jitter); backoff only supplies the capped ceiling.
            .with_randomization_factor(0.0)
            .with_max_elapsed_time(None)
            .build();
        Self {
            backoff,
            config,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The delay before the next attempt after a failure. With `retry_after` (HQ's 429 or 503
    /// header) the delay is at least that long, plus the jittered backoff so that a fleet told
    /// the same Retry-After does not return in one burst.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Duration {
        let ceiling = self.backoff.next_backoff().unwrap_or(self.config.max);
        let drawn = match self.config.jitter {
            Jitter::Full if ceiling > FLOOR => self.rng.gen_range(FLOOR..=ceiling),
            _ => ceiling.max(FLOOR),
        };
        match retry_after {
            Some(wait) => wait + drawn,
            None => drawn,
        }
    }

    /// Forgets past failures (after a success).
    pub fn reset(&mut self) {
        self.backoff.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(jitter: Jitter) -> RetryConfig {
        RetryConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1_000),
            jitter,
        }
    }

    #[test]
    fn ceiling_grows_and_is_capped() {
        let mut p = RetryPolicy::new(config(Jitter::None), 1);
        let delays: Vec<u128> = (0..8).map(|_| p.next_delay(None).as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000, 1000, 1000]);
        p.reset();
        assert_eq!(p.next_delay(None).as_millis(), 100);
    }

    #[test]
    fn full_jitter_stays_within_the_ceiling_and_spreads() {
        let mut draws = Vec::new();
        for seed in 0..50 {
            let mut p = RetryPolicy::new(config(Jitter::Full), seed);
            for _ in 0..4 {
                p.next_delay(None);
            }
            let d = p.next_delay(None);
            assert!(d >= FLOOR && d <= Duration::from_millis(1_000), "{d:?}");
            draws.push(d);
        }
        draws.sort();
        draws.dedup();
        assert!(draws.len() > 25, "jitter should spread delays: {draws:?}");
    }

    #[test]
    fn retry_after_is_a_minimum() {
        let mut p = RetryPolicy::new(config(Jitter::Full), 7);
        for _ in 0..20 {
            assert!(p.next_delay(Some(Duration::from_secs(2))) >= Duration::from_secs(2));
        }
    }
}
