//! Reference profiles: what windows are compared with, built once from a dataset or frozen
//! from the stream's first rows, stored as a versioned JSON file (in the spirit of MLRun's
//! `feature_stats`).

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::spec::{ColumnSpec, ColumnType};
use super::stats;

/// The profile file's format.
pub const FORMAT: u32 = 1;
/// Reference-quantile bins per numerical column (MLRun's `default_num_bins`), between
/// MLRun's two padding bins.
pub const BINS: usize = 20;
/// Reference values kept for K-S and Wasserstein (NannyML's exact-below-10,000 rule).
pub const SAMPLE: usize = 10_000;

/// A reference profile.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Profile {
    pub format: u32,
    pub id: String,
    pub version: u64,
    pub created: String,
    /// What it was built from.
    pub source: String,
    /// Rows it was built from.
    pub events: u64,
    pub columns: Vec<ColumnProfile>,
    /// CBPE's calibration map (isotonic, fitted on labelled reference rows), if built with
    /// labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
}

/// An isotonic calibration map: knots and fitted probabilities.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Calibration {
    pub x: Vec<f64>,
    pub y: Vec<f64>,
}

/// One column's reference.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ColumnProfile {
    pub name: String,
    /// `feature` or `output`.
    pub kind: String,
    #[serde(rename = "type")]
    pub column_type: ColumnType,
    /// Numerical: the finite inner edges e₀ … eₙ (reference quantiles, distinct).
    #[serde(default)]
    pub edges: Vec<f64>,
    /// Numerical: len(edges) + 1 fractions, the two padding bins first and last.
    /// Categorical: one per category, then "other".
    pub fractions: Vec<f64>,
    /// Categorical: the categories kept (most frequent first).
    #[serde(default)]
    pub categories: Vec<String>,
    /// Categorical: the counts behind `fractions` (for χ²).
    #[serde(default)]
    pub counts: Vec<u64>,
    #[serde(default)]
    pub mean: f64,
    /// Population standard deviation.
    #[serde(default)]
    pub std: f64,
    /// Numerical: up to 10,000 reference values, sorted (quantiles of all of them).
    #[serde(default)]
    pub sample: Vec<f64>,
    /// Rows with a value.
    pub rows: u64,
    pub missing: u64,
    #[serde(default)]
    pub nan: u64,
}

impl Profile {
    /// Reads a profile file.
    pub fn read(path: &Path) -> Result<Profile, String> {
        let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let p: Profile = serde_json::from_slice(&text)
            .map_err(|e| format!("{}: not a servegraph profile: {e}", path.display()))?;
        if p.format != FORMAT {
            return Err(format!(
                "{}: profile format {} (this servegraph reads {FORMAT})",
                path.display(),
                p.format
            ));
        }
        Ok(p)
    }

