//! Bad input over the real HTTP server: every refusal is a 4xx with a JSON body naming the field
//! and the rule, nothing is written, and nothing panics.

mod common;

use std::time::Duration;

use common::{Api, address, customer, op_total, start_node, start_node_with, stop_node};
use outpost::node::Node;
use reqwest::Method;
use serde_json::{Value, json};

/// The refusal a case must get: status, field, rule.
type Want = (u16, &'static str, &'static str);

/// One bad request and the refusal it must get.
struct Case {
    method: Method,
    path: String,
    body: Option<Vec<u8>>,
    status: u16,
    field: &'static str,
    rule: &'static str,
}

fn case(method: Method, path: impl Into<String>, body: Option<Vec<u8>>, want: Want) -> Case {
    Case {
        method,
        path: path.into(),
        body,
        status: want.0,
        field: want.1,
        rule: want.2,
    }
}

fn raw(s: &str) -> Option<Vec<u8>> {
    Some(s.as_bytes().to_vec())
}

fn js(v: Value) -> Option<Vec<u8>> {
    Some(v.to_string().into_bytes())
}

/// `base` with `key` set to `value`.
fn with(base: &Value, key: &str, value: Value) -> Value {
    let mut v = base.clone();
    v[key] = value;
    v
}

/// `base` without `key`.
fn without(base: &Value, key: &str) -> Value {
    let mut v = base.clone();
    v.as_object_mut().unwrap().remove(key);
    v
}

/// What the store holds, to compare before and after a refusal.
struct Snapshot {
    ops: u64,
    customers: u64,
    customer: Value,
    operations: Vec<Value>,
}

async fn snapshot(node: &Node, api: &Api, cref: &str) -> Snapshot {
    Snapshot {
        ops: op_total(node),
        customers: node.store().customer_count().unwrap(),
        customer: api.customer(cref).await,
        operations: api.all_operations("", 500).await,
    }
}

