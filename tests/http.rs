//! The real binary over HTTP: OIP routes, predictions equal to scikit-learn's, the binary
//! tensor extension, routing, and every kind of bad input answered with the right status.

mod common;

use common::*;
use serde_json::{Value, json};

fn labels(reply: &Reply) -> Vec<Value> {
    let v = reply.json();
    let out = v["outputs"].as_array().expect("outputs");
    let label = out
        .iter()
        .find(|o| o["name"] == "label")
        .expect("label output");
    label["data"].as_array().unwrap().clone()
}

fn probabilities(reply: &Reply) -> Vec<f64> {
    let v = reply.json();
    let out = v["outputs"].as_array().unwrap();
    let p = out
        .iter()
        .find(|o| o["name"] == "probabilities")
        .expect("probabilities");
    p["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn assert_close(got: &[f64], want: &Value) {
    let want: Vec<f64> = want
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
        .collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-4, "{got:?} vs {want:?}");
    }
}

#[test]
fn iris_models_answer_like_scikit_learn() {
    let s = Server::start("graphs/iris.yaml", &[]);
    let exp = expected();
    for model in ["iris-lr", "iris-rf"] {
        let r = post(
            &s.addr,
            &format!("/v2/models/{model}/infer"),
            &iris_request("req-7"),
        );
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.headers["content-type"], "application/json");
        let v = r.json();
        assert_eq!(v["id"], "req-7");
        assert_eq!(v["model_name"], model);
        assert_eq!(v["parameters"]["route"], model);
        assert_eq!(Value::Array(labels(&r)), exp[model]["label"]);
        assert_close(&probabilities(&r), &exp[model]["probabilities"]);
    }
    // The graph's own name runs the weighted policy: both routes are reached.
    let mut routes = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let r = post(&s.addr, "/v2/models/iris/infer", &iris_request("x"));
        assert_eq!(r.status, 200);
        let route = r.json()["parameters"]["route"].as_str().unwrap().to_owned();
        assert_eq!(Value::Array(labels(&r)), exp[route.as_str()]["label"]);
        routes.insert(route);
    }
    assert_eq!(
        routes.into_iter().collect::<Vec<_>>(),
        ["iris-lr", "iris-rf"]
    );
}

#[test]
fn metadata_health_and_readiness() {
    let s = Server::start("graphs/iris.yaml", &[]);
    assert_eq!(get_blocking(&s.addr, "/v2/health/live").status, 200);
    assert_eq!(get_blocking(&s.addr, "/v2/health/ready").status, 200);
    let v = get_blocking(&s.addr, "/v2").json();
    assert_eq!(v["name"], "servegraph");
    assert_eq!(
        v["extensions"],
        json!([
            "binary_tensor_data",
            "classification",
            "model_configuration",
            "model_repository",
            "statistics",
            "parameters",
            "trace"
        ])
    );

    let md = get_blocking(&s.addr, "/v2/models/iris-rf").json();
    assert_eq!(
        md,
        json!({
            "name": "iris-rf", "versions": ["1"], "platform": "onnxruntime_onnx",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
            "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]},
                        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}]
        })
    );
    let md = get_blocking(&s.addr, "/v2/models/iris").json();
    assert_eq!(md["platform"], "servegraph_router");
    assert_eq!(md["inputs"][0]["name"], "input");
    assert_eq!(
        get_blocking(&s.addr, "/v2/models/iris-lr/ready").json()["ready"],
        true
    );
    // An unversioned model is version 1, as its metadata lists.
    assert_eq!(
        get_blocking(&s.addr, "/v2/models/iris-lr/versions/1/ready").status,
        200
    );
    assert_eq!(
        get_blocking(&s.addr, "/v2/models/iris-lr/versions/2/ready").status,
        404
    );
    let r = get_blocking(&s.addr, "/v2/models/nope");
    assert_eq!(r.status, 404);
    assert_eq!(
        r.error(),
        "unknown model `nope`; this server's models are: iris, iris-lr, iris-rf"
    );
    let r = get_blocking(&s.addr, "/v3/what");
    assert_eq!(
        (r.status, r.error()),
        (404, "no route for GET /v3/what".to_owned())
    );
}

