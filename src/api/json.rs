//! JSON request bodies: size-limited, and every parse error names the field and the rule.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;

use super::error::ApiError;

/// A request body parsed as a JSON value (syntax checked; shape checked by the caller, which
/// knows the record kind).
pub struct JsonValue(pub serde_json::Value);

impl<S: Send + Sync> FromRequest<S> for JsonValue {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::field(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    "body",
                    "max_bytes",
                    "the request body is larger than this node accepts (limits.body_bytes)",
                )
            } else {
                ApiError::field(
                    StatusCode::BAD_REQUEST,
                    "unreadable_body",
                    "body",
                    "readable",
                    rejection.body_text(),
                )
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::field(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                "body",
                "required",
                "a JSON object body is required",
            ));
        }
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::field(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                "body",
                "json_syntax",
                format!("the body is not valid JSON: {e}"),
            )
        })?;
        if !value.is_object() {
            return Err(ApiError::field(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                "body",
                "type",
                "the body must be a JSON object",
            ));
        }
        Ok(JsonValue(value))
    }
}

/// Parses `value` as `T`, naming the field of the first error.
pub fn typed<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ApiError::invalid(crate::domain::validation::from_serde(
            &path,
            &e.into_inner().to_string(),
        ))
    })
}
