//! The node ↔ HQ wire protocol (JSON over HTTP, paths under `/hq/v1`). Client and emulator
//! share these types; `docs/hq-protocol.md` describes the rules around them.

use serde::{Deserialize, Serialize};

use crate::domain::operation::OpError;
use crate::domain::{Action, OperationId, Payload, RecordKind};

/// Path prefix of every HQ endpoint.
pub const PREFIX: &str = "/hq/v1";

/// Header naming the calling store on every node request (for HQ's logs and load figures).
pub const STORE_HEADER: &str = "x-outpost-store";

/// One operation as uploaded (a row for one of HQ's five async tables).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireOperation {
    /// Unique id assigned by the node at acceptance; HQ deduplicates by it.
    pub operation_id: OperationId,
    /// Payload revision: 0 at acceptance, +1 per operator edit of a failed operation.
    pub revision: u32,
    /// The node's acceptance order; HQ applies one customer's operations in this order.
    pub seq: u64,
    /// The customer's temporary reference at the node.
    pub customer_ref: String,
    /// Which async table.
    pub kind: RecordKind,
    /// Create or edit.
    pub action: Action,
    /// The sub-record, for addresses, contacts, affiliations and attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_id: Option<String>,
    /// The record, tagged by kind and action.
    pub payload: Payload,
    /// When the node accepted it (Unix milliseconds).
    pub accepted_at_ms: i64,
    /// For an edit: the values the patched fields had in the node's copy when the till edited
    /// them (`{"last_name": "Tamm"}`). HQ applies a field only if HQ's value still equals this
    /// base (or already equals the new value); otherwise it reports a conflict on that field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<serde_json::Value>,
}

/// `POST /hq/v1/uploads`: a batch of operations from one store (the P-job).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadRequest {
    /// The store that sends it.
    pub store_id: String,
    /// The store's channel.
    pub channel_id: String,
    /// Id of this batch (for logs; idempotency is per operation).
    pub batch_id: uuid::Uuid,
    /// Operations in the node's acceptance order.
    pub operations: Vec<WireOperation>,
}

/// What HQ did with one uploaded operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageStatus {
    /// Staged now, or staged before with this same revision and payload (a retry).
    Staged,
    /// Refused: the same id and revision came before with a different payload, or a new
    /// revision came for an operation that has not failed.
    Rejected,
}

/// The answer for one uploaded operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageResult {
    /// The operation.
    pub operation_id: OperationId,
    /// The revision this answer is for.
    pub revision: u32,
    /// Staged or rejected.
    pub status: StageStatus,
    /// Why it was rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<OpError>,
}

/// Answer to an upload: one result per operation, in request order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadResponse {
    /// Per-operation results.
    pub results: Vec<StageResult>,
    /// The identity of the outcome feed the staged operations will be reported in (see
    /// [`OutcomePage::feed_id`]). Absent from an HQ that does not send it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed_id: Option<u64>,
}

/// The state of an operation at HQ, as reported by the outcome feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeStatus {
    /// Processed by the sync job: OnlineOperationCompleted = 1.
    Completed,
    /// Refused by the sync job (HQ-side validation); `error` says why.
    Failed,
    /// Not processed: an earlier operation of the same customer failed.
    Held,
}

/// One entry of the outcome feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Position in this store's feed; strictly increasing.
    pub cursor: u64,
    /// The operation.
    pub operation_id: OperationId,
    /// The revision the outcome is for.
    pub revision: u32,
    /// Completed, failed or held.
    pub status: OutcomeStatus,
    /// The customer's temporary reference at the node.
    pub customer_ref: String,
    /// HQ's customer account number, once the customer exists at HQ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_number: Option<String>,
    /// HQ's error (failed) or hold reason (held).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<OpError>,
    /// Fields of an edit that HQ did not apply because HQ's copy had changed them too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<FieldConflict>,
}

/// `GET /hq/v1/outcomes?store_id=…&after=…&limit=…`: outcomes after a cursor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomePage {
    /// Outcomes in cursor order.
    pub outcomes: Vec<Outcome>,
    /// The cursor to ask after next time (the last entry's, or the one given).
    pub next_cursor: u64,
    /// Identity of this outcome feed. It changes only when HQ lost its outcome history (an HQ
    /// restored from backup, or a restarted emulator): a node that sees a new one re-reads from
    /// cursor 0 and uploads again what it has no outcome for (HQ deduplicates by operation id).
    #[serde(default)]
    pub feed_id: u64,
}

/// An error answer from HQ.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HqErrorBody {
    /// Machine-readable code.
    pub error: String,
    /// Plain words.
    pub message: String,
}

/// `GET /hq/v1/health`: HQ answers and is accepting work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthResponse {
    /// Always `ok` when HQ answers 200.
    pub status: String,
}

/// Most operations HQ accepts in one upload batch; a larger batch is refused with 413.
pub const MAX_UPLOAD_OPERATIONS: usize = 10_000;

/// Largest upload body HQ reads, bytes; a larger body is refused with 413.
pub const MAX_UPLOAD_BYTES: usize = 16 * 1024 * 1024;

/// Outcomes returned by `GET /hq/v1/outcomes` when `limit` is absent.
pub const DEFAULT_OUTCOME_LIMIT: usize = 1_000;

/// Most outcomes returned by one `GET /hq/v1/outcomes`; a larger `limit` is lowered to it.
pub const MAX_OUTCOME_LIMIT: usize = 10_000;