#[test]
fn ensemble_flow_votes_and_names_classes() {
    let s = Server::start("graphs/iris-ensemble.yaml", &[]);
    let r = post(
        &s.addr,
        "/v2/models/iris-ensemble/infer",
        &iris_request("e1"),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let exp = expected();
    let classes = exp["classes"].as_array().unwrap();
    let want: Vec<Value> = exp["iris-ensemble"]["label"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| classes[i.as_u64().unwrap() as usize].clone())
        .collect();
    assert_eq!(labels(&r), want);
    let out = &r.json()["outputs"];
    let label = out
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "label")
        .unwrap();
    assert_eq!(label["datatype"], "BYTES");
    let md = get_blocking(&s.addr, "/v2/models/iris-ensemble").json();
    assert_eq!(md["platform"], "servegraph_flow");
    assert_eq!(
        md["inputs"],
        json!([{"name": "input", "datatype": "FP32", "shape": [-1, 4]}])
    );
    assert!(
        md["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["name"] == "label" && o["datatype"] == "BYTES")
    );
}

#[test]
fn binary_tensor_extension_in_and_out() {
    let s = Server::start("graphs/iris.yaml", &[]);
    let exp = expected();
    let rows: Vec<f32> = exp["rows"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
        })
        .collect();
    let n = rows.len() / 4;
    let header = json!({
        "inputs": [{"name": "input", "shape": [n, 4], "datatype": "FP32",
                    "parameters": {"binary_data_size": rows.len() * 4}}],
        "outputs": [{"name": "label", "parameters": {"binary_data": true}},
                    {"name": "probabilities", "parameters": {"binary_data": false}}]
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    for x in &rows {
        body.extend_from_slice(&x.to_le_bytes());
    }
    let r = block_on(request(
        &s.addr,
        "POST",
        "/v2/models/iris-lr/infer",
        &[("inference-header-content-length", header.len().to_string())],
        body,
    ))
    .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    let json_len: usize = r.headers["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let head: Value = serde_json::from_slice(&r.body[..json_len]).unwrap();
    assert_eq!(head["outputs"][0]["name"], "label");
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], n * 8);
    let labels: Vec<i64> = r.body[json_len..]
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let want: Vec<i64> = exp["iris-lr"]["label"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(labels, want);
    assert_eq!(head["outputs"][1]["data"].as_array().unwrap().len(), n * 3);
}

#[test]
fn routing_by_body_and_header() {
    let s = Server::start("graphs/iris.yaml", &[]);
    let mut req: Value = serde_json::from_str(&iris_request("b")).unwrap();
    req["model"] = json!("iris-rf");
    let r = post(&s.addr, "/", &req.to_string());
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["parameters"]["route"], "iris-rf");
    assert_eq!(r.json()["model_name"], "iris-rf");

    let r = block_on(request(
        &s.addr,
        "POST",
        "/",
        &[("x-model-name", "iris-lr".into())],
        iris_request("h").into_bytes(),
    ))
    .unwrap();
    assert_eq!(r.json()["parameters"]["route"], "iris-lr");
    // The graph's own URL with a header: what tritonclient users can set.
    for _ in 0..10 {
        let r = block_on(request(
            &s.addr,
            "POST",
            "/v2/models/iris/infer",
            &[("x-model-name", "iris-rf".into())],
            iris_request("h").into_bytes(),
        ))
        .unwrap();
        assert_eq!(r.json()["parameters"]["route"], "iris-rf");
    }
    req["model"] = json!("nope");
    let r = post(&s.addr, "/", &req.to_string());
    assert_eq!(r.status, 404);
}

#[test]
fn bad_requests_get_clear_errors_and_the_server_keeps_serving() {
    let s = Server::start("graphs/iris.yaml", &["--max-body-bytes", "4096"]);
    let infer = "/v2/models/iris-lr/infer";
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("malformed JSON", "{\"inputs\": [".into(), 400, "malformed inference request"),
        ("no inputs", "{\"inputs\": []}".into(), 400, "the request has no `inputs`"),
        (
            "data does not fill the shape",
            r#"{"inputs":[{"name":"input","shape":[2,4],"datatype":"FP32","data":[1,2,3,4]}]}"#.into(),
            400,
            "input `input`: tensor `input`: shape [2, 4] needs 8 elements, data has 4",
        ),
        (
            "unknown datatype",
            r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FLOAT","data":[1,2,3,4]}]}"#.into(),
            400,
            "unknown datatype `FLOAT`",
        ),
        (
            "wrong shape",
            r#"{"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}"#.into(),
            422,
            "step `iris-lr`: input `input` must have shape [-1, 4] but has shape [1, 3]",
        ),
        (
            "wrong dtype",
            r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"INT32","data":[1,2,3,4]}]}"#.into(),
            422,
            "step `iris-lr`: input `input` must be FP32 but is INT32",
        ),
        (
            "wrong tensor name",
            r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#.into(),
            400,
            "input `x` is not one `iris-lr` takes; it takes: `input` FP32 [-1, 4]",
        ),
        (
            "unknown requested output",
            r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"outputs":[{"name":"score"}]}"#.into(),
            400,
            "unknown output `score`; the outputs are: label, probabilities",
        ),
        (
            "oversized body",
            format!(r#"{{"inputs":[{{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}}],"pad":"{}"}}"#, "x".repeat(5000)),
            413,
            "larger than the limit of 4096 bytes",
        ),
    ];
    for (what, body, status, message) in cases {
        let r = post(&s.addr, infer, &body);
        assert_eq!(
            r.status,
            status,
            "{what}: {:?}",
            String::from_utf8_lossy(&r.body)
        );
        let error = r.error();
        assert!(
            error.contains(message),
            "{what}: {error:?} lacks {message:?}"
        );
    }
    let r = post(&s.addr, "/v2/models/nope/infer", "{}");
    assert_eq!(
        (r.status, r.error().contains("unknown model `nope`")),
        (404, true)
    );
    let r = post(
        &s.addr,
        "/v2/models/iris-lr/versions/7/infer",
        &iris_request("v"),
    );
    assert_eq!(
        (r.status, r.error()),
        (
            404,
            "model `iris-lr` has no version `7`; its versions are: 1".to_owned()
        )
    );
    let r = block_on(request(
        &s.addr,
        "POST",
        infer,
        &[("inference-header-content-length", "99999".into())],
        b"{}".to_vec(),
    ))
    .unwrap();
    assert_eq!(r.status, 400);
    assert!(
        r.error()
            .contains("Inference-Header-Content-Length is 99999"),
        "{}",
        r.error()
    );

    // Still serving, and still right.
    let r = post(&s.addr, infer, &iris_request("after"));
    assert_eq!(r.status, 200);
    assert_eq!(Value::Array(labels(&r)), expected()["iris-lr"]["label"]);
}

