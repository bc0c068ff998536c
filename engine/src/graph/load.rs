//! Reading a graph file: YAML syntax, the top-level fields, and each step declared (built
//! by its kind's factory); then `compile`.

use std::path::Path;
use std::time::Duration;

use marked_yaml::types::MarkedScalarNode;
use marked_yaml::{LoaderOptions, Node, Span};

use crate::diag::{Diagnostic, GraphErrors, Location, one_of};
use crate::error::Result;
use crate::step::{BuildContext, BuildMode, Registry, Step, StepNode, from_yaml};

use super::*;

/// A step as declared in a flow, before compiling.
pub(super) struct Declared {
    pub(super) name: String,
    pub(super) span: Span,
    pub(super) after: Vec<(String, Span)>,
    pub(super) responder: bool,
    pub(super) timeout: Option<Duration>,
    pub(super) on_error: Option<(String, Span)>,
    pub(super) step: Option<Box<dyn Step>>,
}

impl Graph {
    /// Reads, validates and builds a graph file. With [`BuildMode::Load`] models are opened
    /// and tensors are checked along every edge. Every problem is reported, not just the first.
    pub fn load(path: &Path, registry: &Registry, mode: BuildMode) -> Result<Graph, GraphErrors> {
        Graph::load_with(path, registry, mode, &crate::repository::State::default())
    }

    /// [`Graph::load`] with the model repository's overlay: its loaded models become routes
    /// of the graph's router, its default versions answer requests that name none.
    pub fn load_with(
        path: &Path,
        registry: &Registry,
        mode: BuildMode,
        overlay: &crate::repository::State,
    ) -> Result<Graph, GraphErrors> {
        Graph::load_file(path, registry, mode, overlay, None)
    }

    /// [`Graph::load_with`] for a serving process that builds its graph again (a reload, a
    /// change of the model repository): steps whose settings did not change take again what
    /// the builds before made, from `shelf` (Python models keep their workers, routers their
    /// learning).
    pub fn load_kept(
        path: &Path,
        registry: &Registry,
        mode: BuildMode,
        overlay: &crate::repository::State,
        shelf: &crate::loading::Shelf,
    ) -> Result<Graph, GraphErrors> {
        Graph::load_file(path, registry, mode, overlay, Some(shelf))
    }

