//! Encoding an inference response, in JSON or with binary outputs.

use serde::Serialize;
use serde_json::{Map, Value};

use super::RequestedOutput;
use super::binary::encode_binary;
use super::json::JsonData;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::tensor::{Tensor, TensorData};

#[derive(Serialize)]
pub(super) struct ResponseJson<'a> {
    pub(super) model_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) model_version: Option<&'a str>,
    pub(super) id: &'a str,
    #[serde(skip_serializing_if = "ResponseParameters::is_empty")]
    pub(super) parameters: ResponseParameters<'a>,
    pub(super) outputs: Vec<OutputOut<'a>>,
}

/// A response's `parameters`: the event's notes and the route it took (as [`parameters`]
/// builds them, without copying the notes into a new map: that map, an `IndexMap` hashed
/// with SipHash, cost ~800 instructions a request for one `route`; issue 27).
pub(super) struct ResponseParameters<'a> {
    pub(super) notes: &'a Map<String, Value>,
    pub(super) route: Option<&'a str>,
}

impl ResponseParameters<'_> {
    fn is_empty(&self) -> bool {
        self.notes.is_empty() && self.route.is_none()
    }

    /// The entries in order: the notes, the route last (or in the place of a note of that
    /// name, as inserting it into the notes' map would put it).
    fn entries(&self) -> impl Iterator<Item = (&str, Entry<'_>)> {
        let noted = self.notes.contains_key("route");
        let route = self.route.map(Entry::Route);
        self.notes
            .iter()
            .map(move |(k, v)| match route {
                Some(route) if k == "route" => (k.as_str(), route),
                _ => (k.as_str(), Entry::Value(v)),
            })
            .chain(route.filter(|_| !noted).map(|route| ("route", route)))
    }
}

/// A value of [`ResponseParameters`].
#[derive(Clone, Copy)]
enum Entry<'a> {
    Value(&'a Value),
    Route(&'a str),
}

impl Serialize for ResponseParameters<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        for (k, v) in self.entries() {
            match v {
                Entry::Value(v) => map.serialize_entry(k, v)?,
                Entry::Route(route) => map.serialize_entry(k, route)?,
            }
        }
        map.end()
    }
}

#[derive(Serialize)]
pub(super) struct OutputOut<'a> {
    pub(super) name: &'a str,
    pub(super) datatype: &'static str,
    pub(super) shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) parameters: Option<OutputParameters<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) data: Option<JsonData<'a>>,
}

/// An output's `parameters`: what its encoding needs said (`binary_data_size`, `content_type:
/// base64`), after what the step said of it (the event's `output_parameters`; the encoding's
/// own keys win).
pub(super) struct OutputParameters<'a> {
    pub(super) binary_data_size: Option<usize>,
    pub(super) content_type: Option<&'static str>,
    pub(super) own: Option<&'a Map<String, Value>>,
}

impl Serialize for OutputParameters<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        for (k, v) in self.own.into_iter().flatten() {
            let encoding_says =
                k == "binary_data_size" || (k == "content_type" && self.content_type.is_some());
            if !encoding_says {
                map.serialize_entry(k, v)?;
            }
        }
        if let Some(size) = self.binary_data_size {
            map.serialize_entry("binary_data_size", &size)?;
        }
        if let Some(ct) = self.content_type {
            map.serialize_entry("content_type", ct)?;
        }
        map.end()
    }
}

/// An encoded body; `json_len` is set when binary data follows the JSON (send it as
/// `Inference-Header-Content-Length`).
#[derive(Debug)]
pub struct Encoded {
    pub body: Vec<u8>,
    pub json_len: Option<usize>,
}

/// Encodes a finished event as an inference response, honouring the requested outputs (their
/// order, and which are binary).
pub fn encode_response(
    event: &Event,
    model: &str,
    version: Option<&str>,
    requested: &[RequestedOutput],
    binary_output: bool,
) -> Result<Encoded> {
    // As Triton's server does: a listed output is binary only when its own `binary_data`
    // says so; `binary_data_output` is for the unlisted (all of them).
    let picked = pick(event, requested, |r| {
        r.map_or(binary_output, |r| r.binary.unwrap_or(false))
    })?;
    encode(event, model, version, picked, Fallback::Binary)
}