#[test]
fn all_datatypes_pass_through_a_graph() {
    // A flow of one noop transform echoes every OIP datatype, nested data flattened.
    let dir = tempfile::tempdir().unwrap();
    let graph = dir.path().join("echo.yaml");
    std::fs::write(
        &graph,
        "name: echo\ngraph: {kind: flow, steps: {pass: {kind: transform, op: noop}}}\n",
    )
    .unwrap();
    let s = Server::start(graph.to_str().unwrap(), &[]);
    let inputs = json!([
        {"name": "b", "shape": [2], "datatype": "BOOL", "data": [true, false]},
        {"name": "u8", "shape": [2], "datatype": "UINT8", "data": [0, 255]},
        {"name": "u16", "shape": [1], "datatype": "UINT16", "data": [65535]},
        {"name": "u32", "shape": [1], "datatype": "UINT32", "data": [4294967295u64]},
        {"name": "u64", "shape": [1], "datatype": "UINT64", "data": [18446744073709551615u64]},
        {"name": "i8", "shape": [2], "datatype": "INT8", "data": [-128, 127]},
        {"name": "i16", "shape": [1], "datatype": "INT16", "data": [-32768]},
        {"name": "i32", "shape": [1], "datatype": "INT32", "data": [-2147483648i64]},
        {"name": "i64", "shape": [1], "datatype": "INT64", "data": [-9223372036854775807i64]},
        {"name": "f16", "shape": [1], "datatype": "FP16", "data": [1.5]},
        {"name": "f32", "shape": [2, 2], "datatype": "FP32", "data": [[1.5, 2.5], [3.5, 4.5]]},
        {"name": "f64", "shape": [1], "datatype": "FP64", "data": [0.1]},
        {"name": "s", "shape": [2], "datatype": "BYTES", "data": ["héllo", ""]},
    ]);
    let r = post(
        &s.addr,
        "/v2/models/echo/infer",
        &json!({"inputs": inputs}).to_string(),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let out = r.json()["outputs"].clone();
    for (i, input) in inputs.as_array().unwrap().iter().enumerate() {
        let o = &out[i];
        assert_eq!(o["name"], input["name"]);
        assert_eq!(o["datatype"], input["datatype"]);
        assert_eq!(o["shape"], input["shape"]);
        let flat: Vec<Value> = match &input["data"] {
            Value::Array(a) => a
                .iter()
                .flat_map(|x| x.as_array().cloned().unwrap_or(vec![x.clone()]))
                .collect(),
            _ => unreachable!(),
        };
        assert_eq!(o["data"], Value::Array(flat), "{}", input["name"]);
    }
}

#[test]
fn an_error_handler_does_not_answer_for_the_callers_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    let graph = dir.path().join("fallback.yaml");
    let model = root().join("models/fixed_batch.onnx");
    std::fs::write(
        &graph,
        format!(
            "name: guarded
graph:
  kind: flow
  steps:
    m: {{kind: model, class: onnx, model_path: {}, on_error: fallback}}
    fallback:
      kind: error_handler
      outputs: [{{name: y, datatype: FP32, shape: [1, 4], data: [0, 0, 0, 0]}}]
",
            model.display()
        ),
    )
    .unwrap();
    let s = Server::start(graph.to_str().unwrap(), &[]);
    let one = r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#;
    let r = post(&s.addr, "/v2/models/guarded/infer", one);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["outputs"][0]["data"], json!([1.0, 2.0, 3.0, 4.0]));
    assert!(r.json().get("parameters").is_none());

    // Two rows do not fit the model's fixed [1, 4]: that is the caller's mistake, answered
    // with its 422, not with the fallback's 200.
    let two =
        r#"{"inputs":[{"name":"x","shape":[2,4],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}]}"#;
    let r = post(&s.addr, "/v2/models/guarded/infer", two);
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert!(
        r.error()
            .contains("input `x` must have shape [1, 4] but has shape [2, 4]"),
        "{}",
        r.error()
    );
}

