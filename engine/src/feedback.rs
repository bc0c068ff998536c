//! Feedback bodies, as `POST /v2/models/{router}/feedback` and the Kafka feedback topic take
//! them: `{"id", "reward"}`, a batch `[...]` of those, or Seldon's `{"request", "response",
//! "reward", "truth"}` (the id and route from the response).

use crate::error::{Error, Result};

/// One reward: for a response id, a route named in the response's `parameters`, or both.
#[derive(Debug, PartialEq)]
pub struct Feedback<'a> {
    pub id: Option<&'a str>,
    pub route: Option<&'a str>,
    pub reward: f64,
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
            if id.is_none() && route.is_none() {
                return Err(Error::unprocessable(format!(
                    "feedback {i} needs `id` and `reward`, or Seldon's `response` (with its id or \
                     parameters.route) and `reward`"
                )));
            }
            Ok(Feedback { id, route, reward })
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
                    reward: 1.0
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
        let e = parse(&json!({"reward": 1})).unwrap_err();
        assert!(e.to_string().contains("needs `id`"), "{e}");
    }
}
