//! Bad input at scale (targets R5, design invariant 7): property tests that generate valid
//! bodies, mutate them, and send them with random paths, methods and query strings to every
//! route of a real in-process node on loopback.
//!
//! Properties: no 5xx; every 4xx is JSON naming `field` and `rule`; a refused request writes
//! nothing (operation count and customer count unchanged); an accepted write is readable back.
//!
//! Cases per property: `PROPTEST_CASES` (default 256). Longer run:
//! `PROPTEST_CASES=20000 cargo test --release --test proptest_api`.

mod common;

use common::{Api, Resp, op_total, start_node, stop_node};
use outpost::node::Node;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::Method;
use serde_json::{Map, Value, json};

/// Cases per property: `PROPTEST_CASES`, default 256.
fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(256);
    Config {
        cases,
        // Shrinking sends requests too: keep it bounded.
        max_shrink_iters: 512,
        // Failures are reported in the test output; regressions are committed by hand as
        // explicit cases at the end of this file.
        failure_persistence: None,
        ..Config::default()
    }
}

/// The write endpoints and the kind of body each takes.
#[derive(Debug, Clone, Copy)]
enum Kind {
    CustomerCreate,
    CustomerEdit,
    Address,
    AddressEdit,
    Contact,
    Affiliation,
    Attribute,
    OperationPut,
}

const KINDS: [Kind; 8] = [
    Kind::CustomerCreate,
    Kind::CustomerEdit,
    Kind::Address,
    Kind::AddressEdit,
    Kind::Contact,
    Kind::Affiliation,
    Kind::Attribute,
    Kind::OperationPut,
];

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Z][a-z]{1,12}",
        Just("Õie".to_string()),
        Just("Täht-Kask".to_string()),
        Just("O'Brien".to_string()),
    ]
}

fn email() -> impl Strategy<Value = String> {
    "[a-z]{1,10}@[a-z]{2,10}\\.(ee|com|fi)"
}

fn phone() -> impl Strategy<Value = String> {
    "\\+372 5[0-9]{3} [0-9]{4}"
}

fn country() -> impl Strategy<Value = String> {
    prop_oneof![Just("EST"), Just("FIN"), Just("LVA"), Just("DEU")].prop_map(String::from)
}

/// A valid body for `kind`.
fn valid_body(kind: Kind) -> BoxedStrategy<Value> {
    match kind {
        Kind::CustomerCreate => (
            name(),
            name(),
            proptest::option::of(email()),
            proptest::option::of(phone()),
        )
            .prop_map(|(f, l, e, p)| {
                let mut v = json!({"first_name": f, "last_name": l});
                if let Some(e) = e {
                    v["email"] = json!(e);
                }
                if let Some(p) = p {
                    v["phone"] = json!(p);
                }
                v
            })
            .boxed(),
        Kind::CustomerEdit => prop_oneof![
            name().prop_map(|n| json!({"last_name": n})),
            email().prop_map(|e| json!({"email": e})),
            phone().prop_map(|p| json!({"phone": p})),
        ]
        .boxed(),
        Kind::Address => (
            "[A-Z][a-z]{2,10} [0-9]{1,3}",
            "[A-Z][a-z]{2,10}",
            "[0-9]{5}",
            country(),
            prop_oneof![
                Just("home"),
                Just("delivery"),
                Just("invoice"),
                Just("business")
            ],
            any::<bool>(),
        )
            .prop_map(|(s, c, p, co, pu, pr)| {
                json!({"street": s, "city": c, "postal_code": p, "country": co,
                       "purpose": pu, "is_primary": pr})
            })
            .boxed(),
        Kind::AddressEdit => prop_oneof![
            "[A-Z][a-z]{2,10}".prop_map(|c| json!({"city": c})),
            country().prop_map(|c| json!({"country": c})),
        ]
        .boxed(),
        Kind::Contact => prop_oneof![
            email().prop_map(|e| json!({"kind": "email", "value": e})),
            phone().prop_map(|p| json!({"kind": "phone", "value": p})),
        ]
        .boxed(),
        Kind::Affiliation => "[A-Z]{2,8}(_[A-Z]{2,5})?"
            .prop_map(|a| json!({"affiliation": a}))
            .boxed(),
        Kind::Attribute => ("[a-z]{2,8}(_[a-z]{2,5})?", "[A-Za-z0-9]{1,10}")
            .prop_map(|(n, v)| json!({"name": n, "value": v}))
            .boxed(),
        Kind::OperationPut => (name(), name())
            .prop_map(|(f, l)| json!({"payload": {"first_name": f, "last_name": l}}))
            .boxed(),
    }
}

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        weird_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Strings likely to break something: control characters, unicode, overlong, empty.
fn weird_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(" ".to_string()),
        "\\PC{0,40}",
        ".{0,40}",
        "[\\x00-\\x1f\\x7f]{1,5}",
        "[a-z]{1,5}[\\x00-\\x1f][a-z]{1,5}",
        (1usize..5000).prop_map(|n| "a".repeat(n)),
        (1usize..400).prop_map(|n| "é".repeat(n)),
        Just("\u{202e}\u{200b}\u{feff}".to_string()),
        Just("😀👨‍👩‍👧".to_string()),
        Just("XX".to_string()),
        Just("xxx".to_string()),
        Just("not-an-email".to_string()),
        Just("a@b".to_string()),
        Just("+".to_string()),
        Just("12".to_string()),
    ]
}