/// The same 72×72 gradient the golden test and its NumPy reference use.
fn gradient_image(format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_fn(72, 72, |x, y| {
        image::Rgb([
            ((x * 3) % 256) as u8,
            ((y * 3) % 256) as u8,
            (((x + y) * 2) % 256) as u8,
        ])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

#[test]
fn image_pipeline_classifies_png_and_jpeg() {
    let s = Server::start("graphs/image-classifier.yaml", &[]);
    let images = [
        gradient_image(image::ImageFormat::Png),
        gradient_image(image::ImageFormat::Jpeg),
    ];
    let mut binary = Vec::new();
    for img in &images {
        binary.extend_from_slice(&(img.len() as u32).to_le_bytes());
        binary.extend_from_slice(img);
    }
    let header = json!({
        "inputs": [{"name": "image", "shape": [2], "datatype": "BYTES",
                    "parameters": {"binary_data_size": binary.len()}}],
        "outputs": [{"name": "top_labels"}, {"name": "probabilities"}]
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&binary);
    let r = block_on(request(
        &s.addr,
        "POST",
        "/v2/models/image-classifier/infer",
        &[("inference-header-content-length", header.len().to_string())],
        body,
    ))
    .unwrap();
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    let labels = &v["outputs"][0];
    assert_eq!(labels["shape"], json!([2, 3]));
    // PNG is lossless: exactly the NumPy reference. JPEG is lossy: same ranking.
    assert_eq!(
        labels["data"],
        json!(["cat", "horse", "bird", "cat", "horse", "bird"])
    );
    let p: Vec<f64> = v["outputs"][1]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let reference = [0.47180575, 0.08221682, 0.16437396, 0.04285335, 0.23875014];
    for (got, want) in p[..5].iter().zip(reference) {
        assert!((got - want).abs() < 1e-4, "{p:?}");
    }

    let bad = json!({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["not an image"]}]});
    let r = post(
        &s.addr,
        "/v2/models/image-classifier/infer",
        &bad.to_string(),
    );
    assert_eq!(r.status, 422);
    assert_eq!(
        r.error(),
        "step `decode`: image 0 of `image`: not a PNG or JPEG image"
    );
}

fn output(v: &Value, name: &str) -> Value {
    v["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn explain_adds_per_feature_attributions() {
    let s = Server::start("graphs/iris.yaml", &[]);
    let r = post(&s.addr, "/v2/models/iris-lr/explain", &iris_request("x1"));
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(output(&v, "label")["data"], expected()["iris-lr"]["label"]);
    let a = output(&v, "attributions");
    assert_eq!(a["datatype"], "FP32");
    assert_eq!(a["shape"], json!([10, 4]));
    // Petal measurements (features 2 and 3) decide iris classes: together they carry more
    // weight than the sepal ones for the first setosa row.
    let row0: Vec<f64> = a["data"].as_array().unwrap()[..4]
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert!(row0[2] + row0[3] > row0[0] + row0[1], "{row0:?}");
    // /infer is unchanged: no attributions.
    let r = post(&s.addr, "/v2/models/iris-lr/infer", &iris_request("x2"));
    assert!(output(&r.json(), "attributions").is_null());

    let s = Server::start("graphs/iris-ensemble.yaml", &[]);
    let r = post(
        &s.addr,
        "/v2/models/iris-ensemble/explain",
        &iris_request("x3"),
    );
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        output(&r.json(), "attributions")["shape"],
        json!([10, 4]),
        "the members' attributions, averaged"
    );

    let s = Server::start("graphs/image-classifier.yaml", &[]);
    let img =
        json!({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["x"]}]});
    let r = post(
        &s.addr,
        "/v2/models/image-classifier/explain",
        &img.to_string(),
    );
    assert_eq!(
        r.status, 422,
        "the image is decoded before the model refuses"
    );
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("t.yaml");
    std::fs::write(
        &g,
        "name: t\ngraph: {kind: flow, steps: {s: {kind: transform, op: noop}}}\n",
    )
    .unwrap();
    let s = Server::start(g.to_str().unwrap(), &[]);
    let r = post(&s.addr, "/v2/models/t/explain", &iris_request("x4"));
    assert_eq!(r.status, 400);
    assert!(r.error().contains("`t` cannot explain"), "{}", r.error());
}

