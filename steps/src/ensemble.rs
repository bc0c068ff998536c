//! `kind: ensemble`: runs its members concurrently on the same event and combines the answers.
//!
//! - `mean` / `weighted_mean`: the element-wise (weighted) mean of every floating-point tensor
//!   the members share (same name, dtype and shape); other tensors are dropped (add an
//!   `argmax` transform after it for a label).
//! - `max`: the element-wise maximum of the shared float tensors.
//! - `vote`: a (weighted) majority per row on `tensor` (default `label`): an integer class per
//!   row, or a float `[N, classes]` score whose argmax is the vote. A tie goes to the earliest
//!   member (in declaration order) that voted for one of the tied classes. The result is
//!   INT64 `[N]` under the same name, next to the mean of the shared float tensors.
//! - `concat`: every tensor the members share, joined along its last axis in member order
//!   (stacking: `[N, 3]` from two members gives `[N, 6]`).
//! - `first`: the answer of the first member to succeed; the others are cancelled.
//!
//! Members may have `timeout_ms` and `dependency: hard | soft`. A soft member that fails or
//! times out is left out of the combination (the response's `parameters.left_out` names it
//! and why); a hard one fails the request. If every member is left out, the request fails.

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::join_all;
use futures_util::stream::FuturesUnordered;
use indexmap::IndexMap;
use marked_yaml::Node;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};
use servegraph_engine::diag::{Diagnostic, all_of};
use servegraph_engine::step::from_yaml;
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
    /// How to combine the members' answers.
    pub combine: Combine,
    /// `vote`: the tensor holding each member's class (default `label`).
    #[serde(default)]
    pub tensor: Option<String>,
    /// `weighted_mean` and `vote`: member → weight (> 0). Members not listed weigh 1.
    #[serde(default)]
    pub weights: Option<IndexMap<String, f64>>,
    /// The members: name → step, each optionally with `timeout_ms` and `dependency`.
    #[schemars(with = "IndexMap<String, serde_json::Value>")]
    pub routes: serde::de::IgnoredAny,
    /// `combine: seldon`: the Seldon COMBINER class (`aggregate(features_list,
    /// names_list)`, or `aggregate_raw`), as a `class: python` model's fields (`path`,
    /// `class_name`, `class_args`, `python`, ...).
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Value>")]
    pub seldon: Option<serde::de::IgnoredAny>,
}

/// What an ensemble member may say about itself besides its step.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberSpec {
    /// Deadline for this member, in milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// `hard` (default): the member's failure fails the request. `soft`: it is left out.
    #[serde(default)]
    pub dependency: Dependency,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Dependency {
    #[default]
    Hard,
    Soft,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    /// Element-wise mean of the shared float tensors.
    Mean,
    /// Element-wise weighted mean of the shared float tensors.
    WeightedMean,
    /// (Weighted) majority vote on a class tensor.
    Vote,
    /// Element-wise maximum of the shared float tensors.
    Max,
    /// Shared tensors joined along the last axis, row by row: row `r` of the answer is row
    /// `r` of each member in member order (rows of a batch are never mixed).
    Concat,
    /// The first member to succeed.
    First,
    /// A Seldon COMBINER class (`seldon:`) on the members' answers as Seldon messages; its
    /// answer is a body (Seldon's message).
    Seldon,
}

impl Combine {
    /// The name as `combine:` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Combine::Mean => "mean",
            Combine::WeightedMean => "weighted_mean",
            Combine::Vote => "vote",
            Combine::Max => "max",
            Combine::Concat => "concat",
            Combine::First => "first",
            Combine::Seldon => "seldon",
        }
    }
}

const MEMBER_FIELDS: [&str; 2] = ["timeout_ms", "dependency"];

struct Member {
    route: Route,
    weight: f64,
    timeout: Option<Duration>,
    soft: bool,
}

pub struct Ensemble {
    /// The step's name (an MLRun answer's `model_name`).
    name: String,
    members: Vec<Member>,
    combine: Combine,
    vote_tensor: String,
    /// `combine: seldon`'s class (`None` while the graph is only checked).
    combiner: Option<std::sync::Arc<crate::model::python::PythonModel>>,
}