/// Huge or odd numbers as raw JSON text.
fn raw_number() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("1e400".to_string()),
        Just("-1e400".to_string()),
        Just("123456789012345678901234567890".to_string()),
        Just("-0".to_string()),
        Just("0.0000000000000000000001".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
    ]
}

/// One mutation of a valid JSON object body.
#[derive(Debug, Clone)]
enum Mutation {
    None,
    Drop(usize),
    Set(usize, Value),
    Extra(String, Value),
    Replace(Value),
    RawNumber(usize, String),
    Bytes(Vec<u8>),
    Truncate(usize),
    Deep(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        2 => Just(Mutation::None),
        2 => any::<usize>().prop_map(Mutation::Drop),
        6 => (any::<usize>(), any_json()).prop_map(|(i, v)| Mutation::Set(i, v)),
        2 => ("[a-z_]{0,12}", any_json()).prop_map(|(k, v)| Mutation::Extra(k, v)),
        2 => any_json().prop_map(Mutation::Replace),
        1 => (any::<usize>(), raw_number()).prop_map(|(i, n)| Mutation::RawNumber(i, n)),
        1 => prop::collection::vec(any::<u8>(), 0..200).prop_map(Mutation::Bytes),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => (1usize..2000).prop_map(Mutation::Deep),
    ]
}

fn nth_key(v: &Value, i: usize) -> Option<String> {
    let obj = v.as_object()?;
    if obj.is_empty() {
        return None;
    }
    obj.keys().nth(i % obj.len()).cloned()
}

/// The body bytes of `valid` after `m`.
fn apply(valid: &Value, m: &Mutation) -> Vec<u8> {
    let mut v = valid.clone();
    match m {
        Mutation::None => {}
        Mutation::Drop(i) => {
            if let (Some(k), Some(obj)) = (nth_key(&v, *i), v.as_object_mut()) {
                obj.remove(&k);
            }
        }
        Mutation::Set(i, x) => {
            if let Some(k) = nth_key(&v, *i) {
                v[k] = x.clone();
            }
        }
        Mutation::Extra(k, x) => {
            if let Some(obj) = v.as_object_mut() {
                obj.insert(k.clone(), x.clone());
            }
        }
        Mutation::Replace(x) => v = x.clone(),
        Mutation::RawNumber(i, n) => {
            if let Some(k) = nth_key(&v, *i) {
                v[k.as_str()] = json!("__NUMBER__");
                return v.to_string().replace("\"__NUMBER__\"", n).into_bytes();
            }
        }
        Mutation::Bytes(b) => return b.clone(),
        Mutation::Truncate(i) => {
            let s = v.to_string().into_bytes();
            return s[..i % s.len().max(1)].to_vec();
        }
        Mutation::Deep(n) => {
            return format!("{}{}", "[".repeat(*n), "]".repeat(*n)).into_bytes();
        }
    }
    v.to_string().into_bytes()
}

