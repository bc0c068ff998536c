//! `kind: error_handler`: a step that answers for a failed one. A flow step (or the graph)
//! names it in `on_error`; when that step fails, this step gets the step's input, with the
//! error in the response's `parameters.error` (`{step, message}`), and its answer goes on in
//! the failed step's place.
//!
//! ```yaml
//! model: {kind: model, class: onnx, model_path: m.onnx, on_error: fallback}
//! fallback:
//!   kind: error_handler
//!   outputs:
//!     - {name: label, datatype: INT64, shape: [1], data: [-1]}
//! ```
//!
//! Without `outputs` the input passes through unchanged. Any other step (a backup model, a
//! simpler router) can be named in `on_error` too.

use half::f16;
use schemars::JsonSchema;
use serde::Deserialize;
use servegraph_engine::{
    BuildContext, DataType, Event, Result, Signature, Step, StepNode, Tensor, TensorData,
    TensorMeta, async_trait,
};

/// An error handler's fields.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorHandlerSpec {
    /// Tensors to answer with instead of the failed step's. None: its input passes on.
    #[serde(default)]
    pub outputs: Vec<FallbackTensor>,
}

/// One fallback tensor, OIP-style, with flat `data`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FallbackTensor {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<usize>,
    /// The elements, flat, in row-major order.
    #[schemars(with = "Vec<serde_json::Value>")]
    pub data: Vec<String>,
}

pub struct ErrorHandler {
    outputs: Vec<Tensor>,
}

/// Builds an `error_handler` step.
pub fn build(node: &StepNode, ctx: &mut BuildContext) -> Option<Box<dyn Step>> {
    let spec: ErrorHandlerSpec = ctx.parse(node)?;
    let mut outputs = Vec::with_capacity(spec.outputs.len());
    for out in spec.outputs {
        let tensor = elements(out.datatype, &out.data)
            .and_then(|data| Tensor::new(&out.name, out.shape, data).map_err(|e| e.message));
        match tensor {
            Ok(t) => outputs.push(t),
            Err(e) => {
                let span = node
                    .body
                    .get_node("outputs")
                    .map(|n| *n.span())
                    .unwrap_or(node.span);
                ctx.error(&node.name, &span, format!("output `{}`: {e}", out.name));
                return None;
            }
        }
    }
    Some(Box::new(ErrorHandler { outputs }))
}

/// YAML scalars (as written) as elements of `datatype`.
fn elements(datatype: DataType, data: &[String]) -> std::result::Result<TensorData, String> {
    fn parse<T: std::str::FromStr>(
        data: &[String],
        what: DataType,
    ) -> std::result::Result<Vec<T>, String> {
        data.iter()
            .map(|s| {
                s.trim()
                    .parse::<T>()
                    .map_err(|_| format!("`{s}` is not {what}"))
            })
            .collect()
    }
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(parse(data, datatype)?),
        DataType::Uint8 => TensorData::Uint8(parse(data, datatype)?),
        DataType::Uint16 => TensorData::Uint16(parse(data, datatype)?),
        DataType::Uint32 => TensorData::Uint32(parse(data, datatype)?),
        DataType::Uint64 => TensorData::Uint64(parse(data, datatype)?),
        DataType::Int8 => TensorData::Int8(parse(data, datatype)?),
        DataType::Int16 => TensorData::Int16(parse(data, datatype)?),
        DataType::Int32 => TensorData::Int32(parse(data, datatype)?),
        DataType::Int64 => TensorData::Int64(parse(data, datatype)?),
        DataType::Fp16 => TensorData::Fp16(
            parse::<f32>(data, datatype)?
                .into_iter()
                .map(f16::from_f32)
                .collect(),
        ),
        DataType::Fp32 => TensorData::Fp32(parse(data, datatype)?),
        DataType::Fp64 => TensorData::Fp64(parse(data, datatype)?),
        DataType::Bytes => TensorData::Bytes(data.iter().map(|s| s.as_bytes().to_vec()).collect()),
    })
}

#[async_trait]
impl Step for ErrorHandler {
    async fn process(&self, mut event: Event) -> Result<Event> {
        if !self.outputs.is_empty() {
            event.tensors = self.outputs.clone();
        }
        Ok(event)
    }

    fn infer(&self, input: &Signature) -> std::result::Result<Signature, String> {
        if self.outputs.is_empty() {
            return Ok(input.clone());
        }
        Ok(Signature::exact(
            self.outputs
                .iter()
                .map(Tensor::meta)
                .map(|mut m: TensorMeta| {
                    // A fallback answers any batch: its first dimension is not fixed.
                    if let Some(d) = m.shape.first_mut() {
                        *d = -1;
                    }
                    m
                })
                .collect(),
        ))
    }

