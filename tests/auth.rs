//! Authentication on the store LAN (R8): every route × every method × {no token, wrong token,
//! pos, technician}; Basic for the browser; the start-up rule; `outpost hash-token`.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use outpost::node::{Node, NodeError};
use reqwest::Method;
use serde_json::{Value, json};

/// Who may call what, written out independently of `auth::access`: tills get the customer
/// endpoints (any method) and may read the sync status; only `GET /healthz` is open.
fn pos_may(method: &Method, path: &str) -> bool {
    let read = method == Method::GET || method == Method::HEAD;
    path == "/v1/customers"
        || path.starts_with("/v1/customers/")
        || (read && (path == "/v1/sync/operations" || path.starts_with("/v1/sync/operations/")))
}

fn open(method: &Method, path: &str) -> bool {
    method == Method::GET && path == "/healthz"
}

const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

/// Placeholders filled with records that exist, and a plausible body per route.
struct Fixture {
    customer_ref: String,
    record_id: String,
    operation_id: String,
}

impl Fixture {
    async fn make(tech: &Api) -> Fixture {
        let created = tech
            .post("/v1/customers", &customer("Route", "Table"))
            .await
            .expect(202)
            .clone();
        let customer_ref = created["customer_ref"].as_str().unwrap().to_string();
        let operation_id = created["operation_id"].as_str().unwrap().to_string();
        let sub = tech
            .post(
                &format!("/v1/customers/{customer_ref}/addresses"),
                &address(),
            )
            .await
            .expect(202)
            .clone();
        Fixture {
            customer_ref,
            record_id: sub["record_id"].as_str().unwrap().to_string(),
            operation_id,
        }
    }

    fn fill(&self, template: &str) -> String {
        template
            .replace("{customer_ref}", &self.customer_ref)
            .replace("{collection}", "addresses")
            .replace("{record_id}", &self.record_id)
            .replace("{operation_id}", &self.operation_id)
    }

    fn body(method: &Method, template: &str) -> Option<Value> {
        if !matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
            return None;
        }
        Some(match template {
            "/v1/customers" => customer("Body", "Sender"),
            "/v1/customers/{customer_ref}" => json!({"last_name": "Edited"}),
            "/v1/customers/{customer_ref}/{collection}" => address(),
            "/v1/customers/{customer_ref}/{collection}/{record_id}" => json!({"city": "Tartu"}),
            "/v1/sync/operations/{operation_id}" => json!({"payload": customer("Fixed", "Up")}),
            _ => json!({}),
        })
    }
}

