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
    init_logging(match cli.command {
        Command::Serve { .. } => "info,ort=warn",
        _ => "warn",
    });
    let result = match cli.command {
        Command::Serve {
            graph,
            listen,
            max_body_bytes,
            shutdown_timeout,
        } => serve(
            &graph,
            listen,
            max_body_bytes,
            Duration::from_secs(shutdown_timeout),
        ),
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

fn init_logging(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
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

fn validate(graph: &Path, short: bool) -> ExitCode {
    match Graph::load(graph, &registry(), BuildMode::Load) {
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

fn serve(
    graph_path: &Path,
    listen: SocketAddr,
    max_body_bytes: usize,
    drain: Duration,
) -> anyhow::Result<()> {
    // Structure first, with no I/O beyond file checks: a broken file never starts a server.
    load(graph_path, BuildMode::Structural)?;
    let rt = runtime()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        let state = AppState::new(HttpConfig { max_body_bytes });
        // Listen at once (live, not ready); load models off the async workers.
        println!("servegraph listening on http://{addr}");
        tracing::info!(%addr, graph = %graph_path.display(), "listening; loading models");
        let loading = {
            let path = graph_path.to_owned();
            tokio::task::spawn_blocking(move || load(&path, BuildMode::Load))
        };
        let app = servegraph_engine::http::router(Arc::clone(&state));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let server = axum::serve(listener, app).with_graceful_shutdown({
            let mut stop_rx = stop_rx.clone();
            async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
            }
        });
        let server = tokio::spawn(async move { server.await });
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
        let (tracker, writer) = start_tracking(&graph)?;
        let kafka = match graph.kafka.clone() {
            None => None,
            Some(spec) => Some(
                servegraph_engine::kafka::start(
                    spec,
                    Arc::clone(&graph),
                    tracker.clone(),
                    stop_rx.clone(),
                    drain,
                )
                .map_err(|e| anyhow::anyhow!("{e}"))?,
            ),
        };
        // Learning that crosses processes: positioned before the server says it is ready.
        let sharing = servegraph_engine::kafka::learning::share(&graph)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let feedback = match &graph.kafka {
            None => None,
            Some(spec) => servegraph_engine::kafka::learning::feedback(
                spec,
                Arc::clone(&graph),
                stop_rx.clone(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        };
        let names: Vec<String> = graph.models().iter().map(|m| m.name.clone()).collect();
        tracing::info!(models = ?names, "ready");
        state.serve(Arc::clone(&graph), tracker);
        drop(graph);

        let mut stop_rx = stop_rx;
        let _ = stop_rx.wait_for(|stop| *stop).await;
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
        // Then the tracking stream writes what it holds, and routers that share their learning
        // publish what they learnt last (their tasks end when the graph is let go).
        state.unload();
        for task in sharing {
            if tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .is_err()
            {
                tracing::warn!("sharing learning did not finish within 10 s");
            }
        }
        if let Some(writer) = writer
            && tokio::time::timeout(Duration::from_secs(10), writer)
                .await
                .is_err()
        {
            tracing::warn!("the tracking sink did not take the last events within 10 s");
        }
        anyhow::Ok(())
    })
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
    let graph = load(graph_path, BuildMode::Load)?;
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
