//! Customer endpoints for the till: create, edit, sub-records, read and search.

use super::{ApiPath, ApiQuery};
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use super::json::JsonValue;
use super::writes::{WriteAnswer, write};
use crate::domain::mode::Intent;
use crate::domain::rfc3339;
use crate::domain::view::{CustomerView, SubRecord, SyncState};
use crate::domain::{Action, NewCustomer, Payload, RecordKind};
use crate::store::{CustomerRead, Submission};

/// `POST /v1/customers`
pub async fn create(
    State(app): State<AppState>,
    JsonValue(body): JsonValue,
) -> Result<(StatusCode, Json<WriteAnswer>), ApiError> {
    let payload =
        Payload::parse(RecordKind::Customer, Action::Create, body).map_err(ApiError::invalid)?;
    let Payload::CustomerCreate(fields) = payload else {
        return Err(ApiError::plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "parse mismatch",
        ));
    };
    write(&app, Intent::Create, Submission::NewCustomer(fields)).await
}

/// `PATCH /v1/customers/{customer_ref}`
pub async fn edit(
    State(app): State<AppState>,
    ApiPath(customer): ApiPath<String>,
    JsonValue(body): JsonValue,
) -> Result<(StatusCode, Json<WriteAnswer>), ApiError> {
    let payload =
        Payload::parse(RecordKind::Customer, Action::Edit, body).map_err(ApiError::invalid)?;
    change(&app, customer, None, payload).await
}

fn collection_kind(collection: &str) -> Result<RecordKind, ApiError> {
    match collection {
        "addresses" => Ok(RecordKind::Address),
        "contacts" => Ok(RecordKind::Contact),
        "affiliations" => Ok(RecordKind::Affiliation),
        "attributes" => Ok(RecordKind::Attribute),
        _ => Err(ApiError::not_found(
            "collection",
            "no such collection: use addresses, contacts, affiliations or attributes",
        )),
    }
}

/// `POST /v1/customers/{customer_ref}/{addresses|contacts|affiliations|attributes}`
pub async fn add_sub_record(
    State(app): State<AppState>,
    ApiPath((customer, collection)): ApiPath<(String, String)>,
    JsonValue(body): JsonValue,
) -> Result<(StatusCode, Json<WriteAnswer>), ApiError> {
    let kind = collection_kind(&collection)?;
    let payload = Payload::parse(kind, Action::Create, body).map_err(ApiError::invalid)?;
    change(&app, customer, None, payload).await
}

/// `PATCH /v1/customers/{customer_ref}/{collection}/{record_id}`
pub async fn edit_sub_record(
    State(app): State<AppState>,
    ApiPath((customer, collection, record_id)): ApiPath<(String, String, String)>,
    JsonValue(body): JsonValue,
) -> Result<(StatusCode, Json<WriteAnswer>), ApiError> {
    let kind = collection_kind(&collection)?;
    let payload = Payload::parse(kind, Action::Edit, body).map_err(ApiError::invalid)?;
    change(&app, customer, Some(record_id), payload).await
}

async fn change(
    app: &AppState,
    customer: String,
    record_id: Option<String>,
    payload: Payload,
) -> Result<(StatusCode, Json<WriteAnswer>), ApiError> {
    let submission = Submission::Change {
        customer,
        record_id,
        payload,
    };
    write(app, Intent::Edit, submission).await
}

/// A sub-record as the till reads it: its id beside its fields.
#[derive(Serialize)]
pub struct SubRecordBody<'a, T> {
    /// Node-assigned id.
    pub id: &'a str,
    /// The fields.
    #[serde(flatten)]
    pub record: &'a T,
}

