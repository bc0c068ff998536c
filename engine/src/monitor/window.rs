//! One monitored column: its reference, the open window's counts and values, the statuses
//! its closed windows got, and the thresholds that decide them.

use std::collections::VecDeque;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::line::Line;
use super::profile::ColumnProfile;
use super::spec::{ColumnSpec, ColumnType, ThresholdMode, ThresholdSpec};
use super::stats;

/// A window's statistics (`None`: not defined for the column's type, or not computable).
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub psi: Option<f64>,
    pub hellinger: Option<f64>,
    pub tvd: Option<f64>,
    pub general_drift: Option<f64>,
    pub ks: Option<f64>,
    pub ks_p: Option<f64>,
    pub wasserstein: Option<f64>,
    pub chi2_p: Option<f64>,
    pub js: Option<f64>,
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

impl Stats {
    /// The statistics with a value, by name (the `stat` label of `servegraph_drift_score`).
    pub fn named(&self) -> Vec<(&'static str, f64)> {
        [
            ("psi", self.psi),
            ("hellinger", self.hellinger),
            ("tvd", self.tvd),
            ("general_drift", self.general_drift),
            ("ks", self.ks),
            ("ks_p", self.ks_p),
            ("wasserstein", self.wasserstein),
            ("chi2_p", self.chi2_p),
            ("js", self.js),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }

    pub fn json(&self) -> Value {
        json!({"psi": self.psi, "hellinger": self.hellinger, "tvd": self.tvd,
               "general_drift": self.general_drift, "ks": self.ks, "ks_p": self.ks_p,
               "wasserstein": self.wasserstein, "chi2_p": self.chi2_p, "js": self.js})
    }

    /// The statistics a verdict in `reference_chunks` mode weighs, for each type.
    fn decisive(&self, t: ColumnType) -> [Option<f64>; 3] {
        match t {
            ColumnType::Numerical => [self.general_drift, self.ks, self.wasserstein],
            ColumnType::Categorical => [self.general_drift, self.js, None],
        }
    }
}

/// The statistics of a window's counts (and, for numbers, its sorted values) against the
/// reference.
pub fn compute(reference: &ColumnProfile, counts: &[u64], sorted: &[f64]) -> Stats {
    let p = &reference.fractions;
    let q = stats::fractions(counts);
    let mut s = Stats {
        psi: finite(stats::psi(p, &q)),
        hellinger: finite(stats::hellinger(p, &q)),
        tvd: finite(stats::tvd(p, &q)),
        general_drift: finite(stats::general_drift(p, &q)),
        ..Stats::default()
    };
    match reference.column_type {
        ColumnType::Numerical => {
            let (d, w) = stats::ks_wasserstein(&reference.sample, sorted);
            s.ks = finite(d);
            s.ks_p = finite(stats::ks_p(d, reference.sample.len(), sorted.len()));
            s.wasserstein = finite(stats::normed_wasserstein(w, reference.std));
        }
        ColumnType::Categorical => {
            s.chi2_p = finite(stats::chi2_homogeneity(&reference.counts, counts).2);
            s.js = finite(stats::jensen_shannon(p, &q));
        }
    }
    s
}

/// How a column's statistics become a status.
#[derive(Clone, Debug)]
pub enum Thresholds {
    /// Mean + σ·std of each decisive statistic over reference chunks of `events` rows.
    Chunks {
        limits: [Option<f64>; 3],
        events: usize,
        column_type: ColumnType,
    },
    Mlrun,
    /// Evidently's test by reference size.
    Evidently {
        small_reference: bool,
    },
}

impl Thresholds {
    /// Thresholds for `reference`, for windows of `events` rows; chunks drawn with a seed
    /// fixed by the column's position.
    pub fn new(
        spec: &ThresholdSpec,
        reference: &ColumnProfile,
        events: usize,
        reference_rows: u64,
        seed: u64,
    ) -> Thresholds {
        match spec.mode {
            ThresholdMode::Mlrun => Thresholds::Mlrun,
            ThresholdMode::Evidently => Thresholds::Evidently {
                small_reference: reference_rows <= 1000,
            },
            ThresholdMode::ReferenceChunks => {
                let values = null_chunks(reference, events, spec.chunks, seed);
                let mut limits = [None; 3];
                for (k, limit) in limits.iter_mut().enumerate() {
                    let xs: Vec<f64> = values.iter().filter_map(|s| s[k]).collect();
                    if xs.len() >= 2 {
                        let (mean, std) = stats::mean_std(&xs);
                        *limit = Some(mean + spec.sigma * std);
                    }
                }
                Thresholds::Chunks {
                    limits,
                    events,
                    column_type: reference.column_type,
                }
            }
        }
    }

