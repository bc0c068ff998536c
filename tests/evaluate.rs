//! `servegraph evaluate` through the real binary, on logs of the simulated contextual world
//! (`common/cb_world.rs`) written in the tracking stream's format (decisions with `pmf` and
//! `context`, feedback as events of their own) by a logging policy written here: SquareCB
//! with a 5 % floor over per-route ridge regression (the research notes' Appendix A). The
//! estimates are checked against the world's true policy values, and the DSJSON export
//! against Vowpal Wabbit's own parser.

// The simulated world's matrices are indexed by row and column, as the formulas are.
#![allow(clippy::needless_range_loop)]

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use common::cb_world::{FEATURES, ROUTES, World};
use common::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

const T: usize = 20_000;
const D: usize = FEATURES + 1;

fn route(a: usize) -> String {
    format!("route-{a}")
}

/// Per-route ridge regression, A⁻¹ by Sherman–Morrison (Appendix A's `Ridge`).
struct Ridge {
    a_inv: Vec<[[f64; D]; D]>,
    b: Vec<[f64; D]>,
}

impl Ridge {
    fn new() -> Ridge {
        let mut eye = [[0.0; D]; D];
        for (i, row) in eye.iter_mut().enumerate() {
            row[i] = 1.0;
        }
        Ridge {
            a_inv: vec![eye; ROUTES],
            b: vec![[0.0; D]; ROUTES],
        }
    }
    fn predict(&self, a: usize, x: &[f64; D]) -> f64 {
        (0..D)
            .map(|i| {
                x[i] * (0..D)
                    .map(|j| self.a_inv[a][i][j] * self.b[a][j])
                    .sum::<f64>()
            })
            .sum()
    }
    fn update(&mut self, a: usize, x: &[f64; D], r: f64) {
        let m = &mut self.a_inv[a];
        let ax: Vec<f64> = (0..D)
            .map(|i| (0..D).map(|j| m[i][j] * x[j]).sum())
            .collect();
        let denom = 1.0 + (0..D).map(|i| x[i] * ax[i]).sum::<f64>();
        for i in 0..D {
            for j in 0..D {
                m[i][j] -= ax[i] * ax[j] / denom;
            }
        }
        for i in 0..D {
            self.b[a][i] += r * x[i];
        }
    }
}

/// How the logs are made.
#[derive(Clone, Copy)]
enum Logger {
    /// SquareCB (γ = 10·√t) with a 5 % floor, over per-route ridge.
    SquareCb,
    /// A fixed split (no learning).
    Fixed([f64; ROUTES]),
}

