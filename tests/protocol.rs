//! Protocol conformance (issue 12): each behaviour driven through the real binary by the
//! unchanged `tritonclient[http]` (and the `kserve` SDK's `InferenceRESTClient`), one test
//! per behaviour, from `tests/python/protocol_check.py`; raw HTTP where no client call exists.

mod common;

use common::*;
use serde_json::{Value, json};

/// Runs one case of `protocol_check.py` against `s`.
fn check(case: &str, s: &Server) {
    let expected = root().join("models/iris_expected.json");
    python_case(
        "protocol_check.py",
        case,
        &[s.addr.as_ref(), expected.as_ref()],
    );
}

fn iris() -> Server {
    Server::start("graphs/iris.yaml", &[])
}

#[test]
fn statistics_in_tritons_shape_for_every_model() {
    check("statistics", &iris());
}

#[test]
fn model_configuration_in_tritons_shape() {
    check("config", &iris());
}

#[test]
fn classification_answers_the_top_classes() {
    check("classification", &iris());
}

#[test]
fn repository_index_lists_models_and_load_needs_the_admin_token() {
    check("repository", &iris());
}

#[test]
fn listed_versions_answer_and_a_body_can_name_one() {
    check("versions", &iris());
}

#[test]
fn bytes_are_bytes_both_ways() {
    check(
        "bytes_both_ways",
        &Server::start("tests/graphs/echo.yaml", &[]),
    );
}

#[test]
fn a_raw_binary_request_is_the_single_inputs_bytes() {
    check("raw_binary", &iris());
}

#[test]
fn trace_settings_in_tritons_shape() {
    check("trace", &iris());
}

#[test]
fn binary_data_output_applies_as_tritons_server_applies_it() {
    check("binary_data_output", &iris());
}

#[test]
fn gzip_and_deflate_bodies_and_answers() {
    check(
        "compression",
        &Server::start("graphs/iris.yaml", &["--max-body-bytes", "65536"]),
    );
}

#[test]
fn an_input_the_model_does_not_take_is_refused() {
    check("extra_input", &iris());
}

#[test]
fn the_kserve_rest_client_works_unchanged() {
    check("kserve_client", &iris());
}

/// Labels come from the graph: the image classifier's `top_k` names its classes.
#[test]
fn classification_labels_come_from_the_graph() {
    let s = Server::start("graphs/image-classifier.yaml", &[]);
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/golden/image-classifier.json")).unwrap(),
    )
    .unwrap();
    let mut request = golden[0]["request"].clone();
    request["outputs"] = json!([{"name": "probabilities", "parameters": {"classification": 2}}]);
    let r = post(
        &s.addr,
        "/v2/models/image-classifier/infer",
        &request.to_string(),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(
        v["outputs"],
        json!([{"name": "probabilities", "datatype": "BYTES", "shape": [1, 2],
                "data": ["0.471806:0:cat", "0.238750:4:horse"]}])
    );
}

/// A body in an encoding the server does not read gets a JSON error naming it.
#[test]
fn an_unknown_content_encoding_is_refused_with_a_reason() {
    let s = iris();
    let r = block_on(request(
        &s.addr,
        "POST",
        "/v2/models/iris-lr/infer",
        &[("content-encoding", "br".into())],
        b"xx".to_vec(),
    ))
    .unwrap();
    assert_eq!(r.status, 415);
    assert!(
        r.error().contains("send gzip, deflate or identity"),
        "{}",
        r.error()
    );
}