/// Runs every case, checking the refusal and that nothing was written after each one.
async fn run_cases(node: &Node, api: &Api, cref: &str, cases: Vec<Case>) {
    let before = snapshot(node, api, cref).await;
    let mut failures = Vec::new();
    for c in &cases {
        let resp = api.raw(c.method.clone(), &c.path, c.body.clone()).await;
        let label = format!(
            "{} {} {}",
            c.method,
            c.path,
            c.body
                .as_deref()
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(120)]).into_owned())
                .unwrap_or_default()
        );
        if let Some(why) = resp.error_mismatch(c.status, c.field, c.rule) {
            failures.push(format!("{label}\n    {why}"));
        }
        assert!(
            resp.status.is_client_error(),
            "{label}: not a 4xx: {} {}",
            resp.status,
            resp.body
        );
        // Nothing half-written.
        assert_eq!(
            op_total(node),
            before.ops,
            "{label}: an operation was written"
        );
        assert_eq!(
            node.store().customer_count().unwrap(),
            before.customers,
            "{label}: a customer was written"
        );
    }
    let after = snapshot(node, api, cref).await;
    assert_eq!(after.customer, before.customer, "the customer is unchanged");
    assert_eq!(
        after.operations, before.operations,
        "the queue is unchanged"
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

struct Fixture {
    node: Node,
    api: Api,
    cref: String,
    adr: String,
    con: String,
    op: String,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path()).await;
    let api = Api::new(node.local_addr());
    let created = api
        .create_customer(
            &json!({"first_name": "Mari", "last_name": "Maasikas", "email": "mari@example.ee"}),
        )
        .await;
    let cref = created["customer_ref"].as_str().unwrap().to_string();
    let op = created["operation_id"].as_str().unwrap().to_string();
    let adr = api
        .post(&format!("/v1/customers/{cref}/addresses"), &address())
        .await
        .expect(202)["record_id"]
        .as_str()
        .unwrap()
        .to_string();
    let con = api
        .post(
            &format!("/v1/customers/{cref}/contacts"),
            &json!({"kind": "phone", "value": "+372 5555 1234"}),
        )
        .await
        .expect(202)["record_id"]
        .as_str()
        .unwrap()
        .to_string();
    Fixture {
        node,
        api,
        cref,
        adr,
        con,
        op,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_are_refused_on_every_write_endpoint() {
    let f = fixture().await;
    let (cref, adr, op) = (&f.cref, &f.adr, &f.op);
    let endpoints: Vec<(Method, String)> = vec![
        (Method::POST, "/v1/customers".into()),
        (Method::PATCH, format!("/v1/customers/{cref}")),
        (Method::POST, format!("/v1/customers/{cref}/addresses")),
        (Method::POST, format!("/v1/customers/{cref}/contacts")),
        (Method::POST, format!("/v1/customers/{cref}/affiliations")),
        (Method::POST, format!("/v1/customers/{cref}/attributes")),
        (
            Method::PATCH,
            format!("/v1/customers/{cref}/addresses/{adr}"),
        ),
        (Method::PUT, format!("/v1/sync/operations/{op}")),
    ];
    let mut cases = Vec::new();
    for (m, p) in &endpoints {
        let bodies: Vec<(Option<Vec<u8>>, Want)> = vec![
            (
                raw(r#"{"first_name": "Mari""#),
                (400, "body", "json_syntax"),
            ),
            (raw(r#"{first_name: "Mari"}"#), (400, "body", "json_syntax")),
            (raw("{\"a\": \"\u{0}\"}"), (400, "body", "json_syntax")),
            (
                Some(b"{\"last_name\": \"\xff\"}".to_vec()),
                (400, "body", "json_syntax"),
            ),
            (raw(&"[".repeat(10_000)), (400, "body", "json_syntax")),
            (raw(""), (400, "body", "required")),
            (raw("  \n"), (400, "body", "required")),
            (None, (400, "body", "required")),
            (raw("[]"), (422, "body", "type")),
            (raw("[{\"first_name\": \"Mari\"}]"), (422, "body", "type")),
            (raw("\"Mari\""), (422, "body", "type")),
            (raw("42"), (422, "body", "type")),
            (raw("null"), (422, "body", "type")),
            (raw("true"), (422, "body", "type")),
        ];
        for (body, want) in bodies {
            cases.push(case(m.clone(), p.clone(), body, want));
        }
    }
    run_cases(&f.node, &f.api, cref, cases).await;
    stop_node(f.node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_customer_fields_are_named_with_their_rule() {
    let f = fixture().await;
    let cref = &f.cref;
    let good = json!({"first_name": "Õie", "last_name": "Täht", "email": "oie@example.ee", "phone": "+372 5123 4567", "customer_group": "RETAIL", "language": "et-EE"});
    let create = |body: Value, want| case(Method::POST, "/v1/customers", js(body), want);
    let edit = |body: Value, want| {
        case(
            Method::PATCH,
            format!("/v1/customers/{cref}"),
            js(body),
            want,
        )
    };
    let cases = vec![
        // Wrong types.
        create(
            with(&good, "first_name", json!(5)),
            (422, "first_name", "type"),
        ),
        create(
            with(&good, "last_name", json!(["Täht"])),
            (422, "last_name", "type"),
        ),
        create(with(&good, "email", json!(true)), (422, "email", "type")),
        create(
            with(&good, "phone", json!(37251234567u64)),
            (422, "phone", "type"),
        ),
        create(
            with(&good, "language", json!({"tag": "et"})),
            (422, "language", "type"),
        ),
        create(
            with(&good, "first_name", Value::Null),
            (422, "first_name", "type"),
        ),
        // Missing and unknown.
        create(
            without(&good, "first_name"),
            (422, "first_name", "required"),
        ),
        create(without(&good, "last_name"), (422, "last_name", "required")),
        create(json!({}), (422, "first_name", "required")),
        create(
            with(&good, "firstname", json!("Õie")),
            (422, "firstname", "unknown_field"),
        ),
        create(
            with(&good, "account_number", json!("C0001")),
            (422, "account_number", "unknown_field"),
        ),
        // Rules of each field.
        create(
            with(&good, "first_name", json!("")),
            (422, "first_name", "required"),
        ),
        create(
            with(&good, "first_name", json!("   ")),
            (422, "first_name", "required"),
        ),
        create(
            with(&good, "first_name", json!("R2D2")),
            (422, "first_name", "letters"),
        ),
        create(
            with(&good, "last_name", json!("---")),
            (422, "last_name", "letters"),
        ),
        create(
            with(&good, "last_name", json!("a".repeat(101))),
            (422, "last_name", "max_length"),
        ),
        create(
            with(&good, "last_name", json!("Täht\u{7}")),
            (422, "last_name", "no_control_chars"),
        ),
        create(
            with(&good, "email", json!("not-an-email")),
            (422, "email", "email_format"),
        ),
        create(
            with(&good, "email", json!("Õie <oie@example.ee>")),
            (422, "email", "email_format"),
        ),
        create(
            with(&good, "email", json!("oie@example")),
            (422, "email", "email_format"),
        ),
        create(
            with(
                &good,
                "email",
                json!(format!("{}@example.ee", "a".repeat(250))),
            ),
            (422, "email", "max_length"),
        ),
        create(
            with(&good, "phone", json!("12")),
            (422, "phone", "phone_format"),
        ),
        create(
            with(&good, "phone", json!("call me")),
            (422, "phone", "phone_format"),
        ),
        create(
            with(&good, "phone", json!("+372 5123 4567 8901 23")),
            (422, "phone", "phone_format"),
        ),
        create(
            with(&good, "customer_group", json!("RETAIL GROUP")),
            (422, "customer_group", "code_format"),
        ),
        create(
            with(&good, "customer_group", json!("")),
            (422, "customer_group", "code_format"),
        ),
        create(
            with(&good, "language", json!("EE")),
            (422, "language", "language_tag"),
        ),
        create(
            with(&good, "language", json!("estonian")),
            (422, "language", "language_tag"),
        ),
        // Edits: the same rules, and an edit must change something.
        edit(json!({}), (422, "body", "non_empty_patch")),
        edit(json!({"first_name": 5}), (422, "first_name", "type")),
        edit(json!({"email": "nope"}), (422, "email", "email_format")),
        edit(json!({"phone": "1"}), (422, "phone", "phone_format")),
        edit(
            json!({"language": "EST"}),
            (422, "language", "language_tag"),
        ),
        edit(
            json!({"last_name": "Kask", "nickname": "K"}),
            (422, "nickname", "unknown_field"),
        ),
        edit(json!({"last_name": ""}), (422, "last_name", "required")),
    ];
    run_cases(&f.node, &f.api, cref, cases).await;
    stop_node(f.node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_sub_record_fields_are_named_with_their_rule() {
    let f = fixture().await;
    let (cref, adr, con) = (&f.cref, &f.adr, &f.con);
    let a = address();
    let add = |coll: &str, body: Value, want| {
        case(
            Method::POST,
            format!("/v1/customers/{cref}/{coll}"),
            js(body),
            want,
        )
    };
    let patch = |coll: &str, id: &str, body: Value, want| {
        case(
            Method::PATCH,
            format!("/v1/customers/{cref}/{coll}/{id}"),
            js(body),
            want,
        )
    };
    let cases = vec![
        // Addresses.
        add(
            "addresses",
            with(&a, "country", json!("EE")),
            (422, "country", "iso3166_alpha3"),
        ),
        add(
            "addresses",
            with(&a, "country", json!("est")),
            (422, "country", "iso3166_alpha3"),
        ),
        add(
            "addresses",
            with(&a, "country", json!("XXX")),
            (422, "country", "iso3166_alpha3"),
        ),
        add(
            "addresses",
            with(&a, "country", json!(372)),
            (422, "country", "type"),
        ),
        add("addresses", without(&a, "city"), (422, "city", "required")),
        add(
            "addresses",
            with(&a, "city", json!(" ")),
            (422, "city", "required"),
        ),
        add(
            "addresses",
            with(&a, "street", json!("x".repeat(251))),
            (422, "street", "max_length"),
        ),
        add(
            "addresses",
            with(&a, "postal_code", json!("!")),
            (422, "postal_code", "postal_code_format"),
        ),
        add(
            "addresses",
            with(&a, "postal_code", json!("12345678901")),
            (422, "postal_code", "postal_code_format"),
        ),
        add(
            "addresses",
            with(&a, "purpose", json!("castle")),
            (422, "purpose", "enum"),
        ),
        add(
            "addresses",
            with(&a, "is_primary", json!("yes")),
            (422, "is_primary", "type"),
        ),
        add(
            "addresses",
            with(&a, "is_primary", Value::Null),
            (422, "is_primary", "type"),
        ),
        add(
            "addresses",
            with(&a, "zip", json!("10117")),
            (422, "zip", "unknown_field"),
        ),
        patch(
            "addresses",
            adr,
            json!({}),
            (422, "body", "non_empty_patch"),
        ),
        patch(
            "addresses",
            adr,
            json!({"country": "EE"}),
            (422, "country", "iso3166_alpha3"),
        ),
        patch(
            "addresses",
            adr,
            json!({"purpose": 1}),
            (422, "purpose", "type"),
        ),
        // Contacts.
        add(
            "contacts",
            json!({"kind": "fax", "value": "5123 4567"}),
            (422, "kind", "enum"),
        ),
        add(
            "contacts",
            json!({"kind": "email", "value": "5123 4567"}),
            (422, "value", "email_format"),
        ),
        add(
            "contacts",
            json!({"kind": "phone", "value": "a@b.ee"}),
            (422, "value", "phone_format"),
        ),
        add(
            "contacts",
            json!({"value": "a@b.ee"}),
            (422, "kind", "required"),
        ),
        add(
            "contacts",
            json!({"kind": "email"}),
            (422, "value", "required"),
        ),
        add(
            "contacts",
            json!({"kind": "email", "value": "a@b.ee", "description": "x".repeat(61)}),
            (422, "description", "max_length"),
        ),
        patch(
            "contacts",
            con,
            json!({"kind": "email"}),
            (422, "value", "required_with_kind"),
        ),
        patch(
            "contacts",
            con,
            json!({"value": "a@b.ee"}),
            (422, "value", "phone_format"),
        ),
        patch(
            "contacts",
            con,
            json!({"kind": "email", "value": "5123 4567"}),
            (422, "value", "email_format"),
        ),
        // Affiliations and attributes.
        add(
            "affiliations",
            json!({"affiliation": "GOLD CLUB"}),
            (422, "affiliation", "code_format"),
        ),
        add("affiliations", json!({}), (422, "affiliation", "required")),
        add(
            "attributes",
            json!({"name": "shoe size", "value": "38"}),
            (422, "name", "code_format"),
        ),
        add(
            "attributes",
            json!({"name": "shoe_size", "value": ""}),
            (422, "value", "required"),
        ),
        add(
            "attributes",
            json!({"name": "shoe_size", "value": 38}),
            (422, "value", "type"),
        ),
        add(
            "attributes",
            json!({"name": "shoe_size"}),
            (422, "value", "required"),
        ),
        add(
            "attributes",
            json!({"name": "shoe_size", "value": "38", "unit": "EU"}),
            (422, "unit", "unknown_field"),
        ),
    ];
    run_cases(&f.node, &f.api, cref, cases).await;
    stop_node(f.node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_things_and_bad_parameters_are_named() {
    let f = fixture().await;
    let (cref, adr, con, op) = (&f.cref, &f.adr, &f.con, &f.op);
    // Another customer: a sub-record id of one customer is unknown on the other.
    let other = f.api.create_customer(&customer("Jaan", "Tamm")).await["customer_ref"]
        .as_str()
        .unwrap()
        .to_string();
    let nobody = "S0001-T999999";
    let no_op = "0190b5f0-0000-7000-8000-000000000000";
    let attr = json!({"name": "shoe_size", "value": "38"});
    let pay = json!({"payload": {"first_name": "Mari", "last_name": "Maasikas"}});
    let cases = vec![
        // Unknown customer, collection, sub-record, operation.
        case(
            Method::GET,
            format!("/v1/customers/{nobody}"),
            None,
            (404, "customer_ref", "exists"),
        ),
        case(
            Method::PATCH,
            format!("/v1/customers/{nobody}"),
            js(json!({"last_name": "Kask"})),
            (404, "customer_ref", "exists"),
        ),
        case(
            Method::POST,
            format!("/v1/customers/{nobody}/addresses"),
            js(address()),
            (404, "customer_ref", "exists"),
        ),
        case(
            Method::POST,
            format!("/v1/customers/{nobody}/attributes"),
            js(attr.clone()),
            (404, "customer_ref", "exists"),
        ),
        case(
            Method::PATCH,
            format!("/v1/customers/{nobody}/addresses/{adr}"),
            js(json!({"city": "Keila"})),
            (404, "customer_ref", "exists"),
        ),
        case(
            Method::POST,
            format!("/v1/customers/{cref}/pets"),
            js(attr.clone()),
            (404, "collection", "exists"),
        ),
        case(
            Method::PATCH,
            format!("/v1/customers/{cref}/pets/{adr}"),
            js(json!({"name": "x"})),
            (404, "collection", "exists"),
        ),
        case(
            Method::PATCH,
            format!("/v1/customers/{other}/addresses/{adr}"),
            js(json!({"city": "Keila"})),
            (404, "record_id", "exists"),
        ),
        case(
            Method::PATCH,
            format!("/v1/customers/{other}/contacts/{con}"),
            js(json!({"description": "work"})),
            (404, "record_id", "exists"),
        ),
        case(
            Method::PATCH,
            format!("/v1/customers/{cref}/addresses/ADR-999999"),
            js(json!({"city": "Keila"})),
            (404, "record_id", "exists"),
        ),
        case(
            Method::PATCH,
            format!("/v1/customers/{cref}/addresses/{con}"),
            js(json!({"city": "Keila"})),
            (404, "record_id", "exists"),
        ),
        case(
            Method::PATCH,
            format!("/v1/customers/{cref}/contacts/{adr}"),
            js(json!({"is_primary": true})),
            (404, "record_id", "exists"),
        ),
        case(
            Method::GET,
            format!("/v1/sync/operations/{no_op}"),
            None,
            (404, "operation_id", "exists"),
        ),
        case(
            Method::PUT,
            format!("/v1/sync/operations/{no_op}"),
            js(pay.clone()),
            (404, "operation_id", "exists"),
        ),
        case(
            Method::POST,
            format!("/v1/sync/operations/{no_op}/sync"),
            None,
            (404, "operation_id", "exists"),
        ),
        // Bad operation ids.
        case(
            Method::GET,
            "/v1/sync/operations/42",
            None,
            (400, "operation_id", "uuid"),
        ),
        case(
            Method::GET,
            "/v1/sync/operations/not-a-uuid",
            None,
            (400, "operation_id", "uuid"),
        ),
        case(
            Method::PUT,
            "/v1/sync/operations/not-a-uuid",
            js(pay.clone()),
            (400, "operation_id", "uuid"),
        ),
        case(
            Method::POST,
            "/v1/sync/operations/not-a-uuid/sync",
            None,
            (400, "operation_id", "uuid"),
        ),
        // The sync-status edit body.
        case(
            Method::PUT,
            format!("/v1/sync/operations/{op}"),
            js(json!({})),
            (422, "payload", "required"),
        ),
        case(
            Method::PUT,
            format!("/v1/sync/operations/{op}"),
            js(json!({"payload": 5})),
            (422, "payload", "type"),
        ),
        case(
            Method::PUT,
            format!("/v1/sync/operations/{op}"),
            js(json!({"payload": {}, "note": "x"})),
            (422, "note", "unknown_field"),
        ),
        case(
            Method::PUT,
            format!("/v1/sync/operations/{op}"),
            js(pay.clone()),
            (409, "state", "state_allows"),
        ),
        case(
            Method::POST,
            format!("/v1/sync/operations/{op}/sync"),
            None,
            (409, "state", "state_allows"),
        ),
        // Query parameters.
        case(
            Method::GET,
            "/v1/sync/operations?State=failed",
            None,
            (400, "State", "unknown_field"),
        ),
        case(
            Method::GET,
            "/v1/sync/operations?state=failed&state=held",
            None,
            (400, "state", "duplicate"),
        ),
        case(
            Method::GET,
            "/v1/customers?q=mari&sort=name",
            None,
            (400, "sort", "unknown_field"),
        ),
        case(
            Method::GET,
            "/v1/sync/operations?state=done",
            None,
            (400, "state", "enum"),
        ),
        case(
            Method::GET,
            "/v1/sync/operations?state=PENDING",
            None,
            (400, "state", "enum"),
        ),
        case(
            Method::GET,
            "/v1/sync/operations?limit=0",
            None,
            (400, "limit", "range"),
        ),
        case(
            Method::GET,
            "/v1/sync/operations?limit=-1",
            None,
            (400, "limit", "range"),
        ),
        case(
            Method::GET,
            "/v1/sync/operations?limit=ten",
            None,
            (400, "limit", "range"),
        ),
        case(
            Method::GET,
            "/v1/sync/operations?limit=100000",
            None,
            (400, "limit", "range"),
        ),
        case(
            Method::GET,
            "/v1/sync/operations?after=x",
            None,
            (400, "after", "integer"),
        ),
        case(
            Method::GET,
            "/v1/sync/operations?after=-1",
            None,
            (400, "after", "integer"),
        ),
        case(Method::GET, "/v1/customers", None, (400, "q", "required")),
        case(
            Method::GET,
            "/v1/customers?q=%20%20",
            None,
            (400, "q", "required"),
        ),
        case(
            Method::GET,
            format!("/v1/customers?q={}", "a".repeat(201)),
            None,
            (400, "q", "max_length"),
        ),
        case(
            Method::GET,
            "/v1/customers?q=mari&limit=0",
            None,
            (400, "limit", "range"),
        ),
        case(
            Method::GET,
            "/v1/customers?q=mari&limit=501",
            None,
            (400, "limit", "range"),
        ),
        // Unknown routes and wrong methods.
        // `/` is the diagnostics page; it takes GET only.
        case(Method::GET, "/index.html", None, (404, "path", "exists")),
        case(Method::POST, "/", None, (405, "method", "allowed_method")),
        case(Method::GET, "/v2/customers", None, (404, "path", "exists")),
        case(
            Method::POST,
            "/v1/customer",
            js(customer("A", "B")),
            (404, "path", "exists"),
        ),
        case(
            Method::GET,
            format!("/v1/customers/{cref}/addresses/{adr}/extra"),
            None,
            (404, "path", "exists"),
        ),
        case(
            Method::DELETE,
            format!("/v1/customers/{cref}"),
            None,
            (405, "method", "allowed_method"),
        ),
        case(
            Method::PUT,
            format!("/v1/customers/{cref}"),
            js(customer("A", "B")),
            (405, "method", "allowed_method"),
        ),
        case(
            Method::PUT,
            "/v1/customers",
            js(customer("A", "B")),
            (405, "method", "allowed_method"),
        ),
        case(
            Method::GET,
            format!("/v1/customers/{cref}/addresses"),
            None,
            (405, "method", "allowed_method"),
        ),
        case(
            Method::DELETE,
            format!("/v1/customers/{cref}/addresses/{adr}"),
            None,
            (405, "method", "allowed_method"),
        ),
        case(
            Method::POST,
            "/v1/sync/operations",
            js(json!({})),
            (405, "method", "allowed_method"),
        ),
        case(
            Method::DELETE,
            format!("/v1/sync/operations/{op}"),
            None,
            (405, "method", "allowed_method"),
        ),
        case(
            Method::GET,
            format!("/v1/sync/operations/{op}/sync"),
            None,
            (405, "method", "allowed_method"),
        ),
        case(
            Method::POST,
            "/healthz",
            None,
            (405, "method", "allowed_method"),
        ),
    ];
    run_cases(&f.node, &f.api, cref, cases).await;
    stop_node(f.node).await;
}

/// Path segments that are not UTF-8 once percent-decoded are refused as JSON naming the segment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_path_parameters_are_named() {
    let f = fixture().await;
    let (cref, adr) = (&f.cref, &f.adr);
    let cases = vec![
        case(
            Method::GET,
            "/v1/customers/%FF",
            None,
            (400, "customer_ref", "utf8"),
        ),
        case(
            Method::PATCH,
            "/v1/customers/%C3%28",
            js(json!({"last_name": "Kask"})),
            (400, "customer_ref", "utf8"),
        ),
        case(
            Method::POST,
            format!("/v1/customers/{cref}/%FF"),
            js(json!({"name": "a", "value": "b"})),
            (400, "collection", "utf8"),
        ),
        case(
            Method::PATCH,
            format!("/v1/customers/{cref}/addresses/%FF"),
            js(json!({"city": "Keila"})),
            (400, "record_id", "utf8"),
        ),
        case(
            Method::PATCH,
            format!("/v1/customers/%FE/addresses/{adr}"),
            js(json!({"city": "Keila"})),
            (400, "customer_ref", "utf8"),
        ),
        case(
            Method::GET,
            "/v1/sync/operations/%FF",
            None,
            (400, "operation_id", "utf8"),
        ),
        case(
            Method::POST,
            "/v1/sync/operations/%FF/sync",
            None,
            (400, "operation_id", "utf8"),
        ),
    ];
    run_cases(&f.node, &f.api, cref, cases).await;
    stop_node(f.node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_refused_with_413() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(dir.path());
    config.limits.body_bytes = 4096;
    let node = start_node_with(config).await;
    let api = Api::new(node.local_addr());
    let created = api.create_customer(&customer("Mari", "Maasikas")).await;
    let cref = created["customer_ref"].as_str().unwrap().to_string();
    let op = created["operation_id"].as_str().unwrap().to_string();
    let adr = api
        .post(&format!("/v1/customers/{cref}/addresses"), &address())
        .await
        .expect(202)["record_id"]
        .as_str()
        .unwrap()
        .to_string();

    // Valid JSON, too big; and bytes that are not JSON at all, too big.
    let big_valid = |n: usize| js(json!({"first_name": "Mari", "last_name": "a".repeat(n)}));
    let junk = Some(vec![b'{'; 4097]);
    let mut cases = Vec::new();
    for (m, p) in [
        (Method::POST, "/v1/customers".to_string()),
        (Method::PATCH, format!("/v1/customers/{cref}")),
        (Method::POST, format!("/v1/customers/{cref}/attributes")),
        (
            Method::PATCH,
            format!("/v1/customers/{cref}/addresses/{adr}"),
        ),
        (Method::PUT, format!("/v1/sync/operations/{op}")),
    ] {
        cases.push(case(
            m.clone(),
            p.clone(),
            big_valid(5000),
            (413, "body", "max_bytes"),
        ));
        cases.push(case(
            m.clone(),
            p.clone(),
            big_valid(1 << 20),
            (413, "body", "max_bytes"),
        ));
        cases.push(case(m, p, junk.clone(), (413, "body", "max_bytes")));
    }
    run_cases(&node, &api, &cref, cases).await;

    // Just under the limit is read (and then judged on its content).
    let body = json!({"first_name": "Mari", "last_name": "a".repeat(3000)}).to_string();
    assert!(body.len() < 4096);
    api.raw(Method::POST, "/v1/customers", Some(body.into_bytes()))
        .await
        .expect_error(422, "last_name", "max_length");
    stop_node(node).await;
}

/// A client that stops sending its body half-way gets a JSON error when the request timeout
/// strikes, and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_times_out_with_a_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(dir.path());
    config.limits.request_timeout_ms = 300;
    let node = start_node_with(config).await;
    let api = Api::new(node.local_addr());
    api.create_customer(&customer("Mari", "Maasikas")).await;

    let addr = node.local_addr();
    // A plain blocking socket on its own thread; every read bounded by a timeout.
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let head = format!(
            "POST /v1/customers HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: 100\r\n\r\n{{\"first_name\":"
        );
        stream.write_all(head.as_bytes()).unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        // Until the head and body of the answer are in, the server closes, or 10 s pass.
        loop {
            let n = stream.read(&mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&answer);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_string())
                    })
                    .and_then(|v| v.parse::<usize>().ok());
                if len.is_some_and(|len| body.len() >= len) {
                    break;
                }
            }
        }
        answer
    })
    .await
    .unwrap();
    assert!(
        !answer.is_empty(),
        "the node never answered a stalled request"
    );
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    assert!((400..600).contains(&status), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "not JSON: {head}\n{body}"
    );
    let json: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("body {body:?}: {e}"));
    assert!(
        json["error"].as_str().is_some_and(|s| !s.is_empty()),
        "{json}"
    );
    for key in ["message", "field", "rule"] {
        assert!(
            json[key].as_str().is_some_and(|s| !s.is_empty()),
            "{key} in {json}"
        );
    }
    assert_eq!(op_total(&node), 1, "nothing written");
    stop_node(node).await;
}

/// Refusals inside the writer (a contact value that breaks the contact's kind) share group
/// commits with valid writes; the refused ones write nothing, the others all land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_in_a_busy_group_commit_write_nothing() {
    let f = fixture().await;
    let before = op_total(&f.node);
    let mut tasks = Vec::new();
    for i in 0..48 {
        let api = f.api.clone();
        let (cref, con) = (f.cref.clone(), f.con.clone());
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                let body = json!({"name": format!("a{i}"), "value": "v"});
                api.post(&format!("/v1/customers/{cref}/attributes"), &body)
                    .await
                    .expect(202);
                true
            } else {
                // Valid on its own; refused against the contact's kind (phone) by the writer.
                api.patch(
                    &format!("/v1/customers/{cref}/contacts/{con}"),
                    &json!({"value": "a@b.ee"}),
                )
                .await
                .expect_error(422, "value", "phone_format");
                false
            }
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += u64::from(t.await.unwrap());
    }
    assert_eq!(accepted, 24);
    assert_eq!(op_total(&f.node), before + 24);
    let c = f.api.customer(&f.cref).await;
    assert_eq!(c["attributes"].as_array().unwrap().len(), 24);
    assert_eq!(
        c["contacts"][0]["value"], "+372 5555 1234",
        "the contact is untouched"
    );
    stop_node(f.node).await;
}

/// A `null` for a field that cannot be cleared is a wrong type, not "leave unchanged".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_for_a_required_field_in_an_edit_is_a_type_error() {
    let f = fixture().await;
    let (cref, adr, con) = (&f.cref, &f.adr, &f.con);
    let cases = vec![
        case(
            Method::PATCH,
            format!("/v1/customers/{cref}"),
            js(json!({"first_name": null, "last_name": "Kask"})),
            (422, "first_name", "type"),
        ),
        case(
            Method::PATCH,
            format!("/v1/customers/{cref}"),
            js(json!({"last_name": null})),
            (422, "last_name", "type"),
        ),
        case(
            Method::PATCH,
            format!("/v1/customers/{cref}/addresses/{adr}"),
            js(json!({"country": null, "city": "Keila"})),
            (422, "country", "type"),
        ),
        case(
            Method::PATCH,
            format!("/v1/customers/{cref}/contacts/{con}"),
            js(json!({"value": null, "is_primary": true})),
            (422, "value", "type"),
        ),
        case(
            Method::PATCH,
            format!("/v1/customers/{cref}/addresses/{adr}"),
            js(json!({"is_primary": null})),
            (422, "is_primary", "type"),
        ),
        case(
            Method::PATCH,
            format!("/v1/customers/{cref}/addresses/{adr}"),
            js(json!({"purpose": null})),
            (422, "purpose", "type"),
        ),
        case(
            Method::PATCH,
            format!("/v1/customers/{cref}/contacts/{con}"),
            js(json!({"kind": null, "value": "a@b.ee"})),
            (422, "kind", "type"),
        ),
    ];
    run_cases(&f.node, &f.api, cref, cases).await;
    stop_node(f.node).await;
}

/// After a run of refusals the node still serves and writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_keeps_serving_after_bad_input() {
    let f = fixture().await;
    for body in ["{", "[]", "null", "{\"first_name\": 1}"] {
        let r = f
            .api
            .raw(
                Method::POST,
                "/v1/customers",
                Some(body.as_bytes().to_vec()),
            )
            .await;
        assert!(r.status.is_client_error(), "{body}: {}", r.status);
    }
    assert_eq!(f.api.get("/healthz").await.expect(200)["status"], "ok");
    let created = f.api.create_customer(&customer("Jaan", "Tamm")).await;
    assert_eq!(created["state"], "pending");
    stop_node(f.node).await;
}
