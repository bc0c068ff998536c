//! Field checks driven by the JSON Schema of a spec: every field of a node is checked against
//! the schema `servegraph schema` publishes, so `validate` and an editor agree on what is
//! valid by construction. Each problem is one diagnostic with the caret on the bad value,
//! in words (`` `timeout_ms` must be an integer ≥ 1, found the string "fast" ``), with "did
//! you mean" for near-miss fields and values.
//!
//! Tagged variants (`class: onnx | remote`, `policy: {type: ...}`) are `oneOf` branches that
//! fix one property with `const`: the value picks the branch, so a field that belongs to
//! another variant is an error naming the variant and what it accepts.

use marked_yaml::{Node, Span};
use serde_json::{Map, Value};

use crate::diag::{Diagnostic, one_of};

/// Checks `node` (`what` it is, for messages: "a `model` step") against `schema` (whose
/// `$ref`s point into `defs`); `extra` are fields the engine takes besides the schema's own
/// at the top (they are accepted and listed in hints).
pub fn check(
    node: &Node,
    schema: &Value,
    defs: &Map<String, Value>,
    what: &str,
    extra: &[&str],
) -> Vec<Diagnostic> {
    check_at(node, schema, defs, what, extra, "")
}

/// [`check`] for a node at `path` (`policy`): messages name fields from there.
pub fn check_at(
    node: &Node,
    schema: &Value,
    defs: &Map<String, Value>,
    what: &str,
    extra: &[&str],
    path: &str,
) -> Vec<Diagnostic> {
    let mut checker = Checker {
        defs,
        extra,
        what,
        out: Vec::new(),
    };
    checker.node(node, schema, path, true);
    checker.out
}

/// The closest of `candidates` to `word`, when it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// The names of an object schema's fields.
pub fn field_names(schema: &Value) -> Vec<String> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// A schemars schema ready to sit inside another: without its `$schema` and `title`, its
/// `$defs` moved into `defs` (where the outer schema keeps them).
pub fn embed(mut schema: Value, defs: &mut Map<String, Value>) -> Value {
    if let Value::Object(m) = &mut schema {
        m.remove("$schema");
        m.remove("title");
        if let Some(Value::Object(d)) = m.remove("$defs") {
            defs.extend(d);
        }
    }
    schema
}

/// The schema of specs chosen by a `tag` field (`class: onnx | remote`): one object branch
/// per variant, the variant's own schema with `tag` fixed to its name.
pub fn tagged_schema(tag: &str, variants: Vec<(&str, Value)>) -> Value {
    let mut defs = Map::new();
    let branches: Vec<Value> = variants
        .into_iter()
        .map(|(name, schema)| {
            let mut schema = embed(schema, &mut defs);
            if let Value::Object(m) = &mut schema {
                let props = m
                    .entry("properties")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(p) = props {
                    let mut fixed = Map::new();
                    fixed.insert(tag.to_owned(), serde_json::json!({"const": name}));
                    fixed.extend(std::mem::take(p));
                    *p = fixed;
                }
                let required = m
                    .entry("required")
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(r) = required {
                    r.insert(0, Value::String(tag.to_owned()));
                }
            }
            schema
        })
        .collect();
    let mut out = Map::new();
    out.insert("oneOf".into(), Value::Array(branches));
    if !defs.is_empty() {
        out.insert("$defs".into(), Value::Object(defs));
    }
    Value::Object(out)
}

/// `help` prefixed with "did you mean `x`? " when one of `candidates` is close to `word`.
pub fn with_guess(word: &str, candidates: &[&str], help: String) -> String {
    match did_you_mean(word, candidates.iter().copied()) {
        Some(near) => format!("did you mean `{near}`? {help}"),
        None => help,
    }
}

/// A `help` that suggests the nearest candidate, else lists them all.
pub fn suggest(word: &str, candidates: &[&str]) -> String {
    match did_you_mean(word, candidates.iter().copied()) {
        Some(near) => format!(
            "did you mean `{near}`? expected one of {}",
            one_of(candidates)
        ),
        None => format!("expected one of {}", one_of(candidates)),
    }
}

struct Checker<'a> {
    defs: &'a Map<String, Value>,
    extra: &'a [&'a str],
    what: &'a str,
    out: Vec<Diagnostic>,
}

