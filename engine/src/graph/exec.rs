//! Running a compiled graph: a chain as a loop, any other DAG on a `FuturesUnordered`;
//! error handlers, step timeouts and the graph's deadline.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use crate::error::{Error, Result};
use crate::event::Event;
use crate::step::Step;

use super::*;

/// One node of the compiled plan.
pub(super) struct GraphNode {
    pub(super) name: String,
    pub(super) step: Box<dyn Step>,
    pub(super) preds: Vec<usize>,
    pub(super) succs: Vec<usize>,
    pub(super) timeout: Option<Duration>,
    /// The error handler (an index into `Graph::handlers`) that answers when this step fails.
    pub(super) on_error: Option<usize>,
    /// `servegraph_step_duration_seconds` for this step.
    pub(super) seconds: crate::metrics::Timer,
    /// The step's successes and failures (the statistics extension).
    pub(super) outcomes: std::sync::Arc<crate::stats::Outcomes>,
}

impl GraphNode {
    pub(super) fn new(
        graph: &str,
        name: String,
        step: Box<dyn Step>,
        timeout: Option<Duration>,
    ) -> Self {
        GraphNode {
            seconds: crate::metrics::step_histogram(graph, &name),
            outcomes: crate::stats::outcomes(&name),
            name,
            step,
            preds: Vec::new(),
            succs: Vec::new(),
            timeout,
            on_error: None,
        }
    }

    /// Runs the step, recording its time (and, for tracked requests, in the event).
    async fn run(&self, event: Event) -> Result<Event> {
        if event.trace.is_some() {
            return Box::pin(self.run_traced(event)).await;
        }
        self.run_measured(event).await
    }

    /// [`GraphNode::run`] inside a span of its own (traced requests only).
    async fn run_traced(&self, mut event: Event) -> Result<Event> {
        let request = event.trace.take().expect("traced");
        let span = crate::telemetry::StepSpan::start(&request, &self.name);
        let result = self.run_measured(event).await;
        match result {
            Ok(mut event) => {
                event.trace = Some(request);
                Ok(event)
            }
            Err(e) => {
                if let Some(s) = &span {
                    s.fail(&e.to_string());
                }
                Err(e)
            }
        }
    }

    async fn run_measured(&self, event: Event) -> Result<Event> {
        // Reads the TSC where that is reliable: cheaper than the system clock (see
        // docs/benchmarks.md, engine overhead with metrics).
        let start = quanta::Instant::now();
        let rows = crate::stats::rows(&event);
        let result = match self.timeout {
            None => self.step.process(event).await,
            // Boxed: a timer is large, and most steps have none; the common path's future
            // stays small (futures are moved, and per-step cost is mostly those moves).
            Some(limit) => Box::pin(self.run_with_timeout(limit, event)).await,
        };
        let took = start.elapsed();
        self.seconds.observe(took);
        self.outcomes.record(result.is_ok(), took, rows);
        let mut event = result.map_err(|e| e.in_step(&self.name))?;
        if let Some(times) = &mut event.step_microsec {
            times.push((self.name.clone(), took.as_micros() as u64));
        }
        Ok(event)
    }

    async fn run_with_timeout(&self, limit: Duration, event: Event) -> Result<Event> {
        match tokio::time::timeout(limit, self.step.process(event)).await {
            Ok(result) => result,
            Err(_) => Err(Error::timeout(format!(
                "took longer than its timeout_ms of {}",
                limit.as_millis()
            ))),
        }
    }
}

impl Graph {
    /// Runs one event through the graph within the graph's deadline.
    pub async fn run(&self, event: Event) -> Result<Event> {
        match tokio::time::timeout(self.deadline, self.run_steps(event)).await {
            Ok(result) => result,
            Err(_) => Err(Error::timeout(format!(
                "the request took longer than the graph's timeout_ms of {}",
                self.deadline.as_millis()
            ))),
        }
    }

    pub(super) async fn run_steps(&self, event: Event) -> Result<Event> {
        if self.chain {
            // A flow resumed from a queue starts after the queue step.
            let first = match &event.resume_after {
                None => 0,
                Some(step) => {
                    1 + self
                        .nodes
                        .iter()
                        .position(|n| &n.name == step)
                        .ok_or_else(|| {
                            Error::bad_request(format!(
                                "cannot resume after `{step}`: the graph has no such step"
                            ))
                        })?
                }
            };
            let mut event = event;
            event.resume_after = None;
            for node in &self.nodes[first..] {
                event = self.run_node(node, event).await?;
                if event.stopped {
                    break;
                }
            }
            return Ok(event);
        }
        if let Some(step) = &event.resume_after {
            return Err(Error::bad_request(format!(
                "cannot resume after `{step}`: only flows that are a straight chain can be resumed"
            )));
        }
        self.run_dag(event).await
    }

