//! HQ's configuration, with no I/O: feature management (what CDX job 1110 carries) and the
//! channels' functionality-profile settings (what job 1070 carries), each with a version that
//! grows with every change, so a node can tell a stale copy from a fresh one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::features::{FeatureId, FeatureSet};
use crate::hq::wire::{ChannelConfigPackage, GlobalConfigPackage};

/// Most channels HQ keeps settings for (admin changes for more are refused).
pub const MAX_CHANNELS: usize = 10_000;

/// Longest channel id accepted, characters.
pub const MAX_CHANNEL_ID_CHARS: usize = 64;

/// One feature as HQ's feature management shows it (`GET /hq/v1/admin/features`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureStatus {
    /// The feature's id, e.g. `async-customer-editing`.
    pub feature: FeatureId,
    /// Its name in feature management.
    pub name: String,
    /// Switched on.
    pub enabled: bool,
    /// Switched on and every prerequisite in force.
    pub in_force: bool,
    /// Features that must be on before this one can be.
    pub prerequisites: Vec<FeatureId>,
    /// Prerequisites that are not in force now.
    pub missing: Vec<FeatureId>,
}

/// Body of `PUT /hq/v1/admin/features/{id}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureRequest {
    /// Switch it on (`true`) or off.
    pub enabled: bool,
}

/// Answer of `PUT /hq/v1/admin/features/{id}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureChange {
    /// The feature.
    pub feature: FeatureId,
    /// Switched on now.
    pub enabled: bool,
    /// Switched on and every prerequisite in force.
    pub in_force: bool,
    /// The 1110 version after the change (unchanged when nothing changed).
    pub version: u64,
}

/// Body of `PUT /hq/v1/admin/channel`: the functionality-profile settings to set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSettingsRequest {
    /// "Create customer in async mode".
    pub create_customer_async: bool,
}

/// Answer of `PUT /hq/v1/admin/channel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelSettingsChange {
    /// The channel changed; `None` = every channel and the default for new ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
    /// "Create customer in async mode", now.
    pub create_customer_async: bool,
    /// The 1070 version of the changed channel(s) after the change.
    pub version: u64,
}

/// Why a channel setting was not changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The channel id is empty or too long.
    #[error("channel_id must be 1 to {MAX_CHANNEL_ID_CHARS} characters")]
    InvalidId,
    /// HQ already keeps settings for [`MAX_CHANNELS`] channels.
    #[error("HQ keeps settings for at most {MAX_CHANNELS} channels")]
    Full,
}

/// A channel's settings and the 1070 version at which they last changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ChannelSettings {
    create_customer_async: bool,
    version: u64,
}

/// HQ's feature management and channel settings.
#[derive(Debug, Clone)]
pub struct HqConfig {
    features: FeatureSet,
    /// Job 1110's version: +1 on every feature change.
    global_version: u64,
    /// Settings of channels changed one by one; others use `default_channel`.
    channels: BTreeMap<String, ChannelSettings>,
    default_channel: ChannelSettings,
    /// Job 1070's counter: +1 on every settings change; the changed channels take its value.
    channel_counter: u64,
}

impl Default for HqConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl HqConfig {
    /// Every feature off, async customer creation off everywhere; both packages at version 1.
    pub fn new() -> Self {
        // Every feature listed explicitly, so the 1110 package names each one.
        let features = FeatureSet(FeatureId::ALL.into_iter().map(|f| (f, false)).collect());
        Self {
            features,
            global_version: 1,
            channels: BTreeMap::new(),
            default_channel: ChannelSettings {
                create_customer_async: false,
                version: 1,
            },
            channel_counter: 1,
        }
    }

    /// Switches a feature on or off. Switching on is refused, naming the prerequisites not in
    /// force; switching off always succeeds (features that need it stay on but fall out of
    /// force). The 1110 version grows only when the state changes.
    pub fn set_feature(
        &mut self,
        id: FeatureId,
        enabled: bool,
    ) -> Result<FeatureChange, Vec<FeatureId>> {
        let before = self.features.enabled(id);
        if enabled {
            self.features.enable(id)?;
        } else {
            self.features.disable(id);
        }
        if before != enabled {
            self.global_version += 1;
        }
        Ok(FeatureChange {
            feature: id,
            enabled,
            in_force: self.features.effective(id).in_force,
            version: self.global_version,
        })
    }

