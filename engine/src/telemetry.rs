//! OpenTelemetry tracing: one span per request (its parent taken from a W3C `traceparent`
//! header, on HTTP or Kafka) and one per graph step, exported over OTLP/HTTP (JSON) when the
//! graph file sets `telemetry: {otlp_endpoint: ...}`.
//!
//! Off by default, and then free: without a tracer, events carry no trace context and the
//! executor's only extra work per step is one `is_some` check.

use std::sync::OnceLock;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use schemars::JsonSchema;
use serde::Deserialize;

/// `telemetry:` in a graph file.
#[derive(Clone, Debug, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySpec {
    /// The OTLP/HTTP collector, e.g. `http://127.0.0.1:4318`; spans go to `/v1/traces` there.
    pub otlp_endpoint: String,
    /// The `service.name` of the spans (default: `servegraph-<graph name>`).
    #[serde(default)]
    pub service_name: Option<String>,
}

impl TelemetrySpec {
    /// The error is the diagnostic for `telemetry:`.
    pub fn check(&self) -> Result<(), String> {
        let e = &self.otlp_endpoint;
        if !(e.starts_with("http://") || e.starts_with("https://")) || e.len() < 10 {
            return Err(format!(
                "`otlp_endpoint: {e}`: expected an http:// or https:// URL of an OTLP/HTTP collector"
            ));
        }
        Ok(())
    }
}

/// The OTLP exporter could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the OTLP exporter: {0}")]
pub struct ExporterError(#[from] opentelemetry_otlp::ExporterBuildError);

static TRACING: OnceLock<(SdkTracerProvider, SdkTracer)> = OnceLock::new();

/// Starts exporting spans (once per process: the first graph served decides).
pub fn start(spec: &TelemetrySpec, graph: &str) -> Result<(), ExporterError> {
    if TRACING.get().is_some() {
        return Ok(());
    }
    let base = spec.otlp_endpoint.trim_end_matches('/');
    let endpoint = if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    };
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpJson)
        .with_endpoint(endpoint)
        .build()?;
    let service = spec
        .service_name
        .clone()
        .unwrap_or_else(|| format!("servegraph-{graph}"));
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .build();
    let tracer = provider.tracer("servegraph");
    let _ = TRACING.set((provider, tracer));
    tracing::info!(endpoint = %spec.otlp_endpoint, "exporting traces over OTLP/HTTP");
    Ok(())
}

/// Exports what is left (at shutdown). Blocks: call it off the async workers.
pub fn shutdown() {
    if let Some((provider, _)) = TRACING.get()
        && let Err(e) = provider.shutdown()
    {
        tracing::warn!(error = %e, "flushing the last spans failed");
    }
}

fn tracer() -> Option<&'static SdkTracer> {
    TRACING.get().map(|(_, t)| t)
}

/// A request's span, ended (with its outcome) when [`RequestSpan::end`] is called or dropped.
pub struct RequestSpan(Context);

impl RequestSpan {
    /// The span's context, for the event (steps' spans are its children).
    pub fn context(&self) -> Context {
        self.0.clone()
    }

    /// Ends the span with the request's status code.
    pub fn end(self, code: u16, error: Option<&str>) {
        let span = self.0.span();
        span.set_attribute(KeyValue::new("http.response.status_code", code as i64));
        if let Some(e) = error {
            span.set_status(Status::error(e.to_owned()));
        }
    }
}

impl Drop for RequestSpan {
    fn drop(&mut self) {
        self.0.span().end();
    }
}

/// Whether spans are being exported.
pub fn enabled() -> bool {
    TRACING.get().is_some()
}

/// A new request span when tracing is on: `name`, its parent from the request's W3C
/// `traceparent` and `tracestate` headers (as `header` finds them), and attributes.
pub fn request_span(
    name: String,
    kind: SpanKind,
    header: impl Fn(&str) -> Option<String>,
    attributes: Vec<KeyValue>,
) -> Option<RequestSpan> {
    let tracer = tracer()?;
    struct Headers([Option<String>; 2]);
    impl Extractor for Headers {
        fn get(&self, key: &str) -> Option<&str> {
            match key {
                "traceparent" => self.0[0].as_deref(),
                "tracestate" => self.0[1].as_deref(),
                _ => None,
            }
        }
        fn keys(&self) -> Vec<&str> {
            vec!["traceparent", "tracestate"]
        }
    }
    let headers = Headers([header("traceparent"), header("tracestate")]);
    let parent = TraceContextPropagator::new().extract(&headers);
    let span = tracer
        .span_builder(name)
        .with_kind(kind)
        .with_attributes(attributes)
        .start_with_context(tracer, &parent);
    Some(RequestSpan(parent.with_span(span)))
}

/// A step's span, child of the request's, ended when dropped.
pub struct StepSpan(Context);

impl StepSpan {
    pub fn start(parent: &Context, step: &str) -> Option<StepSpan> {
        let tracer = tracer()?;
        let span = tracer
            .span_builder(step.to_owned())
            .with_kind(SpanKind::Internal)
            .start_with_context(tracer, parent);
        Some(StepSpan(parent.with_span(span)))
    }