/// Builds an `ensemble` step.
pub fn build(node: &StepNode, ctx: &mut BuildContext) -> Option<Box<dyn Step>> {
    let spec: Option<EnsembleSpec> = ctx.parse(node);
    let routes = build_routes(node, ctx, &MEMBER_FIELDS)?;
    let spec = spec?;
    let field_span = |f: &str| {
        node.body
            .get_node(f)
            .map(|n| *n.span())
            .unwrap_or(node.span)
    };
    if spec.tensor.is_some() && spec.combine != Combine::Vote {
        ctx.error(
            &node.name,
            &field_span("tensor"),
            "`tensor` only applies to `combine: vote`",
        );
        return None;
    }
    let combiner_fields = node.body.get_node("seldon").and_then(|n| n.as_mapping());
    let combiner = match (spec.combine, combiner_fields) {
        (Combine::Seldon, Some(fields)) => crate::model::python::start_component(
            node,
            fields,
            ctx,
            crate::model::python::SeldonRole::Combiner,
        )
        .ok()?,
        (Combine::Seldon, None) => {
            ctx.error(
                &node.name,
                &field_span("combine"),
                "`combine: seldon` needs `seldon:`, the COMBINER class's fields (`path`, `class_name`, ...)",
            );
            return None;
        }
        (_, Some(_)) => {
            ctx.error(
                &node.name,
                &field_span("seldon"),
                "`seldon` only applies to `combine: seldon`",
            );
            return None;
        }
        (_, None) => None,
    };
    if spec.weights.is_some() && !matches!(spec.combine, Combine::Vote | Combine::WeightedMean) {
        ctx.error(
            &node.name,
            &field_span("weights"),
            "`weights` only applies to `combine: weighted_mean` or `vote`",
        );
        return None;
    }
    let weights = spec.weights.unwrap_or_default();
    let keys: Vec<&str> = routes.iter().map(|r| r.key.as_str()).collect();
    for (name, w) in &weights {
        if !keys.contains(&name.as_str()) {
            ctx.report(
                Diagnostic::new(format!("`weights` names `{name}`, which is not a member"))
                    .step(&node.name)
                    .at(&field_span("weights"))
                    .help(format!("members are {}", all_of(&keys))),
            );
            return None;
        }
        if !w.is_finite() || *w <= 0.0 {
            ctx.error(
                &node.name,
                &field_span("weights"),
                format!("weight of `{name}` must be > 0"),
            );
            return None;
        }
    }
    let mut members = Vec::with_capacity(routes.len());
    let mut failed = false;
    for route in routes {
        let extra = Node::Mapping(route.extra.clone());
        let what = format!("ensemble member `{}`", route.key);
        let member: MemberSpec = match from_yaml(&extra, route.extra.span(), &what, &[]) {
            Ok(m) => m,
            Err(problems) => {
                ctx.report_in(&node.name, problems);
                failed = true;
                continue;
            }
        };
        if member.timeout_ms == Some(0) {
            ctx.error(
                &node.name,
                route.extra.span(),
                format!("`timeout_ms` of `{}` must be at least 1", route.key),
            );
            failed = true;
        }
        members.push(Member {
            weight: weights.get(&route.key).copied().unwrap_or(1.0),
            timeout: member.timeout_ms.map(Duration::from_millis),
            soft: member.dependency == Dependency::Soft,
            route,
        });
    }
    if failed {
        return None;
    }
    Some(Box::new(Ensemble {
        name: node.name.clone(),
        members,
        combine: spec.combine,
        vote_tensor: spec.tensor.unwrap_or_else(|| "label".to_owned()),
        combiner,
    }))
}

impl Member {
    /// Runs the member within its timeout, naming it in any error.
    async fn run(&self, event: Event) -> Result<Event> {
        let fut = self.route.step.process(event);
        let result = match self.timeout {
            None => fut.await,
            Some(limit) => tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
                Err(Error::timeout(format!(
                    "took longer than its timeout_ms of {}",
                    limit.as_millis()
                )))
            }),
        };
        result.map_err(|e| e.in_step(&self.route.key))
    }
}

