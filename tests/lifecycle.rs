//! The serve process's life: it exits cleanly on SIGTERM, and a model that cannot load stops
//! it with the error instead of leaving a server that never becomes ready.

mod common;

use common::*;

#[test]
fn sigterm_stops_serving_and_exits_zero() {
    let mut s = Server::start("graphs/iris.yaml", &["--shutdown-timeout", "5"]);
    assert_eq!(
        post(&s.addr, "/v2/models/iris-lr/infer", &iris_request("a")).status,
        200
    );
    let status = s.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        block_on(get(&s.addr, "/v2/health/live")).is_err(),
        "still listening after exit"
    );
}

/// Clients that keep sending through a SIGTERM are all answered: readiness turns false at
/// once, the listener keeps accepting and serving for the grace period, and no connection is
/// reset.
#[test]
fn sigterm_keeps_serving_through_the_grace_period_without_resets() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut s = Server::start(
        "graphs/iris.yaml",
        &["--shutdown-timeout", "5", "--drain-grace", "2"],
    );
    let signalled = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let (addr, signalled, stop) = (s.addr.clone(), signalled.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut ok, mut after, mut failures) = (0, 0, Vec::new());
                let body = iris_request(&format!("c{i}"));
                while !stop.load(Ordering::Relaxed) {
                    let sent_after = signalled.load(Ordering::Relaxed);
                    // A new connection each time: what the kernel accepts must be served.
                    match block_on(request(
                        &addr,
                        "POST",
                        "/v2/models/iris/infer",
                        &[],
                        body.as_bytes().to_vec(),
                    )) {
                        Ok(r) if r.status == 200 => {
                            ok += 1;
                            after += usize::from(sent_after);
                        }
                        Ok(r) => failures.push(format!("status {}", r.status)),
                        Err(e) => failures.push(format!("{e:#}")),
                    }
                }
                (ok, after, failures)
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    s.signal("TERM");
    signalled.store(true, Ordering::Relaxed);
    // Readiness is false at once, while requests are still served.
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
    loop {
        let r = get_blocking(&s.addr, "/v2/health/ready");
        if r.status == 503 {
            assert_eq!(r.error(), "not ready: shutting down");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still ready after SIGTERM"
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(800));
    stop.store(true, Ordering::Relaxed);
    let (mut total, mut after) = (0, 0);
    for c in clients {
        let (ok, a, failures) = c.join().unwrap();
        assert!(failures.is_empty(), "failed requests: {failures:?}");
        total += ok;
        after += a;
    }
    assert!(
        after > 0,
        "no request was sent after the signal ({total} in all)"
    );
    let status = s.terminate_wait();
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_model_that_cannot_load_stops_serve_with_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.onnx");
    std::fs::write(&bad, b"this is not an onnx file").unwrap();
    let graph = dir.path().join("g.yaml");
    std::fs::write(&graph, "name: g\ngraph: {kind: router, routes: {m: {kind: model, class: onnx, model_path: bad.onnx}}}\n").unwrap();
    let out = bin()
        .args(["serve", graph.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("step `m`: ONNX Runtime cannot load"),
        "{stderr}"
    );
    assert!(stderr.contains("bad.onnx"), "{stderr}");
}

/// A port already taken stops `serve` with one line that says so once (the cause is part of
/// the message, not repeated after it).
#[test]
fn a_taken_port_is_said_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let graph = root().join("graphs/iris.yaml");
    let out = bin()
        .args(["serve", graph.to_str().unwrap(), "--listen", &addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("error: cannot listen on {addr}: ")),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("Address already in use").count(),
        1,
        "{stderr}"
    );
}
