//! The serving process's lifecycle: check the graph file, listen at once (live, not ready),
//! load the models off the async workers, start what runs beside the graph (its tracking
//! stream, learning shared across processes) and every source (Kafka's from the graph file,
//! gRPC, HTTP last: it turns ready), then apply admin actions one at a time (a reload, a
//! change of the model repository: build the new graph beside the old, check it, swap it
//! in), and on a signal drain: not ready for the grace period, then stop every source,
//! finish what is in flight, flush what runs beside the graph, end.
//!
//! `servegraph serve` is [`serve`] with its command line as a [`ServerConfig`]. The sources a
//! graph file declares are made from [`SOURCE_KINDS`] (`sources.rs`).

mod sources;

pub use sources::{SOURCE_KINDS, SourceKind};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::Error;
use crate::graph::{Graph, Live};
use crate::http::{AppState, HttpConfig, HttpSource};
use crate::repository as repo;
use crate::serve::{Admin, AdminAction, AdminRequest, ReloadResult};
use crate::sources::{Phase, Source, SourceContext};
use crate::step::{BuildMode, Registry};

/// What a serving process is started with (`servegraph serve`'s options).
pub struct ServerConfig {
    /// The graph file.
    pub graph: PathBuf,
    /// The step kinds graphs may use.
    pub registry: Registry,
    /// Where HTTP listens (port 0 picks one).
    pub listen: SocketAddr,
    /// Largest request body accepted (413 past it).
    pub max_body_bytes: usize,
    /// How long in-flight work may take to finish once stopping.
    pub drain: Duration,
    /// Between SIGTERM and stopping: not ready, still serving.
    pub grace: Duration,
    /// The admin endpoints' bearer token; off without.
    pub admin_token: Option<String>,
    /// HTTPS (and gRPC over TLS): a certificate chain and its key, both PEM.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Models deployed into the repository may install packages (`pkgs_to_install`).
    pub allow_pip: bool,
    /// Where gRPC is served.
    pub grpc: GrpcListen,
    /// The interpreter deployed Python models run on.
    pub python: String,
    /// Serve the dashboard (`GET /dashboard`), behind the admin token when one is set.
    pub dashboard: bool,
}

/// Where gRPC is served.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcListen {
    /// A listener of its own.
    pub listen: Option<SocketAddr>,
    /// The HTTP port too.
    pub on_http: bool,
    /// Largest message received or sent.
    pub max_message_bytes: usize,
}