/// [`encode_response`] with every output as JSON data, whatever the request asked (for
/// transports without the binary extension: Kafka, the CLI). BYTES that are not UTF-8 go as
/// base64 with `"parameters": {"content_type": "base64"}` (what requests may send too).
pub fn encode_json_response(
    event: &Event,
    model: &str,
    version: Option<&str>,
    requested: Vec<RequestedOutput>,
) -> Result<Vec<u8>> {
    let picked = pick(event, &requested, |_| false)?;
    encode(event, model, version, picked, Fallback::Base64).map(|e| e.body)
}

/// The outputs to send as tensors (the requested ones in order, else all), taken out of the
/// event, with the response's `parameters` (for transports with their own encoding: gRPC;
/// each output's own are left in the event's `output_parameters`).
pub fn take_outputs(
    event: &mut Event,
    requested: &[RequestedOutput],
) -> Result<(Vec<Tensor>, Map<String, Value>)> {
    let parameters = parameters(event);
    if requested.is_empty() {
        return Ok((std::mem::take(&mut event.tensors), parameters));
    }
    if let Some(r) = requested.iter().find(|r| event.get(&r.name).is_none()) {
        return Err(unknown_output(event, &r.name));
    }
    // Names are unique (the decoder refuses a name asked for twice).
    let outputs = requested
        .iter()
        .map(|r| event.take(&r.name))
        .collect::<Result<Vec<_>>>()?;
    Ok((outputs, parameters))
}

/// A response's `parameters`: the event's notes and the route it took.
fn parameters(event: &Event) -> Map<String, Value> {
    let mut parameters = event.notes.clone();
    if let Some(route) = event.route() {
        parameters.insert("route".into(), Value::String(route.to_owned()));
    }
    parameters
}

/// The outputs to send (the requested ones in order, else all), each with whether it goes
/// binary (`binary` is given the request's entry for it, `None` when none were listed).
fn pick<'a>(
    event: &'a Event,
    requested: &[RequestedOutput],
    binary: impl Fn(Option<&RequestedOutput>) -> bool,
) -> Result<Vec<(&'a Tensor, bool)>> {
    if requested.is_empty() {
        return Ok(event.tensors.iter().map(|t| (t, binary(None))).collect());
    }
    requested
        .iter()
        .map(|r| {
            let t = event
                .get(&r.name)
                .ok_or_else(|| unknown_output(event, &r.name))?;
            Ok((t, binary(Some(r))))
        })
        .collect()
}

/// The response of `picked` outputs, with the event's notes and route as `parameters`.
fn encode(
    event: &Event,
    model: &str,
    version: Option<&str>,
    picked: Vec<(&Tensor, bool)>,
    fallback: Fallback,
) -> Result<Encoded> {
    let (outputs, binary) = tensors_out(picked, fallback, &event.output_parameters);
    let response = ResponseJson {
        model_name: model,
        model_version: version,
        id: &event.id,
        parameters: ResponseParameters {
            notes: &event.notes,
            route: event.route(),
        },
        outputs,
    };
    let mut body = response.to_json();
    let Some(binary) = binary else {
        return Ok(Encoded {
            body,
            json_len: None,
        });
    };
    let json_len = body.len();
    body.extend_from_slice(&binary);
    Ok(Encoded {
        body,
        json_len: Some(json_len),
    })
}

impl ResponseJson<'_> {
    /// The same bytes as `serde_json::to_vec(self)` (`tests::hand_written_json_is_serde_jsons`
    /// checks), with the keys written as literals and names copied when they need no escape:
    /// serde_json runs every key and string through its escaping loop, ~90 instructions each,
    /// 20 strings in a one-output answer (issue 27). Numbers and parameters still go through
    /// serde_json, so they are formatted as they were.
    fn to_json(&self) -> Vec<u8> {
        // Room for the whole answer, so it grows rarely (serde_json's own start is 128 bytes).
        let guess = 96
            + self.model_name.len()
            + self.id.len()
            + self
                .outputs
                .iter()
                .map(OutputOut::size_guess)
                .sum::<usize>();
        let mut out = Vec::with_capacity(guess);
        out.extend_from_slice(b"{\"model_name\":");
        write_str(&mut out, self.model_name);
        if let Some(version) = self.model_version {
            out.extend_from_slice(b",\"model_version\":");
            write_str(&mut out, version);
        }
        out.extend_from_slice(b",\"id\":");
        write_str(&mut out, self.id);
        if !self.parameters.is_empty() {
            out.extend_from_slice(b",\"parameters\":{");
            for (i, (k, v)) in self.parameters.entries().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(&mut out, k);
                out.push(b':');
                match v {
                    Entry::Value(v) => write_serde(&mut out, v),
                    Entry::Route(route) => write_str(&mut out, route),
                }
            }
            out.push(b'}');
        }
        out.extend_from_slice(b",\"outputs\":[");
        for (i, output) in self.outputs.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            output.write_json(&mut out);
        }
        out.extend_from_slice(b"]}");
        out
    }
}

