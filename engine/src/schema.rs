//! The JSON Schema of graph files, composed from the spec types: the top level, flows, and
//! one variant per registered step kind (with the engine's own step fields where they apply).
//! Editors use it to complete and check graph YAML (`servegraph schema > graph.schema.json`).

use serde_json::{Map, Value, json};

use crate::graph::GraphFileSpec;
use crate::step::Registry;

/// The schema of a graph file for the kinds in `registry`.
pub fn graph_schema(registry: &Registry) -> Value {
    let mut defs = Map::new();
    let mut top = object_schema(schemars::schema_for!(GraphFileSpec).to_value(), &mut defs);
    top["properties"]["graph"] = json!({
        "description": "The graph: `kind: flow` (steps joined by `after`) or `kind: router` (one router).",
        "oneOf": [{"$ref": "#/$defs/flow"}, {"$ref": "#/$defs/router_graph"}]
    });
    let mut flow_steps = Vec::new();
    let mut steps = Vec::new();
    let mut members = Vec::new();
    for kind in registry.kinds() {
        let own = registry
            .schema(kind)
            .cloned()
            .unwrap_or_else(|| json!({"type": "object"}));
        flow_steps.extend(variants(kind, &own, Context::Flow, &mut defs));
        steps.extend(variants(kind, &own, Context::Route, &mut defs));
        members.extend(variants(kind, &own, Context::Member, &mut defs));
    }
    defs.insert("flow_step".into(), json!({"oneOf": flow_steps}));
    defs.insert("step".into(), json!({"oneOf": steps}));
    defs.insert("member".into(), json!({"oneOf": members}));
    defs.insert(
        "flow".into(),
        json!({
            "type": "object",
            "properties": {
                "kind": {"const": "flow"},
                "steps": {
                    "description": "Step name → step.",
                    "type": "object",
                    "additionalProperties": {"$ref": "#/$defs/flow_step"}
                }
            },
            "required": ["kind", "steps"],
            "additionalProperties": false
        }),
    );
    if let Some(router) = registry.schema("router") {
        let mut v = variants("router", router, Context::Route, &mut defs);
        if let Some(first) = v.pop() {
            defs.insert("router_graph".into(), first);
        }
    } else {
        defs.insert(
            "router_graph".into(),
            json!({"type": "object", "properties": {"kind": {"const": "router"}}}),
        );
    }
    let mut out = Map::new();
    out.insert(
        "$schema".into(),
        json!("https://json-schema.org/draft/2020-12/schema"),
    );
    out.insert("title".into(), json!("servegraph graph file"));
    if let Value::Object(top) = top {
        out.extend(top);
    }
    out.insert("$defs".into(), Value::Object(defs));
    Value::Object(out)
}

#[derive(Clone, Copy, PartialEq)]
enum Context {
    /// A step of a flow: may have `after`, `responder`, `timeout_ms`, `on_error`.
    Flow,
    /// A router's route: only its own fields.
    Route,
    /// An ensemble member: also `timeout_ms` and `dependency`.
    Member,
}

use crate::fields::embed as object_schema;

/// The kind's schema as one or more object variants, each with `kind` fixed and the fields
/// the context allows.
fn variants(kind: &str, own: &Value, ctx: Context, defs: &mut Map<String, Value>) -> Vec<Value> {
    let own = object_schema(own.clone(), defs);
    let objects: Vec<Value> = match own.get("oneOf") {
        Some(Value::Array(list)) => list.clone(),
        _ => vec![own],
    };
    objects
        .into_iter()
        .map(|mut o| {
            let open = o.get("properties").is_none();
            let mut props = o.get("properties").and_then(Value::as_object).cloned().unwrap_or_default();
            props.insert("kind".into(), json!({"const": kind}));
            if props.contains_key("routes") {
                let each = if kind == "ensemble" { "#/$defs/member" } else { "#/$defs/step" };
                props.insert(
                    "routes".into(),
                    json!({"type": "object", "description": "Name → step.", "additionalProperties": {"$ref": each}}),
                );
            }
            let timeout = json!({"type": "integer", "minimum": 1, "description": "Deadline in milliseconds."});
            match ctx {
                Context::Flow => {
                    props.insert(
                        "after".into(),
                        json!({"description": "Steps whose output this step takes.",
                               "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}),
                    );
                    props.insert("responder".into(), json!({"type": "boolean", "description": "This step's output is the response."}));
                    props.insert("timeout_ms".into(), timeout);
                    props.insert("on_error".into(), json!({"type": "string", "description": "The step that answers when this one fails."}));
                }
                Context::Member => {
                    props.insert("timeout_ms".into(), timeout);
                    props.insert("dependency".into(), json!({"enum": ["hard", "soft"]}));
                }
                Context::Route => {}
            }
            let mut required: Vec<Value> = o.get("required").and_then(Value::as_array).cloned().unwrap_or_default();
            required.insert(0, json!("kind"));
            o["type"] = json!("object");
            o["properties"] = Value::Object(props);
            o["required"] = Value::Array(required);
            o["additionalProperties"] = json!(open);
            o
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_become_variants_with_the_engine_fields() {
        let mut r = Registry::new();
        r.register(
            "noop",
            |_: &crate::StepNode, _: &mut crate::BuildContext| None,
        );
        r.set_schema(
            "noop",
            json!({"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"], "additionalProperties": false}),
        );
        let s = graph_schema(&r);
        let flow_step = &s["$defs"]["flow_step"]["oneOf"][0];
        assert_eq!(flow_step["properties"]["kind"], json!({"const": "noop"}));
        assert_eq!(flow_step["required"], json!(["kind", "x"]));
        assert!(flow_step["properties"]["after"].is_object());
        assert_eq!(flow_step["additionalProperties"], json!(false));
        let route = &s["$defs"]["step"]["oneOf"][0];
        assert!(route["properties"].get("after").is_none());
        assert_eq!(s["required"], json!(["name", "graph"]));
    }
}
