# syntax=docker/dockerfile:1
# servegraph's container image (docs/kubernetes.md#the-image). Build from the repository root:
#
#   docker build -t servegraph:0.1.0 .                      # ONNX models
#   docker build --target python -t servegraph:0.1.0-python .   # + Python 3 and NumPy for Python models
#
# Stages: `build` compiles the binary; `ort` takes ONNX Runtime's shared library from its
# official PyPI wheel (as scripts/setup.sh does); `runtime` is Debian slim with both, the
# entrypoint, and a non-root user. tests/helm.rs reads this file's runtime stage (its COPY
# and ENV lines) to lay out the same files for its kubelet emulator.

ARG RUST_VERSION=1.95
ARG ORT_VERSION=1.31.1

FROM rust:${RUST_VERSION}-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake pkg-config zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin servegraph \
 && mkdir -p /out && cp target/release/servegraph /out/servegraph

FROM python:3.12-slim-bookworm AS ort
ARG ORT_VERSION
RUN pip download --no-deps --only-binary=:all: --dest /wheel "onnxruntime==${ORT_VERSION}" \
 && mkdir -p /opt/onnxruntime/lib \
 && python - <<'PY'
import glob, os, zipfile
(wheel,) = glob.glob("/wheel/onnxruntime-*.whl")
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith("onnxruntime/capi/libonnxruntime"):
            with z.open(name) as f, open("/opt/onnxruntime/lib/" + os.path.basename(name), "wb") as g:
                g.write(f.read())
PY
RUN ln -sf "libonnxruntime.so.${ORT_VERSION}" /opt/onnxruntime/lib/libonnxruntime.so

FROM debian:bookworm-slim AS runtime
# zlib: librdkafka's compression; ca-certificates: https/S3/GCS model stores, Kafka over TLS.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates zlib1g \
 && rm -rf /var/lib/apt/lists/*
COPY --from=ort /opt/onnxruntime /opt/onnxruntime
COPY --from=build /out/servegraph /usr/local/bin/servegraph
COPY deploy/docker/entrypoint.sh /usr/local/bin/servegraph-entrypoint
ENV ORT_DYLIB_PATH=/opt/onnxruntime/lib/libonnxruntime.so
ENV HOME=/tmp
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/servegraph-entrypoint"]
CMD ["serve", "/etc/servegraph/graph.yaml", "--listen", "0.0.0.0:8080"]

# Python models (graphs with class: python, Seldon/KServe/MLServer/MLRun classes): the
# server's workers run on this Python (SERVEGRAPH_PYTHON); add your models' packages here.
FROM runtime AS python
USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-numpy python3-venv \
 && rm -rf /var/lib/apt/lists/*
ENV SERVEGRAPH_PYTHON=/usr/bin/python3
USER 65532:65532

# The default target: the ONNX-only image.
FROM runtime