/// As Triton does, only inference answers are compressed when `Accept-Encoding` allows:
/// metadata, configuration, statistics and errors stay plain (`tritonclient.http.aio` sends
/// the header and reads those as JSON).
#[test]
fn only_inference_answers_are_compressed() {
    let s = iris();
    let gzip = [("accept-encoding", "gzip".to_owned())];
    for path in [
        "/v2/models/iris-lr",
        "/v2/models/iris-lr/config",
        "/v2/models/iris-lr/stats",
        "/v2/models/nope",
        "/v2",
    ] {
        let r = block_on(request(&s.addr, "GET", path, &gzip, Vec::new())).unwrap();
        assert!(
            r.headers.get("content-encoding").is_none(),
            "{path}: {:?}",
            r.headers
        );
        let _: Value = r.json();
    }
    let r = block_on(request(
        &s.addr,
        "POST",
        "/v2/models/iris-lr/infer",
        &gzip,
        iris_request("z").into_bytes(),
    ))
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-encoding"], "gzip");
    // An inference error is not compressed either.
    let r = block_on(request(
        &s.addr,
        "POST",
        "/v2/models/iris-lr/infer",
        &gzip,
        br#"{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2]}]}"#
            .to_vec(),
    ))
    .unwrap();
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(
        r.headers.get("content-encoding").is_none(),
        "{:?}",
        r.headers
    );
    let _: Value = r.json();
}

/// `GET /v2/models` lists the models as MLRun does: a router's routes (`{"models": ["m1",
/// "m3:v1", ...]}`).
#[test]
fn the_model_list_names_every_model() {
    let s = iris();
    for path in ["/v2/models", "/v2/models/"] {
        let r = get_blocking(&s.addr, path);
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.json(), json!({"models": ["iris-lr", "iris-rf"]}));
    }
}