    /// 0 none, 1 potential, 2 detected, −1 not computed.
    pub fn status(&self, t: ColumnType, s: &Stats, rows: usize) -> i8 {
        match self {
            Thresholds::Mlrun => match s.general_drift {
                Some(g) if g >= 0.7 => 2,
                Some(g) if g >= 0.5 => 1,
                Some(_) => 0,
                None => -1,
            },
            Thresholds::Evidently { small_reference } => {
                let drift = match (t, small_reference) {
                    (ColumnType::Numerical, true) => s.ks_p.map(|p| p <= 0.05),
                    (ColumnType::Numerical, false) => s.wasserstein.map(|w| w >= 0.1),
                    (ColumnType::Categorical, true) => s.chi2_p.map(|p| p < 0.05),
                    // Evidently's Jensen–Shannon is scipy's default, natural log: base 2
                    // times sqrt(ln 2).
                    (ColumnType::Categorical, false) => {
                        s.js.map(|j| j * std::f64::consts::LN_2.sqrt() >= 0.1)
                    }
                };
                match drift {
                    Some(true) => 2,
                    Some(false) => 0,
                    None => -1,
                }
            }
            Thresholds::Chunks { limits, events, .. } => {
                // The statistics' noise shrinks as 1/sqrt(n): limits for `events` rows scale
                // to a shorter window.
                let scale = (*events as f64 / rows.max(1) as f64).sqrt().max(1.0);
                let decisive = s.decisive(t);
                let (mut weighed, mut over) = (0, 0);
                for (v, limit) in decisive.iter().zip(limits) {
                    if let (Some(v), Some(limit)) = (v, limit) {
                        weighed += 1;
                        if *v > limit * scale {
                            over += 1;
                        }
                    }
                }
                match (weighed, over) {
                    (0, _) => -1,
                    (_, 0) => 0,
                    (w, o) if o >= 2 || o == w => 2,
                    _ => 1,
                }
            }
        }
    }

