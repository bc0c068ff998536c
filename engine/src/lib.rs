//! servegraph's engine: the graph spec and its validation, the compiled graph and its
//! executor, the public [`Step`] trait, the Open Inference Protocol codec and (with the `http`
//! feature) the HTTP source.
//!
//! Step kinds live in `servegraph-steps`; this crate holds no model runtime.

pub mod diag;
pub mod error;
pub mod event;
pub mod feedback;
pub mod fields;
pub mod graph;
#[cfg(feature = "grpc")]
pub mod grpc;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod learning;
pub mod metrics;
pub mod plot;
pub mod protocol;
pub mod repository;
pub mod request;
pub mod schema;
pub mod sources;
pub mod stats;
pub mod step;
pub mod storage;
pub mod telemetry;
pub mod tensor;
pub mod tracking;

pub use async_trait::async_trait;
pub use diag::{Diagnostic, GraphErrors};
pub use error::{Error, ErrorKind, Result};
pub use event::{Event, EventData, Target};
pub use graph::{Graph, Live};
pub use learning::{Learner, LearnerStats, Replicated, ShareLink};
pub use step::{
    BuildContext, BuildMode, Model, ModelInfo, Platform, Registry, Step, StepKind, StepNode,
};
pub use tensor::{DataType, Signature, Tensor, TensorData, TensorMeta};
