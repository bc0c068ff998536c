//! Compiles `proto/inference.proto` (the gRPC protocol, feature `grpc`) with protox, a
//! protobuf compiler in Rust, so building needs no `protoc`.

fn main() {
    println!("cargo:rerun-if-changed=proto/inference.proto");
    #[cfg(feature = "grpc")]
    grpc();
}

#[cfg(feature = "grpc")]
fn grpc() {
    let fds = protox::compile(["proto/inference.proto"], ["proto"])
        .unwrap_or_else(|e| panic!("proto/inference.proto: {e}"));
    // The statistics and the repository index are built as JSON for HTTP and read into
    // their messages from it (field names are Triton's JSON names).
    let from_json = "#[derive(serde::Deserialize)] #[serde(default)]";
    let mut config = tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(false)
        .generate_default_stubs(true)
        .bytes(".inference.ModelInferRequest.raw_input_contents")
        .bytes(".inference.ModelInferResponse.raw_output_contents");
    for message in [
        "StatisticDuration",
        "InferStatistics",
        "InferResponseStatistics",
        "InferBatchStatistics",
        "MemoryUsage",
        "ModelStatistics",
        "ModelStatisticsResponse",
    ] {
        config = config.type_attribute(format!(".inference.{message}"), from_json);
    }
    config
        .compile_fds(fds)
        .unwrap_or_else(|e| panic!("generating the gRPC code: {e}"));
}
