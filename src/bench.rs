//! `servegraph bench`: an HTTP load generator (keep-alive connections, fixed concurrency,
//! fixed duration) and the engine's per-step overhead measured in-process.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Subcommand;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use servegraph_engine::{BuildMode, Event, Graph, Tensor, TensorData};

mod python_apis;
use python_apis::python_apis;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Load an HTTP endpoint: CONCURRENCY keep-alive connections each POST the same request
    /// back to back for DURATION seconds (after WARMUP seconds not counted).
    Http {
        /// The endpoint, e.g. http://127.0.0.1:8080/v2/models/iris-lr/infer
        #[arg(long)]
        url: String,
        /// The request body (JSON), or @FILE.
        #[arg(long)]
        data: String,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Seconds to measure.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Seconds of load before measuring.
        #[arg(long, default_value_t = 2)]
        warmup: u64,
        /// Threads for the load generator itself.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Label printed with the result line.
        #[arg(long, default_value = "http")]
        label: String,
        /// Open loop: send this many requests per second whatever the answers' pace (up to
        /// CONCURRENCY connections; a request finding none free counts as `unsent`), and
        /// report served (2xx) and refused (429) requests separately.
        #[arg(long)]
        rate: Option<u64>,
    },
    /// Creates `topic` (and `--create` more) unless they exist, and produces COUNT copies of a
    /// message to it.
    KafkaProduce {
        #[arg(long)]
        brokers: String,
        #[arg(long)]
        topic: String,
        /// Other topics to create first (e.g. the output topic).
        #[arg(long)]
        create: Vec<String>,
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        #[arg(long, default_value_t = 100_000)]
        count: usize,
        /// The message payload (JSON), or @FILE.
        #[arg(long)]
        data: String,
    },
    /// Reads `topic` until COUNT messages arrived; the rate between the first and the last.
    KafkaMeasure {
        #[arg(long)]
        brokers: String,
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 100_000)]
        count: usize,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        #[arg(long, default_value = "kafka")]
        label: String,
    },
    /// The engine's own cost per step: chains of `noop` transforms run in-process, one request
    /// at a time; the slope of time over chain length is the per-step overhead.
    Engine {
        /// Chain lengths to measure, comma-separated.
        #[arg(long, default_value = "1,2,4,8,16,32")]
        steps: String,
        /// Requests per chain length.
        #[arg(long, default_value_t = 200_000)]
        requests: usize,
    },
    /// A Python model's round trip in-process, one call at a time: a `predict` that returns
    /// its input, for FP32 tensors of each size, against one `memcpy` of the same bytes
    /// measured in the same run (sizes from 64 KiB cross through shared memory); or, with
    /// `--apis`, the same echo written for each Python API, side by side.
    Python {
        /// Tensor sizes in bytes, comma-separated.
        #[arg(long, default_value = "16,1048576")]
        sizes: String,
        /// Calls per size (with `--apis`: per API).
        #[arg(long, default_value_t = 20_000)]
        requests: usize,
        /// The interpreter (default: SERVEGRAPH_PYTHON, else python3); it needs NumPy.
        #[arg(long)]
        python: Option<String>,
        /// Instead of sizes, compare the Python APIs side by side on one row of 4 FP32 (16 B):
        /// the same echo written for each (`native` a servegraph class, `native-fn` a
        /// function, `mlrun` a `V2ModelServer` called with a tensor, `mlrun-body` with MLRun's
        /// body `{"inputs": [[...]]}`, `seldon` a Seldon class called with a tensor,
        /// `seldon-body` with a SeldonMessage `{"data": {"ndarray": [[...]]}}`, `kserve` a
        /// `kserve.Model` called with a tensor (an `InferRequest`, answering an `InferResponse`),
        /// `kserve-async` the same with `async def predict`, `kserve-body` with KServe's v1 body
        /// `{"instances": [[...]]}`, `mlserver` an MLServer `MLModel` with NumpyCodec's content
        /// types), comma-separated.
        /// Each gets its own worker; rounds alternate between them. Prints each one's p50 and
        /// CPU time per call, and their difference from the first of `native`, `native-fn` (or
        /// the first listed).
        #[arg(long, value_delimiter = ',', conflicts_with = "sizes")]
        apis: Vec<String>,
        /// With `--apis`: the rounds the calls are split into (each API's REQUESTS calls are
        /// ROUNDS runs of REQUESTS/ROUNDS back to back, the APIs' order rotating every round).
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        /// With `--apis`: the steps' `spin_us` (default: the step's default, 200). 0 leaves
        /// polling out of the CPU time; a larger value keeps every call polled for.
        #[arg(long)]
        spin_us: Option<u64>,
    },
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Http {
            url,
            data,
            concurrency,
            duration,
            warmup,
            threads,
            label,
            rate,
        } => {
            let body = match data.strip_prefix('@') {
                Some(f) => std::fs::read(f).with_context(|| format!("reading {f}"))?,
                None => data.into_bytes(),
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads.max(1))
                .enable_all()
                .build()?;
            let _progress = progress(warmup + duration.max(1), &label);
            if let Some(rate) = rate {
                let r = rt.block_on(open_loop(
                    &url,
                    Bytes::from(body),
                    concurrency.max(1),
                    rate.max(1),
                    Duration::from_secs(warmup),
                    Duration::from_secs(duration.max(1)),
                ))?;
                println!(
                    "{label}: offered {rate} req/s: served {:.0} req/s (p50 {} µs, p99 {} µs); refused (429) {:.0} req/s (p99 {} µs); other errors {}; unsent {}",
                    r.served as f64 / duration.max(1) as f64,
                    r.served_p50_us,
                    r.served_p99_us,
                    r.refused as f64 / duration.max(1) as f64,
                    r.refused_p99_us,
                    r.errors,
                    r.unsent
                );
                return Ok(());
            }
            let r = rt.block_on(http_load(
                &url,
                Bytes::from(body),
                concurrency.max(1),
                Duration::from_secs(warmup),
                Duration::from_secs(duration.max(1)),
            ))?;
            println!(
                "{label}: concurrency {concurrency}: {:.0} req/s, p50 {} µs, p99 {} µs, {} requests, {} errors",
                r.per_sec, r.p50_us, r.p99_us, r.count, r.errors
            );
            Ok(())
        }
        BenchCommand::KafkaProduce {
            brokers,
            topic,
            create,
            partitions,
            count,
            data,
        } => {
            let payload = match data.strip_prefix('@') {
                Some(f) => std::fs::read(f).with_context(|| format!("reading {f}"))?,
                None => data.into_bytes(),
            };
            kafka_produce(&brokers, &topic, &create, partitions, count, &payload)
        }
        BenchCommand::KafkaMeasure {
            brokers,
            topic,
            count,
            timeout,
            label,
        } => kafka_measure(
            &brokers,
            &topic,
            count,
            Duration::from_secs(timeout),
            &label,
        ),
        BenchCommand::Engine { steps, requests } => {
            let lengths: Vec<usize> = steps
                .split(',')
                .map(|s| s.trim().parse::<usize>())
                .collect::<Result<_, _>>()
                .context("--steps takes comma-separated numbers")?;
            engine_overhead(&lengths, requests.max(1))
        }
        BenchCommand::Python {
            apis,
            rounds,
            requests,
            python,
            spin_us,
            ..
        } if !apis.is_empty() => {
            python_apis(&apis, requests.max(10), rounds.max(1), spin_us, python)
        }
        BenchCommand::Python {
            sizes,
            requests,
            python,
            ..
        } => {
            let sizes: Vec<usize> = sizes
                .split(',')
                .map(|s| s.trim().parse::<usize>())
                .collect::<Result<_, _>>()
                .context("--sizes takes comma-separated byte counts")?;
            python_round_trip(&sizes, requests.max(10), python)
        }
    }
}