    pub fn fail(&self, error: &str) {
        self.0.span().set_status(Status::error(error.to_owned()));
    }
}

impl Drop for StepSpan {
    fn drop(&mut self) {
        self.0.span().end();
    }
}

/// What Triton's trace extension sets (`/v2[/models/{m}]/trace/setting`): whether requests
/// are traced (`trace_level`: off, or timestamps, which spans carry), one in how many
/// (`trace_rate`), and how many more (`trace_count`, -1: no limit). Process-wide, as the
/// tracer is: a global setting, and per model the fields it sets apart from it.
pub mod settings {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    /// `trace_level`: `OFF`, or `TIMESTAMPS` (a span per request and per step, with their
    /// times). Triton's `TENSORS` is not served: spans carry no tensors.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Level {
        Off,
        Timestamps,
    }

    /// One setting's fields; `None` in a model's: the global one's.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Fields {
        pub level: Option<Level>,
        pub rate: Option<u32>,
        /// Traces still to take; -1: no limit.
        pub count: Option<i32>,
    }

    /// What an update does to one field: leave it, set it, or (a model's) clear it back to
    /// the global one.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub enum Change<T> {
        #[default]
        Keep,
        Set(T),
        Clear,
    }

    /// An update of a setting (a POST's fields).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Update {
        pub level: Change<Level>,
        pub rate: Change<u32>,
        pub count: Change<i32>,
    }

    /// A setting as it applies: the model's fields, else the global ones.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Effective {
        pub level: Level,
        pub rate: u32,
        pub count: i32,
    }

    struct State {
        global: Fields,
        models: HashMap<String, Fields>,
        /// Requests seen, per setting (`None`: the global one's), for `trace_rate`.
        seen: HashMap<Option<String>, u64>,
    }

    fn state() -> &'static Mutex<State> {
        static STATE: OnceLock<Mutex<State>> = OnceLock::new();
        STATE.get_or_init(|| {
            Mutex::new(State {
                // Traced as before the extension: every request, with no limit.
                global: Fields {
                    level: Some(Level::Timestamps),
                    rate: Some(1),
                    count: Some(-1),
                },
                models: HashMap::new(),
                seen: HashMap::new(),
            })
        })
    }

    fn effective(s: &State, model: Option<&str>) -> Effective {
        let own = model
            .and_then(|m| s.models.get(m))
            .copied()
            .unwrap_or_default();
        let g = s.global;
        Effective {
            level: own.level.or(g.level).unwrap_or(Level::Off),
            rate: own.rate.or(g.rate).unwrap_or(1),
            count: own.count.or(g.count).unwrap_or(-1),
        }
    }

    /// The setting that applies to `model` (`None`: the global one). The level is off while
    /// no spans are exported.
    pub fn get(model: Option<&str>) -> Effective {
        let s = state().lock().expect("not poisoned");
        let mut e = effective(&s, model);
        if !super::enabled() {
            e.level = Level::Off;
        }
        e
    }

    /// Applies `update` to `model`'s setting (`None`: the global one; a global field cannot
    /// be cleared, only set) and answers the setting that applies now.
    pub fn update(model: Option<&str>, update: Update) -> Effective {
        let mut s = state().lock().expect("not poisoned");
        let fields = match model {
            Some(m) => s.models.entry(m.to_owned()).or_default(),
            None => &mut s.global,
        };
        fn apply<T: Copy>(field: &mut Option<T>, change: Change<T>, global: bool) {
            match change {
                Change::Keep => {}
                Change::Set(v) => *field = Some(v),
                Change::Clear if !global => *field = None,
                Change::Clear => {}
            }
        }
        let global = model.is_none();
        apply(&mut fields.level, update.level, global);
        apply(&mut fields.rate, update.rate, global);
        apply(&mut fields.count, update.count, global);
        if let Some(m) = model
            && s.models.get(m) == Some(&Fields::default())
        {
            s.models.remove(m);
        }
        // A new rate counts from the next request.
        if update.rate != Change::Keep {
            s.seen.remove(&model.map(str::to_owned));
        }
        drop(s);
        get(model)
    }

    /// Whether a request for `model` is traced: spans are exported, its setting's level is
    /// not off, it is the first of each `trace_rate` requests, and `trace_count` has traces
    /// left (taking one).
    pub fn sample(model: &str) -> bool {
        if !super::enabled() {
            return false;
        }
        let mut s = state().lock().expect("not poisoned");
        let e = effective(&s, Some(model));
        if e.level == Level::Off || e.count == 0 {
            return false;
        }
        let own = s.models.get(model).copied().unwrap_or_default();
        let rate_key = own.rate.map(|_| model.to_owned());
        let seen = s.seen.entry(rate_key).or_insert(0);
        let take = (*seen).is_multiple_of(u64::from(e.rate.max(1)));
        *seen += 1;
        if take && e.count > 0 {
            let counted = match own.count {
                Some(_) => s.models.get_mut(model).and_then(|f| f.count.as_mut()),
                None => s.global.count.as_mut(),
            };
            if let Some(c) = counted {
                *c -= 1;
            }
        }
        take
    }
}
