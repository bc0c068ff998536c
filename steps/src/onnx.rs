//! ONNX models through ONNX Runtime (`ort`, loaded at run time from a shared library).
//!
//! Each model owns a pool of sessions, one per worker thread, fed by one bounded queue: an
//! inference never runs on the async workers, `Session::run`'s `&mut self` needs no lock, and
//! a full queue answers 503 at once instead of growing memory. Each job carries a `oneshot`
//! for its answer and the caller's tracing span; a job whose caller has gone is skipped.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::thread;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{DynValue, Tensor as OrtTensor, TensorElementType, ValueType};
use servegraph_engine::{
    DataType, Error, Event, ModelInfo, Result, Signature, Step, Tensor, TensorData, TensorMeta,
    async_trait,
};
use tokio::sync::oneshot;

use crate::model::ModelSpec;

/// The ONNX Runtime version whose shared library servegraph loads.
pub const ORT_VERSION: &str = "1.31.1";

/// Where the library is: `ORT_DYLIB_PATH`, else where `scripts/setup.sh` puts it.
pub fn dylib_path() -> PathBuf {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache
        .join("servegraph")
        .join(format!("onnxruntime-{ORT_VERSION}"))
        .join(format!("libonnxruntime.so.{ORT_VERSION}"))
}

/// The process's ONNX Runtime environment, loaded on first use.
fn environment() -> std::result::Result<&'static ort::environment::Environment, String> {
    static ENV: OnceLock<std::result::Result<ort::environment::Environment, String>> =
        OnceLock::new();
    ENV.get_or_init(|| {
        let path = dylib_path();
        if !path.is_file() {
            return Err(format!(
                "the ONNX Runtime library is not at {}: run scripts/setup.sh, or set \
                 ORT_DYLIB_PATH to libonnxruntime.so (version {ORT_VERSION})",
                path.display()
            ));
        }
        ort::init_from(&path)
            .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", path.display()))?
            .with_name("servegraph")
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime: {e}"))
    })
    .as_ref()
    .map_err(Clone::clone)
}

struct Job {
    inputs: Vec<Tensor>,
    span: tracing::Span,
    reply: oneshot::Sender<Result<Vec<Tensor>>>,
}

/// A loaded ONNX model and its session pool.
pub struct OnnxModel {
    name: String,
    inputs: Vec<TensorMeta>,
    outputs: Vec<TensorMeta>,
    queue: Sender<Job>,
    queue_size: usize,
}

impl OnnxModel {
    /// Opens `sessions` sessions of the model and starts a worker thread for each.
    pub fn load(
        name: &str,
        path: &Path,
        spec: &ModelSpec,
    ) -> std::result::Result<OnnxModel, String> {
        let env = environment()?;
        let open = || -> std::result::Result<Session, String> {
            let fail = |e: &dyn std::fmt::Display| {
                format!("ONNX Runtime cannot load {}: {e}", path.display())
            };
            Session::builder(env)
                .map_err(|e| fail(&e))?
                .with_optimization_level(GraphOptimizationLevel::Level3)
                .map_err(|e| fail(&e))?
                .with_intra_threads(spec.intra_op_threads)
                .map_err(|e| fail(&e))?
                .with_inter_threads(1)
                .map_err(|e| fail(&e))?
                .commit_from_file(path)
                .map_err(|e| fail(&e))
        };
        let first = open()?;
        let inputs = metas(
            first.inputs().iter().map(|o| (o.name(), o.dtype())),
            "input",
        )?;
        let outputs = metas(
            first.outputs().iter().map(|o| (o.name(), o.dtype())),
            "output",
        )?;
        let (tx, rx) = crossbeam_channel::bounded(spec.queue_size);
        let mut sessions = vec![first];
        for _ in 1..spec.sessions {
            sessions.push(open()?);
        }
        for (i, session) in sessions.into_iter().enumerate() {
            let rx: Receiver<Job> = rx.clone();
            let outputs = outputs.clone();
            thread::Builder::new()
                .name(format!("onnx-{name}-{i}"))
                .spawn(move || worker(session, rx, outputs))
                .map_err(|e| format!("cannot start a worker thread: {e}"))?;
        }
        tracing::info!(model = name, path = %path.display(), sessions = spec.sessions, "loaded ONNX model");
        Ok(OnnxModel {
            name: name.to_owned(),
            inputs,
            outputs,
            queue: tx,
            queue_size: spec.queue_size,
        })
    }