/// The median of some durations, in µs.
fn median_us(mut samples: Vec<Duration>) -> f64 {
    samples.sort_unstable();
    samples[samples.len() / 2].as_nanos() as f64 / 1000.0
}

fn python_round_trip(
    sizes: &[usize],
    requests: usize,
    python: Option<String>,
) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("servegraph-bench-python-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = python_round_trip_in(&dir, sizes, requests, python);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn python_round_trip_in(
    dir: &Path,
    sizes: &[usize],
    requests: usize,
    python: Option<String>,
) -> anyhow::Result<()> {
    std::fs::write(
        dir.join("echo.py"),
        "def echo(inputs, parameters):\n    return inputs\n",
    )?;
    let python = python
        .or_else(|| std::env::var("SERVEGRAPH_PYTHON").ok())
        .unwrap_or_else(|| "python3".into());
    let yaml = format!(
        "name: echo\ngraph:\n  kind: flow\n  steps:\n    echo: {{kind: model, class: python, path: echo.py, function: echo, python: {python}}}\n"
    );
    // The server's runtime: the worker's pipes are served on it, as in `serve`.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let graph = {
        let _in = rt.enter();
        std::sync::Arc::new(
            Graph::from_yaml(&yaml, dir, &servegraph_steps::registry(), BuildMode::Load)
                .map_err(|d| anyhow::anyhow!("{d:?}"))?,
        )
    };
    for &bytes in sizes {
        let n = (bytes / 4).max(1);
        let input = Tensor::new(
            "x",
            vec![1, n],
            TensorData::Fp32((0..n).map(|i| i as f32).collect()),
        )?;
        let calls = if bytes >= 1 << 20 {
            requests / 10
        } else {
            requests
        }
        .max(10);
        // On a worker thread of the runtime, as a request's task is.
        let (graph, input) = (std::sync::Arc::clone(&graph), input.clone());
        let trips = rt.block_on(rt.spawn(async move {
            let mut trips = Vec::with_capacity(calls);
            for i in 0..calls + calls / 10 {
                let event = Event::new("b", vec![input.clone()]);
                let t0 = Instant::now();
                let out = graph.run(event).await.map_err(|e| anyhow::anyhow!("{e}"))?;
                let took = t0.elapsed();
                anyhow::ensure!(
                    out.tensors[0].data == input.data,
                    "the echo changed the tensor"
                );
                if i >= calls / 10 {
                    trips.push(took);
                }
            }
            anyhow::Ok(trips)
        }))??;
        let src = vec![1u8; n * 4];
        let mut dst = vec![0u8; n * 4];
        let mut copies = Vec::with_capacity(calls);
        for _ in 0..calls {
            let t0 = Instant::now();
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&mut dst);
            copies.push(t0.elapsed());
        }
        let (trip, copy) = (median_us(trips), median_us(copies));
        println!(
            "python echo {bytes:>9} B: round trip p50 {trip:>8.1} µs; memcpy p50 {copy:>7.1} µs; ratio {:.2}",
            trip / copy.max(0.001)
        );
    }
    Ok(())
}