/// What a YAML scalar reads as, as serde would take it.
#[derive(Debug, PartialEq)]
enum Scalar<'a> {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(&'a str),
}

fn scalar(s: &marked_yaml::types::MarkedScalarNode) -> Scalar<'_> {
    let text = s.as_str();
    if !s.may_coerce() {
        return Scalar::Str(text);
    }
    if matches!(text, "" | "~" | "null" | "Null" | "NULL") {
        return Scalar::Null;
    }
    if let Some(b) = s.as_bool() {
        return Scalar::Bool(b);
    }
    if let Ok(i) = text.parse::<i128>() {
        return Scalar::Int(i);
    }
    if let Ok(f) = text.parse::<f64>()
        && f.is_finite()
    {
        return Scalar::Float(f);
    }
    Scalar::Str(text)
}

/// A YAML node as JSON, its scalars typed as serde would read them (unquoted `2.0` a number,
/// `true` a bool, `~` null, quoted text a string): for free-form fields such as a Python
/// model's `class_args`, which YAML-to-serde would otherwise hand over as strings.
pub fn to_json(node: &Node) -> serde_json::Value {
    use serde_json::Value;
    match node {
        Node::Scalar(s) => match scalar(s) {
            Scalar::Null => Value::Null,
            Scalar::Bool(b) => Value::Bool(b),
            Scalar::Int(i) => i64::try_from(i)
                .map(Value::from)
                .or_else(|_| u64::try_from(i).map(Value::from))
                .unwrap_or_else(|_| Value::from(i as f64)),
            Scalar::Float(f) => Value::from(f),
            Scalar::Str(t) => Value::from(t),
        },
        Node::Sequence(items) => Value::Array(items.iter().map(to_json).collect()),
        Node::Mapping(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.as_str().to_owned(), to_json(v)))
                .collect(),
        ),
    }
}

/// The node, in words: `the string "fast"`, `the number 3`, `a list`.
fn found(node: &Node) -> String {
    match node {
        Node::Scalar(s) => match scalar(s) {
            Scalar::Null => "nothing (null)".into(),
            Scalar::Bool(b) => format!("`{b}`"),
            Scalar::Int(i) => format!("the number {i}"),
            Scalar::Float(f) => format!("the number {f}"),
            Scalar::Str(t) => format!("the string {t:?}"),
        },
        Node::Sequence(_) => "a list".into(),
        Node::Mapping(_) => "a mapping".into(),
    }
}

fn types_of(schema: &Value) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn number(schema: &Value, key: &str) -> Option<f64> {
    schema.get(key).and_then(Value::as_f64)
}

/// A bound in words: `≥ 1`, `between 0 and 1`.
fn bounds(schema: &Value, integer: bool) -> String {
    let show = |x: f64| {
        if integer || x.fract() == 0.0 {
            format!("{}", x as i128)
        } else {
            format!("{x}")
        }
    };
    let (lo, hi) = (number(schema, "minimum"), number(schema, "maximum"));
    let (xlo, xhi) = (
        number(schema, "exclusiveMinimum"),
        number(schema, "exclusiveMaximum"),
    );
    match (lo, hi, xlo, xhi) {
        (Some(l), Some(h), _, _) => format!(" between {} and {}", show(l), show(h)),
        (_, Some(h), Some(l), _) => format!(" > {} and ≤ {}", show(l), show(h)),
        // `minimum: 0` on unsigned integers says nothing a user needs to hear.
        (Some(l), None, None, None) if l != 0.0 || !integer => format!(" ≥ {}", show(l)),
        (_, None, Some(l), None) => format!(" > {}", show(l)),
        (None, Some(h), None, None) => format!(" ≤ {}", show(h)),
        _ => String::new(),
    }
}

/// The values an enum-like schema allows, if it is one (`enum`, or `oneOf` of `const`s).
fn enum_values(schema: &Value) -> Option<Vec<String>> {
    if let Some(Value::Array(values)) = schema.get("enum") {
        return Some(values.iter().map(display_value).collect());
    }
    if let Some(c) = schema.get("const") {
        return Some(vec![display_value(c)]);
    }
    let branches = schema
        .get("oneOf")
        .or_else(|| schema.get("anyOf"))?
        .as_array()?;
    let mut all = Vec::new();
    for b in branches {
        all.extend(enum_values(b)?);
    }
    Some(all)
}

