//! One line of the tracking stream (or of a JSONL dataset of requests), read with borrowed
//! strings and only the tensors' parts a monitor uses: the cost per event is the parse.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

/// A tracking event (`request`, `resp`), an OIP request (`inputs`, `outputs`), or a
/// feedback event (the tracking stream's `op: feedback`, or a line of one's own with `kind:
/// feedback`; `id`, and the label).
#[derive(Debug, Default, Deserialize)]
pub struct Line<'a> {
    #[serde(borrow, default)]
    pub id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub when: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub kind: Option<Cow<'a, str>>,
    /// The tracking stream's operation: `infer`, `explain`, or `feedback`.
    #[serde(borrow, default)]
    pub op: Option<Cow<'a, str>>,
    /// The step the event is about (a feedback event's router).
    #[serde(borrow, default)]
    pub model: Option<Cow<'a, str>>,
    /// A feedback event's reward.
    #[serde(default)]
    pub reward: Option<f64>,
    /// The routers' decisions for the request.
    #[serde(default)]
    pub decisions: Option<Vec<super::experiments::DecisionLine>>,
    #[serde(default)]
    pub shadow: bool,
    #[serde(borrow, default)]
    pub request: Option<Vec<TensorLine<'a>>>,
    #[serde(borrow, default)]
    pub resp: Option<Vec<TensorLine<'a>>>,
    #[serde(borrow, default)]
    pub inputs: Option<Vec<TensorLine<'a>>>,
    #[serde(borrow, default)]
    pub outputs: Option<Vec<TensorLine<'a>>>,
}

/// A tensor as JSON: its name, shape and data, kept as text until a column reads it (the
/// tensors no column reads are never turned into numbers).
#[derive(Debug, Deserialize)]
pub struct TensorLine<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(default)]
    pub shape: Vec<usize>,
    #[serde(borrow, default, rename = "data")]
    raw: Option<&'a serde_json::value::RawValue>,
    #[serde(skip)]
    parsed: std::cell::OnceCell<Option<Data<'a>>>,
}

/// One element of a tensor's data.
#[derive(Debug, Clone, PartialEq)]
pub enum Elem<'a> {
    Num(f64),
    Str(Cow<'a, str>),
    Bool(bool),
    Null,
}

impl Line<'_> {
    /// Whether the line is feedback for an earlier request, not a request.
    pub fn is_feedback(&self) -> bool {
        matches!(self.kind.as_deref(), Some("feedback" | "reward"))
            || self.op.as_deref() == Some("feedback")
    }
}

impl Elem<'_> {
    /// The element as a number (booleans as 0/1; texts that parse).
    pub fn number(&self) -> Option<f64> {
        match self {
            Elem::Num(x) => Some(*x),
            Elem::Bool(b) => Some(f64::from(u8::from(*b))),
            Elem::Str(s) => s.trim().parse().ok(),
            Elem::Null => None,
        }
    }

    /// The element as a category: numbers without a fraction as integers.
    pub fn category(&self) -> Option<Cow<'_, str>> {
        match self {
            Elem::Num(x) if x.fract() == 0.0 && x.abs() < 1e15 => {
                Some(Cow::Owned(format!("{}", *x as i64)))
            }
            Elem::Num(x) => Some(Cow::Owned(x.to_string())),
            Elem::Str(s) => Some(Cow::Borrowed(s.as_ref())),
            Elem::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
            Elem::Null => None,
        }
    }
}

/// A tensor's data, nested lists flattened in row-major order.
#[derive(Debug, Default)]
pub struct Data<'a>(pub Vec<Elem<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for Data<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut out = Vec::new();
        d.deserialize_any(Flatten(&mut out))?;
        Ok(Data(out))
    }
}

struct Flatten<'v, 'a>(&'v mut Vec<Elem<'a>>);

impl<'de: 'a, 'a> de::DeserializeSeed<'de> for Flatten<'_, 'a> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for Flatten<'_, 'a> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a tensor's data")
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.0.push(Elem::Num(v));
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.0.push(Elem::Num(v as f64));
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.0.push(Elem::Num(v as f64));
        Ok(())
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.0.push(Elem::Bool(v));
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.push(Elem::Null);
        Ok(())
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<(), E> {
        self.0.push(Elem::Str(Cow::Borrowed(v)));
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.0.push(Elem::Str(Cow::Owned(v.to_owned())));
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Flatten(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

impl<'a> Line<'a> {
    /// The request's tensors (a tracking event's `request`, an OIP request's `inputs`).
    pub fn request_tensors(&self) -> &[TensorLine<'a>] {
        self.request
            .as_deref()
            .or(self.inputs.as_deref())
            .unwrap_or_default()
    }

    /// The response's tensors.
    pub fn response_tensors(&self) -> &[TensorLine<'a>] {
        self.resp
            .as_deref()
            .or(self.outputs.as_deref())
            .unwrap_or_default()
    }
}

impl<'a> TensorLine<'a> {
    /// Rows and the width of one row: the first dimension and the product of the rest
    /// (a 1-D tensor is one column).
    pub fn rows(&self) -> (usize, usize) {
        match self.shape.split_first() {
            Some((&rows, rest)) => (rows, rest.iter().product::<usize>().max(1)),
            None => (1, 1),
        }
    }

    /// The data (nested lists flattened), read at the first call.
    pub fn data(&self) -> Option<&Data<'a>> {
        self.parsed
            .get_or_init(|| self.raw.and_then(|r| serde_json::from_str(r.get()).ok()))
            .as_ref()
    }

    /// Column `index` of row `row`, if the data is there.
    pub fn at(&self, row: usize, index: usize) -> Option<&Elem<'a>> {
        let (_, width) = self.rows();
        if index >= width {
            return None;
        }
        self.data()?.0.get(row * width + index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tracking_events_and_requests() {
        let text = r#"{"id":"a","when":"2026-01-01T00:00:00Z","request":[{"name":"x","datatype":"FP32","shape":[2,2],"data":[[1,2],[3.5,"4"]]}],"resp":[{"name":"label","shape":[2],"data":["cat",true]}],"labels":{"env":"p"}}"#;
        let l: Line = serde_json::from_str(text).unwrap();
        let x = &l.request_tensors()[0];
        assert_eq!(x.rows(), (2, 2));
        assert_eq!(x.at(1, 0).and_then(Elem::number), Some(3.5));
        assert_eq!(x.at(1, 1).and_then(Elem::number), Some(4.0));
        assert_eq!(x.at(0, 2), None);
        let y = &l.response_tensors()[0];
        assert_eq!(y.at(0, 0).unwrap().category().unwrap(), "cat");
        assert_eq!(y.at(1, 0).unwrap().category().unwrap(), "true");
        let oip: Line =
            serde_json::from_str(r#"{"inputs":[{"name":"x","shape":[1],"data":[7]}]}"#).unwrap();
        assert_eq!(
            oip.request_tensors()[0]
                .at(0, 0)
                .unwrap()
                .category()
                .unwrap(),
            "7"
        );
    }
}