impl OutputOut<'_> {
    /// About how many bytes this output takes in JSON.
    fn size_guess(&self) -> usize {
        let elements = match self.data {
            // (A large output grows the buffer a few times, as it did.)
            Some(_) => self.shape.iter().product::<usize>().min(4096),
            None => 0,
        };
        64 + self.name.len() + 8 * self.shape.len() + 16 * elements
    }

    /// `serde_json::to_writer(out, self)`'s bytes, as [`ResponseJson::to_json`] writes them.
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"name\":");
        write_str(out, self.name);
        out.extend_from_slice(b",\"datatype\":");
        write_str(out, self.datatype);
        out.extend_from_slice(b",\"shape\":");
        write_serde(out, self.shape);
        if let Some(parameters) = &self.parameters {
            out.extend_from_slice(b",\"parameters\":");
            write_serde(out, parameters);
        }
        if let Some(data) = &self.data {
            out.extend_from_slice(b",\"data\":");
            write_serde(out, data);
        }
        out.push(b'}');
    }
}

/// A JSON string as serde_json writes it: copied between quotes when nothing in it needs an
/// escape (serde_json escapes only `"`, `\` and control characters), else by serde_json.
fn write_str(out: &mut Vec<u8>, s: &str) {
    // No early exit: a plain fold the compiler can vectorize.
    let escapes = s.bytes().fold(false, |any, b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if escapes {
        write_serde(out, s);
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// A value through serde_json (what it cannot fail on: strings, numbers, JSON maps, tensor
/// data; NaN and infinities are `null`).
fn write_serde<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    serde_json::to_writer(out, value).expect("JSON of strings, numbers and maps");
}

fn unknown_output(event: &Event, name: &str) -> Error {
    let names: Vec<&str> = event.tensors.iter().map(|t| t.name.as_str()).collect();
    Error::bad_request(format!(
        "unknown output `{name}`; the outputs are: {}",
        names.join(", ")
    ))
}

/// What a BYTES output asked for as JSON becomes when an element is not UTF-8 (JSON strings
/// are Unicode; replacing the bytes with U+FFFD would be a silent wrong answer).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Fallback {
    /// Sent with the binary extension instead (HTTP: clients read either).
    Binary,
    /// Sent as base64 strings, marked `content_type: base64` (transports without binary).
    Base64,
}

/// Whether BYTES data can travel as JSON strings unchanged.
pub(super) fn is_utf8(data: &TensorData) -> bool {
    match data {
        TensorData::Bytes(v) => v.iter().all(|b| std::str::from_utf8(b).is_ok()),
        _ => true,
    }
}

/// Tensors as OIP JSON entries (inputs and outputs share the shape), with the bytes of those
/// sent as binary, in order; each with its own parameters from `own` (by name: an event's
/// `output_parameters`), if any.
pub(super) fn tensors_out<'a>(
    tensors: Vec<(&'a Tensor, bool)>,
    fallback: Fallback,
    own: &'a Map<String, Value>,
) -> (Vec<OutputOut<'a>>, Option<Vec<u8>>) {
    let mut binary: Option<Vec<u8>> = None;
    let mut out = Vec::with_capacity(tensors.len());
    for (t, as_binary) in tensors {
        let own = (!own.is_empty())
            .then(|| own.get(&t.name).and_then(Value::as_object))
            .flatten();
        let utf8 = as_binary || is_utf8(&t.data);
        let (parameters, data) = if as_binary || (!utf8 && fallback == Fallback::Binary) {
            let binary = binary.get_or_insert_with(Vec::new);
            let before = binary.len();
            encode_binary(&t.data, binary);
            let size = binary.len() - before;
            (
                Some(OutputParameters {
                    binary_data_size: Some(size),
                    content_type: None,
                    own,
                }),
                None,
            )
        } else if !utf8 {
            (
                Some(OutputParameters {
                    binary_data_size: None,
                    content_type: Some("base64"),
                    own,
                }),
                Some(JsonData::Base64(&t.data)),
            )
        } else {
            let parameters = own.map(|own| OutputParameters {
                binary_data_size: None,
                content_type: None,
                own: Some(own),
            });
            (parameters, Some(JsonData::Plain(&t.data)))
        };
        out.push(OutputOut {
            name: &t.name,
            datatype: t.datatype().as_str(),
            shape: &t.shape,
            parameters,
            data,
        });
    }
    (out, binary)
}

/// The JSON, then the binary part if any (even an empty one: an output of no elements sent
/// binary still needs `Inference-Header-Content-Length`).
pub(super) fn finish<T: Serialize>(json: &T, binary: Vec<u8>, has_binary: bool) -> Result<Encoded> {
    let mut body =
        serde_json::to_vec(json).map_err(|e| Error::internal(format!("encoding JSON: {e}")))?;
    if !has_binary {
        return Ok(Encoded {
            body,
            json_len: None,
        });
    }
    let json_len = body.len();
    body.extend_from_slice(&binary);
    Ok(Encoded {
        body,
        json_len: Some(json_len),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written JSON is serde_json's, byte for byte: names that need escapes, a
    /// version, parameters (the response's and an output's own), binary and base64 outputs,
    /// floats that are not finite, every datatype's data.
    #[test]
    fn hand_written_json_is_serde_jsons() {
        let odd: String = (0u8..128)
            .map(char::from)
            .chain("é☃\u{7f}".chars())
            .collect();
        let tensors = [
            Tensor::new("p", vec![1, 3], TensorData::Fp32(vec![0.1, f32::NAN, 1e30])).unwrap(),
            Tensor::new(odd.as_str(), vec![2], TensorData::Int64(vec![-1, i64::MAX])).unwrap(),
            Tensor::new(
                "b",
                vec![2],
                TensorData::Bytes(vec![b"a\"b".to_vec(), vec![0xff]]),
            )
            .unwrap(),
            Tensor::new("f", vec![1], TensorData::Fp64(vec![f64::INFINITY])).unwrap(),
            Tensor::new("t", vec![0], TensorData::Bool(vec![])).unwrap(),
            Tensor::new(
                "h",
                vec![1],
                TensorData::Fp16(vec![half::f16::from_f32(0.5)]),
            )
            .unwrap(),
        ];
        let empty = Map::new();
        let mut notes = Map::new();
        notes.insert("a".into(), serde_json::json!(1));
        notes.insert("route".into(), serde_json::json!("noted"));
        notes.insert("z\"".into(), serde_json::json!({"k": [null]}));
        let mut notes_without_route = notes.clone();
        notes_without_route.shift_remove("route");
        let cases = [
            (&empty, None),
            (&empty, Some(odd.as_str())),
            (&notes, None),
            (&notes, Some("r:1")),
            (&notes_without_route, Some("r")),
        ];
        let mut own = Map::new();
        own.insert(
            "p".into(),
            serde_json::json!({"content_type": "np", "x": [1, "\n"]}),
        );
        for (model, version, id) in [("m", None, "1"), (odd.as_str(), Some("2\t"), odd.as_str())] {
            for fallback in [Fallback::Binary, Fallback::Base64] {
                for binary in [false, true] {
                    for (notes, route) in &cases {
                        let picked = tensors
                            .iter()
                            .enumerate()
                            .map(|(i, t)| (t, binary && i % 2 == 0))
                            .collect();
                        let (outputs, _) = tensors_out(picked, fallback, &own);
                        let response = ResponseJson {
                            model_name: model,
                            model_version: version,
                            id,
                            parameters: ResponseParameters {
                                notes,
                                route: *route,
                            },
                            outputs,
                        };
                        let serde = serde_json::to_vec(&response).unwrap();
                        assert_eq!(
                            String::from_utf8(response.to_json()).unwrap(),
                            String::from_utf8(serde).unwrap()
                        );
                        // The parameters are those the notes' map with the route inserted
                        // would be (gRPC's answers build that map: `parameters`).
                        let mut map = (*notes).clone();
                        if let Some(route) = route {
                            map.insert("route".into(), Value::String((*route).to_owned()));
                        }
                        assert_eq!(
                            serde_json::to_value(&response.parameters).unwrap(),
                            Value::Object(map.clone())
                        );
                        assert_eq!(
                            serde_json::to_string(&response.parameters).unwrap(),
                            serde_json::to_string(&map).unwrap()
                        );
                    }
                }
            }
        }
    }
}
