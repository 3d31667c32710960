//! The server's own defences: slow or idle clients cannot keep a till waiting (header read
//! timeout), open connections are capped, and a shutdown finishes the commit under way.
//! Every socket here is on loopback; every loop is bounded in count and time.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use outpost::node::Node;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A client that opens a connection, sends part of a request's headers, and stalls.
async fn stall(addr: SocketAddr) -> TcpStream {
    let mut s = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    s.write_all(b"POST /v1/customers HTTP/1.1\r\nHost: outpost\r\nContent-Le")
        .await
        .expect("write partial header");
    s
}

/// Waits (bounded) for the server to close `s`: end of stream or a reset. Anything else the
/// server sends first must be an HTTP answer (hyper may answer 408 before closing).
async fn closed_by_server(mut s: TcpStream, within: Duration) -> Result<(), String> {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return Err("still open".into()),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(()),
            Ok(Ok(n)) => {
                if !buf[..n].starts_with(b"HTTP/1.1 4") {
                    return Err(format!(
                        "unexpected bytes: {:?}",
                        String::from_utf8_lossy(&buf[..n])
                    ));
                }
            }
        }
    }
}

/// The value of an unlabelled sample in this node's metrics.
fn metric(node: &Node, name: &str) -> f64 {
    node.metrics()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_string))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_do_not_keep_a_till_waiting_and_are_closed_after_the_header_timeout() {
    const STALLERS: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    // Long enough that all the stallers are open at once even on a loaded machine (opening 200
    // connections one after another once took longer than a 1 s timeout, which closed the
    // first ones before the last were counted).
    config.limits.header_read_timeout_ms = 5_000;
    let node = start_node_with(config).await;
    let addr = node.local_addr();
    let mut stallers = Vec::with_capacity(STALLERS);
    for _ in 0..STALLERS {
        stallers.push(stall(addr).await);
    }
    poll(WAIT, "every staller accepted", || async {
        (metric(&node, "outpost_http_connections_open") >= STALLERS as f64).then_some(())
    })
    .await;

    // A till's request is answered meanwhile.
    let api = Api::new(addr);
    let created = api.create_customer(&customer("Busy", "Evening")).await;
    assert_eq!(created["state"], "pending");
    api.get("/healthz").await.expect(200);

    // Every staller is closed by the server, none kept beyond the header timeout (plus slack
    // for a loaded machine; the bound only stops a broken server from hanging the test).
    let closes = stallers
        .into_iter()
        .map(|s| tokio::spawn(closed_by_server(s, Duration::from_secs(20))));
    let mut still_open = 0;
    for close in closes {
        if close.await.unwrap().is_err() {
            still_open += 1;
        }
    }
    assert_eq!(still_open, 0, "stalled connections left open");
    assert!(metric(&node, "outpost_http_header_timeouts_total") >= STALLERS as f64);
    poll(WAIT, "connections released", || async {
        (metric(&node, "outpost_http_connections_open") == 0.0).then_some(())
    })
    .await;
    stop_node(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    const CAP: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.limits.max_connections = CAP;
    config.limits.header_read_timeout_ms = 800;
    let node = start_node_with(config).await;
    let addr = node.local_addr();
    let mut stallers = Vec::new();
    for _ in 0..CAP {
        stallers.push(stall(addr).await);
    }
    poll(WAIT, "the cap filled", || async {
        (metric(&node, "outpost_http_connections_open") == CAP as f64).then_some(())
    })
    .await;

    // One more client with a whole request: the kernel takes the connection, the node does
    // not serve it until a slot frees, which here is when a staller's header timeout strikes.
    let mut extra = TcpStream::connect(addr).await.unwrap();
    extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: outpost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), extra.read_to_end(&mut answer))
        .await
        .expect("the extra client was never served")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The slot it got was freed by a timed-out staller (the counter is bumped before the slot
    // is released), so it was not served past the cap.
    assert!(metric(&node, "outpost_http_header_timeouts_total") >= 1.0);
    assert!(metric(&node, "outpost_http_connections_open") <= CAP as f64);
    for s in stallers {
        closed_by_server(s, Duration::from_secs(20)).await.unwrap();
    }
    stop_node(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_but_finishes_the_commit_under_way() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path()).await;
    let addr = node.local_addr();
    let body = br#"{"first_name":"Late","last_name":"Closer"}"#;
    let (head, tail) = body.split_at(10);
    let mut till = TcpStream::connect(addr).await.unwrap();
    till.write_all(
        format!(
            "POST /v1/customers HTTP/1.1\r\nHost: outpost\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    till.write_all(head).await.unwrap();
    // The request is in the handler, waiting for the rest of its body.
    poll(WAIT, "the request in flight", || async {
        (metric(&node, "outpost_http_requests_in_flight") >= 1.0).then_some(())
    })
    .await;

    let store_path = outpost::config::Config::for_dir(dir.path()).store_path();
    let stopping = tokio::spawn(async move { node.shutdown().await });
    // New connections are refused once the listener is closed...
    poll(WAIT, "the listener closed", || async {
        TcpStream::connect(addr).await.is_err().then_some(())
    })
    .await;
    assert!(!stopping.is_finished(), "stopped with a request under way");
    // ...while the request under way completes, is committed, and is answered.
    till.write_all(tail).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, till.read_to_end(&mut answer))
        .await
        .expect("no answer")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    let customer_ref = answer
        .split("\"customer_ref\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("customer_ref in the answer")
        .to_string();
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("shutdown did not finish")
        .unwrap()
        .unwrap();

    // Restarted on the same store: the acknowledged customer is there.
    assert!(store_path.exists());
    let node = start_node(dir.path()).await;
    let api = Api::new(node.local_addr());
    let c = api.customer(&customer_ref).await;
    assert_eq!(c["last_name"], "Closer");
    stop_node(node).await;
}