/// Writes `T` decisions of router `cb` and their feedback to `path` (`reward_share` of the
/// decisions get a reward); returns the world and the logging policy's true value (the mean
/// over decisions of Σ_a pmf(a)·P(r = 1 | x, a)).
fn write_logs(path: &Path, seed: u64, logger: Logger, reward_share: f64) -> (World, f64) {
    let world = World::new(seed, T);
    let mut rng = SmallRng::seed_from_u64(1000 + seed);
    let mut model = Ridge::new();
    let mut out = String::with_capacity(T * 400);
    let t0 = 1_796_000_000.0_f64;
    let mut truth = 0.0;
    for i in 0..T {
        let mut x = [1.0; D];
        x[..FEATURES].copy_from_slice(&world.contexts[i]);
        let pmf: Vec<f64> = match logger {
            Logger::Fixed(p) => p.to_vec(),
            Logger::SquareCb => {
                let mu: Vec<f64> = (0..ROUTES).map(|a| model.predict(a, &x)).collect();
                let best = (0..ROUTES)
                    .max_by(|&a, &b| mu[a].total_cmp(&mu[b]))
                    .unwrap();
                let gamma = 10.0 * ((i + 1) as f64).sqrt();
                let mut p: Vec<f64> = (0..ROUTES)
                    .map(|a| 1.0 / (ROUTES as f64 + gamma * (mu[best] - mu[a])))
                    .collect();
                p[best] = 0.0;
                p[best] = 1.0 - p.iter().sum::<f64>();
                let floor = 0.05 / ROUTES as f64;
                let p: Vec<f64> = p.iter().map(|v| v.max(floor)).collect();
                let s: f64 = p.iter().sum();
                p.iter().map(|v| v / s).collect()
            }
        };
        let u: f64 = rng.random();
        let mut chosen = ROUTES - 1;
        let mut acc = 0.0;
        for (a, p) in pmf.iter().enumerate() {
            acc += p;
            if u < acc {
                chosen = a;
                break;
            }
        }
        let r = world.reward(i, chosen);
        truth += (0..ROUTES).map(|a| pmf[a] * world.p(i, a)).sum::<f64>() / T as f64;
        model.update(chosen, &x, r);
        let when = |s: f64| {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(t0 + s);
            humantime_like(t)
        };
        let routes: Vec<String> = (0..ROUTES).map(route).collect();
        let event = serde_json::json!({
            "id": format!("req-{i}"), "when": when(i as f64), "graph": "g", "model": "route",
            "route": route(chosen),
            "decisions": [{"router": "cb", "policy": "squarecb", "generation": 1,
                "routes": routes, "pmf": pmf, "chosen": chosen, "context": x, "sampled": 1.0}]
        });
        writeln!(out, "{event}").unwrap();
        if rng.random::<f64>() < reward_share {
            let fb = serde_json::json!({"id": format!("req-{i}"), "when": when(i as f64 + 0.5),
                "graph": "g", "model": "cb", "op": "feedback", "reward": r});
            writeln!(out, "{fb}").unwrap();
        }
    }
    std::fs::write(path, out).unwrap();
    (world, truth)
}

/// RFC 3339 with microseconds, UTC (what tracking writes).
fn humantime_like(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap();
    let secs = d.as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if month <= 2 { y + 1 } else { y };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_micros()
    )
}

fn evaluate(args: &[&str]) -> std::process::Output {
    bin().arg("evaluate").args(args).output().unwrap()
}

fn evaluate_json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = evaluate(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn candidate<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no candidate {name} in {report}"))
}

const WEIGHTS: &str = "weights:route-0=1,route-1=2,route-2=1";

