//! `monitor:` in a graph file (or a file of its own): what to watch, against which reference,
//! in which windows, and how a statistic becomes a status.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `monitor:`: drift and performance monitoring of the graph's tracking stream
/// (docs/monitoring.md).
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MonitorSpec {
    /// What the windows are compared with: a profile file, or the stream's first events.
    pub reference: ReferenceSpec,
    /// Input features: by request tensor and column, or by a field of the event.
    #[serde(default)]
    pub features: Vec<ColumnSpec>,
    /// Outputs watched for prediction drift: by response tensor and column.
    #[serde(default)]
    pub outputs: Vec<ColumnSpec>,
    /// Tumbling windows: by events, closed early by age, skipped below a minimum.
    #[serde(default)]
    pub window: WindowSpec,
    /// How statistics become statuses.
    #[serde(default)]
    pub thresholds: ThresholdSpec,
    /// Realised performance (feedback joined by request id) and CBPE's estimate.
    #[serde(default)]
    pub performance: Option<PerformanceSpec>,
    /// Where each closed window's JSON report goes: `file://PATH.jsonl` (relative to the
    /// file's folder), `stdout`, or `kafka://HOST:PORT/TOPIC`.
    #[serde(default)]
    pub report: Option<String>,
    /// Run the monitor inside `serve` as a background task, reading the graph's tracking
    /// stream (a `file://` sink).
    #[serde(default = "yes")]
    pub in_process: bool,
    /// Experiment readouts from the stream's decisions and feedback: how each router's is
    /// tuned, by router name (without it: the router's first route is the control, the
    /// defaults of `policy.experiment`).
    #[serde(default)]
    pub experiments: std::collections::BTreeMap<String, super::experiments::ExperimentSpec>,
}

fn yes() -> bool {
    true
}

/// `monitor.reference`: exactly one of `profile` and `events`.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReferenceSpec {
    /// A profile file written by `servegraph monitor profile` (relative to the file's folder).
    #[serde(default)]
    pub profile: Option<String>,
    /// Freeze the reference from the stream's first `events` rows instead.
    #[serde(default)]
    pub events: Option<usize>,
    /// With `events`: where to save the frozen profile.
    #[serde(default)]
    pub save: Option<String>,
}

/// Whether a column holds numbers or categories.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    Numerical,
    Categorical,
}

impl ColumnType {
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnType::Numerical => "numerical",
            ColumnType::Categorical => "categorical",
        }
    }
}

/// One monitored column.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// The column's name (a metric label: keep it short).
    pub name: String,
    /// The tensor holding it (the request's for features, the response's for outputs).
    #[serde(default)]
    pub tensor: Option<String>,
    /// Its column in the tensor's last dimension (0 for a 1-D tensor).
    #[serde(default)]
    pub index: usize,
    /// Or a field of the event, as a JSON pointer (`/labels/region`): one value per event.
    #[serde(default)]
    pub field: Option<String>,
    /// Its column in a CSV dataset (`monitor profile --dataset`); default: `name`.
    #[serde(default)]
    pub column: Option<String>,
    /// `numerical` or `categorical`.
    #[serde(rename = "type")]
    pub kind: ColumnType,
    /// Categories kept in the profile (the most frequent); the rest count as "other".
    #[serde(default = "default_max_categories")]
    pub max_categories: usize,
}

fn default_max_categories() -> usize {
    50
}

/// `monitor.window`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// Rows per window (a request with a batch of n rows counts n).
    #[serde(default = "default_events")]
    pub events: usize,
    /// A window open this long (by the events' `when`) closes early: `10m`, `30s`.
    #[serde(default = "default_max_age")]
    pub max_age: String,
    /// A window closed with fewer rows is skipped (status −1).
    #[serde(default = "default_min_events")]
    pub min_events: usize,
}

fn default_events() -> usize {
    1000
}
fn default_max_age() -> String {
    "10m".into()
}
fn default_min_events() -> usize {
    200
}

impl Default for WindowSpec {
    fn default() -> Self {
        WindowSpec {
            events: default_events(),
            max_age: default_max_age(),
            min_events: default_min_events(),
        }
    }
}

