//! Fault injection: the faults tests and demos switch at run time (`PUT /hq/v1/admin/faults`),
//! and the seeded random draws that decide, per request, which fault strikes.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Longest added latency accepted, milliseconds (keeps a typo from hanging a test run).
pub const MAX_LATENCY_MS: u64 = 60_000;

/// Longest `Retry-After` accepted for throttling, seconds.
pub const MAX_RETRY_AFTER_S: u64 = 3_600;

/// The faults in force. Every field is optional; an absent field is off, so `{}` clears all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// HQ is down: 503 to every non-admin request.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub offline: bool,
    /// Probability (0..=1) of a 500 before any processing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    /// Probability (0..=1) that the response is lost after HQ did the work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_response_rate: Option<f64>,
    /// Delay added before handling each non-admin request, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Throttling: 429 with `Retry-After` set to this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle_retry_after_s: Option<u64>,
    /// A poison: the sync job fails every record that matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject: Option<RejectRule>,
}

/// Makes the sync job fail any record whose field `field` equals the string `equals`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectRule {
    /// Top-level field of the record, e.g. `last_name`.
    pub field: String,
    /// The value that poisons the record.
    pub equals: String,
}

impl RejectRule {
    /// Whether `record` (a record as `Payload::record_json` gives it) matches the rule.
    pub fn matches(&self, record: &serde_json::Value) -> bool {
        record
            .get(&self.field)
            .and_then(serde_json::Value::as_str)
            .is_some_and(|v| v == self.equals)
    }
}

/// A fault setting that is out of range; names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FaultsError {
    /// The field at fault, e.g. `error_rate`.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

impl Faults {
    /// Checks every range: rates within 0..=1, latency and retry-after bounded, rule non-empty.
    pub fn validate(&self) -> Result<(), FaultsError> {
        for (field, rate) in [
            ("error_rate", self.error_rate),
            ("drop_response_rate", self.drop_response_rate),
        ] {
            if let Some(r) = rate
                && !(0.0..=1.0).contains(&r)
            {
                return Err(FaultsError {
                    field,
                    message: "must be a number between 0 and 1".into(),
                });
            }
        }
        if self.latency_ms.is_some_and(|ms| ms > MAX_LATENCY_MS) {
            return Err(FaultsError {
                field: "latency_ms",
                message: format!("must be at most {MAX_LATENCY_MS}"),
            });
        }
        if self
            .throttle_retry_after_s
            .is_some_and(|s| s > MAX_RETRY_AFTER_S)
        {
            return Err(FaultsError {
                field: "throttle_retry_after_s",
                message: format!("must be at most {MAX_RETRY_AFTER_S}"),
            });
        }
        if let Some(rule) = &self.reject
            && rule.field.trim().is_empty()
        {
            return Err(FaultsError {
                field: "reject.field",
                message: "must not be empty".into(),
            });
        }
        Ok(())
    }
}

impl Faults {
    /// The same faults brought into range: rates into 0..=1 (NaN = off), latency and
    /// retry-after capped, an empty reject rule dropped.
    pub fn clamped(mut self) -> Faults {
        let rate = |r: Option<f64>| r.filter(|r| !r.is_nan()).map(|r| r.clamp(0.0, 1.0));
        self.error_rate = rate(self.error_rate);
        self.drop_response_rate = rate(self.drop_response_rate);
        self.latency_ms = self.latency_ms.map(|ms| ms.min(MAX_LATENCY_MS));
        self.throttle_retry_after_s = self
            .throttle_retry_after_s
            .map(|s| s.min(MAX_RETRY_AFTER_S));
        self.reject = self.reject.filter(|r| !r.field.trim().is_empty());
        self
    }
}

/// What a fault does to one request before it is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// No fault: handle the request.
    Pass,
    /// 503: HQ is down.
    Offline,
    /// 429 with `Retry-After` in seconds.
    Throttle(u64),
    /// 500 before any processing.
    Error,
}

/// The faults drawn for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Delay before anything else.
    pub latency: Option<Duration>,
    /// Whether the request is refused before processing.
    pub gate: Gate,
    /// Whether the response is lost after the work is done.
    pub drop_response: bool,
}

