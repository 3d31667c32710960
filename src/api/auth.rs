//! Who may call what on the store LAN. Tills and technicians present bearer tokens (or, for a
//! browser, HTTP Basic with the token as password); the node keeps only their SHA-256 and
//! compares in constant time. Every route needs a technician unless listed in [`access`], so
//! a route added later is closed until someone opens it on purpose.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::error::ApiError;
use crate::config::{AuthConfig, Role};

/// How much of a refused request's body is read and thrown away, so that the client gets the
/// 401/403 instead of a reset (see `json::DRAIN_MAX`); more is not worth reading for a caller
/// we do not know.
const REFUSED_BODY_DRAIN: usize = 64 * 1024;
/// Longest time spent draining a refused request's body.
const REFUSED_BODY_WAIT: Duration = Duration::from_secs(1);

/// A token configuration the node cannot use.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A hash is not 64 hex digits.
    #[error("config key `auth.tokens[{index}].sha256`: not 64 hex digits")]
    BadHash {
        /// Position in `auth.tokens`.
        index: usize,
    },
}

/// The SHA-256 of a raw token, as 64 lowercase hex digits: what `[[auth.tokens]]` stores.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

struct Entry {
    name: String,
    role: Role,
    hash: [u8; 32],
}

/// The tokens this node accepts.
pub struct Tokens {
    entries: Vec<Entry>,
}

/// The caller a request was accepted from; put in the request's extensions.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's configured name (never the token).
    pub name: String,
    /// Its role.
    pub role: Role,
}

impl Tokens {
    /// From the `[auth]` section.
    pub fn from_config(config: &AuthConfig) -> Result<Tokens, AuthError> {
        let entries = config
            .tokens
            .iter()
            .enumerate()
            .map(|(index, t)| {
                let mut hash = [0u8; 32];
                hex::decode_to_slice(t.sha256.as_bytes(), &mut hash)
                    .map_err(|_| AuthError::BadHash { index })?;
                Ok(Entry {
                    name: t.name.clone(),
                    role: t.role,
                    hash,
                })
            })
            .collect::<Result<Vec<_>, AuthError>>()?;
        Ok(Tokens { entries })
    }

    /// No tokens: the API is open (allowed on loopback only).
    pub fn is_open(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry whose hash is the presented token's. Every entry is compared, in constant time,
    /// whichever matches.
    fn identify(&self, token: &[u8]) -> Option<&Entry> {
        let presented: [u8; 32] = Sha256::digest(token).into();
        let mut found = u32::MAX;
        for (i, entry) in self.entries.iter().enumerate() {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            found.conditional_assign(&index, entry.hash.ct_eq(&presented));
        }
        usize::try_from(found)
            .ok()
            .and_then(|i| self.entries.get(i))
    }
}

/// Who may use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a token.
    Open,
    /// A `pos` or a `technician` token.
    Pos,
    /// A `technician` token only.
    Technician,
}

/// Who may call `method` on the route template `route` (`None`: no route matched). Only
/// liveness is open; tills get the customer endpoints and may read the sync status; everything
/// else, including routes added later and unknown paths, needs a technician.
pub fn access(method: &Method, route: Option<&str>) -> Access {
    let Some(route) = route else {
        return Access::Technician;
    };
    let read = method == Method::GET || method == Method::HEAD;
    if route == "/healthz" && read {
        return Access::Open;
    }
    if route == "/v1/customers" || route.starts_with("/v1/customers/") {
        return Access::Pos;
    }
    if read && (route == "/v1/sync/operations" || route.starts_with("/v1/sync/operations/")) {
        return Access::Pos;
    }
    Access::Technician
}

/// Why a request carried no usable token.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    Missing,
    Scheme,
    Unknown,
}

/// The raw token of an `Authorization` header: `Bearer <token>`, or `Basic` with the token as
/// the password (any user name), which is what a browser sends.
fn presented_token(value: &HeaderValue) -> Result<Vec<u8>, Refusal> {
    let raw = value.as_bytes();
    let (scheme, rest) = match raw.iter().position(|b| *b == b' ') {
        Some(at) => (&raw[..at], raw[at + 1..].trim_ascii()),
        None => (raw, &[][..]),
    };
    if scheme.eq_ignore_ascii_case(b"bearer") {
        if rest.is_empty() {
            return Err(Refusal::Scheme);
        }
        return Ok(rest.to_vec());
    }
    if scheme.eq_ignore_ascii_case(b"basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| Refusal::Scheme)?;
        let colon = decoded
            .iter()
            .position(|b| *b == b':')
            .ok_or(Refusal::Scheme)?;
        let token = &decoded[colon + 1..];
        if token.is_empty() {
            return Err(Refusal::Missing);
        }
        return Ok(token.to_vec());
    }
    Err(Refusal::Scheme)
}

fn unauthorized(refusal: Refusal, basic: bool) -> Response {
    let (rule, message) = match refusal {
        Refusal::Missing => (
            "required",
            "this endpoint needs a token: send `Authorization: Bearer <token>`",
        ),
        Refusal::Scheme => (
            "bearer_token",
            "send the token as `Authorization: Bearer <token>` (or HTTP Basic with the token as \
             the password)",
        ),
        Refusal::Unknown => ("known_token", "this node does not accept that token"),
    };
    let mut response = ApiError::field(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "authorization",
        rule,
        message,
    )
    .into_response();
    // A browser opening the diagnostics page asks for a user and password on a Basic
    // challenge; API clients are told to use a bearer token.
    let challenge = if basic {
        HeaderValue::from_static("Basic realm=\"Outpost\", charset=\"UTF-8\"")
    } else {
        HeaderValue::from_static("Bearer realm=\"Outpost\"")
    };
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, challenge);
    response
}