/// The acceptance bar of issue 28 B: on SquareCB-with-floor logs of 20 seeds, the IPS and DR
/// 95 % intervals of fixed candidates cover the true value in ≥ 18 of 20 seeds, and DR is
/// within 2 points of the truth on average.
#[test]
fn estimates_cover_the_true_value_of_fixed_candidates() {
    let dir = tempfile::tempdir().unwrap();
    let targets: [(&str, [f64; ROUTES]); 3] = [
        ("always:route-0", [1.0, 0.0, 0.0]),
        ("uniform", [1.0 / 3.0; ROUTES]),
        (WEIGHTS, [0.25, 0.5, 0.25]),
    ];
    let seeds = 20;
    // (covered IPS, covered DR, Σ|DR − truth|, Σ|IPS − truth|, Σ DR width, Σ ESS) per target.
    let mut stats = [[0.0; 6]; 3];
    let mut logging_covered = 0;
    for seed in 0..seeds {
        let log = dir.path().join(format!("s{seed}.jsonl"));
        let (world, logging_truth) = write_logs(&log, seed, Logger::SquareCb, 1.0);
        let report = evaluate_json(&[
            "--input",
            log.to_str().unwrap(),
            "--router",
            "cb",
            "--candidate",
            "always:route-0",
            "--candidate",
            "uniform",
            "--candidate",
            WEIGHTS,
        ]);
        assert_eq!(report["decisions"]["scored"], T as u64, "{report}");
        for (k, (name, pmf)) in targets.iter().enumerate() {
            let truth = world.value(|_| *pmf);
            let c = candidate(&report, name);
            assert_eq!(c["status"], "ok", "{c}");
            let est = |e: &str, f: &str| c["estimates"][e][f].clone();
            let covers = |e: &str| {
                let ci = est(e, "ci95");
                ci[0].as_f64().unwrap() <= truth && truth <= ci[1].as_f64().unwrap()
            };
            stats[k][0] += f64::from(u8::from(covers("ips")));
            stats[k][1] += f64::from(u8::from(covers("dr")));
            stats[k][2] += (est("dr", "value").as_f64().unwrap() - truth).abs();
            stats[k][3] += (est("ips", "value").as_f64().unwrap() - truth).abs();
            let ci = est("dr", "ci95");
            stats[k][4] += ci[1].as_f64().unwrap() - ci[0].as_f64().unwrap();
            stats[k][5] += c["ess"].as_f64().unwrap();
        }
        // The on-policy check: the logging policy's own estimate is the mean reward.
        let l = candidate(&report, "logging");
        let ips = l["estimates"]["ips"]["value"].as_f64().unwrap();
        let ci = &l["estimates"]["dr"]["ci95"];
        let _ = ips;
        if ci[0].as_f64().unwrap() <= logging_truth && logging_truth <= ci[1].as_f64().unwrap() {
            logging_covered += 1;
        }
        assert_eq!(
            l["vs_logging"]["ips"]["value"].as_f64().unwrap(),
            0.0,
            "logging − logging is 0"
        );
    }
    let n = f64::from(seeds as u32);
    let mut summary = String::new();
    for (k, (name, _)) in targets.iter().enumerate() {
        let s = stats[k];
        writeln!(
            summary,
            "{name:40} IPS cover {}/{seeds}  DR cover {}/{seeds}  mean|DR−truth| {:.2} pts  mean|IPS−truth| {:.2} pts  mean DR CI width {:.2} pts  mean ESS {:.0}",
            s[0], s[1], 100.0 * s[2] / n, 100.0 * s[3] / n, 100.0 * s[4] / n, s[5] / n
        )
        .unwrap();
    }
    eprintln!("{summary}");
    for (k, (name, _)) in targets.iter().enumerate() {
        let s = stats[k];
        assert!(s[0] >= 0.9 * n, "{name}: IPS coverage\n{summary}");
        assert!(s[1] >= 0.9 * n, "{name}: DR coverage\n{summary}");
        assert!(100.0 * s[2] / n <= 2.0, "{name}: DR error\n{summary}");
    }
    // The adaptive logging policy's own true value (Σ pmf·P per decision) is covered too.
    assert!(
        logging_covered >= 18,
        "logging covered in {logging_covered} of {seeds}"
    );
}

/// A candidate acting where the logging policy never does is refused, with the share and the
/// first line; a `--require` on it fails.
#[test]
fn an_unsupported_candidate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("l.jsonl");
    write_logs(&log, 1, Logger::Fixed([0.5, 0.5, 0.0]), 1.0);
    let report = evaluate_json(&[
        "--input",
        log.to_str().unwrap(),
        "--router",
        "cb",
        "--candidate",
        "always:route-2",
        "--candidate",
        "uniform",
        "--candidate",
        "weights:route-0=1,route-1=3",
    ]);
    for name in ["always:route-2", "uniform"] {
        let c = candidate(&report, name);
        assert_eq!(c["status"], "refused", "{c}");
        assert!(c["estimates"].is_null(), "{c}");
        let reason = c["reason"].as_str().unwrap();
        assert!(
            reason.contains("unsupported") && reason.contains("route `route-2`"),
            "{reason}"
        );
        assert_eq!(c["unsupported_share"], 1.0);
    }
    assert_eq!(
        candidate(&report, "weights:route-0=1,route-1=3")["status"],
        "ok"
    );
    let out = evaluate(&[
        "--input",
        log.to_str().unwrap(),
        "--router",
        "cb",
        "--require",
        "always:route-2 > logging",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("requirement not met") && err.contains("unsupported"),
        "{err}"
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("REFUSED"), "{table}");
}

