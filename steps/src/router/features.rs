//! `policy.features`: the numbers a router's policy sees of a request (its context), declared
//! in YAML and encoded from the request's tensors, body fields and headers, an intercept (1)
//! appended last.
//!
//! ```yaml
//! features:
//!   - {tensor: input, size: 4}            # every element of a one-row tensor (4 of them)
//!   - {tensor: input, indices: [0, 2]}    # some of its elements
//!   - {field: age}                        # a number in the body (top level or `parameters`)
//!   - {field: plan, values: [free, pro]}  # one-hot: one number per declared value
//!   - {header: x-country, hash: 16}       # hashed into 16 buckets (VW-style), for open sets
//! ```
//!
//! A declared feature that is missing, or of the wrong type or shape, fails the request with a
//! 400 naming the feature and what is wrong: the policy never sees a made-up number.

use schemars::JsonSchema;
use serde::Deserialize;
use servegraph_engine::diag::one_of;
use servegraph_engine::{BuildContext, Error, Event, Result, StepNode};

use super::policy::unit_hash;

/// One entry of `policy.features`: exactly one of `tensor`, `field` or `header`; then
/// `values` (one-hot) or `hash` (buckets) for a categorical one, else a number.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    /// A request tensor, by name: numbers, one row (shape `[n]` or `[1, n]`). Needs `size`
    /// (its element count) or `indices`.
    #[serde(default)]
    pub tensor: Option<String>,
    /// A body field: a top-level field of the request body, or one of its `parameters`.
    #[serde(default)]
    pub field: Option<String>,
    /// A request header (case-insensitive).
    #[serde(default)]
    pub header: Option<String>,
    /// `tensor`: how many elements it has (all are features).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub size: Option<usize>,
    /// `tensor`: which of its elements are features (0-based, in row-major order).
    #[serde(default)]
    pub indices: Option<Vec<usize>>,
    /// `field`/`header`: a categorical value, one-hot over these values; any other value is
    /// refused (use `hash` for open sets).
    #[serde(default)]
    pub values: Option<Vec<String>>,
    /// `field`/`header`: a categorical value hashed into this many buckets (one-hot over the
    /// buckets); any value is taken.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub hash: Option<usize>,
}

impl FeatureSpec {
    /// How many numbers the feature adds to the context (an error naming what is wrong with
    /// the entry otherwise).
    pub fn width(&self) -> std::result::Result<usize, String> {
        feature(self).map(|f| f.width())
    }
}

enum Source {
    Tensor(String),
    Field(String),
    Header(String),
}

enum Encoding {
    /// The tensor's elements: all (`size` of them) or these.
    Elements {
        size: usize,
        indices: Option<Vec<usize>>,
    },
    Number,
    OneHot(Vec<String>),
    Hashed(usize),
}

struct Feature {
    source: Source,
    encoding: Encoding,
}

impl Feature {
    fn width(&self) -> usize {
        match &self.encoding {
            Encoding::Elements { size, indices } => indices.as_ref().map_or(*size, Vec::len),
            Encoding::Number => 1,
            Encoding::OneHot(values) => values.len(),
            Encoding::Hashed(n) => *n,
        }
    }

    /// `features[2] (field `plan`)`.
    fn what(&self, i: usize) -> String {
        let (kind, name) = match &self.source {
            Source::Tensor(n) => ("tensor", n),
            Source::Field(n) => ("field", n),
            Source::Header(n) => ("header", n),
        };
        format!("feature {i} (`{kind}: {name}`)")
    }
}

/// A router's declared features, ready to encode requests.
pub(super) struct Features {
    items: Vec<Feature>,
    dim: usize,
}

impl Features {
    /// Reads `policy.features` (already checked against the schema), reporting what is wrong
    /// with each entry where it is written.
    pub(super) fn build(
        specs: &[FeatureSpec],
        node: &StepNode,
        ctx: &mut BuildContext,
    ) -> Option<Features> {
        let mut items = Vec::with_capacity(specs.len());
        let mut ok = true;
        for (i, s) in specs.iter().enumerate() {
            match feature(s) {
                Ok(f) => items.push(f),
                Err(why) => {
                    ctx.error(
                        &node.name,
                        &feature_span(node, i),
                        format!("`policy.features[{i}]`: {why}"),
                    );
                    ok = false;
                }
            }
        }
        if !ok {
            return None;
        }
        let dim = items.iter().map(Feature::width).sum::<usize>() + 1;
        Some(Features { items, dim })
    }

    /// The length of an encoded context, the intercept included.
    pub(super) fn dim(&self) -> usize {
        self.dim
    }

