//! `/openapi.json` matches what the server really does: the same routes and methods as the
//! router, every status a real answer had is documented, and every JSON answer validates
//! against its documented schema.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use outpost::hq::emulator::{Faults, HqEmulator, HqEmulatorConfig};
use reqwest::Method;
use serde_json::{Value, json};

const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

fn doc() -> &'static Value {
    outpost::api::openapi::document()
}

/// Follows a local `$ref`.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.strip_prefix('#').expect("local ref");
            resolve(
                doc,
                doc.pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling {r}")),
            )
        }
        None => v,
    }
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        other => panic!("unknown type {other}"),
    }
}

/// A small JSON Schema check, enough for this document: type, enum, const, required,
/// properties, additionalProperties, items, oneOf, allOf, minProperties, minimum, min/maxLength.
/// Returns the first mismatch, with its path.
fn validate(doc: &Value, schema: &Value, v: &Value, at: &str) -> Option<String> {
    let schema = resolve(doc, schema);
    if let Some(t) = schema.get("type") {
        let ok = match t {
            Value::String(t) => type_matches(t, v),
            Value::Array(ts) => ts.iter().any(|t| type_matches(t.as_str().unwrap(), v)),
            _ => panic!("bad type at {at}"),
        };
        if !ok {
            return Some(format!("{at}: {v} is not of type {t}"));
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(v)
    {
        return Some(format!("{at}: {v} is not one of {options:?}"));
    }
    if let Some(c) = schema.get("const")
        && c != v
    {
        return Some(format!("{at}: {v} is not {c}"));
    }
    if let (Some(min), Some(s)) = (schema.get("minLength").and_then(Value::as_u64), v.as_str())
        && (s.chars().count() as u64) < min
    {
        return Some(format!("{at}: shorter than {min}"));
    }
    if let (Some(max), Some(s)) = (schema.get("maxLength").and_then(Value::as_u64), v.as_str())
        && (s.chars().count() as u64) > max
    {
        return Some(format!("{at}: longer than {max}"));
    }
    if let (Some(min), Some(n)) = (schema.get("minimum").and_then(Value::as_f64), v.as_f64())
        && n < min
    {
        return Some(format!("{at}: {n} below {min}"));
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            if let Some(why) = validate(doc, s, v, at) {
                return Some(why);
            }
        }
    }
    if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
        let matching = one
            .iter()
            .filter(|s| validate(doc, s, v, at).is_none())
            .count();
        if matching != 1 {
            return Some(format!("{at}: {v} matches {matching} of the oneOf schemas"));
        }
    }
    if let Some(obj) = v.as_object() {
        if let Some(min) = schema.get("minProperties").and_then(Value::as_u64)
            && (obj.len() as u64) < min
        {
            return Some(format!("{at}: fewer than {min} properties"));
        }
        for r in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let r = r.as_str().unwrap();
            if !obj.contains_key(r) {
                return Some(format!("{at}: required {r:?} missing"));
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        for (k, value) in obj {
            let here = format!("{at}.{k}");
            match props.and_then(|p| p.get(k)) {
                Some(s) => {
                    if let Some(why) = validate(doc, s, value, &here) {
                        return Some(why);
                    }
                }
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        return Some(format!("{here}: not documented"));
                    }
                    Some(s @ Value::Object(_)) => {
                        if let Some(why) = validate(doc, s, value, &here) {
                            return Some(why);
                        }
                    }
                    _ => {}
                },
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, item) in arr.iter().enumerate() {
            if let Some(why) = validate(doc, items, item, &format!("{at}[{i}]")) {
                return Some(why);
            }
        }
    }
    None
}

