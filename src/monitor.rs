//! `servegraph monitor`: drift and performance monitoring of a tracking stream, reference
//! profiles, the statistics on two samples, and the monitor's cost per event.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use clap::Subcommand;
use servegraph_engine::monitor::{self, Follow, Monitor, MonitorSpec, profile};

#[derive(Subcommand)]
pub enum MonitorCommand {
    /// Monitor a tracking stream (a JSONL file; `--follow` keeps reading as it grows).
    Run {
        /// A graph file with `monitor:`, or a monitor file (`name` and `monitor`).
        spec: PathBuf,
        /// The tracking stream: a JSONL file of events.
        #[arg(long, required_unless_present = "kafka", conflicts_with = "kafka")]
        events: Option<PathBuf>,
        /// Or a Kafka topic: `HOST:PORT/TOPIC`, read as its own consumer group.
        #[arg(long)]
        kafka: Option<String>,
        /// The consumer group (default `servegraph-monitor-GRAPH`).
        #[arg(long, requires = "kafka")]
        group: Option<String>,
        /// Kafka: stop once no event came for this many seconds (default: run until stopped).
        #[arg(long, requires = "kafka")]
        idle: Option<f64>,
        /// Keep reading as the file grows (until interrupted).
        #[arg(long)]
        follow: bool,
        /// Where each window's report goes (`file://PATH` or `stdout`); default: the spec's
        /// `report`.
        #[arg(long)]
        report: Option<String>,
        /// Write the monitor's final state (what `GET /v2/monitor` lists) to this file.
        #[arg(long)]
        state: Option<PathBuf>,
    },
    /// Build a reference profile from a dataset (CSV with a header, or JSONL of OIP requests
    /// or tracking events), or from a stream's first N events.
    Profile {
        /// A graph file with `monitor:`, or a monitor file: the columns to profile.
        spec: PathBuf,
        /// The dataset: `.csv` (columns by `column`, else `name`) or `.jsonl`.
        #[arg(long)]
        dataset: PathBuf,
        /// Only the first N rows.
        #[arg(long)]
        first: Option<u64>,
        /// The profile file to write (an existing one with the same id gets the next version).
        #[arg(long)]
        out: PathBuf,
        /// The profile's id (default: the graph's name and the dataset's file name).
        #[arg(long)]
        id: Option<String>,
        /// CSV: the true label's column, for CBPE's calibration (with `--probability-column`).
        #[arg(long, requires = "probability_column")]
        label_column: Option<String>,
        /// CSV: the positive class's probability column.
        #[arg(long, requires = "label_column")]
        probability_column: Option<String>,
        /// The positive class (for `--label-column`).
        #[arg(long, default_value = "1")]
        positive: String,
    },
    /// The statistics of one sample against another (one value per line), as a window's.
    Stats {
        #[arg(long)]
        reference: PathBuf,
        #[arg(long)]
        current: PathBuf,
        /// `numerical` or `categorical`.
        #[arg(long, default_value = "numerical")]
        r#type: String,
    },
    /// The monitor's CPU time per event on a generated stream (4 numerical features and a
    /// class output; a 0.3σ shift in one feature half-way).
    Bench {
        #[arg(long, default_value_t = 200_000)]
        events: usize,
        #[arg(long, default_value_t = 1000)]
        window: usize,
    },
}

pub fn run(cmd: MonitorCommand) -> anyhow::Result<()> {
    match cmd {
        MonitorCommand::Run {
            spec,
            events,
            kafka,
            group,
            idle,
            follow,
            report,
            state,
        } => {
            let source = match (events, kafka) {
                (Some(file), _) => Source::File(file, follow),
                (None, Some(k)) => Source::Kafka(k, group, idle),
                (None, None) => bail!("`--events FILE` or `--kafka HOST:PORT/TOPIC`"),
            };
            run_monitor(&spec, source, report, state.as_deref())
        }
        MonitorCommand::Profile {
            spec,
            dataset,
            first,
            out,
            id,
            label_column,
            probability_column,
            positive,
        } => build_profile(
            &spec,
            &dataset,
            first,
            &out,
            id,
            label_column.zip(probability_column),
            &positive,
        ),
        MonitorCommand::Stats {
            reference,
            current,
            r#type,
        } => stats(&reference, &current, &r#type),
        MonitorCommand::Bench { events, window } => bench(events, window),
    }
}

/// The spec of a graph or monitor file, its errors printed as `validate` prints them.
fn read_spec(path: &Path) -> anyhow::Result<(String, MonitorSpec, PathBuf)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new(".")).to_owned();
    match monitor::load_spec(&text) {
        Ok((name, spec)) => Ok((name, spec, base)),
        Err(diagnostics) => bail!(
            "{}",
            servegraph_engine::GraphErrors::new(path, &text, diagnostics)
        ),
    }
}