    /// What the request path must copy into the event: headers, and `body:FIELD` for body
    /// fields.
    pub(super) fn reads(&self) -> Vec<String> {
        self.items
            .iter()
            .filter_map(|f| match &f.source {
                Source::Header(h) => Some(h.to_ascii_lowercase()),
                Source::Field(field) => {
                    Some(format!("{}{field}", servegraph_engine::request::BODY_FIELD))
                }
                Source::Tensor(_) => None,
            })
            .collect()
    }

    /// The request's context: every feature's numbers in declaration order, then 1.
    pub(super) fn encode(&self, router: &str, event: &Event) -> Result<Vec<f64>> {
        let mut x = Vec::with_capacity(self.dim);
        for (i, f) in self.items.iter().enumerate() {
            encode_one(f, event, &mut x).map_err(|why| {
                Error::bad_request(format!("router `{router}`: {}: {why}", f.what(i)))
            })?;
        }
        x.push(1.0);
        debug_assert_eq!(x.len(), self.dim);
        Ok(x)
    }
}

fn feature(s: &FeatureSpec) -> std::result::Result<Feature, String> {
    let sources = [&s.tensor, &s.field, &s.header]
        .iter()
        .filter(|v| v.is_some())
        .count();
    if sources != 1 {
        return Err("give exactly one of `tensor`, `field` or `header`".into());
    }
    if let Some(t) = &s.tensor {
        if s.values.is_some() || s.hash.is_some() {
            return Err(format!(
                "`tensor: {t}` takes numbers: `values` and `hash` are for `field` and `header`"
            ));
        }
        let encoding = match (s.size, &s.indices) {
            (Some(0), _) => return Err("`size` must be at least 1".into()),
            (Some(size), None) => Encoding::Elements {
                size,
                indices: None,
            },
            (size, Some(indices)) => {
                if indices.is_empty() {
                    return Err("`indices` must name at least one element".into());
                }
                if let Some(size) = size
                    && let Some(i) = indices.iter().find(|&&i| i >= size)
                {
                    return Err(format!("index {i} is beyond `size: {size}`"));
                }
                Encoding::Elements {
                    size: size.unwrap_or(0),
                    indices: Some(indices.clone()),
                }
            }
            (None, None) => {
                return Err(format!(
                    "`tensor: {t}` needs `size` (its element count) or `indices` (the elements to take)"
                ));
            }
        };
        return Ok(Feature {
            source: Source::Tensor(t.clone()),
            encoding,
        });
    }
    if s.size.is_some() || s.indices.is_some() {
        return Err("`size` and `indices` are for `tensor`".into());
    }
    let source = match (&s.field, &s.header) {
        (Some(f), _) if f.is_empty() => return Err("`field` must not be empty".into()),
        (Some(f), _) => Source::Field(f.clone()),
        (_, Some(h)) if h.is_empty() => return Err("`header` must not be empty".into()),
        (_, Some(h)) => Source::Header(h.to_ascii_lowercase()),
        _ => unreachable!("one source"),
    };
    let encoding = match (&s.values, s.hash) {
        (Some(_), Some(_)) => return Err("give `values` or `hash`, not both".into()),
        (Some(values), None) => {
            if values.is_empty() {
                return Err("`values` must list at least one value".into());
            }
            if let Some((i, v)) = values
                .iter()
                .enumerate()
                .find(|(i, v)| values[..*i].contains(v))
            {
                return Err(format!("`values` lists `{v}` twice (again at {i})"));
            }
            Encoding::OneHot(values.clone())
        }
        (None, Some(0)) => return Err("`hash` must be at least 1 bucket".into()),
        (None, Some(n)) => Encoding::Hashed(n),
        (None, None) => Encoding::Number,
    };
    Ok(Feature { source, encoding })
}

