use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Barrier;

use super::*;
use crate::error::ErrorKind;
use std::path::Path;

use crate::step::{BuildContext, BuildMode, Registry, StepNode};
use crate::tensor::{Tensor, TensorData};

/// Test steps: `tag` adds a tensor named after the step; `sleep` sleeps for `ms`;
/// `meet` waits until two `meet` steps are running at once; `fail` fails.
struct Tag(String);
struct Sleep(u64);
struct Meet(Arc<Barrier>);
struct Fail;

#[async_trait]
impl Step for Tag {
    async fn process(&self, mut e: Event) -> Result<Event> {
        let n = e.tensors.len() as i64;
        e.put(Tensor::new(&self.0, vec![1], TensorData::Int64(vec![n]))?);
        Ok(e)
    }
}
#[async_trait]
impl Step for Sleep {
    async fn process(&self, e: Event) -> Result<Event> {
        tokio::time::sleep(Duration::from_millis(self.0)).await;
        Ok(e)
    }
}
#[async_trait]
impl Step for Meet {
    async fn process(&self, e: Event) -> Result<Event> {
        self.0.wait().await;
        Ok(e)
    }
}
#[async_trait]
impl Step for Fail {
    async fn process(&self, _e: Event) -> Result<Event> {
        Err(Error::unprocessable("no"))
    }
}

fn registry() -> Registry {
    let barrier = Arc::new(Barrier::new(2));
    let mut r = Registry::new();
    r.register("tag", |n: &StepNode, _: &mut BuildContext| {
        Some(Box::new(Tag(n.name.clone())) as Box<dyn Step>)
    });
    r.register("sleep", |n: &StepNode, _: &mut BuildContext| {
        let ms = n
            .body
            .get_scalar("ms")
            .and_then(|s| s.as_str().parse().ok())
            .unwrap_or(0);
        Some(Box::new(Sleep(ms)) as Box<dyn Step>)
    });
    r.register("meet", move |_: &StepNode, _: &mut BuildContext| {
        Some(Box::new(Meet(Arc::clone(&barrier))) as Box<dyn Step>)
    });
    r.register("fail", |_: &StepNode, _: &mut BuildContext| {
        Some(Box::new(Fail) as Box<dyn Step>)
    });
    r
}

fn graph(steps: &str) -> Graph {
    let yaml = format!("name: g\ntimeout_ms: 2000\ngraph:\n  kind: flow\n  steps:\n{steps}");
    Graph::from_yaml(&yaml, Path::new("."), &registry(), BuildMode::Load)
        .unwrap_or_else(|d| panic!("{d:#?}"))
}

#[tokio::test]
async fn chain_runs_in_order() {
    let g =
        graph("    a: {kind: tag}\n    b: {kind: tag, after: a}\n    c: {kind: tag, after: b}\n");
    assert!(g.chain);
    let out = g.run(Event::new("x", vec![])).await.unwrap();
    let names: Vec<&str> = out.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(out.get("c").unwrap().data, TensorData::Int64(vec![2]));
}

#[tokio::test]
async fn branches_run_concurrently_and_join() {
    // `left` and `right` only finish if both run at the same time.
    let g = graph(
        "    start: {kind: tag}\n    left: {kind: meet, after: start}\n    right: {kind: meet, after: start}\n    l: {kind: tag, after: left}\n    r: {kind: tag, after: right}\n    join: {kind: tag, after: [l, r]}\n",
    );
    assert!(!g.chain);
    let out = g.run(Event::new("x", vec![])).await.unwrap();
    let names: Vec<&str> = out.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["start", "l", "r", "join"]);
}

#[tokio::test]
async fn step_timeout_names_the_step() {
    let g =
        graph("    a: {kind: tag}\n    slow: {kind: sleep, ms: 5000, after: a, timeout_ms: 20}\n");
    let err = g.run(Event::new("x", vec![])).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout);
    assert_eq!(
        err.to_string(),
        "step `slow`: took longer than its timeout_ms of 20"
    );
}

