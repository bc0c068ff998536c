//! `class: remote`: a model on any other Open Inference Protocol (V2) server, over HTTP or
//! gRPC (the client is `crate::remote`).

use marked_yaml::Spanned;
use schemars::JsonSchema;
use serde::Deserialize;
use servegraph_engine::{BuildContext, BuildMode, Step, StepNode};

use super::ClassSpec;

/// `class: remote`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoteSpec {
    /// The server's base URL (`http://host:port`; for gRPC the server's gRPC port, Triton's
    /// 8001).
    #[schemars(with = "String")]
    pub url: Spanned<String>,
    /// `http` (the default: OIP over HTTP/1.1, JSON or the binary extension) or `grpc` (the
    /// OIP over gRPC, Triton's `GRPCInferenceService`: tensors always raw).
    #[serde(default)]
    pub protocol: Option<RemoteProtocol>,
    /// The model's name on that server (default: this step's name).
    #[serde(default)]
    pub model: Option<String>,
    /// The model version to call (default: the server's choice).
    #[serde(default)]
    pub version: Option<String>,
    /// Deadline for one attempt, in milliseconds (default 5000).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub attempt_timeout_ms: Option<u64>,
    /// Attempts after the first when the server answers 5xx/429 or cannot be reached
    /// (default 2), with exponential backoff from `backoff_ms` (default 50).
    #[serde(default)]
    pub retries: Option<u32>,
    #[serde(default)]
    pub backoff_ms: Option<u64>,
    /// Requests to the server at once; past it requests get 503 at once (default 64).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub max_in_flight: Option<usize>,
    /// Tensors as JSON (`false`) or the binary extension (`true`, the default).
    #[serde(default)]
    pub binary: Option<bool>,
    /// Transform ops run on the request before the model, in order (MLRun's preprocess).
    #[serde(default)]
    #[schemars(with = "Option<Vec<serde_json::Value>>")]
    pub preprocess: Option<serde::de::IgnoredAny>,
    /// Transform ops run on the model's outputs, in order (MLRun's postprocess).
    #[serde(default)]
    #[schemars(with = "Option<Vec<serde_json::Value>>")]
    pub postprocess: Option<serde::de::IgnoredAny>,
}

/// How a remote model is called.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RemoteProtocol {
    #[default]
    Http,
    Grpc,
}

impl ClassSpec for RemoteSpec {
    fn build(&self, node: &StepNode, ctx: &mut BuildContext) -> Option<Box<dyn Step>> {
        let spec = self;
        let url = &spec.url;
        let settings = crate::remote::RemoteSettings {
            model: spec.model.clone().unwrap_or_else(|| node.name.clone()),
            version: spec.version.clone(),
            attempt_timeout: std::time::Duration::from_millis(
                spec.attempt_timeout_ms.unwrap_or(5000),
            ),
            retries: spec.retries.unwrap_or(2),
            backoff: std::time::Duration::from_millis(spec.backoff_ms.unwrap_or(50)),
            max_in_flight: spec.max_in_flight.unwrap_or(64),
            binary: spec.binary.unwrap_or(true),
            protocol: spec.protocol.unwrap_or_default(),
        };
        if settings.protocol == RemoteProtocol::Grpc && spec.binary == Some(false) {
            ctx.error(
                &node.name,
                url.span(),
                "`binary: false` is for `protocol: http`; gRPC always sends tensors raw",
            );
            return None;
        }
        match crate::remote::RemoteModel::new(
            &node.name,
            url.as_str(),
            settings,
            ctx.mode == BuildMode::Load,
        ) {
            Ok(model) => Some(Box::new(model)),
            Err(message) => {
                ctx.error(&node.name, url.span(), message);
                None
            }
        }
    }
}