/// A customer as the till reads it.
#[derive(Serialize)]
pub struct CustomerBody<'a> {
    /// Temporary reference at this node.
    pub customer_ref: &'a str,
    /// HQ account number; `null` until HQ assigns one.
    pub account_number: Option<&'a str>,
    /// Summary of its operations' sync states.
    pub sync_state: SyncState,
    /// The customer's fields.
    #[serde(flatten)]
    pub fields: &'a NewCustomer,
    /// Addresses.
    pub addresses: Vec<SubRecordBody<'a, crate::domain::Address>>,
    /// Contacts.
    pub contacts: Vec<SubRecordBody<'a, crate::domain::Contact>>,
    /// Affiliations.
    pub affiliations: Vec<SubRecordBody<'a, crate::domain::Affiliation>>,
    /// Attributes.
    pub attributes: Vec<SubRecordBody<'a, crate::domain::Attribute>>,
    /// When it was created here.
    pub created_at: String,
    /// When it last changed here.
    pub updated_at: String,
}

fn subs<T>(list: &[SubRecord<T>]) -> Vec<SubRecordBody<'_, T>> {
    list.iter()
        .map(|s| SubRecordBody {
            id: &s.id,
            record: &s.record,
        })
        .collect()
}

impl<'a> CustomerBody<'a> {
    /// The body of a customer read.
    pub fn new(view: &'a CustomerView, sync_state: SyncState) -> Self {
        CustomerBody {
            customer_ref: &view.customer_ref,
            account_number: view.account_number.as_deref(),
            sync_state,
            fields: &view.fields,
            addresses: subs(&view.addresses),
            contacts: subs(&view.contacts),
            affiliations: subs(&view.affiliations),
            attributes: subs(&view.attributes),
            created_at: rfc3339(view.created_at_ms),
            updated_at: rfc3339(view.updated_at_ms),
        }
    }
}

/// `GET /v1/customers/{customer_ref}` (a temporary reference or an HQ account number)
pub async fn get(
    State(app): State<AppState>,
    ApiPath(customer): ApiPath<String>,
) -> Result<Response, ApiError> {
    let store = app.store.clone();
    let read = store
        .read(move |store| store.customer(&customer).map(|r| (r, customer)))
        .await
        .map_err(|_| {
            ApiError::plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "read task failed",
            )
        })??;
    match read {
        (Some(CustomerRead { view, sync_state }), _) => {
            json_body(&CustomerBody::new(&view, sync_state))
        }
        (None, customer) => Err(ApiError::not_found(
            "customer_ref",
            format!("no customer {customer}"),
        )),
    }
}

/// A JSON answer written straight from borrowed records (no `serde_json::Value` built first,
/// with a map node per field).
fn json_body<T: Serialize>(v: &T) -> Result<Response, ApiError> {
    let bytes = serde_json::to_vec(v).map_err(|e| {
        ApiError::plain(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}

/// The answer to a search.
#[derive(Serialize)]
struct SearchAnswer<'a> {
    customers: Vec<CustomerBody<'a>>,
}

/// Query of a customer search.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    q: Option<String>,
    limit: Option<String>,
}

/// `GET /v1/customers?q=…&limit=…`
pub async fn search(
    State(app): State<AppState>,
    ApiQuery(query): ApiQuery<SearchQuery>,
) -> Result<Response, ApiError> {
    let q = query.q.unwrap_or_default();
    if q.trim().is_empty() {
        return Err(ApiError::bad_param(
            "q",
            "required",
            "give a name, e-mail, phone or reference to search for",
        ));
    }
    if q.len() > 200 {
        return Err(ApiError::bad_param(
            "q",
            "max_length",
            "must be at most 200 bytes",
        ));
    }
    let limit = super::parse_limit(query.limit.as_deref(), 20, app.limits.max_page)?;
    // A narrow query (most of a till's: a phone, an e-mail, a reference, a full name) is a
    // bounded read, answered here; the hop to the blocking pool and back cost more than it.
    // A broad one goes to the pool, where it holds up no other request.
    let found = match app.store.search_quick(&q, limit)? {
        Some(found) => found,
        None => app
            .store
            .clone()
            .read(move |store| store.search(&q, limit))
            .await
            .map_err(|_| {
                ApiError::plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "search task failed",
                )
            })??,
    };
    let customers = found
        .iter()
        .map(|r| CustomerBody::new(&r.view, r.sync_state))
        .collect();
    json_body(&SearchAnswer { customers })
}
