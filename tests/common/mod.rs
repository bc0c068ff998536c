//! Shared test harness: the real `servegraph` binary on an ephemeral port, and a small HTTP
//! client over hyper for exact control of headers and bytes.
#![allow(dead_code)]

pub mod cb_world;
pub mod kafka;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The servegraph binary; its log filter is `warn`, or `SERVEGRAPH_TEST_LOG` when set. Model
/// files may come from the repository (tests write graphs to temporary folders that use its
/// models). The process is killed when the test's thread ends, however it ends (a test
/// process killed, e.g. by `cargo test | head` or a timeout, must not leave servers and
/// their Python workers behind): the kernel's parent-death signal.
#[allow(unsafe_code)]
pub fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_servegraph"));
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe; nothing else runs before exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        });
    }
    cmd.current_dir(root())
        .env(
            "RUST_LOG",
            std::env::var("SERVEGRAPH_TEST_LOG").unwrap_or("warn".into()),
        )
        .env("SERVEGRAPH_MODEL_ROOTS", root());
    cmd
}

/// A running `servegraph serve`; killed when dropped.
pub struct Server {
    child: Child,
    pub addr: String,
    /// The gRPC listener's address, when started with `--grpc-listen`.
    #[allow(dead_code)]
    pub grpc: Option<String>,
}

impl Server {
    /// The server process's id.
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts serving `graph` on 127.0.0.1:0 and waits until it is ready.
    pub fn start(graph: &str, extra: &[&str]) -> Server {
        Server::start_at(graph, "127.0.0.1:0", extra)
    }

    /// Starts serving `graph` on `listen` and waits until it is ready. SIGTERM stops it
    /// without a grace period unless `extra` sets `--drain-grace`.
    pub fn start_at(graph: &str, listen: &str, extra: &[&str]) -> Server {
        let mut server = Server::listening(graph, listen, extra);
        server.wait_ready();
        server
    }

    /// [`Server::start`] with environment variables set for the server (a store's
    /// credentials and endpoint).
    pub fn start_env(graph: &str, extra: &[&str], env: &[(&str, String)]) -> Server {
        let mut server = Server::listening_env(graph, "127.0.0.1:0", extra, env);
        server.wait_ready();
        server
    }

    /// Starts serving `graph` on `listen`, returning once it listens (it may not be ready).
    pub fn listening(graph: &str, listen: &str, extra: &[&str]) -> Server {
        Server::listening_env(graph, listen, extra, &[])
    }

    fn listening_env(graph: &str, listen: &str, extra: &[&str], env: &[(&str, String)]) -> Server {
        let grace: &[&str] = if extra.contains(&"--drain-grace") {
            &[]
        } else {
            &["--drain-grace", "0"]
        };
        let mut child = bin()
            .args(["serve", graph, "--listen", listen])
            .args(grace)
            .args(extra)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start servegraph");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        // `servegraph listening on http://ADDR[ grpc://ADDR]`
        let mut words = line
            .trim()
            .strip_prefix("servegraph listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .split(' ');
        let addr = words.next().unwrap_or_default().to_owned();
        let grpc = words
            .next()
            .and_then(|w| w.strip_prefix("grpc://"))
            .map(str::to_owned);
        Server { child, addr, grpc }
    }

    /// Waits until ready; fails at once when the server exits instead (its errors are on
    /// the test's stderr).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "servegraph at {} exited before it was ready ({status})",
                    self.addr
                );
            }
            if let Ok(r) = block_on(get(&self.addr, "/v2/health/ready"))
                && r.status == 200
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("servegraph at {} did not become ready", self.addr);
    }

    /// Kills the process at once (SIGKILL): no draining, no commits.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal (`HUP`, `TERM`, ...) and returns at once.
    #[allow(dead_code)]
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Sends SIGTERM and waits (up to 20 s) for the process to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        self.terminate_wait()
    }

    /// Waits (up to 20 s) for the process to exit.
    pub fn terminate_wait(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "servegraph did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .expect("an {\"error\"} body")
            .to_owned()
    }
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

pub async fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> anyhow::Result<Reply> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::from(body)))?)
        .await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(Reply {
        status,
        headers,
        body,
    })
}

pub async fn get(addr: &str, path: &str) -> anyhow::Result<Reply> {
    request(addr, "GET", path, &[], Vec::new()).await
}

/// A POST with exactly these headers (none: no content type).
pub fn post_with(addr: &str, path: &str, body: &str, headers: &[(&str, &str)]) -> Reply {
    let headers: Vec<(&str, String)> = headers.iter().map(|(k, v)| (*k, v.to_string())).collect();
    block_on(request(
        addr,
        "POST",
        path,
        &headers,
        body.as_bytes().to_vec(),
    ))
    .expect("POST")
}