    pub fn json(&self) -> Value {
        match self {
            Thresholds::Chunks {
                limits,
                events,
                column_type,
            } => {
                let mut v = json!({"general_drift": limits[0], "events": events});
                match column_type {
                    ColumnType::Numerical => {
                        v["ks"] = json!(limits[1]);
                        v["wasserstein"] = json!(limits[2]);
                    }
                    ColumnType::Categorical => v["js"] = json!(limits[1]),
                }
                v
            }
            Thresholds::Mlrun => json!({"general_drift": {"potential": 0.5, "detected": 0.7}}),
            Thresholds::Evidently { small_reference } => {
                json!({"small_reference": small_reference})
            }
        }
    }
}

/// The decisive statistics of `chunks` reference-like windows of `events` rows, drawn (with
/// replacement, fixed seed) from the reference: from its sample for numbers, from its
/// fractions for categories. A chunk drawn from the reference is closer to it than an
/// independent window is (whose reference also carries sampling noise): each value is scaled
/// by sqrt(1 + n/N), the ratio of the two noises' standard deviations.
fn null_chunks(
    reference: &ColumnProfile,
    events: usize,
    chunks: usize,
    seed: u64,
) -> Vec<[Option<f64>; 3]> {
    let mut rng = SmallRng::seed_from_u64(0x5e7e_9a4f ^ seed);
    let population = match reference.column_type {
        ColumnType::Numerical => reference.sample.len(),
        ColumnType::Categorical => reference.rows as usize,
    }
    .max(1);
    let correction = (1.0 + events as f64 / population as f64).sqrt();
    let cumulative: Vec<f64> = reference
        .fractions
        .iter()
        .scan(0.0, |acc, f| {
            *acc += f;
            Some(*acc)
        })
        .collect();
    (0..chunks)
        .map(|_| {
            let mut counts = vec![0u64; reference.fractions.len()];
            let mut values = Vec::new();
            match reference.column_type {
                ColumnType::Numerical if !reference.sample.is_empty() => {
                    values = (0..events)
                        .map(|_| reference.sample[rng.random_range(0..reference.sample.len())])
                        .collect();
                    for &x in &values {
                        counts[stats::bin_of(&reference.edges, x)] += 1;
                    }
                    values.sort_by(f64::total_cmp);
                }
                _ => {
                    for _ in 0..events {
                        let u: f64 = rng.random();
                        let i = cumulative
                            .partition_point(|&c| c <= u)
                            .min(counts.len() - 1);
                        counts[i] += 1;
                    }
                }
            }
            let s = compute(reference, &counts, &values);
            s.decisive(reference.column_type)
                .map(|v| v.map(|v| v * correction))
        })
        .collect()
}

/// A closed window's line in a column's history.
#[derive(Clone, Debug)]
pub struct Entry {
    pub window: u64,
    pub end: String,
    pub events: usize,
    pub status: i8,
    pub stats: Stats,
    pub fractions: Vec<f64>,
    pub quality: Quality,
}

/// Data quality of a window's column.
#[derive(Clone, Copy, Debug, Default)]
pub struct Quality {
    pub missing: u64,
    pub nan: u64,
    /// Values in the padding bins (numbers) or not among the reference's categories.
    pub out_of_range: u64,
}

/// One monitored column.
pub struct Column {
    pub spec: ColumnSpec,
    pub kind: &'static str,
    pub reference: ColumnProfile,
    thresholds: Thresholds,
    counts: Vec<u64>,
    values: Vec<f64>,
    missing: u64,
    nan: u64,
    pub last: Option<Entry>,
    history: VecDeque<Entry>,
    /// Categories' positions in `counts`.
    index: std::collections::HashMap<String, usize>,
    /// The same for categories that are integers (looked up without writing the number).
    integers: std::collections::HashMap<i64, usize>,
}

impl Column {
    pub fn new(
        spec: ColumnSpec,
        kind: &'static str,
        reference: ColumnProfile,
        thresholds: Thresholds,
    ) -> Column {
        let index = reference
            .categories
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), i))
            .collect();
        let integers = reference
            .categories
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let n: i64 = c.parse().ok()?;
                (n.to_string() == *c).then_some((n, i))
            })
            .collect();
        Column {
            integers,
            counts: vec![0; reference.fractions.len()],
            values: Vec::new(),
            missing: 0,
            nan: 0,
            last: None,
            history: VecDeque::new(),
            index,
            spec,
            kind,
            reference,
            thresholds,
        }
    }

    /// Takes an event's `rows` rows.
    pub fn take(&mut self, line: &Line, value: Option<&Value>, rows: usize) {
        let output = self.kind == "output";
        let rows = if self.spec.field.is_some() { 1 } else { rows };
        for r in 0..rows {
            let Some(e) = super::column_value(&self.spec, output, line, value, r) else {
                self.missing += 1;
                continue;
            };
            match self.reference.column_type {
                ColumnType::Numerical => match e.number() {
                    Some(x) if x.is_nan() => self.nan += 1,
                    Some(x) => {
                        self.counts[stats::bin_of(&self.reference.edges, x)] += 1;
                        self.values.push(x);
                    }
                    None => self.missing += 1,
                },
                ColumnType::Categorical => {
                    let at = match &e {
                        super::line::Elem::Num(x) if x.fract() == 0.0 && x.abs() < 1e15 => {
                            self.integers.get(&(*x as i64)).copied()
                        }
                        _ => e
                            .category()
                            .as_deref()
                            .and_then(|c| self.index.get(c).copied()),
                    }
                    .unwrap_or(self.counts.len() - 1);
                    self.counts[at] += 1;
                }
            }
        }
    }

    /// Closes the window: its entry (kept as `last` and in the history).
    pub fn close(
        &mut self,
        window: u64,
        end: &str,
        events: usize,
        computed: bool,
        _window_events: usize,
    ) -> Entry {
        let counts = std::mem::replace(&mut self.counts, vec![0; self.reference.fractions.len()]);
        let mut values = std::mem::take(&mut self.values);
        let out_of_range = match self.reference.column_type {
            ColumnType::Numerical => counts[0] + counts[counts.len() - 1],
            ColumnType::Categorical => {
                // "other" in the window beyond what the reference had as "other".
                counts[counts.len() - 1]
            }
        };
        let quality = Quality {
            missing: std::mem::take(&mut self.missing),
            nan: std::mem::take(&mut self.nan),
            out_of_range,
        };
        let seen: u64 = counts.iter().sum();
        let (stats, status) = if computed && seen > 0 {
            values.sort_by(f64::total_cmp);
            let s = compute(&self.reference, &counts, &values);
            let status = self
                .thresholds
                .status(self.reference.column_type, &s, seen as usize);
            (s, status)
        } else {
            (Stats::default(), -1)
        };
        let entry = Entry {
            window,
            end: end.to_owned(),
            events,
            status,
            stats,
            fractions: stats::fractions(&counts),
            quality,
        };
        if computed {
            self.last = Some(entry.clone());
        }
        self.history.push_back(entry.clone());
        while self.history.len() > super::HISTORY {
            self.history.pop_front();
        }
        // The window's values are let go; keep the allocation for the next.
        values.clear();
        self.values = values;
        entry
    }

    /// The column in a window's report.
    pub fn report(&self, e: &Entry) -> Value {
        json!({
            "name": self.spec.name, "kind": self.kind, "type": self.reference.column_type.as_str(),
            "status": e.status, "stats": e.stats.json(), "fractions": e.fractions,
            "quality": quality_json(&e.quality), "thresholds": self.thresholds.json(),
        })
    }

    /// The column in `GET /v2/monitor`.
    pub fn state(&self) -> Value {
        let r = &self.reference;
        let mut reference = json!({"edges": r.edges, "fractions": r.fractions});
        if r.column_type == ColumnType::Categorical {
            reference["categories"] = json!(r.categories);
        }
        json!({
            "name": self.spec.name, "kind": self.kind, "type": r.column_type.as_str(),
            "reference": reference,
            "last": self.last.as_ref().map(|e| json!({
                "window": e.window, "fractions": e.fractions, "status": e.status,
                "stats": e.stats.json(), "quality": quality_json(&e.quality)})),
            "history": self.history.iter().map(|e| json!({
                "window": e.window, "end": e.end, "events": e.events, "status": e.status,
                "stats": if e.status < 0 { Value::Null } else { e.stats.json() }})).collect::<Vec<_>>(),
            "thresholds": self.thresholds.json(),
        })
    }
}

fn quality_json(q: &Quality) -> Value {
    json!({"missing": q.missing, "nan": q.nan, "out_of_range": q.out_of_range})
}