    fn platform(&self) -> servegraph_engine::Platform {
        servegraph_engine::Platform::ErrorHandler
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use servegraph_engine::{Error, ErrorKind, Graph, Registry};

    use super::*;

    struct Fail;

    #[async_trait]
    impl Step for Fail {
        async fn process(&self, _e: Event) -> Result<Event> {
            Err(Error::internal("model crashed"))
        }
    }

    fn registry() -> Registry {
        let mut r = crate::registry();
        r.register("fail", |_: &StepNode, _: &mut BuildContext| {
            Some(Box::new(Fail) as Box<dyn Step>)
        });
        r
    }

    fn graph(yaml: &str) -> std::result::Result<Graph, Vec<servegraph_engine::Diagnostic>> {
        Graph::from_yaml(yaml, Path::new("."), &registry(), BuildMode::Load)
    }

    use servegraph_engine::BuildMode;

    fn input() -> Event {
        Event::new(
            "e",
            vec![Tensor::new("x", vec![1], TensorData::Fp32(vec![3.0])).unwrap()],
        )
    }

    #[tokio::test]
    async fn a_failing_step_is_answered_by_its_handler() {
        let g = graph(
            r#"name: g
graph:
  kind: flow
  steps:
    m: {kind: fail, on_error: fallback}
    names: {kind: transform, op: label_map, args: {labels: [a, b]}, after: m}
    fallback:
      kind: error_handler
      outputs: [{name: label, datatype: INT64, shape: [1], data: [1]}]
"#,
        )
        .unwrap();
        let out = g.run(input()).await.unwrap();
        // The fallback's label went on to the next step.
        assert_eq!(
            out.get("label").unwrap().data,
            TensorData::Bytes(vec![b"b".to_vec()])
        );
        assert_eq!(out.notes["error"]["step"], "m");
        assert_eq!(out.notes["error"]["message"], "model crashed");
    }

    #[tokio::test]
    async fn graph_default_handler_and_pass_through() {
        let g = graph("name: g\non_error: h\ngraph: {kind: flow, steps: {m: {kind: fail}, h: {kind: error_handler}}}\n").unwrap();
        let out = g.run(input()).await.unwrap();
        assert_eq!(out.get("x").unwrap().data, TensorData::Fp32(vec![3.0]));
        assert_eq!(out.notes["error"]["step"], "m");
    }

    #[tokio::test]
    async fn without_a_handler_the_step_is_named() {
        let g = graph("name: g\ngraph: {kind: flow, steps: {m: {kind: fail}}}\n").unwrap();
        let err = g.run(input()).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Internal);
        assert_eq!(err.to_string(), "step `m`: model crashed");
    }

    #[test]
    fn misused_handlers_are_reported() {
        let cases = [
            (
                "{m: {kind: fail, on_error: nope}}",
                "`on_error: nope` names no step of this flow",
            ),
            (
                "{m: {kind: fail, on_error: m}}",
                "a step cannot be its own error handler",
            ),
            (
                "{m: {kind: fail, on_error: h}, h: {kind: error_handler, after: m}}",
                "an error handler cannot have `after`",
            ),
            (
                "{m: {kind: fail, on_error: h}, h: {kind: error_handler}, n: {kind: fail, after: h}}",
                "`after: h` names an error handler",
            ),
            (
                "{m: {kind: fail, on_error: h}, h: {kind: error_handler, outputs: [{name: y, datatype: INT64, shape: [2], data: [1]}]}}",
                "output `y`: tensor `y`: shape [2] needs 2 elements, data has 1",
            ),
            (
                "{m: {kind: fail, on_error: h}, h: {kind: error_handler, outputs: [{name: y, datatype: INT64, shape: [1], data: [x]}]}}",
                "output `y`: `x` is not INT64",
            ),
            (
                "{r: {kind: router, routes: {a: {kind: fail, on_error: h}}}, h: {kind: error_handler}}",
                "`on_error` is only allowed on steps of a flow",
            ),
        ];
        for (steps, want) in cases {
            let yaml = format!("name: g\ngraph: {{kind: flow, steps: {steps}}}\n");
            let d = graph(&yaml)
                .err()
                .unwrap_or_else(|| panic!("{steps} is valid"));
            let text: Vec<String> = d.iter().map(|d| d.one_line("g")).collect();
            assert!(
                text.iter().any(|t| t.contains(want)),
                "{want:?} not in {text:?}"
            );
        }
        let d = graph("name: g\non_error: h\ngraph: {kind: router, routes: {a: {kind: fail}}}\n")
            .err()
            .unwrap();
        assert!(d[0].message.contains("this graph is not a flow"), "{d:?}");
    }
}
