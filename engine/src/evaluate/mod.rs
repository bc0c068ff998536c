//! Off-policy evaluation of a router's logged decisions (`servegraph evaluate`): the tracking
//! stream's decisions of one router (`decisions[]`: routes, pmf, chosen, context, generation,
//! sampled) joined by request `id` with its feedback events (`op: feedback`, the router in
//! `model`), and, for each candidate policy, what it would have earned:
//!
//! - IPS: mean of f·min(w, λ)·r, w = π(chosen|x)/p(chosen), f = 1/sampled (a sampled stream's
//!   decision stands for 1/sampled of them);
//! - SNIPS: Σ f·w·r / Σ f·w;
//! - DR: mean of f·(Σ_a π(a|x)·q̂(x, a) + w·(r − q̂(x, chosen))), q̂ a per-route ridge
//!   regression on `context` (λ = 1; a per-route mean without `context`), cross-fitted: the
//!   decisions are dealt into two folds alternately, and each fold's terms use the model fitted
//!   on the other fold. q̂ is linear in its parameters, so each fold keeps the sums its terms
//!   need (Σ f·u, Σ f²·u·uᵀ, …, u the K·d vector q̂'s parameters multiply) and the estimate and
//!   its variance are computed at the end: the stream is read once, in bounded memory.
//!
//! Intervals: Gaussian (CLT) 95 %, and an asymptotic confidence sequence (the normal-mixture
//! boundary of Waudby-Smith, Arbour, Sinha, Kennedy & Ramdas, "Time-uniform central limit
//! theory and asymptotic confidence sequences", arXiv 2103.06476, eq. 155 — the one the
//! experiment readouts use, [`crate::experiment::sequential`]), valid however often the
//! evaluation is re-run as the stream grows. Candidate − logging differences are computed
//! per decision (paired), so their variance is the difference's.
//!
//! The stream is read by the monitor's line reader ([`crate::monitor::Line`]), decisions
//! included ([`DecisionLine`]).

// The linear algebra indexes matrices by row and column: index loops read as the formulas.
#![allow(clippy::needless_range_loop)]

pub mod candidate;
pub mod svg;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write;
use std::time::SystemTime;

use serde_json::{Value, json};

use crate::monitor::experiments::DecisionLine;

pub use candidate::{Candidate, PolicyCandidates, parse_candidate, register_policy_candidates};

/// z for a two-sided 95 % interval.
const Z95: f64 = 1.959_963_984_540_054;
/// The largest K·d (routes × context features) the DR sums are kept for: each candidate keeps
/// four (K·d)² matrices (two folds, value and difference).
pub const MAX_DR_DIM: usize = 512;
/// ESS below this is warned of loudly.
pub const LOW_ESS: f64 = 1000.0;

/// One logged decision of the evaluated router, as a candidate sees it.
#[derive(Clone, Debug)]
pub struct LoggedDecision {
    /// The request's id (the join key).
    pub id: Option<String>,
    /// The request's time, seconds since the epoch (when the event has one).
    pub when: Option<f64>,
    /// The line of the input it came from (1-based; Kafka: the message count).
    pub line: u64,
    pub routes: Vec<String>,
    pub pmf: Vec<f64>,
    pub chosen: usize,
    /// The featurised vector the policy saw (intercept last).
    pub context: Option<Vec<f64>>,
    pub generation: Option<u64>,
    pub policy: String,
    /// The probability the tracking stream kept the request (1 / `sample`).
    pub sampled: f64,
    /// The reward (once joined; or the default reward).
    pub reward: Option<f64>,
}

/// What to do with a decision no reward came for within the wait.
#[derive(Clone, Copy, Debug)]
pub enum Unrewarded {
    Skip,
    Default(f64),
}

/// How an evaluation runs.
#[derive(Clone, Debug)]
pub struct Settings {
    pub router: String,
    /// IPS clipping λ (weights above it count as λ).
    pub clip: Option<f64>,
    /// Seconds a decision waits for its reward (by the events' `when`).
    pub reward_wait: f64,
    pub unrewarded: Unrewarded,
    /// Decisions waiting at most; past it the oldest is closed early (and counted).
    pub max_pending: usize,
    /// Decisions before this (seconds since the epoch) train the candidates but are not scored.
    pub split_at: Option<f64>,
    /// Decisions outside [since, until) are ignored.
    pub since: Option<f64>,
    pub until: Option<f64>,
    /// The confidence sequence's tuning: the sample size it is tightest at, and α.
    pub planned_n: u64,
    pub alpha: f64,
}

/// Running sums for a mean of per-decision terms c = u·θ + v (θ known only at the end), each
/// with a frequency weight f: F = Σf, Σf², Σf·u, Σf·v, Σf²·u·uᵀ, Σf²·v·u, Σf²·v², Σf²·u, Σf²·v.
#[derive(Clone, Debug)]
struct LinSums {
    dim: usize,
    n: u64,
    f: f64,
    f2: f64,
    fu: Vec<f64>,
    fv: f64,
    f2uu: Vec<f64>,
    f2vu: Vec<f64>,
    f2v2: f64,
    f2u: Vec<f64>,
    f2v: f64,
}

