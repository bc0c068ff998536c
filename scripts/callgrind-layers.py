#!/usr/bin/env python3
"""Instructions per request, by layer, from a callgrind profile of a server.

    scripts/callgrind-layers.py PROFILE REQUESTS [--json] [--top N]

PROFILE is a callgrind output file (`valgrind --tool=callgrind`, one event: Ir) dumped over
REQUESTS requests and nothing else (`scripts/bench-instructions.sh` makes them: the server
starts with instrumentation off, is warmed up, then instrumented for the measured requests
only). Kernel instructions are not in it (callgrind counts user space only): the kernel's
share of a request (TCP on loopback, epoll, wake-ups) is what `scripts/bench-cpu.sh`'s CPU
time adds.

The model's own run is every call from the process into ONNX Runtime's library, inclusive
(so ONNX Runtime's own malloc, memcpy and C++ runtime count there). Every other instruction
is attributed by where its code comes from: the source file of the instruction (callgrind
keeps inlined code's file with line tables), its crate, and for Rust's standard library
(inlined everywhere) the crate of the function it was inlined into. "Own" is everything but
the model's run.
"""

import collections
import json
import re
import sys

# (layer, test) in order: the first match wins. Tests get (file, function, object).
LAYERS = [
    ("HTTP: parse, head encode, connection (hyper)", lambda f, n, o: crate(f, n) in {"hyper", "httparse", "http", "http_body", "http_body_util", "hyper_util", "bytes", "httpdate"}),
    ("HTTP/2 and gRPC framing (h2, hpack, tonic, prost)", lambda f, n, o: crate(f, n) in {"h2", "tonic", "prost", "tonic_prost"}),
    ("routing and middleware (axum, tower, tower-http)", lambda f, n, o: crate(f, n) in {"axum", "axum_core", "tower", "tower_http", "tower_service", "tower_layer", "matchit", "async_compression", "pin_project"}),
    ("async runtime (tokio: tasks, wake-ups, timers, I/O)", lambda f, n, o: crate(f, n) in {"tokio", "mio", "futures_util", "futures_core", "futures_task", "futures_channel", "parking_lot", "parking_lot_core", "crossbeam_channel", "crossbeam_utils", "crossbeam_epoch", "event_listener", "async_trait"}),
    ("OIP decode (JSON → tensors)", lambda f, n, o: "/protocol/request.rs" in f or "/protocol/binary.rs" in f or json_side(f, n) == "de"),
    ("response encode (tensors → JSON)", lambda f, n, o: "/protocol/response.rs" in f or json_side(f, n) == "ser"),
    ("servegraph protocol and HTTP handlers", lambda f, n, o: "/engine/src/protocol/" in f or "/engine/src/http/" in f or "/engine/src/server/" in f),
    ("gRPC handlers and conversion (servegraph)", lambda f, n, o: "/engine/src/grpc/" in f),
    ("metrics", lambda f, n, o: "/engine/src/metrics.rs" in f or crate(f, n) in {"prometheus_client"}),
    ("tracking", lambda f, n, o: "/engine/src/tracking.rs" in f),
    ("statistics and learning", lambda f, n, o: "/engine/src/stats.rs" in f or "/engine/src/learning.rs" in f or "/steps/src/bandit.rs" in f),
    ("router step (policy)", lambda f, n, o: "/steps/src/router/" in f),
    ("ONNX step (tensors in and out, the ort crate)", lambda f, n, o: "/steps/src/model/" in f or crate(f, n) in {"ort", "ort_sys", "ndarray"}),
    ("the engine (request pipeline, graph run, events)", lambda f, n, o: "/engine/src/" in f or "/steps/src/" in f or crate(f, n) in {"servegraph_engine", "servegraph_steps", "servegraph"}),
    ("allocation (mimalloc, Rust's alloc)", lambda f, n, o: "mimalloc" in f or "mimalloc" in n or "__rust_alloc" in n or "__rust_dealloc" in n or "__rust_realloc" in n),
    ("other crates (tracing, dashmap, smallvec, hashing, std)", lambda f, n, o: True),
]

LIBC = "libc and the C++ runtime, from servegraph's code (memcpy, memcmp, clock_gettime)"
SYSTEM_LIB = re.compile(r"/(libc|libm|libstdc\+\+|libgcc_s|ld-linux[^/]*)\.so|vdso")

JSON_DE = ("/serde_json-", "/serde_core-", "/serde-")


def crate(file, fn):
    """The crate a line of code belongs to: from a registry path, else from the function."""
    m = re.search(r"/index\.crates\.io-[0-9a-f]+/([A-Za-z0-9_\-]+?)-\d+\.\d+", file)
    if m:
        return m.group(1).replace("-", "_")
    m = re.match(r"<*&?(?:mut )?(?:dyn )?([A-Za-z_][A-Za-z0-9_]*)::", fn)
    return m.group(1) if m else ""