    /// Writes it; an existing profile at `path` with the same id makes this its next version.
    pub fn write(&mut self, path: &Path) -> Result<(), String> {
        if let Ok(old) = Profile::read(path)
            && old.id == self.id
        {
            self.version = old.version + 1;
        }
        let text = serde_json::to_vec_pretty(self).expect("JSON");
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn column(&self, name: &str) -> Option<&ColumnProfile> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// Values collected for one column.
enum Collected {
    Num(Vec<f64>),
    Cat(HashMap<String, u64>),
}

/// Collects rows, then builds a [`Profile`]. Memory: the values of the rows it is given.
pub struct Builder {
    columns: Vec<(ColumnSpec, &'static str, Collected, u64, u64)>,
    rows: u64,
    labelled: Vec<(f64, f64)>,
}

impl Builder {
    pub fn new(features: &[ColumnSpec], outputs: &[ColumnSpec]) -> Builder {
        let columns = features
            .iter()
            .map(|c| (c, "feature"))
            .chain(outputs.iter().map(|c| (c, "output")))
            .map(|(c, kind)| {
                let collected = match c.kind {
                    ColumnType::Numerical => Collected::Num(Vec::new()),
                    ColumnType::Categorical => Collected::Cat(HashMap::new()),
                };
                (c.clone(), kind, collected, 0, 0)
            })
            .collect();
        Builder {
            columns,
            rows: 0,
            labelled: Vec::new(),
        }
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn add_row(&mut self) {
        self.rows += 1;
    }

    /// One value (or a missing one) of column `i`.
    pub fn add_number(&mut self, i: usize, x: Option<f64>) {
        let (_, _, c, missing, nan) = &mut self.columns[i];
        match (c, x) {
            (_, None) => *missing += 1,
            (Collected::Num(_), Some(x)) if x.is_nan() => *nan += 1,
            (Collected::Num(v), Some(x)) => v.push(x),
            (Collected::Cat(m), Some(x)) => {
                let key = super::line::Elem::Num(x)
                    .category()
                    .unwrap_or_default()
                    .into_owned();
                *m.entry(key).or_default() += 1;
            }
        }
    }

    /// One category (or a missing one) of column `i`; a number for a numerical column.
    pub fn add_text(&mut self, i: usize, x: Option<&str>) {
        let numerical = matches!(self.columns[i].2, Collected::Num(_));
        if numerical {
            let parsed = x.and_then(|t| t.trim().parse::<f64>().ok());
            return self.add_number(i, parsed);
        }
        let (_, _, c, missing, _) = &mut self.columns[i];
        match (c, x) {
            (Collected::Cat(m), Some(x)) => *m.entry(x.to_owned()).or_default() += 1,
            _ => *missing += 1,
        }
    }

    /// A labelled probability, for CBPE's calibration.
    pub fn add_labelled(&mut self, probability: f64, positive: bool) {
        if probability.is_finite() {
            self.labelled
                .push((probability, f64::from(u8::from(positive))));
        }
    }

    /// The profile of what was collected.
    pub fn build(mut self, id: String, source: String) -> Result<Profile, String> {
        let mut columns = Vec::new();
        for (spec, kind, collected, missing, nan) in self.columns.drain(..) {
            let profile = match collected {
                Collected::Num(mut v) => {
                    if v.is_empty() {
                        return Err(format!("column `{}` has no numbers", spec.name));
                    }
                    v.sort_by(f64::total_cmp);
                    let mut edges: Vec<f64> = (0..=BINS)
                        .map(|k| stats::quantile(&v, k as f64 / BINS as f64))
                        .collect();
                    edges.dedup();
                    let mut counts = vec![0u64; edges.len() + 1];
                    for &x in &v {
                        counts[stats::bin_of(&edges, x)] += 1;
                    }
                    let (mean, std) = stats::mean_std(&v);
                    let sample = if v.len() <= SAMPLE {
                        v.clone()
                    } else {
                        (0..SAMPLE)
                            .map(|k| stats::quantile(&v, (k as f64 + 0.5) / SAMPLE as f64))
                            .collect()
                    };
                    ColumnProfile {
                        name: spec.name.clone(),
                        kind: kind.into(),
                        column_type: ColumnType::Numerical,
                        edges,
                        fractions: stats::fractions(&counts),
                        categories: Vec::new(),
                        counts: Vec::new(),
                        mean,
                        std,
                        sample,
                        rows: v.len() as u64,
                        missing,
                        nan,
                    }
                }
                Collected::Cat(m) => {
                    if m.is_empty() {
                        return Err(format!("column `{}` has no values", spec.name));
                    }
                    let mut by_count: Vec<(String, u64)> = m.into_iter().collect();
                    by_count.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                    let rest: u64 = by_count.iter().skip(spec.max_categories).map(|c| c.1).sum();
                    by_count.truncate(spec.max_categories);
                    let mut counts: Vec<u64> = by_count.iter().map(|c| c.1).collect();
                    counts.push(rest);
                    ColumnProfile {
                        name: spec.name.clone(),
                        kind: kind.into(),
                        column_type: ColumnType::Categorical,
                        edges: Vec::new(),
                        fractions: stats::fractions(&counts),
                        categories: by_count.into_iter().map(|c| c.0).collect(),
                        rows: counts.iter().sum(),
                        counts,
                        mean: 0.0,
                        std: 0.0,
                        sample: Vec::new(),
                        missing,
                        nan,
                    }
                }
            };
            columns.push(profile);
        }
        let calibration = (!self.labelled.is_empty()).then(|| {
            let (x, y) = stats::isotonic(&mut self.labelled);
            Calibration { x, y }
        });
        Ok(Profile {
            format: FORMAT,
            id,
            version: 1,
            created: crate::tracking::timestamp(std::time::SystemTime::now()),
            source,
            events: self.rows,
            columns,
            calibration,
        })
    }
}

/// Splits one CSV line into fields (RFC 4180 quotes, `""` inside them).
pub fn csv_fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if field.is_empty() => quoted = true,
            (',', false) => out.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    out.push(field);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, kind: ColumnType) -> ColumnSpec {
        ColumnSpec {
            name: name.into(),
            tensor: Some("x".into()),
            index: 0,
            field: None,
            column: None,
            kind,
            max_categories: 2,
        }
    }

    #[test]
    fn numbers_get_quantile_bins_with_padding_and_categories_an_other_bucket() {
        let mut b = Builder::new(
            &[
                col("a", ColumnType::Numerical),
                col("c", ColumnType::Categorical),
            ],
            &[],
        );
        for i in 0..1000 {
            b.add_row();
            b.add_number(0, Some(i as f64));
            b.add_text(1, Some(["x", "x", "y", "z"][i % 4]));
        }
        b.add_number(0, None);
        b.add_number(0, Some(f64::NAN));
        let p = b.build("t".into(), "test".into()).unwrap();
        let a = &p.columns[0];
        assert_eq!(a.edges.len(), BINS + 1);
        assert_eq!(a.fractions.len(), BINS + 2);
        assert_eq!((a.fractions[0], a.fractions[BINS + 1]), (0.0, 0.0));
        assert!((a.fractions[1..=BINS].iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!((a.missing, a.nan, a.rows), (1, 1, 1000));
        let c = &p.columns[1];
        assert_eq!(c.categories, ["x", "y"]);
        assert_eq!(c.counts, [500, 250, 250]);
    }

    #[test]
    fn csv_quotes() {
        assert_eq!(
            csv_fields(r#"1,"a,b","say ""hi""",,x"#),
            ["1", "a,b", r#"say "hi""#, "", "x"]
        );
    }
}