/// `--require "CAND > logging"`: met for a learner over uniform logs (exit 0), not met for a
/// worse route (non-zero, naming the bound).
#[test]
fn require_gates_on_the_lower_bound_of_the_difference() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("l.jsonl");
    write_logs(&log, 2, Logger::Fixed([1.0 / 3.0; ROUTES]), 1.0);
    let path = log.to_str().unwrap();
    let ok = evaluate(&[
        "--input",
        path,
        "--router",
        "cb",
        "--require",
        "greedy-ridge > logging",
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stderr).contains("met"));
    let bad = evaluate(&[
        "--input",
        path,
        "--router",
        "cb",
        "--require",
        "always:route-2 > logging",
    ]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("`always:route-2 > logging`: the DR difference's lower bound is"),
        "{err}"
    );
}

/// The JSON report's shape, the table, the plot, and what unrewarded decisions do.
#[test]
fn json_shape_table_plot_and_unrewarded_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("l.jsonl");
    write_logs(&log, 3, Logger::SquareCb, 0.8);
    let path = log.to_str().unwrap();
    let plot = dir.path().join("p.svg");
    let r = evaluate_json(&[
        "--input",
        path,
        "--router",
        "cb",
        "--candidate",
        "uniform",
        "--plot",
        plot.to_str().unwrap(),
    ]);
    let d = &r["decisions"];
    assert_eq!(d["decisions"], T as u64);
    let rewarded = d["rewarded"].as_u64().unwrap();
    assert_eq!(
        rewarded + d["unrewarded_skipped"].as_u64().unwrap(),
        T as u64
    );
    let share = d["rewarded_share"].as_f64().unwrap();
    assert!((share - 0.8).abs() < 0.02, "{share}");
    assert_eq!(d["scored"], rewarded);
    assert_eq!(
        d["routes"],
        serde_json::json!(["route-0", "route-1", "route-2"])
    );
    assert_eq!(d["context_features"], 6);
    assert!(r["reward_model"].as_str().unwrap().contains("ridge"));
    assert!(
        r["warnings"].as_array().unwrap().iter().any(|w| w
            .as_str()
            .unwrap()
            .contains("no reward within --reward-wait")),
        "{r}"
    );
    let names: Vec<&str> = r["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["uniform", "logging"]);
    let u = candidate(&r, "uniform");
    for key in ["n", "ess", "max_weight", "unsupported_share", "status"] {
        assert!(!u[key].is_null(), "{key}: {u}");
    }
    for e in ["ips", "snips", "dr"] {
        let est = &u["estimates"][e];
        let (v, lo, hi) = (
            est["value"].as_f64().unwrap(),
            est["ci95"][0].as_f64().unwrap(),
            est["ci95"][1].as_f64().unwrap(),
        );
        assert!(lo < v && v < hi, "{est}");
        // The confidence sequence is wider than the fixed-n interval.
        assert!(est["cs"][0].as_f64().unwrap() < lo && est["cs"][1].as_f64().unwrap() > hi);
    }
    for e in ["ips", "dr"] {
        assert!(u["vs_logging"][e]["ci95"].is_array(), "{u}");
    }
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("uniform") && svg.contains("<circle"));
    // A default reward closes every decision instead.
    let r = evaluate_json(&["--input", path, "--router", "cb", "--default-reward", "0"]);
    assert_eq!(r["decisions"]["scored"], T as u64);
    assert_eq!(
        r["decisions"]["defaulted"].as_u64().unwrap(),
        T as u64 - rewarded
    );
    // The table names every estimator.
    let out = evaluate(&["--input", path, "--router", "cb", "--candidate", "uniform"]);
    let table = String::from_utf8_lossy(&out.stdout);
    for word in ["IPS", "SNIPS", "DR", "uniform", "logging", "95% CS"] {
        assert!(table.contains(word), "{word}: {table}");
    }
    // A train/test split scores only the later decisions.
    let r = evaluate_json(&[
        "--input",
        path,
        "--router",
        "cb",
        "--split-at",
        &format!("{}", 1_796_000_000 + T / 2),
    ]);
    assert_eq!(
        r["decisions"]["train"].as_u64().unwrap() + r["decisions"]["scored"].as_u64().unwrap(),
        rewarded
    );
    assert!(r["decisions"]["train"].as_u64().unwrap() > 7000);
}