/// Class labels of a versioned route (`lr:2`) label its classification as the unversioned
/// model's do.
#[test]
fn classification_labels_follow_a_versioned_route() {
    let dir = tempfile::tempdir().unwrap();
    let model = root().join("models/iris_lr.onnx");
    let graph = dir.path().join("g.yaml");
    std::fs::write(
        &graph,
        format!(
            "name: g\ngraph:\n  kind: router\n  routes:\n    lr:2:\n      kind: model\n      class: onnx\n      model_path: {}\n      postprocess: [{{op: label_map, args: {{labels: [setosa, versicolor, virginica], tensor: label}}}}]\n",
            model.display()
        ),
    )
    .unwrap();
    let root_dir = root().display().to_string();
    let s = Server::start(graph.to_str().unwrap(), &["--model-root", &root_dir]);
    let mut request: Value = serde_json::from_str(&iris_request("v")).unwrap();
    request["outputs"] = json!([{"name": "probabilities", "parameters": {"classification": 1}}]);
    let r = post(
        &s.addr,
        "/v2/models/lr/versions/2/infer",
        &request.to_string(),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let answer = r.json()["outputs"][0]["data"][0]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(answer.ends_with(":0:setosa"), "{answer}");
}

/// The repository index reads Triton's `{"ready": true}` (only ready models) and refuses a
/// `ready` that is not a boolean.
#[test]
fn the_repository_index_reads_its_ready_flag() {
    let s = iris();
    for body in ["", "{}", r#"{"ready": true}"#, r#"{"ready": false}"#] {
        let r = post(&s.addr, "/v2/repository/index", body);
        assert_eq!(r.status, 200, "{body}: {:?}", r.body);
        let entries = r.json();
        assert!(
            entries
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == "iris-lr" && e["state"] == "READY"),
            "{body}: {entries}"
        );
    }
    let r = post(&s.addr, "/v2/repository/index", r#"{"ready": "yes"}"#);
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(r.error().contains("`ready` is true"), "{}", r.error());
    let r = post(&s.addr, "/v2/repository/index", "{not json");
    assert_eq!(r.status, 400, "{:?}", r.body);
}

/// Triton's raw binary request for a model whose first dimension is a batch (`max_batch_size`,
/// without the batcher): one row, the rest of the shape deduced from the bytes, every output
/// binary; the model configuration leaves the batch dimension out of `dims`, and a request of
/// more rows than `max_batch_size` is a 400. Without it, two variable dimensions cannot be
/// deduced: a 400 saying what to declare.
#[test]
fn a_raw_binary_request_to_a_batching_model_is_one_row() {
    let dir = tempfile::tempdir().unwrap();
    let graph = dir.path().join("raw.yaml");
    let fields = format!(
        "class: python, path: {}, python: {}, class_name: Echo, \
         inputs: [{{name: input, datatype: FP32, shape: [-1, -1]}}], \
         outputs: [{{name: output, datatype: FP32, shape: [-1, -1]}}]",
        root().join("tests/python/models/models.py").display(),
        test_python().display()
    );
    std::fs::write(
        &graph,
        format!(
            "name: raw\ngraph:\n  kind: router\n  routes:\n    \
             rows: {{kind: model, max_batch_size: 4, {fields}}}\n    \
             whole: {{kind: model, {fields}}}\n"
        ),
    )
    .unwrap();
    let s = Server::start(graph.to_str().unwrap(), &[]);
    let raw = |model: &str, values: &[f32]| {
        let body: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        block_on(request(
            &s.addr,
            "POST",
            &format!("/v2/models/{model}/infer"),
            &[("inference-header-content-length", "0".into())],
            body,
        ))
        .unwrap()
    };
    let r = raw("rows", &[1.0, 2.0, 3.0]);
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.headers["content-type"], "application/octet-stream");
    let n: usize = r.headers["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let head: Value = serde_json::from_slice(&r.body[..n]).unwrap();
    let out = &head["outputs"][0];
    assert_eq!(out["shape"], json!([1, 3]), "{head}");
    assert_eq!(out["parameters"]["binary_data_size"], 12, "{head}");
    let data: Vec<f32> = r.body[n..n + 12]
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(data, [1.0, 2.0, 3.0]);

    let config = get_blocking(&s.addr, "/v2/models/rows/config").json();
    assert_eq!(config["max_batch_size"], 4, "{config}");
    assert_eq!(config["input"][0]["dims"], json!([-1]), "{config}");
    assert!(config.get("dynamic_batching").is_none(), "{config}");

    let five = json!({"inputs": [{"name": "input", "shape": [5, 1], "datatype": "FP32",
                                  "data": [1, 2, 3, 4, 5]}]});
    let r = post(&s.addr, "/v2/models/rows/infer", &five.to_string());
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(
        r.error(),
        "step `rows`: input `input` has 5 rows (shape [5, 1]), more than model `rows`'s max_batch_size of 4"
    );

    let r = raw("whole", &[1.0, 2.0, 3.0]);
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(
        r.error().contains("declare the model's `max_batch_size`"),
        "{}",
        r.error()
    );
}

/// The generate extension: a flat request of the model's inputs by name, a flat answer; with
/// `generate_stream`, server-sent events, one per piece a Python `predict` yields as it
/// yields it (one with the whole answer for a model that returns it at once).
#[test]
fn generate_and_generate_stream_answer_text() {
    let dir = tempfile::tempdir().unwrap();
    let graph = dir.path().join("text.yaml");
    let model = |class: &str| {
        format!(
            "{{kind: model, class: python, path: {}, python: {}, class_name: {class}, \
             inputs: [{{name: text_input, datatype: BYTES, shape: [1]}}]}}",
            root().join("tests/python/models/models.py").display(),
            test_python().display()
        )
    };
    std::fs::write(
        &graph,
        format!(
            "name: text\ngraph:\n  kind: router\n  routes:\n    words: {}\n    whole: {}\n",
            model("Words"),
            model("Whole")
        ),
    )
    .unwrap();
    let s = Server::start(graph.to_str().unwrap(), &[]);
    let request =
        r#"{"id": "g1", "text_input": "hello big world", "parameters": {"max_tokens": 2}}"#;
    let r = post(&s.addr, "/v2/models/words/generate", request);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.json(),
        json!({"id": "g1", "model_name": "words", "model_version": "1", "text_output": "HELLO BIG "})
    );

    let events = |r: &Reply| -> Vec<Value> {
        let text = String::from_utf8(r.body.to_vec()).unwrap();
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| serde_json::from_str(e.strip_prefix("data: ").expect("data: ")).unwrap())
            .collect()
    };
    let r = post(&s.addr, "/v2/models/words/generate_stream", request);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.headers["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let got: Vec<Value> = events(&r)
        .iter()
        .map(|e| e["text_output"].clone())
        .collect();
    assert_eq!(got, [json!("HELLO "), json!("BIG ")]);
    assert_eq!(events(&r)[0]["id"], "g1");

    let r = post(
        &s.addr,
        "/v2/models/whole/generate_stream",
        r#"{"text_input": "all at once"}"#,
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let got = events(&r);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["text_output"], "ALL AT ONCE");

    // A failure after the first piece is the last event; one before any is a status.
    let r = post(
        &s.addr,
        "/v2/models/words/generate_stream",
        r#"{"text_input": "one fail two"}"#,
    );
    let got = events(&r);
    assert_eq!(got[0]["text_output"], "ONE ");
    assert!(
        got[1]["error"]
            .as_str()
            .unwrap()
            .contains("cannot say fail"),
        "{got:?}"
    );
    // Each piece is sent as it is yielded: the first arrives long before the last.
    let (first, end) = stream_times(
        &s.addr,
        "/v2/models/words/generate_stream",
        r#"{"text_input": "a b c", "parameters": {"pause": 0.6}}"#,
    );
    assert!(
        first + std::time::Duration::from_millis(800) < end,
        "{first:?} {end:?}"
    );

    let r = post(&s.addr, "/v2/models/nope/generate_stream", request);
    assert_eq!(r.status, 404, "{:?}", r.body);
    let r = post(
        &s.addr,
        "/v2/models/words/generate_stream",
        r#"{"parameters": {}}"#,
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(
        r.error().contains("names none of its inputs"),
        "{}",
        r.error()
    );
}

/// An OIP request posted to `/infer_stream` (or, as MLServer's clients post it, to
/// `/generate_stream` and `/generate`) is answered in the OIP's shape: server-sent events,
/// each an OIP response of one piece as the model yields it; `/generate` one OIP response.
#[test]
fn oip_requests_stream_oip_responses() {
    let dir = tempfile::tempdir().unwrap();
    let graph = dir.path().join("text.yaml");
    std::fs::write(
        &graph,
        format!(
            "name: text
graph:
  kind: router
  routes:
    words: {{kind: model, class: python, path: {}, python: {}, class_name: Words}}
",
            root().join("tests/python/models/models.py").display(),
            test_python().display()
        ),
    )
    .unwrap();
    let s = Server::start(graph.to_str().unwrap(), &[]);
    let request =
        json!({"id": "s1", "parameters": {"max_tokens": 2}, "inputs": [{"name": "text_input",
        "shape": [1], "datatype": "BYTES", "parameters": null, "data": ["hello big world"]}],
        "outputs": null})
        .to_string();
    for path in ["infer_stream", "generate_stream"] {
        let r = post(&s.addr, &format!("/v2/models/words/{path}"), &request);
        assert_eq!(r.status, 200, "{:?}", r.body);
        let events: Vec<Value> = String::from_utf8(r.body.to_vec())
            .unwrap()
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| serde_json::from_str(e.strip_prefix("data: ").expect("data: ")).unwrap())
            .collect();
        assert_eq!(
            events,
            [
                // Each piece as the class yields it: a str, a tensor of no dimensions.
                json!({"model_name": "words", "id": "s1", "outputs": [
                    {"name": "text_output", "datatype": "BYTES", "shape": [], "data": ["HELLO "]}]}),
                json!({"model_name": "words", "id": "s1", "outputs": [
                    {"name": "text_output", "datatype": "BYTES", "shape": [], "data": ["BIG "]}]}),
            ],
            "{path}"
        );
    }
    let r = post(&s.addr, "/v2/models/words/generate", &request);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.json()["outputs"],
        json!([{"name": "text_output", "datatype": "BYTES", "shape": [], "data": ["HELLO BIG "]}])
    );
}

