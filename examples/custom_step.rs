//! A custom step in Rust: implement [`Step`], give it a factory that reads its YAML, register
//! it under a kind name next to the built-in ones, and use it in a graph like any other step.
//!
//!     cargo run --example custom_step
//!
//! The step here, `kind: temperature`, divides logits by a temperature before a softmax (a
//! common calibration step). The graph is inline; a file works the same with `Graph::load`.

use std::path::Path;

use schemars::JsonSchema;
use serde::Deserialize;
use servegraph_engine::{
    BuildContext, BuildMode, Error, Event, Graph, Result, Signature, Step, StepNode, Tensor,
    TensorData, async_trait,
};

/// The step's YAML fields: checked field by field against its JSON Schema, then deserialized,
/// with line/column errors like the built-in kinds'.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct TemperatureSpec {
    /// The divisor; must be > 0.
    #[schemars(extend("exclusiveMinimum" = 0))]
    temperature: f32,
    /// The tensor to scale.
    #[serde(default = "default_tensor")]
    tensor: String,
}

fn default_tensor() -> String {
    "logits".into()
}

/// The runtime step.
struct Temperature {
    temperature: f32,
    tensor: String,
}

#[async_trait]
impl Step for Temperature {
    async fn process(&self, mut event: Event) -> Result<Event> {
        let t = event.require_mut(&self.tensor)?;
        let TensorData::Fp32(values) = &mut t.data else {
            return Err(Error::unprocessable(format!(
                "`{}` must be FP32",
                self.tensor
            )));
        };
        values.iter_mut().for_each(|v| *v /= self.temperature);
        Ok(event)
    }

    /// Validation: the tensor must reach this step as FP32; the output is the input.
    fn infer(&self, input: &Signature) -> std::result::Result<Signature, String> {
        match input.get(&self.tensor) {
            Some(t) if t.datatype != servegraph_engine::DataType::Fp32 => Err(format!(
                "`{}` must be FP32, not {}",
                self.tensor, t.datatype
            )),
            _ => Ok(input.clone()),
        }
    }
}

/// The factory: parse the spec (errors are reported with their position), check it, build.
fn build_temperature(node: &StepNode, ctx: &mut BuildContext) -> Option<Box<dyn Step>> {
    // Field errors (`temperature` > 0, from the schema) are reported by `parse`.
    let spec: TemperatureSpec = ctx.parse(node)?;
    Some(Box::new(Temperature {
        temperature: spec.temperature,
        tensor: spec.tensor,
    }))
}

const GRAPH: &str = r#"
name: calibrated
graph:
  kind: flow
  steps:
    calibrate: {kind: temperature, temperature: 2.0}
    probs: {kind: transform, op: softmax, after: calibrate}
"#;

fn registry() -> servegraph_engine::Registry {
    let mut registry = servegraph_steps::registry();
    registry.register("temperature", build_temperature);
    registry
}

async fn run(logits: Vec<f32>) -> Result<Event> {
    let graph = Graph::from_yaml(GRAPH, Path::new("."), &registry(), BuildMode::Load)
        .map_err(|d| Error::bad_request(format!("{d:?}")))?;
    let n = logits.len();
    graph
        .run(Event::new(
            "demo",
            vec![Tensor::new("logits", vec![1, n], TensorData::Fp32(logits))?],
        ))
        .await
}

#[tokio::main]
async fn main() -> Result<()> {
    let out = run(vec![2.0, 0.0, -2.0]).await?;
    println!("{:?}", out.get("logits").expect("logits").data);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn temperature_then_softmax() {
        let out = run(vec![2.0, 0.0]).await.unwrap();
        let TensorData::Fp32(p) = &out.get("logits").unwrap().data else {
            panic!()
        };
        // softmax([1, 0]) after dividing by 2.
        let e = 1f32.exp();
        assert!((p[0] - e / (e + 1.0)).abs() < 1e-6, "{p:?}");
    }

    #[test]
    fn its_errors_are_reported_like_the_built_in_kinds() {
        let yaml = "name: c\ngraph: {kind: flow, steps: {t: {kind: temperature, temperature: 0}, u: {kind: temperature, temprature: 1, after: t}}}\n";
        let d = Graph::from_yaml(yaml, Path::new("."), &registry(), BuildMode::Load)
            .err()
            .unwrap();
        let text: Vec<String> = d.iter().map(|d| d.one_line("g")).collect();
        assert!(
            text.iter()
                .any(|t| t
                    .contains("step `t`: `temperature` must be a number > 0, found the number 0")),
            "{text:?}"
        );
        assert!(
            text.iter().any(
                |t| t.contains("step `u`: unknown field `temprature` for a `temperature` step")
            ),
            "{text:?}"
        );
    }
}