    /// Reads the graph file at `path` and builds it (relative paths under its folder).
    fn load_file(
        path: &Path,
        registry: &Registry,
        mode: BuildMode,
        overlay: &crate::repository::State,
        shelf: Option<&crate::loading::Shelf>,
    ) -> Result<Graph, GraphErrors> {
        let source = std::fs::read_to_string(path).map_err(|e| {
            GraphErrors::new(
                path,
                "",
                vec![Diagnostic::new(format!("cannot read the graph file: {e}"))],
            )
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Graph::build(&source, base, registry, mode, overlay, shelf)
            .0
            .map_err(|d| GraphErrors::new(path, &source, d))
    }

    /// Like [`Graph::load`], from YAML text; relative model paths resolve under `base_dir`.
    pub fn from_yaml(
        source: &str,
        base_dir: &Path,
        registry: &Registry,
        mode: BuildMode,
    ) -> Result<Graph, Vec<Diagnostic>> {
        Graph::from_yaml_with(source, base_dir, registry, mode, &Default::default())
    }

    /// [`Graph::from_yaml`] with the model repository's overlay.
    pub fn from_yaml_with(
        source: &str,
        base_dir: &Path,
        registry: &Registry,
        mode: BuildMode,
        overlay: &crate::repository::State,
    ) -> Result<Graph, Vec<Diagnostic>> {
        Graph::build(source, base_dir, registry, mode, overlay, None).0
    }

    /// The Kafka topics a graph file uses, as far as its structure reads: those of the parts
    /// that build even when others do not (so `validate` reports a missing topic with the
    /// file's other errors). Empty when the file cannot be read or parsed.
    pub fn kafka_topics_in(
        path: &Path,
        registry: &Registry,
        overlay: &crate::repository::State,
    ) -> super::sources::KafkaUses {
        let Ok(source) = std::fs::read_to_string(path) else {
            return Default::default();
        };
        let base = path.parent().unwrap_or(Path::new("."));
        Graph::build(
            &source,
            base,
            registry,
            BuildMode::Structural,
            overlay,
            None,
        )
        .1
    }

    /// The graph (or every problem), and the Kafka topics it uses as far as it builds.
    fn build(
        source: &str,
        base_dir: &Path,
        registry: &Registry,
        mode: BuildMode,
        overlay: &crate::repository::State,
        shelf: Option<&crate::loading::Shelf>,
    ) -> (Result<Graph, Vec<Diagnostic>>, super::sources::KafkaUses) {
        // Phase 1: YAML syntax.
        // Quoted scalars are strings (`""` is no null, `"5"` no number), as YAML says.
        let options = LoaderOptions::default()
            .error_on_duplicate_keys(true)
            .prevent_coercion(true);
        let mut root = match marked_yaml::parse_yaml_with_options(0, source, options) {
            Ok(root) => root,
            Err(e) => return (Err(vec![load_error(e)]), Default::default()),
        };
        let mut ctx = BuildContext::new(registry, base_dir, mode);
        if let Some(shelf) = shelf {
            ctx.keep_on(shelf);
        }
        let (added, problems) = overlay.apply(&mut root);
        ctx.set_repository_routes(added);
        for d in problems {
            ctx.report(d);
        }

        // Phase 2: the top-level fields.
        let top_span = *root.span();
        let spec = match from_yaml::<GraphFileSpec>(&root, &top_span, "a graph file", &[]) {
            Ok(spec) => Some(spec),
            Err(problems) => {
                for d in problems {
                    ctx.report(d);
                }
                None
            }
        };
        let Some(root) = root.as_mapping() else {
            return (Err(ctx.into_diagnostics()), Default::default());
        };
        let Some(graph) = root.get_node("graph") else {
            return (Err(ctx.into_diagnostics()), Default::default());
        };
        let name = root
            .get_scalar("name")
            .map(|n| (n.as_str().to_owned(), *n.span()));
        if let Some((name, span)) = &name {
            check_name(&mut ctx, name, span);
        }
        let graph_name = name.as_ref().map(|(n, _)| n.clone()).unwrap_or_default();

        // Phase 3: the steps, each built by its kind's factory.
        let declared = declare_steps(&mut ctx, &graph_name, graph);
        // Models began loading as their steps were declared: all at once.
        ctx.finish_loads();
        // A top-level field that does not parse (reported above) must not hide the graph's
        // own problems (a cycle, a dangling `after`): those are checked with the defaults.
        let spec_ok = spec.is_some();
        let spec = spec.unwrap_or_else(|| GraphFileSpec {
            name: graph_name.clone(),
            description: None,
            graph: serde::de::IgnoredAny,
            timeout_ms: super::spec::default_timeout_ms(),
            max_in_flight: super::spec::default_max_in_flight(),
            max_tensor_elements: super::spec::default_max_tensor_elements(),
            on_error: root.get_scalar("on_error").map(|h| h.as_str().to_owned()),
            tracking: None,
            monitor: None,
            sources: None,
            telemetry: None,
            create_topics: None,
        });
        // Where a top-level field is (for its errors).
        let field_span = |name: &str| root.get_node(name).map(|n| *n.span()).unwrap_or(top_span);
        if spec.max_in_flight == 0 {
            let span = field_span("max_in_flight");
            ctx.report(Diagnostic::new("`max_in_flight` must be at least 1").at(&span));
        }

        let tracking = match &spec.tracking {
            None => None,
            Some(t) => {
                let span = field_span("tracking");
                let contained = |sink: crate::tracking::Sink| match &sink {
                    // A file is written where the graph says: under the same roots as models.
                    crate::tracking::Sink::File(path) => {
                        let folder = match path.parent() {
                            Some(p) if !p.as_os_str().is_empty() => p,
                            _ => Path::new("."),
                        };
                        ctx.check_model_path(folder)
                            .map(|_| sink.clone())
                            .map_err(|why| {
                                format!("the file {} is not allowed: {why}", path.display())
                            })
                    }
                    _ => Ok(sink),
                };
                match t
                    .check()
                    .and_then(|_| crate::tracking::Sink::parse(&t.sink, base_dir))
                    .and_then(contained)
                {
                    Ok(sink) => Some((t.clone(), sink)),
                    Err(e) => {
                        ctx.report(Diagnostic::new(format!("tracking: {e}")).at(&span));
                        None
                    }
                }
            }
        };

        let monitor = spec.monitor.as_ref().and_then(|m| {
            let node = root.get_node("monitor")?;
            let mut ok = true;
            for (path, msg) in m.check() {
                ok = false;
                let span = crate::monitor::span_at(node, &path);
                ctx.report(Diagnostic::new(format!("monitor.{path}: {msg}")).at(&span));
            }
            if let Some(file) = &m.reference.profile
                && let Err(e) = crate::monitor::Profile::read(&base_dir.join(file))
            {
                ok = false;
                let span = crate::monitor::span_at(node, "reference.profile");
                ctx.report(Diagnostic::new(format!("monitor.reference.profile: {e}")).at(&span));
            }
            ok.then(|| (m.clone(), base_dir.to_owned()))
        });

        for (source, e) in spec.sources.as_ref().map(|s| s.check()).unwrap_or_default() {
            let span = field_span("sources");
            ctx.report(Diagnostic::new(format!("sources.{source}: {e}")).at(&span));
        }
        if let Some(Err(e)) = spec.create_topics.as_ref().map(|c| c.check()) {
            let span = field_span("create_topics");
            ctx.report(Diagnostic::new(format!("create_topics: {e}")).at(&span));
        }
        let kafka_topics = kafka_topics(&spec, tracking.as_ref(), &field_span, &mut ctx);
        if let Some(t) = &spec.telemetry
            && let Err(e) = t.check()
        {
            let span = field_span("telemetry");
            ctx.report(Diagnostic::new(format!("telemetry: {e}")).at(&span));
        }

        // Phase 4: edges, cycles and the responder; then tensors along the edges.
        let default_on_error = spec.on_error.clone().map(|h| {
            let span = root
                .get_node("on_error")
                .map(|n| *n.span())
                .unwrap_or(top_span);
            (h, span)
        });
        if let Some((_, span)) = &default_on_error
            && graph
                .as_mapping()
                .and_then(|g| g.get_scalar("kind"))
                .map(|k| k.as_str())
                != Some("flow")
        {
            ctx.report(
                Diagnostic::new("`on_error` names a step of a flow; this graph is not a flow")
                    .at(span),
            );
        }
        let uses = super::sources::KafkaUses {
            topics: kafka_topics.clone(),
            create_topics: spec.create_topics,
        };
        let graph = compile(&mut ctx, spec, declared, default_on_error).map(|mut g| {
            g.tracking = tracking;
            g.monitor = monitor;
            g.kafka_topics = kafka_topics;
            g.learners = g.find_learners();
            g.repository = overlay.clone();
            g
        });
        if ctx.has_errors() || !spec_ok {
            return (Err(ctx.into_diagnostics()), uses);
        }
        (graph.ok_or_else(|| ctx.into_diagnostics()), uses)
    }
}

/// Every Kafka topic a graph file uses: its Kafka source's (with the source's librdkafka
/// settings), its tracking stream's, then its steps' (queue steps, shared learning).
fn kafka_topics(
    spec: &GraphFileSpec,
    tracking: Option<&(crate::tracking::TrackingSpec, crate::tracking::Sink)>,
    field_span: &dyn Fn(&str) -> marked_yaml::Span,
    ctx: &mut BuildContext,
) -> Vec<crate::step::KafkaTopic> {
    let mut topics = Vec::new();
    if let Some(k) = spec.sources.as_ref().and_then(|s| s.kafka.as_ref()) {
        let options: Vec<(String, String)> = k
            .options
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (field, topic) in k.topics() {
            topics.push(crate::step::KafkaTopic {
                brokers: k.brokers.clone(),
                topic: topic.to_owned(),
                used_by: format!("`sources.kafka.{field}`"),
                options: options.clone(),
                span: Some(field_span("sources")),
            });
        }
    }
    if let Some((_, crate::tracking::Sink::Kafka { brokers, topic })) = tracking {
        topics.push(crate::step::KafkaTopic {
            brokers: brokers.clone(),
            topic: topic.clone(),
            used_by: "the tracking sink".into(),
            options: Vec::new(),
            span: Some(field_span("tracking")),
        });
    }
    topics.extend(ctx.take_kafka_topics());
    topics
}

pub(super) fn load_error(e: marked_yaml::LoadError) -> Diagnostic {
    use marked_yaml::LoadError as L;
    let at = |m: &marked_yaml::Marker| Location {
        line: m.line(),
        column: m.column(),
    };
    let (message, location) = match &e {
        L::TopLevelMustBeMapping(m) => ("the graph file must be a YAML mapping".to_owned(), at(m)),
        L::TopLevelMustBeSequence(m) => ("unexpected top-level sequence".to_owned(), at(m)),
        L::UnexpectedAnchor(m) => ("YAML anchors are not supported here".to_owned(), at(m)),
        L::MappingKeyMustBeScalar(m) => ("mapping keys must be plain names".to_owned(), at(m)),
        L::UnexpectedTag(m) => ("YAML tags are not supported here".to_owned(), at(m)),
        L::ScanError(m, err) => (format!("invalid YAML: {}", err.info()), at(m)),
        L::DuplicateKey(inner) => {
            let first = inner.prev_key.span().start().map(at);
            let here = inner
                .key
                .span()
                .start()
                .map(at)
                .unwrap_or(Location { line: 0, column: 0 });
            let mut d = Diagnostic::new(format!("duplicate key `{}`", inner.key.as_str()));
            d.location = Some(here);
            if let Some(f) = first {
                d.help = Some(format!(
                    "first defined at line {}, column {}",
                    f.line, f.column
                ));
            }
            return d;
        }
    };
    let mut d = Diagnostic::new(message);
    d.location = Some(location);
    d
}

/// Names address models in URLs: letters, digits, `-`, `_`, `.`; a route may add `:version`.
pub(super) fn check_name(ctx: &mut BuildContext, name: &str, span: &Span) {
    let (base, version) = match name.split_once(':') {
        Some((b, v)) => (b, Some(v)),
        None => (name, None),
    };
    let ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if !ok(base) || version.is_some_and(|v| !ok(v)) {
        ctx.report(
            Diagnostic::new(format!("invalid name `{name}`"))
                .at(span)
                .help("use letters, digits, `-`, `_` and `.`, optionally `name:version`"),
        );
    }
}

/// Reads the `graph:` node into declared steps, building each one.
pub(super) fn declare_steps(
    ctx: &mut BuildContext,
    graph_name: &str,
    graph: &Node,
) -> Vec<Declared> {
    let Some(map) = graph.as_mapping() else {
        ctx.report(Diagnostic::new("`graph` must be a mapping with a `kind`").at(graph.span()));
        return Vec::new();
    };
    const KINDS: [&str; 2] = ["flow", "router"];
    match map.get_scalar("kind").map(|k| k.as_str()) {
        Some("flow") => {
            for key in map.keys() {
                if !matches!(
                    key.as_str(),
                    "kind" | "steps" | "engine" | "default_final_step"
                ) {
                    ctx.report(
                        Diagnostic::new(format!(
                            "unknown field `{}` for a flow graph",
                            key.as_str()
                        ))
                        .at(key.span())
                        .help("expected `kind`, `steps`, `engine` or `default_final_step`"),
                    );
                }
            }
            // MLRun's flow fields: `engine` (sync or async: servegraph runs every flow's
            // independent branches concurrently either way) and `default_final_step` (the
            // step whose answer is the flow's: `responder: true` on it).
            if let Some(engine) = map.get_node("engine")
                && !matches!(
                    engine.as_scalar().map(|e| e.as_str()),
                    Some("sync" | "async")
                )
            {
                ctx.report(
                    Diagnostic::new("`engine` must be `sync` or `async` (MLRun's flow engines)")
                        .at(engine.span()),
                );
            }
            let final_step = map.get_scalar("default_final_step");
            let Some(steps) = map.get_node("steps") else {
                ctx.report(Diagnostic::new("a flow graph needs `steps`").at(map.span()));
                return Vec::new();
            };
            let Some(steps) = steps.as_mapping() else {
                ctx.report(
                    Diagnostic::new("`steps` must be a mapping of step name to step")
                        .at(steps.span()),
                );
                return Vec::new();
            };
            if steps.is_empty() {
                ctx.report(
                    Diagnostic::new("a flow graph needs at least one step").at(steps.span()),
                );
            }
            let mut declared: Vec<Declared> = steps
                .iter()
                .map(|(key, value)| declare_flow_step(ctx, key, value))
                .collect();
            if let Some(name) = final_step {
                match declared.iter_mut().find(|d| d.name == name.as_str()) {
                    Some(d) => d.responder = true,
                    None => ctx.report(
                        Diagnostic::new(format!(
                            "`default_final_step` names `{}`, which is not a step of the flow",
                            name.as_str()
                        ))
                        .at(name.span()),
                    ),
                }
            }
            declared
        }
        Some("router") => {
            // The short form: the graph is one router step named after the graph.
            ctx.claim_router_graph(graph_name, map.span());
            let mut body = map.clone();
            body.remove(&MarkedScalarNode::new(Span::new_blank(), "kind"));
            let node = StepNode {
                name: graph_name.to_owned(),
                kind: "router".to_owned(),
                span: *map.span(),
                body,
            };
            let step = ctx.build_node(&node);
            vec![Declared {
                name: graph_name.to_owned(),
                span: *map.span(),
                after: Vec::new(),
                responder: true,
                timeout: None,
                on_error: None,
                step,
            }]
        }
        other => {
            let span = map
                .get_node("kind")
                .map(|k| *k.span())
                .unwrap_or(*map.span());
            let (message, help) = match other {
                Some(k) => (
                    format!("unknown graph kind `{k}`"),
                    crate::fields::suggest(k, &KINDS),
                ),
                None => (
                    "missing field `kind` in `graph`".to_owned(),
                    format!("expected one of {}", one_of(&KINDS)),
                ),
            };
            ctx.report(Diagnostic::new(message).at(&span).help(help));
            Vec::new()
        }
    }
}

pub(super) fn declare_flow_step(
    ctx: &mut BuildContext,
    key: &MarkedScalarNode,
    value: &Node,
) -> Declared {
    let name = key.as_str().to_owned();
    check_name(ctx, &name, key.span());
    let mut fields = FlowFields::default();
    let mut after = Vec::new();
    if let Some(map) = value.as_mapping() {
        // Only the engine's fields; the kind's factory checks the rest.
        let mut own = marked_yaml::types::MarkedMappingNode::new_empty(*map.span());
        for (k, v) in map.iter() {
            if matches!(k.as_str(), "responder" | "timeout_ms" | "on_error") {
                own.insert(k.clone(), v.clone());
            }
        }
        match from_yaml::<FlowFields>(&Node::Mapping(own), key.span(), "a step", &[]) {
            Ok(f) => fields = f,
            Err(problems) => {
                ctx.report_in(&name, problems);
            }
        }
        // `after: a` or `after: [a, b]`.
        match map.get_node("after") {
            None => {}
            Some(Node::Scalar(a)) => after.push((a.as_str().to_owned(), *a.span())),
            Some(Node::Sequence(list)) if list.iter().all(|a| a.as_scalar().is_some()) => {
                after.extend(
                    list.iter()
                        .filter_map(Node::as_scalar)
                        .map(|a| (a.as_str().to_owned(), *a.span())),
                );
            }
            Some(other) => ctx.error(
                &name,
                other.span(),
                "`after` must be a step name or a list of step names",
            ),
        }
    }
    if fields.timeout_ms == Some(0) {
        ctx.error(&name, key.span(), "`timeout_ms` must be at least 1");
    }
    let step = ctx
        .step_node(key, value, true)
        .and_then(|node| ctx.build_node(&node));
    Declared {
        name,
        span: *key.span(),
        after,
        responder: fields.responder,
        timeout: fields
            .timeout_ms
            .filter(|&t| t > 0)
            .map(Duration::from_millis),
        on_error: fields.on_error.map(|h| (String::clone(&h), *h.span())),
        step,
    }
}