/// When the first `data:` event of an answer arrived, and when the answer ended.
fn stream_times(addr: &str, path: &str, body: &str) -> (std::time::Duration, std::time::Duration) {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    write!(
        conn,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let start = std::time::Instant::now();
    let (mut seen, mut first, mut buf) = (Vec::new(), None, [0u8; 4096]);
    loop {
        let n = conn.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
        if first.is_none() && seen.windows(5).any(|w| w == b"data:") {
            first = Some(start.elapsed());
        }
    }
    (first.expect("an event"), start.elapsed())
}

/// Writes a graph of one ONNX model `lr` (iris) whose `probabilities` output names a label
/// file, with the file holding `labels` (none: no file), in a new folder.
fn labeled_graph(labels: Option<&str>) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let graph = dir.path().join("g.yaml");
    std::fs::write(
        &graph,
        format!(
            "name: g\ngraph:\n  kind: router\n  routes:\n    lr:\n      kind: model\n      class: onnx\n      model_path: {}\n      outputs: [{{name: probabilities, label_filename: iris-labels.txt}}]\n",
            root().join("models/iris_lr.onnx").display()
        ),
    )
    .unwrap();
    if let Some(labels) = labels {
        std::fs::write(dir.path().join("iris-labels.txt"), labels).unwrap();
    }
    (dir, graph)
}