/// Bad input: the error names the line and the field.
#[test]
fn bad_input_is_named_by_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, lines: &[&str]| -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        p
    };
    let good = r#"{"id":"a","when":"2026-12-07T10:00:00Z","decisions":[{"router":"cb","policy":"weighted","routes":["x","y"],"pmf":[0.5,0.5],"chosen":0}]}"#;
    let other = good.replace("\"cb\"", "\"ab\"");
    let cases: [(&[&str], &[&str], &[&str]); 6] = [
        (
            &[good, "{not json"],
            &[],
            &["line 2", "not a tracking event"],
        ),
        (
            &[
                good,
                r#"{"id":"b","decisions":[{"router":"cb","routes":["x","y"],"chosen":1}]}"#,
            ],
            &[],
            &["line 2", "`pmf`", "missing"],
        ),
        (
            &[
                r#"{"id":"b","decisions":[{"router":"cb","routes":["x","y"],"pmf":[0.5,0.6],"chosen":1}]}"#,
            ],
            &[],
            &["line 1", "`pmf`", "sums to"],
        ),
        (
            &[r#"{"id":"b","decisions":[{"router":"cb","routes":["x","y"],"pmf":[0.5,0.5]}]}"#],
            &[],
            &["line 1", "`decisions`", "chosen"],
        ),
        (
            &[good],
            &["--candidate", "always:z"],
            &["unknown route `z`", "`x`, `y`"],
        ),
        (
            &[other.as_str()],
            &[],
            &["no decision of router `cb`", "`ab`"],
        ),
    ];
    for (i, (lines, extra, wanted)) in cases.iter().enumerate() {
        let p = write(&format!("c{i}.jsonl"), lines);
        let mut args = vec!["--input", p.to_str().unwrap(), "--router", "cb"];
        args.extend_from_slice(extra);
        let out = evaluate(&args);
        assert!(!out.status.success(), "case {i}");
        let err = String::from_utf8_lossy(&out.stderr);
        for w in *wanted {
            assert!(err.contains(w), "case {i}: `{w}` not in {err}");
        }
    }
    // A graph file's contextual policy without features is refused: it reads the context.
    let g = dir.path().join("g.yaml");
    std::fs::write(
        &g,
        "name: g\ngraph:\n  kind: router\n  policy: {type: squarecb}\n  routes: {x: {kind: model}, y: {kind: model}}\n",
    )
    .unwrap();
    let p = write("ok.jsonl", &[good]);
    let out = evaluate(&[
        "--input",
        p.to_str().unwrap(),
        "--router",
        "cb",
        "--candidate",
        g.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("`policy.features` is needed"),
        "{err}"
    );
    // A weighted graph file is a candidate.
    std::fs::write(
        &g,
        "name: g\ngraph:\n  kind: router\n  policy: {type: weighted, weights: {x: 1, y: 3}}\n  routes: {x: {kind: model}, y: {kind: model}}\n",
    )
    .unwrap();
    let r = evaluate_json(&[
        "--input",
        p.to_str().unwrap(),
        "--router",
        "cb",
        "--default-reward",
        "1",
        "--candidate",
        g.to_str().unwrap(),
    ]);
    assert_eq!(r["candidates"][0]["name"], g.to_str().unwrap());
}

/// The DSJSON export, read by Vowpal Wabbit: every line parses as a CB-ADF multi-example with
/// one action per route, and the IPS estimates computed from the labels VW parsed (by hand,
/// and by the VW team's `vw-estimators`: IPS, SNIPS, Gaussian interval) agree with
/// servegraph's to 1e-5 (VW keeps costs and probabilities as 32-bit floats; a wrong field —
/// an off-by-one action, the probability of the wrong route, the cost's sign — is off by far
/// more).
#[test]
fn dsjson_export_is_read_by_vowpal_wabbit() {
    let py = std::env::var_os("SERVEGRAPH_VW_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap())
                .join(".cache/servegraph/venv-vw/bin/python")
        });
    assert!(
        py.exists(),
        "{} is missing: run `scripts/setup.sh --test` (or set SERVEGRAPH_VW_PYTHON)",
        py.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("l.jsonl");
    write_logs(&log, 4, Logger::SquareCb, 0.9);
    let ds = dir.path().join("l.dsjson");
    let r = evaluate_json(&[
        "--input",
        log.to_str().unwrap(),
        "--router",
        "cb",
        "--candidate",
        "always:route-0",
        "--candidate",
        "uniform",
        "--export",
        "dsjson",
        ds.to_str().unwrap(),
    ]);
    let exported = r["decisions"]["exported"].as_u64().unwrap();
    assert_eq!(exported, r["decisions"]["rewarded"].as_u64().unwrap());
    let out = std::process::Command::new(&py)
        .arg(root().join("tests/python/vw_dsjson_check.py"))
        .arg(&ds)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vw: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(vw["lines"].as_u64().unwrap(), exported, "{vw}");
    assert_eq!(vw["actions"], ROUTES as u64);
    let ours = |name: &str| {
        candidate(&r, name)["estimates"]["ips"]["value"]
            .as_f64()
            .unwrap()
    };
    for (name, key) in [
        ("always:route-0", "ips_always_0"),
        ("uniform", "ips_uniform"),
        ("logging", "ips_logging"),
    ] {
        let theirs = vw[key].as_f64().unwrap();
        assert!(
            (ours(name) - theirs).abs() < 1e-5,
            "{name}: servegraph {} VW-parsed {theirs}",
            ours(name)
        );
    }
    // The VW team's estimators library on the labels VW parsed: IPS, SNIPS and the Gaussian
    // interval (the same formula: sample variance / n) agree too.
    for (name, key) in [("always:route-0", "always_0"), ("uniform", "uniform")] {
        let theirs = &vw[format!("estimators_{key}")];
        let c = &candidate(&r, name)["estimates"];
        for (ours, theirs) in [
            (&c["ips"]["value"], &theirs["ips"]),
            (&c["snips"]["value"], &theirs["snips"]),
            (&c["ips"]["ci95"][0], &theirs["gaussian95"][0]),
            (&c["ips"]["ci95"][1], &theirs["gaussian95"][1]),
        ] {
            let (a, b) = (ours.as_f64().unwrap(), theirs.as_f64().unwrap());
            assert!(
                (a - b).abs() < 1e-5,
                "{name}: servegraph {a}, vw-estimators {b}"
            );
        }
    }
    eprintln!("VW cross-check: {vw}");
}

/// `--kafka`: a tracking topic is read to its end as a consumer group of its own, giving the
/// same report as the same events read from a file; the same group run again has nothing new.
#[test]
fn a_kafka_topic_is_read_to_its_end_as_its_own_group() {
    use common::kafka;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("l.jsonl");
    write_logs(&log, 5, Logger::Fixed([0.2, 0.5, 0.3]), 1.0);
    // The first 4,000 lines (2,000 decisions and their feedback), in one partition (the
    // stream's order).
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().take(4000).collect();
    let part = dir.path().join("part.jsonl");
    std::fs::write(&part, lines.join("\n") + "\n").unwrap();
    let topic = kafka::unique("evaluate-events");
    kafka::create_topics(&[(&topic, 1)]);
    let records: Vec<kafka::Outgoing> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| (format!("k{i}"), (*l).to_owned(), Vec::new()))
        .collect();
    kafka::produce(&topic, &records);
    let url = format!("{}/{topic}", kafka::broker());
    let group = kafka::unique("evaluate-group");
    let common_args = ["--router", "cb", "--candidate", "uniform"];
    let mut args = vec!["--kafka", url.as_str(), "--group", group.as_str()];
    args.extend_from_slice(&common_args);
    let from_kafka = evaluate_json(&args);
    let mut args = vec!["--input", part.to_str().unwrap()];
    args.extend_from_slice(&common_args);
    let from_file = evaluate_json(&args);
    assert_eq!(from_kafka["decisions"], from_file["decisions"]);
    assert_eq!(from_kafka["decisions"]["scored"], 2000);
    assert_eq!(from_kafka["candidates"], from_file["candidates"]);
    // The group's offsets were committed at the end: nothing new to read.
    let mut args = vec!["--kafka", url.as_str(), "--group", group.as_str()];
    args.extend_from_slice(&common_args);
    let again = evaluate(&args);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("no decision of router `cb`"), "{err}");
}