#[tokio::test]
async fn graph_deadline_applies_to_the_whole_request() {
    let yaml =
        "name: g\ntimeout_ms: 30\ngraph: {kind: flow, steps: {s: {kind: sleep, ms: 5000}}}\n";
    let g = Graph::from_yaml(yaml, Path::new("."), &registry(), BuildMode::Load).unwrap();
    let err = g.run(Event::new("x", vec![])).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout);
    assert!(err.message.contains("graph's timeout_ms of 30"), "{err}");
}

#[tokio::test]
async fn first_failure_fails_the_request_and_cancels_the_rest() {
    let g = graph(
        "    a: {kind: tag}\n    bad: {kind: fail, after: a}\n    slow: {kind: sleep, ms: 5000, after: a}\n    j: {kind: tag, after: [bad, slow]}\n",
    );
    let t0 = std::time::Instant::now();
    let err = g.run(Event::new("x", vec![])).await.unwrap_err();
    assert_eq!(err.to_string(), "step `bad`: no");
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "the slow branch was awaited"
    );
}

#[tokio::test]
async fn explicit_responder_answers() {
    let g = graph("    a: {kind: tag, responder: true}\n    side: {kind: tag, after: a}\n");
    let out = g.run(Event::new("x", vec![])).await.unwrap();
    assert!(out.get("side").is_none());
    assert!(out.get("a").is_some());
}

#[test]
fn every_problem_is_reported_at_once() {
    let yaml = "name: bad name\nmax_in_flight: 0\ngraph:\n  kind: flow\n  steps:\n    a: {kind: nope}\n    b: {kind: tag, after: zz, timeout_ms: 0}\n    c: {kind: tag, responder: true}\n    d: {kind: tag, responder: true}\n";
    let d = Graph::from_yaml(yaml, Path::new("."), &registry(), BuildMode::Load)
        .err()
        .unwrap();
    let text: Vec<String> = d.iter().map(|d| d.one_line("g")).collect();
    let want = [
        "g:1:7: invalid name `bad name`",
        "g:2:16: `max_in_flight` must be at least 1",
        "g:6:15: step `a`: unknown kind `nope` (expected one of `fail`, `meet`, `sleep` or `tag`)",
        "g:7:43: step `b`: `timeout_ms` must be an integer ≥ 1, found the number 0",
        "g:7:27: step `b`: `after: zz` names no step of this flow (steps are `a`, `b`, `c` and `d`)",
        "g:9:5: more than one responder: `c` and `d`",
    ];
    for w in want {
        assert!(
            text.iter().any(|t| t.starts_with(w)),
            "missing {w:?} in {text:#?}"
        );
    }
}

/// Loads steps defer are waited for all at once, once every step is declared; a failed one
/// is reported at its step.
#[test]
fn deferred_loads_run_together_and_report_at_their_step() {
    fn slow(node: &StepNode, ctx: &mut BuildContext) -> Option<Box<dyn Step>> {
        let fails = node.name.starts_with("bad");
        let name = node.name.clone();
        ctx.defer_load(&node.name, &node.span, move || {
            let _load = crate::loading::begin(&name);
            std::thread::sleep(Duration::from_millis(400));
            if fails {
                Err("the model did not load".to_owned())
            } else {
                Ok(())
            }
        });
        Some(Box::new(Tag(node.name.clone())))
    }
    let mut registry = Registry::new();
    registry.register("slow", slow);
    let yaml = "name: g\ngraph:\n  kind: flow\n  steps:\n    a: {kind: slow}\n    b: {kind: slow, after: a}\n    c: {kind: slow, after: b}\n";
    let started = std::time::Instant::now();
    Graph::from_yaml(yaml, Path::new("."), &registry, BuildMode::Load).unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1100),
        "one after the other: {took:?}"
    );
    let yaml = "name: g\ngraph:\n  kind: flow\n  steps:\n    a: {kind: slow}\n    bad: {kind: slow, after: a}\n";
    let errors = Graph::from_yaml(yaml, Path::new("."), &registry, BuildMode::Load)
        .err()
        .unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let line = errors[0].one_line("g.yaml");
    assert!(
        line.contains("step `bad`: the model did not load"),
        "{line}"
    );
    assert!(line.starts_with("g.yaml:6:"), "{line}");
}
