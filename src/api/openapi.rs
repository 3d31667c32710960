//! The OpenAPI 3.1 document of the local API, served at `/openapi.json`.
//!
//! Written by hand beside the handlers (the domain types stay free of schema annotations). It
//! cannot drift silently: `tests/openapi.rs` checks that its paths and methods are exactly the
//! router's, that each operation's `x-outpost-role` is what the auth middleware enforces, and
//! that real answers of a running node validate against its schemas.

use std::sync::OnceLock;

use axum::Json;
use serde_json::{Value, json};

/// `GET /openapi.json`
pub async fn serve() -> Json<Value> {
    Json(document().clone())
}

/// The document (built once).
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn response(name: &str) -> Value {
    json!({ "$ref": format!("#/components/responses/{name}") })
}

fn json_body(schema: Value, description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": schema } }
    })
}

fn request_body(schema: Value) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": schema } } })
}

fn path_param(name: &str, description: &str) -> Value {
    json!({
        "name": name, "in": "path", "required": true, "description": description,
        "schema": { "type": "string" }
    })
}

fn query_param(name: &str, description: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": description, "schema": schema })
}

/// An operation: its role, summary, and the answers every protected operation can give (401,
/// 403, 503 for a timeout) beside its own.
fn op(role: &str, summary: &str, mut responses: Value, extra: Value) -> Value {
    if let Some(map) = responses.as_object_mut() {
        if role != "open" {
            map.insert("401".into(), response("Unauthorized"));
            map.insert("403".into(), response("Forbidden"));
        }
        map.insert("503".into(), response("Unavailable"));
    }
    let mut operation = json!({
        "summary": summary,
        "x-outpost-role": role,
        "responses": responses,
    });
    if role == "open" {
        operation["security"] = json!([]);
    }
    if let (Some(target), Some(extra)) = (operation.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            target.insert(k.clone(), v.clone());
        }
    }
    operation
}

fn write_responses(realtime_status: &str) -> Value {
    json!({
        realtime_status: json_body(schema("WriteAnswer"), "Applied at HQ now (real-time mode)"),
        "202": json_body(schema("WriteAnswer"), "Saved durably at the node; HQ gets it later (asynchronous mode, or real-time mode with HQ unreachable)"),
        "400": response("BadRequest"),
        "404": response("NotFound"),
        "409": response("Conflict"),
        "413": response("TooLarge"),
        "422": response("Invalid"),
        "507": response("InsufficientStorage"),
    })
}

fn string(max: usize) -> Value {
    json!({ "type": "string", "minLength": 1, "maxLength": max })
}

fn nullable(mut s: Value) -> Value {
    if let Some(t) = s.get("type").and_then(Value::as_str) {
        s["type"] = json!([t, "null"]);
    } else if s.get("$ref").is_some() || s.get("enum").is_some() {
        return json!({ "oneOf": [s, { "type": "null" }] });
    }
    s
}

/// A record schema and its patch: the patch has the same fields, none required, at least one
/// present, optional fields nullable (null clears them).
fn record_and_patch(fields: &[(&str, Value, bool)]) -> (Value, Value) {
    let mut props = serde_json::Map::new();
    let mut patch_props = serde_json::Map::new();
    let mut required = Vec::new();
    for (name, s, is_required) in fields {
        props.insert((*name).into(), s.clone());
        let p = if *is_required {
            s.clone()
        } else {
            nullable(s.clone())
        };
        patch_props.insert((*name).into(), p);
        if *is_required {
            required.push(json!(name));
        }
    }
    (
        json!({ "type": "object", "additionalProperties": false, "required": required, "properties": props }),
        json!({ "type": "object", "additionalProperties": false, "minProperties": 1, "properties": patch_props }),
    )
}

