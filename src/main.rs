//! `servegraph`: serve, validate and invoke serving graphs, and benchmark them.

mod bench;

/// mimalloc: a request allocates and frees many small buffers on whichever worker thread
/// runs it; glibc's malloc spent ~17% of a one-core server's time on them (perf, see
/// docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use servegraph_engine::grpc::{GrpcConfig, GrpcSource, GrpcState};
use servegraph_engine::http::{AppState, HttpConfig, HttpSource};
use servegraph_engine::sources::Source;
use servegraph_engine::{BuildMode, Graph};

/// A dataflow serving-graph engine for ML inference: YAML graphs of routers, models,
/// ensembles and transforms, served over the Open Inference Protocol (V2).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// A folder model files may come from, besides each graph's own (repeatable; the env
    /// variable takes a `:`-separated list). Default: the folder above each graph's.
    #[arg(
        long,
        global = true,
        env = "SERVEGRAPH_MODEL_ROOTS",
        value_delimiter = ':'
    )]
    model_root: Vec<PathBuf>,
    /// Where models named by a store's URI (`model_uri: s3://…`) are downloaded to, one folder
    /// per URI. Default: `$XDG_CACHE_HOME/servegraph/models` (else `~/.cache/servegraph/models`).
    #[arg(long, global = true, env = "SERVEGRAPH_MODEL_CACHE")]
    model_cache: Option<PathBuf>,
    /// Seconds one model's download may take, retries included.
    #[arg(long, global = true, default_value_t = 600)]
    model_fetch_timeout: u64,
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
        /// Seconds to let in-flight requests finish once the listeners close.
        #[arg(long, default_value_t = 30)]
        shutdown_timeout: u64,
        /// Seconds between SIGTERM and closing the listeners: readiness turns false at once,
        /// and requests are still accepted and served meanwhile, so load balancers can stop
        /// sending first (Kubernetes-style). SIGINT (Ctrl-C), or a second signal, skips it.
        #[arg(long, default_value_t = 5.0)]
        drain_grace: f64,
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
        /// Let Python models deployed into the repository install packages
        /// (`pkgs_to_install`): each gets a virtualenv of its own, made with pip.
        #[arg(long)]
        allow_pip: bool,
        /// Also serve the OIP over gRPC (Triton's `inference.GRPCInferenceService`) on this
        /// address (Triton's port is 8001; port 0 picks a free one).
        #[arg(long)]
        grpc_listen: Option<SocketAddr>,
        /// Also serve gRPC on the HTTP port itself (HTTP/1.1 and HTTP/2 share it).
        #[arg(long)]
        grpc_on_http: bool,
        /// Largest gRPC message received or sent, in bytes (default: `--max-body-bytes`).
        #[arg(long)]
        grpc_max_message_bytes: Option<usize>,
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
        #[arg(long, required_unless_present = "metadata")]
        data: Option<String>,
        /// Explain instead of infer: add per-feature `attributions`.
        #[arg(long)]
        explain: bool,
        /// Print the model's metadata (what `GET /v2/models/{model}` answers) instead.
        #[arg(long, conflicts_with_all = ["data", "explain"])]
        metadata: bool,
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
    // TLS for https model stores and HTTPS serving: ring, installed once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    servegraph_engine::storage::configure(servegraph_engine::storage::Settings {
        cache: cli
            .model_cache
            .clone()
            .unwrap_or_else(servegraph_engine::storage::default_cache),
        timeout: Duration::from_secs(cli.model_fetch_timeout.max(1)),
        // `validate` checks that a store's object exists without downloading it.
        download: !matches!(cli.command, Command::Validate { .. }),
    });
    let result = match cli.command {
        Command::Serve {
            graph,
            listen,
            max_body_bytes,
            shutdown_timeout,
            drain_grace,
            admin_token,
            admin_token_file,
            tls_cert,
            tls_key,
            allow_pip,
            grpc_listen,
            grpc_on_http,
            grpc_max_message_bytes,
        } => admin_token_from(admin_token, admin_token_file).and_then(|admin_token| {
            serve(
                &graph,
                ServeOptions {
                    listen,
                    max_body_bytes,
                    drain: Duration::from_secs(shutdown_timeout),
                    grace: Duration::try_from_secs_f64(drain_grace).unwrap_or_default(),
                    admin_token,
                    tls: tls_cert.zip(tls_key),
                    allow_pip,
                    grpc: Grpc {
                        listen: grpc_listen,
                        on_http: grpc_on_http,
                        max_message_bytes: grpc_max_message_bytes.unwrap_or(max_body_bytes),
                    },
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
            metadata,
        } => invoke(&graph, model, version, data.filter(|_| !metadata), explain),
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
            // A graph's diagnostics already say `error:` for each problem.
            let text = format!("{e:#}");
            if text.starts_with("error") {
                eprintln!("{text}");
            } else {
                eprintln!("error: {text}");
            }
            ExitCode::FAILURE
        }
    }
}

fn init_logging(default: &str, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Colours only on a terminal (and not under NO_COLOR): a log file or a collector gets
    // plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
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

/// The graph file with the model repository's overlay saved beside it (what `serve` serves).
fn load(graph: &Path, mode: BuildMode) -> anyhow::Result<Graph> {
    let overlay = servegraph_engine::repository::State::read(graph).map_err(anyhow::Error::msg)?;
    load_with(graph, mode, &overlay)
}

fn load_with(
    graph: &Path,
    mode: BuildMode,
    overlay: &servegraph_engine::repository::State,
) -> anyhow::Result<Graph> {
    Graph::load_with(graph, &registry(), mode, overlay).map_err(|e| anyhow::anyhow!("{e}"))
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
        || {
            let overlay = servegraph_engine::repository::State::read(graph).map_err(|e| {
                servegraph_engine::GraphErrors::new(
                    graph,
                    "",
                    vec![servegraph_engine::Diagnostic::new(e.to_string())],
                )
            })?;
            Graph::load_with(graph, &registry(), BuildMode::Load, &overlay)
        },
    );
    // Models loading in the background (`load_mode: async`) are waited for: a failed load
    // is an error here too.
    let loaded = loaded.and_then(|g| {
        with_spinner(
            "waiting for models loading in the background".into(),
            || {
                while g.loading() {
                    std::thread::sleep(Duration::from_millis(20));
                }
            },
        );
        match g.unready() {
            None => Ok(g),
            Some(why) => Err(servegraph_engine::GraphErrors::new(
                graph,
                &std::fs::read_to_string(graph).unwrap_or_default(),
                vec![servegraph_engine::Diagnostic::new(why)],
            )),
        }
    });
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
    grace: Duration,
    admin_token: Option<String>,
    /// Certificate chain and key files (PEM): HTTPS.
    tls: Option<(PathBuf, PathBuf)>,
    allow_pip: bool,
    grpc: Grpc,
}

/// Where gRPC is served.
struct Grpc {
    /// A listener of its own.
    listen: Option<SocketAddr>,
    /// The HTTP port too.
    on_http: bool,
    max_message_bytes: usize,
}

/// A serving process's graph and what runs beside it, replaced whole by a reload.
struct Running {
    path: PathBuf,
    live: tokio::sync::watch::Sender<servegraph_engine::Live>,
    /// The sources, told about each reload.
    sources: Vec<Box<dyn Source>>,
    /// Tracking writers and learning-sharing tasks of every graph served so far: each ends
    /// once its graph is let go, and shutdown waits for them.
    tasks: std::sync::Mutex<Vec<(&'static str, tokio::task::JoinHandle<()>)>>,
    /// The model repository's overlay the live graph was built with.
    repository: std::sync::Mutex<servegraph_engine::repository::State>,
    /// `--allow-pip`: deployed Python models may install packages.
    allow_pip: bool,
}

/// Checks a graph built for a repository change must pass before it serves.
#[derive(Default)]
struct Checks {
    /// (model, version, configuration's tensors).
    declared: Vec<(String, String, servegraph_engine::repository::Declared)>,
    /// (model, version, OIP request): each must answer.
    smoke: Vec<(String, String, Vec<u8>)>,
}

/// What a graph needs beside it (its tracking stream, learning shared across processes),
/// started; the graph as sources serve it.
async fn start_beside(
    graph: Arc<Graph>,
    tasks: &std::sync::Mutex<Vec<(&'static str, tokio::task::JoinHandle<()>)>>,
) -> anyhow::Result<servegraph_engine::Live> {
    let (tracker, writer) = start_tracking(&graph)?;
    let sharing = servegraph_engine::kafka::learning::share(&graph)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut tasks = tasks.lock().expect("not poisoned");
    tasks.extend(writer.map(|w| ("the tracking sink", w)));
    tasks.extend(sharing.into_iter().map(|t| ("sharing learning", t)));
    Ok(servegraph_engine::Live { graph, tracker })
}

impl Running {
    /// Re-reads the graph file (with `overlay`, or the repository's current one). If it is
    /// valid (and passes `checks`) the new graph serves new requests (requests running finish
    /// on the old one; models the two share are reused); if not, the old graph keeps serving
    /// and the errors are returned.
    async fn reload(
        &self,
        overlay: Option<servegraph_engine::repository::State>,
        checks: Checks,
    ) -> Result<serde_json::Value, String> {
        let old = Arc::clone(&self.live.borrow().graph);
        // Routers save their learning, so the new ones start from it.
        old.checkpoint();
        let path = self.path.clone();
        let started = std::time::Instant::now();
        let overlay = match overlay {
            Some(o) => o,
            None => servegraph_engine::repository::State::read(&path).map_err(|e| e.to_string())?,
        };
        let built = {
            let overlay = overlay.clone();
            tokio::task::spawn_blocking(move || load_with(&path, BuildMode::Load, &overlay)).await
        };
        let graph = match built {
            Ok(Ok(graph)) => Arc::new(graph),
            Ok(Err(e)) => return Err(format!("{e:#}")),
            Err(e) => return Err(format!("loading the graph panicked: {e}")),
        };
        check_new_models(&graph, &checks).await?;
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
        let live = start_beside(graph, &self.tasks)
            .await
            .map_err(|e| format!("{e:#}"))?;
        for source in &self.sources {
            source.reload(&live);
        }
        self.live.send_replace(live);
        *self.repository.lock().expect("not poisoned") = overlay;
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

    /// One admin action: a reload, or a change of the model repository (built and checked
    /// like a reload, then saved beside the graph file).
    async fn act(
        &self,
        action: servegraph_engine::serve::AdminAction,
    ) -> servegraph_engine::serve::ReloadResult {
        use servegraph_engine::Error;
        use servegraph_engine::repository as repo;
        use servegraph_engine::serve::AdminAction;
        let current = self.repository.lock().expect("not poisoned").clone();
        let (next, written, checks, what) = match action {
            AdminAction::Reload => {
                return self
                    .reload(None, Checks::default())
                    .await
                    .map_err(Error::unprocessable);
            }
            AdminAction::Load { model, body } => {
                let (path, allow_pip) = (self.path.clone(), self.allow_pip);
                let state = current.clone();
                let name = model.clone();
                let plan = tokio::task::spawn_blocking(move || {
                    let python = servegraph_python();
                    let host = repo::Host {
                        graph: &path,
                        python_version: python_version(&python),
                        python,
                        allow_pip,
                    };
                    repo::plan_load(&host, &state, &name, &body)
                })
                .await
                .map_err(|e| Error::internal(format!("planning the load panicked: {e}")))??;
                let checks = Checks {
                    declared: plan.declared,
                    smoke: plan.smoke,
                };
                (
                    plan.state,
                    plan.written,
                    checks,
                    format!("loaded `{model}`"),
                )
            }
            AdminAction::Unload { model, body } => (
                repo::plan_unload(&current, &model, &body)?,
                Vec::new(),
                Checks::default(),
                format!("unloaded `{model}`"),
            ),
            AdminAction::Default { model, version } => {
                let graph = Arc::clone(&self.live.borrow().graph);
                (
                    repo::plan_default(&current, &graph, &model, &version)?,
                    Vec::new(),
                    Checks::default(),
                    format!("`{model}` serves version `{version}` by default"),
                )
            }
        };
        match self.reload(Some(next.clone()), checks).await {
            Ok(mut summary) => {
                if let Err(e) = next.save(&self.path) {
                    tracing::error!("{what}, but the repository could not be saved: {e}");
                    return Err(Error::internal(format!(
                        "{what} and serving it, but it could not be saved, so a restart will not \
                         serve it: {e}"
                    )));
                }
                // Folders of versions loaded again are no longer used by any entry.
                let used: Vec<&str> = next.models.iter().map(|e| e.folder.as_str()).collect();
                for gone in current
                    .models
                    .iter()
                    .filter(|e| !used.contains(&e.folder.as_str()))
                {
                    let dir = self
                        .path
                        .parent()
                        .unwrap_or(Path::new("."))
                        .join(&gone.folder);
                    let _ = std::fs::remove_dir_all(dir);
                }
                tracing::info!("model repository: {what}");
                summary["repository"] = serde_json::json!(what);
                Ok(summary)
            }
            Err(errors) => {
                servegraph_engine::repository::discard(&written);
                Err(Error::bad_request(format!(
                    "{} refused, the server keeps serving what it served: {errors}",
                    what.replacen("loaded", "load of", 1)
                        .replacen("unloaded", "unload of", 1)
                )))
            }
        }
    }
}

/// The interpreter deployed Python models run on (`SERVEGRAPH_PYTHON`, else `python3`).
fn servegraph_python() -> String {
    std::env::var("SERVEGRAPH_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".to_owned())
}

/// `major.minor` of an interpreter, or `None` when it does not run.
fn python_version(python: &str) -> Option<String> {
    let out = std::process::Command::new(python)
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A repository change's graph, before it serves: each new model's configured tensors match
/// the model, and each example request answers (a failure names the model and carries the
/// model's error, a Python traceback included).
async fn check_new_models(graph: &Arc<Graph>, checks: &Checks) -> Result<(), String> {
    for (name, version, declared) in &checks.declared {
        let info = graph.model(name, Some(version)).ok_or_else(|| {
            format!("`{name}` version `{version}` is not among the graph's models")
        })?;
        servegraph_engine::repository::check_declared(declared, info)
            .map_err(|e| format!("`{name}` version `{version}`: {e}"))?;
    }
    if checks.smoke.is_empty() {
        return Ok(());
    }
    let live = servegraph_engine::Live {
        graph: Arc::clone(graph),
        tracker: None,
    };
    let pipeline = servegraph_engine::request::Pipeline::new(&live, "repository");
    for (name, version, example) in &checks.smoke {
        let request = servegraph_engine::request::Request {
            model: Some(name),
            version: Some(version),
            explain: false,
            headers: &servegraph_engine::request::NoHeaders,
            resume_after: None,
            encoding: servegraph_engine::request::Encoding::Json,
            deadline: None,
        };
        let body = bytes::Bytes::from(example.clone());
        pipeline
            .serve(request, None, async { Ok(body) })
            .await
            .map_err(|e| {
                let mut text =
                    format!("`{name}` version `{version}` failed its example request: {e}");
                if let Some(tb) = &e.traceback {
                    text.push('\n');
                    text.push_str(tb);
                }
                text
            })?;
    }
    Ok(())
}

fn serve(graph_path: &Path, options: ServeOptions) -> anyhow::Result<()> {
    use servegraph_engine::sources::{Phase, SourceContext};
    let ServeOptions {
        listen,
        max_body_bytes,
        drain,
        grace,
        admin_token,
        tls,
        allow_pip,
        grpc,
    } = options;
    // Structure first, with no I/O beyond file checks: a broken file never starts a server.
    let repository =
        servegraph_engine::repository::State::read(graph_path).map_err(anyhow::Error::msg)?;
    load_with(graph_path, BuildMode::Structural, &repository)?;
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
        let admin = admin_token.map(|token| servegraph_engine::serve::Admin {
            token,
            reload: reload_tx.clone(),
        });
        let admin_on = admin.is_some();
        let grpc_state = (grpc.listen.is_some() || grpc.on_http).then(|| {
            GrpcState::new(GrpcConfig {
                max_message_bytes: grpc.max_message_bytes,
                admin: admin.clone(),
            })
        });
        let state = AppState::new(HttpConfig {
            max_body_bytes,
            admin,
        });
        // Listen at once (live, not ready); load models off the async workers.
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut app = servegraph_engine::http::router(Arc::clone(&state));
        let mut grpc_sources: Vec<GrpcSource> = Vec::new();
        let mut grpc_addr = None;
        if let Some(grpc_state) = &grpc_state {
            if grpc.on_http {
                app = app.merge(grpc_state.routes());
                grpc_sources.push(GrpcSource::on_http_port(Arc::clone(grpc_state)));
            }
            if let Some(at) = grpc.listen {
                let listener = tokio::net::TcpListener::bind(at)
                    .await
                    .with_context(|| format!("cannot listen for gRPC on {at}"))?;
                grpc_addr = Some(listener.local_addr()?);
                grpc_sources.push(GrpcSource::listen(
                    listener,
                    Arc::clone(grpc_state),
                    tls.clone(),
                )?);
            }
        }
        let http = HttpSource::listen_app(listener, state, app, tls, grpc.on_http)?;
        // Bound at once so liveness answers while models load; "listening" is said only once
        // the graph has loaded (a graph that refuses to start never claims it).
        tracing::info!(%addr, graph = %graph_path.display(), admin = admin_on, "bound; loading models (liveness answers meanwhile)");
        let loading = {
            let path = graph_path.to_owned();
            let repository = repository.clone();
            tokio::task::spawn_blocking(move || load_with(&path, BuildMode::Load, &repository))
        };
        let (phase_tx, phase) = tokio::sync::watch::channel(Phase::Serving);
        tokio::spawn(shutdown_sequence(phase_tx, grace));
        // A failed load is fatal: report every error and exit non-zero.
        let graph = match loading.await {
            Ok(Ok(graph)) => Arc::new(graph),
            Ok(Err(e)) => bail!("{e:#}"),
            Err(e) => bail!("model loading panicked: {e}"),
        };
        if let Some(t) = &graph.telemetry {
            servegraph_engine::telemetry::start(t, &graph.name).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        // One line (tests and scripts read the first line of stdout).
        match grpc_addr {
            Some(grpc_addr) => {
                println!("servegraph listening on {scheme}://{addr} grpc://{grpc_addr}");
                tracing::info!(%addr, %grpc_addr, "listening");
            }
            None => {
                println!("servegraph listening on {scheme}://{addr}");
                tracing::info!(%addr, grpc_on_http = grpc.on_http, "listening");
            }
        }
        // Tracking and learning that crosses processes start before the server says it is
        // ready; then every source, HTTP last (it turns ready).
        let tasks = Default::default();
        let live = start_beside(Arc::clone(&graph), &tasks).await?;
        let (live, live_rx) = tokio::sync::watch::channel(live);
        let mut sources: Vec<Box<dyn Source>> = [
            servegraph_engine::kafka::KafkaSource::from_graph(&graph),
            servegraph_engine::kafka::learning::FeedbackSource::from_graph(&graph),
        ]
        .into_iter()
        .flatten()
        .collect();
        for grpc in grpc_sources {
            sources.push(Box::new(grpc));
        }
        sources.push(Box::new(http));
        let mut running_sources = Vec::new();
        for source in &mut sources {
            let ctx = SourceContext {
                live: live_rx.clone(),
                phase: phase.clone(),
                drain,
            };
            let task = source
                .start(ctx)
                .await
                .map_err(|e| anyhow::anyhow!("{} source: {e}", source.name()))?;
            running_sources.push((source.name(), task));
        }
        drop(live_rx);
        let names: Vec<String> = graph.models().iter().map(|m| m.name.clone()).collect();
        tracing::info!(models = ?names, "ready");
        drop(graph);
        let running = Arc::new(Running {
            path: graph_path.to_owned(),
            live,
            sources,
            tasks,
            repository: std::sync::Mutex::new(repository),
            allow_pip,
        });

        // Reloads, one at a time: SIGHUP and `POST /admin/reload`.
        spawn_sighup(reload_tx);
        let reloader = {
            let running = Arc::clone(&running);
            tokio::spawn(async move {
                while let Some(request) = reload_rx.recv().await {
                    let result = running.act(request.action).await;
                    if let Err(e) = &result {
                        tracing::error!("refused, the old graph keeps serving:\n{e}");
                    }
                    let _ = request.reply.send(result);
                }
            })
        };

        let mut phase = phase;
        SourceContext::reached(&mut phase, Phase::Stopping).await;
        reloader.abort();
        let _ = reloader.await;
        // Every source stops taking work and finishes what it has (Kafka commits).
        for (name, task) in running_sources {
            if tokio::time::timeout(drain + Duration::from_secs(5), task)
                .await
                .is_err()
            {
                tracing::warn!("the {name} source did not stop in time");
            }
        }
        // Then the graph is let go: tracking streams write what they hold, and routers that
        // share their learning publish what they learnt last (their tasks end with it).
        let running = Arc::into_inner(running).expect("the reloader has ended");
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
fn spawn_sighup(reload: tokio::sync::mpsc::Sender<servegraph_engine::serve::AdminRequest>) {
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
            let request = servegraph_engine::serve::AdminRequest {
                action: servegraph_engine::serve::AdminAction::Reload,
                reply,
            };
            if reload.send(request).await.is_err() {
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
        Sink::Kafka { brokers, topic } => {
            servegraph_engine::kafka::tracking_sink(brokers, topic).map_err(|e| e.to_string())
        }
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

/// SIGTERM: not ready at once, keep serving for `grace`, then stop. SIGINT (Ctrl-C), or a
/// second signal during the grace, stops at once.
async fn shutdown_sequence(
    phase: tokio::sync::watch::Sender<servegraph_engine::sources::Phase>,
    grace: Duration,
) {
    use servegraph_engine::sources::Phase;
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
        let graceful = tokio::select! {
            _ = term.recv() => true,
            _ = int.recv() => false,
        };
        if graceful && !grace.is_zero() {
            tracing::info!(
                grace_ms = grace.as_millis() as u64,
                "SIGTERM: not ready; still serving during the grace period"
            );
            let _ = phase.send(Phase::Draining);
            tokio::select! {
                _ = tokio::time::sleep(grace) => {}
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutting down: draining in-flight requests");
    let _ = phase.send(Phase::Draining);
    let _ = phase.send(Phase::Stopping);
}

fn invoke(
    graph_path: &Path,
    model: Option<String>,
    version: Option<String>,
    data: Option<String>,
    explain: bool,
) -> anyhow::Result<()> {
    let body = match data.as_deref().map(|d| (d, d.strip_prefix('@'))) {
        Some((_, Some(file))) => {
            Some(std::fs::read(file).with_context(|| format!("reading {file}"))?)
        }
        Some((d, None)) => Some(d.as_bytes().to_vec()),
        None => None,
    };
    let graph = with_spinner(format!("loading {}", graph_path.display()), || {
        load(graph_path, BuildMode::Load)
    })?;
    let Some(body) = body else {
        let name = model.as_deref().unwrap_or(&graph.name);
        let metadata = graph
            .metadata(name, version.as_deref())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        println!("{}", serde_json::to_string_pretty(&metadata)?);
        return Ok(());
    };
    // The server's request path, as the HTTP source runs it (without admission waits).
    let live = servegraph_engine::Live {
        graph: Arc::new(graph),
        tracker: None,
    };
    let pipeline = servegraph_engine::request::Pipeline::new(&live, "invoke");
    let request = servegraph_engine::request::Request {
        model: model.as_deref(),
        version: version.as_deref(),
        explain,
        headers: &servegraph_engine::request::NoHeaders,
        resume_after: None,
        encoding: servegraph_engine::request::Encoding::Json,
        deadline: None,
    };
    let rt = runtime()?;
    let answer = rt
        .block_on(pipeline.serve(request, None, async { Ok(bytes::Bytes::from(body)) }))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let body = answer.body;
    let value: serde_json::Value = serde_json::from_slice(&body)?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}