impl LinSums {
    fn new(dim: usize) -> LinSums {
        LinSums {
            dim,
            n: 0,
            f: 0.0,
            f2: 0.0,
            fu: vec![0.0; dim],
            fv: 0.0,
            f2uu: vec![0.0; dim * dim],
            f2vu: vec![0.0; dim],
            f2v2: 0.0,
            f2u: vec![0.0; dim],
            f2v: 0.0,
        }
    }

    fn add(&mut self, f: f64, u: &[f64], v: f64) {
        let f2 = f * f;
        self.n += 1;
        self.f += f;
        self.f2 += f2;
        self.fv += f * v;
        self.f2v2 += f2 * v * v;
        self.f2v += f2 * v;
        for (i, &ui) in u.iter().enumerate() {
            if ui == 0.0 {
                continue;
            }
            self.fu[i] += f * ui;
            self.f2vu[i] += f2 * v * ui;
            self.f2u[i] += f2 * ui;
            let row = &mut self.f2uu[i * self.dim..(i + 1) * self.dim];
            for (r, &uj) in row.iter_mut().zip(u) {
                *r += f2 * ui * uj;
            }
        }
    }

    /// Σ f·c, Σ f²·c², Σ f²·c for θ.
    fn moments(&self, theta: &[f64]) -> (f64, f64, f64) {
        let dot = |a: &[f64]| a.iter().zip(theta).map(|(x, t)| x * t).sum::<f64>();
        let sum = dot(&self.fu) + self.fv;
        let mut quad = 0.0;
        for i in 0..self.dim {
            let row = &self.f2uu[i * self.dim..(i + 1) * self.dim];
            quad += theta[i] * dot(row);
        }
        let sq = quad + 2.0 * dot(&self.f2vu) + self.f2v2;
        let lin = dot(&self.f2u) + self.f2v;
        (sum, sq, lin)
    }
}

/// A mean, its variance and n, from the sums of one or more folds.
#[derive(Clone, Copy, Debug, Default)]
struct Mean {
    n: u64,
    f: f64,
    f2: f64,
    sum: f64,
    sq: f64,
    lin: f64,
}

impl Mean {
    fn take(&mut self, s: &LinSums, theta: &[f64]) {
        let (sum, sq, lin) = s.moments(theta);
        self.n += s.n;
        self.f += s.f;
        self.f2 += s.f2;
        self.sum += sum;
        self.sq += sq;
        self.lin += lin;
    }

    fn value(&self) -> f64 {
        self.sum / self.f
    }

    /// The variance of the weighted mean: Σ f²(c − m)² / F², times n/(n − 1).
    fn variance(&self) -> f64 {
        let m = self.value();
        let ss = (self.sq - 2.0 * m * self.lin + m * m * self.f2).max(0.0);
        let n = self.n as f64;
        ss / (self.f * self.f) * n / (n - 1.0).max(1.0)
    }
}

/// One estimate with its intervals, as reported.
fn interval(m: f64, var: f64, n: u64, settings: &Settings) -> Value {
    let half = Z95 * var.sqrt();
    let rho = crate::experiment::Settings {
        control: String::new(),
        planned_n: settings.planned_n,
        alpha: settings.alpha,
        min_sample: 0,
    }
    .rho();
    let (cs_half, _) =
        crate::experiment::sequential(m, var.max(1e-300), n as f64, rho, settings.alpha);
    json!({"value": m, "se": var.sqrt(), "ci95": [m - half, m + half], "cs": [m - cs_half, m + cs_half]})
}

/// A candidate's sums.
struct CandidateSums {
    candidate: Box<dyn Candidate>,
    scored: u64,
    unsupported: u64,
    /// The first unsupported decision's line and route.
    first_unsupported: Option<(u64, String)>,
    fw: f64,
    f2w2: f64,
    max_w: f64,
    /// SNIPS: Σ f·w·r, Σ f²w², Σ f²w²r, Σ f²w²r².
    fwr: f64,
    f2w2r: f64,
    f2w2r2: f64,
    ips: LinSums,
    ips_diff: LinSums,
    /// DR per fold: the value and the difference with the logging policy.
    dr: [LinSums; 2],
    dr_diff: [LinSums; 2],
}

/// Per-route ridge sums of one fold: A = Σ x·xᵀ, b = Σ r·x over the decisions that chose it.
#[derive(Clone, Debug)]
struct RidgeSums {
    a: Vec<Vec<f64>>,
    b: Vec<Vec<f64>>,
    n: Vec<u64>,
}

impl RidgeSums {
    fn new(routes: usize, d: usize) -> RidgeSums {
        RidgeSums {
            a: vec![vec![0.0; d * d]; routes],
            b: vec![vec![0.0; d]; routes],
            n: vec![0; routes],
        }
    }