struct LoadResult {
    per_sec: f64,
    p50_us: u64,
    p99_us: u64,
    count: usize,
    errors: usize,
}

async fn http_load(
    url: &str,
    body: Bytes,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<LoadResult> {
    let uri: hyper::Uri = url.parse().context("--url")?;
    let authority = uri
        .authority()
        .context("--url needs host:port")?
        .to_string();
    let path = uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or("/".into());
    let start = Instant::now();
    let measure_from = start + warmup;
    let stop = measure_from + duration;
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (authority, path, body) = (authority.clone(), path.clone(), body.clone());
        workers.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(&authority).await?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let mut latencies: Vec<u32> = Vec::new();
            let mut errors = 0usize;
            // The first failure, to show when nothing succeeds.
            let mut first_error: Option<String> = None;
            loop {
                let t0 = Instant::now();
                if t0 >= stop {
                    break;
                }
                let req = Request::post(&path)
                    .header("host", &authority)
                    .header("content-type", "application/json")
                    .body(Full::new(body.clone()))?;
                let resp = sender.send_request(req).await?;
                let status = resp.status();
                let ok = status.is_success();
                let answer = resp.into_body().collect().await?.to_bytes();
                if !ok && first_error.is_none() {
                    first_error = Some(format!("{status}: {}", String::from_utf8_lossy(&answer)));
                }
                if t0 >= measure_from {
                    if ok {
                        latencies.push(t0.elapsed().as_micros() as u32);
                    } else {
                        errors += 1;
                    }
                }
            }
            anyhow::Ok((latencies, errors, first_error))
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for w in workers {
        let (l, e, first) = w.await??;
        all.extend(l);
        errors += e;
        first_error = first_error.or(first);
    }
    if all.is_empty() {
        match first_error {
            Some(answer) => {
                bail!("no successful requests ({errors} errors); the first answer was {answer}")
            }
            None => bail!("no successful requests ({errors} errors)"),
        }
    }
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)] as u64;
    Ok(LoadResult {
        per_sec: all.len() as f64 / duration.as_secs_f64(),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        count: all.len(),
        errors,
    })
}