pub fn post(addr: &str, path: &str, body: &str) -> Reply {
    block_on(request(
        addr,
        "POST",
        path,
        &[("content-type", "application/json".into())],
        body.as_bytes().to_vec(),
    ))
    .expect("POST")
}

pub fn get_blocking(addr: &str, path: &str) -> Reply {
    block_on(get(addr, path)).expect("GET")
}

/// Known iris rows and scikit-learn's predictions for them (written by models/generate.py).
pub fn expected() -> serde_json::Value {
    let text = std::fs::read_to_string(root().join("models/iris_expected.json")).expect("expected");
    serde_json::from_str(&text).expect("JSON")
}

/// An OIP request for the expected rows.
pub fn iris_request(id: &str) -> String {
    let rows = &expected()["rows"];
    let n = rows.as_array().unwrap().len();
    serde_json::json!({
        "id": id,
        "inputs": [{"name": "input", "shape": [n, 4], "datatype": "FP32", "data": rows}]
    })
    .to_string()
}

/// Runs `tests/python/<script> <case> <args…>` with the test virtualenv and asserts it
/// printed `ok <case>` (its output is the failure message otherwise).
pub fn python_case(script: &str, case: &str, args: &[&std::ffi::OsStr]) {
    python_case_in(&test_python(), script, case, args, &[]);
}

/// [`python_case`] with the interpreter `python` and more environment `env`.
pub fn python_case_in(
    python: &std::path::Path,
    script: &str,
    case: &str,
    args: &[&std::ffi::OsStr],
    env: &[(&str, &str)],
) {
    let out = Command::new(python)
        .arg(root().join("tests/python").join(script))
        .arg(case)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&format!("ok {case}")),
        "{case}:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed certificate for 127.0.0.1 and its key, as PEM files in `dir`.
#[allow(dead_code)]
pub fn self_signed(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let (cert_pem, key_pem) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_pem, cert.cert.pem()).unwrap();
    std::fs::write(&key_pem, cert.signing_key.serialize_pem()).unwrap();
    (cert_pem, key_pem)
}

/// `servegraph serve GRAPH` over TLS with a fresh self-signed certificate (in `dir`) and
/// `extra` arguments, on 127.0.0.1:0: the process, its first stdout line (where it listens)
/// and the certificate's path.
#[allow(dead_code)]
pub fn tls_server(graph: &str, dir: &std::path::Path, extra: &[&str]) -> (Child, String, PathBuf) {
    use std::io::BufRead;
    let (cert_pem, key_pem) = self_signed(dir);
    let mut child = bin()
        .args(["serve", graph, "--listen", "127.0.0.1:0"])
        .args(extra)
        .arg("--tls-cert")
        .arg(&cert_pem)
        .arg("--tls-key")
        .arg(&key_pem)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line, cert_pem)
}

/// The folder `scripts/setup.sh --test` installs into: `$XDG_CACHE_HOME/servegraph`, else
/// `~/.cache/servegraph`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"))
        .join("servegraph")
}

/// Something `scripts/setup.sh --test` installs: the environment variable `var` when it is
/// set, else `rel` in [`cache_dir`]. Missing is a failure, not a skip.
pub fn installed(var: Option<&str>, rel: &str) -> PathBuf {
    let path = match var.and_then(std::env::var_os) {
        Some(p) => PathBuf::from(p),
        None => cache_dir().join(rel),
    };
    let or_set = var.map(|v| format!(" (or set {v})")).unwrap_or_default();
    assert!(
        path.exists(),
        "{} is missing: run `scripts/setup.sh --test`{or_set}",
        path.display()
    );
    path
}

/// The interpreter of the Seldon Core virtualenv (`scripts/setup.sh --test`), with Seldon's
/// own package: `SERVEGRAPH_SELDON_PYTHON`, else the cache's `venv-seldon`.
pub fn seldon_python() -> PathBuf {
    installed(Some("SERVEGRAPH_SELDON_PYTHON"), "venv-seldon/bin/python")
}

/// An interpreter with MLServer 1.7.1 installed (its `mlserver`, `mlserver_sklearn`):
/// `SERVEGRAPH_MLSERVER_PYTHON`, else the one `scripts/setup.sh --test` makes (the Python
/// benchmark's, `venv-bench-python`).
#[allow(dead_code)]
pub fn mlserver_python() -> PathBuf {
    installed(
        Some("SERVEGRAPH_MLSERVER_PYTHON"),
        "venv-bench-python/bin/python",
    )
}

/// The Python of the test virtualenv (`scripts/setup.sh --test`), or `SERVEGRAPH_PYTHON`.
pub fn test_python() -> PathBuf {
    installed(Some("SERVEGRAPH_PYTHON"), "venv-test/bin/python")
}

/// Base64 (standard, padded), as Triton's load bodies carry files.
pub fn base64_of(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