/// A sub-record as read back: its fields and the node-assigned id.
fn with_id(record: &Value) -> Value {
    let mut read = record.clone();
    read["properties"]["id"] =
        json!({ "type": "string", "description": "Node-assigned sub-record id" });
    if let Some(required) = read["required"].as_array_mut() {
        required.insert(0, json!("id"));
    }
    read
}

fn error_response(description: &str) -> Value {
    json_body(schema("Error"), description)
}

fn build() -> Value {
    let name = json!({ "type": "string", "minLength": 1, "maxLength": 100, "description": "Any script; at least one letter, no digits" });
    let email = json!({ "type": "string", "format": "email", "maxLength": 254 });
    let phone = json!({ "type": "string", "pattern": "^\\+?[0-9 ().-]+$", "description": "Optional +, then 5 to 15 digits" });
    let code =
        |max: usize| json!({ "type": "string", "pattern": format!("^[A-Za-z0-9_-]{{1,{max}}}$") });
    let (customer, customer_patch) = record_and_patch(&[
        ("first_name", name.clone(), true),
        ("last_name", name, true),
        ("email", email.clone(), false),
        ("phone", phone.clone(), false),
        ("customer_group", code(20), false),
        (
            "language",
            json!({ "type": "string", "maxLength": 35, "description": "Language tag, e.g. et-EE" }),
            false,
        ),
    ]);
    let (address, address_patch) = record_and_patch(&[
        ("street", string(250), true),
        ("city", string(60), true),
        (
            "postal_code",
            json!({ "type": "string", "minLength": 2, "maxLength": 10 }),
            true,
        ),
        (
            "country",
            json!({ "type": "string", "pattern": "^[A-Z]{3}$", "description": "ISO 3166-1 alpha-3" }),
            true,
        ),
        ("county", string(60), false),
        (
            "purpose",
            json!({ "enum": ["home", "delivery", "invoice", "business"], "default": "home" }),
            false,
        ),
        (
            "is_primary",
            json!({ "type": "boolean", "default": false }),
            false,
        ),
    ]);
    let (contact, contact_patch) = record_and_patch(&[
        ("kind", json!({ "enum": ["phone", "email"] }), true),
        (
            "value",
            json!({ "type": "string", "description": "A phone number or an e-mail address, as kind says" }),
            true,
        ),
        ("description", string(60), false),
        (
            "is_primary",
            json!({ "type": "boolean", "default": false }),
            false,
        ),
    ]);
    let (affiliation, affiliation_patch) = record_and_patch(&[
        ("affiliation", code(30), true),
        ("description", string(60), false),
    ]);
    let (attribute, attribute_patch) =
        record_and_patch(&[("name", code(60), true), ("value", string(255), true)]);
    // The patch forms: fields absent from the record cannot be cleared with null, but the
    // record-level optional fields without a patch default (purpose, is_primary) cannot be
    // null either.
    let mut address_patch = address_patch;
    address_patch["properties"]["purpose"] =
        json!({ "enum": ["home", "delivery", "invoice", "business"] });
    address_patch["properties"]["is_primary"] = json!({ "type": "boolean" });
    let mut contact_patch = contact_patch;
    contact_patch["properties"]["is_primary"] = json!({ "type": "boolean" });

    let mut customer_read = customer.clone();
    customer_read["required"] = json!([
        "customer_ref",
        "account_number",
        "sync_state",
        "first_name",
        "last_name",
        "addresses",
        "contacts",
        "affiliations",
        "attributes",
        "created_at",
        "updated_at"
    ]);
    if let Some(props) = customer_read["properties"].as_object_mut() {
        props.insert("customer_ref".into(), json!({ "type": "string", "description": "Temporary reference at this node, e.g. S0001-T1" }));
        props.insert("account_number".into(), json!({ "type": ["string", "null"], "description": "HQ account number; null until HQ assigns one" }));
        props.insert("sync_state".into(), schema("SyncState"));
        props.insert(
            "addresses".into(),
            json!({ "type": "array", "items": with_id(&address) }),
        );
        props.insert(
            "contacts".into(),
            json!({ "type": "array", "items": with_id(&contact) }),
        );
        props.insert(
            "affiliations".into(),
            json!({ "type": "array", "items": with_id(&affiliation) }),
        );
        props.insert(
            "attributes".into(),
            json!({ "type": "array", "items": with_id(&attribute) }),
        );
        props.insert(
            "created_at".into(),
            json!({ "type": "string", "format": "date-time" }),
        );
        props.insert(
            "updated_at".into(),
            json!({ "type": "string", "format": "date-time" }),
        );
    }

    let op_state = json!({ "enum": ["pending", "uploaded", "completed", "failed", "held"] });
    let conflict = json!({
        "type": "object", "additionalProperties": false,
        "required": ["field", "store_value", "hq_value"],
        "properties": {
            "field": { "type": "string" },
            "store_value": { "description": "The value this store's edit wanted" },
            "hq_value": { "description": "The value HQ kept" }
        }
    });
    let write_answer = json!({
        "type": "object", "additionalProperties": false,
        "required": ["operation_id", "customer_ref", "state", "mode", "mode_reason"],
        "properties": {
            "operation_id": { "type": "string", "format": "uuid" },
            "customer_ref": { "type": "string" },
            "record_id": { "type": "string", "description": "The sub-record created or edited" },
            "state": op_state,
            "mode": { "enum": ["async", "realtime", "async_fallback"] },
            "mode_reason": { "type": "string", "description": "Why that mode, naming the configuration held" },
            "fallback_reason": { "type": "string", "description": "Why HQ could not be used" },
            "account_number": { "type": "string" },
            "conflicts": { "type": "array", "items": schema("Conflict") }
        }
    });
    let op_error = json!({
        "type": "object", "additionalProperties": false,
        "required": ["code", "message"],
        "properties": {
            "code": { "type": "string" },
            "message": { "type": "string" },
            "field": { "type": "string" }
        }
    });
    let operation = json!({
        "type": "object", "additionalProperties": false,
        "required": ["operation_id", "seq", "customer_ref", "kind", "hq_table", "action", "state", "error", "revision", "accepted_at", "updated_at"],
        "properties": {
            "operation_id": { "type": "string", "format": "uuid" },
            "seq": { "type": "integer", "minimum": 0, "description": "Acceptance order; the paging cursor" },
            "customer_ref": { "type": "string" },
            "kind": { "enum": ["customer", "address", "contact", "affiliation", "attribute"] },
            "hq_table": { "type": "string" },
            "action": { "enum": ["create", "edit"] },
            "record_id": { "type": "string" },
            "state": op_state,
            "error": { "oneOf": [schema("OperationError"), { "type": "null" }] },
            "conflicts": { "type": "array", "items": schema("Conflict") },
            "revision": { "type": "integer", "minimum": 0 },
            "accepted_at": { "type": "string", "format": "date-time" },
            "updated_at": { "type": "string", "format": "date-time" },
            "payload": { "type": "object", "description": "The record as the till sent it (single-operation reads)" }
        }
    });
    let error = json!({
        "type": "object", "additionalProperties": false,
        "required": ["error", "message"],
        "properties": {
            "error": { "type": "string", "description": "Machine-readable code, e.g. invalid_field" },
            "field": { "type": "string", "description": "The field, parameter, `body` or `authorization` at fault" },
            "rule": { "type": "string", "description": "The rule broken, e.g. email_format" },
            "message": { "type": "string" }
        }
    });
    let diag = json!({
        "type": "object",
        "required": ["node", "queue", "sync", "cdx", "features", "mode", "realtime", "findings", "hq", "store", "uptime_secs"],
        "properties": {
            "node": { "type": "object", "required": ["store_id", "channel_id", "version"] },
            "started_at": { "type": "string" },
            "now": { "type": "string" },
            "uptime_secs": { "type": "integer", "minimum": 0 },
            "queue": { "type": "object", "description": "Operations by state and by record kind, in flight, oldest pending" },
            "hq": { "type": "object", "description": "HQ reachability, latency, last upload attempt, success and error" },
            "store": { "type": "object", "description": "Store file size, free and total disk" },
            "findings": {
                "type": "array",
                "description": "What is wrong (or that nothing is), in plain words, each with what to do",
                "items": {
                    "type": "object", "required": ["severity", "message", "action"],
                    "properties": {
                        "severity": { "enum": ["ok", "warning", "problem"] },
                        "message": { "type": "string" },
                        "action": { "type": "string" }
                    }
                }
            },
            "sync": { "type": "object", "description": "What the uploader and outcome puller last did" },
            "cdx": { "type": "object", "required": ["jobs", "downloader"] },
            "features": { "type": "array", "items": { "type": "object" } },
            "mode": { "type": "object", "required": ["create", "edit"] },
            "realtime": { "type": "object", "description": "Real-time calls: counts and the latest, with their reasons" }
        }
    });

    let customer_ref = path_param(
        "customer_ref",
        "Temporary reference (S0001-T1) or HQ account number",
    );
    let collection = json!({
        "name": "collection", "in": "path", "required": true,
        "schema": { "enum": ["addresses", "contacts", "affiliations", "attributes"] }
    });
    let record_id = path_param("record_id", "Sub-record id");
    let operation_id = json!({
        "name": "operation_id", "in": "path", "required": true,
        "schema": { "type": "string", "format": "uuid" }
    });
    let limit = |max: &str| {
        query_param(
            "limit",
            &format!("Most results, 1 to limits.max_page ({max})"),
            json!({ "type": "integer", "minimum": 1 }),
        )
    };
    let sub_record = json!({ "oneOf": [schema("Address"), schema("Contact"), schema("Affiliation"), schema("Attribute")] });
    let sub_patch = json!({ "oneOf": [schema("AddressPatch"), schema("ContactPatch"), schema("AffiliationPatch"), schema("AttributePatch")] });

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Outpost local API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The store edge node's HTTP API for tills (role pos) and field technicians (role technician). Every error is JSON naming the field and the rule. Only GET /healthz is open; see x-outpost-role on each operation."
        },
        "security": [ { "bearer": [] }, { "basic": [] } ],
        "paths": {
            "/": {
                "get": op("technician", "The diagnostics page: one self-contained HTML page (GET with Basic credentials from a browser)", json!({
                    "200": {
                        "description": "The page",
                        "content": { "text/html": { "schema": { "type": "string" } } }
                    }
                }), json!({}))
            },
            "/healthz": {
                "get": op("open", "Liveness", json!({
                    "200": json_body(json!({ "type": "object", "required": ["status"], "additionalProperties": false, "properties": { "status": { "const": "ok" } } }), "The node serves")
                }), json!({}))
            },
            "/v1/customers": {
                "post": op("pos", "Create a customer", write_responses("201"), json!({
                    "requestBody": request_body(schema("NewCustomer"))
                })),
                "get": op("pos", "Search customers (cache plus pending records) by name prefix, e-mail, phone or reference", json!({
                    "200": json_body(json!({ "type": "object", "additionalProperties": false, "required": ["customers"], "properties": { "customers": { "type": "array", "items": schema("Customer") } } }), "Matches, best first"),
                    "400": response("BadRequest")
                }), json!({
                    "parameters": [
                        { "name": "q", "in": "query", "required": true, "schema": { "type": "string", "minLength": 1, "maxLength": 200 } },
                        limit("default 20")
                    ]
                }))
            },
            "/v1/customers/{customer_ref}": {
                "get": op("pos", "Read a customer with every accepted change applied", json!({
                    "200": json_body(schema("Customer"), "The customer as the till sees it now"),
                    "400": response("BadRequest"),
                    "404": response("NotFound")
                }), json!({ "parameters": [customer_ref.clone()] })),
                "patch": op("pos", "Edit a customer (only the fields given change; null clears an optional field)", write_responses("200"), json!({
                    "parameters": [customer_ref.clone()],
                    "requestBody": request_body(schema("CustomerPatch"))
                }))
            },
            "/v1/customers/{customer_ref}/{collection}": {
                "post": op("pos", "Add an address, contact, affiliation or attribute", write_responses("200"), json!({
                    "parameters": [customer_ref.clone(), collection.clone()],
                    "requestBody": request_body(sub_record)
                }))
            },
            "/v1/customers/{customer_ref}/{collection}/{record_id}": {
                "patch": op("pos", "Edit a sub-record", write_responses("200"), json!({
                    "parameters": [customer_ref, collection, record_id],
                    "requestBody": request_body(sub_patch)
                }))
            },
            "/v1/sync/operations": {
                "get": op("pos", "List operations, optionally by state, in acceptance order", json!({
                    "200": json_body(json!({
                        "type": "object", "additionalProperties": false, "required": ["operations", "next_after"],
                        "properties": {
                            "operations": { "type": "array", "items": schema("Operation") },
                            "next_after": { "type": ["integer", "null"], "description": "Pass as after= for the next page; null on the last" }
                        }
                    }), "One page"),
                    "400": response("BadRequest")
                }), json!({
                    "parameters": [
                        query_param("state", "Only operations in this state", json!({ "enum": ["pending", "uploaded", "completed", "failed", "held"] })),
                        query_param("after", "seq of the last operation of the previous page", json!({ "type": "integer", "minimum": 0 })),
                        limit("default 100")
                    ]
                }))
            },
            "/v1/sync/operations/{operation_id}": {
                "get": op("pos", "Show one operation with its payload and HQ's error", json!({
                    "200": json_body(schema("Operation"), "The operation"),
                    "400": response("BadRequest"),
                    "404": response("NotFound")
                }), json!({ "parameters": [operation_id.clone()] })),
                "put": op("technician", "Edit and save a failed operation's payload", json!({
                    "200": json_body(schema("Operation"), "Saved; the operation is queued again"),
                    "400": response("BadRequest"),
                    "404": response("NotFound"),
                    "409": response("Conflict"),
                    "413": response("TooLarge"),
                    "422": response("Invalid"),
                    "507": response("InsufficientStorage")
                }), json!({
                    "parameters": [operation_id.clone()],
                    "requestBody": request_body(json!({
                        "type": "object", "additionalProperties": false, "required": ["payload"],
                        "properties": { "payload": { "type": "object", "description": "The whole record, in the shape the till sends it" } }
                    }))
                }))
            },
            "/v1/sync/operations/{operation_id}/sync": {
                "post": op("technician", "Queue a failed operation again", json!({
                    "200": json_body(schema("Operation"), "Queued again"),
                    "400": response("BadRequest"),
                    "404": response("NotFound"),
                    "409": response("Conflict"),
                    "507": response("InsufficientStorage")
                }), json!({ "parameters": [operation_id] }))
            },
            "/v1/sync/operations/resync-failed": {
                "post": op("technician", "Queue every failed operation again (at most limits.max_page per call)", json!({
                    "200": json_body(json!({
                        "type": "object", "additionalProperties": false, "required": ["resynced", "skipped", "remaining_failed"],
                        "properties": {
                            "resynced": { "type": "integer", "minimum": 0 },
                            "skipped": { "type": "array", "items": { "type": "object", "required": ["operation_id", "reason"] } },
                            "remaining_failed": { "type": "integer", "minimum": 0 }
                        }
                    }), "What was queued again")
                }), json!({}))
            },
            "/v1/admin/backup": {
                "get": op("technician", "A consistent copy of the store (one redb file) made while the node runs", json!({
                    "200": {
                        "description": "The copy; X-Outpost-Rows, X-Outpost-Tables and X-Outpost-Schema-Version describe it",
                        "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } }
                    },
                    "409": response("Conflict"),
                    "507": error_response("Not enough disk space for the copy")
                }), json!({}))
            },
            "/v1/sync/upload": {
                "post": op("technician", "Upload pending operations and read HQ's outcomes now", json!({
                    "202": json_body(json!({ "type": "object", "additionalProperties": false, "required": ["status"], "properties": { "status": { "type": "string" } } }), "Requested")
                }), json!({}))
            },
            "/v1/cdx/refresh": {
                "post": op("technician", "Download CDX jobs 1110, 1070 and 1010 now and apply them", json!({
                    "200": json_body(json!({
                        "type": "object", "additionalProperties": false, "required": ["status", "applied"],
                        "properties": {
                            "status": { "const": "applied" },
                            "applied": {
                                "type": "object", "additionalProperties": false,
                                "required": ["global_version", "channel_version", "customers_version", "customers_applied"],
                                "properties": {
                                    "global_version": { "type": ["integer", "null"] },
                                    "channel_version": { "type": ["integer", "null"] },
                                    "customers_version": { "type": ["integer", "null"] },
                                    "customers_applied": { "type": "integer", "minimum": 0 }
                                }
                            }
                        }
                    }), "Applied")
                }), json!({}))
            },
            "/diag": {
                "get": op("technician", "Diagnostics report: queue, sync, CDX jobs, features, mode, real-time calls", json!({
                    "200": json_body(schema("Diagnostics"), "The report")
                }), json!({}))
            },
            "/metrics": {
                "get": op("technician", "Prometheus metrics (text exposition format 0.0.4)", json!({
                    "200": {
                        "description": "The metrics",
                        "content": { "text/plain": { "schema": { "type": "string" } } }
                    }
                }), json!({}))
            },
            "/openapi.json": {
                "get": op("technician", "This document", json!({
                    "200": json_body(json!({ "type": "object", "required": ["openapi", "paths"] }), "The OpenAPI document")
                }), json!({}))
            }
        },
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "description": "A token from [[auth.tokens]] (role pos or technician)" },
                "basic": { "type": "http", "scheme": "basic", "description": "Any user name, the token as the password (for a browser)" }
            },
            "schemas": {
                "NewCustomer": customer,
                "CustomerPatch": customer_patch,
                "Address": address,
                "AddressPatch": address_patch,
                "Contact": contact,
                "ContactPatch": contact_patch,
                "Affiliation": affiliation,
                "AffiliationPatch": affiliation_patch,
                "Attribute": attribute,
                "AttributePatch": attribute_patch,
                "Customer": customer_read,
                "SyncState": { "enum": ["synced", "pending", "held", "failed"] },
                "WriteAnswer": write_answer,
                "Conflict": conflict,
                "OperationError": op_error,
                "Operation": operation,
                "Error": error,
                "Diagnostics": diag
            },
            "responses": {
                "BadRequest": error_response("A malformed body or a bad query or path parameter (named in field)"),
                "Unauthorized": {
                    "description": "No token, or one this node does not accept",
                    "headers": { "WWW-Authenticate": { "schema": { "type": "string" }, "description": "Bearer, or Basic for GET /" } },
                    "content": { "application/json": { "schema": schema("Error") } }
                },
                "Forbidden": error_response("The token's role may not use this endpoint"),
                "NotFound": error_response("No such customer, sub-record or operation (named in field)"),
                "Conflict": error_response("The operation's state does not allow this"),
                "TooLarge": error_response("The body is larger than limits.body_bytes"),
                "Invalid": error_response("A field breaks a rule (field and rule named)"),
                "Unavailable": error_response("Timed out (limits.request_timeout_ms), shutting down, or the store is unavailable"),
                "InsufficientStorage": error_response("The node's disk is full; nothing was saved")
            }
        }
    })
}