/// Where `monitor run` reads events.
enum Source {
    File(PathBuf, bool),
    Kafka(String, Option<String>, Option<f64>),
}

fn run_monitor(
    spec_path: &Path,
    source: Source,
    report: Option<String>,
    state: Option<&Path>,
) -> anyhow::Result<()> {
    let (name, spec, base) = read_spec(spec_path)?;
    let mut sink = servegraph_engine::kafka::monitor::open_report(
        report.as_deref().or(spec.report.as_deref()),
        &base,
    )
    .map_err(anyhow::Error::msg)?;
    let m = Monitor::new(&name, spec, &base).map_err(anyhow::Error::msg)?;
    let shared = Arc::new(Mutex::new(m));
    monitor::publish(&shared);
    let stop = AtomicBool::new(false);
    let read = match source {
        Source::File(events, follow) => {
            let how = Follow {
                follow,
                from_end: false,
            };
            monitor::read_file(&shared, &events, how, &mut sink, &stop)
        }
        Source::Kafka(url, group, idle) => {
            let Some((brokers, topic)) = url
                .split_once('/')
                .filter(|(b, t)| !b.is_empty() && !t.is_empty())
            else {
                bail!("`--kafka {url}`: expected HOST:PORT/TOPIC");
            };
            let group = group.unwrap_or_else(|| format!("servegraph-monitor-{name}"));
            let idle = idle.map(|s| std::time::Duration::from_secs_f64(s.max(0.0)));
            servegraph_engine::kafka::monitor::read_topic(
                &shared, brokers, topic, &group, &mut sink, &stop, idle,
            )
        }
    }
    .map_err(anyhow::Error::msg)?;
    if let Some(path) = state {
        let value = shared.lock().expect("not poisoned").state();
        std::fs::write(path, serde_json::to_vec_pretty(&value)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    eprintln!(
        "{} lines ({} not events), {} windows",
        read.lines, read.skipped, read.windows
    );
    Ok(())
}

fn build_profile(
    spec_path: &Path,
    dataset: &Path,
    first: Option<u64>,
    out: &Path,
    id: Option<String>,
    labelled: Option<(String, String)>,
    positive: &str,
) -> anyhow::Result<()> {
    use std::io::BufRead;
    let (name, spec, _) = read_spec(spec_path)?;
    let mut b = profile::Builder::new(&spec.features, &spec.outputs);
    let file =
        std::fs::File::open(dataset).with_context(|| format!("reading {}", dataset.display()))?;
    let mut lines = std::io::BufReader::new(file).lines();
    let limit = first.unwrap_or(u64::MAX);
    let columns: Vec<_> = spec
        .features
        .iter()
        .map(|c| (c, false))
        .chain(spec.outputs.iter().map(|c| (c, true)))
        .collect();
    if dataset.extension().is_some_and(|e| e == "csv") {
        let header = profile::csv_fields(&lines.next().context("the CSV file is empty")??);
        let find = |col: &str| {
            header.iter().position(|h| h == col).with_context(|| {
                format!(
                    "{}: no column `{col}` (it has {})",
                    dataset.display(),
                    header.join(", ")
                )
            })
        };
        let at: Vec<usize> = columns
            .iter()
            .map(|(c, _)| find(c.column.as_deref().unwrap_or(&c.name)))
            .collect::<anyhow::Result<_>>()?;
        let label_at = labelled
            .as_ref()
            .map(|(l, p)| Ok::<_, anyhow::Error>((find(l)?, find(p)?)))
            .transpose()?;
        for (n, line) in lines.enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            if b.rows() >= limit {
                break;
            }
            let fields = profile::csv_fields(&line);
            b.add_row();
            for (i, &k) in at.iter().enumerate() {
                let v = fields.get(k).map(String::as_str).filter(|v| !v.is_empty());
                b.add_text(i, v);
            }
            if let Some((l, p)) = label_at {
                let prob = fields.get(p).and_then(|v| v.parse::<f64>().ok());
                let label = fields
                    .get(l)
                    .with_context(|| format!("row {}: no label", n + 2))?;
                if let Some(prob) = prob {
                    b.add_labelled(prob, label == positive);
                }
            }
        }
    } else {
        for line in lines {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            if b.rows() >= limit {
                break;
            }
            let Ok(event) = serde_json::from_str::<monitor::Line>(&line) else {
                continue;
            };
            let value: Option<serde_json::Value> = columns
                .iter()
                .any(|(c, _)| c.field.is_some())
                .then(|| serde_json::from_str(&line).ok())
                .flatten();
            let rows = columns
                .iter()
                .filter_map(|(c, out)| {
                    let ts = if *out {
                        event.response_tensors()
                    } else {
                        event.request_tensors()
                    };
                    ts.iter()
                        .find(|t| Some(t.name.as_ref()) == c.tensor.as_deref())
                        .map(|t| t.rows().0)
                })
                .max()
                .unwrap_or(1);
            for r in 0..rows {
                b.add_row();
                for (i, (c, out)) in columns.iter().enumerate() {
                    match monitor_value(c, *out, &event, value.as_ref(), r) {
                        Some(e) if c.kind == monitor::spec::ColumnType::Categorical => {
                            b.add_text(i, e.category().as_deref())
                        }
                        Some(e) => b.add_number(i, Some(e.number().unwrap_or(f64::NAN))),
                        None => b.add_number(i, None),
                    }
                }
            }
        }
    }
    let id = id.unwrap_or_else(|| {
        format!(
            "{name}-{}",
            dataset.file_stem().unwrap_or_default().to_string_lossy()
        )
    });
    let mut p = b
        .build(id, dataset.display().to_string())
        .map_err(anyhow::Error::msg)?;
    p.write(out).map_err(anyhow::Error::msg)?;
    println!(
        "{}: profile `{}` version {} of {} rows, {} columns",
        out.display(),
        p.id,
        p.version,
        p.events,
        p.columns.len()
    );
    Ok(())
}

fn monitor_value<'l>(
    c: &monitor::spec::ColumnSpec,
    output: bool,
    line: &'l monitor::Line,
    value: Option<&'l serde_json::Value>,
    row: usize,
) -> Option<monitor::line::Elem<'l>> {
    monitor::column_value(c, output, line, value, row)
}