#[test]
fn transform_ops_through_http() {
    // x = [0, 5, 10] → min_max [0, 10] → [0, .5, 1] → clip [.2, .8] → [.2, .5, .8]
    // → threshold .5 on x → label [0, 1, 1] → one_hot depth 2 → [[1,0],[0,1],[0,1]]
    // → cast INT32 → reshape [2, 3]; and top_k 2 over the clipped x → values [.8, .5],
    // indices [2, 1], labels [c, b].
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("ops.yaml");
    std::fs::write(
        &g,
        "name: ops
graph:
  kind: flow
  steps:
    mm: {kind: transform, op: min_max, args: {min: [0], max: [10], tensors: [x]}}
    cl: {kind: transform, op: clip, after: mm, args: {min: 0.2, max: 0.8}}
    th: {kind: transform, op: threshold, after: cl, args: {tensor: x, threshold: 0.5}}
    oh: {kind: transform, op: one_hot, after: th, args: {depth: 2, output: hot}}
    ca: {kind: transform, op: cast, after: oh, args: {to: INT32, tensors: [hot]}}
    rs: {kind: transform, op: reshape, after: ca, args: {tensor: hot, shape: [2, -1]}}
    tk: {kind: transform, op: top_k, after: rs, args: {k: 2, tensor: x, labels: [a, b, c]}}
",
    )
    .unwrap();
    let s = Server::start(g.to_str().unwrap(), &[]);
    let req = r#"{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","data":[0,5,10]}]}"#;
    let r = post(&s.addr, "/v2/models/ops/infer", req);
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    let data = |name: &str| output(&v, name)["data"].clone();
    let close = |got: Value, want: &[f64]| {
        let got: Vec<f64> = got
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert!(
            got.len() == want.len() && got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-6),
            "{got:?} vs {want:?}"
        );
    };
    close(data("x"), &[0.2, 0.5, 0.8]);
    assert_eq!(data("label"), json!([0, 1, 1]));
    assert_eq!(output(&v, "hot")["datatype"], "INT32");
    assert_eq!(output(&v, "hot")["shape"], json!([2, 3]));
    assert_eq!(data("hot"), json!([1, 0, 0, 1, 0, 1]));
    close(data("top_values"), &[0.8, 0.5]);
    assert_eq!(data("top_indices"), json!([2, 1]));
    assert_eq!(data("top_labels"), json!(["c", "b"]));
}