#[async_trait]
impl Step for Ensemble {
    async fn process(&self, event: Event) -> Result<Event> {
        let (mut answers, left_out) = if self.combine == Combine::First {
            self.first_success(&event).await?
        } else {
            self.run_all(&event).await?
        };
        // MLRun's model servers answer bodies: their `outputs` are what is combined (MLRun's
        // VotingEnsemble), and the answer is MLRun's too.
        let mlrun =
            self.combine != Combine::Seldon && answers.iter().all(|(_, a)| is_mlrun_answer(a));
        if mlrun {
            let name = match self.combine {
                Combine::Vote => self.vote_tensor.clone(),
                _ => "outputs".to_owned(),
            };
            for (m, a) in answers.iter_mut() {
                let outputs = &a.answered_body().expect("an MLRun answer")["outputs"];
                let t = outputs_tensor(&name, outputs, self.combine == Combine::Vote)
                    .map_err(|e| e.in_step(&m.route.key))?;
                a.tensors = vec![t];
            }
        }
        let mut out = event;
        out.tensors.clear();
        if self.combine == Combine::Seldon {
            let Some(combiner) = &self.combiner else {
                return Err(Error::unavailable("the ensemble's combiner is not loaded"));
            };
            let messages = answers
                .iter()
                .map(|(_, a)| servegraph_engine::protocol::seldon::answer_message(a))
                .collect::<Result<Vec<_>>>()?;
            let combined = combiner
                .call_body(serde_json::json!({ "seldonMessages": messages }))
                .await?;
            out.body = Some(servegraph_engine::JsonBody {
                value: combined,
                answered: true,
                protocol: servegraph_engine::BodyProtocol::Seldon,
            });
            for (_, a) in &answers {
                out.routes.extend(a.routes.iter().cloned());
                out.routing.extend(a.routing.iter().cloned());
                out.model_time = out.model_time.max(a.model_time);
            }
            return Ok(out);
        }
        out.tensors = match self.combine {
            Combine::Seldon => unreachable!("answered above"),
            Combine::First => answers[0].1.tensors.clone(),
            Combine::Mean => reduce_shared_floats(&answers, Reduce::Mean)?,
            Combine::WeightedMean => reduce_shared_floats(&answers, Reduce::WeightedMean)?,
            Combine::Max => reduce_shared_floats(&answers, Reduce::Max)?,
            Combine::Concat => concat_shared(&answers)?,
            Combine::Vote => {
                let mut t = reduce_shared_floats(&answers, Reduce::Mean)?;
                let voted = self.vote(&answers)?;
                t.retain(|x| x.name != voted.name);
                t.push(voted);
                t
            }
        };
        if out.tensors.is_empty() {
            // Never an empty answer with 200: say what could not be combined.
            let gave: Vec<String> = answers
                .iter()
                .map(|(m, a)| format!("`{}` gave {}", m.route.key, a.describe_tensors()))
                .collect();
            return Err(Error::internal(format!(
                "the members' answers share no tensor that `{}` can combine ({})",
                self.combine.name(),
                gave.join("; ")
            )));
        }
        for (_, a) in &answers {
            for r in &a.routes {
                if !out.routes.contains(r) {
                    out.routes.push(r.clone());
                }
            }
            for r in &a.routing {
                if !out.routing.contains(r) {
                    out.routing.push(r.clone());
                }
            }
            out.notes.extend(a.notes.clone());
            out.model_time = out.model_time.max(a.model_time);
        }
        if !left_out.is_empty() {
            out.notes.insert("left_out".into(), Value::Object(left_out));
        }
        if mlrun {
            let combined = match out.tensors.as_slice() {
                [one] => servegraph_engine::protocol::mlrun::nested(one)?,
                many => Value::Object(
                    many.iter()
                        .map(|t| {
                            Ok((
                                t.name.clone(),
                                servegraph_engine::protocol::mlrun::nested(t)?,
                            ))
                        })
                        .collect::<Result<Map<String, Value>>>()?,
                ),
            };
            out.tensors.clear();
            out.body = Some(servegraph_engine::JsonBody {
                value: serde_json::json!({"id": out.id, "model_name": self.name, "outputs": combined}),
                answered: true,
                protocol: servegraph_engine::BodyProtocol::Mlrun,
            });
        }
        Ok(out)
    }