impl WindowSpec {
    pub fn max_age(&self) -> Duration {
        humantime::parse_duration(&self.max_age).unwrap_or(Duration::from_secs(600))
    }
}

/// How thresholds are set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdMode {
    /// NannyML's: mean + `sigma`·std of each statistic over reference chunks of the window's
    /// size.
    #[default]
    ReferenceChunks,
    /// MLRun's fixed defaults: general drift ≥ 0.5 potential, ≥ 0.7 detected.
    Mlrun,
    /// Evidently's fixed defaults: K-S p ≤ 0.05 or χ² p < 0.05 (reference ≤ 1,000 rows),
    /// normed Wasserstein ≥ 0.1 or Jensen–Shannon ≥ 0.1 (larger references).
    Evidently,
}

/// `monitor.thresholds`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ThresholdSpec {
    #[serde(default)]
    pub mode: ThresholdMode,
    /// `reference_chunks`: how many standard deviations above the chunks' mean.
    #[serde(default = "default_sigma")]
    pub sigma: f64,
    /// `reference_chunks`: how many chunks are drawn from the reference (fixed seed).
    #[serde(default = "default_chunks")]
    pub chunks: usize,
    /// The dataset drifts when this share of columns is detected (Evidently's `drift_share`).
    #[serde(default = "default_drift_share")]
    pub drift_share: f64,
}

fn default_sigma() -> f64 {
    3.0
}
fn default_chunks() -> usize {
    200
}
fn default_drift_share() -> f64 {
    0.5
}

impl Default for ThresholdSpec {
    fn default() -> Self {
        ThresholdSpec {
            mode: ThresholdMode::default(),
            sigma: default_sigma(),
            chunks: default_chunks(),
            drift_share: default_drift_share(),
        }
    }
}

/// What a classifier or regressor is judged on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Classification,
    Regression,
}

/// A value of the response: a tensor and its column.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputRef {
    pub tensor: String,
    #[serde(default)]
    pub index: usize,
}

/// `monitor.performance`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PerformanceSpec {
    pub task: Task,
    /// The prediction (the response's first row).
    pub prediction: OutputRef,
    /// Classification: the probability of the `positive` class, for CBPE's estimate.
    #[serde(default)]
    pub probability: Option<OutputRef>,
    /// Classification: the positive class (F1 is the positive class's).
    #[serde(default)]
    pub positive: Option<String>,
    /// The feedback event's field holding the true label or value (then `reward`).
    #[serde(default = "default_label")]
    pub label: String,
    /// Predictions kept waiting for their feedback; the oldest are let go past it.
    #[serde(default = "default_pending")]
    pub max_pending: usize,
}

fn default_label() -> String {
    "label".into()
}
fn default_pending() -> usize {
    10_000
}

/// The most columns a monitor takes (each is a set of metric series).
pub const MAX_COLUMNS: usize = 256;