    /// Takes the model's inputs from the event, checking names, datatypes and shapes.
    fn take_inputs(&self, event: &mut Event) -> Result<Vec<Tensor>> {
        let mut out = Vec::with_capacity(self.inputs.len());
        for meta in &self.inputs {
            let Some(pos) = event.tensors.iter().position(|t| t.name == meta.name) else {
                let have: Vec<String> =
                    event.tensors.iter().map(|t| t.meta().to_string()).collect();
                return Err(Error::unprocessable(format!(
                    "model `{}` needs input `{meta}`; the request has: {}",
                    self.name,
                    if have.is_empty() {
                        "none".into()
                    } else {
                        have.join(", ")
                    }
                )));
            };
            let t = event.tensors.swap_remove(pos);
            if t.datatype() != meta.datatype {
                return Err(Error::unprocessable(format!(
                    "input `{}` must be {} but is {}",
                    meta.name,
                    meta.datatype,
                    t.datatype()
                )));
            }
            if !meta.shape_accepts(&t.shape) {
                return Err(Error::unprocessable(format!(
                    "input `{}` must have shape {:?} but has shape {:?}",
                    meta.name, meta.shape, t.shape
                )));
            }
            out.push(t);
        }
        Ok(out)
    }
}

#[async_trait]
impl Step for OnnxModel {
    async fn process(&self, mut event: Event) -> Result<Event> {
        let inputs = self.take_inputs(&mut event)?;
        let (reply, answer) = oneshot::channel();
        let job = Job {
            inputs,
            span: tracing::Span::current(),
            reply,
        };
        self.queue.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => Error::unavailable(format!(
                "model `{}` is busy: {} requests are already waiting",
                self.name, self.queue_size
            )),
            TrySendError::Disconnected(_) => {
                Error::internal(format!("model `{}` has stopped", self.name))
            }
        })?;
        let outputs = answer
            .await
            .map_err(|_| Error::internal(format!("model `{}` dropped the request", self.name)))??;
        event.tensors = outputs;
        Ok(event)
    }

    fn infer(&self, input: &Signature) -> std::result::Result<Signature, String> {
        input.check_provides(&self.inputs)?;
        Ok(Signature::exact(self.outputs.clone()))
    }

    fn inputs(&self) -> Option<Vec<TensorMeta>> {
        Some(self.inputs.clone())
    }

    fn models(&self) -> Vec<ModelInfo> {
        Vec::new()
    }

    fn platform(&self) -> &str {
        "onnxruntime_onnx"
    }
}

fn worker(mut session: Session, jobs: Receiver<Job>, outputs: Vec<TensorMeta>) {
    while let Ok(job) = jobs.recv() {
        if job.reply.is_closed() {
            continue;
        }
        let _entered = job.span.enter();
        let result = run(&mut session, job.inputs, &outputs);
        let _ = job.reply.send(result);
    }
}

fn run(session: &mut Session, inputs: Vec<Tensor>, outputs: &[TensorMeta]) -> Result<Vec<Tensor>> {
    let values = inputs
        .into_iter()
        .map(|t| Ok((t.name.clone(), to_ort(t)?)))
        .collect::<Result<Vec<(String, DynValue)>>>()?;
    let results = session
        .run(values)
        .map_err(|e| Error::internal(format!("ONNX Runtime failed: {e}")))?;
    outputs
        .iter()
        .map(|meta| {
            let value = results.get(&meta.name).ok_or_else(|| {
                Error::internal(format!("the model gave no output `{}`", meta.name))
            })?;
            from_ort(&meta.name, value)
        })
        .collect()
}

fn ort_err(e: ort::Error) -> Error {
    Error::internal(format!("ONNX Runtime: {e}"))
}

