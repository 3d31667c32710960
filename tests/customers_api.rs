//! The till's customer API over the real HTTP server on loopback, with a real redb file.

mod common;

use std::collections::HashSet;

use common::{Api, address, customer, start_node, stop_node};
use serde_json::{Value, json};

fn ops_of(ops: &[Value], customer_ref: &str) -> Vec<Value> {
    ops.iter()
        .filter(|o| o["customer_ref"] == customer_ref)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_edit_twice_address_contact_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path()).await;
    let api = Api::new(node.local_addr());
    assert_eq!(api.get("/healthz").await.expect(200)["status"], "ok");

    let created = api
        .create_customer(&json!({
            "first_name": "Õie",
            "last_name": "Täht",
            "email": "oie.taht@example.ee",
            "phone": "+372 5123 4567",
            "customer_group": "RETAIL",
            "language": "et-EE"
        }))
        .await;
    let cref = created["customer_ref"].as_str().unwrap().to_string();
    assert!(cref.starts_with("S0001-T"), "temporary reference: {cref}");
    assert_eq!(created["state"], "pending");
    assert!(
        created.get("record_id").is_none(),
        "a customer create has no record_id: {created}"
    );
    let create_op = created["operation_id"].as_str().unwrap().to_string();

    // Read-your-writes right after the 202.
    let c = api.customer(&cref).await;
    assert_eq!(c["first_name"], "Õie");
    assert_eq!(c["last_name"], "Täht");
    assert_eq!(c["account_number"], Value::Null);
    assert_eq!(c["sync_state"], "pending");

    // Edit 1: last name and phone. Edit 2: last name again, clear e-mail. Order shows in the
    // last name: "Mets" only if edit 2 was applied after edit 1.
    let e1 = api
        .patch(
            &format!("/v1/customers/{cref}"),
            &json!({"last_name": "Kask", "phone": "5555 1234"}),
        )
        .await
        .expect(202)
        .clone();
    assert_eq!(e1["customer_ref"], cref.as_str());
    assert_eq!(api.customer(&cref).await["last_name"], "Kask");
    let e2 = api
        .patch(
            &format!("/v1/customers/{cref}"),
            &json!({"last_name": "Mets", "email": null}),
        )
        .await
        .expect(202)
        .clone();
    assert_eq!(e2["state"], "pending");

    let a = api
        .post(&format!("/v1/customers/{cref}/addresses"), &address())
        .await
        .expect(202)
        .clone();
    let adr_id = a["record_id"]
        .as_str()
        .expect("address record_id")
        .to_string();
    assert!(adr_id.starts_with("ADR-"), "{adr_id}");
    let contact = json!({"kind": "email", "value": "mets@example.ee", "description": "work", "is_primary": true});
    let k = api
        .post(&format!("/v1/customers/{cref}/contacts"), &contact)
        .await
        .expect(202)
        .clone();
    let con_id = k["record_id"]
        .as_str()
        .expect("contact record_id")
        .to_string();
    assert!(con_id.starts_with("CON-"), "{con_id}");
    assert_ne!(adr_id, con_id);

    // Every operation id is distinct.
    let ids: Vec<String> = [&created, &e1, &e2, &a, &k]
        .iter()
        .map(|b| b["operation_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 5, "{ids:?}");

    let c = api.customer(&cref).await;
    assert_eq!(c["customer_ref"], cref.as_str());
    assert_eq!(c["first_name"], "Õie");
    assert_eq!(c["last_name"], "Mets", "edits applied in order");
    assert_eq!(c["phone"], "5555 1234");
    assert!(
        c.get("email").is_none_or(Value::is_null),
        "e-mail cleared: {c}"
    );
    assert_eq!(c["customer_group"], "RETAIL");
    assert_eq!(c["language"], "et-EE");
    assert_eq!(c["sync_state"], "pending");
    assert_eq!(c["account_number"], Value::Null);
    let addresses = c["addresses"].as_array().unwrap();
    assert_eq!(addresses.len(), 1);
    assert_eq!(addresses[0]["id"], adr_id.as_str());
    assert_eq!(addresses[0]["street"], "Narva mnt 5");
    assert_eq!(addresses[0]["country"], "EST");
    assert_eq!(addresses[0]["is_primary"], true);
    let contacts = c["contacts"].as_array().unwrap();
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0]["id"], con_id.as_str());
    assert_eq!(contacts[0]["kind"], "email");
    assert_eq!(contacts[0]["value"], "mets@example.ee");
    assert_eq!(c["affiliations"], json!([]));
    assert_eq!(c["attributes"], json!([]));

    // The queue holds the five operations, in acceptance order, with their payloads.
    let all = api.all_operations("", 100).await;
    let ops = ops_of(&all, &cref);
    let got: Vec<(String, String, String)> = ops
        .iter()
        .map(|o| {
            (
                o["operation_id"].as_str().unwrap().to_string(),
                o["kind"].as_str().unwrap().to_string(),
                o["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String, String)> = ids
        .iter()
        .zip([
            ("customer", "create"),
            ("customer", "edit"),
            ("customer", "edit"),
            ("address", "create"),
            ("contact", "create"),
        ])
        .map(|(id, (k, a))| (id.clone(), k.to_string(), a.to_string()))
        .collect();
    assert_eq!(got, want);
    let seqs: Vec<u64> = ops.iter().map(|o| o["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seq increases: {seqs:?}"
    );
    assert!(
        ops.iter()
            .all(|o| o["state"] == "pending" && o["error"].is_null())
    );
    assert_eq!(ops[0]["hq_table"], "RETAILASYNCCUSTOMERV2");
    assert_eq!(ops[3]["hq_table"], "RETAILASYNCADDRESSV2");
    assert_eq!(ops[3]["record_id"], adr_id.as_str());
    assert_eq!(ops[4]["hq_table"], "RETAILASYNCCUSTOMERCONTACT");

    let shown = api
        .get(&format!("/v1/sync/operations/{}", ids[2]))
        .await
        .expect(200)
        .clone();
    assert_eq!(
        shown["payload"],
        json!({"last_name": "Mets", "email": null})
    );
    assert_eq!(shown["revision"], 0);
    let shown = api
        .get(&format!("/v1/sync/operations/{create_op}"))
        .await
        .expect(200)
        .clone();
    assert_eq!(
        shown["payload"]["last_name"], "Täht",
        "the create keeps what the till sent"
    );
    let listing_has_no_payload = ops.iter().all(|o| o.get("payload").is_none());
    assert!(listing_has_no_payload, "listing omits payloads");

    stop_node(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_records_are_created_and_edited() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path()).await;
    let api = Api::new(node.local_addr());
    let cref = api.create_customer(&customer("Mari", "Maasikas")).await["customer_ref"]
        .as_str()
        .unwrap()
        .to_string();
    let base = format!("/v1/customers/{cref}");
    let rid = |v: &Value| v["record_id"].as_str().unwrap().to_string();

    let adr = rid(api
        .post(&format!("{base}/addresses"), &address())
        .await
        .expect(202));
    let adr2 = rid(api
        .post(
            &format!("{base}/addresses"),
            &json!({"street": "Turu 2", "city": "Tartu", "postal_code": "51014", "country": "EST", "purpose": "delivery"}),
        )
        .await
        .expect(202));
    let con = rid(api
        .post(
            &format!("{base}/contacts"),
            &json!({"kind": "phone", "value": "+372 5555 0000"}),
        )
        .await
        .expect(202));
    let aff = rid(api
        .post(
            &format!("{base}/affiliations"),
            &json!({"affiliation": "LOYALTY", "description": "gold"}),
        )
        .await
        .expect(202));
    let att = rid(api
        .post(
            &format!("{base}/attributes"),
            &json!({"name": "shoe_size", "value": "38"}),
        )
        .await
        .expect(202));
    assert!(
        aff.starts_with("AFF-") && att.starts_with("ATT-"),
        "{aff} {att}"
    );

    // Edits of each kind.
    let e = api
        .patch(
            &format!("{base}/addresses/{adr}"),
            &json!({"city": "Keila", "county": "Harju"}),
        )
        .await
        .expect(202)
        .clone();
    assert_eq!(e["record_id"], adr.as_str());
    api.patch(
        &format!("{base}/contacts/{con}"),
        &json!({"kind": "email", "value": "mari@example.ee"}),
    )
    .await
    .expect(202);
    api.patch(
        &format!("{base}/affiliations/{aff}"),
        &json!({"description": null}),
    )
    .await
    .expect(202);
    api.patch(&format!("{base}/attributes/{att}"), &json!({"value": "39"}))
        .await
        .expect(202);

    // A new value that breaks the contact's kind is refused by the writer, naming the field.
    let before = common::op_total(&node);
    api.patch(
        &format!("{base}/contacts/{con}"),
        &json!({"value": "+372 5555 0000"}),
    )
    .await
    .expect_error(422, "value", "email_format");
    // An id of another kind, or none at all, is not found.
    api.patch(
        &format!("{base}/addresses/{con}"),
        &json!({"city": "Keila"}),
    )
    .await
    .expect_error(404, "record_id", "exists");
    api.patch(
        &format!("{base}/attributes/ATT-999999"),
        &json!({"value": "1"}),
    )
    .await
    .expect_error(404, "record_id", "exists");
    assert_eq!(common::op_total(&node), before, "refusals wrote nothing");

    let c = api.customer(&cref).await;
    let addresses = c["addresses"].as_array().unwrap();
    assert_eq!(addresses.len(), 2);
    assert_eq!(addresses[0]["id"], adr.as_str());
    assert_eq!(addresses[0]["city"], "Keila");
    assert_eq!(addresses[0]["county"], "Harju");
    assert_eq!(
        addresses[0]["street"], "Narva mnt 5",
        "untouched fields stay"
    );
    assert_eq!(addresses[1]["id"], adr2.as_str());
    assert_eq!(addresses[1]["purpose"], "delivery");
    assert_eq!(addresses[1]["is_primary"], false);
    assert_eq!(
        c["contacts"],
        json!([{"id": con, "kind": "email", "value": "mari@example.ee", "is_primary": false}])
    );
    assert_eq!(
        c["affiliations"],
        json!([{"id": aff, "affiliation": "LOYALTY"}])
    );
    assert_eq!(
        c["attributes"],
        json!([{"id": att, "name": "shoe_size", "value": "39"}])
    );

    // The edit operations carry the sub-record ids.
    let ops = ops_of(&api.all_operations("", 100).await, &cref);
    assert_eq!(ops.len(), 10);
    let edits: Vec<(&str, &str)> = ops[6..]
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap(),
                o["record_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        edits,
        vec![
            ("address", adr.as_str()),
            ("contact", con.as_str()),
            ("affiliation", aff.as_str()),
            ("attribute", att.as_str())
        ]
    );
    assert!(ops[6..].iter().all(|o| o["action"] == "edit"));
    stop_node(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_folds_case_and_accents_and_finds_pending_customers() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path()).await;
    let api = Api::new(node.local_addr());
    let oie = api
        .create_customer(&json!({
            "first_name": "Õie", "last_name": "Täht",
            "email": "Oie.Taht@Example.ee", "phone": "+372 5123 4567"
        }))
        .await["customer_ref"]
        .as_str()
        .unwrap()
        .to_string();
    let sarunas = api
        .create_customer(
            &json!({"first_name": "Šarūnas", "last_name": "Tamm", "phone": "+370 612 34567"}),
        )
        .await["customer_ref"]
        .as_str()
        .unwrap()
        .to_string();
    let other = api.create_customer(&customer("Olev", "Oja")).await["customer_ref"]
        .as_str()
        .unwrap()
        .to_string();
    api.post(
        &format!("/v1/customers/{sarunas}/contacts"),
        &json!({"kind": "phone", "value": "+370 699 00011"}),
    )
    .await
    .expect(202);

    let one = |r: &str| vec![r.to_string()];
    assert_eq!(api.search_refs("oie").await, one(&oie));
    assert_eq!(api.search_refs("Õie").await, one(&oie));
    assert_eq!(api.search_refs("TÄHT").await, one(&oie));
    assert_eq!(api.search_refs("taht").await, one(&oie));
    assert_eq!(api.search_refs("TAMM").await, one(&sarunas));
    assert_eq!(api.search_refs("sarunas").await, one(&sarunas));
    assert_eq!(api.search_refs("Šarū").await, one(&sarunas));
    // Decomposed (NFD) input, as some keyboards send it, folds the same way.
    assert_eq!(api.search_refs("O\u{303}ie").await, one(&oie));
    assert_eq!(
        api.search_refs("S\u{30c}aru\u{304}nas").await,
        one(&sarunas)
    );
    assert_eq!(api.search_refs("šarūnas tamm").await, one(&sarunas));
    assert_eq!(
        api.search_refs("oie tamm").await,
        Vec::<String>::new(),
        "every term must match"
    );
    assert_eq!(api.search_refs("oie.taht@example.ee").await, one(&oie));
    assert_eq!(api.search_refs("OIE.TAHT@EXAMPLE.EE").await, one(&oie));
    assert_eq!(api.search_refs("372 5123 4567").await, one(&oie));
    assert_eq!(api.search_refs("+372 51234567").await, one(&oie));
    assert_eq!(
        api.search_refs("(372) 5123-45").await,
        one(&oie),
        "phone prefix"
    );
    assert_eq!(api.search_refs("370 612 34567").await, one(&sarunas));
    assert_eq!(
        api.search_refs("+370 699 00011").await,
        one(&sarunas),
        "contact phone"
    );
    assert_eq!(api.search_refs(&oie).await, one(&oie));
    assert_eq!(api.search_refs(&oie.to_lowercase()).await, one(&oie));
    assert_eq!(api.search_refs(&other).await, one(&other));
    assert_eq!(
        api.search_refs("o").await.len(),
        2,
        "Õie and Olev/Oja by prefix"
    );
    assert!(api.search_refs("zzz").await.is_empty());

    // Search results carry the whole customer, with its pending sync state.
    let url = reqwest::Url::parse_with_params(&api.url("/v1/customers"), &[("q", "tamm")]).unwrap();
    let body: Value = api
        .client
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let found = &body["customers"][0];
    assert_eq!(found["first_name"], "Šarūnas");
    assert_eq!(found["sync_state"], "pending");
    assert_eq!(found["contacts"][0]["value"], "+370 699 00011");

    // The index follows edits: the old name no longer finds her, the new one does.
    api.patch(
        &format!("/v1/customers/{oie}"),
        &json!({"last_name": "Kask", "email": null}),
    )
    .await
    .expect(202);
    assert!(api.search_refs("taht").await.is_empty());
    assert!(api.search_refs("oie.taht@example.ee").await.is_empty());
    assert_eq!(api.search_refs("kask").await, one(&oie));
    assert_eq!(api.search_refs("oie kask").await, one(&oie));

    // `limit` bounds the answer.
    let url =
        reqwest::Url::parse_with_params(&api.url("/v1/customers"), &[("q", "o"), ("limit", "1")])
            .unwrap();
    let body: Value = api
        .client
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["customers"].as_array().unwrap().len(), 1);
    stop_node(node).await;
}

/// The search index keeps a matching customer findable however many others share the most
/// selective-looking term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_a_match_behind_many_customers_sharing_a_term() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path()).await;
    let api = Api::new(node.local_addr());
    for i in 0..40 {
        let first = ["Mari", "Jaan", "Kalle", "Liis"][i % 4];
        api.create_customer(&customer(first, "Tamm")).await;
    }
    let oie = api.create_customer(&customer("Õie", "Tamm")).await["customer_ref"]
        .as_str()
        .unwrap()
        .to_string();
    // "tamm" is the longest term, so it leads the scan; with limit=1 the scan stops after 20
    // of the 41 "tamm" entries, ordered by reference, and S0001-T41 sorts after them.
    let url = reqwest::Url::parse_with_params(
        &api.url("/v1/customers"),
        &[("q", "tamm oie"), ("limit", "1")],
    )
    .unwrap();
    let body: Value = api
        .client
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refs: Vec<&str> = body["customers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["customer_ref"].as_str().unwrap())
        .collect();
    assert_eq!(
        refs,
        vec![oie.as_str()],
        "the only customer called Õie Tamm"
    );
    stop_node(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_customer_is_a_json_404_naming_customer_ref() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path()).await;
    let api = Api::new(node.local_addr());
    api.get("/v1/customers/S0001-T999")
        .await
        .expect_error(404, "customer_ref", "exists");
    api.create_customer(&customer("Mari", "Maasikas")).await;
    api.get("/v1/customers/S0001-T999")
        .await
        .expect_error(404, "customer_ref", "exists");
    api.get("/v1/customers/s0001-t1")
        .await
        .expect_error(404, "customer_ref", "exists");
    stop_node(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_survives_a_restart_of_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path()).await;
    let api = Api::new(node.local_addr());
    let cref = api
        .create_customer(
            &json!({"first_name": "Õie", "last_name": "Täht", "email": "oie@example.ee"}),
        )
        .await["customer_ref"]
        .as_str()
        .unwrap()
        .to_string();
    api.patch(
        &format!("/v1/customers/{cref}"),
        &json!({"last_name": "Kask"}),
    )
    .await
    .expect(202);
    api.patch(
        &format!("/v1/customers/{cref}"),
        &json!({"last_name": "Mets"}),
    )
    .await
    .expect(202);
    api.post(&format!("/v1/customers/{cref}/addresses"), &address())
        .await
        .expect(202);
    api.post(
        &format!("/v1/customers/{cref}/contacts"),
        &json!({"kind": "phone", "value": "5123 4567"}),
    )
    .await
    .expect(202);
    let second = api.create_customer(&customer("Jaan", "Tamm")).await["customer_ref"]
        .as_str()
        .unwrap()
        .to_string();
    let before = api.customer(&cref).await;
    let ops_before = api.all_operations("", 100).await;
    assert_eq!(ops_before.len(), 6);
    stop_node(node).await;

    let node = start_node(dir.path()).await;
    let api = Api::new(node.local_addr());
    assert_eq!(
        api.customer(&cref).await,
        before,
        "same customer after restart"
    );
    assert_eq!(api.customer(&second).await["last_name"], "Tamm");
    assert_eq!(
        api.all_operations("", 100).await,
        ops_before,
        "same queue after restart"
    );
    assert_eq!(
        api.search_refs("mets").await,
        vec![cref.clone()],
        "index survives"
    );
    assert_eq!(api.search_refs("5123 4567").await, vec![cref.clone()]);

    // New writes continue the sequence: no reference or sequence number is reused.
    let third = api.create_customer(&customer("Liis", "Lepp")).await;
    let third_ref = third["customer_ref"].as_str().unwrap();
    assert!(
        third_ref != cref && third_ref != second,
        "fresh reference {third_ref}"
    );
    let ops = api.all_operations("", 100).await;
    assert_eq!(ops.len(), 7);
    let max_before = ops_before
        .iter()
        .map(|o| o["seq"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(ops[6]["seq"].as_u64().unwrap() > max_before);
    assert_eq!(ops[6]["operation_id"], third["operation_id"]);
    stop_node(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_list_by_state_and_page_with_after() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path()).await;
    let api = Api::new(node.local_addr());
    let mut ids = Vec::new();
    for (first, last) in [
        ("Mari", "Maasikas"),
        ("Jaan", "Tamm"),
        ("Liis", "Lepp"),
        ("Kalle", "Kask"),
        ("Olev", "Oja"),
    ] {
        ids.push(
            api.create_customer(&customer(first, last)).await["operation_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let cref = api.customer("S0001-T1").await["customer_ref"]
        .as_str()
        .unwrap()
        .to_string();
    ids.push(
        api.patch(
            &format!("/v1/customers/{cref}"),
            &json!({"first_name": "Maria"}),
        )
        .await
        .expect(202)["operation_id"]
            .as_str()
            .unwrap()
            .to_string(),
    );

    let listed = |ops: &[Value]| -> Vec<String> {
        ops.iter()
            .map(|o| o["operation_id"].as_str().unwrap().to_string())
            .collect()
    };
    // One page of everything.
    let page = api.get("/v1/sync/operations").await.expect(200).clone();
    assert_eq!(listed(page["operations"].as_array().unwrap()), ids);
    assert_eq!(page["next_after"], Value::Null);

    // Pages of 4, then 2: every operation once, in order.
    let first = api
        .get("/v1/sync/operations?limit=4")
        .await
        .expect(200)
        .clone();
    let first_ops = first["operations"].as_array().unwrap();
    assert_eq!(listed(first_ops), ids[..4].to_vec());
    let cursor = first["next_after"]
        .as_u64()
        .expect("next_after after a full page");
    assert_eq!(cursor, first_ops[3]["seq"].as_u64().unwrap());
    let second = api
        .get(&format!("/v1/sync/operations?limit=4&after={cursor}"))
        .await
        .expect(200)
        .clone();
    assert_eq!(
        listed(second["operations"].as_array().unwrap()),
        ids[4..].to_vec()
    );
    assert_eq!(
        second["next_after"],
        Value::Null,
        "short page ends the listing"
    );
    for limit in [1, 2, 3, 5, 6, 7] {
        assert_eq!(
            listed(&api.all_operations("", limit).await),
            ids,
            "limit {limit}"
        );
    }

    // By state.
    assert_eq!(listed(&api.all_operations("state=pending", 2).await), ids);
    for state in ["uploaded", "completed", "failed", "held"] {
        let page = api
            .get(&format!("/v1/sync/operations?state={state}"))
            .await
            .expect(200)
            .clone();
        assert_eq!(page["operations"], json!([]), "{state}");
        assert_eq!(page["next_after"], Value::Null);
    }
    let after3 = api
        .get("/v1/sync/operations?state=pending&after=3")
        .await
        .expect(200)
        .clone();
    assert_eq!(
        listed(after3["operations"].as_array().unwrap()),
        ids[3..].to_vec()
    );
    let beyond = api
        .get("/v1/sync/operations?after=1000")
        .await
        .expect(200)
        .clone();
    assert_eq!(beyond["operations"], json!([]));

    // One operation, with its payload.
    let one = api
        .get(&format!("/v1/sync/operations/{}", ids[5]))
        .await
        .expect(200)
        .clone();
    assert_eq!(one["operation_id"], ids[5].as_str());
    assert_eq!(one["customer_ref"], cref.as_str());
    assert_eq!(one["kind"], "customer");
    assert_eq!(one["action"], "edit");
    assert_eq!(one["state"], "pending");
    assert_eq!(one["payload"], json!({"first_name": "Maria"}));
    stop_node(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_or_resync_of_a_pending_operation_is_a_409_naming_state() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path()).await;
    let api = Api::new(node.local_addr());
    let created = api.create_customer(&customer("Mari", "Maasikas")).await;
    let id = created["operation_id"].as_str().unwrap();
    let before = api
        .get(&format!("/v1/sync/operations/{id}"))
        .await
        .expect(200)
        .clone();

    api.put(
        &format!("/v1/sync/operations/{id}"),
        &json!({"payload": {"first_name": "Maria", "last_name": "Maasikas"}}),
    )
    .await
    .expect_error(409, "state", "state_allows");
    api.post_empty(&format!("/v1/sync/operations/{id}/sync"))
        .await
        .expect_error(409, "state", "state_allows");

    let after = api
        .get(&format!("/v1/sync/operations/{id}"))
        .await
        .expect(200)
        .clone();
    assert_eq!(after, before, "the operation is untouched");
    assert_eq!(
        api.customer(created["customer_ref"].as_str().unwrap())
            .await["first_name"],
        "Mari"
    );
    assert_eq!(common::op_total(&node), 1);

    // A well-formed id that names nothing.
    let nobody = "0190b5f0-0000-7000-8000-000000000000";
    api.get(&format!("/v1/sync/operations/{nobody}"))
        .await
        .expect_error(404, "operation_id", "exists");
    api.put(
        &format!("/v1/sync/operations/{nobody}"),
        &json!({"payload": {"first_name": "A", "last_name": "B"}}),
    )
    .await
    .expect_error(404, "operation_id", "exists");
    api.post_empty(&format!("/v1/sync/operations/{nobody}/sync"))
        .await
        .expect_error(404, "operation_id", "exists");
    assert_eq!(common::op_total(&node), 1);
    stop_node(node).await;
}

/// Writes to one customer that arrive together (and so share group commits) each take effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_to_one_customer_keep_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path()).await;
    let api = Api::new(node.local_addr());
    let cref = api.create_customer(&customer("Mari", "Maasikas")).await["customer_ref"]
        .as_str()
        .unwrap()
        .to_string();
    // 32 attribute creates at once land in group commits together; each gets its own record.
    let mut tasks = Vec::new();
    for i in 0..32 {
        let api = api.clone();
        let path = format!("/v1/customers/{cref}/attributes");
        tasks.push(tokio::spawn(async move {
            let body = json!({"name": format!("attr_{i}"), "value": format!("v{i}")});
            api.post(&path, &body).await.expect(202)["record_id"]
                .as_str()
                .unwrap()
                .to_string()
        }));
    }
    let mut record_ids = HashSet::new();
    for t in tasks {
        assert!(record_ids.insert(t.await.unwrap()), "record ids are unique");
    }
    let c = api.customer(&cref).await;
    let attrs = c["attributes"].as_array().unwrap();
    assert_eq!(attrs.len(), 32, "no write lost: {c}");
    let names: HashSet<&str> = attrs.iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 32);
    let ids: HashSet<String> = attrs
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, record_ids);
    // The attributes are listed in acceptance order.
    let ops = ops_of(&api.all_operations("", 100).await, &cref);
    let op_order: Vec<&str> = ops[1..]
        .iter()
        .map(|o| o["record_id"].as_str().unwrap())
        .collect();
    let view_order: Vec<&str> = attrs.iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(op_order, view_order);
    stop_node(node).await;
}

/// The till is never kept waiting on HQ: with HQ unreachable, writes are accepted, reads show
/// them, and their operations stay pending after the uploader has tried and failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_hq_unreachable_writes_are_accepted_and_stay_pending() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path()).await;
    let api = Api::new(node.local_addr());
    let cref = api.create_customer(&customer("Mari", "Maasikas")).await["customer_ref"]
        .as_str()
        .unwrap()
        .to_string();
    api.post(&format!("/v1/customers/{cref}/addresses"), &address())
        .await
        .expect(202);
    common::poll(
        std::time::Duration::from_secs(15),
        "a failed upload attempt",
        || {
            let status = node.sync_status();
            async move { status.last_upload_error.is_some().then_some(()) }
        },
    )
    .await;
    let status = node.sync_status();
    assert_eq!(status.last_upload_success_ms, None);
    assert_eq!(status.operations_uploaded, 0);
    let ops = api.all_operations("", 100).await;
    assert_eq!(ops.len(), 2);
    assert!(ops.iter().all(|o| o["state"] == "pending"), "{ops:?}");
    let c = api.customer(&cref).await;
    assert_eq!(c["sync_state"], "pending");
    assert_eq!(c["account_number"], Value::Null);
    // And the till can still write.
    api.patch(
        &format!("/v1/customers/{cref}"),
        &json!({"last_name": "Kask"}),
    )
    .await
    .expect(202);
    stop_node(node).await;
}
