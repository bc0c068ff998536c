//! Child steps under `routes:`, shared by routers and ensembles.

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{Node, Span};
use servegraph_engine::diag::Diagnostic;
use servegraph_engine::{BuildContext, ModelInfo, Signature, Step, StepNode, TensorMeta};

/// A named child step. A route key `name:version` names a version of model `name`.
pub struct Route {
    /// The key as written (`iris-lr` or `iris-lr:v2`).
    pub key: String,
    pub name: String,
    pub version: Option<String>,
    pub step: std::sync::Arc<dyn Step>,
    /// The member-level fields the parent asked for (see [`build_routes`]), as written.
    pub extra: MarkedMappingNode,
}

impl Route {
    /// This route as an addressable model, then whatever its step makes addressable.
    pub fn models(&self) -> Vec<ModelInfo> {
        let inputs = self.step.takes(None).unwrap_or_default();
        let outputs = self
            .step
            .infer(&Signature::exact(inputs.clone()))
            .map(|s| s.tensors)
            .unwrap_or_default();
        let mut out = vec![ModelInfo {
            name: self.name.clone(),
            version: self.version.clone(),
            platform: self.step.platform(),
            inputs,
            outputs,
            max_batch_size: self.step.model().map_or(0, |m| m.max_batch_size()),
        }];
        out.extend(self.step.models());
        out
    }
}

/// Builds every child under `routes:`; reports each problem and returns `None` if any.
/// `member_fields` are fields the parent reads on each child itself (an ensemble's
/// `timeout_ms`, `dependency`): they are taken off before the child is built and kept in
/// [`Route::extra`].
pub fn build_routes(
    node: &StepNode,
    ctx: &mut BuildContext,
    member_fields: &[&str],
) -> Option<Vec<Route>> {
    let Some(routes) = node.body.get_node("routes") else {
        ctx.report(
            Diagnostic::new(format!("a `{}` step needs `routes`", node.kind))
                .step(&node.name)
                .at(&node.span)
                .help("routes: {name: {kind: model, ...}, ...}"),
        );
        return None;
    };
    // Anything but a mapping was reported by the kind's field checks (its spec's schema says
    // `routes` is a mapping), which run first: one error for one mistake.
    let map = routes.as_mapping()?;
    if map.is_empty() {
        ctx.error(
            &node.name,
            routes.span(),
            "`routes` must have at least one route",
        );
        return None;
    }
    let mut out = Vec::with_capacity(map.len());
    let mut failed = false;
    for (key, value) in map.iter() {
        let mut extra = MarkedMappingNode::new_empty(*value.span());
        let mut value = value.clone();
        if let Node::Mapping(m) = &mut value {
            for field in member_fields {
                let k = MarkedScalarNode::new(Span::new_blank(), *field);
                if let Some(v) = m.remove(&k) {
                    extra.insert(MarkedScalarNode::new(*v.span(), *field), v);
                }
            }
        }
        match ctx.build_child(key, &value) {
            Some(step) => {
                let (name, version) = match key.as_str().split_once(':') {
                    Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
                    None => (key.as_str().to_owned(), None),
                };
                out.push(Route {
                    key: key.as_str().to_owned(),
                    name,
                    version,
                    step: step.into(),
                    extra,
                });
            }
            None => failed = true,
        }
    }
    (!failed).then_some(out)
}

/// The inputs every route agrees on, if they agree.
pub fn common_inputs<'a>(routes: impl IntoIterator<Item = &'a Route>) -> Option<Vec<TensorMeta>> {
    let mut routes = routes.into_iter();
    let first = routes.next()?.step.inputs()?;
    routes
        .all(|r| r.step.inputs().as_ref() == Some(&first))
        .then_some(first)
}

/// Infers each route's output; reports the first route that cannot take the input.
pub fn infer_each<'a>(
    routes: impl IntoIterator<Item = &'a Route>,
    input: &Signature,
) -> Result<Vec<Signature>, String> {
    routes
        .into_iter()
        .map(|r| {
            r.step
                .infer(input)
                .map_err(|e| format!("route `{}`: {e}", r.key))
        })
        .collect()
}

/// What is certainly present whichever route ran: the tensors all routes give alike.
pub fn intersect(sigs: Vec<Signature>) -> Signature {
    sigs.into_iter()
        .reduce(Signature::intersect)
        .unwrap_or_else(Signature::open)
}