/// `sampled` < 1 weighs a decision as 1/sampled of them: a stream keeping 1 in 2 (`sampled:
/// 0.5`) gives the estimates of the stream with each decision twice; mixed generations and
/// late feedback are warned of.
#[test]
fn sampled_decisions_are_reweighted_and_mixed_generations_warned_of() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SmallRng::seed_from_u64(9);
    let mut halved = String::new();
    let mut doubled = String::new();
    for i in 0..3000 {
        let pmf = [0.2, 0.5, 0.3];
        let chosen = (0..3)
            .find(|&a| rng.random::<f64>() < pmf[a] / pmf[a..].iter().sum::<f64>())
            .unwrap_or(2);
        let reward = f64::from(u8::from(rng.random::<f64>() < [0.3, 0.5, 0.7][chosen]));
        let generation = if i < 1500 { 1 } else { 2 };
        let when = format!("2026-12-07T10:{:02}:{:02}Z", i / 60 % 60, i % 60);
        let line = |id: &str, sampled: f64| {
            format!(
                "{}\n{}\n",
                serde_json::json!({"id": id, "when": when, "decisions": [{"router": "cb", "policy": "weighted",
                    "generation": generation, "routes": ["a", "b", "c"], "pmf": pmf, "chosen": chosen, "sampled": sampled}]}),
                serde_json::json!({"id": id, "when": when, "op": "feedback", "model": "cb", "reward": reward})
            )
        };
        halved.push_str(&line(&format!("r{i}"), 0.5));
        doubled.push_str(&line(&format!("r{i}"), 1.0));
        doubled.push_str(&line(&format!("r{i}-twin"), 1.0));
    }
    // A reward for a decision whose wait is over does not count.
    halved.push_str(
        "{\"id\":\"r0\",\"when\":\"2026-12-07T12:00:00Z\",\"op\":\"feedback\",\"model\":\"cb\",\"reward\":1}\n",
    );
    let (h, d) = (dir.path().join("h.jsonl"), dir.path().join("d.jsonl"));
    std::fs::write(&h, halved).unwrap();
    std::fs::write(&d, doubled).unwrap();
    let run = |p: &Path| {
        evaluate_json(&[
            "--input",
            p.to_str().unwrap(),
            "--router",
            "cb",
            "--reward-wait",
            "10m",
            "--candidate",
            "always:c",
            "--candidate",
            "uniform",
        ])
    };
    let (rh, rd) = (run(&h), run(&d));
    assert_eq!(rh["decisions"]["sampled_below_1"], 3000);
    assert_eq!(rh["decisions"]["scored"], 3000);
    assert_eq!(rd["decisions"]["scored"], 6000);
    for name in ["always:c", "uniform"] {
        for e in ["ips", "snips"] {
            let (a, b) = (
                candidate(&rh, name)["estimates"][e]["value"]
                    .as_f64()
                    .unwrap(),
                candidate(&rd, name)["estimates"][e]["value"]
                    .as_f64()
                    .unwrap(),
            );
            assert!((a - b).abs() < 1e-12, "{name} {e}: {a} vs {b}");
        }
    }
    let warnings = rh["warnings"].to_string();
    assert!(warnings.contains("generations [1, 2]"), "{warnings}");
    assert!(warnings.contains("sampled < 1"), "{warnings}");
    assert_eq!(rh["decisions"]["unmatched_feedback"], 1);
    assert!(warnings.contains("came after"), "{warnings}");
    // Without `context`, DR's reward model is each route's mean, and the report says so.
    assert!(
        rh["reward_model"]
            .as_str()
            .unwrap()
            .starts_with("per-route mean reward"),
        "{}",
        rh["reward_model"]
    );
    assert!(warnings.contains("no `context`"), "{warnings}");
    // `--clip 2`: always:c's weight is 1/0.3 whenever it counts, so clipping scales IPS by 0.6.
    let clipped = evaluate_json(&[
        "--input",
        d.to_str().unwrap(),
        "--router",
        "cb",
        "--candidate",
        "always:c",
        "--clip",
        "2",
    ]);
    let ips = |r: &Value| {
        candidate(r, "always:c")["estimates"]["ips"]["value"]
            .as_f64()
            .unwrap()
    };
    assert!((ips(&clipped) / ips(&rd) - 0.6).abs() < 1e-9);
    assert_eq!(clipped["settings"]["clip"], 2.0);
}