/// A field an edit changed at the store while HQ's copy changed it too: HQ kept its value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldConflict {
    /// The field, e.g. `last_name`.
    pub field: String,
    /// The value the store's edit wanted.
    pub store_value: serde_json::Value,
    /// The value HQ kept.
    pub hq_value: serde_json::Value,
}

/// `POST /hq/v1/rts/operations`: a real-time service call, applied by HQ at once. Idempotent by
/// operation id, sharing one registry with uploads: an operation first tried in real time and
/// then queued after a lost answer is applied once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RtsRequest {
    /// The calling store.
    pub store_id: String,
    /// The store's channel.
    pub channel_id: String,
    /// The operation to apply now.
    pub operation: WireOperation,
}

/// HQ's answer to a real-time call that it processed (an HQ-side refusal is a 422 with
/// [`HqErrorBody`] and `field`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RtsResponse {
    /// The operation.
    pub operation_id: OperationId,
    /// The customer's HQ account number.
    pub account_number: String,
    /// Fields HQ did not apply (see [`FieldConflict`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<FieldConflict>,
    /// The customer as HQ now holds it.
    pub customer: HqCustomerRecord,
}

/// CDX download job numbers.
pub mod jobs {
    /// Job 1010: customers.
    pub const CUSTOMERS: u32 = 1010;
    /// Job 1070: channel configuration.
    pub const CHANNEL: u32 = 1070;
    /// Job 1110: global configuration (feature management).
    pub const GLOBAL: u32 = 1110;
}

/// `GET /hq/v1/cdx/1110`: global configuration — feature-management state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GlobalConfigPackage {
    /// Version of this package; grows with every change at HQ.
    pub version: u64,
    /// When HQ generated it (Unix ms).
    pub generated_at_ms: i64,
    /// Which features are switched on at HQ.
    pub features: crate::domain::features::FeatureSet,
}

/// `GET /hq/v1/cdx/1070?channel_id=…`: the channel's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelConfigPackage {
    /// Version of this package.
    pub version: u64,
    /// When HQ generated it (Unix ms).
    pub generated_at_ms: i64,
    /// The channel.
    pub channel_id: String,
    /// Functionality profile: "Create customer in async mode".
    pub create_customer_async: bool,
}

/// A customer as HQ sends it down in job 1010 (and answers real-time calls with).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HqCustomerRecord {
    /// HQ's account number.
    pub account_number: String,
    /// The store that created it asynchronously, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_store_id: Option<String>,
    /// That store's temporary reference for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_customer_ref: Option<String>,
    /// The customer's fields.
    pub fields: crate::domain::NewCustomer,
    /// Addresses.
    pub addresses: Vec<crate::domain::view::SubRecord<crate::domain::Address>>,
    /// Contacts.
    pub contacts: Vec<crate::domain::view::SubRecord<crate::domain::Contact>>,
    /// Affiliations.
    pub affiliations: Vec<crate::domain::view::SubRecord<crate::domain::Affiliation>>,
    /// Attributes.
    pub attributes: Vec<crate::domain::view::SubRecord<crate::domain::Attribute>>,
    /// The 1010 version at which it last changed.
    pub version: u64,
}

/// `GET /hq/v1/cdx/1010?after_version=V&after_account=A&limit=N`: customers changed since
/// version `V` (all of them when `V` is 0: a full package), in (version, account) order, one
/// page at a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomersPage {
    /// The 1010 version the whole download brings the node to.
    pub version: u64,
    /// Whether this is a full package (every customer) rather than changes.
    pub full: bool,
    /// When HQ generated it (Unix ms).
    pub generated_at_ms: i64,
    /// This page's customers.
    pub customers: Vec<HqCustomerRecord>,
    /// Where the next page starts; `None` on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<CustomersCursor>,
}

/// Position in a 1010 download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomersCursor {
    /// Version of the last customer returned.
    pub after_version: u64,
    /// Account number of the last customer returned.
    pub after_account: String,
}

/// `PUT /hq/v1/admin/features/{id}` answer when prerequisites are off (409).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MissingPrerequisites {
    /// Always `prerequisites_off`.
    pub error: String,
    /// The missing features' ids.
    pub missing: Vec<crate::domain::features::FeatureId>,
    /// Their names as feature management shows them.
    pub missing_names: Vec<String>,
    /// Plain words.
    pub message: String,
}

/// Customers returned by `GET /hq/v1/cdx/1010` when `limit` is absent.
pub const DEFAULT_CUSTOMERS_LIMIT: usize = 1_000;

/// Most customers returned by one `GET /hq/v1/cdx/1010`; a larger `limit` is lowered to it.
pub const MAX_CUSTOMERS_LIMIT: usize = 10_000;

/// HQ's refusal of an operation it was asked to apply now (a real-time call, or an admin
/// change), answered with 422: [`HqErrorBody`] plus the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalBody {
    /// Machine-readable code: `validation`, `invalid`, `conflict` or `held`.
    pub error: String,
    /// Plain words.
    pub message: String,
    /// The field at fault, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl From<OpError> for RefusalBody {
    fn from(e: OpError) -> Self {
        RefusalBody {
            error: e.code,
            message: e.message,
            field: e.field,
        }
    }
}

impl From<RefusalBody> for OpError {
    fn from(r: RefusalBody) -> Self {
        OpError {
            code: r.error,
            message: r.message,
            field: r.field,
        }
    }
}
