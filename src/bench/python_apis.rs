//! `servegraph bench python --apis`: the same trivial model written for each Python API
//! (servegraph's own, MLRun's, Seldon's, KServe's, MLServer's), called in-process one at a time with one row of 4
//! FP32, in interleaved rounds; what each API's adapter costs over the native one, in wall
//! time (p50) and in CPU time per call (the engine's process and the worker's).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use servegraph_engine::{BodyProtocol, BuildMode, Event, Graph, JsonBody, Tensor, TensorData};

/// The row every call sends, as a tensor or in a body.
const ROW: [f32; 4] = [1.0, 2.0, 3.0, 4.0];

const NATIVE: &str = "\
class Echo:
    def predict(self, inputs, parameters):
        return inputs
";

const NATIVE_FN: &str = "\
def echo(inputs, parameters):
    return inputs
";

const MLRUN: &str = "\
from mlrun.serving import V2ModelServer


class Echo(V2ModelServer):
    def load(self):
        pass

    def predict(self, body):
        return body[\"inputs\"]
";

const SELDON: &str = "\
class Echo:
    def predict(self, X, feature_names, meta=None):
        return X
";

/// KServe's: v1 bodies echoed as predictions, a v2 request's first input as the output.
const KSERVE: &str = "\
from kserve import InferOutput, InferResponse, Model


class Echo(Model):
    def __init__(self, name):
        super().__init__(name)
        self.ready = True

    def predict(self, payload, headers=None):
        if isinstance(payload, dict):
            return {\"predictions\": payload[\"instances\"]}
        x = payload.inputs[0]
        return InferResponse(payload.id, self.name, [InferOutput(x.name, x.shape, x.datatype, x.data)])


class AsyncEcho(Echo):
    async def predict(self, payload, headers=None):
        return super().predict(payload, headers)
";

/// MLServer's `MLModel`, as its docs write one: the request decoded with NumpyCodec's rules,
/// the answer encoded with them (MLServer's own package when the interpreter has it, else
/// servegraph's stand-in).
const MLSERVER: &str = "\
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, NumpyRequestCodec
from mlserver.types import InferenceResponse


class Echo(MLModel):
    async def predict(self, payload):
        x = self.decode_request(payload, default_codec=NumpyRequestCodec)
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output(\"output\", x)])
";

/// One API's case: its model file, how the step calls it, and what a request carries.
#[derive(Clone)]
struct Case {
    name: &'static str,
    file: &'static str,
    source: &'static str,
    /// The step's `api:` and the target (`class_name: Echo` or `function: echo`).
    step: &'static str,
    /// A body (MLRun's or Seldon's), sent instead of the tensor.
    body: Option<(Value, BodyProtocol)>,
}

fn case(name: &str) -> anyhow::Result<Case> {
    let rows = json!([ROW]);
    Ok(match name {
        "native" => Case {
            name: "native",
            file: "api_native.py",
            source: NATIVE,
            step: "api: servegraph, class_name: Echo",
            body: None,
        },
        "native-fn" => Case {
            name: "native-fn",
            file: "api_native_fn.py",
            source: NATIVE_FN,
            step: "api: servegraph, function: echo",
            body: None,
        },
        "mlrun" => Case {
            name: "mlrun",
            file: "api_mlrun.py",
            source: MLRUN,
            step: "api: mlrun, class_name: Echo",
            body: None,
        },
        "mlrun-body" => Case {
            name: "mlrun-body",
            file: "api_mlrun.py",
            source: MLRUN,
            step: "api: mlrun, class_name: Echo",
            body: Some((json!({ "inputs": rows }), BodyProtocol::Mlrun)),
        },
        "seldon" => Case {
            name: "seldon",
            file: "api_seldon.py",
            source: SELDON,
            step: "api: seldon, class_name: Echo",
            body: None,
        },
        "seldon-body" => Case {
            name: "seldon-body",
            file: "api_seldon.py",
            source: SELDON,
            step: "api: seldon, class_name: Echo",
            body: Some((json!({ "data": { "ndarray": rows } }), BodyProtocol::Seldon)),
        },
        "kserve" => Case {
            name: "kserve",
            file: "api_kserve.py",
            source: KSERVE,
            step: "api: kserve, class_name: Echo",
            body: None,
        },
        "kserve-async" => Case {
            name: "kserve-async",
            file: "api_kserve.py",
            source: KSERVE,
            step: "api: kserve, class_name: AsyncEcho",
            body: None,
        },
        "kserve-body" => Case {
            name: "kserve-body",
            file: "api_kserve.py",
            source: KSERVE,
            step: "api: kserve, class_name: Echo",
            body: Some((json!({ "instances": rows }), BodyProtocol::Kserve)),
        },
        "mlserver" => Case {
            name: "mlserver",
            file: "api_mlserver.py",
            source: MLSERVER,
            step: "api: mlserver, class_name: Echo",
            body: None,
        },
        other => bail!(
            "no API `{other}` to bench: native, native-fn, mlrun, mlrun-body, seldon, seldon-body, kserve, kserve-async, kserve-body, mlserver"
        ),
    })
}

impl Case {
    fn event(&self, input: &Tensor) -> Event {
        match &self.body {
            // As MLRun's, Seldon's and KServe's codecs hand a body to the graph: no tensors.
            Some((body, protocol)) => {
                let mut event = Event::new("b", Vec::new());
                event.body = Some(JsonBody::request(body.clone(), *protocol));
                event
            }
            None => {
                let mut event = Event::new("b", vec![input.clone()]);
                if self.name == "mlserver" {
                    // What MLServer's own client sends (NumpyRequestCodec.encode_request): the
                    // content types of the request and of its input.
                    let np = json!({"content_type": "np"});
                    event.parameters.insert("content_type".into(), "np".into());
                    event.input_parameters.insert(input.name.clone(), np);
                }
                event
            }
        }
    }

    /// Whether the answer is the echo: the tensor (MLRun's rows come back as FP64), or the
    /// body as MLRun's or Seldon's response carries it.
    fn check(&self, out: &Event) -> anyhow::Result<()> {
        let want: Vec<f64> = ROW.iter().map(|&v| v as f64).collect();
        match &self.body {
            None => {
                let got = out.tensors.first().and_then(|t| t.data.to_f64_vec());
                anyhow::ensure!(
                    out.tensors.len() == 1 && got.as_ref() == Some(&want),
                    "{}: the echo answered {}",
                    self.name,
                    out.describe_tensors()
                );
            }
            Some(_) => {
                let body = out
                    .answered_body()
                    .with_context(|| format!("{}: no body in the answer", self.name))?;
                let rows = if self.name.starts_with("mlrun") {
                    &body["outputs"]
                } else if self.name.starts_with("kserve") {
                    &body["predictions"]
                } else {
                    &body["data"]["ndarray"]
                };
                anyhow::ensure!(
                    *rows == json!([want]),
                    "{}: the echo answered {body}",
                    self.name
                );
            }
        }
        Ok(())
    }
}

/// One API's figures over the run.
#[derive(Default)]
struct Tally {
    trips: Vec<Duration>,
    /// Each round's p50, to compare with the baseline's in the same round.
    round_p50_us: Vec<f64>,
    engine_cpu: Duration,
    worker_cpu: Duration,
    calls: usize,
    /// Each call's start and end (CLOCK_MONOTONIC, ns), warm-up first, in the order made.
    spans: Vec<(u64, u64)>,
    warm: usize,
}

/// Where a case's worker writes its calls' times (`SERVEGRAPH_CALL_TIMES`, `_frames.py`).
fn times_file(dir: &Path, case: &Case) -> std::path::PathBuf {
    dir.join(format!("{}.times", case.name))
}

/// CLOCK_MONOTONIC in ns: the clock the worker's `time.monotonic_ns()` reads.
fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// A round trip split at the worker's own times: (the worker's Python, from its read of the
/// call to its write of the answer; the rest: the engine and the pipe both ways), per
/// measured call. Waits for the file the worker writes as it ends (its pipes closed).
fn split(file: &Path, tally: &Tally) -> anyhow::Result<Vec<(u64, u64)>> {
    let want = tally.spans.len() * 16;
    let deadline = Instant::now() + Duration::from_secs(10);
    let bytes = loop {
        match std::fs::read(file) {
            Ok(b) if b.len() >= want => break b,
            _ if Instant::now() > deadline => {
                anyhow::bail!(
                    "{}: the worker wrote no times for its {} calls",
                    file.display(),
                    tally.spans.len()
                )
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let times: Vec<u64> = bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    anyhow::ensure!(
        times.len() == tally.spans.len() * 2,
        "{}: {} times for {} calls",
        file.display(),
        times.len(),
        tally.spans.len()
    );
    let mut out = Vec::with_capacity(tally.spans.len() - tally.warm);
    for (i, (&(t0, t1), w)) in tally.spans.iter().zip(times.chunks_exact(2)).enumerate() {
        let (read, wrote) = (w[0], w[1]);
        anyhow::ensure!(
            t0 <= read && read <= wrote && wrote <= t1,
            "call {i}: the worker's times ({read}, {wrote}) are not within the call's ({t0}, {t1})"
        );
        if i >= tally.warm {
            out.push((wrote - read, (t1 - t0) - (wrote - read)));
        }
    }
    Ok(out)
}

pub(super) fn python_apis(
    names: &[String],
    requests: usize,
    rounds: usize,
    spin_us: Option<u64>,
    python: Option<String>,
) -> anyhow::Result<()> {
    let cases = names
        .iter()
        .map(|n| case(n.trim()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let dir = std::env::temp_dir().join(format!("servegraph-bench-apis-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run_in(&dir, &cases, requests, rounds, spin_us, python);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(
    dir: &Path,
    cases: &[Case],
    requests: usize,
    rounds: usize,
    spin_us: Option<u64>,
    python: Option<String>,
) -> anyhow::Result<()> {
    let spin = spin_us
        .map(|us| format!(", spin_us: {us}"))
        .unwrap_or_default();
    let python = python
        .or_else(|| std::env::var("SERVEGRAPH_PYTHON").ok())
        .unwrap_or_else(|| "python3".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let registry = servegraph_steps::registry();
    // One graph, hence one worker process, per case, loaded one after the other so that each
    // new child process is that case's worker.
    let mut graphs = Vec::new();
    let mut workers = Vec::new();
    for c in cases {
        std::fs::write(dir.join(c.file), c.source)?;
        let yaml = format!(
            "name: bench\ngraph:\n  kind: flow\n  steps:\n    echo: {{kind: model, class: python, path: {}, {}{spin}, python: {python}, env: {{SERVEGRAPH_CALL_TIMES: \"{}\"}}}}\n",
            c.file,
            c.step,
            times_file(dir, c).display()
        );
        let before = children();
        let graph = {
            let _in = rt.enter();
            Graph::from_yaml(&yaml, dir, &registry, BuildMode::Load)
                .map_err(|d| anyhow::anyhow!("{}: {d:?}", c.name))?
        };
        let new: Vec<u32> = children()
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        workers.push(match new[..] {
            [pid] => Some(pid),
            _ => None,
        });
        graphs.push(Arc::new(graph));
    }
    let input = Tensor::new("x", vec![1, ROW.len()], TensorData::Fp32(ROW.to_vec()))?;
    let per_round = (requests / rounds).max(1);
    let load_before = loadavg();
    let tallies = rt.block_on(rt.spawn({
        let cases: Vec<(Case, Arc<Graph>, Option<u32>)> = cases
            .iter()
            .cloned()
            .zip(graphs)
            .zip(workers.iter().copied())
            .map(|((c, g), w)| (c, g, w))
            .collect();
        async move {
            let mut tallies: Vec<Tally> = cases.iter().map(|_| Tally::default()).collect();
            // Warm-up: each case's first calls are not counted.
            for ((case, graph, _), tally) in cases.iter().zip(&mut tallies) {
                for _ in 0..(per_round / 2).max(200) {
                    let t0 = monotonic_ns();
                    let out = graph
                        .run(case.event(&input))
                        .await
                        .map_err(|e| anyhow::anyhow!("{}: {e}", case.name))?;
                    tally.spans.push((t0, monotonic_ns()));
                    tally.warm += 1;
                    case.check(&out)?;
                }
            }
            for round in 0..rounds {
                // The order rotates, so that no case always follows the same one.
                for k in 0..cases.len() {
                    let i = (round + k) % cases.len();
                    let (case, graph, worker) = &cases[i];
                    let tally = &mut tallies[i];
                    let mut trips = Vec::with_capacity(per_round);
                    let (cpu0, w0) = (process_cpu(), worker.and_then(worker_cpu));
                    for call in 0..per_round {
                        let event = case.event(&input);
                        let (t0, m0) = (Instant::now(), monotonic_ns());
                        let out = graph
                            .run(event)
                            .await
                            .map_err(|e| anyhow::anyhow!("{}: {e}", case.name))?;
                        trips.push(t0.elapsed());
                        tally.spans.push((m0, monotonic_ns()));
                        // Every warm-up call was checked; here the first of each round is,
                        // so that checking stays out of the CPU time.
                        if call == 0 {
                            case.check(&out)?;
                        }
                    }
                    let (w1, cpu1) = (worker.and_then(worker_cpu), process_cpu());
                    tally.engine_cpu += cpu1.saturating_sub(cpu0);
                    if let (Some(w0), Some(w1)) = (w0, w1) {
                        tally.worker_cpu += w1.saturating_sub(w0);
                    }
                    tally.calls += per_round;
                    tally.round_p50_us.push(super::median_us(trips.clone()));
                    tally.trips.extend(trips);
                }
            }
            anyhow::Ok(tallies)
        }
    }))??;
    let load_after = loadavg();
    let base = cases
        .iter()
        .position(|c| c.name == "native")
        .or_else(|| cases.iter().position(|c| c.name == "native-fn"))
        .unwrap_or(0);
    let cpu_known = workers.iter().all(Option::is_some);
    let us = |d: Duration, calls: usize| d.as_nanos() as f64 / 1000.0 / calls.max(1) as f64;
    let base_p50 = median_us(&tallies[base].trips);
    let base_cpu = us(
        tallies[base].engine_cpu + tallies[base].worker_cpu,
        tallies[base].calls,
    );
    println!(
        "python APIs, one row of 4 FP32 (16 B), c=1, spin_us {}: {rounds} rounds of {per_round} calls each, interleaved; differences from `{}`",
        spin_us.map_or("default".into(), |us| us.to_string()),
        cases[base].name
    );
    for (c, t) in cases.iter().zip(&tallies) {
        let p50 = median_us(&t.trips);
        // The per-round differences' median: what moves with the machine between rounds
        // moves both.
        let mut diffs: Vec<f64> = t
            .round_p50_us
            .iter()
            .zip(&tallies[base].round_p50_us)
            .map(|(a, b)| a - b)
            .collect();
        diffs.sort_by(f64::total_cmp);
        let paired = diffs[diffs.len() / 2];
        let (engine, worker) = (us(t.engine_cpu, t.calls), us(t.worker_cpu, t.calls));
        let cpu = if cpu_known {
            format!(
                "CPU {:>5.1} µs/call ({engine:.1} engine + {worker:.1} worker) {:>+6.1}",
                engine + worker,
                engine + worker - base_cpu
            )
        } else {
            format!("CPU {engine:>5.1} µs/call (engine only: the worker's process was not found)")
        };
        println!(
            "python api {:<11} p50 {p50:>6.1} µs {:>+6.1} (per-round median {paired:>+6.1}); {cpu}",
            c.name,
            p50 - base_p50,
        );
    }
    // The round trip split at the worker's read and write (the graphs, hence the workers,
    // ended with the task above).
    println!(
        "split at the worker's own read and write (p50 over calls, µs): round trip = Python (the worker, from its read of the call to its write of the answer) + engine & IPC (the rest: the engine's side and the pipe's wake-ups both ways)"
    );
    for (c, t) in cases.iter().zip(&tallies) {
        let parts = split(&times_file(dir, c), t)?;
        let p50 = |mut v: Vec<u64>| {
            v.sort_unstable();
            v[v.len() / 2] as f64 / 1000.0
        };
        let python = p50(parts.iter().map(|p| p.0).collect());
        let rest = p50(parts.iter().map(|p| p.1).collect());
        let total = p50(parts.iter().map(|p| p.0 + p.1).collect());
        println!(
            "python split {:<11} round trip {total:>6.1} = Python {python:>6.1} + engine & IPC {rest:>6.1}",
            c.name
        );
    }
    // Each round's p50, in the order run: a machine that changed pace mid-run shows here.
    for (c, t) in cases.iter().zip(&tallies) {
        let r: Vec<String> = t.round_p50_us.iter().map(|v| format!("{v:.0}")).collect();
        println!("rounds' p50 (µs) {:<11} {}", c.name, r.join(" "));
    }
    println!("load average: {load_before} before, {load_after} after");
    Ok(())
}

fn median_us(samples: &[Duration]) -> f64 {
    super::median_us(samples.to_vec())
}

/// The process's CPU time, all threads.
fn process_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// A process's CPU time, all threads, from the scheduler's nanosecond counters
/// (`/proc/PID/task/*/schedstat`); `None` when the kernel has none.
fn worker_cpu(pid: u32) -> Option<Duration> {
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        ns += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(ns))
}

/// This process's children (the Python workers), from `/proc/*/stat`.
fn children() -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) state ppid ...`: comm may hold spaces and parentheses.
        let ppid: u32 = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        (ppid == me).then_some(pid)
    })
    .collect()
}

/// `/proc/loadavg`'s three figures.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
