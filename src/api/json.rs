//! JSON request bodies: size-limited, and every parse error names the field and the rule.

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use futures_util::StreamExt;

use super::AppState;
use super::error::ApiError;

/// How many bytes of an oversized body are read and thrown away before answering 413. Closing
/// a connection with unread bytes makes TCP reset it, and the client then loses the 413; a
/// small excess is drained so the till gets its answer, a huge one is not worth reading.
const DRAIN_MAX: usize = 1024 * 1024;

fn too_large() -> ApiError {
    ApiError::field(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        "body",
        "max_bytes",
        "the request body is larger than this node accepts (limits.body_bytes)",
    )
}

/// Reads a body of at most `limit` bytes.
async fn read_limited(req: Request, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut stream = req.into_body().into_data_stream();
    let mut body = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::field(
                StatusCode::BAD_REQUEST,
                "unreadable_body",
                "body",
                "readable",
                format!("the request body could not be read: {e}"),
            )
        })?;
        seen = seen.saturating_add(chunk.len());
        if seen > limit.saturating_add(DRAIN_MAX) {
            return Err(too_large());
        }
        if seen <= limit {
            body.extend_from_slice(&chunk);
        }
    }
    if seen > limit {
        return Err(too_large());
    }
    Ok(body)
}

/// A request body parsed as a JSON value (syntax checked; shape checked by the caller, which
/// knows the record kind).
pub struct JsonValue(pub serde_json::Value);

impl FromRequest<AppState> for JsonValue {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let declared = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > state.limits.body_bytes.saturating_add(DRAIN_MAX)) {
            return Err(too_large());
        }
        let bytes = read_limited(req, state.limits.body_bytes).await?;
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