    fn add(&mut self, route: usize, x: &[f64], r: f64) {
        let d = x.len();
        self.n[route] += 1;
        for i in 0..d {
            self.b[route][i] += r * x[i];
            for j in 0..d {
                self.a[route][i * d + j] += x[i] * x[j];
            }
        }
    }

    /// θ stacked by route: (λI + A)⁻¹ b per route.
    fn theta(&self, d: usize, lambda: f64) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.a.len() * d);
        for (a, b) in self.a.iter().zip(&self.b) {
            let mut m = a.clone();
            for i in 0..d {
                m[i * d + i] += lambda;
            }
            out.extend(solve(m, b.clone(), d));
        }
        out
    }
}

/// Solves m·x = b (m symmetric positive definite, d×d) by Gaussian elimination with pivoting.
pub fn solve(mut m: Vec<f64>, mut b: Vec<f64>, d: usize) -> Vec<f64> {
    for col in 0..d {
        let pivot = (col..d)
            .max_by(|&i, &j| m[i * d + col].abs().total_cmp(&m[j * d + col].abs()))
            .unwrap_or(col);
        if pivot != col {
            for k in 0..d {
                m.swap(col * d + k, pivot * d + k);
            }
            b.swap(col, pivot);
        }
        let p = m[col * d + col];
        if p.abs() < 1e-300 {
            continue;
        }
        for row in col + 1..d {
            let factor = m[row * d + col] / p;
            if factor == 0.0 {
                continue;
            }
            for k in col..d {
                m[row * d + k] -= factor * m[col * d + k];
            }
            b[row] -= factor * b[col];
        }
    }
    let mut x = vec![0.0; d];
    for row in (0..d).rev() {
        let s: f64 = (row + 1..d).map(|k| m[row * d + k] * x[k]).sum();
        let p = m[row * d + row];
        x[row] = if p.abs() < 1e-300 {
            0.0
        } else {
            (b[row] - s) / p
        };
    }
    x
}

/// The evaluation of one router's decisions, fed line by line.
pub struct Evaluation {
    settings: Settings,
    candidates: Vec<CandidateSums>,
    logging: Box<dyn Candidate>,
    /// Decisions waiting for their reward, by id, and their order (id, time).
    pending: HashMap<String, LoggedDecision>,
    order: VecDeque<String>,
    /// The latest `when` seen.
    now: f64,
    /// The route set and context dimension (the first decision's).
    routes: Option<Vec<String>>,
    dim: Option<usize>,
    has_context: Option<bool>,
    /// Whether the candidates were checked against the route set.
    checked: bool,
    ridge: [Option<RidgeSums>; 2],
    folds_dealt: u64,
    export: Option<Box<dyn Write>>,
    exported: u64,
    // Counts.
    lines: u64,
    decisions: u64,
    outside_range: u64,
    no_id: u64,
    rewarded: u64,
    defaulted: u64,
    unrewarded: u64,
    train: u64,
    scored: u64,
    evicted: u64,
    duplicate_feedback: u64,
    unmatched_feedback: u64,
    subsampled: u64,
    generations: BTreeMap<u64, u64>,
    policies: BTreeMap<String, u64>,
    other_routers: BTreeMap<String, u64>,
    units: BTreeMap<String, u64>,
}

fn parse_time(s: &str) -> Option<f64> {
    humantime::parse_rfc3339_weak(s)
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64())
}

/// A time given on the command line: RFC 3339 (`2026-12-07T10:00:00Z`) or seconds since the
/// epoch.
pub fn parse_time_arg(s: &str) -> Result<f64, String> {
    s.parse::<f64>().ok().or_else(|| parse_time(s)).ok_or_else(|| {
        format!("`{s}` is not a time (RFC 3339, e.g. 2026-12-07T10:00:00Z, or seconds since the epoch)")
    })
}

/// A duration given on the command line: `30s`, `10m`, `1h 30m`, or seconds.
pub fn parse_duration_arg(s: &str) -> Result<f64, String> {
    humantime::parse_duration(s)
        .map(|d| d.as_secs_f64())
        .or_else(|_| s.parse::<f64>())
        .ok()
        .filter(|d| *d >= 0.0)
        .ok_or_else(|| format!("`{s}` is not a duration (`30s`, `10m`, `1h`, or seconds)"))
}

