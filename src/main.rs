//! `servegraph`: serve, validate and invoke serving graphs, and benchmark them.

mod bench;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use servegraph_engine::http::{AppState, HttpConfig};
use servegraph_engine::protocol::decode_request;
use servegraph_engine::{BuildMode, Graph, Target};

/// A dataflow serving-graph engine for ML inference: YAML graphs of routers, models,
/// ensembles and transforms, served over the Open Inference Protocol (V2).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// A folder model files may come from, besides each graph's own (repeatable; the env
    /// variable takes a `:`-separated list). Default: the working directory.
    #[arg(
        long,
        global = true,
        env = "SERVEGRAPH_MODEL_ROOTS",
        value_delimiter = ':'
    )]
    model_root: Vec<PathBuf>,
    /// Log lines as `text` or `json` (one object per line). The filter is `RUST_LOG`.
    #[arg(
        long,
        global = true,
        env = "SERVEGRAPH_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a graph over HTTP (Open Inference Protocol V2).
    Serve {
        /// The graph YAML file.
        graph: PathBuf,
        /// Address to listen on (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Largest request body accepted, in bytes (larger: HTTP 413).
        #[arg(long, default_value_t = 16 * 1024 * 1024)]
        max_body_bytes: usize,
        /// Seconds to let in-flight requests finish after SIGTERM/SIGINT.
        #[arg(long, default_value_t = 30)]
        shutdown_timeout: u64,
        /// The bearer token the admin endpoints (`/admin/*`) require; without one (or
        /// `--admin-token-file`) they are off.
        #[arg(long, env = "SERVEGRAPH_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// A file holding the admin token (its first line).
        #[arg(long, conflicts_with = "admin_token")]
        admin_token_file: Option<PathBuf>,
        /// Serve HTTPS with this certificate chain (PEM); needs `--tls-key`.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The certificate's private key (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Check a graph file, loading its models; print every error with its line and column.
    Validate {
        /// The graph YAML file.
        graph: PathBuf,
        /// One `file:line:col: message` line per error, without source snippets.
        #[arg(long)]
        short: bool,
    },
    /// Run one inference request in-process, without a server, and print the response.
    Invoke {
        /// The graph YAML file.
        graph: PathBuf,
        /// The model (graph name or route) to address; default: the graph.
        #[arg(long)]
        model: Option<String>,
        /// The model version to address.
        #[arg(long)]
        version: Option<String>,
        /// The OIP V2 request as JSON, or @FILE to read it from a file.
        #[arg(long)]
        data: String,
        /// Explain instead of infer: add per-feature `attributions`.
        #[arg(long)]
        explain: bool,
    },
    /// Draw a graph: Graphviz DOT, Mermaid, or SVG (through Graphviz's `dot`).
    Plot {
        /// The graph YAML file.
        graph: PathBuf,
        #[arg(long, value_enum, default_value = "dot")]
        format: PlotFormat,
    },
    /// Print the JSON Schema of graph files (for editors: `servegraph schema > graph.schema.json`).
    Schema,
    /// Benchmarks: HTTP load against a server, or the engine's own per-step overhead.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PlotFormat {
    Dot,
    Mermaid,
    Svg,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Serving logs what it loads and where it listens; one-shot commands stay quiet.
    init_logging(
        match cli.command {
            Command::Serve { .. } => "info,ort=warn",
            _ => "warn",
        },
        cli.log_format,
    );
    servegraph_engine::step::set_model_roots(cli.model_root.clone());
    let result = match cli.command {
        Command::Serve {
            graph,
            listen,
            max_body_bytes,
            shutdown_timeout,
            admin_token,
            admin_token_file,
            tls_cert,
            tls_key,
        } => admin_token_from(admin_token, admin_token_file).and_then(|admin_token| {
            serve(
                &graph,
                ServeOptions {
                    listen,
                    max_body_bytes,
                    drain: Duration::from_secs(shutdown_timeout),
                    admin_token,
                    tls: tls_cert.zip(tls_key),
                },
            )
        }),
        Command::Validate { graph, short } => return validate(&graph, short),
        Command::Invoke {
            graph,
            model,
            version,
            data,
            explain,
        } => invoke(&graph, model, version, &data, explain),
        Command::Plot { graph, format } => plot(&graph, format),
        Command::Schema => {
            let schema = servegraph_engine::schema::graph_schema(&registry());
            println!("{}", serde_json::to_string_pretty(&schema).expect("JSON"));
            Ok(())
        }
        Command::Bench(cmd) => bench::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(default: &str, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
}

/// The step kinds: the built-in ones and Kafka's `queue`.
fn registry() -> servegraph_engine::Registry {
    let mut r = servegraph_steps::registry();
    servegraph_engine::kafka::queue::register(&mut r);
    r
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn load(graph: &Path, mode: BuildMode) -> anyhow::Result<Graph> {
    Graph::load(graph, &registry(), mode).map_err(|e| anyhow::anyhow!("{e}"))
}

/// A spinner on stderr while `what` runs (drawn only when stderr is a terminal).
fn with_spinner<T>(message: String, what: impl FnOnce() -> T) -> T {
    let spinner = indicatif::ProgressBar::new_spinner().with_message(message);
    spinner.enable_steady_tick(Duration::from_millis(100));
    let out = what();
    spinner.finish_and_clear();
    out
}

fn validate(graph: &Path, short: bool) -> ExitCode {
    let loaded = with_spinner(
        format!("checking {} and loading its models", graph.display()),
        || Graph::load(graph, &registry(), BuildMode::Load),
    );
    match loaded {
        Ok(g) => {
            let models: Vec<String> = g
                .models()
                .iter()
                .map(|m| match &m.version {
                    Some(v) => format!("{}:{v}", m.name),
                    None => m.name.clone(),
                })
                .collect();
            println!("{}: ok — serves {}", graph.display(), models.join(", "));
            ExitCode::SUCCESS
        }
        Err(errors) if short => {
            eprintln!("{}", errors.short());
            ExitCode::FAILURE
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}

/// The admin token: given, or read from a file (its first line); never empty.
fn admin_token_from(
    token: Option<String>,
    file: Option<PathBuf>,
) -> anyhow::Result<Option<String>> {
    let token = match (token, file) {
        (Some(t), _) => Some(t),
        (None, Some(f)) => Some(
            std::fs::read_to_string(&f)
                .with_context(|| format!("reading the admin token file {}", f.display()))?
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned(),
        ),
        (None, None) => None,
    };
    match token {
        Some(t) if t.is_empty() => bail!("the admin token is empty"),
        other => Ok(other),
    }
}

struct ServeOptions {
    listen: SocketAddr,
    max_body_bytes: usize,
    drain: Duration,
    admin_token: Option<String>,
    /// Certificate chain and key files (PEM): HTTPS.
    tls: Option<(PathBuf, PathBuf)>,
}

/// A serving process's graph and what runs beside it, replaced whole by a reload.
struct Running {
    path: PathBuf,
    state: Arc<AppState>,
    live: tokio::sync::watch::Sender<servegraph_engine::Live>,
    /// Tracking writers and learning-sharing tasks of every graph served so far: each ends
    /// once its graph is let go, and shutdown waits for them.
    tasks: std::sync::Mutex<Vec<(&'static str, tokio::task::JoinHandle<()>)>>,
}

impl Running {
    /// Starts what a graph needs beside it (tracking, shared learning) and serves it.
    async fn start(&self, graph: Arc<Graph>) -> anyhow::Result<()> {
        let (tracker, writer) = start_tracking(&graph)?;
        let sharing = servegraph_engine::kafka::learning::share(&graph)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut tasks = self.tasks.lock().expect("not poisoned");
        tasks.extend(writer.map(|w| ("the tracking sink", w)));
        tasks.extend(sharing.into_iter().map(|t| ("sharing learning", t)));
        drop(tasks);
        self.state.serve(Arc::clone(&graph), tracker.clone());
        self.live
            .send_replace(servegraph_engine::Live { graph, tracker });
        Ok(())
    }

    /// Re-reads the graph file. If it is valid the new graph serves new requests (requests
    /// running finish on the old one; models the two share are reused); if not, the old graph
    /// keeps serving and the errors are returned.
    async fn reload(&self) -> servegraph_engine::http::ReloadResult {
        let old = Arc::clone(&self.live.borrow().graph);
        // Routers save their learning, so the new ones start from it.
        old.checkpoint();
        let path = self.path.clone();
        let started = std::time::Instant::now();
        let graph = match tokio::task::spawn_blocking(move || load(&path, BuildMode::Load)).await {
            Ok(Ok(graph)) => Arc::new(graph),
            Ok(Err(e)) => return Err(format!("{e:#}")),
            Err(e) => return Err(format!("loading the graph panicked: {e}")),
        };
        let mut warnings = Vec::new();
        if graph.kafka != old.kafka {
            warnings.push(
                "`sources.kafka` changed: the Kafka source keeps its settings until a restart"
                    .to_owned(),
            );
        }
        if graph.telemetry != old.telemetry {
            warnings
                .push("`telemetry` changed: tracing keeps its settings until a restart".to_owned());
        }
        let models: Vec<String> = graph.models().iter().map(|m| m.name.clone()).collect();
        self.start(graph).await.map_err(|e| format!("{e:#}"))?;
        tracing::info!(
            ?models,
            ms = started.elapsed().as_millis() as u64,
            "graph reloaded"
        );
        Ok(serde_json::json!({
            "reloaded": true,
            "models": models,
            "warnings": warnings,
            "ms": started.elapsed().as_millis() as u64,
        }))
    }
}

fn serve(graph_path: &Path, options: ServeOptions) -> anyhow::Result<()> {
    let ServeOptions {
        listen,
        max_body_bytes,
        drain,
        admin_token,
        tls,
    } = options;
    // Structure first, with no I/O beyond file checks: a broken file never starts a server.
    load(graph_path, BuildMode::Structural)?;
    let rt = runtime()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        let tls = match tls {
            None => None,
            Some((cert, key)) => Some(tls_config(&cert, &key).await?),
        };
        let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel(4);
        let admin = admin_token.map(|token| servegraph_engine::http::Admin {
            token,
            reload: reload_tx.clone(),
        });
        let admin_on = admin.is_some();
        let state = AppState::new(HttpConfig {
            max_body_bytes,
            admin,
        });
        // Listen at once (live, not ready); load models off the async workers.
        let scheme = if tls.is_some() { "https" } else { "http" };
        println!("servegraph listening on {scheme}://{addr}");
        tracing::info!(%addr, graph = %graph_path.display(), admin = admin_on, "listening; loading models");
        let loading = {
            let path = graph_path.to_owned();
            tokio::task::spawn_blocking(move || load(&path, BuildMode::Load))
        };
        let app = servegraph_engine::http::router(Arc::clone(&state));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = {
            let mut stop_rx = stop_rx.clone();
            async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
            }
        };
        let server = match tls {
            None => {
                let server = axum::serve(listener, app).with_graceful_shutdown(stopped);
                tokio::spawn(async move { server.await })
            }
            Some(config) => {
                // Stops accepting on the signal; open connections finish their requests.
                let handle = axum_server::Handle::new();
                let stopping = handle.clone();
                tokio::spawn(async move {
                    stopped.await;
                    stopping.graceful_shutdown(None);
                });
                let server = axum_server::from_tcp_rustls(listener.into_std()?, config)?
                    .handle(handle)
                    .serve(app.into_make_service());
                tokio::spawn(server)
            }
        };
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: draining in-flight requests");
            let _ = stop_tx.send(true);
        });
        // A failed load is fatal: report every error and exit non-zero.
        let graph = match loading.await {
            Ok(Ok(graph)) => Arc::new(graph),
            Ok(Err(e)) => bail!("{e:#}"),
            Err(e) => bail!("model loading panicked: {e}"),
        };
        if let Some(t) = &graph.telemetry {
            servegraph_engine::telemetry::start(t, &graph.name).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let (live, live_rx) = tokio::sync::watch::channel(servegraph_engine::Live {
            graph: Arc::clone(&graph),
            tracker: None,
        });
        let running = Arc::new(Running {
            path: graph_path.to_owned(),
            state: Arc::clone(&state),
            live,
            tasks: Default::default(),
        });
        // Tracking and learning that crosses processes start before the server says it is
        // ready; the Kafka source and feedback follow whatever graph is live.
        running.start(Arc::clone(&graph)).await?;
        let kafka = match graph.kafka.clone() {
            None => None,
            Some(spec) => Some(
                servegraph_engine::kafka::start(spec, live_rx.clone(), stop_rx.clone(), drain)
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            ),
        };
        let feedback = match &graph.kafka {
            None => None,
            Some(spec) => {
                servegraph_engine::kafka::learning::feedback(spec, live_rx.clone(), stop_rx.clone())
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?
            }
        };
        drop(live_rx);
        let names: Vec<String> = graph.models().iter().map(|m| m.name.clone()).collect();
        tracing::info!(models = ?names, "ready");
        drop(graph);

        // Reloads, one at a time: SIGHUP and `POST /admin/reload`.
        spawn_sighup(reload_tx);
        let reloader = {
            let running = Arc::clone(&running);
            tokio::spawn(async move {
                while let Some(reply) = reload_rx.recv().await {
                    let result = running.reload().await;
                    if let Err(e) = &result {
                        tracing::error!("reload refused, the old graph keeps serving:\n{e}");
                    }
                    let _ = reply.send(result);
                }
            })
        };

        let mut stop_rx = stop_rx;
        let _ = stop_rx.wait_for(|stop| *stop).await;
        reloader.abort();
        match tokio::time::timeout(drain, server).await {
            Ok(result) => result?.context("serving HTTP")?,
            Err(_) => tracing::warn!(
                secs = drain.as_secs(),
                "requests still running after the drain deadline; exiting"
            ),
        }
        // The Kafka source finishes its in-flight messages and commits (within the drain).
        if let Some(kafka) = kafka
            && tokio::time::timeout(drain + Duration::from_secs(5), kafka)
                .await
                .is_err()
        {
            tracing::warn!("the Kafka source did not stop in time");
        }
        if let Some(feedback) = feedback {
            let _ = feedback.await;
        }
        // Then the graph is let go: tracking streams write what they hold, and routers that
        // share their learning publish what they learnt last (their tasks end with it).
        let _ = reloader.await;
        state.unload();
        let tasks = std::mem::take(&mut *running.tasks.lock().expect("not poisoned"));
        drop(running);
        for (what, task) in tasks {
            if tokio::time::timeout(Duration::from_secs(10), task).await.is_err() {
                tracing::warn!("{what} did not finish within 10 s");
            }
        }
        // The last spans.
        let _ = tokio::task::spawn_blocking(servegraph_engine::telemetry::shutdown).await;
        anyhow::Ok(())
    })
}

/// The HTTPS settings from a certificate chain and a key, both PEM (rustls, ring).
async fn tls_config(
    cert: &Path,
    key: &Path,
) -> anyhow::Result<axum_server::tls_rustls::RustlsConfig> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
        .await
        .with_context(|| {
            format!(
                "cannot use the TLS certificate {} with the key {}",
                cert.display(),
                key.display()
            )
        })
}

/// SIGHUP asks for a reload; its outcome is logged.
fn spawn_sighup(
    reload: tokio::sync::mpsc::Sender<
        tokio::sync::oneshot::Sender<servegraph_engine::http::ReloadResult>,
    >,
) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot install the SIGHUP handler: reload over HTTP only");
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the graph");
            let (reply, _answer) = tokio::sync::oneshot::channel();
            if reload.send(reply).await.is_err() {
                return;
            }
        }
    });
    #[cfg(not(unix))]
    drop(reload);
}