/// A node with one customer, one address and one operation to aim at.
struct Fixture {
    node: Node,
    api: Api,
    cref: String,
    adr: String,
    op: String,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_node(dir.path()).await;
    let api = Api::new(node.local_addr());
    let created = api
        .create_customer(&json!({"first_name": "Mari", "last_name": "Maasikas"}))
        .await;
    let cref = created["customer_ref"].as_str().expect("ref").to_string();
    let op = created["operation_id"].as_str().expect("op").to_string();
    let adr = api
        .post(
            &format!("/v1/customers/{cref}/addresses"),
            &common::address(),
        )
        .await
        .expect(202)["record_id"]
        .as_str()
        .expect("record_id")
        .to_string();
    Fixture {
        node,
        api,
        cref,
        adr,
        op,
        _dir: dir,
    }
}

impl Fixture {
    fn endpoint(&self, kind: Kind) -> (Method, String) {
        let (c, a, o) = (&self.cref, &self.adr, &self.op);
        match kind {
            Kind::CustomerCreate => (Method::POST, "/v1/customers".into()),
            Kind::CustomerEdit => (Method::PATCH, format!("/v1/customers/{c}")),
            Kind::Address => (Method::POST, format!("/v1/customers/{c}/addresses")),
            Kind::AddressEdit => (Method::PATCH, format!("/v1/customers/{c}/addresses/{a}")),
            Kind::Contact => (Method::POST, format!("/v1/customers/{c}/contacts")),
            Kind::Affiliation => (Method::POST, format!("/v1/customers/{c}/affiliations")),
            Kind::Attribute => (Method::POST, format!("/v1/customers/{c}/attributes")),
            Kind::OperationPut => (Method::PUT, format!("/v1/sync/operations/{o}")),
        }
    }
}

fn fail(what: String) -> Result<(), TestCaseError> {
    Err(TestCaseError::fail(what))
}

/// A 503 that says HQ is unreachable, from the one endpoint that must reach HQ to answer
/// (`POST /v1/cdx/refresh`). The test nodes' HQ is unreachable on purpose; this answer is
/// documented and is not about the request's input.
fn hq_unavailable(path: &str, resp: &Resp) -> bool {
    resp.status.as_u16() == 503
        && (path == "/v1/cdx/refresh" || path.starts_with("/v1/cdx/refresh?"))
        && resp.body["error"] == "cdx_refresh_failed"
}

