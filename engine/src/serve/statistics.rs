//! Triton's statistics extension (`GET /v2/models[/{m}[/versions/{v}]]/stats`, gRPC's
//! `ModelStatistics`): per model, what [`crate::stats`] recorded and the model runners'
//! figures ([`crate::metrics::ModelMetrics`]), in Triton's shape.

use serde_json::{Value, json};

use crate::error::Result;
use crate::graph::Graph;
use crate::stats::Outcomes;
use crate::step::ModelInfo;

fn duration(count: u64, ns: u64) -> Value {
    json!({ "count": count, "ns": ns })
}

/// One model's statistics in Triton's shape.
fn model_stats(info: &ModelInfo) -> Value {
    let key = crate::stats::key(&info.name, info.version.as_deref());
    let o = crate::stats::find_outcomes(&key);
    let counts = o.as_deref().map(Outcomes::counts).unwrap_or_default();
    let (ok, ok_ns, fail, fail_ns) = (counts.ok, counts.ok_ns, counts.fail, counts.fail_ns);
    let model = crate::metrics::model_metrics(&key);
    // A model runner counts its executions; any other step runs once per request.
    let (queue, compute, executions, batches) = match &model {
        Some(m) => (
            duration(m.queue_wait_seconds.count(), m.queue_wait_seconds.sum_ns()),
            duration(m.run_seconds.count(), m.run_seconds.sum_ns()),
            m.run_seconds.count(),
            m.batch_size.counts(),
        ),
        None => (duration(0, 0), duration(ok, ok_ns), ok, Vec::new()),
    };
    let batch_stats: Vec<Value> = batches
        .into_iter()
        .map(|(size, count)| {
            json!({
                "batch_size": size,
                "compute_input": duration(0, 0),
                "compute_infer": duration(count, 0),
                "compute_output": duration(0, 0),
            })
        })
        .collect();
    json!({
        "name": info.name,
        "version": info.version.as_deref().unwrap_or("1"),
        "last_inference": o.as_deref().map_or(0, Outcomes::last_ms),
        "inference_count": counts.rows,
        "execution_count": executions,
        "inference_stats": {
            "success": duration(ok, ok_ns),
            "fail": duration(fail, fail_ns),
            "queue": queue,
            "compute_input": duration(0, 0),
            "compute_infer": compute,
            "compute_output": duration(0, 0),
            "cache_hit": duration(0, 0),
            "cache_miss": duration(0, 0),
        },
        "response_stats": {},
        "batch_stats": batch_stats,
        "memory_usage": [],
    })
}

/// `{"model_stats": [...]}` for one model (and version), or every model when `name` is
/// `None`; a 404 for a model the graph does not serve.
pub fn statistics(graph: &Graph, name: Option<&str>, version: Option<&str>) -> Result<Value> {
    let models: Vec<&ModelInfo> = match name {
        None => graph.models().iter().collect(),
        Some(n) => match version {
            Some(_) => vec![graph.find_model(n, version)?],
            None => {
                graph.find_model(n, None)?;
                graph.models().iter().filter(|m| m.name == n).collect()
            }
        },
    };
    Ok(json!({ "model_stats": models.into_iter().map(model_stats).collect::<Vec<_>>() }))
}
