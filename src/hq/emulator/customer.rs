//! A customer as HQ holds it after the sync job: account number, fields, sub-records, and the
//! operations that built it.

use serde::{Deserialize, Serialize};

use crate::domain::OperationId;
use crate::domain::customer::{Address, Affiliation, Attribute, Contact, NewCustomer};
use crate::domain::view::SubRecord;
use crate::hq::wire::HqCustomerRecord;

/// A sub-record at HQ: the node-assigned id with the record's fields beside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HqSubRecord<T> {
    /// Node-assigned id, e.g. `ADR-42`.
    pub id: String,
    /// The record's fields.
    #[serde(flatten)]
    pub record: T,
}

/// One customer in HQ's customer master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HqCustomer {
    /// HQ's account number, e.g. `C000001`.
    pub account_number: String,
    /// The store that created the customer; empty (and absent in JSON) for a customer
    /// created at HQ.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub store_id: String,
    /// The store's temporary reference for the customer; the account number for a customer
    /// created at HQ (that is how stores refer to it).
    pub customer_ref: String,
    /// The customer's own fields (first_name, last_name, email, phone, customer_group,
    /// language).
    #[serde(flatten)]
    pub fields: NewCustomer,
    /// Addresses.
    pub addresses: Vec<HqSubRecord<Address>>,
    /// Contacts.
    pub contacts: Vec<HqSubRecord<Contact>>,
    /// Affiliations.
    pub affiliations: Vec<HqSubRecord<Affiliation>>,
    /// Attributes.
    pub attributes: Vec<HqSubRecord<Attribute>>,
    /// Every operation applied to this customer, in application order (each at most once).
    pub operation_ids: Vec<OperationId>,
    /// The CDX 1010 version at which it last changed.
    #[serde(default)]
    pub version: u64,
}

impl HqCustomer {
    /// Whether a store created it (rather than HQ itself).
    pub fn from_store(&self) -> bool {
        !self.store_id.is_empty()
    }

    /// The customer as job 1010 and real-time answers send it.
    pub fn record(&self) -> HqCustomerRecord {
        fn subs<T: Clone>(list: &[HqSubRecord<T>]) -> Vec<SubRecord<T>> {
            list.iter()
                .map(|s| SubRecord {
                    id: s.id.clone(),
                    record: s.record.clone(),
                })
                .collect()
        }
        let origin = self.from_store();
        HqCustomerRecord {
            account_number: self.account_number.clone(),
            origin_store_id: origin.then(|| self.store_id.clone()),
            origin_customer_ref: origin.then(|| self.customer_ref.clone()),
            fields: self.fields.clone(),
            addresses: subs(&self.addresses),
            contacts: subs(&self.contacts),
            affiliations: subs(&self.affiliations),
            attributes: subs(&self.attributes),
            version: self.version,
        }
    }
}

/// Inserts a sub-record, or replaces the one with the same id.
pub(crate) fn upsert<T>(list: &mut Vec<HqSubRecord<T>>, id: &str, record: T) {
    match list.iter_mut().find(|s| s.id == id) {
        Some(existing) => existing.record = record,
        None => list.push(HqSubRecord {
            id: id.to_string(),
            record,
        }),
    }
}

/// The sub-record with this id, if HQ holds it.
pub(crate) fn find_mut<'a, T>(list: &'a mut [HqSubRecord<T>], id: &str) -> Option<&'a mut T> {
    list.iter_mut().find(|s| s.id == id).map(|s| &mut s.record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::customer::AddressPurpose;

    #[test]
    fn json_shape_is_flat_and_round_trips() {
        let c = HqCustomer {
            account_number: "C000001".into(),
            store_id: "S0001".into(),
            customer_ref: "S0001-T1".into(),
            fields: NewCustomer {
                first_name: "Õie".into(),
                last_name: "Täht".into(),
                email: None,
                phone: None,
                customer_group: Some("RETAIL".into()),
                language: None,
            },
            addresses: vec![HqSubRecord {
                id: "ADR-1".into(),
                record: Address {
                    street: "Narva mnt 5".into(),
                    city: "Tallinn".into(),
                    postal_code: "10117".into(),
                    country: "EST".into(),
                    county: None,
                    purpose: AddressPurpose::Home,
                    is_primary: true,
                },
            }],
            contacts: vec![],
            affiliations: vec![],
            attributes: vec![],
            operation_ids: vec![OperationId::new_v7(1)],
            version: 3,
        };
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["first_name"], "Õie");
        assert_eq!(json["addresses"][0]["id"], "ADR-1");
        assert_eq!(json["addresses"][0]["city"], "Tallinn");
        let back: HqCustomer = serde_json::from_value(json).unwrap();
        assert_eq!(back, c);
        let r = c.record();
        assert_eq!(r.origin_store_id.as_deref(), Some("S0001"));
        assert_eq!(r.origin_customer_ref.as_deref(), Some("S0001-T1"));
        assert_eq!((r.version, r.addresses[0].id.as_str()), (3, "ADR-1"));
        // A customer created at HQ has no origin, and no store_id in JSON.
        let hq_made = HqCustomer {
            store_id: String::new(),
            customer_ref: "C000001".into(),
            ..c
        };
        assert!(
            !serde_json::to_value(&hq_made)
                .unwrap()
                .as_object()
                .unwrap()
                .contains_key("store_id")
        );
        assert_eq!(hq_made.record().origin_store_id, None);
        assert_eq!(hq_made.record().origin_customer_ref, None);
    }
}