impl Evaluation {
    pub fn new(
        settings: Settings,
        candidates: Vec<Box<dyn Candidate>>,
        export: Option<Box<dyn Write>>,
    ) -> Evaluation {
        Evaluation {
            candidates: candidates
                .into_iter()
                .map(|candidate| CandidateSums {
                    candidate,
                    scored: 0,
                    unsupported: 0,
                    first_unsupported: None,
                    fw: 0.0,
                    f2w2: 0.0,
                    max_w: 0.0,
                    fwr: 0.0,
                    f2w2r: 0.0,
                    f2w2r2: 0.0,
                    ips: LinSums::new(0),
                    ips_diff: LinSums::new(0),
                    dr: [LinSums::new(0), LinSums::new(0)],
                    dr_diff: [LinSums::new(0), LinSums::new(0)],
                })
                .collect(),
            logging: Box::new(candidate::Logging),
            settings,
            pending: HashMap::new(),
            order: VecDeque::new(),
            now: f64::NEG_INFINITY,
            routes: None,
            dim: None,
            has_context: None,
            checked: false,
            ridge: [None, None],
            folds_dealt: 0,
            export,
            exported: 0,
            lines: 0,
            decisions: 0,
            outside_range: 0,
            no_id: 0,
            rewarded: 0,
            defaulted: 0,
            unrewarded: 0,
            train: 0,
            scored: 0,
            evicted: 0,
            duplicate_feedback: 0,
            unmatched_feedback: 0,
            subsampled: 0,
            generations: BTreeMap::new(),
            policies: BTreeMap::new(),
            other_routers: BTreeMap::new(),
            units: BTreeMap::new(),
        }
    }

    /// One line of the stream (`line` its 1-based number, for errors).
    pub fn line(&mut self, line: u64, text: &[u8]) -> Result<(), String> {
        let text = text.trim_ascii();
        if text.is_empty() {
            return Ok(());
        }
        self.lines += 1;
        let mut event: crate::monitor::Line = match serde_json::from_slice(text) {
            Ok(e) => e,
            Err(e) => {
                // Valid JSON: name the field (a decision's) that is wrong.
                if let Ok(mut v) = serde_json::from_slice::<Value>(text)
                    && let Err(d) =
                        serde_json::from_value::<Option<Vec<DecisionLine>>>(v["decisions"].take())
                {
                    return Err(format!("line {line}: `decisions`: {d}"));
                }
                return Err(format!("line {line}: not a tracking event: {e}"));
            }
        };
        let when = match event.when.as_deref() {
            Some(w) => Some(
                parse_time(w)
                    .ok_or_else(|| format!("line {line}: `when`: `{w}` is not an RFC 3339 time"))?,
            ),
            None => None,
        };
        if event.is_feedback() {
            if event.model.as_deref() == Some(self.settings.router.as_str())
                && let (Some(id), Some(reward)) = (event.id.as_deref(), event.reward)
            {
                if !reward.is_finite() {
                    return Err(format!("line {line}: `reward`: {reward} is not a number"));
                }
                match self.pending.get_mut(id) {
                    Some(d) if d.reward.is_none() => d.reward = Some(reward),
                    Some(_) => self.duplicate_feedback += 1,
                    None => self.unmatched_feedback += 1,
                }
            }
        } else if !event.shadow
            && let Some(decisions) = event.decisions.take()
        {
            for d in decisions {
                if d.router != self.settings.router {
                    *self.other_routers.entry(d.router).or_default() += 1;
                    continue;
                }
                self.decision(line, event.id.as_deref(), when, d)?;
            }
        }
        if let Some(t) = when {
            self.now = self.now.max(t);
        }
        self.close_due()
    }