/// An ONNX model's output with a `label_filename` (Triton's): classification of that output
/// answers `value:index:label`, line i of the file naming class i; another output has none.
#[test]
fn classification_labels_come_from_an_outputs_label_file() {
    let (_dir, graph) = labeled_graph(Some("setosa\r\nversicolor\nvirginica\n"));
    let root_dir = root().display().to_string();
    let s = Server::start(graph.to_str().unwrap(), &["--model-root", &root_dir]);
    let mut request: Value = serde_json::from_str(&iris_request("v")).unwrap();
    request["outputs"] = json!([
        {"name": "probabilities", "parameters": {"classification": 3}},
        {"name": "label", "parameters": {"classification": 1}}
    ]);
    let r = post(&s.addr, "/v2/models/lr/infer", &request.to_string());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let answer = r.json();
    let probabilities = &answer["outputs"][0];
    assert_eq!(probabilities["name"], "probabilities", "{answer}");
    let expected = expected();
    let names = ["setosa", "versicolor", "virginica"];
    for (row, p) in probabilities["data"]
        .as_array()
        .unwrap()
        .chunks(3)
        .zip(expected["iris-lr"]["probabilities"].as_array().unwrap())
    {
        let p: Vec<f64> = p
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let best = (0..3).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
        let first = row[0].as_str().unwrap();
        assert!(
            first.ends_with(&format!(":{best}:{}", names[best])),
            "{first} for {p:?}"
        );
        assert!(
            row.iter()
                .all(|c| names.iter().any(|n| c.as_str().unwrap().ends_with(n))),
            "{row:?}"
        );
    }
    let label = answer["outputs"][1]["data"][0].as_str().unwrap();
    assert_eq!(label.split(':').count(), 2, "{label}");
}

/// A missing or empty label file is a validation error naming the step, the output and the
/// file, and `serve` refuses the graph.
#[test]
fn a_missing_or_empty_label_file_is_refused_by_name() {
    for (labels, why) in [(None, "no such file"), (Some(""), "it is empty")] {
        let (_dir, graph) = labeled_graph(labels);
        let out = bin().arg("validate").arg(&graph).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        for part in [
            "lr",
            "output `probabilities`",
            "`label_filename` `iris-labels.txt`",
            why,
        ] {
            assert!(text.contains(part), "{part} not in {text}");
        }
    }
}