fn forbidden(role: Role) -> Response {
    ApiError::field(
        StatusCode::FORBIDDEN,
        "forbidden",
        "authorization",
        "role",
        format!(
            "a {} token may not use this endpoint: it needs a technician token",
            role.as_str()
        ),
    )
    .into_response()
}

/// Reads and drops a bounded part of a refused request's body so the refusal reaches the
/// client (an unread body makes the connection close with a reset).
async fn drain(request: Request) {
    let body = request.into_body();
    let _ = tokio::time::timeout(
        REFUSED_BODY_WAIT,
        axum::body::to_bytes(body, REFUSED_BODY_DRAIN),
    )
    .await;
}

/// Middleware: lets a request through when its token's role may use the route, else answers
/// 401 (no or unknown token) or 403 (a role that may not). Nothing is checked when no tokens
/// are configured (loopback only; the node warns at start).
pub async fn require(
    State(tokens): State<Arc<Tokens>>,
    mut request: Request,
    next: Next,
) -> Response {
    if tokens.is_open() {
        return next.run(request).await;
    }
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let method = request.method().clone();
    let needed = access(&method, route.as_deref());
    if needed == Access::Open {
        return next.run(request).await;
    }
    let route_label = route.as_deref().unwrap_or("unmatched");
    let presented = match request.headers().get(header::AUTHORIZATION) {
        None => Err(Refusal::Missing),
        Some(value) => presented_token(value),
    };
    let caller = presented.and_then(|token| {
        tokens
            .identify(&token)
            .map(|e| Caller {
                name: e.name.clone(),
                role: e.role,
            })
            .ok_or(Refusal::Unknown)
    });
    match caller {
        Err(refusal) => {
            tracing::debug!(route = route_label, %method, ?refusal, "request refused: no valid token");
            // The raw path: `/` is the diagnostics page a browser opens, whichever branch of
            // the router serves it.
            let basic = method == Method::GET && request.uri().path() == "/";
            drain(request).await;
            unauthorized(refusal, basic)
        }
        Ok(caller) if needed == Access::Technician && caller.role != Role::Technician => {
            tracing::info!(token = %caller.name, role = caller.role.as_str(), route = route_label, %method, "request refused: role may not use this endpoint");
            drain(request).await;
            forbidden(caller.role)
        }
        Ok(caller) => {
            tracing::debug!(token = %caller.name, route = route_label, %method, "request authorised");
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenConfig;

    fn tokens() -> Tokens {
        Tokens::from_config(&AuthConfig {
            tokens: vec![
                TokenConfig {
                    name: "till-1".into(),
                    role: Role::Pos,
                    sha256: hash_token("pos-secret-0123456789"),
                },
                TokenConfig {
                    name: "tech".into(),
                    role: Role::Technician,
                    sha256: hash_token("tech-secret-0123456789").to_uppercase(),
                },
            ],
        })
        .unwrap()
    }

    #[test]
    fn identifies_by_hash_whatever_the_hex_case() {
        let t = tokens();
        assert_eq!(t.identify(b"pos-secret-0123456789").unwrap().name, "till-1");
        assert_eq!(t.identify(b"tech-secret-0123456789").unwrap().name, "tech");
        assert!(t.identify(b"pos-secret-012345678").is_none());
        assert!(t.identify(b"").is_none());
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn bearer_and_basic_carry_the_token() {
        let bearer = HeaderValue::from_static("Bearer  abc ");
        assert_eq!(presented_token(&bearer).unwrap(), b"abc");
        let lower = HeaderValue::from_static("bearer abc");
        assert_eq!(presented_token(&lower).unwrap(), b"abc");
        // "anyone:abc"
        let basic = HeaderValue::from_static("Basic YW55b25lOmFiYw==");
        assert_eq!(presented_token(&basic).unwrap(), b"abc");
        // ":a:b" -> the password is everything after the first colon.
        let colon = HeaderValue::from_static("Basic OmE6Yg==");
        assert_eq!(presented_token(&colon).unwrap(), b"a:b");
        for bad in [
            "Bearer",
            "Bearer ",
            "Token abc",
            "Basic !!!",
            "Basic YWJj",
            "abc",
        ] {
            assert!(
                presented_token(&HeaderValue::from_static(bad)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn only_liveness_is_open_and_unknown_routes_need_a_technician() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(access(&get, Some("/healthz")), Access::Open);
        assert_eq!(access(&post, Some("/healthz")), Access::Technician);
        assert_eq!(access(&post, Some("/v1/customers")), Access::Pos);
        assert_eq!(
            access(&Method::PATCH, Some("/v1/customers/{customer_ref}")),
            Access::Pos
        );
        assert_eq!(access(&get, Some("/v1/sync/operations")), Access::Pos);
        assert_eq!(
            access(&Method::PUT, Some("/v1/sync/operations/{operation_id}")),
            Access::Technician
        );
        assert_eq!(access(&post, Some("/v1/sync/upload")), Access::Technician);
        assert_eq!(access(&get, Some("/v1/customersX")), Access::Technician);
        assert_eq!(access(&get, Some("/some/new/route")), Access::Technician);
        assert_eq!(access(&get, None), Access::Technician);
    }
}