fn stats(reference: &Path, current: &Path, kind: &str) -> anyhow::Result<()> {
    use monitor::spec::{ColumnSpec, ColumnType};
    let column_type = match kind {
        "numerical" => ColumnType::Numerical,
        "categorical" => ColumnType::Categorical,
        other => bail!("`--type {other}`: expected numerical or categorical"),
    };
    let read = |p: &Path| -> anyhow::Result<Vec<String>> {
        Ok(std::fs::read_to_string(p)
            .with_context(|| format!("reading {}", p.display()))?
            .lines()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect())
    };
    let spec = ColumnSpec {
        name: "x".into(),
        tensor: Some("x".into()),
        index: 0,
        field: None,
        column: None,
        kind: column_type,
        max_categories: 1000,
    };
    let mut b = profile::Builder::new(std::slice::from_ref(&spec), &[]);
    for v in read(reference)? {
        b.add_row();
        b.add_text(0, Some(&v));
    }
    let p = b
        .build("stats".into(), "stats".into())
        .map_err(anyhow::Error::msg)?;
    let reference = p.columns[0].clone();
    let current = read(current)?;
    let mut counts = vec![0u64; reference.fractions.len()];
    let mut values = Vec::new();
    for v in &current {
        match column_type {
            ColumnType::Numerical => {
                let x: f64 = v
                    .parse()
                    .with_context(|| format!("`{v}` is not a number"))?;
                counts[monitor::stats::bin_of(&reference.edges, x)] += 1;
                values.push(x);
            }
            ColumnType::Categorical => {
                let at = reference
                    .categories
                    .iter()
                    .position(|c| c == v)
                    .unwrap_or(counts.len() - 1);
                counts[at] += 1;
            }
        }
    }
    values.sort_by(f64::total_cmp);
    let s = monitor::window::compute(&reference, &counts, &values);
    let mut out = s.json();
    out["edges"] = serde_json::json!(reference.edges);
    out["reference_fractions"] = serde_json::json!(reference.fractions);
    out["current_fractions"] = serde_json::json!(monitor::stats::fractions(&counts));
    if column_type == ColumnType::Numerical {
        out["wasserstein_raw"] =
            serde_json::json!(monitor::stats::wasserstein(&reference.sample, &values));
        out["reference_std"] = serde_json::json!(reference.std);
    }
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

/// A small deterministic generator (xorshift64*) and normal draws (Box–Muller).
struct Gen(u64);

impl Gen {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// One tracking event with 4 features (the first shifted by `shift`) and a class.
fn event(g: &mut Gen, i: usize, shift: f64) -> String {
    // FP32 values, as the tracking stream writes an FP32 tensor's (shortest round-trip text).
    let x: Vec<f32> = (0..4)
        .map(|k| (g.normal() + if k == 0 { shift } else { 0.0 }) as f32)
        .collect();
    let class = usize::from(x[0] > 0.0) + usize::from(x[1] > 1.0);
    format!(
        r#"{{"id":"r{i}","when":"2026-12-01T00:{:02}:{:02}.{:06}Z","graph":"bench","model":"bench","op":"infer","request":[{{"name":"input","datatype":"FP32","shape":[1,4],"data":[{},{},{},{}]}}],"resp":[{{"name":"label","datatype":"INT64","shape":[1],"data":[{class}]}},{{"name":"probabilities","datatype":"FP32","shape":[1,3],"data":[0.2,0.3,0.5]}}],"microsec":100,"step_microsec":{{"m":90}},"labels":{{}}}}"#,
        (i / 60_000) % 60,
        (i / 1000) % 60,
        i % 1000,
        x[0],
        x[1],
        x[2],
        x[3]
    )
}

fn bench_spec(window: usize, reference: &Path) -> MonitorSpec {
    let yaml = format!(
        "name: bench\nmonitor:\n  reference: {{profile: {}}}\n  features:\n{}  outputs:\n    - {{tensor: label, name: class, type: categorical}}\n  window: {{events: {window}, min_events: {}}}\n",
        reference.display(),
        (0..4)
            .map(|k| format!("    - {{tensor: input, index: {k}, name: f{k}, type: numerical}}\n"))
            .collect::<String>(),
        window / 2
    );
    monitor::load_spec(&yaml).expect("the bench's spec").1
}

fn bench(events: usize, window: usize) -> anyhow::Result<()> {
    let dir = tempdir()?;
    let reference = dir.join("reference.json");
    let mut g = Gen(7);
    let spec = bench_spec(window, &reference);
    // The reference: 10,000 unshifted events.
    let mut b = profile::Builder::new(&spec.features, &spec.outputs);
    for i in 0..10_000 {
        let line = event(&mut g, i, 0.0);
        let e: monitor::Line = serde_json::from_str(&line)?;
        b.add_row();
        for (k, c) in spec.features.iter().chain(&spec.outputs).enumerate() {
            let v = monitor::column_value(c, k == 4, &e, None, 0);
            match v {
                Some(v) if k == 4 => b.add_text(k, v.category().as_deref()),
                v => b.add_number(k, v.and_then(|v| v.number())),
            }
        }
    }
    b.build("bench".into(), "generated".into())
        .map_err(anyhow::Error::msg)?
        .write(&reference)
        .map_err(anyhow::Error::msg)?;
    let lines: Vec<String> = (0..events)
        .map(|i| event(&mut g, i, if i >= events / 2 { 0.3 } else { 0.0 }))
        .collect();
    let mut m = Monitor::new("bench", spec, &dir).map_err(anyhow::Error::msg)?;
    let cpu = || rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    let ns = |t: rustix::time::Timespec| t.tv_sec as f64 * 1e9 + t.tv_nsec as f64;
    // The parse alone, for the split.
    let start = cpu();
    for line in &lines {
        std::hint::black_box(serde_json::from_str::<monitor::Line>(std::str::from_utf8(
            line.as_bytes(),
        )?)?);
    }
    let parse = (ns(cpu()) - ns(start)) / events as f64 / 1e3;
    let start = cpu();
    let wall = std::time::Instant::now();
    let mut flagged = [0usize; 2];
    let mut windows = 0;
    for (i, line) in lines.iter().enumerate() {
        if let Some(r) = m.line(line.as_bytes())? {
            windows += 1;
            let after = usize::from(i >= events / 2);
            for f in r["features"].as_array().into_iter().flatten() {
                if f["status"].as_i64() == Some(2) {
                    flagged[after] += 1;
                }
            }
        }
    }
    let took = ns(cpu()) - ns(start);
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{events} events, {windows} windows of {window}: {:.3} µs CPU per event ({parse:.3} µs of it the parse; {:.3} µs wall); columns detected before the shift {}, after {}",
        took / events as f64 / 1e3,
        wall.elapsed().as_secs_f64() * 1e6 / events as f64,
        flagged[0],
        flagged[1]
    );
    Ok(())
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("servegraph-monitor-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