/// The properties every answer must have, and no write on a refusal.
async fn check(
    f: &Fixture,
    method: &Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Resp, TestCaseError> {
    let ops_before = op_total(&f.node);
    let customers_before = f.node.store().customer_count().expect("customer count");
    let label = format!(
        "{method} {path} {}",
        body.as_deref()
            .map(|b| String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned())
            .unwrap_or_default()
    );
    let resp = f.api.raw(method.clone(), path, body).await;
    if resp.status.is_server_error() && !hq_unavailable(path, &resp) {
        fail(format!("{label}: 5xx {} {}", resp.status, resp.body))?;
    }
    if resp.status.is_client_error() {
        if let Some(why) = resp.json_error_mismatch() {
            fail(format!("{label}: {} {why}", resp.status))?;
        }
        let ops = op_total(&f.node);
        let customers = f.node.store().customer_count().expect("customer count");
        if ops != ops_before || customers != customers_before {
            fail(format!(
                "{label}: refused ({}) but written: operations {ops_before} -> {ops}, \
                 customers {customers_before} -> {customers}",
                resp.status
            ))?;
        }
    }
    Ok(resp)
}

/// An accepted write is readable back: the customer, and the record it made.
async fn check_readable(f: &Fixture, label: &str, resp: &Resp) -> Result<(), TestCaseError> {
    let Some(cref) = resp.body["customer_ref"].as_str() else {
        return fail(format!(
            "{label}: accepted without customer_ref: {}",
            resp.body
        ));
    };
    let read = f.api.get(&format!("/v1/customers/{cref}")).await;
    if read.status.as_u16() != 200 {
        return fail(format!(
            "{label}: accepted write not readable: {} {}",
            read.status, read.body
        ));
    }
    if let Some(record) = resp.body["record_id"].as_str()
        && !read.body.to_string().contains(record)
    {
        return fail(format!(
            "{label}: record {record} not in the customer: {}",
            read.body
        ));
    }
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn mutated_bodies_on_every_write_endpoint() {
    let rt = runtime();
    let f = rt.block_on(fixture());
    let strategy = (0..KINDS.len())
        .prop_flat_map(|i| (Just(i), valid_body(KINDS[i]), mutation()))
        .prop_map(|(i, valid, m)| (KINDS[i], apply(&valid, &m)));
    let mut runner = TestRunner::new(config());
    let sent = std::sync::atomic::AtomicUsize::new(0);
    let result = runner.run(&strategy, |(kind, body)| {
        sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        rt.block_on(async {
            let (method, path) = f.endpoint(kind);
            let label = format!("{method} {path} {}", String::from_utf8_lossy(&body));
            let resp = check(&f, &method, &path, Some(body)).await?;
            if resp.status.is_success() {
                let ops = op_total(&f.node);
                if ops == 0 {
                    fail(format!("{label}: accepted but no operation"))?;
                }
                if matches!(kind, Kind::OperationPut) {
                    let read = f.api.get(&path).await;
                    if read.status.as_u16() != 200 || !read.body["payload"].is_object() {
                        fail(format!(
                            "{label}: saved operation not readable: {} {}",
                            read.status, read.body
                        ))?;
                    }
                } else {
                    check_readable(&f, &label, &resp).await?;
                }
            }
            Ok(())
        })
    });
    eprintln!(
        "{} requests",
        sent.load(std::sync::atomic::Ordering::Relaxed)
    );
    rt.block_on(stop_node(f.node));
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Valid bodies, unmutated, are accepted (so the mutation test is not refusing everything).
#[test]
fn valid_bodies_are_accepted_and_readable() {
    let rt = runtime();
    let f = rt.block_on(fixture());
    let strategy = (0..KINDS.len() - 1).prop_flat_map(|i| (Just(KINDS[i]), valid_body(KINDS[i])));
    let mut config = config();
    config.cases = config.cases.min(64);
    let mut runner = TestRunner::new(config);
    let sent = std::sync::atomic::AtomicUsize::new(0);
    let result = runner.run(&strategy, |(kind, body)| {
        sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        rt.block_on(async {
            let (method, path) = f.endpoint(kind);
            let label = format!("{method} {path} {body}");
            let ops_before = op_total(&f.node);
            let resp = check(&f, &method, &path, Some(body.to_string().into_bytes())).await?;
            if resp.status.as_u16() != 202 {
                fail(format!("{label}: {} {}", resp.status, resp.body))?;
            }
            if op_total(&f.node) != ops_before + 1 {
                fail(format!("{label}: accepted but not one new operation"))?;
            }
            check_readable(&f, &label, &resp).await
        })
    });
    eprintln!(
        "{} requests",
        sent.load(std::sync::atomic::Ordering::Relaxed)
    );
    rt.block_on(stop_node(f.node));
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Percent-encodes everything but unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("{c}".to_string()),
        Just("{a}".to_string()),
        Just("{o}".to_string()),
        Just(String::new()),
        "[a-z0-9_-]{1,20}",
        weird_string().prop_map(|s| encode(&s)),
        prop::collection::vec(any::<u8>(), 1..10)
            .prop_map(|b| b.iter().map(|x| format!("%{x:02X}")).collect()),
        Just("%FF%FE".to_string()),
        Just("..".to_string()),
        Just("9999999999999999999999".to_string()),
    ]
}

fn query() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("q".to_string()),
        Just("limit".to_string()),
        Just("after".to_string()),
        Just("state".to_string()),
        Just("kind".to_string()),
        "[a-z]{1,8}",
        weird_string().prop_map(|s| encode(&s)),
    ];
    let value = prop_oneof![
        "[a-z0-9]{0,10}",
        raw_number(),
        Just("-1".to_string()),
        Just("0".to_string()),
        Just("failed".to_string()),
        Just("pending".to_string()),
        weird_string().prop_map(|s| encode(&s)),
        Just("%FF".to_string()),
    ];
    prop::collection::vec((key, value), 0..4).prop_map(|kv| {
        kv.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    })
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        4 => Just(Method::GET),
        3 => Just(Method::POST),
        2 => Just(Method::PATCH),
        2 => Just(Method::PUT),
        1 => Just(Method::DELETE),
        1 => Just(Method::OPTIONS),
    ]
}

