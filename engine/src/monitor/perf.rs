//! Performance: realised, when feedback with the true label joins a prediction by request
//! `id`; estimated without labels by NannyML's CBPE for binary classifiers that emit a
//! probability.

use serde_json::{Value, json};

use super::Pending;
use super::line::{Elem, Line};
use super::profile::Calibration;
use super::spec::{PerformanceSpec, Task};
use super::stats;

/// Realised metrics' running sums over a window.
#[derive(Default, Clone, Copy)]
struct Realised {
    n: u64,
    correct: u64,
    tp: u64,
    fp: u64,
    fn_: u64,
    abs: f64,
    sq: f64,
}

/// CBPE's expected confusion matrix over a window.
#[derive(Default, Clone, Copy)]
struct Expected {
    n: u64,
    tp: f64,
    fp: f64,
    fn_: f64,
    tn: f64,
}

/// A window's performance.
pub struct Performance {
    spec: PerformanceSpec,
    pending: Pending<Prediction>,
    realised: Realised,
    probabilities: Vec<(f64, bool)>,
    last: Option<Value>,
    joined: u64,
    unmatched: u64,
}

#[derive(Clone)]
enum Prediction {
    Class(String),
    Value(f64),
}

impl Performance {
    pub fn new(spec: PerformanceSpec) -> Performance {
        Performance {
            pending: Pending::new(spec.max_pending),
            spec,
            realised: Realised::default(),
            probabilities: Vec::new(),
            last: None,
            joined: 0,
            unmatched: 0,
        }
    }

    /// An inference event: its prediction waits for feedback; its probability counts for
    /// CBPE.
    pub fn event(&mut self, line: &Line) {
        let find = |name: &str, index: usize| {
            line.response_tensors()
                .iter()
                .find(|t| t.name == name)
                .and_then(|t| t.at(0, index).cloned())
        };
        let prediction = find(&self.spec.prediction.tensor, self.spec.prediction.index);
        let predicted = prediction.as_ref().and_then(|p| match self.spec.task {
            Task::Classification => p.category().map(|c| Prediction::Class(c.into_owned())),
            Task::Regression => p.number().map(Prediction::Value),
        });
        if let (Some(id), Some(p)) = (&line.id, predicted.clone()) {
            self.pending.insert(id.to_string(), p);
        }
        if let (Some(r), Some(positive)) = (&self.spec.probability, &self.spec.positive)
            && let Some(p) = find(&r.tensor, r.index).and_then(|e| e.number())
            && p.is_finite()
        {
            let predicted_positive = match &predicted {
                Some(Prediction::Class(c)) => c == positive,
                _ => p >= 0.5,
            };
            self.probabilities.push((p, predicted_positive));
        }
    }

    /// A feedback event (`{"kind": "feedback", "id", "label"}`, or the label as `reward`).
    pub fn feedback_value(&mut self, v: &Value) {
        let Some(id) = v.get("id").and_then(Value::as_str) else {
            return;
        };
        let label = v.get(&self.spec.label).or_else(|| v.get("reward"));
        let Some(label) = label else { return };
        let Some(predicted) = self.pending.take(id) else {
            self.unmatched += 1;
            return;
        };
        self.joined += 1;
        let r = &mut self.realised;
        match predicted {
            Prediction::Class(p) => {
                let truth = match label {
                    Value::String(s) => s.clone(),
                    other => Elem::Num(other.as_f64().unwrap_or(f64::NAN))
                        .category()
                        .map(|c| c.into_owned())
                        .unwrap_or_default(),
                };
                r.n += 1;
                r.correct += u64::from(p == truth);
                if let Some(pos) = &self.spec.positive {
                    match (p == *pos, truth == *pos) {
                        (true, true) => r.tp += 1,
                        (true, false) => r.fp += 1,
                        (false, true) => r.fn_ += 1,
                        _ => {}
                    }
                }
            }
            Prediction::Value(p) => {
                if let Some(t) = label.as_f64() {
                    r.n += 1;
                    r.abs += (p - t).abs();
                    r.sq += (p - t).powi(2);
                }
            }
        }
    }

