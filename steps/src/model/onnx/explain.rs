//! `/explain` for ONNX classifiers: occlusion attributions, one batched run.

use std::time::Duration;

use servegraph_engine::{DataType, Error, Result, Tensor, TensorData};

use super::OnnxModel;

impl OnnxModel {
    /// Occlusion: for each row and feature, how much the predicted class's score drops when
    /// that feature takes its baseline value. All N×(F+1) variants go through one run. Adds
    /// `attributions` FP32 [N, F] to the outputs of the original rows.
    pub(super) async fn explain(&self, inputs: Vec<Tensor>) -> Result<(Vec<Tensor>, Duration)> {
        let cannot = |why: String| {
            Error::bad_request(format!("model `{}` cannot explain: {why}", self.name))
        };
        let [x] = <[Tensor; 1]>::try_from(inputs).map_err(|_| {
            cannot("explain needs a model with one tabular input [rows, features]".into())
        })?;
        if x.shape.len() != 2 || !x.datatype().is_float() {
            return Err(cannot(format!(
                "input `{}` is {} {:?}; explain needs a float [rows, features] input",
                x.name,
                x.datatype(),
                x.shape
            )));
        }
        let (rows, features) = (x.shape[0], x.shape[1]);
        let baseline: Vec<f64> = match self.baseline.len() {
            0 => vec![0.0; features],
            1 => vec![self.baseline[0]; features],
            n if n == features => self.baseline.clone(),
            n => {
                return Err(cannot(format!(
                    "`explain.baseline` has {n} values but the input has {features} features"
                )));
            }
        };
        let values = x.data.to_f64_vec().expect("float");
        let variants = features + 1;
        let mut stacked = Vec::with_capacity(rows * variants * features);
        for row in values.chunks(features) {
            stacked.extend_from_slice(row);
            for (j, b) in baseline.iter().enumerate() {
                stacked.extend(
                    row.iter()
                        .enumerate()
                        .map(|(k, v)| if k == j { *b } else { *v }),
                );
            }
        }
        let data = match x.datatype() {
            DataType::Fp64 => TensorData::Fp64(stacked),
            DataType::Fp16 => {
                TensorData::Fp16(stacked.into_iter().map(half::f16::from_f64).collect())
            }
            _ => TensorData::Fp32(stacked.into_iter().map(|v| v as f32).collect()),
        };
        let (outputs, took) = self
            .pool_job(vec![Tensor::new(
                x.name.clone(),
                vec![rows * variants, features],
                data,
            )?])
            .await?;
        // The score: a float [rows, classes] output (`probabilities` if there is one).
        let score = outputs
            .iter()
            .filter(|t| {
                t.datatype().is_float() && t.shape.len() == 2 && t.shape[0] == rows * variants
            })
            .max_by_key(|t| t.name == "probabilities")
            .ok_or_else(|| cannot("it has no float [rows, classes] output to attribute".into()))?;
        let classes = score.shape[1];
        let s = score.data.to_f64_vec().expect("float");
        let label = outputs.iter().find(|t| {
            t.datatype().is_integer()
                && t.shape.first() == Some(&(rows * variants))
                && t.data.len() == rows * variants
        });
        let mut attributions = Vec::with_capacity(rows * features);
        for r in 0..rows {
            let orig = r * variants;
            let class = match label.and_then(|l| l.data.to_f64_vec()) {
                Some(l) => (l[orig] as usize).min(classes - 1),
                None => crate::transform::argmax(&s[orig * classes..(orig + 1) * classes]),
            };
            let base = s[orig * classes + class];
            for j in 0..features {
                attributions.push((base - s[(orig + 1 + j) * classes + class]) as f32);
            }
        }
        // Every output, for the original rows only.
        let mut out = Vec::with_capacity(outputs.len() + 1);
        for t in outputs {
            let row: usize = t.shape[1..].iter().product();
            let pieces = t.data.split(&vec![row; rows * variants]);
            let kept: Vec<TensorData> = pieces.into_iter().step_by(variants).collect();
            let mut shape = t.shape.clone();
            shape[0] = rows;
            out.push(Tensor::new(t.name, shape, TensorData::concat(kept)?)?);
        }
        out.push(Tensor::new(
            servegraph_engine::event::ATTRIBUTIONS,
            vec![rows, features],
            TensorData::Fp32(attributions),
        )?);
        Ok((out, took))
    }
}
