//! The node ↔ HQ wire protocol (JSON over HTTP, paths under `/hq/v1`). Client and emulator
//! share these types; `docs/hq-protocol.md` describes the rules around them.

use serde::{Deserialize, Serialize};

use crate::domain::operation::OpError;
use crate::domain::{Action, OperationId, Payload, RecordKind};

/// Path prefix of every HQ endpoint.
pub const PREFIX: &str = "/hq/v1";

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
}

/// `GET /hq/v1/outcomes?store_id=…&after=…&limit=…`: outcomes after a cursor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomePage {
    /// Outcomes in cursor order.
    pub outcomes: Vec<Outcome>,
    /// The cursor to ask after next time (the last entry's, or the one given).
    pub next_cursor: u64,
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
