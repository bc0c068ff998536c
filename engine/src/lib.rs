//! servegraph's engine: the graph spec and its validation, the compiled graph and its
//! executor, the public [`Step`] trait, the one request path, the wire protocols' codecs, the
//! protocol service and the serving process's lifecycle (feature `serve`), and the
//! transports and sources: HTTP (feature `http`), gRPC (`grpc`), Kafka (`kafka`).
//!
//! The modules build on each other in one direction, lowest first: tensors, errors, events
//! and diagnostics; `step`, `learning`, `metrics`, `stats`, `tracking`, `protocol`,
//! `storage`, `repository`; `graph`; `request` (the request path); `sources`; `serve`; the
//! transports (`http`, `grpc`, `kafka`). No module imports one above it.
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
#[cfg(feature = "serve")]
pub mod serve;
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
