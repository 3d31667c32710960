//! Feature management: the features that govern asynchronous customer handling, and their
//! prerequisites (the source FAQ's first answer). Used by HQ to refuse enabling a feature whose
//! prerequisites are off, and by the node to treat such a feature as off.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A feature in HQ's feature management.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FeatureId {
    /// "Performance improvements for customer orders and customer transactions".
    CustomerOrdersPerformance,
    /// "Enable enhanced async customer creation".
    EnhancedAsyncCustomerCreation,
    /// "Enable asynchronous creation of customer addresses".
    AsyncCustomerAddresses,
    /// "Enable editing customers in asynchronous mode".
    AsyncCustomerEditing,
}

impl FeatureId {
    /// Every feature.
    pub const ALL: [FeatureId; 4] = [
        FeatureId::CustomerOrdersPerformance,
        FeatureId::EnhancedAsyncCustomerCreation,
        FeatureId::AsyncCustomerAddresses,
        FeatureId::AsyncCustomerEditing,
    ];

    /// The id used in URLs and JSON, e.g. `async-customer-editing`.
    pub fn as_str(self) -> &'static str {
        match self {
            FeatureId::CustomerOrdersPerformance => "customer-orders-performance",
            FeatureId::EnhancedAsyncCustomerCreation => "enhanced-async-customer-creation",
            FeatureId::AsyncCustomerAddresses => "async-customer-addresses",
            FeatureId::AsyncCustomerEditing => "async-customer-editing",
        }
    }

    /// The name HQ's feature management shows.
    pub fn name(self) -> &'static str {
        match self {
            FeatureId::CustomerOrdersPerformance => {
                "Performance improvements for customer orders and customer transactions"
            }
            FeatureId::EnhancedAsyncCustomerCreation => "Enable enhanced async customer creation",
            FeatureId::AsyncCustomerAddresses => {
                "Enable asynchronous creation of customer addresses"
            }
            FeatureId::AsyncCustomerEditing => "Enable editing customers in asynchronous mode",
        }
    }

    /// Features that must be on before this one can be.
    pub fn prerequisites(self) -> &'static [FeatureId] {
        match self {
            FeatureId::AsyncCustomerEditing => &[
                FeatureId::CustomerOrdersPerformance,
                FeatureId::EnhancedAsyncCustomerCreation,
                FeatureId::AsyncCustomerAddresses,
            ],
            _ => &[],
        }
    }
}

impl fmt::Display for FeatureId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FeatureId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FeatureId::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or(())
    }
}

/// Which features are switched on (absent = off).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FeatureSet(pub BTreeMap<FeatureId, bool>);

/// What a feature's state amounts to, with the reason in plain words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Effective {
    /// The feature.
    pub feature: FeatureId,
    /// Switched on in the set.
    pub enabled: bool,
    /// Prerequisites that are off (or themselves not in force).
    pub missing: Vec<FeatureId>,
    /// On and every prerequisite in force.
    pub in_force: bool,
}

impl FeatureSet {
    /// Whether the feature is switched on (regardless of prerequisites).
    pub fn enabled(&self, id: FeatureId) -> bool {
        self.0.get(&id).copied().unwrap_or(false)
    }

    /// Prerequisites of `id` that are not in force.
    pub fn missing_prerequisites(&self, id: FeatureId) -> Vec<FeatureId> {
        id.prerequisites()
            .iter()
            .copied()
            .filter(|p| !self.effective(*p).in_force)
            .collect()
    }

    /// Whether `id` is in force: switched on and every prerequisite in force.
    pub fn effective(&self, id: FeatureId) -> Effective {
        let missing = self.missing_prerequisites(id);
        let enabled = self.enabled(id);
        Effective {
            feature: id,
            enabled,
            in_force: enabled && missing.is_empty(),
            missing,
        }
    }

    /// Switches `id` on, refusing (with the missing prerequisites) when any is not in force.
    pub fn enable(&mut self, id: FeatureId) -> Result<(), Vec<FeatureId>> {
        let missing = self.missing_prerequisites(id);
        if !missing.is_empty() {
            return Err(missing);
        }
        self.0.insert(id, true);
        Ok(())
    }

    /// Switches `id` off. Features that need it stay switched on but are no longer in force.
    pub fn disable(&mut self, id: FeatureId) {
        self.0.insert(id, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn async_editing_needs_its_three_prerequisites() {
        let mut set = FeatureSet::default();
        let missing = set.enable(FeatureId::AsyncCustomerEditing).unwrap_err();
        assert_eq!(
            missing,
            vec![
                FeatureId::CustomerOrdersPerformance,
                FeatureId::EnhancedAsyncCustomerCreation,
                FeatureId::AsyncCustomerAddresses
            ]
        );
        for p in FeatureId::AsyncCustomerEditing.prerequisites() {
            set.enable(*p).unwrap();
        }
        set.enable(FeatureId::AsyncCustomerEditing).unwrap();
        assert!(set.effective(FeatureId::AsyncCustomerEditing).in_force);
    }

    #[test]
    fn a_feature_whose_prerequisite_is_off_is_not_in_force() {
        let mut set = FeatureSet::default();
        for f in FeatureId::ALL {
            set.0.insert(f, true);
        }
        set.disable(FeatureId::AsyncCustomerAddresses);
        let e = set.effective(FeatureId::AsyncCustomerEditing);
        assert!(e.enabled && !e.in_force);
        assert_eq!(e.missing, vec![FeatureId::AsyncCustomerAddresses]);
    }

    #[test]
    fn ids_round_trip() {
        for f in FeatureId::ALL {
            assert_eq!(f.as_str().parse::<FeatureId>(), Ok(f));
            assert_eq!(serde_json::to_value(f).unwrap(), f.as_str());
        }
    }
}