async fn call(api: &Api, method: &Method, path: &str, body: Option<&Value>) -> Resp {
    api.raw(
        method.clone(),
        path,
        body.map(|b| b.to_string().into_bytes()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_and_method_refuses_missing_and_wrong_tokens_and_pos_beyond_its_role() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node_with(auth_config(dir.path())).await;
    let anon = Api::new(node.local_addr());
    let wrong = anon.with_token(WRONG_TOKEN);
    let pos = anon.with_token(POS_TOKEN);
    let tech = anon.with_token(TECH_TOKEN);
    let fixture = Fixture::make(&tech).await;

    let mut routes: Vec<&str> = outpost::api::route_paths();
    // Not a route: closed by default, found by nobody without a technician token.
    routes.push("/no/such/route");
    assert!(routes.len() >= 14, "the router lost routes: {routes:?}");
    let mut failures = Vec::new();
    let mut checked = 0usize;
    for template in &routes {
        let path = fixture.fill(template);
        for method in &METHODS {
            let body = Fixture::body(method, template);
            let served_open = open(method, template);
            for (who, api) in [
                ("none", &anon),
                ("wrong", &wrong),
                ("pos", &pos),
                ("technician", &tech),
            ] {
                checked += 1;
                let resp = call(api, method, &path, body.as_ref()).await;
                let status = resp.status.as_u16();
                let want: &str = match who {
                    _ if served_open => "allowed",
                    "none" | "wrong" => "401",
                    "pos" if !pos_may(method, template) => "403",
                    _ => "allowed",
                };
                let why = match want {
                    "401" => resp
                        .error_mismatch(
                            401,
                            "authorization",
                            if who == "none" {
                                "required"
                            } else {
                                "known_token"
                            },
                        )
                        .or_else(|| {
                            let challenge = resp
                                .headers
                                .get("www-authenticate")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default();
                            // A browser opening the page gets a Basic challenge (it then
                            // prompts); every other refusal asks for a bearer token.
                            let scheme = if method == Method::GET && *template == "/" {
                                "Basic "
                            } else {
                                "Bearer "
                            };
                            (!challenge.starts_with(scheme))
                                .then(|| format!("401 without a {scheme}challenge: {challenge:?}"))
                        }),
                    "403" => resp.error_mismatch(403, "authorization", "role"),
                    _ => (status == 401 || status == 403 || status >= 500 && status != 503)
                        .then(|| format!("refused or failed ({status}): {}", resp.body)),
                };
                if let Some(why) = why {
                    failures.push(format!("{method} {template} as {who}: want {want}: {why}"));
                }
            }
        }
    }
    assert_eq!(checked, routes.len() * METHODS.len() * 4);
    assert!(
        failures.is_empty(),
        "{} of {checked} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    stop_node(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_doc_and_the_table_agree_on_every_operations_role() {
    // x-outpost-role in /openapi.json says what the auth middleware enforces (checked above).
    let doc = outpost::api::openapi::document();
    let mut seen = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let method: Method = method.to_uppercase().parse().unwrap();
            let want = if open(&method, path) {
                "open"
            } else if pos_may(&method, path) {
                "pos"
            } else {
                "technician"
            };
            assert_eq!(
                operation["x-outpost-role"], want,
                "{method} {path}: documented role"
            );
            seen += 1;
        }
    }
    assert!(seen >= 15, "only {seen} operations documented");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_gets_a_basic_challenge_and_may_answer_it_with_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node_with(auth_config(dir.path())).await;
    let anon = Api::new(node.local_addr());
    let basic = |user: &str, token: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"))
        )
    };

    let page = anon.get("/").await;
    page.expect_error(401, "authorization", "required");
    let challenge = page.headers["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("Basic realm=\"Outpost\""),
        "{challenge}"
    );
    // Other refusals ask for a bearer token.
    let diag = anon.get("/diag").await;
    assert!(
        diag.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer"),
        "{:?}",
        diag.headers
    );

    let tech = anon.with_authorization(&basic("anyone", TECH_TOKEN));
    tech.get("/diag").await.expect(200);
    let pos = anon.with_authorization(&basic("till", POS_TOKEN));
    pos.get("/diag")
        .await
        .expect_error(403, "authorization", "role");
    pos.post("/v1/customers", &customer("Basic", "Till"))
        .await
        .expect(202);
    anon.with_authorization(&basic("tech", WRONG_TOKEN))
        .get("/diag")
        .await
        .expect_error(401, "authorization", "known_token");
    for garbled in ["Basic ***", "Token abc", "Bearer", "Basic dGVjaA=="] {
        anon.with_authorization(garbled)
            .get("/diag")
            .await
            .expect_error(401, "authorization", "bearer_token");
    }
    // Liveness stays open, token or not.
    anon.get("/healthz").await.expect(200);
    anon.with_token(WRONG_TOKEN)
        .get("/healthz")
        .await
        .expect(200);
    stop_node(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_loopback_without_tokens_the_api_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path()).await;
    let anon = Api::new(node.local_addr());
    anon.get("/diag").await.expect(200);
    anon.post("/v1/customers", &customer("Open", "Mode"))
        .await
        .expect(202);
    stop_node(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_a_lan_address_without_tokens_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.node.listen = "0.0.0.0:0".parse().unwrap();
    let result = tokio::time::timeout(WAIT, Node::start(&config))
        .await
        .expect("start did not end in time");
    match result {
        Err(e @ NodeError::Unprotected { .. }) => {
            assert!(e.to_string().contains("auth.tokens"), "{e}");
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(node) => {
            stop_node(node).await;
            panic!("a node on 0.0.0.0 without tokens started");
        }
    }
    // Nothing was created: the refusal comes before the store is opened.
    assert!(!config.store_path().exists());
}

#[test]
fn the_binary_refuses_a_lan_address_without_tokens_and_warns_when_open_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let lan = BinaryConfig {
        listen: "0.0.0.0:0".into(),
        ..BinaryConfig::default()
    };
    let err = match Binary::try_spawn_with(dir.path(), &lan) {
        Ok(_) => panic!("the binary served on 0.0.0.0 without tokens"),
        Err(e) => e,
    };
    assert!(err.contains("auth.tokens"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let mut bin = Binary::spawn(dir.path());
    let deadline = Instant::now() + WAIT;
    while !bin.stderr().contains("no auth.tokens configured") {
        assert!(
            Instant::now() < deadline,
            "no warning about running open; stderr:\n{}",
            bin.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Still serving, open (dropping `bin` kills it).
    assert!(bin.running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_token_prints_an_entry_the_node_accepts() {
    let token = "a-brand-new-till-token-1f3b9c";
    let mut child = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(["hash-token", "--name", "till-9", "--role", "pos"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{token}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let first = stdout.lines().next().unwrap();
    assert_eq!(first, outpost::api::auth::hash_token(token));
    assert!(!stdout.contains(token), "the raw token was echoed");
    let snippet = &stdout[stdout.find("[[auth.tokens]]").expect("snippet")..];

    // The snippet pasted into a configuration file works as it is.
    let dir = tempfile::tempdir().unwrap();
    let bin = Binary::try_spawn_with(
        dir.path(),
        &BinaryConfig {
            extra: snippet.to_string(),
            ..BinaryConfig::default()
        },
    )
    .unwrap();
    let api = bin.api();
    api.get("/v1/sync/operations")
        .await
        .expect_error(401, "authorization", "required");
    api.with_token(token)
        .get("/v1/sync/operations")
        .await
        .expect(200);
    api.with_token(token)
        .get("/diag")
        .await
        .expect_error(403, "authorization", "role");

    // A short token is refused.
    let mut child = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .arg("hash-token")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"short\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
}
