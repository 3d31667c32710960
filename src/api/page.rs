//! The diagnostics page a technician opens first (`GET /`): one self-contained HTML file with
//! inline style and script and no external resources (the store may be offline). It reads
//! `/diag` and the sync-status API with same-origin `fetch`, so whatever credentials the
//! browser holds for the node go along, and it puts every server value in the page as text.

use axum::http::header;
use axum::response::IntoResponse;

/// The page, compiled into the binary.
const PAGE: &str = include_str!("page.html");

/// Inline script and style only, calls to this node only, no framing, no plugins.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; img-src data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// `GET /`: the diagnostics page.
pub async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        PAGE,
    )
}