fn to_ort(t: Tensor) -> Result<DynValue> {
    let shape = t.shape;
    macro_rules! owned {
        ($v:expr) => {
            OrtTensor::from_array((shape, $v))
                .map(|x| x.into_dyn())
                .map_err(ort_err)
        };
    }
    match t.data {
        TensorData::Bool(v) => owned!(v),
        TensorData::Uint8(v) => owned!(v),
        TensorData::Uint16(v) => owned!(v),
        TensorData::Uint32(v) => owned!(v),
        TensorData::Uint64(v) => owned!(v),
        TensorData::Int8(v) => owned!(v),
        TensorData::Int16(v) => owned!(v),
        TensorData::Int32(v) => owned!(v),
        TensorData::Int64(v) => owned!(v),
        TensorData::Fp16(v) => owned!(v),
        TensorData::Fp32(v) => owned!(v),
        TensorData::Fp64(v) => owned!(v),
        TensorData::Bytes(v) => {
            let strings = v
                .into_iter()
                .map(String::from_utf8)
                .collect::<std::result::Result<Vec<String>, _>>()
                .map_err(|_| {
                    Error::unprocessable(format!("input `{}`: ONNX strings must be UTF-8", t.name))
                })?;
            OrtTensor::from_string_array((shape, strings.as_slice()))
                .map(|x| x.into_dyn())
                .map_err(ort_err)
        }
    }
}

fn from_ort(name: &str, value: &DynValue) -> Result<Tensor> {
    macro_rules! copy {
        ($t:ty, $variant:ident) => {{
            let (shape, data) = value.try_extract_tensor::<$t>().map_err(ort_err)?;
            (
                shape.iter().map(|&d| d as usize).collect::<Vec<usize>>(),
                TensorData::$variant(data.to_vec()),
            )
        }};
    }
    let ty = value
        .dtype()
        .tensor_type()
        .ok_or_else(|| Error::internal(format!("output `{name}` is not a tensor")))?;
    let (shape, data) = match ty {
        TensorElementType::Bool => copy!(bool, Bool),
        TensorElementType::Uint8 => copy!(u8, Uint8),
        TensorElementType::Uint16 => copy!(u16, Uint16),
        TensorElementType::Uint32 => copy!(u32, Uint32),
        TensorElementType::Uint64 => copy!(u64, Uint64),
        TensorElementType::Int8 => copy!(i8, Int8),
        TensorElementType::Int16 => copy!(i16, Int16),
        TensorElementType::Int32 => copy!(i32, Int32),
        TensorElementType::Int64 => copy!(i64, Int64),
        TensorElementType::Float16 => copy!(half::f16, Fp16),
        TensorElementType::Float32 => copy!(f32, Fp32),
        TensorElementType::Float64 => copy!(f64, Fp64),
        TensorElementType::String => {
            let (shape, strings) = value.try_extract_strings().map_err(ort_err)?;
            (
                shape.iter().map(|&d| d as usize).collect(),
                TensorData::Bytes(strings.into_iter().map(String::into_bytes).collect()),
            )
        }
        other => {
            return Err(Error::internal(format!(
                "output `{name}` has element type {other:?}, which OIP cannot carry"
            )));
        }
    };
    Tensor::new(name, shape, data)
}

/// Model inputs/outputs as OIP metadata; a non-tensor one (a sequence or map, as scikit-learn
/// models with ZipMap have) is a load error that says how to export the model instead.
fn metas<'a>(
    outlets: impl Iterator<Item = (&'a str, &'a ValueType)>,
    what: &str,
) -> std::result::Result<Vec<TensorMeta>, String> {
    outlets
        .map(|(name, ty)| {
            let ValueType::Tensor { ty, shape, .. } = ty else {
                return Err(format!(
                    "{what} `{name}` is a {ty:?}, not a tensor; export scikit-learn models with \
                     zipmap disabled"
                ));
            };
            let datatype = datatype(*ty).ok_or_else(|| {
                format!("{what} `{name}` has element type {ty:?}, which OIP cannot carry")
            })?;
            Ok(TensorMeta::new(
                name,
                datatype,
                shape.iter().copied().collect(),
            ))
        })
        .collect()
}

fn datatype(ty: TensorElementType) -> Option<DataType> {
    Some(match ty {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float16 => DataType::Fp16,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}
