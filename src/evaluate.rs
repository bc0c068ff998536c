//! `servegraph evaluate`: off-policy evaluation of a router's logged decisions (the tracking
//! stream, a JSONL file or a Kafka topic) for candidate policies, before one serves; and the
//! decisions exported as Vowpal Wabbit DSJSON. The estimators are in
//! `servegraph_engine::evaluate`.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::Value;
use servegraph_engine::evaluate::{self, Evaluation, Settings, Unrewarded};

#[derive(Args)]
pub struct EvaluateArgs {
    /// The tracking stream: a JSONL file of events (decisions and feedback).
    #[arg(long, required_unless_present = "kafka", conflicts_with = "kafka")]
    input: Option<PathBuf>,
    /// Or a Kafka topic, `HOST:PORT/TOPIC`, read to its end as a consumer group of its own.
    #[arg(long)]
    kafka: Option<String>,
    /// The consumer group (default `servegraph-evaluate-ROUTER-<pid>`: a fresh one, reading
    /// from the start; name one to read only what came since its last run).
    #[arg(long, requires = "kafka")]
    group: Option<String>,
    /// The router whose decisions are evaluated (`decisions[].router`).
    #[arg(long)]
    router: String,
    /// A candidate policy (repeatable): `always:ROUTE`, `uniform`, `weights:ROUTE=W,...`,
    /// `logging`, `greedy-ridge[:EPSILON]`, or a graph file `PATH.yaml[#ROUTER]`. The logging
    /// policy is always reported too.
    #[arg(long = "candidate")]
    candidates: Vec<String>,
    /// IPS clipping: importance weights above λ count as λ (biased down, less variance).
    #[arg(long, value_name = "λ")]
    clip: Option<f64>,
    /// How long a decision waits for its reward, by the events' `when` (`30s`, `10m`, `1h`).
    #[arg(long, default_value = "1h")]
    reward_wait: String,
    /// The reward of a decision none came for within `--reward-wait` (default: skip it).
    #[arg(long)]
    default_reward: Option<f64>,
    /// Decisions waiting for their reward at most (the memory bound); past it the oldest is
    /// closed early and counted.
    #[arg(long, default_value_t = 1_000_000)]
    max_pending: usize,
    /// Decisions before this time train the learning candidates but are not scored (RFC 3339
    /// or seconds since the epoch).
    #[arg(long)]
    split_at: Option<String>,
    /// Only decisions at or after this time.
    #[arg(long)]
    since: Option<String>,
    /// Only decisions before this time.
    #[arg(long)]
    until: Option<String>,
    /// The sample size the confidence sequence is tightest at.
    #[arg(long, default_value_t = 10_000)]
    planned_n: u64,
    /// 1 − the intervals' coverage for the confidence sequence.
    #[arg(long, default_value_t = 0.05)]
    alpha: f64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Draw the estimates with their intervals to this SVG file.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Export the rewarded decisions: `--export dsjson FILE` (Vowpal Wabbit's DSJSON).
    #[arg(long, num_args = 2, value_names = ["FORMAT", "FILE"])]
    export: Vec<String>,
    /// A gate: `CANDIDATE > logging` exits non-zero unless the lower end of the DR
    /// difference's confidence sequence is above 0 (repeatable).
    #[arg(long)]
    require: Vec<String>,
}

pub fn run(args: EvaluateArgs) -> anyhow::Result<()> {
    let reward_wait = evaluate::parse_duration_arg(&args.reward_wait)
        .map_err(|e| anyhow::anyhow!("--reward-wait: {e}"))?;
    let time = |s: &Option<String>, flag: &str| -> anyhow::Result<Option<f64>> {
        s.as_deref()
            .map(|t| evaluate::parse_time_arg(t).map_err(|e| anyhow::anyhow!("{flag}: {e}")))
            .transpose()
    };
    if let Some(c) = args.clip
        && (c.is_nan() || c <= 0.0)
    {
        bail!("--clip {c}: λ must be above 0");
    }
    if !(args.alpha > 0.0 && args.alpha < 1.0) || args.planned_n == 0 {
        bail!("--alpha must be in (0, 1) and --planned-n at least 1");
    }
    let requires: Vec<String> = args
        .require
        .iter()
        .map(|r| {
            let (cand, base) = r.split_once('>').ok_or_else(|| {
                anyhow::anyhow!("--require `{r}`: expected `CANDIDATE > logging`")
            })?;
            if base.trim() != "logging" {
                bail!("--require `{r}`: only `CANDIDATE > logging` is supported");
            }
            Ok(cand.trim().to_owned())
        })
        .collect::<anyhow::Result<_>>()?;
    let mut specs: Vec<String> = Vec::new();
    for c in args.candidates.iter().chain(&requires) {
        if !specs.contains(c) && c != "logging" {
            specs.push(c.clone());
        }
    }
    specs.push("logging".into());
    let candidates = specs
        .iter()
        .map(|s| evaluate::parse_candidate(s).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let export: Option<Box<dyn std::io::Write>> = match args.export.as_slice() {
        [] => None,
        [format, file] if format == "dsjson" => Some(Box::new(std::io::BufWriter::new(
            std::fs::File::create(file).with_context(|| format!("creating {file}"))?,
        ))),
        [format, _] => bail!("--export `{format}`: the one format is `dsjson`"),
        _ => bail!("--export FORMAT FILE"),
    };
    let settings = Settings {
        router: args.router.clone(),
        clip: args.clip,
        reward_wait,
        unrewarded: args
            .default_reward
            .map_or(Unrewarded::Skip, Unrewarded::Default),
        max_pending: args.max_pending.max(1),
        split_at: time(&args.split_at, "--split-at")?,
        since: time(&args.since, "--since")?,
        until: time(&args.until, "--until")?,
        planned_n: args.planned_n,
        alpha: args.alpha,
    };
    let mut eval = Evaluation::new(settings, candidates, export);
    match (&args.input, &args.kafka) {
        (Some(path), _) => {
            let file =
                std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
            let mut reader = std::io::BufReader::with_capacity(1 << 16, file);
            let mut buf = Vec::with_capacity(4096);
            let mut n = 0u64;
            loop {
                buf.clear();
                let read = reader
                    .read_until(b'\n', &mut buf)
                    .with_context(|| format!("reading {}", path.display()))?;
                if read == 0 {
                    break;
                }
                n += 1;
                eval.line(n, &buf)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            }
        }
        (None, Some(url)) => {
            let Some((brokers, topic)) = url.rsplit_once('/') else {
                bail!("`--kafka {url}`: expected HOST:PORT/TOPIC");
            };
            let group = args.group.clone().unwrap_or_else(|| {
                format!("servegraph-evaluate-{}-{}", args.router, std::process::id())
            });
            let mut n = 0u64;
            servegraph_engine::kafka::lines::read_to_end(
                brokers,
                topic,
                &group,
                Duration::from_secs(30),
                |line| {
                    n += 1;
                    eval.line(n, line)
                        .map_err(|e| format!("{topic} (line {n} read): {e}"))
                },
            )
            .map_err(anyhow::Error::msg)?;
        }
        (None, None) => bail!("`--input FILE` or `--kafka HOST:PORT/TOPIC`"),
    }
    eval.finish().map_err(anyhow::Error::msg)?;
    let report = eval.report().map_err(anyhow::Error::msg)?;
    if let Some(path) = &args.plot {
        std::fs::write(path, evaluate::svg::plot(&report))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    for w in report["warnings"].as_array().into_iter().flatten() {
        eprintln!("WARNING: {}", w.as_str().unwrap_or_default());
    }
    let mut failed = Vec::new();
    for cand in &requires {
        let row = report["candidates"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["name"] == cand.as_str());
        let lower = row.and_then(|r| r["vs_logging"]["dr"]["cs"][0].as_f64());
        match (row, lower) {
            (Some(_), Some(lo)) if lo > 0.0 => {
                eprintln!("require `{cand} > logging`: met (DR difference's lower bound {lo:+.4})")
            }
            (Some(_), Some(lo)) => failed.push(format!(
                "`{cand} > logging`: the DR difference's lower bound is {lo:+.4}, not above 0"
            )),
            (Some(r), None) => failed.push(format!(
                "`{cand} > logging`: no estimate ({})",
                r["reason"].as_str().unwrap_or("refused")
            )),
            (None, _) => failed.push(format!("`{cand} > logging`: no such candidate")),
        }
    }
    if !failed.is_empty() {
        bail!("requirement not met: {}", failed.join("; "));
    }
    Ok(())
}

fn f(v: &Value) -> String {
    v.as_f64().map_or("—".into(), |x| format!("{x:.4}"))
}

fn pair(v: &Value) -> String {
    match (v[0].as_f64(), v[1].as_f64()) {
        (Some(a), Some(b)) => format!("[{a:.4}, {b:.4}]"),
        _ => "—".into(),
    }
}

/// The report as a table: one row per candidate and estimator.
fn table(r: &Value) -> String {
    use std::fmt::Write;
    let d = &r["decisions"];
    let mut s = String::new();
    let _ = writeln!(
        s,
        "router `{}`: {} decisions, {} rewarded ({:.1} % of closed), {} defaulted, {} skipped unrewarded, {} train, {} scored",
        r["router"].as_str().unwrap_or(""),
        d["decisions"],
        d["rewarded"],
        100.0 * d["rewarded_share"].as_f64().unwrap_or(0.0),
        d["defaulted"],
        d["unrewarded_skipped"],
        d["train"],
        d["scored"]
    );
    let _ = writeln!(
        s,
        "reward model (DR): {}",
        r["reward_model"].as_str().unwrap_or("")
    );
    let width = r["candidates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0)
        .max(9);
    let _ = writeln!(
        s,
        "{:<width$} {:<6} {:>8}  {:<20} {:<20} {:>8}  {:<20} {:>8} {:>8} {:>7}",
        "candidate",
        "est.",
        "value",
        "95% CI",
        "95% CS",
        "− logging",
        "95% CI (diff)",
        "ESS",
        "max w",
        "unsupp."
    );
    for c in r["candidates"].as_array().into_iter().flatten() {
        let name = c["name"].as_str().unwrap_or("");
        if c["status"] != "ok" {
            let _ = writeln!(
                s,
                "{name:<width$} REFUSED: {}",
                c["reason"].as_str().unwrap_or("")
            );
            continue;
        }
        for (i, e) in ["ips", "snips", "dr"].iter().enumerate() {
            let est = &c["estimates"][e];
            let diff = &c["vs_logging"][e];
            let (first, ess, maxw, unsup) = if i == 0 {
                (
                    name.to_owned(),
                    format!("{:.0}", c["ess"].as_f64().unwrap_or(0.0)),
                    format!("{:.2}", c["max_weight"].as_f64().unwrap_or(0.0)),
                    format!(
                        "{:.1}%",
                        100.0 * c["unsupported_share"].as_f64().unwrap_or(0.0)
                    ),
                )
            } else {
                Default::default()
            };
            let _ = writeln!(
                s,
                "{first:<width$} {:<6} {:>8}  {:<20} {:<20} {:>8}  {:<20} {ess:>8} {maxw:>8} {unsup:>7}",
                e.to_uppercase(),
                f(&est["value"]),
                pair(&est["ci95"]),
                pair(&est["cs"]),
                if diff.is_null() {
                    String::new()
                } else {
                    f(&diff["value"])
                },
                if diff.is_null() {
                    String::new()
                } else {
                    pair(&diff["ci95"])
                },
            );
        }
    }
    s.lines().map(|l| format!("{}\n", l.trim_end())).collect()
}