fn encode_one(f: &Feature, event: &Event, x: &mut Vec<f64>) -> std::result::Result<(), String> {
    match (&f.source, &f.encoding) {
        (Source::Tensor(name), Encoding::Elements { size, indices }) => {
            let t = event.get(name).ok_or_else(|| {
                let names: Vec<&str> = event.tensors.iter().map(|t| t.name.as_str()).collect();
                format!(
                    "the request has no tensor `{name}` (it has {})",
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        one_of(&names)
                    }
                )
            })?;
            let shape = &t.shape;
            if shape.len() > 1 && shape[..shape.len() - 1].iter().any(|&n| n != 1) {
                return Err(format!(
                    "tensor `{name}` has shape {shape:?}: a router's context is one row ([n] or [1, n])"
                ));
            }
            let values = t
                .data
                .to_f64_vec()
                .ok_or_else(|| format!("tensor `{name}` is {}, not numbers", t.data.datatype()))?;
            match indices {
                None => {
                    if values.len() != *size {
                        return Err(format!(
                            "tensor `{name}` has {} elements, `size` declares {size}",
                            values.len()
                        ));
                    }
                    check_finite(name, &values)?;
                    x.extend_from_slice(&values);
                }
                Some(indices) => {
                    if *size > 0 && values.len() != *size {
                        return Err(format!(
                            "tensor `{name}` has {} elements, `size` declares {size}",
                            values.len()
                        ));
                    }
                    for &i in indices {
                        let v = *values.get(i).ok_or_else(|| {
                            format!(
                                "tensor `{name}` has {} elements: no index {i}",
                                values.len()
                            )
                        })?;
                        check_finite(name, &[v])?;
                        x.push(v);
                    }
                }
            }
            Ok(())
        }
        (source, encoding) => {
            let (value, what): (Option<Value>, String) = match source {
                Source::Field(field) => (
                    event.parameters.get(field).map(|v| match v {
                        serde_json::Value::String(s) => Value::Text(s.clone()),
                        serde_json::Value::Number(n) => {
                            Value::Number(n.as_f64().unwrap_or(f64::NAN), n.to_string())
                        }
                        serde_json::Value::Bool(b) => Value::Text(b.to_string()),
                        other => Value::Other(other.to_string()),
                    }),
                    format!("body field `{field}`"),
                ),
                Source::Header(h) => (
                    event.header(h).map(|s| Value::Text(s.to_owned())),
                    format!("header `{h}`"),
                ),
                Source::Tensor(_) => unreachable!("tensors take elements"),
            };
            let value = value.ok_or_else(|| format!("the request has no {what}"))?;
            match encoding {
                Encoding::Number => {
                    let v = match &value {
                        Value::Number(v, _) => *v,
                        Value::Text(s) => s
                            .trim()
                            .parse::<f64>()
                            .map_err(|_| format!("{what} is `{s}`, not a number"))?,
                        Value::Other(s) => return Err(format!("{what} is {s}, not a number")),
                    };
                    if !v.is_finite() {
                        return Err(format!("{what} is {v}, not a finite number"));
                    }
                    x.push(v);
                }
                Encoding::OneHot(values) => {
                    let text = value.text(&what)?;
                    let at = values.iter().position(|v| *v == text).ok_or_else(|| {
                        format!(
                            "{what} is `{text}`, not one of the declared values {}",
                            one_of(values)
                        )
                    })?;
                    x.extend((0..values.len()).map(|i| if i == at { 1.0 } else { 0.0 }));
                }
                Encoding::Hashed(n) => {
                    let text = value.text(&what)?;
                    let at = ((unit_hash(&text) * *n as f64) as usize).min(n - 1);
                    x.extend((0..*n).map(|i| if i == at { 1.0 } else { 0.0 }));
                }
                Encoding::Elements { .. } => unreachable!("tensors only"),
            }
            Ok(())
        }
    }
}

/// A field's or header's value.
enum Value {
    Number(f64, String),
    Text(String),
    Other(String),
}

impl Value {
    /// As a category: a string, number or boolean as written.
    fn text(self, what: &str) -> std::result::Result<String, String> {
        match self {
            Value::Number(_, s) | Value::Text(s) => Ok(s),
            Value::Other(s) => Err(format!(
                "{what} is {s}, not a category (a string or number)"
            )),
        }
    }
}

fn check_finite(name: &str, values: &[f64]) -> std::result::Result<(), String> {
    match values.iter().find(|v| !v.is_finite()) {
        Some(v) => Err(format!("tensor `{name}` holds {v}, not a finite number")),
        None => Ok(()),
    }
}

/// Where `policy.features[i]` is written (else `policy`).
fn feature_span(node: &StepNode, i: usize) -> marked_yaml::Span {
    node.body
        .get_node("policy")
        .and_then(|p| p.as_mapping())
        .and_then(|p| p.get_node("features"))
        .and_then(|f| f.as_sequence())
        .and_then(|s| s.get(i))
        .map(|n| *n.span())
        .unwrap_or_else(|| super::spec::policy_span(node))
}

#[cfg(test)]
mod tests {
    use servegraph_engine::{Tensor, TensorData};

    use super::*;

    fn features(specs: &[FeatureSpec]) -> Features {
        let items: Vec<Feature> = specs.iter().map(|s| feature(s).unwrap()).collect();
        let dim = items.iter().map(Feature::width).sum::<usize>() + 1;
        Features { items, dim }
    }

    /// A spec from its JSON (the YAML's flow form).
    fn spec(json: &str) -> FeatureSpec {
        serde_json::from_str(json).unwrap()
    }

