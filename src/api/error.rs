//! API errors: every refusal is JSON naming the field and the rule.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::domain::FieldError;
use crate::store::writer::WriteError;
use crate::store::{CommandError, StoreError};

/// An error answer of the local API.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable error code.
    pub code: &'static str,
    /// The field (or `body`, or a query or path parameter) at fault.
    pub field: Option<String>,
    /// The rule broken.
    pub rule: Option<&'static str>,
    /// Plain-words explanation.
    pub message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<&'static str>,
    message: &'a str,
}

impl ApiError {
    /// An error with a field and rule.
    pub fn field(
        status: StatusCode,
        code: &'static str,
        field: impl Into<String>,
        rule: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code,
            field: Some(field.into()),
            rule: Some(rule),
            message: message.into(),
        }
    }

    /// An error that concerns no single field.
    pub fn plain(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            field: None,
            rule: None,
            message: message.into(),
        }
    }

    /// 422 for a field that breaks a rule.
    pub fn invalid(e: FieldError) -> Self {
        Self::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            e.field,
            e.rule,
            e.message,
        )
    }

    /// 400 for a bad query or path parameter.
    pub fn bad_param(field: &str, rule: &'static str, message: impl Into<String>) -> Self {
        Self::field(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            field,
            rule,
            message,
        )
    }

    /// 404 for a missing resource named by `field`.
    pub fn not_found(field: &str, message: impl Into<String>) -> Self {
        Self::field(StatusCode::NOT_FOUND, "not_found", field, "exists", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: self.code,
            field: self.field.as_deref(),
            rule: self.rule,
            message: &self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store error");
        match e {
            StoreError::NoSpace => ApiError::plain(
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient_storage",
                "the node's disk is full; nothing was saved. Free space on the node and retry",
            ),
            StoreError::WriterStopped => ApiError::plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the node is shutting down; nothing was saved. Retry shortly",
            ),
            _ => ApiError::plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the node could not save or read its store; nothing was saved. Retry shortly",
            ),
        }
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Command(CommandError::Invalid(fe)) => ApiError::invalid(fe),
            WriteError::Command(CommandError::NotFound { what, id }) => {
                let field = match what {
                    "customer" => "customer_ref",
                    "operation" => "operation_id",
                    _ => "record_id",
                };
                ApiError::not_found(field, format!("no {what} {id}"))
            }
            WriteError::Command(CommandError::Conflict(message)) => ApiError::field(
                StatusCode::CONFLICT,
                "conflict",
                "state",
                "state_allows",
                message,
            ),
            WriteError::Store(store) => match std::sync::Arc::try_unwrap(store) {
                Ok(e) => e.into(),
                Err(shared) => match *shared {
                    StoreError::NoSpace => StoreError::NoSpace.into(),
                    StoreError::WriterStopped => StoreError::WriterStopped.into(),
                    ref other => StoreError::Encoding(other.to_string()).into(),
                },
            },
        }
    }
}