struct OpenLoopResult {
    served: usize,
    served_p50_us: u64,
    served_p99_us: u64,
    refused: usize,
    refused_p99_us: u64,
    errors: usize,
    unsent: usize,
}

/// Requests at a fixed rate, each timed from when it was due (so a slow server shows in the
/// latencies rather than slowing the load), over at most `connections` keep-alive connections.
async fn open_loop(
    url: &str,
    body: Bytes,
    connections: usize,
    rate: u64,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<OpenLoopResult> {
    use hyper_util::client::legacy::Client;
    let client: Client<_, Full<Bytes>> = Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(connections)
        .build_http();
    let uri: hyper::Uri = url.parse().context("--url")?;
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(connections));
    let start = tokio::time::Instant::now();
    let measure_from = start + warmup;
    let stop = measure_from + duration;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u16, u32)>();
    let mut unsent = 0;
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let mut due = start;
    while due < stop {
        tokio::time::sleep_until(due).await;
        let counted = due >= measure_from;
        let Ok(slot) = std::sync::Arc::clone(&slots).try_acquire_owned() else {
            unsent += counted as usize;
            due += period;
            continue;
        };
        let (client, uri, body, tx) = (client.clone(), uri.clone(), body.clone(), tx.clone());
        let sent_at = due;
        tokio::spawn(async move {
            let _slot = slot;
            let req = Request::post(uri)
                .header("content-type", "application/json")
                .body(Full::new(body))
                .expect("a valid request");
            let status = match client.request(req).await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let _ = resp.into_body().collect().await;
                    status
                }
                Err(_) => 0,
            };
            if counted {
                let _ = tx.send((status, sent_at.elapsed().as_micros() as u32));
            }
        });
        due += period;
    }
    drop(tx);
    let (mut served, mut refused, mut errors) = (Vec::new(), Vec::new(), 0);
    while let Some((status, us)) = rx.recv().await {
        match status {
            200..=299 => served.push(us),
            429 => refused.push(us),
            _ => errors += 1,
        }
    }
    let pct = |v: &mut Vec<u32>, p: f64| {
        v.sort_unstable();
        v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as u64
    };
    Ok(OpenLoopResult {
        served_p50_us: pct(&mut served, 0.5),
        served_p99_us: pct(&mut served, 0.99),
        refused_p99_us: pct(&mut refused, 0.99),
        served: served.len(),
        refused: refused.len(),
        errors,
        unsent,
    })
}

/// A bar on stderr over a run of `secs` seconds (drawn only when stderr is a terminal);
/// cleared when dropped.
struct Progress(indicatif::ProgressBar);

impl Drop for Progress {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

fn progress(secs: u64, label: &str) -> Progress {
    let bar = indicatif::ProgressBar::new(secs);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} s")
            .expect("a valid template"),
    );
    bar.set_message(label.to_owned());
    let ticking = bar.clone();
    std::thread::spawn(move || {
        while !ticking.is_finished() && ticking.position() < secs {
            std::thread::sleep(Duration::from_secs(1));
            ticking.inc(1);
        }
    });
    Progress(bar)
}

fn chain_yaml(n: usize) -> String {
    let mut y = String::from("name: chain\ngraph:\n  kind: flow\n  steps:\n");
    for i in 0..n {
        y.push_str(&format!("    s{i}: {{kind: transform, op: noop"));
        if i > 0 {
            y.push_str(&format!(", after: s{}", i - 1));
        }
        y.push_str("}\n");
    }
    y
}

