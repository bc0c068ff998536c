//! The dashboard (`serve --dashboard`): off unless asked for, behind the admin token when one
//! is set, its data, and the page in a real browser (Debian's Chromium driven by
//! playwright-core: `tests/browser/dashboard.mjs`, one case per behaviour).

mod common;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const GRAPH: &str = "tests/graphs/dashboard.yaml";
const TOKEN: &str = "dash-s3cret";
const ROW: &str =
    r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}"#;

fn get_with(addr: &str, path: &str, headers: &[(&str, String)]) -> Reply {
    block_on(request(addr, "GET", path, headers, Vec::new())).expect("GET")
}

fn bearer(token: &str) -> Vec<(&'static str, String)> {
    vec![("authorization", format!("Bearer {token}"))]
}

#[test]
fn dashboard_is_off_unless_asked_for() {
    let s = Server::start(GRAPH, &["--admin-token", TOKEN]);
    for path in [
        "/dashboard",
        "/dashboard/data",
        "/dashboard?token=dash-s3cret",
    ] {
        let r = get_with(&s.addr, path, &bearer(TOKEN));
        assert_eq!(r.status, 404, "{path}");
        assert!(r.error().contains("no route for GET /dashboard"), "{path}");
    }
}

#[test]
fn dashboard_needs_the_admin_token_when_one_is_set() {
    let s = Server::start(GRAPH, &["--dashboard", "--admin-token", TOKEN]);
    let refused = |path: &str, headers: &[(&str, String)], says: &str| {
        let r = get_with(&s.addr, path, headers);
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.headers["www-authenticate"], "Bearer", "{path}");
        assert!(r.error().contains(says), "{path}: {}", r.error());
    };
    refused("/dashboard", &[], "/dashboard?token=<admin token>");
    refused("/dashboard?token=nope", &[], "not the admin token");
    refused("/dashboard", &bearer("nope"), "not the admin token");
    refused("/dashboard/data", &[], "needs the admin token");
    // A token in the query opens only the page: the data needs the header.
    refused(
        "/dashboard/data?token=dash-s3cret",
        &[],
        "needs the admin token",
    );

    for (path, headers) in [
        ("/dashboard?token=dash-s3cret", vec![]),
        ("/dashboard", bearer(TOKEN)),
    ] {
        let r = get_with(&s.addr, path, &headers);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.headers["content-type"], "text/html; charset=utf-8");
        assert_eq!(r.headers["cache-control"], "no-store");
        assert_eq!(r.headers["referrer-policy"], "no-referrer");
        let csp = r.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("connect-src 'self'"), "{csp}");
    }
    let r = get_with(&s.addr, "/dashboard/data", &bearer(TOKEN));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["graph"]["name"], "iris-dash");
    // Not a POST.
    let r = post(&s.addr, "/dashboard", "{}");
    assert_eq!(
        (r.status, r.headers["allow"].to_str().unwrap()),
        (405, "GET")
    );
}

#[test]
fn the_page_fetches_nothing_from_elsewhere() {
    let s = Server::start(GRAPH, &["--dashboard"]);
    let r = get_with(&s.addr, "/dashboard", &[]);
    assert_eq!(r.status, 200);
    let page = String::from_utf8(r.body.to_vec()).unwrap();
    assert!(page.starts_with("<!doctype html>") && page.ends_with("</html>\n"));
    assert!(page.contains("<script>") && page.contains("<style>"));
    // The only address in the page is SVG's namespace; no src, no stylesheet link.
    let addresses: Vec<&str> = page
        .match_indices("://")
        .map(|(i, _)| &page[i.saturating_sub(5)..(i + 30).min(page.len())])
        .collect();
    assert!(
        addresses
            .iter()
            .all(|a| a.contains("http://www.w3.org/2000/svg")),
        "{addresses:?}"
    );
    assert!(!page.contains(" src="), "a script or image fetched");
    assert!(!page.contains("<link rel=\"stylesheet\""));
}