    /// Runs one step; if it fails and has an error handler, the handler gets the step's input
    /// with the error in `notes.error`, and its answer stands in for the step's. Only failures
    /// of the graph (a model error, a timeout, a remote down, overload) are handled: the
    /// caller's own mistakes (a malformed request, a wrong shape or datatype: 4xx) get their
    /// error, never the fallback's answer.
    pub(super) async fn run_node(&self, node: &GraphNode, event: Event) -> Result<Event> {
        match node.on_error {
            None => node.run(event).await,
            // Boxed: the common path's future stays as small as before handlers existed.
            Some(h) => Box::pin(self.run_guarded(node, h, event)).await,
        }
    }

    /// [`Graph::run_node`] for a step with an error handler: kept apart so that steps without
    /// one do not carry the bigger future (a clone of the input and the handler's run).
    pub(super) async fn run_guarded(
        &self,
        node: &GraphNode,
        h: usize,
        event: Event,
    ) -> Result<Event> {
        let input = event.clone();
        match node.run(event).await {
            Ok(out) => Ok(out),
            Err(err) if err.kind.is_client_error() && !err.step_failed => Err(err),
            Err(err) => {
                let handler = &self.handlers[h];
                tracing::debug!(step = %node.name, handler = %handler.name, error = %err, "step failed; running its error handler");
                let mut event = input;
                event.notes.insert(
                    "error".into(),
                    serde_json::json!({"step": node.name, "message": err.message}),
                );
                handler.run(event).await
            }
        }
    }

    /// Runs a DAG: each step starts when all its inputs are done; independent branches run
    /// concurrently; the first failure fails the request and cancels what is still running.
    pub(super) async fn run_dag(&self, event: Event) -> Result<Event> {
        type Running<'a> = Pin<Box<dyn Future<Output = (usize, Result<Event>)> + Send + 'a>>;
        let n = self.nodes.len();
        let mut waiting: Vec<usize> = self.nodes.iter().map(|n| n.preds.len()).collect();
        let mut uses: Vec<usize> = self.nodes.iter().map(|n| n.succs.len()).collect();
        uses[self.responder] += 1;
        let mut outputs: Vec<Option<Event>> = (0..n).map(|_| None).collect();
        let mut running: FuturesUnordered<Running<'_>> = FuturesUnordered::new();
        let start = |i: usize, ev: Event| -> Running<'_> {
            let node = &self.nodes[i];
            Box::pin(async move { (i, self.run_node(node, ev).await) })
        };
        let (last, rest) = self.entries.split_last().expect("a graph has an entry");
        for &i in rest {
            running.push(start(i, event.clone()));
        }
        running.push(start(*last, event));

        while let Some((i, result)) = running.next().await {
            outputs[i] = Some(result?);
            for &s in &self.nodes[i].succs {
                waiting[s] -= 1;
                if waiting[s] == 0 {
                    let input = self.join_inputs(s, &mut outputs, &mut uses);
                    running.push(start(s, input));
                }
            }
        }
        outputs[self.responder]
            .take()
            .ok_or_else(|| Error::internal("the responder step did not run"))
    }

    /// The event a step with several inputs receives: the first input's event, with the
    /// tensors of the others added in `after` order (a later one replaces a same-named one).
    pub(super) fn join_inputs(
        &self,
        s: usize,
        outputs: &mut [Option<Event>],
        uses: &mut [usize],
    ) -> Event {
        let mut take = |p: usize| -> Event {
            uses[p] -= 1;
            if uses[p] == 0 {
                outputs[p].take().expect("a finished step has an output")
            } else {
                outputs[p].clone().expect("a finished step has an output")
            }
        };
        let preds = &self.nodes[s].preds;
        let mut event = take(preds[0]);
        for &p in &preds[1..] {
            let other = take(p).into_data();
            for t in other.tensors {
                event.put(t);
            }
            for r in other.routes {
                if !event.routes.contains(&r) {
                    event.routes.push(r);
                }
            }
            for r in other.routing {
                if !event.routing.contains(&r) {
                    event.routing.push(r);
                }
            }
            event.parameters.extend(other.parameters);
            event.notes.extend(other.notes);
            event.model_time = event.model_time.max(other.model_time);
            if let (Some(mine), Some(theirs)) = (&mut event.step_microsec, other.step_microsec) {
                for t in theirs {
                    if !mine.contains(&t) {
                        mine.push(t);
                    }
                }
            }
        }
        event
    }
}