    /// Switches every feature on (prerequisites first), as `hq-sim --enable-async` does.
    pub fn enable_all_features(&mut self) {
        // Bounded: four features, and prerequisites come before the features needing them
        // in `FeatureId::ALL`; a second pass covers any other order.
        for _ in 0..2 {
            for id in FeatureId::ALL {
                let _ = self.set_feature(id, true);
            }
        }
    }

    /// Every feature with its state, prerequisites and what is missing.
    pub fn features(&self) -> Vec<FeatureStatus> {
        FeatureId::ALL
            .into_iter()
            .map(|id| {
                let e = self.features.effective(id);
                FeatureStatus {
                    feature: id,
                    name: id.name().to_string(),
                    enabled: e.enabled,
                    in_force: e.in_force,
                    prerequisites: id.prerequisites().to_vec(),
                    missing: e.missing,
                }
            })
            .collect()
    }

    /// The feature set as it stands.
    pub fn feature_set(&self) -> &FeatureSet {
        &self.features
    }

    /// Job 1110's package, stamped `now_ms`.
    pub fn global_package(&self, now_ms: i64) -> GlobalConfigPackage {
        GlobalConfigPackage {
            version: self.global_version,
            generated_at_ms: now_ms,
            features: self.features.clone(),
        }
    }

    /// Sets "create customer in async mode" for one channel, or (`None`) for every channel
    /// and the default. The changed channels take a new 1070 version; nothing changes (and no
    /// version grows) when the setting already had that value.
    pub fn set_channel(
        &mut self,
        channel_id: Option<&str>,
        create_customer_async: bool,
    ) -> Result<ChannelSettingsChange, ChannelError> {
        let next = self.channel_counter + 1;
        let Some(id) = channel_id else {
            let changed = self.default_channel.create_customer_async != create_customer_async
                || self
                    .channels
                    .values()
                    .any(|c| c.create_customer_async != create_customer_async);
            if changed {
                self.channel_counter = next;
                let settings = ChannelSettings {
                    create_customer_async,
                    version: next,
                };
                self.default_channel = settings;
                // Bounded by MAX_CHANNELS.
                for c in self.channels.values_mut() {
                    *c = settings;
                }
            }
            return Ok(ChannelSettingsChange {
                channel_id: None,
                create_customer_async,
                version: self.default_channel.version,
            });
        };
        if id.trim().is_empty() || id.chars().count() > MAX_CHANNEL_ID_CHARS {
            return Err(ChannelError::InvalidId);
        }
        if !self.channels.contains_key(id) && self.channels.len() >= MAX_CHANNELS {
            return Err(ChannelError::Full);
        }
        let default = self.default_channel;
        let settings = self.channels.entry(id.to_string()).or_insert(default);
        if settings.create_customer_async != create_customer_async {
            self.channel_counter = next;
            *settings = ChannelSettings {
                create_customer_async,
                version: next,
            };
        }
        Ok(ChannelSettingsChange {
            channel_id: Some(id.to_string()),
            create_customer_async,
            version: settings.version,
        })
    }

