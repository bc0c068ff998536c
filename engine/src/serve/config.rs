//! Triton's model configuration extension (`GET /v2/models/{m}/config`, gRPC's
//! `ModelConfig`).

use serde_json::json;

use crate::error::Error;
use crate::graph::Graph;

/// Triton's configuration of a model: a model with a batch dimension (`max_batch_size`, or
/// `batch`) has its `max_batch_size` and `dims` that leave the batch dimension out, as
/// Triton's do, and `dynamic_batching` when it batches; others have `max_batch_size: 0` and
/// their whole shapes.
pub fn model_config(
    graph: &Graph,
    model: &str,
    version: Option<&str>,
) -> Result<serde_json::Value, Error> {
    let info = graph.find_model(model, version)?;
    let step = graph
        .model_step(&info.name, info.version.as_deref())
        .filter(|_| info.name != graph.name || graph.models().len() == 1);
    let batching = step.and_then(|s| s.model()).and_then(|m| m.batching());
    let batch_dim = info.max_batch_size > 0;
    let tensors = |list: &[crate::tensor::TensorMeta]| -> Vec<serde_json::Value> {
        list.iter()
            .map(|t| {
                let dims = match t.shape.split_first() {
                    Some((_, rest)) if batch_dim => rest.to_vec(),
                    _ => t.shape.clone(),
                };
                json!({ "name": t.name, "data_type": triton_type(t.datatype), "dims": dims })
            })
            .collect()
    };
    let (platform, backend) = (info.platform.as_str(), info.platform.backend());
    let mut config = json!({
        "name": info.name,
        "platform": platform,
        "backend": backend,
        "version_policy": { "specific": { "versions": graph.versions(&info.name) } },
        "max_batch_size": info.max_batch_size,
        "input": tensors(&info.inputs),
        "output": tensors(&info.outputs),
    });
    if let Some((n, wait)) = batching {
        config["dynamic_batching"] = json!({
            "preferred_batch_size": [n],
            "max_queue_delay_microseconds": wait.as_micros() as u64,
        });
    }
    Ok(config)
}

/// A datatype as Triton's model configuration spells it.
fn triton_type(d: crate::tensor::DataType) -> String {
    match d {
        crate::tensor::DataType::Bytes => "TYPE_STRING".to_owned(),
        other => format!("TYPE_{}", other.as_str()),
    }
}
