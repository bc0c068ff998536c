//! What the dashboard's page polls (`GET /dashboard/data`): the graph's shape (steps, kinds,
//! edges, routes and members, as `servegraph plot` draws it), and each step's timer as it is
//! now: how many times it ran, for how long in all, and how many runs fell in each bucket.
//! The page keeps the history (rates and quantiles are differences between two polls), so
//! this answer is small and its size is the graph's, whatever the traffic.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::graph::Graph;
use crate::metrics::TimerSnapshot;
use crate::step::{Platform, Step};

/// The sources whose request totals the data carries, when they serve the graph.
pub const SOURCES: [&str; 3] = ["http", "grpc", "kafka"];

/// The dashboard's data at one moment.
#[derive(Debug, Serialize)]
pub struct Data {
    /// The server's clock, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub graph: Shape,
    /// The upper bounds, in seconds, of the timers' finite buckets (one more bucket: +Inf).
    pub bounds_s: Vec<f64>,
    /// Per source that serves the graph: its requests' times and status codes.
    pub requests: Vec<SourceTotals>,
    /// Per step (by [`Node::id`]), its timer, when it has one.
    pub timers: BTreeMap<String, StepTimer>,
    /// The steps that learn from feedback (routers): `GET /v2/models/{router}/experiment`.
    pub routers: Vec<String>,
}

/// A graph's shape: its steps in order, its error handlers, and the step that answers.
#[derive(Debug, Serialize, PartialEq)]
pub struct Shape {
    pub name: String,
    pub steps: Vec<Node>,
    pub handlers: Vec<Node>,
    /// The [`Node::id`] of the step whose output is the answer.
    pub responder: String,
}

/// One step, with its routes or members.
#[derive(Debug, Serialize, PartialEq)]
pub struct Node {
    /// Its path: a top-level step's name, `parent/child` for a route or member.
    pub id: String,
    pub name: String,
    /// Its kind in words (`onnx model`, `router`, `transform`, …).
    pub kind: &'static str,
    /// Its settings in a few words (a transform's op, a router's policy).
    pub summary: Option<String>,
    /// The ids of the steps it comes after (top-level steps only).
    pub after: Vec<String>,
    /// The id of its error handler.
    pub on_error: Option<String>,
    pub children: Vec<Node>,
}

/// A step's timer and what it times.
#[derive(Debug, Serialize)]
pub struct StepTimer {
    /// `step` (a top-level step or handler), `route` (a router's route, its time inside the
    /// router) or `model` (a model's runs: one run may answer a batch of requests).
    pub of: &'static str,
    #[serde(flatten)]
    pub timer: TimerSnapshot,
}

/// A source's requests for the graph.
#[derive(Debug, Serialize)]
pub struct SourceTotals {
    pub source: &'static str,
    #[serde(flatten)]
    pub timer: TimerSnapshot,
    /// Requests answered, by status code.
    pub codes: BTreeMap<u16, u64>,
}

/// The dashboard's data for `graph`, now.
pub fn data(graph: &Graph) -> Data {
    let layout = graph.layout();
    let names: Vec<&str> = layout.steps.iter().map(|s| s.name).collect();
    let mut timers = BTreeMap::new();
    let top = Parent::Graph(&graph.name);
    let steps = layout
        .steps
        .iter()
        .map(|s| {
            let mut node = node(s.name, s.name, s.step, top, &mut timers);
            node.after = s.preds.iter().map(|&p| names[p].to_owned()).collect();
            node.on_error = s.on_error.map(str::to_owned);
            node
        })
        .collect();
    let handlers = layout
        .handlers
        .iter()
        .map(|(name, step)| node(name, name, *step, top, &mut timers))
        .collect();
    let requests = SOURCES
        .iter()
        .filter_map(|&source| {
            let (timer, codes) = crate::metrics::request_totals(&graph.name, source)?;
            Some(SourceTotals {
                source,
                timer: timer.snapshot(),
                codes: codes.into_iter().collect(),
            })
        })
        .collect();
    Data {
        time_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        graph: Shape {
            name: graph.name.clone(),
            steps,
            handlers,
            responder: names[layout.responder].to_owned(),
        },
        bounds_s: crate::metrics::timer_bounds(),
        requests,
        timers,
        routers: graph
            .learners()
            .into_iter()
            .map(|(n, _)| n.to_owned())
            .collect(),
    }
}

/// Where a step is: at the top of the graph (a step or handler), or inside another step (a
/// route, a member).
#[derive(Clone, Copy)]
enum Parent<'a> {
    Graph(&'a str),
    Step(&'a str, &'a dyn Step),
}

/// A step's timer: the graph's of a top-level step; a router's of a route; else its model's
/// runs, when it runs a model.
fn timer(name: &str, parent: Parent) -> Option<StepTimer> {
    let (of, timer) = match parent {
        Parent::Graph(graph) => ("step", crate::metrics::step_timer(graph, name)),
        Parent::Step(router, step) if step.platform() == Platform::Router => {
            ("route", crate::metrics::route_timer(router, name))
        }
        Parent::Step(..) => ("model", None),
    };
    let (of, timer) = match timer {
        Some(t) => (of, t),
        None => ("model", crate::metrics::model_metrics(name)?.run_seconds),
    };
    Some(StepTimer {
        of,
        timer: timer.snapshot(),
    })
}