    fn infer(&self, input: &Signature) -> Result<Signature, String> {
        let sigs = infer_each(self.members.iter().map(|m| &m.route), input)?;
        let open = sigs.iter().any(|s| s.open);
        let shared = |keep: &dyn Fn(&TensorMeta) -> bool| -> Vec<TensorMeta> {
            sigs[0]
                .tensors
                .iter()
                .filter(|t| keep(t) && sigs[1..].iter().all(|s| s.get(&t.name) == Some(*t)))
                .cloned()
                .collect()
        };
        let floats = shared(&|t| t.datatype.is_float());
        let none_shared = |what: &str| {
            let gave: Vec<String> = sigs
                .iter()
                .zip(&self.members)
                .map(|(s, m)| format!("`{}` gives {}", m.route.key, s.describe()))
                .collect();
            Err(format!(
                "the members share no {what} for `combine: {}` ({})",
                self.combine.name(),
                gave.join("; ")
            ))
        };
        if !open {
            match self.combine {
                Combine::Mean | Combine::WeightedMean | Combine::Max if floats.is_empty() => {
                    return none_shared(
                        "floating-point output (same name, datatype and shape) to combine",
                    );
                }
                Combine::Concat if shared(&|_| true).is_empty() => {
                    return none_shared("output (same name, datatype and shape) to join");
                }
                _ => {}
            }
        }
        let tensors = match self.combine {
            // What the class answers is its own.
            Combine::Seldon => return Ok(Signature::open()),
            Combine::Mean | Combine::WeightedMean | Combine::Max => floats,
            // Any member may answer: only what they all give is certain.
            Combine::First => return Ok(crate::routes::intersect(sigs)),
            Combine::Concat => shared(&|_| true)
                .into_iter()
                .map(|mut t| {
                    if let Some(last) = t.shape.last_mut()
                        && *last >= 0
                    {
                        *last *= sigs.len() as i64;
                    }
                    t
                })
                .collect(),
            Combine::Vote => {
                for (sig, m) in sigs.iter().zip(&self.members) {
                    match sig.get(&self.vote_tensor) {
                        Some(t) if !(t.datatype.is_integer() || t.datatype.is_float()) => {
                            return Err(format!(
                                "member `{}` gives `{}` as {}; a vote needs classes or scores",
                                m.route.key, t.name, t.datatype
                            ));
                        }
                        Some(_) => {}
                        None if sig.open => {}
                        None => {
                            return Err(format!(
                                "member `{}` gives no `{}` to vote on; it gives: {}",
                                m.route.key,
                                self.vote_tensor,
                                sig.describe()
                            ));
                        }
                    }
                }
                let mut t = floats;
                t.retain(|x| x.name != self.vote_tensor);
                t.push(TensorMeta::new(
                    &self.vote_tensor,
                    DataType::Int64,
                    vec![-1],
                ));
                t
            }
        };
        Ok(Signature {
            tensors,
            open,
            implied: Vec::new(),
        })
    }

    fn inputs(&self) -> Option<Vec<TensorMeta>> {
        common_inputs(self.members.iter().map(|m| &m.route))
    }

    fn platform(&self) -> servegraph_engine::Platform {
        servegraph_engine::Platform::Ensemble
    }

    fn children(&self) -> Vec<(&str, &dyn Step)> {
        self.members
            .iter()
            .map(|m| (m.route.key.as_str(), m.route.step.as_ref()))
            .collect()
    }
}

type Answers<'a> = Vec<(&'a Member, Event)>;