    fn event(tensor: Tensor) -> Event {
        let mut ev = Event::new("e", vec![tensor]);
        ev.headers.push(("X-Tier".into(), "gold".into()));
        ev.headers.push(("x-age".into(), " 41.5 ".into()));
        ev.parameters
            .insert("plan".into(), serde_json::json!("pro"));
        ev.parameters.insert("n".into(), serde_json::json!(3));
        ev.parameters
            .insert("tags".into(), serde_json::json!(["a"]));
        ev
    }

    #[test]
    fn every_kind_of_feature_encodes_in_order_with_the_intercept_last() {
        let f = features(&[
            spec(r#"{"tensor": "x", "indices": [2, 0]}"#),
            spec(r#"{"field": "n"}"#),
            spec(r#"{"header": "x-age"}"#),
            spec(r#"{"field": "plan", "values": ["free", "pro"]}"#),
            spec(r#"{"header": "X-TIER", "hash": 3}"#),
        ]);
        assert_eq!(f.dim(), 2 + 1 + 1 + 2 + 3 + 1);
        let t = Tensor::new("x", vec![1, 3], TensorData::Fp32(vec![0.5, 1.0, -2.0])).unwrap();
        let x = f.encode("r", &event(t)).unwrap();
        assert_eq!(&x[..6], &[-2.0, 0.5, 3.0, 41.5, 0.0, 1.0]);
        assert_eq!(x[6..9].iter().sum::<f64>(), 1.0);
        assert_eq!(x[9], 1.0);
        assert_eq!(f.reads(), ["body:n", "x-age", "body:plan", "x-tier"]);
    }

    #[test]
    fn wrong_features_are_refused_naming_them() {
        let err = |spec_json: &str, t: Tensor| {
            let f = features(&[spec(spec_json)]);
            f.encode("r", &event(t)).unwrap_err().message
        };
        let row = || Tensor::new("x", vec![1, 2], TensorData::Fp32(vec![1.0, 2.0])).unwrap();
        let batch = Tensor::new("x", vec![2, 2], TensorData::Fp32(vec![1.0; 4])).unwrap();
        let text = Tensor::new("x", vec![1], TensorData::Bytes(vec![b"a".to_vec()])).unwrap();
        let nan = Tensor::new("x", vec![2], TensorData::Fp64(vec![1.0, f64::NAN])).unwrap();
        for (spec_json, t, want) in [
            (
                r#"{"tensor": "x", "size": 2}"#,
                batch,
                "has shape [2, 2]: a router's context is one row",
            ),
            (
                r#"{"tensor": "x", "size": 1}"#,
                text,
                "is BYTES, not numbers",
            ),
            (
                r#"{"tensor": "x", "size": 2}"#,
                nan,
                "holds NaN, not a finite number",
            ),
            (
                r#"{"tensor": "x", "size": 3}"#,
                row(),
                "has 2 elements, `size` declares 3",
            ),
            (
                r#"{"tensor": "x", "indices": [5]}"#,
                row(),
                "has 2 elements: no index 5",
            ),
            (
                r#"{"tensor": "y", "size": 2}"#,
                row(),
                "the request has no tensor `y` (it has `x`)",
            ),
            (
                r#"{"field": "plan"}"#,
                row(),
                "body field `plan` is `pro`, not a number",
            ),
            (
                r#"{"field": "tags", "hash": 4}"#,
                row(),
                "is [\"a\"], not a category",
            ),
            (
                r#"{"field": "gone"}"#,
                row(),
                "the request has no body field `gone`",
            ),
            (
                r#"{"header": "x-tier", "values": ["free"]}"#,
                row(),
                "header `x-tier` is `gold`, not one of the declared values `free`",
            ),
        ] {
            let m = err(spec_json, t);
            assert!(m.contains(want), "{spec_json}: {m}");
            assert!(m.starts_with("router `r`: feature 0 ("), "{m}");
        }
    }

    #[test]
    fn malformed_specs_say_what_is_wrong() {
        for (spec_json, want) in [
            (r#"{}"#, "exactly one of"),
            (r#"{"tensor": "x"}"#, "needs `size`"),
            (
                r#"{"tensor": "x", "size": 2, "indices": [2]}"#,
                "index 2 is beyond `size: 2`",
            ),
            (r#"{"tensor": "x", "size": 2, "hash": 3}"#, "takes numbers"),
            (r#"{"field": "a", "size": 2}"#, "are for `tensor`"),
            (r#"{"field": "a", "values": []}"#, "at least one value"),
            (r#"{"field": "a", "values": ["b"], "hash": 2}"#, "not both"),
        ] {
            let m = feature(&spec(spec_json)).err().unwrap();
            assert!(m.contains(want), "{spec_json}: {m}");
        }
    }
}
