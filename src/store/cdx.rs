//! What HQ sends down (CDX jobs 1010, 1070, 1110) and what a real-time call brings back, kept
//! in the store. Each package is applied in one transaction: a failed download changes nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::schema::{self, decode, encode};
use super::tables::Tables;
use super::writer::{CommandError, Outcome, Refusable};
use super::{Store, StoreError};
use crate::domain::features::FeatureSet;
use crate::domain::mode::{ChannelSettings, Held, HeldConfig};
use crate::domain::operation::Conflict;
use crate::domain::view::CustomerView;
use crate::domain::{OpState, OperationId};

/// Job numbers.
pub const JOB_CUSTOMERS: u32 = 1010;
/// Job 1070: channel configuration.
pub const JOB_CHANNEL: u32 = 1070;
/// Job 1110: global configuration.
pub const JOB_GLOBAL: u32 = 1110;

/// Customers of a 1010 download whose search index writes are sorted and applied together
/// (bounds the memory held: about 8 terms per customer).
const APPLY_SORT_CHUNK: usize = 100_000;

/// A package as held in the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldPackage {
    /// HQ's version.
    pub version: u64,
    /// When the node applied it (Unix ms).
    pub received_at_ms: i64,
    /// When HQ generated it (Unix ms).
    pub generated_at_ms: i64,
    /// The body (1110: a feature set; 1070: channel settings; 1010: a summary).
    pub body: serde_json::Value,
}

/// A customer as HQ holds it, ready to become a customer's base at this node.
#[derive(Debug, Clone)]
pub struct HqCopy {
    /// HQ's account number.
    pub account_number: String,
    /// This store's temporary reference, when this store created the customer.
    pub origin_ref: Option<String>,
    /// HQ's fields and sub-records (`customer_ref` is set by the store).
    pub view: CustomerView,
}