def json_side(file, fn):
    """'de' or 'ser' for serde code (by file, else by the function it is inlined into)."""
    if not any(k in file for k in JSON_DE) and crate(file, fn) not in {"serde_json", "serde_core", "serde", "ryu", "itoa", "zmij"}:
        return None
    if re.search(r"/(de|read|raw)\.rs$|/de/", file) or re.search(r"Deserializ|Visitor|deserialize|decode", fn):
        return "de"
    return "ser"


def parse(path):
    """Self cost per (object, file, function), the inclusive cost of calls from outside ONNX
    Runtime's library into it, and the profile's total."""
    names = {"ob": {}, "fl": {}, "fn": {}}
    selfc = collections.Counter()
    into_ort = 0
    ob = fl = fi = fn = ""
    cob = cfn = ""
    pending_call = False
    total = 0

    def name(kind, value):
        m = re.match(r"\((\d+)\)(?: (.*))?$", value)
        if not m:
            return value
        if m.group(2) is not None:
            names[kind][m.group(1)] = m.group(2)
        return names[kind].get(m.group(1), "?")

    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                parts = line.split()
                cost = int(parts[1]) if len(parts) > 1 else 0
                if pending_call:
                    pending_call = False
                    callee_ort = "libonnxruntime" in cob
                    caller_ort = "libonnxruntime" in ob
                    if callee_ort and not caller_ort:
                        into_ort += cost
                    cob = ob  # a call's object is given for that call only
                    continue
                selfc[(ob, fi or fl, fn)] += cost
                continue
            if line.startswith(("summary:", "totals:")):
                total = max(total, int(line.split(":", 1)[1].split()[0]))
                continue
            key, _, value = line.partition("=")
            if key == "ob":
                ob = name("ob", value)
            elif key == "fl":
                fl = name("fl", value)
                fi = ""
            elif key in ("fi", "fe"):
                fi = name("fl", value)
            elif key == "fn":
                fn = name("fn", value)
                fi = ""
                cob = ob
            elif key == "cob":
                cob = name("ob", value)
            elif key in ("cfi", "cfl"):
                name("fl", value)
            elif key == "cfn":
                cfn = name("fn", value)
            elif key == "calls":
                pending_call = True
    return selfc, into_ort, total


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")][:2]
    as_json = "--json" in sys.argv
    path, requests = args[0], int(args[1])
    selfc, into_ort, total = parse(path)
    layers = collections.Counter()
    top = collections.defaultdict(collections.Counter)
    for (ob, file, fn), cost in selfc.items():
        # ONNX Runtime's own instructions, and the C/C++ libraries' (which ONNX Runtime calls
        # too: their share from servegraph's code is what is left below).
        if "libonnxruntime" in ob or SYSTEM_LIB.search(ob):
            continue
        for layer, test in LAYERS:
            if test(file, fn, ob):
                layers[layer] += cost
                top[layer][re.sub(r"^.*/(src/)", "", file) + ": " + fn[:110]] += cost
                break
    own = total - into_ort
    layers[LIBC] = own - sum(layers.values())
    out = {
        "requests": requests,
        "total_per_request": total / requests,
        "model_run_per_request": into_ort / requests,
        "own_per_request": own / requests,
        "layers": {k: v / requests for k, v in sorted(layers.items(), key=lambda kv: -kv[1])},
    }
    if as_json:
        print(json.dumps(out, indent=1))
        return
    print(f"| layer | instructions per request | share of own |")
    print(f"|---|---|---|")
    for k, v in out["layers"].items():
        print(f"| {k} | {v:,.0f} | {100 * v / max(out['own_per_request'], 1):.1f}% |")
    print(f"| **servegraph's own (all of the above)** | **{out['own_per_request']:,.0f}** | 100% |")
    print(f"| the model's run (calls into ONNX Runtime, inclusive) | {out['model_run_per_request']:,.0f} | |")
    print(f"| whole process, user space | {out['total_per_request']:,.0f} | |")
    if "--crates" in sys.argv:
        by_crate = collections.Counter()
        for (ob, file, fn), cost in selfc.items():
            if "libonnxruntime" in ob or SYSTEM_LIB.search(ob):
                continue
            by_crate[crate(file, fn) or "?"] += cost
        print("\n| crate | instructions per request |\n|---|---|")
        for k, v in by_crate.most_common(25):
            print(f"| {k} | {v / requests:,.0f} |")
    if "--top" in sys.argv:
        n = int(sys.argv[sys.argv.index("--top") + 1])
        for layer in out["layers"]:
            print(f"\n{layer}:")
            for where, cost in top[layer].most_common(n):
                print(f"  {cost / requests:8,.0f}  {where}")


if __name__ == "__main__":
    main()
