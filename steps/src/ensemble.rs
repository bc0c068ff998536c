//! `kind: ensemble`: runs every route concurrently on the same event and combines the answers.
//!
//! - `combine: mean` averages every floating-point tensor the routes share (same name and
//!   shape); other tensors are dropped (add an `argmax` transform after it for a label).
//! - `combine: vote` takes a majority vote per row on `tensor` (default `label`): an integer
//!   class per row, or a float `[N, classes]` score whose argmax is the vote. A tie goes to the
//!   earliest route (in declaration order) that voted for one of the tied classes. The result
//!   is INT64 `[N]` under the same name, next to the mean of the shared float tensors.

use futures_util::future::join_all;
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;
use servegraph_engine::{
    BuildContext, DataType, Error, Event, Result, Signature, Step, StepNode, Tensor, TensorData,
    TensorMeta, async_trait,
};

use crate::routes::{Route, build_routes, common_inputs, infer_each};
use crate::transform::argmax;

/// An ensemble's fields.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnsembleSpec {
    /// How to combine the routes' answers.
    pub combine: Combine,
    /// `vote`: the tensor holding each route's class (default `label`).
    #[serde(default)]
    pub tensor: Option<String>,
    /// The members: name → step. All run on every request.
    #[schemars(with = "IndexMap<String, serde_json::Value>")]
    pub routes: serde::de::IgnoredAny,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    /// Element-wise mean of the shared float tensors.
    Mean,
    /// Majority vote on a class tensor.
    Vote,
}

pub struct Ensemble {
    routes: Vec<Route>,
    combine: Combine,
    vote_tensor: String,
}

/// Builds an `ensemble` step.
pub fn build(node: &StepNode, ctx: &mut BuildContext) -> Option<Box<dyn Step>> {
    let spec: Option<EnsembleSpec> = ctx.parse(node);
    let routes = build_routes(node, ctx)?;
    let spec = spec?;
    if spec.tensor.is_some() && spec.combine != Combine::Vote {
        let span = node
            .body
            .get_node("tensor")
            .map(|n| *n.span())
            .unwrap_or(node.span);
        ctx.error(
            &node.name,
            &span,
            "`tensor` only applies to `combine: vote`",
        );
        return None;
    }
    Some(Box::new(Ensemble {
        routes,
        combine: spec.combine,
        vote_tensor: spec.tensor.unwrap_or_else(|| "label".to_owned()),
    }))
}

#[async_trait]
impl Step for Ensemble {
    async fn process(&self, event: Event) -> Result<Event> {
        let runs = self.routes.iter().map(|r| {
            let ev = event.clone();
            async move { r.step.process(ev).await.map_err(|e| e.in_step(&r.key)) }
        });
        let answers: Vec<Event> = join_all(runs).await.into_iter().collect::<Result<_>>()?;
        let mut out = Event {
            tensors: Vec::new(),
            ..event
        };
        out.tensors = mean_of_shared_floats(&answers)?;
        if self.combine == Combine::Vote {
            out.put(self.vote(&answers)?);
        }
        for a in &answers {
            for r in &a.routes {
                if !out.routes.contains(r) {
                    out.routes.push(r.clone());
                }
            }
        }
        Ok(out)
    }

    fn infer(&self, input: &Signature) -> Result<Signature, String> {
        let sigs = infer_each(&self.routes, input)?;
        let open = sigs.iter().any(|s| s.open);
        let first = &sigs[0];
        let mut tensors: Vec<TensorMeta> = first
            .tensors
            .iter()
            .filter(|t| {
                t.datatype.is_float() && sigs[1..].iter().all(|s| s.get(&t.name) == Some(*t))
            })
            .cloned()
            .collect();
        if self.combine == Combine::Vote {
            for (sig, route) in sigs.iter().zip(&self.routes) {
                match sig.get(&self.vote_tensor) {
                    Some(t) if !(t.datatype.is_integer() || t.datatype.is_float()) => {
                        return Err(format!(
                            "route `{}` gives `{}` as {}; a vote needs classes or scores",
                            route.key, t.name, t.datatype
                        ));
                    }
                    Some(_) => {}
                    None if sig.open => {}
                    None => {
                        return Err(format!(
                            "route `{}` gives no `{}` to vote on; it gives: {}",
                            route.key,
                            self.vote_tensor,
                            sig.describe()
                        ));
                    }
                }
            }
            tensors.retain(|t| t.name != self.vote_tensor);
            tensors.push(TensorMeta::new(
                &self.vote_tensor,
                DataType::Int64,
                vec![-1],
            ));
        }
        Ok(Signature { tensors, open })
    }

    fn inputs(&self) -> Option<Vec<TensorMeta>> {
        common_inputs(&self.routes)
    }

    fn platform(&self) -> &str {
        "servegraph_ensemble"
    }
}

impl Ensemble {
    fn vote(&self, answers: &[Event]) -> Result<Tensor> {
        let name = &self.vote_tensor;
        let mut votes: Vec<Vec<i64>> = Vec::with_capacity(answers.len());
        for (a, route) in answers.iter().zip(&self.routes) {
            let t = a.get(name).ok_or_else(|| {
                Error::internal(format!("route `{}` gave no `{name}` to vote on", route.key))
            })?;
            votes.push(classes(t)?);
        }
        let rows = votes[0].len();
        if votes.iter().any(|v| v.len() != rows) {
            return Err(Error::internal(format!(
                "routes disagree on the number of rows in `{name}`"
            )));
        }
        let winners = (0..rows)
            .map(|row| {
                let mut counts: Vec<(i64, usize)> = Vec::new();
                for v in &votes {
                    match counts.iter_mut().find(|(c, _)| *c == v[row]) {
                        Some((_, n)) => *n += 1,
                        None => counts.push((v[row], 1)),
                    }
                }
                // `counts` is in first-vote order, so `max_by_key` picking the last maximum
                // would favour later routes; take the first maximum instead.
                let best = counts.iter().map(|(_, n)| *n).max().unwrap_or(0);
                counts
                    .iter()
                    .find(|(_, n)| *n == best)
                    .map(|(c, _)| *c)
                    .unwrap_or(0)
            })
            .collect::<Vec<i64>>();
        Tensor::new(name.clone(), vec![rows], TensorData::Int64(winners))
    }
}