impl Tables<'_> {
    fn held(&self, job: u32) -> Result<Option<HeldPackage>, StoreError> {
        match self.cdx_jobs.get(job).map_err(StoreError::db)? {
            Some(bytes) => decode(bytes.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Records a package unless a newer one is held already.
    fn hold(&mut self, job: u32, package: &HeldPackage) -> Result<bool, StoreError> {
        if self.held(job)?.is_some_and(|h| h.version > package.version) {
            return Ok(false);
        }
        self.cdx_jobs
            .insert(job, encode(package)?.as_slice())
            .map_err(StoreError::db)?;
        Ok(true)
    }

    pub(crate) fn apply_config(
        &mut self,
        job: u32,
        package: &HeldPackage,
    ) -> Result<Refusable, StoreError> {
        Ok(Ok(Outcome::Synced(usize::from(self.hold(job, package)?))))
    }

    pub(crate) fn apply_customers(
        &mut self,
        package: &HeldPackage,
        copies: &[HqCopy],
    ) -> Result<Refusable, StoreError> {
        // A download is large and its customers come in HQ's order: the search index writes
        // are collected and applied sorted, a bounded number at a time.
        for chunk in copies.chunks(APPLY_SORT_CHUNK) {
            self.defer_terms();
            for copy in chunk {
                self.rebase(copy)?;
            }
            self.flush_terms()?;
        }
        self.hold(JOB_CUSTOMERS, package)?;
        Ok(Ok(Outcome::Synced(copies.len())))
    }

    /// Makes HQ's copy the customer's base and rebuilds the view on top of it: one record per
    /// customer, whether it was created here (matched by origin reference) or at HQ.
    pub(crate) fn rebase(&mut self, copy: &HqCopy) -> Result<String, StoreError> {
        let (local_ref, made_here) = match &copy.origin_ref {
            Some(r) if self.has_customer(r)? => (r.clone(), true),
            _ => match self
                .accounts
                .get(copy.account_number.as_str())
                .map_err(StoreError::db)?
            {
                Some(r) => (r.value().to_string(), false),
                None => (copy.account_number.clone(), false),
            },
        };
        // `local_ref` is the customer's reference by now: no look-up by account number. Only a
        // customer made here may have no view record (`store::views`); one known by its account
        // number got it with HQ's confirmation, so the rest of a download reads one record.
        let old = if made_here {
            self.view(&local_ref)?
        } else {
            self.view_record(&local_ref)?
        };
        let mut base = copy.view.clone();
        base.customer_ref.clone_from(&local_ref);
        base.account_number = Some(copy.account_number.clone());
        if let Some(old) = &old {
            base.created_at_ms = old.created_at_ms;
        }
        let json = encode(&base)?;
        // With no local change waiting for HQ (every customer of a first full download; one new
        // to this store has no operations), the view is HQ's copy as it stands: written from
        // the same bytes, nothing recomputed. The base is then the view itself: it gets a record
        // of its own only with the customer's first local change (`Tables::keep_base`), and one
        // it has already is kept current.
        if old.is_none() || !self.has_unconfirmed(&local_ref)? {
            if old.is_some()
                && self
                    .bases
                    .get(local_ref.as_str())
                    .map_err(StoreError::db)?
                    .is_some()
            {
                self.bases
                    .insert(local_ref.as_str(), json.as_slice())
                    .map_err(StoreError::db)?;
            }
            self.put_view_json(old.as_ref(), &base, &json)?;
            return Ok(local_ref);
        }
        self.bases
            .insert(local_ref.as_str(), json.as_slice())
            .map_err(StoreError::db)?;
        // Local changes HQ has not confirmed still apply on top; if one no longer does (HQ
        // removed what it edits), HQ's copy shows until HQ answers that operation.
        let view = match self.compute_view(&local_ref, None)? {
            Ok(Some(v)) => v,
            _ => base,
        };
        self.put_view(old.as_ref(), &view)?;
        Ok(local_ref)
    }

    pub(crate) fn complete_realtime(
        &mut self,
        id: OperationId,
        copy: &HqCopy,
        conflicts: &[Conflict],
        now: i64,
    ) -> Result<Refusable, StoreError> {
        let Some(mut op) = self.op_by_id(id)? else {
            return Ok(Err(CommandError::NotFound {
                what: "operation",
                id: id.to_string(),
            }));
        };
        if op.state != OpState::Completed {
            op.conflicts = conflicts.to_vec();
            self.set_state(&mut op, OpState::Completed, None, now)?;
        }
        self.rebase(copy)?;
        let Some(view) = self.customer(&op.customer_ref)? else {
            return Err(StoreError::Encoding(format!(
                "customer {} vanished",
                op.customer_ref
            )));
        };
        Ok(Ok(Outcome::Updated(Box::new(op)).with_view(view)))
    }

    /// Forgets an operation HQ refused in a real-time call: the till was told, nothing is
    /// queued. Only a pending operation can go (one HQ staged is HQ's to answer).
    pub(crate) fn discard(&mut self, id: OperationId) -> Result<Refusable, StoreError> {
        let Some(op) = self.op_by_id(id)? else {
            return Ok(Err(CommandError::NotFound {
                what: "operation",
                id: id.to_string(),
            }));
        };
        if op.state != OpState::Pending {
            return Ok(Err(CommandError::Conflict(format!(
                "only a pending operation can be discarded; this one is {}",
                op.state.as_str()
            ))));
        }
        let old = self.customer(&op.customer_ref)?;
        self.ops.remove(op.seq).map_err(StoreError::db)?;
        self.op_ids
            .remove(op.id.as_u128())
            .map_err(StoreError::db)?;
        self.by_state
            .remove((op.state.code(), op.seq))
            .map_err(StoreError::db)?;
        self.customer_ops
            .remove((op.customer_ref.as_str(), op.seq))
            .map_err(StoreError::db)?;
        match (self.compute_view(&op.customer_ref, None)?, old) {
            (Ok(Some(view)), old) => self.put_view(old.as_ref(), &view)?,
            (_, Some(old)) => self.remove_view(&old)?,
            (_, None) => {}
        }
        Ok(Ok(Outcome::Synced(1)))
    }
}

/// The configuration held, as last read from the store, with the generation it was read at.
#[derive(Default)]
pub(crate) struct HeldCache {
    /// Bumped by the writer after each commit of a configuration package.
    generation: AtomicU64,
    value: RwLock<Option<(u64, HeldConfig)>>,
}

/// What the node holds of one CDX job, for diagnostics.
#[derive(Debug, Clone, Serialize)]
pub struct JobHeld {
    /// The job.
    pub job: u32,
    /// The package held, if any.
    pub held: Option<HeldPackage>,
}

impl Store {
    /// The packages held for jobs 1010, 1070 and 1110.
    pub fn cdx_jobs(&self) -> Result<Vec<JobHeld>, StoreError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(schema::CDX_JOBS).map_err(StoreError::db)?;
        let mut out = Vec::new();
        for job in [JOB_CUSTOMERS, JOB_CHANNEL, JOB_GLOBAL] {
            let held = match table.get(job).map_err(StoreError::db)? {
                Some(bytes) => Some(decode::<HeldPackage>(bytes.value())?),
                None => None,
            };
            out.push(JobHeld { job, held });
        }
        Ok(out)
    }

    /// The configuration the mode decision uses: jobs 1110 and 1070 as held, however old.
    /// Every till write asks for it, so it is kept in memory and read again from the store only
    /// after the writer committed a new package.
    pub fn held_config(&self) -> Result<HeldConfig, StoreError> {
        let generation = self.held.generation.load(Ordering::Acquire);
        if let Some(config) = self.held_config_cached() {
            return Ok(config);
        }
        let fresh = self.read_held_config()?;
        let mut cached = self
            .held
            .value
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // A package committed since `generation` was read may be missing from `fresh`: then it
        // is answered once but not kept.
        if self.held.generation.load(Ordering::Acquire) == generation {
            *cached = Some((generation, fresh.clone()));
        }
        Ok(fresh)
    }

    /// The configuration held, if it is in memory and current: no read of the store, so a
    /// caller on an async task need not go to the blocking pool for it.
    pub fn held_config_cached(&self) -> Option<HeldConfig> {
        let generation = self.held.generation.load(Ordering::Acquire);
        match &*self
            .held
            .value
            .read()
            .unwrap_or_else(PoisonError::into_inner)
        {
            Some((g, config)) if *g == generation => Some(config.clone()),
            _ => None,
        }
    }

    /// Called by the writer after it committed a configuration package.
    pub(crate) fn held_config_changed(&self) {
        self.held.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn read_held_config(&self) -> Result<HeldConfig, StoreError> {
        let mut config = HeldConfig::default();
        for JobHeld { job, held } in self.cdx_jobs()? {
            let Some(p) = held else { continue };
            match job {
                JOB_GLOBAL => {
                    let value: FeatureSet = serde_json::from_value(p.body)
                        .map_err(|e| StoreError::Encoding(e.to_string()))?;
                    config.global = Some(Held {
                        version: p.version,
                        received_at_ms: p.received_at_ms,
                        value,
                    });
                }
                JOB_CHANNEL => {
                    let value: ChannelSettings = serde_json::from_value(p.body)
                        .map_err(|e| StoreError::Encoding(e.to_string()))?;
                    config.channel = Some(Held {
                        version: p.version,
                        received_at_ms: p.received_at_ms,
                        value,
                    });
                }
                _ => {}
            }
        }
        Ok(config)
    }
}
