//! servegraph's own instructions per request, counted under `valgrind --tool=callgrind`: a
//! figure the machine's other load does not move (issue 27). `scripts/bench-instructions.sh
//! --check` serves `graphs/iris.yaml` under callgrind, warms it up (the ONNX model's inline
//! warm-up included), counts 300 requests to `iris-lr` one after another, and fails when the
//! instructions that are not ONNX Runtime's grew by more than 10% over the value committed in
//! `scripts/instructions.json` for this build's profile (`debug` for `cargo test`, `release`
//! for `cargo test --release`). Run the script without `--check` to see where they go.

mod common;

use common::*;

#[test]
fn own_instructions_per_request_stay_within_ten_percent_of_the_committed_count() {
    let valgrind = std::process::Command::new("valgrind")
        .arg("--version")
        .output();
    assert!(
        valgrind.is_ok_and(|o| o.status.success()),
        "valgrind is missing: `scripts/setup.sh --test` installs it (apt-get install -y valgrind)"
    );
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let out = std::process::Command::new("bash")
        .arg(root().join("scripts/bench-instructions.sh"))
        .arg("--check")
        .current_dir(root())
        .env("SERVEGRAPH_BIN", env!("CARGO_BIN_EXE_servegraph"))
        .env("PROFILE", profile)
        .env("CASES", "sg:iris-lr:1")
        .env("REQUESTS", "300")
        .env("WARMUP", "300")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "instruction check failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("check: sg:iris-lr:1:") && stdout.contains(": ok"),
        "the check did not run:\n{stdout}\n{stderr}"
    );
}
