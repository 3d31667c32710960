//! The asynchronous / real-time decision, made from the configuration the node holds, however
//! old: HQ's feature state (CDX job 1110) and the channel's settings (job 1070). With nothing
//! held yet the node is in real-time mode, as a store is before its first download.

use serde::{Deserialize, Serialize};

use super::features::{FeatureId, FeatureSet};
use super::rfc3339;

/// A downloaded configuration package as the node holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Held<T> {
    /// HQ's version of the package.
    pub version: u64,
    /// When the node applied it (Unix ms).
    pub received_at_ms: i64,
    /// The configuration.
    pub value: T,
}

/// The channel settings that matter to customer handling (job 1070).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelSettings {
    /// Functionality profile: "Create customer in async mode".
    pub create_customer_async: bool,
}

/// What the node holds of jobs 1110 and 1070.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeldConfig {
    /// Job 1110: feature management.
    pub global: Option<Held<FeatureSet>>,
    /// Job 1070: channel configuration.
    pub channel: Option<Held<ChannelSettings>>,
}

/// What the till asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// Create a customer.
    Create,
    /// Edit a customer or create or edit one of its sub-records.
    Edit,
}

/// How an operation goes to HQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Queued at the node, uploaded later.
    Async,
    /// Sent to HQ now (a real-time service call).
    RealTime,
}

/// A decision with its reason in plain words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The mode.
    pub mode: Mode,
    /// Why, naming the configuration held ("…in the 1110 configuration held, version 3,
    /// received at 2026-11-24T10:00:00Z").
    pub reason: String,
}

fn held_at<T>(job: u32, held: &Held<T>) -> String {
    format!(
        "in the {job} configuration held, version {}, received at {}",
        held.version,
        rfc3339(held.received_at_ms)
    )
}

/// Decides between asynchronous and real-time mode from what is held. Never waits for HQ.
pub fn decide(held: &HeldConfig, intent: Intent) -> Decision {
    let real_time = |reason: String| Decision {
        mode: Mode::RealTime,
        reason,
    };
    let Some(channel) = &held.channel else {
        return real_time(
            "no channel configuration (CDX job 1070) held yet: run jobs 1110, 1010 and 1070".into(),
        );
    };
    if !channel.value.create_customer_async {
        return real_time(format!(
            "create customer in async mode is off {}",
            held_at(1070, channel)
        ));
    }
    match intent {
        Intent::Create => Decision {
            mode: Mode::Async,
            reason: format!(
                "create customer in async mode is on {}",
                held_at(1070, channel)
            ),
        },
        Intent::Edit => {
            let Some(global) = &held.global else {
                return real_time(
                    "no global configuration (CDX job 1110) held yet, so async editing is off"
                        .into(),
                );
            };
            let editing = global.value.effective(FeatureId::AsyncCustomerEditing);
            if !editing.enabled {
                return real_time(format!("async editing is off {}", held_at(1110, global)));
            }
            if !editing.in_force {
                let missing: Vec<&str> = editing.missing.iter().map(|f| f.name()).collect();
                return real_time(format!(
                    "async editing is on but its prerequisites are off ({}) {}",
                    missing.join(", "),
                    held_at(1110, global)
                ));
            }
            Decision {
                mode: Mode::Async,
                reason: format!("async editing is on {}", held_at(1110, global)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(on: bool) -> Option<Held<ChannelSettings>> {
        Some(Held {
            version: 4,
            received_at_ms: 0,
            value: ChannelSettings {
                create_customer_async: on,
            },
        })
    }

    fn global(features: &[FeatureId]) -> Option<Held<FeatureSet>> {
        let mut set = FeatureSet::default();
        for f in features {
            set.0.insert(*f, true);
        }
        Some(Held {
            version: 7,
            received_at_ms: 0,
            value: set,
        })
    }

    #[test]
    fn nothing_held_means_real_time() {
        let d = decide(&HeldConfig::default(), Intent::Create);
        assert_eq!(d.mode, Mode::RealTime);
        assert!(d.reason.contains("1070"), "{}", d.reason);
    }

    #[test]
    fn create_follows_the_channel_setting() {
        let off = HeldConfig {
            global: None,
            channel: channel(false),
        };
        let d = decide(&off, Intent::Create);
        assert_eq!(d.mode, Mode::RealTime);
        assert!(d.reason.contains("version 4"), "{}", d.reason);
        let on = HeldConfig {
            global: None,
            channel: channel(true),
        };
        assert_eq!(decide(&on, Intent::Create).mode, Mode::Async);
    }

    #[test]
    fn edit_needs_async_editing_in_force() {
        let held = HeldConfig {
            global: global(&[FeatureId::AsyncCustomerEditing]),
            channel: channel(true),
        };
        let d = decide(&held, Intent::Edit);
        assert_eq!(d.mode, Mode::RealTime);
        assert!(d.reason.contains("prerequisites are off"), "{}", d.reason);
        assert!(d.reason.contains("version 7"), "{}", d.reason);
        let held = HeldConfig {
            global: global(&FeatureId::ALL),
            channel: channel(true),
        };
        assert_eq!(decide(&held, Intent::Edit).mode, Mode::Async);
        let held = HeldConfig {
            global: global(&[]),
            channel: channel(true),
        };
        assert!(
            decide(&held, Intent::Edit)
                .reason
                .starts_with("async editing is off in the 1110")
        );
    }
}