    /// Closes the window: its metrics.
    pub fn close(&mut self, calibration: Option<&Calibration>) -> Value {
        let r = std::mem::take(&mut self.realised);
        let realised = (r.n > 0).then(|| match self.spec.task {
            Task::Classification => json!({
                "accuracy": r.correct as f64 / r.n as f64,
                "f1": self.spec.positive.as_ref().map(|_| f1(r.tp as f64, r.fp as f64, r.fn_ as f64)),
                "n": r.n}),
            Task::Regression => json!({
                "mae": r.abs / r.n as f64, "rmse": (r.sq / r.n as f64).sqrt(), "n": r.n}),
        });
        let probs = std::mem::take(&mut self.probabilities);
        let estimated = (!probs.is_empty()).then(|| {
            let e = cbpe(&probs, calibration);
            json!({"accuracy": (e.tp + e.tn) / e.n as f64, "f1": f1(e.tp, e.fp, e.fn_),
                   "n": e.n, "calibrated": calibration.is_some(),
                   "assumes": "no concept drift (CBPE)"})
        });
        let task = match self.spec.task {
            Task::Classification => "classification",
            Task::Regression => "regression",
        };
        let v = json!({"task": task, "realised": realised, "estimated": estimated,
                       "joined": self.joined, "unmatched_feedback": self.unmatched,
                       "pending": self.pending.len()});
        self.last = Some(v.clone());
        v
    }

    /// The last window's, as `GET /v2/monitor` shows it.
    pub fn state(&self) -> Value {
        self.last.clone().unwrap_or_else(|| {
            json!({"task": match self.spec.task { Task::Classification => "classification", Task::Regression => "regression" },
                   "realised": null, "estimated": null})
        })
    }

    /// `servegraph_estimated_performance{metric}` and the realised ones of the last window.
    pub fn gauges(&self) -> Vec<(&'static str, f64)> {
        let mut out = Vec::new();
        let Some(last) = &self.last else { return out };
        for (prefix, key) in [("estimated", "estimated"), ("realised", "realised")] {
            for metric in ["accuracy", "f1", "mae", "rmse"] {
                if let Some(v) = last[key][metric].as_f64() {
                    out.push((gauge_name(prefix, metric), v));
                }
            }
        }
        out
    }
}

fn gauge_name(prefix: &str, metric: &str) -> &'static str {
    match (prefix, metric) {
        ("estimated", "accuracy") => "estimated_accuracy",
        ("estimated", "f1") => "estimated_f1",
        ("realised", "accuracy") => "realised_accuracy",
        ("realised", "f1") => "realised_f1",
        ("realised", "mae") => "realised_mae",
        _ => "realised_rmse",
    }
}

/// F1 = TP / (TP + ½(FP + FN)) (NaN without positives either side).
pub fn f1(tp: f64, fp: f64, fn_: f64) -> f64 {
    tp / (tp + 0.5 * (fp + fn_))
}

/// NannyML's CBPE: the expected confusion matrix from (calibrated) probabilities of the
/// positive class and the predicted class: E[TP] = Σ_{ŷ=1} p, E[FP] = Σ_{ŷ=1} (1 − p),
/// E[FN] = Σ_{ŷ=0} p, E[TN] = Σ_{ŷ=0} (1 − p).
fn cbpe(rows: &[(f64, bool)], calibration: Option<&Calibration>) -> Expected {
    let mut e = Expected::default();
    for &(p, predicted) in rows {
        let p = match calibration {
            Some(c) => stats::interpolate(&c.x, &c.y, p),
            None => p,
        }
        .clamp(0.0, 1.0);
        e.n += 1;
        if predicted {
            e.tp += p;
            e.fp += 1.0 - p;
        } else {
            e.fn_ += p;
            e.tn += 1.0 - p;
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cbpe_expected_matrix() {
        let e = cbpe(
            &[(0.9, true), (0.6, true), (0.2, false), (0.4, false)],
            None,
        );
        assert!((e.tp - 1.5).abs() < 1e-12 && (e.fp - 0.5).abs() < 1e-12);
        assert!((e.fn_ - 0.6).abs() < 1e-12 && (e.tn - 1.4).abs() < 1e-12);
        // accuracy (1.5 + 1.4)/4, F1 1.5/(1.5 + 0.55)
        assert!(((e.tp + e.tn) / 4.0 - 0.725).abs() < 1e-12);
        assert!((f1(e.tp, e.fp, e.fn_) - 1.5 / 2.05).abs() < 1e-12);
    }
}
