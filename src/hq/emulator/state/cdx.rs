//! Job 1010 (customers, full and incremental) and the admin changes made at HQ itself (as a
//! call-centre would), which job 1010 then carries down.

use std::ops::Bound;

use super::{HqModel, unknown_group, validation};
use crate::domain::customer::{CustomerPatch, NewCustomer, Validate};
use crate::domain::operation::OpError;
use crate::hq::wire::{CustomersCursor, CustomersPage, HqCustomerRecord, MAX_CUSTOMERS_LIMIT};

/// Why an admin change of a customer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// No customer has this account number.
    #[error("HQ holds no customer {0}")]
    NotFound(String),
    /// The record breaks a rule (the same rules as the sync job applies).
    #[error("{}", .0.message)]
    Invalid(OpError),
    /// HQ holds as many customers as it may.
    #[error("HQ is full: {0}")]
    Full(String),
}

impl HqModel {
    /// Job 1010's current version (0 while HQ holds no customer).
    pub fn customer_version(&self) -> u64 {
        self.customer_version
    }

    /// Job 1010: customers whose (version, account number) comes after the position given, in
    /// that order, at most `limit` (brought into 1..=[`MAX_CUSTOMERS_LIMIT`]). Without
    /// `after_account` (or with an empty one) the position is after every customer of
    /// `after_version`, so `after_version` 0 gives every customer (a full package) and a node
    /// holding version V asks with V alone for what changed since.
    pub fn customers_page(
        &self,
        after_version: u64,
        after_account: Option<&str>,
        limit: usize,
        now_ms: i64,
    ) -> CustomersPage {
        let limit = limit.clamp(1, MAX_CUSTOMERS_LIMIT);
        let start = match after_account.filter(|a| !a.is_empty()) {
            Some(account) => Some(Bound::Excluded((after_version, account.to_string()))),
            // Nothing comes after the largest version.
            None => after_version
                .checked_add(1)
                .map(|next| Bound::Included((next, String::new()))),
        };
        let mut customers: Vec<HqCustomerRecord> = start
            .map(|start| {
                self.changes
                    .range((start, Bound::Unbounded))
                    // One more than asked, to tell whether more remain.
                    .take(limit + 1)
                    .filter_map(|(_, number)| self.customers.get(number))
                    .map(|c| c.record())
                    .collect()
            })
            .unwrap_or_default();
        let more = customers.len() > limit;
        customers.truncate(limit);
        let next = more
            .then(|| customers.last())
            .flatten()
            .map(|c| CustomersCursor {
                after_version: c.version,
                after_account: c.account_number.clone(),
            });
        CustomersPage {
            version: self.customer_version,
            full: after_version == 0,
            generated_at_ms: now_ms,
            customers,
            next,
        }
    }

    /// The customer with this account number, as job 1010 sends it.
    pub fn customer_record(&self, account_number: &str) -> Option<HqCustomerRecord> {
        let number = self.by_account.get(account_number)?;
        self.customers.get(number).map(|c| c.record())
    }

    /// Creates a customer at HQ (no originating store): a new account number and a new 1010
    /// version. Refused when a field breaks a rule or HQ is full.
    pub fn admin_create_customer(
        &mut self,
        fields: NewCustomer,
    ) -> Result<HqCustomerRecord, AdminError> {
        if self.customers.len() >= self.max_customers {
            return Err(AdminError::Full(format!(
                "HQ holds at most {} customers",
                self.max_customers
            )));
        }
        fields
            .validate()
            .map_err(|e| AdminError::Invalid(validation(e.field, e.message)))?;
        if let Some(e) = fields.customer_group.as_deref().and_then(unknown_group) {
            return Err(AdminError::Invalid(e));
        }
        let (number, _) = self.create_customer(&(String::new(), String::new()), fields);
        self.customers
            .get(&number)
            .map(|c| c.record())
            .ok_or_else(|| AdminError::NotFound(format!("#{number}")))
    }

    /// Edits a customer at HQ: the patch is applied as is (HQ's own change wins) and the
    /// customer gets a new 1010 version.
    pub fn admin_patch_customer(
        &mut self,
        account_number: &str,
        patch: &CustomerPatch,
    ) -> Result<HqCustomerRecord, AdminError> {
        let Some(number) = self.by_account.get(account_number).copied() else {
            return Err(AdminError::NotFound(account_number.to_string()));
        };
        patch
            .validate()
            .map_err(|e| AdminError::Invalid(validation(e.field, e.message)))?;
        let group = patch.customer_group.as_ref().and_then(Option::as_deref);
        if let Some(e) = group.and_then(unknown_group) {
            return Err(AdminError::Invalid(e));
        }
        let Some(customer) = self.customers.get_mut(&number) else {
            return Err(AdminError::NotFound(account_number.to_string()));
        };
        patch.apply_to(&mut customer.fields);
        self.touch(number);
        self.customer_record(account_number)
            .ok_or_else(|| AdminError::NotFound(account_number.to_string()))
    }
}