    fn decision(
        &mut self,
        line: u64,
        id: Option<&str>,
        when: Option<f64>,
        d: DecisionLine,
    ) -> Result<(), String> {
        let router = &self.settings.router;
        let at = |field: &str, msg: String| {
            format!("line {line}: router `{router}`'s decision: `{field}`: {msg}")
        };
        let Some(pmf) = d.pmf else {
            return Err(at(
                "pmf",
                format!(
                    "missing (policy `{}`): without the probabilities the policy chose with, its decisions cannot be evaluated",
                    d.policy
                ),
            ));
        };
        if pmf.len() != d.routes.len() {
            return Err(at(
                "pmf",
                format!("{} probabilities for {} routes", pmf.len(), d.routes.len()),
            ));
        }
        if let Some(p) = pmf.iter().find(|p| !(0.0..=1.0).contains(*p)) {
            return Err(at("pmf", format!("{p} is not a probability")));
        }
        let total: f64 = pmf.iter().sum();
        if (total - 1.0).abs() > 1e-6 {
            return Err(at("pmf", format!("sums to {total}, not 1")));
        }
        if d.chosen >= d.routes.len() {
            return Err(at(
                "chosen",
                format!("{} is not an index of {} routes", d.chosen, d.routes.len()),
            ));
        }
        if pmf[d.chosen] <= 0.0 {
            return Err(at(
                "pmf",
                format!(
                    "the chosen route `{}` has probability {}: the logged propensity must be the one the route was drawn with",
                    d.routes[d.chosen], pmf[d.chosen]
                ),
            ));
        }
        let sampled = d.sampled.unwrap_or(1.0);
        if !(sampled > 0.0 && sampled <= 1.0) {
            return Err(at("sampled", format!("{sampled} is not in (0, 1]")));
        }
        if let Some(x) = &d.context
            && let Some(v) = x.iter().find(|v| !v.is_finite())
        {
            return Err(at("context", format!("{v} is not a number")));
        }
        match &self.routes {
            None => self.routes = Some(d.routes.clone()),
            Some(r) if *r != d.routes => {
                return Err(at(
                    "routes",
                    format!(
                        "{:?} differ from the earlier decisions' {:?}: evaluate one route set at a time (--since/--until)",
                        d.routes, r
                    ),
                ));
            }
            Some(_) => {}
        }
        match (self.has_context, &d.context) {
            (None, x) => {
                self.has_context = Some(x.is_some());
                self.dim = Some(x.as_ref().map_or(1, Vec::len));
            }
            (Some(true), None) => {
                return Err(at(
                    "context",
                    "missing, while earlier decisions have one".into(),
                ));
            }
            (Some(false), Some(_)) => {
                return Err(at(
                    "context",
                    "present, while earlier decisions have none".into(),
                ));
            }
            (Some(true), Some(x)) if Some(x.len()) != self.dim => {
                return Err(at(
                    "context",
                    format!(
                        "{} features, earlier decisions {}",
                        x.len(),
                        self.dim.unwrap_or(0)
                    ),
                ));
            }
            _ => {}
        }
        if !self.checked {
            self.checked = true;
            let routes = self.routes.clone().unwrap_or_default();
            for c in &self.candidates {
                c.candidate
                    .check(&routes, self.dim.filter(|_| self.has_context == Some(true)))
                    .map_err(|e| format!("{e} (line {line})"))?;
            }
        }
        if let (Some(t), Some(lo)) = (when, self.settings.since)
            && t < lo
        {
            self.outside_range += 1;
            return Ok(());
        }
        if let (Some(t), Some(hi)) = (when, self.settings.until)
            && t >= hi
        {
            self.outside_range += 1;
            return Ok(());
        }
        self.decisions += 1;
        if let Some(g) = d.generation {
            *self.generations.entry(g).or_default() += 1;
        }
        *self.policies.entry(d.policy.clone()).or_default() += 1;
        if let Some(u) = &d.unit {
            *self.units.entry(u.clone()).or_default() += 1;
        }
        if sampled < 1.0 {
            self.subsampled += 1;
        }
        let logged = LoggedDecision {
            id: id.map(str::to_owned),
            when,
            line,
            routes: d.routes,
            pmf,
            chosen: d.chosen,
            context: d.context,
            generation: d.generation,
            policy: d.policy,
            sampled,
            reward: None,
        };
        let Some(id) = id else {
            self.no_id += 1;
            return self.close(logged);
        };
        if self.pending.contains_key(id) {
            return Err(format!(
                "line {line}: `id`: `{id}` has a decision of router `{router}` already waiting: ids must be unique"
            ));
        }
        self.pending.insert(id.to_owned(), logged);
        self.order.push_back(id.to_owned());
        while self.order.len() > self.settings.max_pending {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(d) = self.pending.remove(&old) {
                self.evicted += 1;
                self.close(d)?;
            }
        }
        Ok(())
    }

    /// Closes the decisions whose reward wait is over.
    fn close_due(&mut self) -> Result<(), String> {
        while let Some(id) = self.order.front() {
            let due = match self.pending.get(id).and_then(|d| d.when) {
                Some(t) => t + self.settings.reward_wait <= self.now,
                None => false,
            };
            if !due {
                break;
            }
            let id = self.order.pop_front().unwrap_or_default();
            if let Some(d) = self.pending.remove(&id) {
                self.close(d)?;
            }
        }
        Ok(())
    }

    /// A decision's wait is over: its reward (or the default) is final.
    fn close(&mut self, mut d: LoggedDecision) -> Result<(), String> {
        let reward = match (d.reward, self.settings.unrewarded) {
            (Some(r), _) => {
                self.rewarded += 1;
                r
            }
            (None, Unrewarded::Default(r)) => {
                self.defaulted += 1;
                d.reward = Some(r);
                r
            }
            (None, Unrewarded::Skip) => {
                self.unrewarded += 1;
                return Ok(());
            }
        };
        if let Some(out) = &mut self.export {
            let line = dsjson(&d, reward);
            writeln!(out, "{line}").map_err(|e| format!("writing the DSJSON export: {e}"))?;
            self.exported += 1;
        }
        let train = matches!((self.settings.split_at, d.when), (Some(s), Some(t)) if t < s)
            || (self.settings.split_at.is_some() && d.when.is_none());
        if train {
            self.train += 1;
        } else {
            self.score(&d, reward)?;
        }
        for c in &mut self.candidates {
            c.candidate.learn(&d, reward);
        }
        Ok(())
    }