impl MonitorSpec {
    /// Every problem, as (the field's path under `monitor`, message).
    pub fn check(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut err = |path: &str, msg: String| out.push((path.to_owned(), msg));
        match (&self.reference.profile, self.reference.events) {
            (Some(_), Some(_)) => err(
                "reference",
                "`reference` takes `profile` or `events`, not both".into(),
            ),
            (None, None) => err(
                "reference",
                "`reference` needs `profile: FILE` (from `servegraph monitor profile`) or \
                 `events: N` (freeze the stream's first N rows)"
                    .into(),
            ),
            (None, Some(0)) => err("reference.events", "`events` must be at least 1".into()),
            _ => {}
        }
        if self.reference.save.is_some() && self.reference.events.is_none() {
            err("reference.save", "`save` goes with `events`".into());
        }
        if self.features.is_empty() && self.outputs.is_empty() {
            err(
                "features",
                "a monitor needs at least one of `features` and `outputs`".into(),
            );
        }
        for (router, e) in &self.experiments {
            for (field, msg) in e.check() {
                err(&format!("experiments.{router}.{field}"), msg);
            }
        }
        if self.features.len() + self.outputs.len() > MAX_COLUMNS {
            err("features", format!("at most {MAX_COLUMNS} columns"));
        }
        let mut names = std::collections::HashSet::new();
        for (list, cols) in [("features", &self.features), ("outputs", &self.outputs)] {
            for (i, c) in cols.iter().enumerate() {
                let at = format!("{list}.{i}");
                if !names.insert(c.name.as_str()) {
                    err(
                        &format!("{at}.name"),
                        format!("the name `{}` is used twice", c.name),
                    );
                }
                if c.name.is_empty() {
                    err(&format!("{at}.name"), "`name` is empty".into());
                }
                match (&c.tensor, &c.field) {
                    (Some(_), Some(_)) => {
                        err(&at, "a column takes `tensor` or `field`, not both".into())
                    }
                    (None, None) => err(
                        &at,
                        "a column needs `tensor` (and `index`) or `field`".into(),
                    ),
                    (None, Some(f)) if !f.starts_with('/') => err(
                        &format!("{at}.field"),
                        format!("`{f}` is not a JSON pointer: write `/{f}`"),
                    ),
                    _ => {}
                }
                if list == "outputs" && c.field.is_some() {
                    err(
                        &format!("{at}.field"),
                        "outputs are read from response tensors".into(),
                    );
                }
                if c.max_categories == 0 {
                    err(&format!("{at}.max_categories"), "must be at least 1".into());
                }
            }
        }
        let w = &self.window;
        if w.events == 0 {
            err("window.events", "must be at least 1".into());
        }
        if w.min_events > w.events {
            err(
                "window.min_events",
                format!(
                    "`min_events` ({}) is more than `events` ({})",
                    w.min_events, w.events
                ),
            );
        }
        match humantime::parse_duration(&w.max_age) {
            Ok(d) if d.is_zero() => err("window.max_age", "must be more than 0".into()),
            Ok(_) => {}
            Err(e) => err(
                "window.max_age",
                format!(
                    "`{}` is not a duration ({e}): write e.g. `10m` or `30s`",
                    w.max_age
                ),
            ),
        }
        let t = &self.thresholds;
        if !(t.sigma.is_finite() && t.sigma > 0.0) {
            err("thresholds.sigma", "must be a number above 0".into());
        }
        if t.chunks < 10 || t.chunks > 10_000 {
            err("thresholds.chunks", "must be between 10 and 10000".into());
        }
        if !(t.drift_share > 0.0 && t.drift_share <= 1.0) {
            err("thresholds.drift_share", "must be in (0, 1]".into());
        }
        if let Some(p) = &self.performance {
            if p.task == Task::Regression && (p.probability.is_some() || p.positive.is_some()) {
                err(
                    "performance",
                    "`probability` and `positive` are for `task: classification`".into(),
                );
            }
            if p.probability.is_some() && p.positive.is_none() {
                err(
                    "performance.positive",
                    "CBPE (`probability`) needs the `positive` class".into(),
                );
            }
            if p.max_pending == 0 {
                err("performance.max_pending", "must be at least 1".into());
            }
        }
        if let Some(r) = &self.report
            && r != "stdout"
            && r.strip_prefix("file://").is_none_or(|p| p.is_empty())
        {
            err(
                "report",
                format!("`{r}`: expected file://PATH.jsonl or stdout"),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> MonitorSpec {
        marked_yaml::from_node(&marked_yaml::parse_yaml(0, yaml).unwrap()).unwrap()
    }

    #[test]
    fn defaults_and_problems() {
        let s = parse(
            "reference: {events: 100}\nfeatures:\n  - {tensor: input, index: 1, name: a, type: numerical}\n",
        );
        assert!(s.check().is_empty(), "{:?}", s.check());
        assert_eq!(s.window.events, 1000);
        assert_eq!(s.window.max_age(), Duration::from_secs(600));
        assert_eq!(s.thresholds.mode, ThresholdMode::ReferenceChunks);
        let s = parse(
            "reference: {}\nfeatures:\n  - {name: a, type: numerical}\n  - {tensor: t, name: a, type: categorical}\nwindow: {events: 10, min_events: 20, max_age: soon}\n",
        );
        let problems = s.check();
        let paths: Vec<&str> = problems.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "reference",
                "features.0",
                "features.1.name",
                "window.min_events",
                "window.max_age"
            ]
        );
    }
}