fn engine_overhead(lengths: &[usize], requests: usize) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let registry = servegraph_steps::registry();
    let input = Tensor::new(
        "input",
        vec![1, 4],
        TensorData::Fp32(vec![5.1, 3.5, 1.4, 0.2]),
    )?;
    let mut points = Vec::new();
    for &n in lengths {
        if n == 0 {
            bail!("chains need at least one step");
        }
        let graph = Graph::from_yaml(&chain_yaml(n), Path::new("."), &registry, BuildMode::Load)
            .map_err(|d| anyhow::anyhow!("{d:?}"))?;
        let ns = rt.block_on(async {
            for _ in 0..requests / 10 {
                graph
                    .run(Event::new("w", vec![input.clone()]))
                    .await
                    .expect("noop chain");
            }
            let t0 = Instant::now();
            for _ in 0..requests {
                graph
                    .run(Event::new("b", vec![input.clone()]))
                    .await
                    .expect("noop chain");
            }
            t0.elapsed().as_nanos() as f64 / requests as f64
        });
        println!("engine: chain of {n:>3} noop steps: {ns:>8.0} ns/request");
        points.push((n as f64, ns));
    }
    if points.len() >= 2 {
        let k = points.len() as f64;
        let mx = points.iter().map(|p| p.0).sum::<f64>() / k;
        let my = points.iter().map(|p| p.1).sum::<f64>() / k;
        let slope = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>()
            / points.iter().map(|p| (p.0 - mx).powi(2)).sum::<f64>();
        println!(
            "engine: overhead per step {:.0} ns ({:.3} µs); fixed per request {:.0} ns",
            slope,
            slope / 1000.0,
            my - slope * mx
        );
    }
    Ok(())
}

fn kafka_produce(
    brokers: &str,
    topic: &str,
    create: &[String],
    partitions: i32,
    count: usize,
    payload: &[u8],
) -> anyhow::Result<()> {
    use rdkafka::ClientConfig;
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let mut topics = vec![NewTopic::new(topic, partitions, TopicReplication::Fixed(1))];
    topics.extend(
        create
            .iter()
            .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1))),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    for r in rt.block_on(admin.create_topics(&topics, &AdminOptions::new()))? {
        match r {
            // Topics made earlier (e.g. before the consumers subscribed) are produced to.
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) | Ok(_) => {}
            Err((t, e)) => bail!("creating {t}: {e}"),
        }
    }
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    for i in 0..count {
        let key = format!("k{i}");
        let mut record = BaseRecord::to(topic).key(key.as_str()).payload(payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60))?;
    println!("produced {count} messages to {topic}");
    Ok(())
}

fn kafka_measure(
    brokers: &str,
    topic: &str,
    count: usize,
    timeout: Duration,
    label: &str,
) -> anyhow::Result<()> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("measure-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .create()?;
    // Assigned, not subscribed: no group join in the measurement.
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut list = TopicPartitionList::new();
    for p in 0..metadata.topics()[0].partitions().len() as i32 {
        list.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&list)?;
    // The rate comes from the messages' own timestamps (when the processor produced each),
    // so how fast this reader reads does not matter.
    use rdkafka::message::Message;
    let deadline = Instant::now() + timeout;
    let (mut seen, mut first, mut last) = (0usize, i64::MAX, i64::MIN);
    while seen < count {
        if Instant::now() > deadline {
            bail!(
                "{label}: only {seen} of {count} messages within {} s",
                timeout.as_secs()
            );
        }
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m?;
            let ts = m
                .timestamp()
                .to_millis()
                .context("a message without a timestamp")?;
            first = first.min(ts);
            last = last.max(ts);
            seen += 1;
        }
    }
    let secs = ((last - first) as f64 / 1000.0).max(1e-3);
    println!(
        "{label}: {count} messages, {:.0} msgs/s (first to last result, {secs:.3} s by message timestamps)",
        (count - 1) as f64 / secs
    );
    Ok(())
}