fn display_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// In words, what a schema wants: `an integer ≥ 1`, `a list of numbers`, `one of `a`, `b``.
fn wants(schema: &Value) -> String {
    if let Some(values) = enum_values(schema) {
        let v: Vec<&str> = values.iter().map(String::as_str).collect();
        return one_of(&v);
    }
    let types = types_of(schema);
    let words: Vec<String> = types
        .iter()
        .filter(|t| **t != "null")
        .map(|t| match *t {
            "integer" => format!("an integer{}", bounds(schema, true)),
            "number" => format!("a number{}", bounds(schema, false)),
            "string" => "a string".to_owned(),
            "boolean" => "true or false".to_owned(),
            "array" => match schema.get("items") {
                Some(items) if !types_of(items).is_empty() => {
                    format!("a list of {}", plural(&wants(items)))
                }
                _ => "a list".to_owned(),
            },
            "object" => "a mapping".to_owned(),
            other => other.to_owned(),
        })
        .collect();
    if words.is_empty() {
        return "a valid value".into();
    }
    words.join(" or ")
}

fn plural(w: &str) -> String {
    let w = w
        .strip_prefix("an ")
        .or_else(|| w.strip_prefix("a "))
        .unwrap_or(w);
    match w.split_once(' ') {
        Some((noun, rest)) => format!("{noun}s {rest}"),
        None => format!("{w}s"),
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

/// `schema`, its `$ref`s followed.
fn resolve<'v>(defs: &'v Map<String, Value>, schema: &'v Value) -> &'v Value {
    let mut s = schema;
    for _ in 0..32 {
        match s.get("$ref").and_then(Value::as_str) {
            Some(r) => match r.strip_prefix("#/$defs/").and_then(|name| defs.get(name)) {
                Some(target) => s = target,
                None => return s,
            },
            None => return s,
        }
    }
    s
}

impl<'a> Checker<'a> {
    fn error(&mut self, span: &Span, message: String, help: Option<String>) {
        let mut d = Diagnostic::new(message).at(span);
        if let Some(h) = help {
            d = d.help(h);
        }
        self.out.push(d);
    }

    fn resolve<'v>(&self, schema: &'v Value) -> &'v Value
    where
        'a: 'v,
    {
        resolve(self.defs, schema)
    }

    /// Whether `node` satisfies `schema`, without reporting.
    fn fits(&self, node: &Node, schema: &Value) -> bool {
        let mut probe = Checker {
            defs: self.defs,
            extra: &[],
            what: self.what,
            out: Vec::new(),
        };
        probe.node(node, schema, "", false);
        probe.out.is_empty()
    }

    fn node(&mut self, node: &Node, schema: &Value, path: &str, top: bool) {
        let schema = self.resolve(schema);
        if schema == &Value::Bool(true) || schema.as_object().is_some_and(|m| m.is_empty()) {
            return;
        }
        let name = if path.is_empty() {
            "the value".to_owned()
        } else {
            format!("`{path}`")
        };
        // Enums: a name from a fixed list.
        if let Some(values) = enum_values(schema)
            && types_of(schema).iter().all(|t| *t == "string")
        {
            let text = match node {
                Node::Scalar(s) => Some(s.as_str()),
                _ => None,
            };
            let ok = text.is_some_and(|t| values.iter().any(|v| v == t));
            if !ok {
                let v: Vec<&str> = values.iter().map(String::as_str).collect();
                let (message, help) = match text {
                    Some(t) => (
                        format!("{name} must be one of {}, found `{t}`", one_of(&v)),
                        did_you_mean(t, v.iter().copied()).map(|n| format!("did you mean `{n}`?")),
                    ),
                    None => (
                        format!(
                            "{name} must be one of {}, found {}",
                            one_of(&v),
                            found(node)
                        ),
                        None,
                    ),
                };
                self.error(node.span(), message, help);
            }
            return;
        }
        if let Some(branches) = schema
            .get("oneOf")
            .or_else(|| schema.get("anyOf"))
            .and_then(Value::as_array)
        {
            self.branches(node, schema, branches, path, top);
            return;
        }
        let types = types_of(schema);
        if types.is_empty() {
            if schema.get("properties").is_some() {
                self.object(node, schema, path, top);
            }
            return;
        }
        let nullable = types.contains(&"null");
        match node {
            Node::Scalar(s) => {
                let value = scalar(s);
                let ok = match value {
                    Scalar::Null => nullable || types.contains(&"string"),
                    Scalar::Bool(_) => types.contains(&"boolean") || types.contains(&"string"),
                    Scalar::Int(i) => {
                        if types.contains(&"integer") || types.contains(&"number") {
                            self.in_range(
                                node,
                                schema,
                                i as f64,
                                &name,
                                types.contains(&"integer"),
                            );
                            true
                        } else {
                            types.contains(&"string")
                        }
                    }
                    Scalar::Float(f) => {
                        if types.contains(&"number") {
                            self.in_range(node, schema, f, &name, false);
                            true
                        } else {
                            types.contains(&"string")
                        }
                    }
                    Scalar::Str(_) => types.contains(&"string"),
                };
                if !ok {
                    self.error(
                        node.span(),
                        format!("{name} must be {}, found {}", wants(schema), found(node)),
                        None,
                    );
                }
            }
            Node::Sequence(seq) => {
                if !types.contains(&"array") {
                    self.error(
                        node.span(),
                        format!("{name} must be {}, found {}", wants(schema), found(node)),
                        None,
                    );
                    return;
                }
                let len = seq.len();
                if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                    && (len as u64) < min
                {
                    self.error(
                        node.span(),
                        format!("{name} must have at least {min} item(s), found {len}"),
                        None,
                    );
                }
                if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                    && (len as u64) > max
                {
                    self.error(
                        node.span(),
                        format!("{name} must have at most {max} item(s), found {len}"),
                        None,
                    );
                }
                if let Some(items) = schema.get("items") {
                    for (i, item) in seq.iter().enumerate() {
                        self.node(
                            item,
                            items,
                            &format!("{}[{i}]", if path.is_empty() { "item" } else { path }),
                            false,
                        );
                    }
                }
            }
            Node::Mapping(_) => {
                if !types.contains(&"object") {
                    self.error(
                        node.span(),
                        format!("{name} must be {}, found {}", wants(schema), found(node)),
                        None,
                    );
                    return;
                }
                self.object(node, schema, path, top);
            }
        }
    }

    fn in_range(&mut self, node: &Node, schema: &Value, x: f64, name: &str, integer: bool) {
        let below = number(schema, "minimum").is_some_and(|m| x < m)
            || number(schema, "exclusiveMinimum").is_some_and(|m| x <= m);
        let above = number(schema, "maximum").is_some_and(|m| x > m)
            || number(schema, "exclusiveMaximum").is_some_and(|m| x >= m);
        if below || above {
            let what = if integer { "an integer" } else { "a number" };
            self.error(
                node.span(),
                format!(
                    "{name} must be {what}{}, found {}",
                    bounds(schema, integer),
                    found(node)
                ),
                None,
            );
        }
    }

    fn branches(&mut self, node: &Node, schema: &Value, branches: &[Value], path: &str, top: bool) {
        let name = if path.is_empty() {
            "the value".to_owned()
        } else {
            format!("`{path}`")
        };
        // `Option<T>`: null, or T.
        let non_null: Vec<&Value> = branches
            .iter()
            .filter(|b| types_of(self.resolve(b)) != ["null"])
            .collect();
        if let Node::Scalar(s) = node
            && scalar(s) == Scalar::Null
            && non_null.len() < branches.len()
        {
            return;
        }
        if non_null.len() == 1 {
            let only = non_null[0].clone();
            self.node(node, &only, path, top);
            return;
        }
        // Tagged variants: one property fixed by `const` picks the branch.
        if let Some((tag, variants)) = self.tagged(&non_null) {
            let Some(map) = node.as_mapping() else {
                self.error(
                    node.span(),
                    format!(
                        "{name} must be a mapping with `{tag}`, found {}",
                        found(node)
                    ),
                    None,
                );
                return;
            };
            let names: Vec<&str> = variants.iter().map(|(v, _)| v.as_str()).collect();
            let Some(given) = map.get_node(tag) else {
                self.error(
                    node.span(),
                    format!(
                        "{} needs `{tag}`",
                        if path.is_empty() {
                            "this step"
                        } else {
                            name.as_str()
                        }
                    ),
                    Some(format!("expected one of {}", one_of(&names))),
                );
                return;
            };
            let given_text = given.as_scalar().map(|s| s.as_str().to_owned());
            match variants
                .iter()
                .find(|(v, _)| Some(v.as_str()) == given_text.as_deref())
            {
                Some((v, branch)) => {
                    let branch = (*branch).clone();
                    let variant = format!("{tag}: {v}");
                    let anchor = *given.span();
                    self.object_named(node, &branch, path, top, Some((&variant, anchor)));
                }
                None => {
                    let shown = given_text.unwrap_or_else(|| found(given));
                    self.error(
                        given.span(),
                        format!("unknown {} `{shown}`", join(path, tag)),
                        Some(suggest(&shown, &names)),
                    );
                }
            }
            return;
        }
        // Otherwise: the first branch that fits; else what the closest one says.
        if non_null.iter().any(|b| self.fits(node, b)) {
            return;
        }
        let mut best: Option<Vec<Diagnostic>> = None;
        for b in &non_null {
            let mut probe = Checker {
                defs: self.defs,
                extra: self.extra,
                what: self.what,
                out: Vec::new(),
            };
            probe.node(node, b, path, top);
            if best.as_ref().is_none_or(|x| probe.out.len() < x.len()) {
                best = Some(probe.out);
            }
        }
        let best = best.unwrap_or_default();
        if best.is_empty() {
            self.error(
                node.span(),
                format!("{name} must be {}, found {}", wants(schema), found(node)),
                None,
            );
        } else {
            self.out.extend(best);
        }
    }

    /// `(tag, [(value, branch)])` when every branch is an object fixing one same property.
    fn tagged<'v>(&self, branches: &[&'v Value]) -> Option<(&'v str, Vec<(String, &'v Value)>)>
    where
        'a: 'v,
    {
        let mut tag: Option<&str> = None;
        let mut variants = Vec::new();
        for b in branches {
            let b = self.resolve(b);
            let props = b.get("properties")?.as_object()?;
            let (key, value) = props.iter().find_map(|(k, v)| {
                let v = self.resolve(v);
                v.get("const")
                    .or_else(|| {
                        v.get("enum")
                            .and_then(|e| e.as_array().filter(|a| a.len() == 1)?.first())
                    })
                    .and_then(Value::as_str)
                    .map(|c| (k.as_str(), c.to_owned()))
            })?;
            match tag {
                None => tag = Some(key),
                Some(t) if t == key => {}
                Some(_) => return None,
            }
            variants.push((value, b));
        }
        Some((tag?, variants))
    }

    fn object(&mut self, node: &Node, schema: &Value, path: &str, top: bool) {
        self.object_named(node, schema, path, top, None);
    }

    /// A mapping's fields; in a tagged `variant`, missing fields are reported at its tag.
    fn object_named(
        &mut self,
        node: &Node,
        schema: &Value,
        path: &str,
        top: bool,
        variant: Option<(&str, Span)>,
    ) {
        let Some(map) = node.as_mapping() else {
            let name = if path.is_empty() {
                "the value".to_owned()
            } else {
                format!("`{path}`")
            };
            self.error(
                node.span(),
                format!("{name} must be a mapping, found {}", found(node)),
                None,
            );
            return;
        };
        let empty = Map::new();
        let props = schema
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let additional = schema.get("additionalProperties");
        let mut known: Vec<&str> = props.keys().map(String::as_str).collect();
        if top {
            known.extend(self.extra.iter().copied());
        }
        for (key, value) in map.iter() {
            let k = key.as_str();
            if let Some(field) = props.get(k) {
                let field = field.clone();
                self.node(value, &field, &join(path, k), false);
                continue;
            }
            if top && self.extra.contains(&k) {
                continue;
            }
            match additional {
                Some(Value::Bool(false)) => {
                    let message = match variant.map(|v| v.0) {
                        Some(v) => format!("unknown field `{}` for `{v}`", join(path, k)),
                        None if top => {
                            format!("unknown field `{}` for {}", join(path, k), self.what)
                        }
                        None => format!("unknown field `{k}` in `{path}`"),
                    };
                    self.error(key.span(), message, Some(suggest(k, &known)));
                }
                Some(extra) if extra.is_object() => {
                    let extra = extra.clone();
                    self.node(value, &extra, &join(path, k), false);
                }
                _ => {}
            }
        }
        if let Some(Value::Array(required)) = schema.get("required") {
            for r in required.iter().filter_map(Value::as_str) {
                if map.get_node(r).is_none() {
                    let (whose, at) = match (variant, path.is_empty()) {
                        (Some((v, at)), _) => (format!("`{v}` needs `{}`", join(path, r)), at),
                        _ if top => (
                            format!("missing field `{}` for {}", join(path, r), self.what),
                            *node.span(),
                        ),
                        _ => (format!("`{path}` needs `{r}`"), *node.span()),
                    };
                    self.error(&at, whose, None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(yaml: &str, schema: Value) -> Vec<String> {
        let node = marked_yaml::parse_yaml(0, yaml).unwrap();
        check(&node, &schema, &Map::new(), "a test", &[])
            .into_iter()
            .map(|d| {
                let l = d.location.unwrap();
                match d.help {
                    Some(h) => format!("{}:{} {} ({h})", l.line, l.column, d.message),
                    None => format!("{}:{} {}", l.line, l.column, d.message),
                }
            })
            .collect()
    }

    fn spec() -> Value {
        json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "timeout_ms": {"type": ["integer", "null"], "minimum": 1},
                "weight": {"type": "number", "minimum": 0, "maximum": 1},
                "mode": {"type": "string", "enum": ["fast", "slow"]},
                "list": {"type": "array", "items": {"type": "number"}},
            },
            "required": ["mode"]
        })
    }

    #[test]
    fn every_bad_field_is_reported_in_words() {
        let got = errors(
            "timeout_ms: fast\nweight: 2\nmode: fsat\nlist: [1, a]\ntimout: 3\n",
            spec(),
        );
        assert_eq!(
            got,
            vec![
                "1:13 `timeout_ms` must be an integer ≥ 1, found the string \"fast\"",
                "2:9 `weight` must be a number between 0 and 1, found the number 2",
                "3:7 `mode` must be one of `fast` or `slow`, found `fsat` (did you mean `fast`?)",
                "4:11 `list[1]` must be a number, found the string \"a\"",
                "5:1 unknown field `timout` for a test (did you mean `timeout_ms`? expected one of `timeout_ms`, `weight`, `mode` or `list`)",
            ]
        );
    }

    #[test]
    fn a_range_error_names_the_one_field() {
        assert_eq!(
            errors("timeout_ms: 0\nmode: fast\n", spec()),
            vec!["1:13 `timeout_ms` must be an integer ≥ 1, found the number 0"]
        );
        assert_eq!(
            errors("timeout_ms: ~\nmode: fast\n", spec()),
            Vec::<String>::new()
        );
        assert_eq!(errors("mode: \"fast\"\n", spec()), Vec::<String>::new());
        assert_eq!(
            errors("{}", spec()),
            vec!["1:1 missing field `mode` for a test"]
        );
    }

    #[test]
    fn tagged_variants_pick_their_fields() {
        let schema = json!({"oneOf": [
            {"type": "object", "additionalProperties": false,
             "properties": {"class": {"const": "onnx"}, "model_path": {"type": "string"}},
             "required": ["class", "model_path"]},
            {"type": "object", "additionalProperties": false,
             "properties": {"class": {"const": "remote"}, "url": {"type": "string"}},
             "required": ["class", "url"]},
        ]});
        assert_eq!(
            errors("class: onnx\nurl: x\n", schema.clone()),
            vec![
                "2:1 unknown field `url` for `class: onnx` (expected one of `class` or `model_path`)",
                "1:8 `class: onnx` needs `model_path`",
            ]
        );
        assert_eq!(
            errors("class: onx\n", schema.clone()),
            vec![
                "1:8 unknown class `onx` (did you mean `onnx`? expected one of `onnx` or `remote`)"
            ]
        );
        assert_eq!(
            errors("class: remote\nurl: x\n", schema),
            Vec::<String>::new()
        );
    }
}