/// A path served for another method answers 405 with `Allow` and an `{"error"}` naming the
/// method to use (a GET on `/infer` is the usual mistake).
#[test]
fn a_wrong_method_is_405_naming_the_right_one() {
    let s = Server::start("graphs/iris.yaml", &[]);
    for (method_is_get, path, allowed) in [
        (true, "/v2/models/iris-rf/infer", "POST"),
        (true, "/v2/models/iris-rf/versions/1/predict", "POST"),
        (false, "/v2/models/iris-rf", "GET"),
        (false, "/v2/health/ready", "GET"),
        (false, "/v2/models/iris-rf/ready", "GET"),
    ] {
        let r = if method_is_get {
            get_blocking(&s.addr, path)
        } else {
            post(&s.addr, path, "{}")
        };
        assert_eq!(r.status, 405, "{path}: {:?}", r.body);
        assert_eq!(r.headers["allow"], allowed, "{path}");
        assert!(
            r.error().contains(&format!("use {allowed}")),
            "{path}: {}",
            r.error()
        );
    }
}

/// `servegraph bench http` against an endpoint where every request fails says why: the
/// first answer's status and body.
#[test]
fn bench_http_shows_the_first_error_when_nothing_succeeds() {
    let s = Server::start("graphs/iris.yaml", &[]);
    let out = bin()
        .args([
            "bench",
            "http",
            "--url",
            &format!("http://{}/v2/models/nope/infer", s.addr),
            "--data",
            "{}",
            "--duration",
            "1",
            "--warmup",
            "0",
            "--concurrency",
            "2",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("the first answer was 404 Not Found") && stderr.contains("nope"),
        "{stderr}"
    );
}

/// MLRun's row body through the graph's router is answered as MLRun's router answers: with
/// the body of the model it routed to (`model_name` is the route's).
#[test]
fn mlrun_rows_through_a_router_say_which_route_answered() {
    let s = Server::start("graphs/iris.yaml", &[]);
    let rows = json!({"id": "r1", "inputs": [[5.1, 3.5, 1.4, 0.2]]}).to_string();
    for _ in 0..4 {
        let r = post(&s.addr, "/", &rows);
        assert_eq!(r.status, 200, "{:?}", r.body);
        let v = r.json();
        assert!(
            v["model_name"] == "iris-lr" || v["model_name"] == "iris-rf",
            "{v}"
        );
        assert_eq!(v["id"], "r1");
    }
}

/// A model name one typo away from a served one (in the URL, the body's `model` or the
/// `x-model-name` header) gets a "did you mean".
#[test]
fn an_unknown_model_near_a_known_one_gets_a_did_you_mean() {
    let s = Server::start("graphs/iris.yaml", &[]);
    let r = post(&s.addr, "/v2/models/iris-l/infer", &iris_request("d"));
    assert_eq!(r.status, 404);
    assert!(
        r.error()
            .contains("unknown model `iris-l` (did you mean `iris-lr`?)"),
        "{}",
        r.error()
    );
    let r = block_on(request(
        &s.addr,
        "POST",
        "/",
        &[("x-model-name", "iris-fr".to_owned())],
        iris_request("d").into_bytes(),
    ))
    .unwrap();
    assert_eq!(r.status, 404);
    assert!(
        r.error().contains("did you mean `iris-rf`?"),
        "{}",
        r.error()
    );
}

/// The metadata's outputs as `(name, datatype)`, and a response's.
fn named_types(outputs: &Value) -> Vec<(String, String)> {
    outputs
        .as_array()
        .expect("outputs")
        .iter()
        .map(|o| {
            let s = |k: &str| o[k].as_str().unwrap().to_owned();
            (s("name"), s("datatype"))
        })
        .collect()
}

#[test]
fn a_route_inside_a_flow_describes_the_flow_it_runs() {
    // `/v2/models/cnn-a/infer` runs the whole flow with the route `cnn-a` taken: its
    // metadata says what that run takes (the encoded image, not the CNN's tensor) and answers
    // (the top_k step's BYTES labels, not the CNN's logits).
    let dir = tempfile::tempdir().unwrap();
    let graph = dir.path().join("images.yaml");
    let cnn = root().join("models/cnn.onnx");
    let iris = root().join("models/iris_lr.onnx");
    std::fs::write(
        &graph,
        format!(
            "name: images
graph:
  kind: flow
  steps:
    decode: {{kind: transform, op: image, args: {{resize: [64, 64]}}}}
    pick:
      kind: router
      after: decode
      policy: {{type: weighted, weights: {{cnn-a: 50, cnn-b: 50}}}}
      routes:
        cnn-a: {{kind: model, class: onnx, model_path: {cnn}}}
        cnn-b: {{kind: model, class: onnx, model_path: {cnn}}}
    top: {{kind: transform, after: pick, op: top_k, args: {{k: 2, tensor: logits, labels: [cat, dog, bird, fish, horse]}}}}
",
            cnn = cnn.display()
        ),
    )
    .unwrap();
    let s = Server::start(graph.to_str().unwrap(), &[]);
    let md = get_blocking(&s.addr, "/v2/models/cnn-a").json();
    assert_eq!(
        md["inputs"],
        json!([{"name": "image", "datatype": "BYTES", "shape": [-1]}])
    );
    let img = gradient_image(image::ImageFormat::Png);
    let mut binary = (img.len() as u32).to_le_bytes().to_vec();
    binary.extend_from_slice(&img);
    let header = json!({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                    "parameters": {"binary_data_size": binary.len()}}]})
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&binary);
    let r = block_on(request(
        &s.addr,
        "POST",
        "/v2/models/cnn-a/infer",
        &[("inference-header-content-length", header.len().to_string())],
        body,
    ))
    .unwrap();
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["parameters"]["route"], "cnn-a");
    assert_eq!(
        named_types(&md["outputs"]),
        named_types(&r.json()["outputs"])
    );
    assert!(
        named_types(&md["outputs"]).contains(&("top_labels".into(), "BYTES".into())),
        "{md}"
    );

    // A router of classifiers then a label_map: each route's `label` is the flow's BYTES.
    let graph = dir.path().join("labels.yaml");
    std::fs::write(
        &graph,
        format!(
            "name: labelled
graph:
  kind: flow
  steps:
    pick:
      kind: router
      policy: {{type: weighted, weights: {{lr: 50, lr2: 50}}}}
      routes:
        lr: {{kind: model, class: onnx, model_path: {iris}}}
        lr2: {{kind: model, class: onnx, model_path: {iris}}}
    label: {{kind: transform, op: label_map, after: pick, args: {{labels: [setosa, versicolor, virginica]}}}}
",
            iris = iris.display()
        ),
    )
    .unwrap();
    let s = Server::start(graph.to_str().unwrap(), &[]);
    for model in ["labelled", "lr", "lr2"] {
        let md = get_blocking(&s.addr, &format!("/v2/models/{model}")).json();
        let r = post(
            &s.addr,
            &format!("/v2/models/{model}/infer"),
            &iris_request("l"),
        );
        assert_eq!(r.status, 200, "{model}: {:?}", r.body);
        let answered = named_types(&r.json()["outputs"]);
        assert_eq!(named_types(&md["outputs"]), answered, "{model}");
        assert!(
            answered.contains(&("label".into(), "BYTES".into())),
            "{model}"
        );
    }
}
