//! `servegraph`: serve, validate and invoke serving graphs, and benchmark them.

mod bench;
mod evaluate;
mod monitor;

mod alloc;

/// mimalloc: a request allocates and frees many small buffers on whichever worker thread
/// runs it; glibc's malloc spent ~17% of a one-core server's time on them (perf, see
/// docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: alloc::Mimalloc = alloc::Mimalloc;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use servegraph_engine::server::{GrpcListen, ServerConfig};
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
        /// Serve a live dashboard at `/dashboard`: the graph drawn, request rates and
        /// latencies per step, experiments, drift. Behind the admin token when one is set
        /// (open it as `/dashboard?token=<token>`).
        #[arg(long)]
        dashboard: bool,
    },
    /// Check a graph file, loading its models; print every error with its line and column.
    Validate {
        /// The graph YAML file.
        graph: PathBuf,
        /// One `file:line:col: message` line per error, without source snippets.
        #[arg(long)]
        short: bool,
        /// Skip the checks that need the Kafka brokers (that each topic the graph uses exists,
        /// or that `create_topics` can create it): the rest is checked as always. Without it,
        /// brokers that cannot be reached are an error naming them.
        #[arg(long)]
        offline: bool,
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
    /// Drift and performance monitoring of a tracking stream, and reference profiles.
    #[command(subcommand)]
    Monitor(monitor::MonitorCommand),
    /// Off-policy evaluation: what candidate policies would have earned on a router's logged
    /// decisions (IPS, SNIPS, DR with intervals), a CI gate (`--require`), DSJSON export.
    Evaluate(evaluate::EvaluateArgs),
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
            dashboard,
        } => admin_token_from(admin_token, admin_token_file).and_then(|admin_token| {
            serve(ServerConfig {
                graph,
                registry: registry(),
                listen,
                max_body_bytes,
                drain: Duration::from_secs(shutdown_timeout),
                grace: Duration::try_from_secs_f64(drain_grace).unwrap_or_default(),
                admin_token,
                tls: tls_cert.zip(tls_key),
                allow_pip,
                grpc: GrpcListen {
                    listen: grpc_listen,
                    on_http: grpc_on_http,
                    max_message_bytes: grpc_max_message_bytes.unwrap_or(max_body_bytes),
                },
                python: servegraph_python(),
                dashboard,
            })
        }),
        Command::Validate {
            graph,
            short,
            offline,
        } => return validate(&graph, short, offline),
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
        Command::Monitor(cmd) => monitor::run(cmd),
        Command::Evaluate(args) => {
            servegraph_steps::evaluate::register();
            evaluate::run(args)
        }
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
    Graph::load_with(graph, &registry(), mode, &overlay).map_err(|e| anyhow::anyhow!("{e}"))
}

/// A spinner on stderr while `what` runs (drawn only when stderr is a terminal).
fn with_spinner<T>(message: String, what: impl FnOnce() -> T) -> T {
    let spinner = indicatif::ProgressBar::new_spinner().with_message(message);
    spinner.enable_steady_tick(Duration::from_millis(100));
    let out = what();
    spinner.finish_and_clear();
    out
}

/// The Kafka topics `graph` uses, checked on their brokers (the file's structure is enough to
/// list them): a diagnostic per broker that does not answer and per topic missing (that
/// `create_topics` would not create), and what `serve` would create.
fn check_kafka(
    graph: &Path,
) -> (
    Vec<servegraph_engine::Diagnostic>,
    Vec<servegraph_engine::kafka::topics::Topic>,
) {
    use servegraph_engine::kafka::topics::{self, Create, Problem};
    // As far as the structure builds: a missing topic is reported with the file's other errors.
    let Ok(overlay) = servegraph_engine::repository::State::read(graph) else {
        return Default::default();
    };
    let uses = Graph::kafka_topics_in(graph, &registry(), &overlay);
    if uses.topics.is_empty() {
        return Default::default();
    }
    let checked = match runtime() {
        Ok(rt) => with_spinner("checking the Kafka topics on their brokers".into(), || {
            rt.block_on(topics::check(
                &uses.topics,
                uses.create_topics,
                Create::DryRun,
                topics::TIMEOUT,
            ))
        }),
        Err(e) => {
            return (
                vec![servegraph_engine::Diagnostic::new(format!("{e:#}"))],
                Vec::new(),
            );
        }
    };
    let diagnostics = checked
        .problems
        .iter()
        .map(|p| {
            let mut d = servegraph_engine::Diagnostic::new(p.to_string());
            if let Some(span) = p.span() {
                d = d.at(span);
            }
            if matches!(p, Problem::Unreachable { .. }) {
                d = d.help("`servegraph validate --offline` checks the rest without the brokers");
            }
            d
        })
        .collect();
    (diagnostics, checked.created)
}

fn validate(graph: &Path, short: bool, offline: bool) -> ExitCode {
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
    // The Kafka topics, with the other errors in one report.
    let (kafka, created) = if offline {
        Default::default()
    } else {
        check_kafka(graph)
    };
    let loaded = match loaded {
        Ok(g) if kafka.is_empty() => Ok(g),
        Ok(_) => Err(servegraph_engine::GraphErrors::new(
            graph,
            &std::fs::read_to_string(graph).unwrap_or_default(),
            kafka,
        )),
        Err(mut errors) if !kafka.is_empty() => {
            errors.diagnostics.extend(kafka);
            Err(servegraph_engine::GraphErrors::new(
                graph,
                &std::fs::read_to_string(graph).unwrap_or_default(),
                errors.diagnostics,
            ))
        }
        Err(errors) => Err(errors),
    };
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
            if offline && !g.kafka_topics.is_empty() {
                println!("  Kafka topics not checked (--offline)");
            }
            if !created.is_empty() {
                println!(
                    "  `serve` creates the Kafka topics {} (`create_topics`)",
                    servegraph_engine::kafka::topics::names(&created)
                );
            }
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

/// `servegraph serve`: the engine's server (`servegraph_engine::server`). Its errors say
/// their causes in their own text.
fn serve(config: ServerConfig) -> anyhow::Result<()> {
    servegraph_engine::server::serve(config).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The interpreter deployed Python models run on (`SERVEGRAPH_PYTHON`, else `python3`).
fn servegraph_python() -> String {
    std::env::var("SERVEGRAPH_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".to_owned())
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
        codec: None,
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