#[test]
fn dashboard_data_counts_each_step() {
    let s = Server::start(GRAPH, &["--dashboard"]);
    let data = || get_blocking(&s.addr, "/dashboard/data").json();
    let before = data();
    let g = &before["graph"];
    assert_eq!(g["name"], "iris-dash");
    let ids: Vec<&str> = g["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["scale", "pick", "names"]);
    assert_eq!(g["steps"][1]["after"], json!(["scale"]));
    assert_eq!(g["steps"][1]["kind"], "router");
    assert_eq!(g["steps"][1]["summary"], "thompson");
    let routes: Vec<(&str, &str)> = g["steps"][1]["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_str().unwrap(), c["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        routes,
        [
            ("pick/iris-lr", "onnx model"),
            ("pick/iris-rf", "onnx model")
        ]
    );
    assert_eq!(g["responder"], "names");
    assert_eq!(before["routers"], json!(["pick"]));
    assert_eq!(before["bounds_s"].as_array().unwrap().len(), 21);

    let n = 25;
    let mut lr = 0;
    for _ in 0..n {
        let r = post(&s.addr, "/v2/models/iris-dash/infer", ROW);
        assert_eq!(r.status, 200);
        lr += usize::from(r.json()["parameters"]["route"] == "iris-lr");
    }
    let bad = post(&s.addr, "/v2/models/iris-dash/infer", "{");
    assert_eq!(bad.status, 400);
    let after = data();
    let count = |d: &Value, id: &str| d["timers"][id]["count"].as_u64().unwrap();
    for (id, of, want) in [
        ("scale", "step", n),
        ("pick", "step", n),
        ("names", "step", n),
        ("pick/iris-lr", "route", lr),
        ("pick/iris-rf", "route", n - lr),
    ] {
        let t = &after["timers"][id];
        assert_eq!(t["of"], of, "{id}");
        assert_eq!(count(&after, id) - count(&before, id), want as u64, "{id}");
        let buckets: u64 = t["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap())
            .sum();
        assert_eq!(buckets, count(&after, id), "{id}");
        assert!(t["sum_s"].as_f64().unwrap() > 0.0, "{id}");
    }
    let http = &after["requests"][0];
    assert_eq!(http["source"], "http");
    assert_eq!(http["codes"]["200"], n);
    assert_eq!(http["codes"]["400"], 1);
    assert_eq!(http["count"], n + 1);
    assert!(after["time_ms"].as_u64() >= before["time_ms"].as_u64());
}

// ---- The page in a browser.

/// A process killed (and reaped) when dropped: a failing test leaves no browser driver
/// behind (playwright-core closes Chromium when its driver goes).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `tests/browser/dashboard.mjs CASE` against `s` (with the admin token `token`) and
/// asserts it printed `ok CASE`; its output is the failure otherwise.
fn browser_case(case: &str, s: &Server, token: Option<&str>) {
    let node_dir = std::env::var_os("SERVEGRAPH_NODE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("node"));
    let chromium = std::env::var("SERVEGRAPH_CHROMIUM").unwrap_or("/usr/bin/chromium".into());
    assert!(
        node_dir.join("node_modules/playwright-core").is_dir()
            && std::path::Path::new(&chromium).exists(),
        "playwright-core in {} or Chromium at {chromium} is missing: run `scripts/setup.sh --test`",
        node_dir.display()
    );
    let mut cmd = Command::new("node");
    cmd.arg(root().join("tests/browser/dashboard.mjs"))
        .args([case, &format!("http://{}", s.addr)])
        .args(token)
        .env("SERVEGRAPH_NODE_DIR", &node_dir)
        .env("SERVEGRAPH_CHROMIUM", &chromium)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = Reaped(cmd.spawn().expect("node"));
    // Read as it comes, so a full pipe never stalls the script.
    let read = |mut from: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = from.read_to_string(&mut text);
            text
        })
    };
    let out = read(Box::new(child.0.stdout.take().unwrap()));
    let err = read(Box::new(child.0.stderr.take().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(150);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "{case}: the browser test hung");
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(
        status.success() && out.contains(&format!("ok {case}")),
        "{case} ({status}):\n{out}\n{err}"
    );
}

/// The page, opened with the admin token, draws the graph, follows requests as they arrive
/// (counts per step exactly, live rates on the graph) and the experiment's counts, and says
/// there is no monitor (`/v2/monitor` is 404 here).
#[test]
fn browser_the_page_follows_requests() {
    let s = Server::start(GRAPH, &["--dashboard", "--admin-token", TOKEN]);
    browser_case("live", &s, Some(TOKEN));
}

/// The drift and readout sections against their JSON contracts, answered for the page by
/// the browser test: an empty monitor list, then a drifted feature; a readout with an SRM
/// alert.
#[test]
fn browser_drift_and_readout_follow_their_contracts() {
    let s = Server::start(GRAPH, &["--dashboard"]);
    browser_case("contract", &s, None);
}

/// The page shows a drift the test injects into the real in-process monitor (the graph's
/// tracking file read back by `serve`): the reference frozen from the first rows, a window
/// like it without drift, then a window of shifted rows detected.
#[test]
fn browser_the_page_shows_an_injected_drift() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join(GRAPH))
        .unwrap()
        .replace("../../models/", &format!("{}/models/", root().display()));
    let graph = dir.path().join("dashboard.yaml");
    std::fs::write(
        &graph,
        format!(
            "{text}tracking: {{sink: \"file://events.jsonl\", batch: 1, flush_ms: 10}}\nmonitor:\n  reference: {{events: 100}}\n  features:\n    - {{tensor: input, index: 0, name: sepal_length, type: numerical}}\n    - {{tensor: input, index: 1, name: sepal_width, type: numerical}}\n  window: {{events: 50, min_events: 20}}\n  thresholds: {{mode: mlrun}}\n"
        ),
    )
    .unwrap();
    let s = Server::start(graph.to_str().unwrap(), &["--dashboard"]);
    browser_case("drift", &s, None);
}