/// One class per row: integer classes as they are, float scores by argmax over the last axis.
fn classes(t: &Tensor) -> Result<Vec<i64>> {
    let values = t.data.to_f64_vec().ok_or_else(|| {
        Error::internal(format!(
            "cannot vote on `{}` of type {}",
            t.name,
            t.datatype()
        ))
    })?;
    if t.datatype().is_float() {
        let width = t.shape.last().copied().unwrap_or(1).max(1);
        Ok(values.chunks(width).map(|r| argmax(r) as i64).collect())
    } else {
        Ok(values.into_iter().map(|v| v as i64).collect())
    }
}

/// The element-wise mean of each float tensor every answer has with the same shape.
fn mean_of_shared_floats(answers: &[Event]) -> Result<Vec<Tensor>> {
    let mut out = Vec::new();
    for t in &answers[0].tensors {
        if !t.datatype().is_float() {
            continue;
        }
        let all: Option<Vec<&Tensor>> = answers.iter().map(|a| a.get(&t.name)).collect();
        let Some(all) = all else { continue };
        if all
            .iter()
            .any(|o| o.shape != t.shape || o.datatype() != t.datatype())
        {
            continue;
        }
        let mut sum = vec![0.0f64; t.data.len()];
        for o in &all {
            for (s, v) in sum.iter_mut().zip(o.data.to_f64_vec().expect("float")) {
                *s += v;
            }
        }
        let n = all.len() as f64;
        let data = match t.datatype() {
            DataType::Fp64 => TensorData::Fp64(sum.into_iter().map(|s| s / n).collect()),
            DataType::Fp16 => TensorData::Fp16(
                sum.into_iter()
                    .map(|s| half::f16::from_f64(s / n))
                    .collect(),
            ),
            _ => TensorData::Fp32(sum.into_iter().map(|s| (s / n) as f32).collect()),
        };
        out.push(Tensor::new(t.name.clone(), t.shape.clone(), data)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use servegraph_engine::{BuildMode, Graph, Registry};

    use super::*;

    /// Routes that "predict" fixed tensors, to test the combination alone.
    struct Fixed(Vec<Tensor>);

    #[async_trait]
    impl Step for Fixed {
        async fn process(&self, mut event: Event) -> Result<Event> {
            event.tensors = self.0.clone();
            Ok(event)
        }
    }

    fn registry() -> Registry {
        let mut r = Registry::new();
        r.register("ensemble", build);
        r.register("fixed", |node: &StepNode, _: &mut BuildContext| {
            let (labels, p): (Vec<i64>, Vec<f32>) = match node.name.as_str() {
                "a" => (vec![0, 1, 2], vec![0.2, 0.8]),
                "b" => (vec![1, 1, 0], vec![0.4, 0.6]),
                _ => (vec![2, 1, 0], vec![0.0, 1.0]),
            };
            Some(Box::new(Fixed(vec![
                Tensor::new("label", vec![3], TensorData::Int64(labels)).unwrap(),
                Tensor::new("p", vec![1, 2], TensorData::Fp32(p)).unwrap(),
            ])) as Box<dyn Step>)
        });
        r
    }

    async fn run(combine: &str, members: &str) -> Event {
        let yaml = format!(
            "name: e\ngraph: {{kind: flow, steps: {{ens: {{kind: ensemble, combine: {combine}, routes: {members}}}}}}}\n"
        );
        let g = Graph::from_yaml(&yaml, Path::new("."), &registry(), BuildMode::Load).unwrap();
        g.run(Event::new("x", vec![])).await.unwrap()
    }

    #[tokio::test]
    async fn vote_majority_with_first_route_tiebreak() {
        let out = run(
            "vote",
            "{a: {kind: fixed}, b: {kind: fixed}, c: {kind: fixed}}",
        )
        .await;
        // Row 0: a=0 b=1 c=2 → three-way tie → a's 0. Row 1: all 1. Row 2: b,c=0 beat a=2.
        assert_eq!(
            out.get("label").unwrap().data,
            TensorData::Int64(vec![0, 1, 0])
        );
        let TensorData::Fp32(p) = &out.get("p").unwrap().data else {
            panic!()
        };
        assert!((p[0] - 0.2).abs() < 1e-6 && (p[1] - 0.8).abs() < 1e-6);
        let out = run("vote", "{b: {kind: fixed}, a: {kind: fixed}}").await;
        assert_eq!(
            out.get("label").unwrap().data,
            TensorData::Int64(vec![1, 1, 0])
        );
    }

    #[tokio::test]
    async fn mean_averages_shared_floats_and_drops_the_rest() {
        let out = run("mean", "{a: {kind: fixed}, b: {kind: fixed}}").await;
        assert!(out.get("label").is_none());
        let TensorData::Fp32(p) = &out.get("p").unwrap().data else {
            panic!()
        };
        assert!(
            (p[0] - 0.3).abs() < 1e-6 && (p[1] - 0.7).abs() < 1e-6,
            "{p:?}"
        );
    }
}