/// Why a server did not start (or stopped with an error). Each one's text says its cause:
/// print it with `{}` (its `source` is there for programs that walk the chain).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The graph file is not one to serve: every problem.
    #[error("{0}")]
    Graph(#[from] crate::diag::GraphErrors),
    /// The model repository beside it cannot be read.
    #[error(transparent)]
    Overlay(#[from] repo::OverlayError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen for gRPC on {addr}: {source}")]
    ListenGrpc {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot use the TLS certificate {} with the key {}: {source}", .cert.display(), .key.display())]
    Tls {
        cert: PathBuf,
        key: PathBuf,
        source: std::io::Error,
    },
    /// The graph's tracking sink could not be opened.
    #[error("tracking sink `{sink}`: {source}")]
    Tracking {
        sink: String,
        source: crate::tracking::SinkError,
    },
    /// Learning shared across processes could not start.
    #[error("{0}")]
    Sharing(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Kafka topics the graph uses do not exist (nor could be created) on brokers that
    /// answered: one line each.
    #[error("{0}")]
    KafkaTopics(String),
    #[error(transparent)]
    Telemetry(#[from] crate::telemetry::ExporterError),
    /// A source could not start.
    #[error("{name} source: {source}")]
    Source {
        name: &'static str,
        source: crate::sources::StartError,
    },
    /// What this build does not have, or a task that panicked.
    #[error("{0}")]
    Start(String),
    #[error("starting the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Serves a graph until a signal stops it, on a runtime of its own: checks the graph file's
/// structure first (no runtime, no I/O beyond file checks: a broken file never starts a
/// server), then [`run`].
pub fn serve(config: ServerConfig) -> Result<(), ServeError> {
    let repository = repo::State::read(&config.graph)?;
    Graph::load_with(
        &config.graph,
        &config.registry,
        BuildMode::Structural,
        &repository,
    )?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?
        .block_on(run(config, repository))
}

/// Serves a graph whose structure was checked, with the repository overlay read beside it,
/// until a signal stops it: see the module's documentation.
pub async fn run(config: ServerConfig, repository: repo::State) -> Result<(), ServeError> {
    let ServerConfig {
        graph: graph_path,
        registry,
        listen,
        max_body_bytes,
        drain,
        grace,
        admin_token,
        tls,
        allow_pip,
        grpc,
        python,
        dashboard,
    } = config;
    let loader = Loader {
        path: graph_path.clone(),
        registry,
        shelf: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr()?;
    let tls = match tls {
        None => None,
        Some((cert, key)) => Some(tls_config(&cert, &key).await?),
    };
    let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel(4);
    let admin = admin_token.map(|token| Admin {
        token,
        reload: reload_tx.clone(),
    });
    let admin_on = admin.is_some();
    let state = AppState::new(HttpConfig {
        max_body_bytes,
        admin: admin.clone(),
        dashboard,
    });
    // Listen at once (live, not ready); load models off the async workers.
    let scheme = if tls.is_some() { "https" } else { "http" };
    let app = crate::http::router(Arc::clone(&state));
    // gRPC's routes on the HTTP port, the HTTP app behind them for every other path.
    #[cfg_attr(not(feature = "grpc"), allow(unused_mut))]
    let mut grpc_routes: Option<axum::Router> = None;
    let mut sources: Vec<Box<dyn Source>> = Vec::new();
    let mut grpc_addr = None;
    #[cfg(feature = "grpc")]
    if grpc.listen.is_some() || grpc.on_http {
        use crate::grpc::{GrpcConfig, GrpcSource, GrpcState};
        let grpc_state = GrpcState::new(GrpcConfig {
            max_message_bytes: grpc.max_message_bytes,
            admin,
        });
        if grpc.on_http {
            grpc_routes = Some(grpc_state.routes());
            sources.push(Box::new(GrpcSource::on_http_port(Arc::clone(&grpc_state))));
        }
        if let Some(at) = grpc.listen {
            let listener = tokio::net::TcpListener::bind(at)
                .await
                .map_err(|source| ServeError::ListenGrpc { addr: at, source })?;
            grpc_addr = Some(listener.local_addr()?);
            sources.push(Box::new(GrpcSource::listen(
                listener,
                grpc_state,
                tls.clone(),
            )?));
        }
    }
    #[cfg(not(feature = "grpc"))]
    if grpc.listen.is_some() || grpc.on_http {
        drop(admin);
        return Err(ServeError::Start(
            "this build of servegraph has no gRPC (feature `grpc`)".into(),
        ));
    }
    let http = match grpc_routes {
        Some(routes) => {
            HttpSource::listen_app(listener, state, routes.fallback_service(app), tls, true)?
        }
        None => HttpSource::listen_app(listener, state, app, tls, false)?,
    };
    // Bound at once so liveness answers while models load; "listening" is said only once
    // the graph has loaded (a graph that refuses to start never claims it).
    tracing::info!(%addr, graph = %graph_path.display(), admin = admin_on, "bound; loading models (liveness answers meanwhile)");
    let loading = {
        let loader = loader.clone();
        let repository = repository.clone();
        tokio::task::spawn_blocking(move || loader.load(BuildMode::Load, &repository))
    };
    let (phase_tx, phase) = tokio::sync::watch::channel(Phase::Serving);
    tokio::spawn(shutdown_sequence(phase_tx, grace));
    // A failed load is fatal: report every error and exit non-zero.
    let graph = match loading.await {
        Ok(Ok(graph)) => Arc::new(graph),
        Ok(Err(e)) => return Err(e.into()),
        Err(e) => return Err(ServeError::Start(format!("model loading panicked: {e}"))),
    };
    if let Some(t) = &graph.telemetry {
        crate::telemetry::start(t, &graph.name)?;
    }
    // The Kafka topics the graph uses exist (or are created) before it says it listens; brokers
    // that do not answer leave it not ready until they do.
    let health = crate::sources::Health::default();
    #[cfg(feature = "kafka")]
    crate::kafka::topics::at_start(&graph, &health)
        .await
        .map_err(|e| ServeError::KafkaTopics(e.to_string()))?;
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
    // ready; then every source, the graph file's first, HTTP last (it turns ready).
    let tasks = Default::default();
    let live = start_beside(Arc::clone(&graph), &tasks).await?;
    let (live, live_rx) = tokio::sync::watch::channel(live);
    let mut sources: Vec<Box<dyn Source>> = sources::from_graph(&graph)
        .into_iter()
        .chain(sources)
        .chain(std::iter::once(Box::new(http) as Box<dyn Source>))
        .collect();
    let mut running_sources = Vec::new();
    for source in &mut sources {
        let ctx = SourceContext {
            live: live_rx.clone(),
            phase: phase.clone(),
            drain,
            health: health.clone(),
        };
        let task = source
            .start(ctx)
            .await
            .map_err(|source_error| ServeError::Source {
                name: source.name(),
                source: source_error,
            })?;
        running_sources.push((source.name(), task));
    }
    drop(live_rx);
    let names: Vec<String> = graph.models().iter().map(|m| m.name.clone()).collect();
    tracing::info!(models = ?names, "ready");
    drop(graph);
    let running = Arc::new(Running {
        loader,
        live,
        sources,
        tasks,
        repository: Mutex::new(repository),
        allow_pip,
        python,
    });

    // Admin actions, one at a time: SIGHUP, `POST /admin/reload`, the repository's.
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
        if tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .is_err()
        {
            tracing::warn!("{what} did not finish within 10 s");
        }
    }
    // The last spans.
    let _ = tokio::task::spawn_blocking(crate::telemetry::shutdown).await;
    Ok(())
}

/// Builds the graph file (with a repository overlay) with the process's step kinds, keeping
/// what a build can take again from the builds before it (Python models whose spec and files
/// did not change, routers' learning).
#[derive(Clone)]
struct Loader {
    path: PathBuf,
    registry: Registry,
    shelf: crate::loading::Shelf,
}

impl Loader {
    /// The graph, or every problem (as `validate` prints them).
    fn load(
        &self,
        mode: BuildMode,
        overlay: &repo::State,
    ) -> Result<Graph, crate::diag::GraphErrors> {
        Graph::load_kept(&self.path, &self.registry, mode, overlay, &self.shelf)
    }
}

/// Tasks that run beside graphs (tracking writers, learning sharing), by what they are.
type Tasks = Mutex<Vec<(&'static str, tokio::task::JoinHandle<()>)>>;

/// A serving process's graph and what runs beside it, replaced whole by a reload.
struct Running {
    loader: Loader,
    live: tokio::sync::watch::Sender<Live>,
    /// The sources, told about each reload.
    sources: Vec<Box<dyn Source>>,
    /// Tracking writers and learning-sharing tasks of every graph served so far: each ends
    /// once its graph is let go, and shutdown waits for them.
    tasks: Tasks,
    /// The model repository's overlay the live graph was built with.
    repository: Mutex<repo::State>,
    /// Deployed Python models may install packages.
    allow_pip: bool,
    /// The interpreter deployed Python models run on.
    python: String,
}

/// Checks a graph built for a repository change must pass before it serves.
#[derive(Default)]
struct Checks {
    /// (model, version, configuration's tensors).
    declared: Vec<(String, String, repo::Declared)>,
    /// (model, version, OIP request): each must answer.
    smoke: Vec<(String, String, Vec<u8>)>,
}

/// What a graph needs beside it (its tracking stream, learning shared across processes),
/// started; the graph as sources serve it.
async fn start_beside(graph: Arc<Graph>, tasks: &Tasks) -> Result<Live, ServeError> {
    let (tracker, writer) = start_tracking(&graph)?;
    start_monitor(&graph);
    #[cfg(feature = "kafka")]
    let sharing = crate::kafka::learning::share(&graph)
        .await
        .map_err(|e| ServeError::Sharing(e.into()))?;
    #[cfg(not(feature = "kafka"))]
    let sharing: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    let mut tasks = tasks.lock().expect("not poisoned");
    tasks.extend(writer.map(|w| ("the tracking sink", w)));
    tasks.extend(sharing.into_iter().map(|t| ("sharing learning", t)));
    Ok(Live { graph, tracker })
}

impl Running {
    /// Re-reads the graph file (with `overlay`, or the repository's current one). If it is
    /// valid (and passes `checks`) the new graph serves new requests (requests running finish
    /// on the old one; models the two share are reused); if not, the old graph keeps serving
    /// and the errors are returned.
    async fn reload(
        &self,
        overlay: Option<repo::State>,
        checks: Checks,
    ) -> Result<serde_json::Value, String> {
        let old = Arc::clone(&self.live.borrow().graph);
        // Routers save their learning, so the new ones start from it.
        old.checkpoint();
        let started = std::time::Instant::now();
        let overlay = match overlay {
            Some(o) => o,
            None => repo::State::read(&self.loader.path).map_err(|e| e.to_string())?,
        };
        let built = {
            let (loader, overlay) = (self.loader.clone(), overlay.clone());
            tokio::task::spawn_blocking(move || loader.load(BuildMode::Load, &overlay)).await
        };
        let graph = match built {
            Ok(Ok(graph)) => Arc::new(graph),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(e) => return Err(format!("loading the graph panicked: {e}")),
        };
        check_new_models(&graph, &checks).await?;
        #[cfg(feature = "kafka")]
        crate::kafka::topics::for_reload(&graph).await?;
        let mut warnings = Vec::new();
        for source in graph.sources.changed(&old.sources) {
            warnings.push(format!(
                "`sources.{source}` changed: the {source} source keeps its settings until a restart"
            ));
        }
        if graph.telemetry != old.telemetry {
            warnings
                .push("`telemetry` changed: tracing keeps its settings until a restart".to_owned());
        }
        let models: Vec<String> = graph.models().iter().map(|m| m.name.clone()).collect();
        let live = start_beside(graph, &self.tasks)
            .await
            .map_err(|e| e.to_string())?;
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
    async fn act(&self, action: AdminAction) -> ReloadResult {
        let current = self.repository.lock().expect("not poisoned").clone();
        let (next, written, checks, what) = match action {
            AdminAction::Reload => {
                return self
                    .reload(None, Checks::default())
                    .await
                    .map_err(Error::unprocessable);
            }
            AdminAction::Load { model, body } => {
                let (path, allow_pip) = (self.loader.path.clone(), self.allow_pip);
                let python = self.python.clone();
                let state = current.clone();
                let name = model.clone();
                let plan = tokio::task::spawn_blocking(move || {
                    let host = repo::Host {
                        graph: &path,
                        python_version: repo::python_version(&python),
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
                if let Err(e) = next.save(&self.loader.path) {
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
                        .loader
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
                repo::discard(&written);
                Err(Error::bad_request(format!(
                    "{} refused, the server keeps serving what it served: {errors}",
                    what.replacen("loaded", "load of", 1)
                        .replacen("unloaded", "unload of", 1)
                )))
            }
        }
    }
}

/// A repository change's graph, before it serves: each new model's configured tensors match
/// the model, and each example request answers (a failure names the model and carries the
/// model's error, a Python traceback included).
async fn check_new_models(graph: &Arc<Graph>, checks: &Checks) -> Result<(), String> {
    for (name, version, declared) in &checks.declared {
        let info = graph.model(name, Some(version)).ok_or_else(|| {
            format!("`{name}` version `{version}` is not among the graph's models")
        })?;
        repo::check_declared(declared, info)
            .map_err(|e| format!("`{name}` version `{version}`: {e}"))?;
    }
    if checks.smoke.is_empty() {
        return Ok(());
    }
    let live = Live {
        graph: Arc::clone(graph),
        tracker: None,
    };
    let pipeline = crate::request::Pipeline::new(&live, "repository");
    for (name, version, example) in &checks.smoke {
        let request = crate::request::Request {
            model: Some(name),
            version: Some(version),
            explain: false,
            headers: &crate::request::NoHeaders,
            resume_after: None,
            encoding: crate::request::Encoding::Json,
            deadline: None,
            codec: None,
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

/// The HTTPS settings from a certificate chain and a key, both PEM (rustls, ring).
async fn tls_config(
    cert: &Path,
    key: &Path,
) -> Result<axum_server::tls_rustls::RustlsConfig, ServeError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
        .await
        .map_err(|source| ServeError::Tls {
            cert: cert.to_owned(),
            key: key.to_owned(),
            source,
        })
}

/// SIGHUP asks for a reload; its outcome is logged.
fn spawn_sighup(reload: tokio::sync::mpsc::Sender<AdminRequest>) {
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
            let request = AdminRequest {
                action: AdminAction::Reload,
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

/// Starts the in-process monitor (`monitor:` with `in_process`) once per process on a thread
/// of its own: following the graph's `file://` tracking stream from its end, or reading its
/// Kafka topic as the group `servegraph-monitor-GRAPH` (a reload does not restart it). Its state is served at `GET /v2/monitor`.
fn start_monitor(graph: &Graph) {
    static STARTED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    let Some((spec, base)) = &graph.monitor else {
        return;
    };
    if !spec.in_process || STARTED.get().is_some() {
        return;
    }
    let started = |what: &str| {
        let _ = STARTED.set(());
        tracing::info!(stream = %what, "monitor");
    };
    #[cfg(feature = "kafka")]
    let report = crate::kafka::monitor::open_report(spec.report.as_deref(), base);
    #[cfg(not(feature = "kafka"))]
    let report = crate::monitor::ReportSink::open(spec.report.as_deref(), base);
    let monitor = report.and_then(|r| {
        crate::monitor::Monitor::new(&graph.name, spec.clone(), base).map(|m| (m, r))
    });
    let (monitor, report) = match monitor {
        Ok(m) => m,
        Err(e) => return tracing::warn!(error = %e, "the monitor could not start"),
    };
    match &graph.tracking {
        Some((_, crate::tracking::Sink::File(path))) => {
            started(&path.display().to_string());
            crate::monitor::spawn_following(monitor, path.clone(), report);
        }
        #[cfg(feature = "kafka")]
        Some((_, crate::tracking::Sink::Kafka { brokers, topic })) => {
            started(topic);
            crate::kafka::monitor::spawn_reading(monitor, brokers.clone(), topic.clone(), report);
        }
        _ => tracing::warn!(
            "the monitor runs in-process on a `file://` or `kafka://` tracking stream: run `servegraph monitor run` beside it"
        ),
    }
}

/// Opens the graph's tracking sink and starts its writer.
fn start_tracking(
    graph: &Graph,
) -> Result<
    (
        Option<crate::tracking::Tracker>,
        Option<tokio::task::JoinHandle<()>>,
    ),
    ServeError,
> {
    use crate::tracking::{Sink, SinkError, Tracker, open_sink};
    let Some((spec, sink)) = &graph.tracking else {
        return Ok((None, None));
    };
    let opened = match sink {
        #[cfg(feature = "kafka")]
        Sink::Kafka { brokers, topic } => {
            crate::kafka::tracking_sink(brokers, topic).map_err(SinkError::from)
        }
        other => open_sink(other),
    }
    .map_err(|source| ServeError::Tracking {
        sink: spec.sink.clone(),
        source,
    })?;
    let (tracker, writer) = Tracker::new(spec, &graph.name, opened);
    tracing::info!(sink = %spec.sink, sample = spec.sample, "tracking");
    Ok((Some(tracker), Some(tokio::spawn(writer.run()))))
}

/// SIGTERM: not ready at once, keep serving for `grace`, then stop. SIGINT (Ctrl-C), or a
/// second signal during the grace, stops at once.
async fn shutdown_sequence(phase: tokio::sync::watch::Sender<Phase>, grace: Duration) {
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