/// A step and its children; each one's timer, when it has one, into `timers`.
fn node(
    id: &str,
    name: &str,
    step: &dyn Step,
    parent: Parent,
    timers: &mut BTreeMap<String, StepTimer>,
) -> Node {
    if let Some(t) = timer(name, parent) {
        timers.insert(id.to_owned(), t);
    }
    let children = step
        .children()
        .into_iter()
        .map(|(child, s)| {
            let path = format!("{id}/{child}");
            node(&path, child, s, Parent::Step(name, step), timers)
        })
        .collect();
    Node {
        id: id.to_owned(),
        name: name.to_owned(),
        kind: step.platform().label(),
        summary: step.summary(),
        after: Vec::new(),
        on_error: None,
        children,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::event::Event;
    use crate::step::{BuildContext, BuildMode, Registry, StepNode};

    /// Passes its event on; `fail` fails.
    struct Pass(bool);

    #[async_trait::async_trait]
    impl Step for Pass {
        async fn process(&self, e: Event) -> crate::Result<Event> {
            match self.0 {
                false => Ok(e),
                true => Err(crate::Error::internal("no")),
            }
        }
    }

    /// A step with members, as an ensemble has: `dash-member` (a model whose runs are timed)
    /// and `dash-untimed` (no model).
    struct Group(Pass, Pass);

    #[async_trait::async_trait]
    impl Step for Group {
        async fn process(&self, e: Event) -> crate::Result<Event> {
            Ok(e)
        }
        fn children(&self) -> Vec<(&str, &dyn Step)> {
            vec![("dash-member", &self.0), ("dash-untimed", &self.1)]
        }
    }

    fn graph(name: &str) -> Graph {
        let mut r = Registry::new();
        r.register("pass", |_: &StepNode, _: &mut BuildContext| {
            Some(Box::new(Pass(false)) as Box<dyn Step>)
        });
        r.register("fail", |_: &StepNode, _: &mut BuildContext| {
            Some(Box::new(Pass(true)) as Box<dyn Step>)
        });
        let yaml = format!(
            "name: {name}\ngraph:\n  kind: flow\n  steps:\n    a: {{kind: pass}}\n    b: {{kind: pass, after: a}}\n    c: {{kind: fail, after: a, on_error: fix}}\n    d: {{kind: pass, after: [b, c], responder: true}}\n    fix: {{kind: pass}}\n"
        );
        Graph::from_yaml(&yaml, Path::new("."), &r, BuildMode::Load)
            .unwrap_or_else(|d| panic!("{d:#?}"))
    }

    #[test]
    fn the_shape_is_the_graphs() {
        let d = data(&graph("dash-shape"));
        let g = &d.graph;
        assert_eq!(g.name, "dash-shape");
        let mut steps: Vec<(&str, Vec<&str>, Option<&str>)> = g
            .steps
            .iter()
            .map(|n| {
                let after = n.after.iter().map(String::as_str).collect();
                (n.id.as_str(), after, n.on_error.as_deref())
            })
            .collect();
        steps.sort();
        assert_eq!(
            steps,
            [
                ("a", vec![], None),
                ("b", vec!["a"], None),
                ("c", vec!["a"], Some("fix")),
                ("d", vec!["b", "c"], None),
            ]
        );
        assert_eq!(g.handlers.len(), 1);
        assert_eq!(g.handlers[0].id, "fix");
        assert_eq!(g.responder, "d");
        assert!(d.routers.is_empty());
        assert_eq!(d.bounds_s.len() + 1, d.timers["a"].timer.buckets.len());
    }

    #[test]
    fn members_are_timed_by_their_models_runs() {
        let runs = crate::metrics::ModelMetrics::new("dash-member");
        runs.run_seconds
            .observe(std::time::Duration::from_micros(100));
        let mut r = Registry::new();
        r.register("group", |_: &StepNode, _: &mut BuildContext| {
            Some(Box::new(Group(Pass(false), Pass(false))) as Box<dyn Step>)
        });
        let yaml = "name: dash-members\ngraph:\n  kind: flow\n  steps:\n    g: {kind: group}\n";
        let g = Graph::from_yaml(yaml, Path::new("."), &r, BuildMode::Load).unwrap();
        let d = data(&g);
        let ids: Vec<&str> = d.graph.steps[0]
            .children
            .iter()
            .map(|c| c.id.as_str())
            .collect();
        assert_eq!(ids, ["g/dash-member", "g/dash-untimed"]);
        assert_eq!(d.timers["g"].of, "step");
        let member = &d.timers["g/dash-member"];
        assert_eq!((member.of, member.timer.count), ("model", 1));
        assert!(!d.timers.contains_key("g/dash-untimed"));
    }

    #[tokio::test]
    async fn timers_count_each_steps_runs() {
        let g = graph("dash-timers");
        let count = |d: &Data, id: &str| d.timers[id].timer.count;
        let before = data(&g);
        for id in ["a", "b", "c", "d", "fix"] {
            assert_eq!(before.timers[id].of, "step");
            assert_eq!(count(&before, id), 0, "{id}");
        }
        for _ in 0..3 {
            g.run(Event::new("x", vec![])).await.unwrap();
        }
        let after = data(&g);
        // `c` fails every time and its handler answers for it.
        for id in ["a", "b", "c", "d", "fix"] {
            let t = &after.timers[id].timer;
            assert_eq!(t.count, 3, "{id}");
            assert_eq!(t.buckets.iter().sum::<u64>(), 3, "{id}");
            assert!(t.sum_s >= 0.0);
        }
        assert!(after.time_ms >= before.time_ms);
    }
}