/// The faults in force and the seeded generator that draws them.
pub struct FaultInjector {
    faults: Mutex<Faults>,
    rng: Mutex<StdRng>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not turn every later request into a panic: the data is plain.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FaultInjector {
    /// No faults; draws follow `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            faults: Mutex::new(Faults::default()),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }

    /// The faults in force.
    pub fn get(&self) -> Faults {
        lock(&self.faults).clone()
    }

    /// Replaces the faults in force (callers validate first).
    pub fn set(&self, faults: Faults) {
        *lock(&self.faults) = faults;
    }

    /// The poison rule in force, if any.
    pub fn reject_rule(&self) -> Option<RejectRule> {
        lock(&self.faults).reject.clone()
    }

    /// Draws the faults for one non-admin request.
    pub fn plan(&self) -> Plan {
        let faults = self.get();
        let mut rng = lock(&self.rng);
        // Drawn in a fixed order, always both, so a seed gives the same sequence whatever
        // faults are switched on.
        let error_draw: f64 = rng.r#gen();
        let drop_draw: f64 = rng.r#gen();
        let gate = if faults.offline {
            Gate::Offline
        } else if let Some(s) = faults.throttle_retry_after_s {
            Gate::Throttle(s)
        } else if faults.error_rate.is_some_and(|p| error_draw < p) {
            Gate::Error
        } else {
            Gate::Pass
        };
        Plan {
            latency: faults
                .latency_ms
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis),
            gate,
            drop_response: faults.drop_response_rate.is_some_and(|p| drop_draw < p),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_body_clears_and_ranges_are_checked() {
        let f: Faults = serde_json::from_str("{}").unwrap();
        assert_eq!(f, Faults::default());
        assert_eq!(serde_json::to_string(&f).unwrap(), "{}");
        let f: Faults = serde_json::from_str(r#"{"error_rate": 1.5}"#).unwrap();
        assert_eq!(f.validate().unwrap_err().field, "error_rate");
        let f: Faults = serde_json::from_str(r#"{"drop_response_rate": -0.1}"#).unwrap();
        assert_eq!(f.validate().unwrap_err().field, "drop_response_rate");
        let f: Faults = serde_json::from_str(
            r#"{"offline": true, "error_rate": 0.2, "drop_response_rate": 0.3, "latency_ms": 50,
                "throttle_retry_after_s": 2, "reject": {"field": "last_name", "equals": "Poison"}}"#,
        )
        .unwrap();
        assert!(f.validate().is_ok());
        assert!(serde_json::from_str::<Faults>(r#"{"ofline": true}"#).is_err());
    }

    #[test]
    fn clamped_brings_values_into_range() {
        let f = Faults {
            error_rate: Some(3.0),
            drop_response_rate: Some(f64::NAN),
            latency_ms: Some(u64::MAX),
            ..Faults::default()
        }
        .clamped();
        assert_eq!(f.error_rate, Some(1.0));
        assert_eq!(f.drop_response_rate, None);
        assert_eq!(f.latency_ms, Some(MAX_LATENCY_MS));
        assert!(f.validate().is_ok());
    }

    #[test]
    fn rates_zero_and_one_are_never_and_always() {
        let inj = FaultInjector::new(7);
        inj.set(Faults {
            error_rate: Some(1.0),
            drop_response_rate: Some(0.0),
            ..Faults::default()
        });
        for _ in 0..100 {
            let p = inj.plan();
            assert_eq!(p.gate, Gate::Error);
            assert!(!p.drop_response);
        }
    }

    #[test]
    fn same_seed_same_draws() {
        let faults = Faults {
            error_rate: Some(0.5),
            drop_response_rate: Some(0.5),
            ..Faults::default()
        };
        let a = FaultInjector::new(42);
        let b = FaultInjector::new(42);
        a.set(faults.clone());
        b.set(faults);
        let pa: Vec<Plan> = (0..50).map(|_| a.plan()).collect();
        let pb: Vec<Plan> = (0..50).map(|_| b.plan()).collect();
        assert_eq!(pa, pb);
        assert!(pa.iter().any(|p| p.gate == Gate::Error));
        assert!(pa.iter().any(|p| p.gate == Gate::Pass));
    }

    #[test]
    fn reject_rule_matches_string_fields_only() {
        let rule = RejectRule {
            field: "last_name".into(),
            equals: "Poison".into(),
        };
        assert!(rule.matches(&serde_json::json!({"last_name": "Poison"})));
        assert!(!rule.matches(&serde_json::json!({"last_name": "Kask"})));
        assert!(!rule.matches(&serde_json::json!({"first_name": "Poison"})));
    }
}
