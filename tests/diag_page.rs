//! Field diagnostics: the `/diag` report with its findings, "re-sync all failed", and the page
//! at `/` driven in a real headless chromium: a technician finds a failed operation, edits it,
//! saves, re-syncs it, and sees it and the one held behind it completed. A real node and the HQ
//! emulator over loopback sockets, real redb files; every wait is bounded.

mod browser;
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::Api;
use outpost::config::Config;
use outpost::hq::emulator::{HqEmulator, HqEmulatorConfig};
use outpost::node::Node;
use serde_json::{Value, json};

struct Harness {
    hq: HqEmulator,
    node: Node,
    api: Api,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// HQ with asynchronous mode on and a rule that refuses the last name "Poison"; a node
    /// that has downloaded HQ's configuration.
    async fn start() -> Harness {
        let hq = HqEmulator::start(HqEmulatorConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            sync_interval: Some(Duration::from_millis(50)),
            seed: 11,
        })
        .await
        .expect("HQ emulator");
        hq.enable_async();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::for_dir(dir.path());
        config.hq.url = hq.url();
        config.hq.request_timeout_ms = 2_000;
        config.upload.interval_ms = 50;
        config.upload.retry_initial_ms = 20;
        config.upload.retry_max_ms = 300;
        let node = common::start_node_with(config).await;
        let api = Api::new(node.local_addr());
        let h = Harness {
            hq,
            node,
            api,
            _dir: dir,
        };
        h.api.post_empty("/v1/cdx/refresh").await.expect(200);
        h.hq_faults(json!({"reject": {"field": "last_name", "equals": "Poison"}}))
            .await;
        h
    }

    async fn hq_faults(&self, faults: Value) {
        let resp = common::http_client()
            .put(format!("{}/hq/v1/admin/faults", self.hq.url()))
            .json(&faults)
            .send()
            .await
            .expect("set faults");
        assert!(resp.status().is_success(), "set faults: {}", resp.status());
    }

    /// A customer HQ will refuse, and an edit of it that will be held behind the refusal.
    /// Returns (customer ref, create id, edit id).
    async fn poison_customer(&self, first: &str) -> (String, String, String) {
        let created = self
            .api
            .create_customer(
                &json!({"first_name": first, "last_name": "Poison", "email": "mari@example.ee"}),
            )
            .await;
        let r = created["customer_ref"].as_str().expect("ref").to_string();
        let edit = self
            .api
            .patch(
                &format!("/v1/customers/{r}"),
                &json!({"first_name": format!("{first}a")}),
            )
            .await
            .expect(202)
            .clone();
        (
            r,
            created["operation_id"].as_str().expect("id").to_string(),
            edit["operation_id"].as_str().expect("id").to_string(),
        )
    }

    async fn state_of(&self, id: &str) -> String {
        self.api
            .get(&format!("/v1/sync/operations/{id}"))
            .await
            .expect(200)["state"]
            .as_str()
            .expect("state")
            .to_string()
    }

    /// Waits (bounded) until each (operation, state) pair holds.
    async fn wait_states(&self, want: &[(&str, &str)], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let mut now = Vec::new();
            for (id, _) in want {
                now.push(self.state_of(id).await);
            }
            if want.iter().zip(&now).all(|((_, w), n)| w == n) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "operations did not reach {want:?} within {within:?}: {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn diag(&self) -> Value {
        self.api.get("/diag").await.expect(200).clone()
    }

    async fn stop(self) {
        common::stop_node(self.node).await;
        self.hq.shutdown().await;
    }
}