/// Checks a real answer against the document: its status is documented for the operation, its
/// content type is the documented one, and a JSON body validates against the schema.
#[track_caller]
fn conforms(template: &str, method: &Method, resp: &Resp) {
    let doc = doc();
    let operation = &doc["paths"][template][method.as_str().to_lowercase()];
    assert!(
        operation.is_object(),
        "{method} {template} is not documented"
    );
    let status = resp.status.as_u16().to_string();
    let documented = operation["responses"].get(&status).unwrap_or_else(|| {
        panic!(
            "{method} {template}: status {status} not documented; body {}",
            resp.body
        )
    });
    let documented = resolve(doc, documented);
    let content = documented["content"].as_object().expect("content");
    let ct = resp.content_type.as_deref().unwrap_or_default();
    let (media, schema) = content
        .iter()
        .find(|(media, _)| ct.starts_with(media.as_str()))
        .unwrap_or_else(|| {
            panic!("{method} {template} {status}: content type {ct:?} not documented")
        });
    if media == "application/json" {
        assert!(resp.is_json, "{method} {template}: not JSON: {}", resp.body);
        if let Some(why) = validate(doc, &schema["schema"], &resp.body, "$") {
            panic!("{method} {template} {status}: {why}\nbody: {}", resp.body);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_lists_exactly_the_routes_and_methods_the_router_serves() {
    let routes: BTreeSet<&str> = outpost::api::route_paths().into_iter().collect();
    let documented: BTreeSet<&str> = doc()["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(routes, documented, "router paths vs documented paths");

    // Which methods each route serves, found by asking a real node (405 = not served).
    let dir = tempfile::tempdir().unwrap();
    let node = start_node_with(auth_config(dir.path())).await;
    let tech = Api::new(node.local_addr()).with_token(TECH_TOKEN);
    let created = tech.create_customer(&customer("Open", "Api")).await;
    let customer_ref = created["customer_ref"].as_str().unwrap();
    let sub = tech
        .post(
            &format!("/v1/customers/{customer_ref}/addresses"),
            &address(),
        )
        .await
        .expect(202)
        .clone();
    let fill = |t: &str| {
        t.replace("{customer_ref}", customer_ref)
            .replace("{collection}", "addresses")
            .replace("{record_id}", sub["record_id"].as_str().unwrap())
            .replace("{operation_id}", created["operation_id"].as_str().unwrap())
    };
    let mut mismatches = Vec::new();
    for template in &routes {
        for method in &METHODS {
            let resp = tech
                .raw(method.clone(), &fill(template), Some(b"{}".to_vec()))
                .await;
            let served = resp.status.as_u16() != 405;
            let in_doc = doc()["paths"][*template]
                .get(method.as_str().to_lowercase())
                .is_some();
            if served != in_doc {
                mismatches.push(format!(
                    "{method} {template}: served {served} ({}), documented {in_doc}",
                    resp.status
                ));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));

    // The node serves this very document.
    let served = tech.get("/openapi.json").await;
    assert_eq!(&served.expect(200).clone(), doc());
    conforms("/openapi.json", &Method::GET, &served);
    stop_node(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_answers_validate_against_the_documented_schemas() {
    let hq = HqEmulator::start(HqEmulatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        sync_interval: Some(Duration::from_millis(50)),
        seed: 7,
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = auth_config(dir.path());
    config.hq.url = hq.url();
    config.upload.interval_ms = 50;
    config.limits.body_bytes = 4096;
    let node = start_node_with(config).await;
    let anon = Api::new(node.local_addr());
    let pos = anon.with_token(POS_TOKEN);
    let tech = anon.with_token(TECH_TOKEN);
    let get = Method::GET;
    let post = Method::POST;
    let patch = Method::PATCH;
    let put = Method::PUT;

    // HQ holds no configuration yet: the node works in real time (201 / 200).
    let full = json!({
        "first_name": "Schema", "last_name": "Check", "email": "schema.check@example.com",
        "phone": "+372 5000 0000", "customer_group": "RETAIL", "language": "et-EE"
    });
    let r = pos.post("/v1/customers", &full).await;
    conforms("/v1/customers", &post, &r);
    assert_eq!(r.status, 201, "{}", r.body);
    let rt_ref = r.body["customer_ref"].as_str().unwrap().to_string();
    let r = pos
        .patch(
            &format!("/v1/customers/{rt_ref}"),
            &json!({"language": null}),
        )
        .await;
    conforms("/v1/customers/{customer_ref}", &patch, &r);
    assert_eq!(r.status, 200, "{}", r.body);

    // Asynchronous mode from here on (202).
    hq.enable_async();
    let r = tech.post_empty("/v1/cdx/refresh").await;
    conforms("/v1/cdx/refresh", &post, &r);
    r.expect(200);
    let r = pos
        .post("/v1/customers", &customer("Async", "Schema"))
        .await;
    conforms("/v1/customers", &post, &r);
    let body = r.expect(202).clone();
    let cref = body["customer_ref"].as_str().unwrap().to_string();
    let op_id = body["operation_id"].as_str().unwrap().to_string();
    let subs = [
        ("addresses", address()),
        (
            "contacts",
            json!({"kind": "email", "value": "c@example.com", "description": "work"}),
        ),
        ("affiliations", json!({"affiliation": "VIP"})),
        ("attributes", json!({"name": "SHOE_SIZE", "value": "42"})),
    ];
    let mut record_ids = Vec::new();
    for (collection, record) in &subs {
        let r = pos
            .post(&format!("/v1/customers/{cref}/{collection}"), record)
            .await;
        conforms("/v1/customers/{customer_ref}/{collection}", &post, &r);
        record_ids.push((
            collection,
            r.expect(202)["record_id"].as_str().unwrap().to_string(),
        ));
    }
    let (collection, id) = &record_ids[0];
    let r = pos
        .patch(
            &format!("/v1/customers/{cref}/{collection}/{id}"),
            &json!({"county": null, "is_primary": false}),
        )
        .await;
    conforms(
        "/v1/customers/{customer_ref}/{collection}/{record_id}",
        &patch,
        &r,
    );
    r.expect(202);
    let r = pos.get(&format!("/v1/customers/{cref}")).await;
    conforms("/v1/customers/{customer_ref}", &get, &r);
    assert_eq!(r.expect(200)["addresses"].as_array().unwrap().len(), 1);
    let r = pos.get("/v1/customers?q=schema").await;
    conforms("/v1/customers", &get, &r);
    assert!(r.expect(200)["customers"].as_array().unwrap().len() >= 2);
    let r = pos.get("/v1/sync/operations?limit=2").await;
    conforms("/v1/sync/operations", &get, &r);
    let r = pos.get(&format!("/v1/sync/operations/{op_id}")).await;
    conforms("/v1/sync/operations/{operation_id}", &get, &r);
    let r = tech.post_empty("/v1/sync/upload").await;
    conforms("/v1/sync/upload", &post, &r);
    let r = tech.get("/diag").await;
    conforms("/diag", &get, &r);
    let r = tech.get("/metrics").await;
    conforms("/metrics", &get, &r);
    let r = anon.get("/healthz").await;
    conforms("/healthz", &get, &r);

    // Refusals: each status documented, each body the Error schema.
    let refusals: Vec<(&str, Method, Resp)> = vec![
        (
            "/v1/customers",
            post.clone(),
            pos.post("/v1/customers", &json!({"first_name": "A"})).await,
        ),
        (
            "/v1/customers",
            post.clone(),
            pos.raw(post.clone(), "/v1/customers", Some(b"{".to_vec()))
                .await,
        ),
        (
            "/v1/customers",
            post.clone(),
            pos.raw(post.clone(), "/v1/customers", Some(vec![b' '; 8192]))
                .await,
        ),
        (
            "/v1/customers",
            get.clone(),
            pos.get("/v1/customers?q=x&bogus=1").await,
        ),
        (
            "/v1/customers/{customer_ref}",
            get.clone(),
            pos.get("/v1/customers/S0001-T999999").await,
        ),
        (
            "/v1/customers/{customer_ref}",
            patch.clone(),
            pos.patch("/v1/customers/S0001-T999999", &json!({"last_name": "X"}))
                .await,
        ),
        (
            "/v1/sync/operations/{operation_id}",
            get.clone(),
            pos.get("/v1/sync/operations/not-a-uuid").await,
        ),
        (
            "/v1/sync/operations/{operation_id}",
            put.clone(),
            tech.put(
                &format!("/v1/sync/operations/{op_id}"),
                &json!({"payload": customer("A", "B")}),
            )
            .await,
        ),
        (
            "/v1/sync/operations/{operation_id}/sync",
            post.clone(),
            tech.post_empty(&format!("/v1/sync/operations/{op_id}/sync"))
                .await,
        ),
        ("/diag", get.clone(), anon.get("/diag").await),
        ("/diag", get.clone(), pos.get("/diag").await),
        ("/metrics", get.clone(), pos.get("/metrics").await),
    ];
    let statuses: BTreeSet<u16> = refusals.iter().map(|(_, _, r)| r.status.as_u16()).collect();
    for (template, method, resp) in &refusals {
        conforms(template, method, resp);
        assert!(
            resp.status.is_client_error(),
            "{method} {template}: {}",
            resp.status
        );
    }
    for want in [400, 401, 403, 404, 409, 413, 422] {
        assert!(statuses.contains(&want), "no {want} among {statuses:?}");
    }

    // HQ down: a CDX refresh is refused with 503, as documented.
    hq.set_faults(Faults {
        offline: true,
        ..Faults::default()
    });
    let r = tech.post_empty("/v1/cdx/refresh").await;
    conforms("/v1/cdx/refresh", &post, &r);
    assert_eq!(r.status, 503, "{}", r.body);
    stop_node(node).await;
    hq.shutdown().await;
}
