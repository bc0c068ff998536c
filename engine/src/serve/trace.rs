//! Triton's trace extension (`GET`/`POST /v2[/models/{m}]/trace/setting`) over the
//! OpenTelemetry spans servegraph exports: the settings as Triton's JSON (every value a
//! string, `trace_level` a list), and an update from Triton's request, where `null` clears a
//! model's field back to the global one. What spans cannot do (trace files, `TENSORS`) is
//! refused with a 400 that says so.

use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::telemetry::settings::{self, Change, Effective, Level, Update};

/// The settings Triton's extension names that servegraph serves.
const SERVED: [&str; 3] = ["trace_level", "trace_rate", "trace_count"];

/// A setting as Triton's JSON: `trace_level` a list of strings, the others strings;
/// `trace_mode` says the spans are OpenTelemetry's (Triton's OpenTelemetry mode answers no
/// `trace_file` and `log_frequency` either).
pub fn answer(e: Effective) -> Value {
    let level = match e.level {
        Level::Off => "OFF",
        Level::Timestamps => "TIMESTAMPS",
    };
    json!({
        "trace_level": [level],
        "trace_rate": e.rate.to_string(),
        "trace_count": e.count.to_string(),
        "trace_mode": "opentelemetry",
    })
}

/// The setting that applies to `model` (`None`: the global one).
pub fn get(model: Option<&str>) -> Value {
    answer(settings::get(model))
}

/// Applies Triton's update (`{"trace_rate": "10", "trace_level": ["TIMESTAMPS"], ...}`;
/// `null` clears a model's field) to `model`'s setting, and answers the setting now.
pub fn post(model: Option<&str>, body: &Value) -> Result<Value> {
    let update = parse(model, body)?;
    if update.level == Change::Set(Level::Timestamps) && !crate::telemetry::enabled() {
        return Err(Error::bad_request(
            "`trace_level` TIMESTAMPS: no spans are exported, since the graph file sets no \
             `telemetry: {otlp_endpoint: ...}` (tracing starts with the server; see \
             docs/operations.md)",
        ));
    }
    Ok(answer(settings::update(model, update)))
}

fn parse(model: Option<&str>, body: &Value) -> Result<Update> {
    let fields: &Map<String, Value> = match body {
        Value::Object(m) => m,
        other => {
            return Err(Error::bad_request(format!(
                "a trace setting request is a JSON object of settings, not {other}"
            )));
        }
    };
    let mut update = Update::default();
    for (name, value) in fields {
        let clear = value.is_null();
        if clear && model.is_none() && SERVED.contains(&name.as_str()) {
            return Err(Error::bad_request(format!(
                "`{name}`: null clears a model's setting back to the global one; the global \
                 setting has no other to fall back to: give a value"
            )));
        }
        match name.as_str() {
            "trace_level" => {
                update.level = if clear {
                    Change::Clear
                } else {
                    Change::Set(level(value)?)
                }
            }
            "trace_rate" => {
                update.rate = if clear {
                    Change::Clear
                } else {
                    match number(name, value)? {
                        n @ 1..=0xFFFF_FFFF => Change::Set(n as u32),
                        n => {
                            return Err(Error::bad_request(format!(
                                "`trace_rate` is one trace in how many requests, from 1 to 4294967295, not {n}"
                            )));
                        }
                    }
                }
            }
            "trace_count" => {
                update.count = if clear {
                    Change::Clear
                } else {
                    match number(name, value)? {
                        n @ -1..=0x7FFF_FFFF => Change::Set(n as i32),
                        n => {
                            return Err(Error::bad_request(format!(
                                "`trace_count` is how many more requests to trace (-1: no limit), from -1 to 2147483647, not {n}"
                            )));
                        }
                    }
                }
            }
            "trace_file" | "log_frequency" => {
                return Err(Error::bad_request(format!(
                    "`{name}` is not served: servegraph writes no trace files, its spans go to the \
                     OpenTelemetry collector the graph file's `telemetry.otlp_endpoint` names; it \
                     serves {}",
                    SERVED.join(", ")
                )));
            }
            "trace_mode" => {
                if value.as_str() != Some("opentelemetry") {
                    return Err(Error::bad_request(format!(
                        "`trace_mode` is opentelemetry (servegraph's spans are OpenTelemetry's), not {value}"
                    )));
                }
            }
            other => {
                return Err(Error::bad_request(format!(
                    "unknown trace setting `{other}`; servegraph serves {}",
                    SERVED.join(", ")
                )));
            }
        }
    }
    Ok(update)
}

/// `trace_level`: `["OFF"]` or `["TIMESTAMPS"]` (a single string is taken too).
fn level(value: &Value) -> Result<Level> {
    let levels: Vec<&str> = match value {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let many = value.as_array().is_some_and(|a| a.len() != levels.len());
    match levels[..] {
        ["OFF"] if !many => Ok(Level::Off),
        ["TIMESTAMPS"] if !many => Ok(Level::Timestamps),
        _ if levels.contains(&"TENSORS") => Err(Error::bad_request(
            "`trace_level` TENSORS is not served: servegraph's spans carry the request's and \
             each step's timings, not tensors; use [\"TIMESTAMPS\"] or [\"OFF\"]",
        )),
        _ => Err(Error::bad_request(format!(
            "`trace_level` is [\"OFF\"] or [\"TIMESTAMPS\"], not {value}"
        ))),
    }
}

/// A setting's number, as Triton sends it (a string) or as a JSON integer.
fn number(name: &str, value: &Value) -> Result<i64> {
    value
        .as_str()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .or_else(|| value.as_i64())
        .ok_or_else(|| {
            Error::bad_request(format!(
                "`{name}` is a whole number (as a string, as Triton takes it), not {value}"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_are_read_as_triton_sends_them_and_refused_with_a_reason() {
        let u = parse(
            Some("m"),
            &json!({"trace_rate": "10", "trace_count": -1, "trace_level": ["OFF"]}),
        )
        .unwrap();
        assert_eq!(u.rate, Change::Set(10));
        assert_eq!(u.count, Change::Set(-1));
        assert_eq!(u.level, Change::Set(Level::Off));
        let u = parse(Some("m"), &json!({"trace_rate": null})).unwrap();
        assert_eq!(u.rate, Change::Clear);
        for (body, says) in [
            (json!({"trace_rate": null}), "null clears a model's setting"),
            (json!({"trace_rate": "0"}), "from 1 to 4294967295, not 0"),
            (json!({"trace_rate": "often"}), "is a whole number"),
            (
                json!({"trace_count": "-2"}),
                "from -1 to 2147483647, not -2",
            ),
            (json!({"trace_level": ["TENSORS"]}), "TENSORS is not served"),
            (
                json!({"trace_level": ["OFF", "TIMESTAMPS"]}),
                "is [\"OFF\"] or [\"TIMESTAMPS\"]",
            ),
            (json!({"trace_file": "/tmp/t"}), "writes no trace files"),
            (
                json!({"log_frequency": "10"}),
                "`log_frequency` is not served",
            ),
            (
                json!({"trace_rat": "1"}),
                "unknown trace setting `trace_rat`",
            ),
            (json!([1]), "a JSON object of settings"),
        ] {
            let e = parse(None, &body).expect_err(&body.to_string());
            assert_eq!(e.kind, crate::error::ErrorKind::BadRequest);
            assert!(e.message.contains(says), "{body}: {}", e.message);
        }
    }
}