/// Opens the graph's tracking sink and starts its writer.
fn start_tracking(
    graph: &Graph,
) -> anyhow::Result<(
    Option<servegraph_engine::tracking::Tracker>,
    Option<tokio::task::JoinHandle<()>>,
)> {
    use servegraph_engine::tracking::{Sink, Tracker, open_sink};
    let Some((spec, sink)) = &graph.tracking else {
        return Ok((None, None));
    };
    let opened = match sink {
        Sink::Kafka { brokers, topic } => servegraph_engine::kafka::tracking_sink(brokers, topic),
        other => open_sink(other),
    }
    .map_err(|e| anyhow::anyhow!("tracking sink `{}`: {e}", spec.sink))?;
    let (tracker, writer) = Tracker::new(spec, &graph.name, opened);
    tracing::info!(sink = %spec.sink, sample = spec.sample, "tracking");
    Ok((Some(tracker), Some(tokio::spawn(writer.run()))))
}

fn plot(graph_path: &Path, format: PlotFormat) -> anyhow::Result<()> {
    // The structure is enough to draw: no model is loaded.
    let graph = load(graph_path, BuildMode::Structural)?;
    let text = match format {
        PlotFormat::Mermaid => servegraph_engine::plot::mermaid(&graph),
        PlotFormat::Dot => servegraph_engine::plot::dot(&graph),
        PlotFormat::Svg => {
            use std::io::Write;
            let mut child = std::process::Command::new("dot")
                .arg("-Tsvg")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| {
                    anyhow::anyhow!(
                        "SVG needs Graphviz's `dot` ({e}): install it (`apt-get install graphviz`), \
                         or use --format dot or --format mermaid"
                    )
                })?;
            child
                .stdin
                .take()
                .expect("piped stdin")
                .write_all(servegraph_engine::plot::dot(&graph).as_bytes())?;
            let out = child.wait_with_output()?;
            if !out.status.success() {
                bail!("dot failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            String::from_utf8(out.stdout)?
        }
    };
    print!("{text}");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn invoke(
    graph_path: &Path,
    model: Option<String>,
    version: Option<String>,
    data: &str,
    explain: bool,
) -> anyhow::Result<()> {
    let body = match data.strip_prefix('@') {
        Some(file) => std::fs::read(file).with_context(|| format!("reading {file}"))?,
        None => data.as_bytes().to_vec(),
    };
    let graph = with_spinner(format!("loading {}", graph_path.display()), || {
        load(graph_path, BuildMode::Load)
    })?;
    let name = model.unwrap_or_else(|| graph.name.clone());
    let Some(info) = graph.model(&name, version.as_deref()) else {
        let names: Vec<&str> = graph.models().iter().map(|m| m.name.as_str()).collect();
        bail!(
            "unknown model `{name}`; the graph serves {}",
            names.join(", ")
        );
    };
    let model_version = info.version.clone();
    let request = decode_request(&body, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut event = request.event;
    if event.id.is_empty() {
        event.id = servegraph_engine::protocol::new_id();
    }
    if name != graph.name {
        event.target = Some(Target {
            model: name.clone(),
            version,
        });
    }
    event.explain = explain;
    let rt = runtime()?;
    let done = rt
        .block_on(graph.run(event))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if explain && done.get(servegraph_engine::event::ATTRIBUTIONS).is_none() {
        bail!("`{name}` cannot explain: no model on the route it took gives `attributions`");
    }
    // Printed as JSON: every requested output as JSON data, whatever the request asked.
    let body = servegraph_engine::protocol::encode_json_response(
        &done,
        &name,
        model_version.as_deref(),
        request.outputs,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let value: serde_json::Value = serde_json::from_slice(&body)?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}