impl Ensemble {
    /// Every member concurrently; soft failures are left out, hard ones fail the request.
    async fn run_all(&self, event: &Event) -> Result<(Answers<'_>, Map<String, Value>)> {
        let runs = self.members.iter().map(|m| {
            let ev = event.clone();
            async move { (m, m.run(ev).await) }
        });
        let mut answers = Vec::with_capacity(self.members.len());
        let mut left_out = Map::new();
        for (m, result) in join_all(runs).await {
            match result {
                Ok(ev) => answers.push((m, ev)),
                Err(e) if m.soft => {
                    tracing::debug!(member = %m.route.key, error = %e, "soft ensemble member left out");
                    left_out.insert(m.route.key.clone(), Value::String(e.message));
                }
                Err(e) => return Err(e),
            }
        }
        if answers.is_empty() {
            return Err(Error::unavailable(format!(
                "every member was left out: {}",
                Value::Object(left_out)
            )));
        }
        Ok((answers, left_out))
    }

    /// Members race; the first success wins and the rest are cancelled. Failures only matter
    /// when every member fails (then the first hard failure, or the last failure, is returned).
    async fn first_success(&self, event: &Event) -> Result<(Answers<'_>, Map<String, Value>)> {
        let mut racing: FuturesUnordered<_> = self
            .members
            .iter()
            .map(|m| {
                let ev = event.clone();
                async move { (m, m.run(ev).await) }
            })
            .collect();
        let mut left_out = Map::new();
        let mut last_error = None;
        while let Some((m, result)) = racing.next().await {
            match result {
                Ok(ev) => return Ok((vec![(m, ev)], left_out)),
                Err(e) => {
                    left_out.insert(m.route.key.clone(), Value::String(e.message.clone()));
                    if last_error.is_none() || !m.soft {
                        last_error = Some(e);
                    }
                }
            }
        }
        Err(last_error.unwrap_or_else(|| Error::internal("an ensemble without members")))
    }

