//! The top level of a graph file and the engine's own fields on flow steps.

use schemars::JsonSchema;
use serde::Deserialize;

/// The top level of a graph file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GraphFileSpec {
    /// The graph's name: the model name clients address (`/v2/models/{name}/infer`).
    pub name: String,
    /// Free text for people reading the file.
    #[serde(default)]
    pub description: Option<String>,
    /// The graph: `kind: flow` (steps joined by `after`) or `kind: router` (one router).
    #[schemars(with = "serde_json::Value")]
    pub graph: serde::de::IgnoredAny,
    /// Deadline for one request through the whole graph, in milliseconds (HTTP 504 past it).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Requests the graph serves at once; more are refused with HTTP 429.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// The most elements one request tensor may have (HTTP 422 past it).
    #[serde(default = "default_max_tensor_elements")]
    pub max_tensor_elements: usize,
    /// The error handler for every flow step that names none (a step of the flow).
    #[serde(default)]
    pub on_error: Option<String>,
    /// Monitoring events, one per (sampled) request, to a tracking stream.
    #[serde(default)]
    pub tracking: Option<crate::tracking::TrackingSpec>,
    /// Drift and performance monitoring of the tracking stream (docs/monitoring.md).
    #[serde(default)]
    pub monitor: Option<crate::monitor::MonitorSpec>,
    /// Sources besides HTTP (Kafka).
    #[serde(default)]
    pub sources: Option<super::sources::SourcesSpec>,
    /// OpenTelemetry tracing: spans per request and per step, exported over OTLP/HTTP.
    #[serde(default)]
    pub telemetry: Option<crate::telemetry::TelemetrySpec>,
    /// Create the Kafka topics the graph uses (its Kafka source's, its tracking stream's,
    /// its queue steps', its routers' shared learning) that do not exist, at start-up.
    /// Without it a missing topic is an error naming it.
    #[serde(default)]
    pub create_topics: Option<super::sources::CreateTopicsSpec>,
}

pub(super) fn default_timeout_ms() -> u64 {
    30_000
}

pub(super) fn default_max_in_flight() -> usize {
    1024
}

pub(super) fn default_max_tensor_elements() -> usize {
    16 * 1024 * 1024
}

/// The step fields the engine reads on a flow's steps (besides `after`).
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub(super) struct FlowFields {
    #[serde(default)]
    pub(super) responder: bool,
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub(super) timeout_ms: Option<u64>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(super) on_error: Option<marked_yaml::Spanned<String>>,
}