    fn score(&mut self, d: &LoggedDecision, r: f64) -> Result<(), String> {
        self.scored += 1;
        let k = d.routes.len();
        let dim = self.dim.unwrap_or(1);
        let x: Vec<f64> = d.context.clone().unwrap_or_else(|| vec![1.0]);
        let kd = k * dim;
        if kd > MAX_DR_DIM {
            return Err(format!(
                "{k} routes × {dim} context features = {kd}: more than the {MAX_DR_DIM} the doubly robust estimator's sums are kept for"
            ));
        }
        let fold = (self.folds_dealt % 2) as usize;
        self.folds_dealt += 1;
        self.ridge[fold]
            .get_or_insert_with(|| RidgeSums::new(k, dim))
            .add(d.chosen, &x, r);
        let f = 1.0 / d.sampled;
        let p = d.pmf[d.chosen];
        let clip = self.settings.clip.unwrap_or(f64::INFINITY);
        // The logging policy's own terms (w = 1).
        let log_pmf = self.logging.pmf(d);
        let u_of = |pi: &[f64], w: f64| {
            let mut u = vec![0.0; kd];
            for a in 0..k {
                let coef = pi[a] - if a == d.chosen { w } else { 0.0 };
                if coef != 0.0 {
                    for j in 0..dim {
                        u[a * dim + j] = coef * x[j];
                    }
                }
            }
            u
        };
        let u_log = u_of(&log_pmf, 1.0);
        for c in &mut self.candidates {
            let pi = c.candidate.pmf(d);
            if pi.len() != k {
                return Err(format!(
                    "candidate `{}` gave {} probabilities for {k} routes",
                    c.candidate.name(),
                    pi.len()
                ));
            }
            c.scored += 1;
            if let Some(a) = (0..k).find(|&a| pi[a] > 1e-12 && d.pmf[a] <= 0.0) {
                c.unsupported += 1;
                if c.first_unsupported.is_none() {
                    c.first_unsupported = Some((d.line, d.routes[a].clone()));
                }
            }
            let w = pi[d.chosen] / p;
            c.fw += f * w;
            c.f2w2 += f * f * w * w;
            c.max_w = c.max_w.max(w);
            c.fwr += f * w * r;
            c.f2w2r += f * f * w * w * r;
            c.f2w2r2 += f * f * w * w * r * r;
            c.ips.add(f, &[], w.min(clip) * r);
            c.ips_diff
                .add(f, &[], (w.min(clip) - 1.0_f64.min(clip)) * r);
            if c.dr[0].dim != kd {
                c.dr = [LinSums::new(kd), LinSums::new(kd)];
                c.dr_diff = [LinSums::new(kd), LinSums::new(kd)];
            }
            let u = u_of(&pi, w);
            let du: Vec<f64> = u.iter().zip(&u_log).map(|(a, b)| a - b).collect();
            c.dr[fold].add(f, &u, w * r);
            c.dr_diff[fold].add(f, &du, (w - 1.0) * r);
        }
        Ok(())
    }

    /// The end of the stream: every decision still waiting is closed.
    pub fn finish(&mut self) -> Result<(), String> {
        while let Some(id) = self.order.pop_front() {
            if let Some(d) = self.pending.remove(&id) {
                self.close(d)?;
            }
        }
        if let Some(out) = &mut self.export {
            out.flush()
                .map_err(|e| format!("writing the DSJSON export: {e}"))?;
        }
        Ok(())
    }