    fn vote(&self, answers: &Answers<'_>) -> Result<Tensor> {
        let name = &self.vote_tensor;
        let mut votes: Vec<(f64, Vec<i64>)> = Vec::with_capacity(answers.len());
        for (m, a) in answers {
            let t = a.get(name).ok_or_else(|| {
                Error::internal(format!(
                    "member `{}` gave no `{name}` to vote on",
                    m.route.key
                ))
            })?;
            votes.push((m.weight, classes(t)?));
        }
        let rows = votes[0].1.len();
        if votes.iter().any(|(_, v)| v.len() != rows) {
            return Err(Error::internal(format!(
                "members disagree on the number of rows in `{name}`"
            )));
        }
        let winners = (0..rows)
            .map(|row| {
                // In first-vote order, so the first maximum is the earliest member's class.
                let mut tally: Vec<(i64, f64)> = Vec::new();
                for (w, v) in &votes {
                    match tally.iter_mut().find(|(c, _)| *c == v[row]) {
                        Some((_, n)) => *n += w,
                        None => tally.push((v[row], *w)),
                    }
                }
                let best = tally.iter().map(|(_, n)| *n).fold(f64::MIN, f64::max);
                tally
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
/// Whether a member answered as an MLRun model server does: a body with `outputs`, and no
/// tensors.
fn is_mlrun_answer(a: &Event) -> bool {
    a.tensors.is_empty()
        && a.body.as_ref().is_some_and(|b| {
            b.answered
                && b.protocol == servegraph_engine::BodyProtocol::Mlrun
                && b.value.get("outputs").is_some()
        })
}

/// An MLRun answer's `outputs` (nested lists of numbers) as a tensor named `name`: INT64
/// classes for a vote (which must be whole numbers), else FP64.
fn outputs_tensor(name: &str, outputs: &Value, classes: bool) -> Result<Tensor> {
    let mut depth = 0;
    let mut level = outputs;
    while let Value::Array(items) = level {
        depth += 1;
        match items.first() {
            Some(first) => level = first,
            None => break,
        }
    }
    if depth == 0 {
        return Err(Error::internal(format!(
            "its `outputs` ({outputs}) is not a list of numbers an ensemble can combine"
        )));
    }
    let datatype = if classes {
        DataType::Int64
    } else {
        DataType::Fp64
    };
    let meta = TensorMeta::new(name, datatype, vec![-1; depth]);
    let body = serde_json::json!({ "inputs": outputs });
    let mut tensors = servegraph_engine::protocol::mlrun::body_tensors(&body, name, &[meta])
        .map_err(|e| {
            Error::internal(format!(
                "its `outputs` cannot be combined as {}: {}",
                if classes {
                    "classes (whole numbers)"
                } else {
                    "numbers"
                },
                e.message
            ))
        })?;
    Ok(tensors.remove(0))
}

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

#[derive(Clone, Copy, PartialEq)]
enum Reduce {
    Mean,
    WeightedMean,
    Max,
}

/// Reduces each float tensor every answer has with the same dtype and shape.
fn reduce_shared_floats(answers: &Answers<'_>, how: Reduce) -> Result<Vec<Tensor>> {
    let mut out = Vec::new();
    for t in &answers[0].1.tensors {
        if !t.datatype().is_float() {
            continue;
        }
        let all: Option<Vec<(f64, &Tensor)>> = answers
            .iter()
            .map(|(m, a)| a.get(&t.name).map(|x| (m.weight, x)))
            .collect();
        let Some(all) = all else { continue };
        if all
            .iter()
            .any(|(_, o)| o.shape != t.shape || o.datatype() != t.datatype())
        {
            continue;
        }
        let start = if how == Reduce::Max {
            f64::NEG_INFINITY
        } else {
            0.0
        };
        let mut acc = vec![start; t.data.len()];
        let mut total = 0.0;
        for (w, o) in &all {
            let w = if how == Reduce::WeightedMean { *w } else { 1.0 };
            total += w;
            for (a, v) in acc.iter_mut().zip(o.data.to_f64_vec().expect("float")) {
                *a = if how == Reduce::Max {
                    a.max(v)
                } else {
                    *a + w * v
                };
            }
        }
        if how != Reduce::Max {
            acc.iter_mut().for_each(|a| *a /= total);
        }
        out.push(Tensor::new(
            t.name.clone(),
            t.shape.clone(),
            float_like(t.datatype(), acc),
        )?);
    }
    Ok(out)
}

pub(crate) fn float_like(datatype: DataType, values: Vec<f64>) -> TensorData {
    match datatype {
        DataType::Fp64 => TensorData::Fp64(values),
        DataType::Fp16 => TensorData::Fp16(values.into_iter().map(half::f16::from_f64).collect()),
        _ => TensorData::Fp32(values.into_iter().map(|v| v as f32).collect()),
    }
}

/// Joins each tensor every answer has (same dtype, same leading dimensions) along its last
/// axis, in member order.
fn concat_shared(answers: &Answers<'_>) -> Result<Vec<Tensor>> {
    let mut out = Vec::new();
    for t in &answers[0].1.tensors {
        let all: Option<Vec<&Tensor>> = answers.iter().map(|(_, a)| a.get(&t.name)).collect();
        let Some(all) = all else { continue };
        let lead = &t.shape[..t.shape.len().saturating_sub(1)];
        if t.shape.is_empty()
            || all.iter().any(|o| {
                o.datatype() != t.datatype()
                    || o.shape.len() != t.shape.len()
                    || &o.shape[..lead.len()] != lead
            })
        {
            continue;
        }
        let rows: usize = lead.iter().product();
        let widths: Vec<usize> = all
            .iter()
            .map(|o| *o.shape.last().expect("rank ≥ 1"))
            .collect();
        // Interleave row by row: member 0's row, member 1's row, ...
        let mut pieces: Vec<Vec<TensorData>> = Vec::with_capacity(all.len());
        for (o, w) in all.iter().zip(&widths) {
            pieces.push(o.data.clone().split(&vec![*w; rows]));
        }
        let mut ordered = Vec::with_capacity(rows * all.len());
        for r in 0..rows {
            for p in pieces.iter_mut() {
                ordered.push(std::mem::replace(&mut p[r], TensorData::Bool(Vec::new())));
            }
        }
        let mut shape = t.shape.clone();
        *shape.last_mut().expect("rank ≥ 1") = widths.iter().sum();
        out.push(Tensor::new(
            t.name.clone(),
            shape,
            TensorData::concat(ordered)?,
        )?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use servegraph_engine::{BuildMode, ErrorKind, Graph, Registry};

    use super::*;

    /// Members that "predict" fixed tensors (by name), sleep (`slow`) or fail (`broken`).
    struct Fixed(Vec<Tensor>);
    struct Slow;
    struct Broken;

    #[async_trait]
    impl Step for Fixed {
        async fn process(&self, mut event: Event) -> Result<Event> {
            event.tensors = self.0.clone();
            Ok(event)
        }
    }
    #[async_trait]
    impl Step for Slow {
        async fn process(&self, _event: Event) -> Result<Event> {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Err(Error::internal("unreachable"))
        }
    }
    #[async_trait]
    impl Step for Broken {
        async fn process(&self, _event: Event) -> Result<Event> {
            Err(Error::internal("broken on purpose"))
        }
    }

    fn registry() -> Registry {
        let mut r = Registry::new();
        r.register("ensemble", build);
        r.register("slow", |_: &StepNode, _: &mut BuildContext| {
            Some(Box::new(Slow) as Box<dyn Step>)
        });
        r.register("broken", |_: &StepNode, _: &mut BuildContext| {
            Some(Box::new(Broken) as Box<dyn Step>)
        });
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

    fn graph(fields: &str, members: &str) -> std::result::Result<Graph, Vec<Diagnostic>> {
        let yaml = format!(
            "name: e\ngraph: {{kind: flow, steps: {{ens: {{kind: ensemble, {fields}, routes: {members}}}}}}}\n"
        );
        Graph::from_yaml(&yaml, Path::new("."), &registry(), BuildMode::Load)
    }

    async fn run(fields: &str, members: &str) -> Result<Event> {
        graph(fields, members)
            .unwrap()
            .run(Event::new("x", vec![]))
            .await
    }

    fn floats(e: &Event, name: &str) -> Vec<f32> {
        match &e.get(name).unwrap().data {
            TensorData::Fp32(v) => v.clone(),
            other => panic!("{other:?}"),
        }
    }

    fn close(a: &[f32], b: &[f32]) {
        assert!(
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6),
            "{a:?} vs {b:?}"
        );
    }

    const ABC: &str = "{a: {kind: fixed}, b: {kind: fixed}, c: {kind: fixed}}";

    #[tokio::test]
    async fn vote_majority_with_first_member_tiebreak() {
        let out = run("combine: vote", ABC).await.unwrap();
        // Row 0: a=0 b=1 c=2 → three-way tie → a's 0. Row 1: all 1. Row 2: b,c=0 beat a=2.
        assert_eq!(
            out.get("label").unwrap().data,
            TensorData::Int64(vec![0, 1, 0])
        );
        close(&floats(&out, "p"), &[0.2, 0.8]);
        let out = run("combine: vote", "{b: {kind: fixed}, a: {kind: fixed}}")
            .await
            .unwrap();
        assert_eq!(
            out.get("label").unwrap().data,
            TensorData::Int64(vec![1, 1, 0])
        );
    }

    #[tokio::test]
    async fn weighted_vote_lets_a_heavy_member_win() {
        let out = run("combine: vote, weights: {a: 3}", ABC).await.unwrap();
        assert_eq!(
            out.get("label").unwrap().data,
            TensorData::Int64(vec![0, 1, 2])
        );
    }

    #[tokio::test]
    async fn means_and_max() {
        let out = run("combine: mean", "{a: {kind: fixed}, b: {kind: fixed}}")
            .await
            .unwrap();
        assert!(out.get("label").is_none());
        close(&floats(&out, "p"), &[0.3, 0.7]);
        let out = run(
            "combine: weighted_mean, weights: {a: 3, b: 1}",
            "{a: {kind: fixed}, b: {kind: fixed}}",
        )
        .await
        .unwrap();
        close(&floats(&out, "p"), &[0.25, 0.75]);
        let out = run("combine: max", ABC).await.unwrap();
        close(&floats(&out, "p"), &[0.4, 1.0]);
    }

    #[tokio::test]
    async fn concat_joins_along_the_last_axis() {
        let out = run("combine: concat", "{a: {kind: fixed}, b: {kind: fixed}}")
            .await
            .unwrap();
        let p = out.get("p").unwrap();
        assert_eq!(p.shape, vec![1, 4]);
        close(&floats(&out, "p"), &[0.2, 0.8, 0.4, 0.6]);
        let label = out.get("label").unwrap();
        assert_eq!(label.shape, vec![6]);
        assert_eq!(label.data, TensorData::Int64(vec![0, 1, 2, 1, 1, 0]));
    }

    #[tokio::test]
    async fn first_success_wins_over_slow_and_broken_members() {
        let out = run(
            "combine: first",
            "{s: {kind: slow}, x: {kind: broken}, b: {kind: fixed}}",
        )
        .await
        .unwrap();
        assert_eq!(
            out.get("label").unwrap().data,
            TensorData::Int64(vec![1, 1, 0])
        );
        assert_eq!(out.notes["left_out"]["x"], "broken on purpose");
        let err = run("combine: first", "{x: {kind: broken}}")
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "step `x`: broken on purpose");
    }

    #[tokio::test(start_paused = true)]
    async fn soft_members_that_fail_or_time_out_are_left_out() {
        let out = run(
            "combine: mean",
            "{a: {kind: fixed}, s: {kind: slow, dependency: soft, timeout_ms: 50}, x: {kind: broken, dependency: soft}}",
        )
        .await
        .unwrap();
        close(&floats(&out, "p"), &[0.2, 0.8]);
        assert_eq!(
            out.notes["left_out"]["s"],
            "took longer than its timeout_ms of 50"
        );
        assert_eq!(out.notes["left_out"]["x"], "broken on purpose");

        let err = run(
            "combine: mean",
            "{a: {kind: fixed}, s: {kind: slow, timeout_ms: 50}}",
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Timeout);
        assert_eq!(
            err.to_string(),
            "step `s`: took longer than its timeout_ms of 50"
        );

        let err = run("combine: mean", "{x: {kind: broken, dependency: soft}}")
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unavailable);
        assert!(err.message.contains("every member was left out"), "{err}");
    }

    #[test]
    fn bad_ensembles_are_reported() {
        let cases = [
            (
                "combine: avg",
                "{a: {kind: fixed}}",
                "`combine` must be one of `mean`, `weighted_mean`, `vote`, `max`, `concat`, `first` or `seldon`, found `avg`",
            ),
            (
                "combine: mean, weights: {a: 2}",
                "{a: {kind: fixed}}",
                "`weights` only applies to",
            ),
            (
                "combine: vote, weights: {z: 2}",
                "{a: {kind: fixed}}",
                "`weights` names `z`, which is not a member",
            ),
            (
                "combine: vote, weights: {a: 0}",
                "{a: {kind: fixed}}",
                "weight of `a` must be > 0",
            ),
            (
                "combine: mean",
                "{a: {kind: fixed, dependency: maybe}}",
                "`dependency` must be one of `hard` or `soft`, found `maybe`",
            ),
            (
                "combine: mean",
                "{a: {kind: fixed, after: b}}",
                "`after` is only allowed on steps of a flow",
            ),
        ];
        for (fields, members, want) in cases {
            let d = graph(fields, members)
                .err()
                .unwrap_or_else(|| panic!("{fields} {members} is valid"));
            let text: Vec<String> = d.iter().map(|d| d.one_line("g")).collect();
            assert!(
                text.iter().any(|t| t.contains(want)),
                "{want:?} not in {text:?}"
            );
        }
    }
}
