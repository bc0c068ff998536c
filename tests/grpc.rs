//! The OIP over gRPC (issue 14), driven by the unchanged `tritonclient[grpc]` against the real
//! binary, one test per behaviour, from `tests/python/grpc_check.py`: Triton's calls, a
//! stream of 100 requests, every datatype, errors and their codes, the caller's deadline,
//! admission, the repository behind the admin token, TLS, gRPC on the HTTP port, and the
//! drain on SIGTERM. A remote step over gRPC is in `tests/remote.rs`.

mod common;

use std::io::BufRead;

use common::*;

fn grpc_server(graph: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--grpc-listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    Server::start(graph, &args)
}

fn check(case: &str, s: &Server, args: &[&str]) {
    let addr = s.grpc.as_deref().unwrap_or(&s.addr);
    let mut all: Vec<&std::ffi::OsStr> = vec![addr.as_ref()];
    all.extend(args.iter().map(|a| a.as_ref() as &std::ffi::OsStr));
    python_case("grpc_check.py", case, &all);
}

/// A graph of one Python model (`slow`: sleeps 5 s when its first element is -2), at most
/// one request in flight.
fn slow_graph(dir: &std::path::Path) -> String {
    let yaml = format!(
        "name: slow\nmax_in_flight: 1\ngraph:\n  kind: flow\n  steps:\n    echo: {{kind: model, class: python, path: {}, python: {}, class_name: Echo, class_args: {{scale: 2.5}}, inputs: [{{name: input, datatype: FP32, shape: [-1, -1]}}]}}\n",
        root().join("tests/python/models/models.py").display(),
        test_python().display()
    );
    let path = dir.join("slow.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

#[test]
fn tritonclient_grpc_calls_work_unchanged() {
    check("triton_calls", &grpc_server("graphs/iris.yaml", &[]), &[]);
}

#[test]
fn a_stream_of_a_hundred_requests_is_answered_in_the_stream() {
    check("stream", &grpc_server("graphs/iris.yaml", &[]), &[]);
}

#[test]
fn every_datatype_and_bytes_travel_unchanged() {
    check(
        "datatypes",
        &grpc_server("tests/graphs/echo.yaml", &[]),
        &[],
    );
}

#[test]
fn errors_have_their_grpc_codes_and_messages() {
    let s = grpc_server("graphs/iris.yaml", &["--grpc-max-message-bytes", "65536"]);
    check("errors", &s, &[]);
    // Counted under the gRPC source.
    let metrics = String::from_utf8_lossy(&get_blocking(&s.addr, "/metrics").body).into_owned();
    assert!(
        metrics.contains("source=\"grpc\"") && metrics.contains("code=\"404\""),
        "{metrics}"
    );
}

#[test]
fn the_callers_deadline_is_the_requests() {
    let dir = tempfile::tempdir().unwrap();
    let s = grpc_server(&slow_graph(dir.path()), &[]);
    check("deadline", &s, &[]);
    // The server gave up itself (a 504), and the call whose caller gave up first is counted
    // too: 504 if the server's deadline fired first, else 499 (the caller went away).
    let count = |metrics: &str, code: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| l.starts_with("servegraph_requests_total") && l.contains("source=\"grpc\""))
            .filter(|l| l.contains(&format!("code=\"{code}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    // The cancelled call is counted once the server has seen the cancellation.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let metrics = String::from_utf8_lossy(&get_blocking(&s.addr, "/metrics").body).into_owned();
        let (timed_out, gone) = (count(&metrics, "504"), count(&metrics, "499"));
        if timed_out + gone == 2 || std::time::Instant::now() > deadline {
            assert!(timed_out >= 1, "{metrics}");
            assert_eq!(timed_out + gone, 2, "{metrics}");
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn past_max_in_flight_is_resource_exhausted() {
    let dir = tempfile::tempdir().unwrap();
    let s = grpc_server(&slow_graph(dir.path()), &[]);
    check("admission", &s, &[&s.addr]);
}

#[test]
fn sigterm_drains_grpc_like_http() {
    let dir = tempfile::tempdir().unwrap();
    // max_in_flight 1 would refuse the second request: a graph of its own without it.
    let graph = slow_graph(dir.path());
    let text = std::fs::read_to_string(&graph)
        .unwrap()
        .replace("max_in_flight: 1\n", "");
    std::fs::write(&graph, text).unwrap();
    let mut s = grpc_server(&graph, &["--drain-grace", "4"]);
    let mut client = std::process::Command::new(test_python())
        .arg(root().join("tests/python/grpc_check.py"))
        .args(["drain", s.grpc.as_deref().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(client.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "sent", "{line:?}");
    s.signal("TERM");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let status = client.wait().unwrap();
    assert!(status.success() && rest.contains("ok drain"), "{rest}");
    assert!(s.terminate_wait().success());
}

#[test]
fn load_and_unload_over_grpc_need_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let graph = dir.path().join("g.yaml");
    std::fs::copy(root().join("graphs/iris.yaml"), &graph).unwrap();
    let text = std::fs::read_to_string(&graph)
        .unwrap()
        .replace("../models/", &format!("{}/models/", root().display()));
    std::fs::write(&graph, text).unwrap();
    let s = grpc_server(graph.to_str().unwrap(), &["--admin-token", "s3cret"]);
    check("repository", &s, &["s3cret"]);
}

#[test]
fn grpc_and_http_share_the_http_port() {
    let s = Server::start("graphs/iris.yaml", &["--grpc-on-http"]);
    assert!(s.grpc.is_none());
    check("same_port", &s, &[]);
}

#[test]
fn grpc_over_tls_with_the_servers_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, line, cert_pem) = tls_server(
        "graphs/iris.yaml",
        dir.path(),
        &["--grpc-listen", "127.0.0.1:0"],
    );
    let grpc = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("grpc://"))
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_owned();
    let result = std::panic::catch_unwind(|| {
        python_case(
            "grpc_check.py",
            "tls",
            &[grpc.as_ref(), cert_pem.as_os_str()],
        )
    });
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