    /// Decisions waiting for their reward now.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The report (see docs/experiments.md for its fields). An error when the router made no
    /// decision in the stream.
    pub fn report(&self) -> Result<Value, String> {
        let s = &self.settings;
        if self.decisions == 0 && self.outside_range == 0 {
            let seen: Vec<&String> = self.other_routers.keys().collect();
            return Err(if seen.is_empty() {
                format!(
                    "no decision of router `{}` in the stream ({} lines; no router's decisions at all: is the router's policy one that logs them?)",
                    s.router, self.lines
                )
            } else {
                format!(
                    "no decision of router `{}` in the stream; routers with decisions: {}",
                    s.router,
                    seen.iter()
                        .map(|r| format!("`{r}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
        }
        let mut warnings: Vec<String> = Vec::new();
        let dim = self.dim.unwrap_or(1);
        let has_context = self.has_context == Some(true);
        let thetas: [Vec<f64>; 2] = [0, 1].map(|fold| {
            self.ridge[fold]
                .as_ref()
                .map(|r| r.theta(dim, if has_context { 1.0 } else { 1e-9 }))
                .unwrap_or_default()
        });
        let reward_model = if has_context {
            format!(
                "per-route ridge regression on `context` ({dim} features, λ = 1), cross-fitted on 2 folds"
            )
        } else {
            warnings.push("the decisions have no `context`: DR's reward model is each route's mean reward (cross-fitted on 2 folds), so DR is IPS with a control variate, not a contextual model".into());
            "per-route mean reward (no `context`), cross-fitted on 2 folds".into()
        };
        if self
            .ridge
            .iter()
            .any(|r| r.as_ref().is_none_or(|r| r.n.contains(&0)))
            && self.scored > 0
        {
            warnings.push("a fold has no rewarded decision of some route: its reward model predicts 0 there (DR stays unbiased, with a larger variance)".into());
        }
        if self.generations.len() > 1 {
            warnings.push(format!(
                "the logging policy changed during the stream: generations {:?} (each decision is weighted by its own logged pmf, which stays unbiased; the logging baseline is the mixture)",
                self.generations.keys().collect::<Vec<_>>()
            ));
        }
        if self.policies.len() > 1 {
            warnings.push(format!(
                "several logging policies: {:?}",
                self.policies.keys().collect::<Vec<_>>()
            ));
        }
        if !self.units.is_empty() {
            warnings.push(format!(
                "the router is sticky ({:?}): decisions are randomised per unit, not per request, so these intervals (which assume independent decisions) are too narrow",
                self.units.keys().collect::<Vec<_>>()
            ));
        }
        if self.subsampled > 0 {
            warnings.push(format!(
                "{} decisions were kept by tracking's sampling (sampled < 1): each is weighted by 1/sampled",
                self.subsampled
            ));
        }
        if self.unmatched_feedback > 0 {
            warnings.push(format!(
                "{} feedback events of router `{}` came after their decision's --reward-wait (or had no decision in the stream, e.g. not sampled): not counted",
                self.unmatched_feedback, s.router
            ));
        }
        if self.evicted > 0 {
            warnings.push(format!(
                "{} decisions were closed before their reward wait was over (more than --max-pending {} waiting)",
                self.evicted, s.max_pending
            ));
        }
        let closed = self.rewarded + self.defaulted + self.unrewarded;
        let rewarded_share = if closed > 0 {
            self.rewarded as f64 / closed as f64
        } else {
            0.0
        };
        if self.unrewarded > 0 {
            warnings.push(format!(
                "{} of {closed} decisions ({:.1} %) had no reward within --reward-wait and were skipped: the estimates are of the rewarded decisions",
                self.unrewarded,
                100.0 * self.unrewarded as f64 / closed.max(1) as f64
            ));
        }
        let mut candidates = Vec::new();
        for c in &self.candidates {
            let name = c.candidate.name();
            let ess = if c.f2w2 > 0.0 {
                c.fw * c.fw / c.f2w2
            } else {
                0.0
            };
            let mut row = json!({
                "name": name,
                "n": c.scored,
                "ess": ess,
                "max_weight": c.max_w,
                "unsupported_share": if c.scored > 0 { c.unsupported as f64 / c.scored as f64 } else { 0.0 },
            });
            if c.scored < 2 {
                row["status"] = json!("refused");
                row["reason"] = json!(format!(
                    "{} scored decisions: too few for an estimate",
                    c.scored
                ));
                candidates.push(row);
                continue;
            }
            if let Some((line, route)) = &c.first_unsupported {
                row["status"] = json!("refused");
                row["reason"] = json!(format!(
                    "unsupported: on {} of {} decisions ({:.2} %) the candidate puts probability on a route the logging policy gave 0 (first: line {line}, route `{route}`): no estimator can say what those would have earned",
                    c.unsupported,
                    c.scored,
                    100.0 * c.unsupported as f64 / c.scored as f64
                ));
                candidates.push(row);
                continue;
            }
            if ess < LOW_ESS {
                warnings.push(format!(
                    "candidate `{name}`: ESS {ess:.1} < {LOW_ESS}: few logged decisions look like its choices; its estimates rest on few effective samples"
                ));
            }
            let mut ips = Mean::default();
            ips.take(&c.ips, &[]);
            let mut ips_d = Mean::default();
            ips_d.take(&c.ips_diff, &[]);
            let mut dr = Mean::default();
            let mut dr_d = Mean::default();
            for fold in 0..2 {
                // Each fold's terms use the model fitted on the other fold.
                let theta = &thetas[1 - fold];
                let theta = if theta.is_empty() {
                    vec![0.0; c.dr[fold].dim]
                } else {
                    theta.clone()
                };
                dr.take(&c.dr[fold], &theta);
                dr_d.take(&c.dr_diff[fold], &theta);
            }
            let snips = c.fwr / c.fw;
            let snips_var = if c.fw > 0.0 {
                (c.f2w2r2 - 2.0 * snips * c.f2w2r + snips * snips * c.f2w2) / (c.fw * c.fw)
            } else {
                f64::NAN
            };
            row["status"] = json!("ok");
            row["estimates"] = json!({
                "ips": interval(ips.value(), ips.variance(), ips.n, s),
                "snips": interval(snips, snips_var.max(0.0), c.scored, s),
                "dr": interval(dr.value(), dr.variance(), dr.n, s),
            });
            row["vs_logging"] = json!({
                "ips": interval(ips_d.value(), ips_d.variance(), ips_d.n, s),
                "dr": interval(dr_d.value(), dr_d.variance(), dr_d.n, s),
            });
            candidates.push(row);
        }
        Ok(json!({
            "router": s.router,
            "settings": {
                "clip": s.clip,
                "reward_wait_s": s.reward_wait,
                "unrewarded": match s.unrewarded { Unrewarded::Skip => json!("skip"), Unrewarded::Default(r) => json!({"default": r}) },
                "split_at": s.split_at,
                "since": s.since,
                "until": s.until,
                "cs": {"method": "asymptotic normal-mixture confidence sequence (Waudby-Smith et al. 2023, arXiv 2103.06476, eq. 155)", "planned_n": s.planned_n, "alpha": s.alpha},
            },
            "decisions": {
                "lines": self.lines,
                "decisions": self.decisions,
                "outside_range": self.outside_range,
                "rewarded": self.rewarded,
                "defaulted": self.defaulted,
                "unrewarded_skipped": self.unrewarded,
                "rewarded_share": rewarded_share,
                "train": self.train,
                "scored": self.scored,
                "no_id": self.no_id,
                "evicted": self.evicted,
                "duplicate_feedback": self.duplicate_feedback,
                "unmatched_feedback": self.unmatched_feedback,
                "sampled_below_1": self.subsampled,
                "generations": self.generations.iter().map(|(g, n)| json!({"generation": g, "decisions": n})).collect::<Vec<_>>(),
                "policies": self.policies,
                "routes": self.routes,
                "context_features": if has_context { json!(dim) } else { Value::Null },
                "exported": if self.export.is_some() { json!(self.exported) } else { Value::Null },
            },
            "reward_model": reward_model,
            "candidates": candidates,
            "warnings": warnings,
        }))
    }
}

/// One decision as a line of Vowpal Wabbit's DSJSON (`--dsjson --cb_adf`): the label
/// (`_label_cost` = −reward, `_label_probability` = pmf[chosen], `_label_Action` = chosen + 1,
/// `_labelIndex` = chosen), the actions ranked as the Decision Service logs them (`a`: the
/// chosen action's 1-based id first, then the others in order; `p`: their probabilities in
/// that order), the context `c` (the shared features `x0`, `x1`, … of `context` in namespace
/// `x`, and `_multi`: one action per route naming it), `EventId`, `Timestamp` and
/// `pdrop` = 1 − sampled (as VW's `test/train-sets/cb_simple_pdrop.json`).
pub fn dsjson(d: &LoggedDecision, reward: f64) -> Value {
    let k = d.routes.len();
    let order: Vec<usize> = std::iter::once(d.chosen)
        .chain((0..k).filter(|&a| a != d.chosen))
        .collect();
    let mut c = serde_json::Map::new();
    if let Some(x) = &d.context {
        let shared: serde_json::Map<String, Value> = x
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("x{i}"), json!(v)))
            .collect();
        c.insert("x".into(), Value::Object(shared));
    }
    c.insert(
        "_multi".into(),
        Value::Array(
            d.routes
                .iter()
                .map(|r| json!({"route": {"name": r}}))
                .collect(),
        ),
    );
    let mut line = json!({
        "_label_cost": -reward,
        "_label_probability": d.pmf[d.chosen],
        "_label_Action": d.chosen + 1,
        "_labelIndex": d.chosen,
        "a": order.iter().map(|a| a + 1).collect::<Vec<_>>(),
        "p": order.iter().map(|&a| d.pmf[a]).collect::<Vec<_>>(),
        "c": Value::Object(c),
        "pdrop": 1.0 - d.sampled,
    });
    if let Some(id) = &d.id {
        line["EventId"] = json!(id);
    }
    if let Some(t) = d.when {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs_f64(t);
        line["Timestamp"] = json!(humantime::format_rfc3339_micros(at).to_string());
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lin_sums_match_direct_sums() {
        let mut s = LinSums::new(2);
        let theta = [0.3, -0.7];
        let rows = [
            ([1.0, 2.0], 0.5, 1.0),
            ([0.0, -1.0], 2.0, 2.0),
            ([3.0, 1.0], -1.0, 0.5),
        ];
        let mut direct = Mean::default();
        for (u, v, f) in rows {
            s.add(f, &u, v);
            let c = u[0] * theta[0] + u[1] * theta[1] + v;
            direct.n += 1;
            direct.f += f;
            direct.f2 += f * f;
            direct.sum += f * c;
            direct.sq += f * f * c * c;
            direct.lin += f * f * c;
        }
        let mut m = Mean::default();
        m.take(&s, &theta);
        assert!((m.value() - direct.value()).abs() < 1e-12);
        assert!((m.variance() - direct.variance()).abs() < 1e-12);
    }

    #[test]
    fn solve_solves() {
        let x = solve(vec![4.0, 1.0, 1.0, 3.0], vec![1.0, 2.0], 2);
        assert!((4.0 * x[0] + x[1] - 1.0).abs() < 1e-12);
        assert!((x[0] + 3.0 * x[1] - 2.0).abs() < 1e-12);
    }
}