/// A graph file's contextual router is a candidate, replayed over the logs (progressive
/// validation: scored on each decision, then learning from its logged route and reward). On
/// SquareCB logs, a SquareCB router without the logger's 5 % floor is estimated near the
/// ideal policy's value (0.626; it pays for its own early learning) and far above uniform;
/// a router whose features do not make the logged context's width is refused.
#[test]
fn a_contextual_router_is_replayed_as_a_candidate() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("l.jsonl");
    let (world, _) = write_logs(&log, 5, Logger::SquareCb, 1.0);
    let graph = |size: usize| {
        let g = dir.path().join(format!("cb{size}.yaml"));
        std::fs::write(
            &g,
            format!(
                "name: g\ngraph:\n  kind: router\n  policy: {{type: squarecb, seed: 3, features: [{{tensor: x, size: {size}}}]}}\n  routes: {{route-0: {{kind: model}}, route-1: {{kind: model}}, route-2: {{kind: model}}}}\n"
            ),
        )
        .unwrap();
        g
    };
    let g = graph(FEATURES);
    let report = evaluate_json(&[
        "--input",
        log.to_str().unwrap(),
        "--router",
        "cb",
        "--candidate",
        g.to_str().unwrap(),
        "--candidate",
        "uniform",
    ]);
    let dr = |name: &str| {
        candidate(&report, name)["estimates"]["dr"]["value"]
            .as_f64()
            .unwrap()
    };
    let (cb, uniform) = (dr(g.to_str().unwrap()), dr("uniform"));
    let ideal = world.value(|i| {
        let mut p = [0.0; ROUTES];
        p[world.best(i)] = 1.0;
        p
    });
    assert!(
        cb > ideal - 0.03 && cb < ideal + 0.02 && cb > uniform + 0.08,
        "squarecb {cb}, uniform {uniform}, ideal {ideal}"
    );
    let out = evaluate(&[
        "--input",
        log.to_str().unwrap(),
        "--router",
        "cb",
        "--candidate",
        graph(4).to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("make 5 numbers") && err.contains("has 6"),
        "{err}"
    );
}