    /// Job 1070's package for a channel (the default settings for a channel never set).
    pub fn channel_package(&self, channel_id: &str, now_ms: i64) -> ChannelConfigPackage {
        let settings = self
            .channels
            .get(channel_id)
            .copied()
            .unwrap_or(self.default_channel);
        ChannelConfigPackage {
            version: settings.version,
            generated_at_ms: now_ms,
            channel_id: channel_id.to_string(),
            create_customer_async: settings.create_customer_async,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn async_editing_is_refused_naming_its_three_prerequisites_then_allowed() {
        let mut hq = HqConfig::new();
        let v0 = hq.global_package(0).version;
        let missing = hq
            .set_feature(FeatureId::AsyncCustomerEditing, true)
            .unwrap_err();
        assert_eq!(
            missing,
            vec![
                FeatureId::CustomerOrdersPerformance,
                FeatureId::EnhancedAsyncCustomerCreation,
                FeatureId::AsyncCustomerAddresses
            ]
        );
        let names: Vec<&str> = missing.iter().map(|f| f.name()).collect();
        assert_eq!(
            names,
            [
                "Performance improvements for customer orders and customer transactions",
                "Enable enhanced async customer creation",
                "Enable asynchronous creation of customer addresses"
            ]
        );
        // A refusal changes nothing.
        assert_eq!(hq.global_package(0).version, v0);
        assert!(!hq.feature_set().enabled(FeatureId::AsyncCustomerEditing));
        for (i, p) in FeatureId::AsyncCustomerEditing
            .prerequisites()
            .iter()
            .enumerate()
        {
            let change = hq.set_feature(*p, true).unwrap();
            assert!(change.in_force);
            assert_eq!(change.version, v0 + 1 + i as u64);
        }
        let change = hq
            .set_feature(FeatureId::AsyncCustomerEditing, true)
            .unwrap();
        assert!(change.enabled && change.in_force);
        assert_eq!(change.version, v0 + 4);
        assert_eq!(hq.global_package(7).version, v0 + 4);
        assert_eq!(hq.global_package(7).generated_at_ms, 7);
    }

    #[test]
    fn only_real_changes_bump_1110_and_disabling_a_prerequisite_takes_dependents_out_of_force() {
        let mut hq = HqConfig::new();
        hq.enable_all_features();
        let v = hq.global_package(0).version;
        assert!(hq.features().iter().all(|f| f.in_force));
        // Enabling what is on changes nothing.
        assert_eq!(
            hq.set_feature(FeatureId::AsyncCustomerAddresses, true)
                .unwrap()
                .version,
            v
        );
        let off = hq
            .set_feature(FeatureId::AsyncCustomerAddresses, false)
            .unwrap();
        assert_eq!(off.version, v + 1);
        let editing = hq
            .features()
            .into_iter()
            .find(|f| f.feature == FeatureId::AsyncCustomerEditing)
            .unwrap();
        assert!(editing.enabled && !editing.in_force);
        assert_eq!(editing.missing, vec![FeatureId::AsyncCustomerAddresses]);
        assert_eq!(editing.prerequisites.len(), 3);
    }

    #[test]
    fn channel_settings_are_per_channel_with_a_default_and_bump_1070() {
        let mut hq = HqConfig::new();
        let p = hq.channel_package("CH0001", 0);
        assert!(!p.create_customer_async);
        assert_eq!(p.version, 1);
        let change = hq.set_channel(Some("CH0001"), true).unwrap();
        assert_eq!(change.version, 2);
        assert!(hq.channel_package("CH0001", 0).create_customer_async);
        assert_eq!(hq.channel_package("CH0001", 0).version, 2);
        // Other channels keep the default.
        assert!(!hq.channel_package("CH0002", 0).create_customer_async);
        assert_eq!(hq.channel_package("CH0002", 0).version, 1);
        // Setting the same value again changes nothing.
        assert_eq!(hq.set_channel(Some("CH0001"), true).unwrap().version, 2);
        // Every channel and the default.
        let all = hq.set_channel(None, false).unwrap();
        assert_eq!((all.channel_id, all.version), (None, 3));
        for ch in ["CH0001", "CH0002", "NEW"] {
            let p = hq.channel_package(ch, 0);
            assert_eq!((p.create_customer_async, p.version), (false, 3), "{ch}");
        }
        assert_eq!(hq.set_channel(None, false).unwrap().version, 3);
        assert_eq!(
            hq.set_channel(Some(" "), true),
            Err(ChannelError::InvalidId)
        );
        let long = "x".repeat(MAX_CHANNEL_ID_CHARS + 1);
        assert_eq!(
            hq.set_channel(Some(&long), true),
            Err(ChannelError::InvalidId)
        );
    }
}
