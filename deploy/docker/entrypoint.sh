#!/bin/sh
# servegraph's container entrypoint: finds ONNX Runtime, then execs `servegraph` with the
# arguments given (the Helm chart passes `serve /etc/servegraph/graph.yaml --listen ...`).
#
# `serve DIR ...` (KServe: the storage initializer's /mnt/models) serves DIR/graph.yaml; a
# folder without one but with exactly one .onnx file gets a graph written for it, naming the
# model after $SERVEGRAPH_MODEL_NAME (KServe sets it from the InferenceService's name), else
# the file's name.
set -eu

if [ -z "${ORT_DYLIB_PATH:-}" ]; then
  for lib in /opt/onnxruntime/lib/libonnxruntime.so; do
    if [ -f "$lib" ]; then ORT_DYLIB_PATH=$lib; export ORT_DYLIB_PATH; fi
  done
fi

if [ "${1:-}" = serve ] && [ -d "${2:-}" ]; then
  dir=${2%/}
  shift 2
  if [ -f "$dir/graph.yaml" ]; then
    graph=$dir/graph.yaml
  else
    set -- "$dir"/*.onnx "$@"
    if [ ! -f "$1" ]; then
      echo "servegraph-entrypoint: $dir holds neither graph.yaml nor an .onnx file" >&2
      exit 2
    fi
    model=$1
    shift
    if [ -f "${1:-}" ] && [ "${1%.onnx}" != "$1" ]; then
      echo "servegraph-entrypoint: $dir holds several .onnx files and no graph.yaml: add a graph.yaml saying how they are served" >&2
      exit 2
    fi
    name=${SERVEGRAPH_MODEL_NAME:-$(basename "$model" .onnx)}
    graph=${TMPDIR:-/tmp}/servegraph-kserve/graph.yaml
    mkdir -p "$(dirname "$graph")"
    cat >"$graph" <<GRAPH
# Written by servegraph-entrypoint for $model
name: $name
graph:
  kind: flow
  steps:
    model: {kind: model, class: onnx, model_path: "$model"}
GRAPH
  fi
  set -- serve "$graph" "$@"
fi

exec servegraph "$@"