#[test]
fn random_paths_methods_and_queries_on_every_route() {
    let rt = runtime();
    let f = rt.block_on(fixture());
    let templates: Vec<&'static str> = outpost::api::route_paths();
    let template_count = templates.len();
    let strategy = (
        method(),
        prop_oneof![
            4 => (0..template_count).prop_map(Some),
            1 => Just(None),
        ],
        prop::collection::vec(segment(), 1..5),
        proptest::option::of(query()),
        proptest::option::of((0..KINDS.len()).prop_flat_map(|i| {
            (valid_body(KINDS[i]), mutation()).prop_map(|(v, m)| apply(&v, &m))
        })),
    );
    let mut runner = TestRunner::new(config());
    let sent = std::sync::atomic::AtomicUsize::new(0);
    let result = runner.run(&strategy, |(method, template, segs, query, body)| {
        sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        rt.block_on(async {
            // A route's template with its parameters filled from the segments, or random ones.
            let mut path = match template {
                Some(i) => {
                    let mut n = 0;
                    templates[i]
                        .split('/')
                        .map(|part| {
                            if part.starts_with('{') {
                                n += 1;
                                match part {
                                    "{collection}" => {
                                        ["addresses", "contacts", "affiliations", "attributes"]
                                            [n % 4]
                                            .to_string()
                                    }
                                    _ => segs[n % segs.len()].clone(),
                                }
                            } else {
                                part.to_string()
                            }
                        })
                        .collect::<Vec<_>>()
                        .join("/")
                }
                None => format!("/{}", segs.join("/")),
            };
            path = path
                .replace("{c}", &f.cref)
                .replace("{a}", &f.adr)
                .replace("{o}", &f.op);
            if path.is_empty() || !path.starts_with('/') {
                path.insert(0, '/');
            }
            if let Some(q) = query {
                path.push('?');
                path.push_str(&q);
            }
            check(&f, &method, &path, body).await.map(|_| ())
        })
    });
    eprintln!(
        "{} requests",
        sent.load(std::sync::atomic::Ordering::Relaxed)
    );
    rt.block_on(stop_node(f.node));
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Cases the properties found, kept as explicit regressions.
#[test]
fn regressions() {
    let rt = runtime();
    let f = rt.block_on(fixture());
    let result: Result<(), TestCaseError> = rt.block_on(async {
        // An empty key was refused naming the field "" (now `body`, rule unknown_field).
        for kind in KINDS {
            let (method, path) = f.endpoint(kind);
            let resp = check(&f, &method, &path, Some(br#"{"":null}"#.to_vec())).await?;
            if !resp.status.is_client_error() {
                fail(format!("{method} {path} {{\"\":null}}: {}", resp.status))?;
            }
        }
        // The same beside a valid payload on PUT /v1/sync/operations/{id}.
        let (method, path) = f.endpoint(Kind::OperationPut);
        let body = json!({"": null, "payload": {"first_name": "Aa", "last_name": "Aa"}});
        let resp = check(&f, &method, &path, Some(body.to_string().into_bytes())).await?;
        if let Some(why) = resp.error_mismatch(422, "body", "unknown_field") {
            fail(format!("{method} {path} {body}: {why}"))?;
        }
        let resp = check(&f, &Method::GET, "/v1/customers?=x", None).await?;
        if let Some(why) = resp.error_mismatch(400, "query", "unknown_field") {
            fail(format!("GET /v1/customers?=x: {why}"))?;
        }
        Ok(())
    });
    rt.block_on(stop_node(f.node));
    if let Err(e) = result {
        panic!("{e}");
    }
}
