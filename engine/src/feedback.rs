//! Feedback bodies, as `POST /v2/models/{router}/feedback` and the Kafka feedback topic take
//! them: `{"id", "reward"}` (with an optional `label`: the true class or value, which the
//! tracking stream carries to the monitor's realised performance), a batch `[...]` of those,
//! or Seldon's `{"request", "response", "reward", "truth"}` (the id and route from the
//! response; a `truth` holding one value is the label).

use crate::error::{Error, Result};

/// One reward: for a response id, a route named in the response's `parameters`, or both.
#[derive(Debug, PartialEq)]
pub struct Feedback<'a> {
    pub id: Option<&'a str>,
    pub route: Option<&'a str>,
    pub reward: f64,
    /// The true label or value of the request, when the feedback gives one.
    pub label: Option<&'a serde_json::Value>,
}

/// The one value of a Seldon message's `data` (`ndarray`, or `tensor.values`), nested arrays
/// included: Seldon's `truth` for one request is `{"data": {"ndarray": [[1]]}}` or the like.
fn single_value(message: &serde_json::Value) -> Option<&serde_json::Value> {
    let data = message.get("data")?;
    let mut v = data
        .get("ndarray")
        .or_else(|| data.pointer("/tensor/values"))?;
    while let serde_json::Value::Array(items) = v {
        match items.as_slice() {
            [one] => v = one,
            _ => return None,
        }
    }
    Some(v)
}

/// The rewards in a feedback body, and whether it was a single one (not a batch). An error
/// names the item that does not fit.
pub fn parse(value: &serde_json::Value) -> Result<(Vec<Feedback<'_>>, bool)> {
    let (items, single) = match value {
        serde_json::Value::Array(items) => (items.as_slice(), false),
        other => (std::slice::from_ref(other), true),
    };
    let parsed = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let reward = item
                .get("reward")
                .and_then(serde_json::Value::as_f64)
                .ok_or_else(|| {
                    Error::unprocessable(format!("feedback {i}: `reward` must be a number"))
                })?;
            let response = item.get("response");
            let id = item
                .get("id")
                .or_else(|| response.and_then(|r| r.get("id")))
                .or_else(|| response.and_then(|r| r.pointer("/meta/puid")))
                .and_then(serde_json::Value::as_str);
            let route = response
                .and_then(|r| r.pointer("/parameters/route"))
                .and_then(serde_json::Value::as_str);
            let label = match item.get("label") {
                Some(l) if l.is_string() || l.is_number() || l.is_boolean() => Some(l),
                Some(_) => {
                    return Err(Error::unprocessable(format!(
                        "feedback {i}: `label` must be a string, a number or a boolean (the true \
                         class or value of the request)"
                    )));
                }
                None => item.get("truth").and_then(single_value),
            };
            if id.is_none() && route.is_none() {
                return Err(Error::unprocessable(format!(
                    "feedback {i} needs `id` and `reward`, or Seldon's `response` (with its id or \
                     parameters.route) and `reward`"
                )));
            }
            Ok(Feedback {
                id,
                route,
                reward,
                label,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((parsed, single))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shapes() {
        let v = json!({"id": "a", "reward": 1});
        assert_eq!(
            parse(&v).unwrap(),
            (
                vec![Feedback {
                    id: Some("a"),
                    route: None,
                    reward: 1.0,
                    label: None
                }],
                true
            )
        );
        let v = json!([{"id": "a", "reward": 0.5}, {"response": {"id": "b", "parameters": {"route": "r"}}, "reward": 0, "truth": {}}]);
        let (items, single) = parse(&v).unwrap();
        assert!(!single);
        assert_eq!(items[1].id, Some("b"));
        assert_eq!(items[1].route, Some("r"));
        let e = parse(&json!([{"id": "a", "reward": 1}, {"id": "b", "reward": "x"}])).unwrap_err();
        assert!(e.to_string().contains("feedback 1: `reward`"), "{e}");
        let v = json!([{"id": "a", "reward": 1, "label": "cat"}, {"response": {"id": "b"}, "reward": 0, "truth": {"data": {"ndarray": [[2]]}}}, {"response": {"id": "c"}, "reward": 0, "truth": {"data": {"ndarray": [1, 2]}}}]);
        let (items, _) = parse(&v).unwrap();
        assert_eq!(items[0].label, Some(&json!("cat")));
        assert_eq!(
            items[1].label,
            Some(&json!(2)),
            "Seldon's truth of one value"
        );
        assert_eq!(items[2].label, None, "a truth of two values is no label");
        let e = parse(&json!({"id": "a", "reward": 1, "label": [1]})).unwrap_err();
        assert!(e.to_string().contains("feedback 0: `label`"), "{e}");
        let e = parse(&json!({"reward": 1})).unwrap_err();
        assert!(e.to_string().contains("needs `id`"), "{e}");
    }
}