fn messages(diag: &Value) -> Vec<String> {
    diag["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            format!(
                "{}: {} | {}",
                f["severity"].as_str().expect("severity"),
                f["message"].as_str().expect("message"),
                f["action"].as_str().expect("action")
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diag_reports_failed_and_held_work_with_findings_and_resync_failed_clears_it() {
    let h = Harness::start().await;
    let (r1, c1, e1) = h.poison_customer("Mari").await;
    let (_, c2, e2) = h.poison_customer("Kati").await;
    let address = h
        .api
        .post(&format!("/v1/customers/{r1}/addresses"), &common::address())
        .await
        .expect(202)["operation_id"]
        .as_str()
        .expect("id")
        .to_string();
    h.api
        .create_customer(&common::customer("Jaan", "Tamm"))
        .await;
    h.wait_states(
        &[
            (&c1, "failed"),
            (&c2, "failed"),
            (&e1, "held"),
            (&e2, "held"),
            (&address, "held"),
        ],
        Duration::from_secs(60),
    )
    .await;

    let d = h.diag().await;
    let q = &d["queue"];
    assert_eq!(
        (q["failed"].as_u64(), q["held"].as_u64()),
        (Some(2), Some(3)),
        "{d}"
    );
    assert_eq!(q["by_kind"]["customer"]["failed"], 2, "{d}");
    assert_eq!(q["by_kind"]["customer"]["held"], 2, "{d}");
    assert_eq!(q["by_kind"]["address"]["held"], 1, "{d}");
    assert_eq!(q["by_kind_complete"], true);
    assert_eq!(q["in_flight"], 0);
    assert_eq!(q["completed_not_pruned"], q["completed"]);
    assert!(d["uptime_secs"].is_u64(), "{d}");
    assert!(
        d["started_at"].as_str().is_some_and(|s| s.ends_with('Z')),
        "{d}"
    );
    assert_eq!(d["hq"]["reachable"], true, "{d}");
    assert!(
        d["store"]["file_bytes"].as_u64().is_some_and(|n| n > 0),
        "{d}"
    );
    assert!(
        d["store"]["disk_free_bytes"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{d}"
    );
    assert!(
        d["store"]["disk_total_bytes"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{d}"
    );
    assert_eq!(d["mode"]["create"]["mode"], "async", "{d}");
    let found = messages(&d);
    assert!(
        found[0].starts_with(
            "problem: 2 operations failed: see sync status | open the failed operations below, edit and re-sync"
        ),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|f| f.starts_with("warning: 3 operations are held behind a failed operation")),
        "{found:#?}"
    );
    assert!(
        !found.iter().any(|f| f.contains("job 1")),
        "every job was just downloaded: {found:#?}"
    );

    // The static segment wins over the operation-id capture: GET is refused, not parsed as an id.
    let resp = h.api.get("/v1/sync/operations/resync-failed").await;
    assert_eq!(resp.status.as_u16(), 405, "{:?}", resp.body);

    // HQ's rule is lifted; "re-sync all failed" sends every one through, with what was held.
    h.hq_faults(json!({})).await;
    let answer = h
        .api
        .post_empty("/v1/sync/operations/resync-failed")
        .await
        .expect(200)
        .clone();
    assert_eq!(answer["resynced"], 2, "{answer}");
    assert_eq!(answer["remaining_failed"], 0, "{answer}");
    assert_eq!(answer["skipped"], json!([]), "{answer}");
    h.wait_states(
        &[
            (&c1, "completed"),
            (&c2, "completed"),
            (&e1, "completed"),
            (&e2, "completed"),
            (&address, "completed"),
        ],
        Duration::from_secs(60),
    )
    .await;
    let d = h.diag().await;
    let found = messages(&d);
    assert!(
        !found
            .iter()
            .any(|f| f.contains("see sync status") || f.contains("held behind")),
        "{found:#?}"
    );
    // Nothing left to do: a second call queues nothing.
    let answer = h
        .api
        .post_empty("/v1/sync/operations/resync-failed")
        .await
        .expect(200)
        .clone();
    assert_eq!(answer["resynced"], 0, "{answer}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_one_self_contained_file_under_a_strict_policy() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = common::start_node(dir.path()).await;
    let api = Api::new(node.local_addr());
    let resp = api.get("/").await;
    assert_eq!(resp.status.as_u16(), 200);
    assert_eq!(
        resp.content_type.as_deref(),
        Some("text/html; charset=utf-8")
    );
    let html = resp.body.as_str().expect("html text");
    let raw = api.client.get(api.url("/")).send().await.expect("page");
    let csp = raw
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .expect("a content security policy")
        .to_string();
    for part in [
        "default-src 'none'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    // Offline-proof: nothing is loaded from anywhere, not even from the node itself.
    for external in ["http://", "https://", "src=", "@import", "url("] {
        assert!(!html.contains(external), "the page refers to {external:?}");
    }
    assert!(html.contains("credentials: 'same-origin'"));
    assert!(
        !html.contains("innerHTML") && !html.contains("insertAdjacentHTML"),
        "server values go in as text only"
    );
    common::stop_node(node).await;
}

/// Where the screenshot goes: `OUTPOST_SCREENSHOT` (e.g. `docs/diagnostics-page.png` to refresh
/// the README's), else the test's scratch directory.
fn screenshot_path(name: &str) -> PathBuf {
    match std::env::var_os("OUTPOST_SCREENSHOT") {
        Some(p) if name == "diagnostics-page.png" => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_technician_fixes_a_failed_operation_in_the_browser() {
    let Some(chromium) = browser::chromium_or_skip() else {
        return;
    };
    let h = Harness::start().await;
    let (customer, create, edit) = h.poison_customer("Mari").await;
    h.api
        .create_customer(&common::customer("Jaan", "Tamm"))
        .await;
    h.wait_states(
        &[(&create, "failed"), (&edit, "held")],
        Duration::from_secs(60),
    )
    .await;

    let mut b = browser::Browser::launch(&chromium, 1280, 900).await;
    b.goto(&format!("http://{}/?refresh=1", h.node.local_addr()))
        .await;
    let wait = Duration::from_secs(30);

    // The technician sees the problem at the top, and the failed and held operations.
    b.wait_for(
        "[...document.querySelectorAll('#findings li[data-severity=problem]')]\
         .some(li => li.textContent.includes('1 operation failed: see sync status'))",
        "the failed-operation finding",
        wait,
    )
    .await;
    let failed_row = format!("#ops-body tr[data-operation-id=\"{create}\"][data-state=failed]");
    let held_row = format!("#ops-body tr[data-operation-id=\"{edit}\"][data-state=held]");
    b.wait_for(
        &format!(
            "!!document.querySelector('{failed_row}') && !!document.querySelector('{held_row}')"
        ),
        "the failed and held rows",
        wait,
    )
    .await;
    let error = b
        .text(&format!("{failed_row} .op-error"))
        .await
        .expect("error cell");
    assert!(
        error.contains("last_name"),
        "HQ's error names the field: {error}"
    );

    // Edit: the payload opens in a form, the field HQ named marked.
    b.click(&format!("{failed_row} button[data-action=edit]"))
        .await;
    let last_name = "#editor:not([hidden]) #editor-fields input[name=last_name]";
    b.wait_for(
        &format!("document.querySelector('{last_name}')?.value === 'Poison'"),
        "the editor with the payload",
        wait,
    )
    .await;
    assert_eq!(
        b.eval("document.querySelector('#editor-fields [data-field=last_name]').classList.contains('bad')")
            .await,
        true,
        "the field HQ refused is marked"
    );
    b.screenshot(&screenshot_path("diagnostics-page.png")).await;

    // A value the node refuses: the page shows the 4xx naming the field, nothing is saved.
    b.type_over(last_name, "P0ison").await;
    b.click("#editor-save").await;
    b.wait_for(
        "(() => { const m = document.querySelector('#editor-msg.error'); \
         return m && m.textContent.includes('payload.last_name'); })()",
        "the refusal naming the field",
        wait,
    )
    .await;
    let op = h
        .api
        .get(&format!("/v1/sync/operations/{create}"))
        .await
        .expect(200)
        .clone();
    assert_eq!(
        op["payload"]["last_name"], "Poison",
        "nothing was saved: {op}"
    );

    // A good value: saved.
    b.type_over(last_name, "Poisson").await;
    b.click("#editor-save").await;
    b.wait_for(
        "document.querySelector('#editor-msg.done')?.textContent.includes('Saved (revision')",
        "the save confirmation",
        wait,
    )
    .await;
    let op = h
        .api
        .get(&format!("/v1/sync/operations/{create}"))
        .await
        .expect(200)
        .clone();
    assert_eq!(op["payload"]["last_name"], "Poisson", "{op}");
    assert_eq!(op["state"], "failed", "saved, not yet re-synced: {op}");

    // Re-sync from the row; the page follows it and the held edit until both complete.
    b.click(&format!("{failed_row} button[data-action=resync]"))
        .await;
    for id in [&create, &edit] {
        b.wait_for(
            &format!(
                "!!document.querySelector('#watched-body tr[data-operation-id=\"{id}\"][data-state=completed]')"
            ),
            &format!("operation {id} shown completed"),
            Duration::from_secs(60),
        )
        .await;
    }
    b.wait_for(
        "!document.querySelector('#ops-body tr[data-state=failed], #ops-body tr[data-state=held]') \
         && document.querySelector('#queue [data-queue=failed]')?.textContent === '0' \
         && ![...document.querySelectorAll('#findings li')].some(li => li.textContent.includes('failed: see sync status'))",
        "the page to show nothing failed",
        wait,
    )
    .await;
    b.screenshot(&screenshot_path("diagnostics-page-fixed.png"))
        .await;

    // Another refused customer; this time the cause is fixed at HQ, and "Re-sync all failed"
    // sends it through with the edit held behind it.
    let (_, create2, edit2) = h.poison_customer("Kati").await;
    let failed_row2 = format!("#ops-body tr[data-operation-id=\"{create2}\"][data-state=failed]");
    b.wait_for(
        &format!("!!document.querySelector('{failed_row2}')"),
        "the second failed operation on the page",
        Duration::from_secs(60),
    )
    .await;
    h.wait_states(&[(&edit2, "held")], Duration::from_secs(30))
        .await;
    h.hq_faults(json!({})).await;
    b.click("#resync-all").await;
    b.wait_for(
        "document.querySelector('#message.done')?.textContent.includes('1 queued again')",
        "the re-sync-all answer",
        wait,
    )
    .await;
    for id in [&create2, &edit2] {
        b.wait_for(
            &format!(
                "!!document.querySelector('#watched-body tr[data-operation-id=\"{id}\"][data-state=completed]')"
            ),
            &format!("operation {id} shown completed"),
            Duration::from_secs(60),
        )
        .await;
    }
    drop(b);

    // Cross-check through the API and at HQ.
    for id in [&create, &edit, &create2, &edit2] {
        assert_eq!(h.state_of(id).await, "completed");
    }
    let mine = h.api.customer(&customer).await;
    let account = mine["account_number"].as_str().expect("account number");
    let at_hq: Vec<Value> = common::http_client()
        .get(format!("{}/hq/v1/admin/customers", h.hq.url()))
        .send()
        .await
        .expect("HQ customers")
        .json()
        .await
        .expect("HQ customers JSON");
    let fixed = at_hq
        .iter()
        .find(|c| c["account_number"] == account)
        .unwrap_or_else(|| panic!("{account} not at HQ: {at_hq:?}"));
    assert_eq!(fixed["last_name"], "Poisson", "{fixed}");
    assert_eq!(
        fixed["first_name"], "Maria",
        "the held edit applied after: {fixed}"
    );
    h.stop().await;
}
