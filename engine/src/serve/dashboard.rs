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
    let steps = layout
        .steps
        .iter()
        .map(|s| {
            let mut node = node(s.name, s.name, s.step, None, &mut timers);
            node.after = s.preds.iter().map(|&p| names[p].to_owned()).collect();
            node.on_error = s.on_error.map(str::to_owned);
            node
        })
        .collect();
    let handlers = layout
        .handlers
        .iter()
        .map(|(name, step)| node(name, name, *step, None, &mut timers))
        .collect();
    for (id, timer) in &mut timers {
        if !id.contains('/') {
            // Top-level steps and handlers: the graph's own timer of each.
            if let Some(t) = crate::metrics::step_timer(&graph.name, id) {
                *timer = Some(StepTimer {
                    of: "step",
                    timer: t.snapshot(),
                });
            }
        }
    }
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
        timers: timers
            .into_iter()
            .filter_map(|(id, t)| Some((id, t?)))
            .collect(),
        routers: graph
            .learners()
            .into_iter()
            .map(|(n, _)| n.to_owned())
            .collect(),
    }
}

/// A step and its children; each one's timer (a route's, else a model's runs) into `timers`.
fn node(
    id: &str,
    name: &str,
    step: &dyn Step,
    parent: Option<(&str, &dyn Step)>,
    timers: &mut BTreeMap<String, Option<StepTimer>>,
) -> Node {
    let route = parent
        .filter(|(_, p)| p.platform() == Platform::Router)
        .and_then(|(p, _)| crate::metrics::route_timer(p, name))
        .map(|t| StepTimer {
            of: "route",
            timer: t.snapshot(),
        });
    let timer = route.or_else(|| {
        crate::metrics::model_metrics(name).map(|m| StepTimer {
            of: "model",
            timer: m.run_seconds.snapshot(),
        })
    });
    timers.insert(id.to_owned(), timer);
    let children = step
        .children()
        .into_iter()
        .map(|(child, s)| {
            node(
                &format!("{id}/{child}"),
                child,
                s,
                Some((name, step)),
                timers,
            )
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
