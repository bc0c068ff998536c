"""The frames the engine and a worker exchange over the worker's stdin and stdout. Nothing is
pickled across the boundary: tensors travel as raw little-endian bytes and arrive here as
read-only NumPy arrays, so any CPython >= 3.9 with NumPy works, whatever the engine's version.
The engine's side is `steps/src/model/python/frame.rs`.

Frame (little-endian): a 24-byte header
    u32 len (bytes after this field) | u8 kind | u8 flags (an answer's: QUICK) | u16 n_tensors | u64 call_id
    | u32 n_requests | u32 meta_len
then per tensor
    u8 dtype | u8 ndim | u8 where (0: in this frame, 1: in shared memory) | u8 name_len
    | i64 dims[ndim] | u64 offset (into the payload, or the shared memory) | u64 nbytes
    | name (UTF-8)
then u32 rows[n_requests], then meta_len bytes of JSON, then zero padding to a multiple of 8,
then the payload (each tensor's bytes at its offset; BYTES elements as u32 length + bytes).
Tensors in shared memory (`_shm`) are read from and written to the worker's `Arena`.
"""

import json
import os
import select
import struct
import time

import numpy as np

from servegraph._shm import MIN_BYTES as SHM_MIN_BYTES

PROTOCOL = 1

HELLO, LOAD, LOADED, LOAD_ERROR, INFER, RESULT, ERROR, SHUTDOWN, CALL, REPLY = range(1, 11)
# A piece of a streamed answer (a `predict` that yields, called with "stream": true): its
# tensors; the call's RESULT (the pieces joined) or ERROR follows the last one.
CHUNK = 11

HEADER = struct.Struct("<IBBHQII")
# A flag of an answer's header: this call's own run (the user's code) took at most a quarter of
# `spin_us`, so the engine polls for the next answer (`Input.wait` is this side's).
QUICK = 1
TENSOR = struct.Struct("<BBBB")
TAIL = struct.Struct("<QQ")

# A diagnostic (`servegraph bench python --apis`): with SERVEGRAPH_CALL_TIMES set, the worker
# keeps here, for each INFER call, CLOCK_MONOTONIC in ns when the call's first bytes are read
# and just before its answer is written (the clock the engine reads too), and writes them to
# that file when it ends: what lies between is the worker's Python, the rest of a round trip
# is the engine's and the pipe's. At most CALL_TIMES_MAX numbers (a pair per call).
CALL_TIMES = None
CALL_TIMES_MAX = 2_000_000

# OIP datatype code -> (name, numpy dtype); 13 is BYTES (an object array of bytes).
DTYPES = {
    1: ("BOOL", np.dtype(np.bool_)),
    2: ("UINT8", np.dtype("<u1")),
    3: ("UINT16", np.dtype("<u2")),
    4: ("UINT32", np.dtype("<u4")),
    5: ("UINT64", np.dtype("<u8")),
    6: ("INT8", np.dtype("<i1")),
    7: ("INT16", np.dtype("<i2")),
    8: ("INT32", np.dtype("<i4")),
    9: ("INT64", np.dtype("<i8")),
    10: ("FP16", np.dtype("<f2")),
    11: ("FP32", np.dtype("<f4")),
    12: ("FP64", np.dtype("<f8")),
}
BYTES = 13
CODE_OF = {dt: code for code, (_, dt) in DTYPES.items()}
NAME_OF = {code: name for code, (name, _) in DTYPES.items()}
NAME_OF[BYTES] = "BYTES"


class Input:
    """The engine's pipe, with a buffer of our own, so that the next call can be waited for
    by polling the pipe for a while (`spin_us`) before sleeping: waking a sleeping process
    on another CPU costs tens of microseconds on a VM."""

    def __init__(self, fd):
        self.fd = fd
        self.raw = os.fdopen(fd, "rb", buffering=0)
        self.buf = bytearray(1 << 16)
        self.view = memoryview(self.buf)
        self.start = self.end = 0
        self.spin = 0.0
        self.last = 0.0

    def wait(self):
        """Polls for the next frame for up to `spin` seconds, unless one is buffered or the
        last call was slow (a slow model gains little and its CPU is better left to others;
        the worker's `quick` tells the engine the same)."""
        if self.spin <= 0 or self.start < self.end or self.last * 4 > self.spin:
            return
        until = time.perf_counter() + self.spin
        while time.perf_counter() < until:
            if select.select([self.fd], [], [], 0)[0]:
                return

    def read_exact(self, n):
        out = bytearray(n)
        view = memoryview(out)
        got = min(n, self.end - self.start)
        view[:got] = self.view[self.start : self.start + got]
        self.start += got
        while got < n:
            if n - got >= len(self.buf):
                r = self.raw.readinto(view[got:])
                if not r:
                    return None
                got += r
            else:
                r = self.raw.readinto(self.buf)
                if not r:
                    return None
                take = min(r, n - got)
                view[got : got + take] = self.view[:take]
                self.start, self.end = take, r
                got += take
        return out


def read_frame(stream, arena=None):
    """The next frame from `stream` (an `Input`) as `(kind, call_id, rows, meta, tensors)`, or
    None at the end of the stream; tensors in shared memory are views of `arena`."""
    stream.wait()
    head = stream.read_exact(HEADER.size)
    if head is None:
        return None
    length, kind, _flags, n_tensors, call_id, n_requests, meta_len = HEADER.unpack(head)
    if CALL_TIMES is not None and kind == INFER and len(CALL_TIMES) < CALL_TIMES_MAX:
        CALL_TIMES.append(time.monotonic_ns())
    body = stream.read_exact(length - (HEADER.size - 4))
    if body is None:
        return None
    view = memoryview(body)
    pos = 0
    descs = []
    for _ in range(n_tensors):
        dtype, ndim, where, name_len = TENSOR.unpack_from(body, pos)
        pos += TENSOR.size
        dims = struct.unpack_from("<%dq" % ndim, body, pos)
        pos += 8 * ndim
        offset, nbytes = TAIL.unpack_from(body, pos)
        pos += TAIL.size
        name = bytes(view[pos : pos + name_len]).decode("utf-8")
        pos += name_len
        descs.append((name, dtype, dims, offset, nbytes, where))
    rows = list(struct.unpack_from("<%dI" % n_requests, body, pos))
    pos += 4 * n_requests
    meta = decode_json(view[pos : pos + meta_len]) if meta_len else {}
    pos += meta_len
    pos += (-pos - HEADER.size) % 8
    payload = view[pos:]
    tensors = {}
    for name, dtype, dims, offset, nbytes, where in descs:
        if where == 1:
            tensors[name] = arena.view(DTYPES[dtype][1], dims, offset, nbytes)
            continue
        raw = payload[offset : offset + nbytes]
        if dtype == BYTES:
            arr = decode_bytes(raw, dims)
        else:
            arr = np.frombuffer(raw, dtype=DTYPES[dtype][1]).reshape(dims)
            arr.flags.writeable = False
        tensors[name] = arr
    return kind, call_id, rows, meta, tensors


# The decoder's scanner itself: `raw_decode` less its whitespace regex and a Python frame (the
# engine's JSON starts at its first byte); StopIteration when there is no value there.
_scan = json.JSONDecoder().scan_once


def decode_json(raw):
    """`json.loads(bytes(raw))`, a µs sooner for the engine's UTF-8 JSON (no encoding to
    detect, no whitespace to skip); anything else takes `json.loads` itself, errors included."""
    try:
        text = str(raw, "utf-8")
        value, end = _scan(text, 0)
        if end == len(text):
            return value
    except (ValueError, StopIteration):
        pass
    return json.loads(bytes(raw))


def decode_bytes(raw, dims):
    count = 1
    for d in dims:
        count *= d
    out = np.empty(count, dtype=object)
    pos = 0
    for i in range(count):
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        out[i] = bytes(raw[pos : pos + n])
        pos += n
    return out.reshape(dims)


def encode_tensor(name, value):
    """(dtype code, dims, bytes) of an output, or a TypeError naming what does not fit."""
    arr = np.asarray(value)
    if arr.dtype.kind in ("O", "S", "U"):
        parts = []
        for item in arr.reshape(-1):
            if isinstance(item, str):
                item = item.encode("utf-8")
            elif isinstance(item, (bytes, bytearray, memoryview)):
                item = bytes(item)
            elif isinstance(item, (dict, list, tuple)):
                # A nested structure (a dict output) travels as JSON text, never a repr.
                item = _encode_json(item).encode("utf-8")
            else:
                item = str(item).encode("utf-8")
            parts.append(struct.pack("<I", len(item)))
            parts.append(item)
        return BYTES, arr.shape, b"".join(parts)
    code = CODE_OF.get(arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype)
    if code is None:
        raise TypeError("output `%s` has dtype %s, which has no OIP datatype" % (name, arr.dtype))
    arr = np.ascontiguousarray(arr, dtype=DTYPES[code][1])
    return code, arr.shape, arr


def json_default(value):
    """NumPy values in an operation's answer or a metric, as JSON."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise TypeError("the answer holds bytes that are not UTF-8, which JSON cannot carry")
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise TypeError("the answer holds a %s, which JSON cannot carry" % type(value).__name__)


def _json_encoder():
    """The frames' JSON encoder: what `json.dumps(value, default=json_default, separators=(",",
    ":"))` gives, from one C encoder made once, where `json.dumps` makes one per call (with a
    closure and a circularity map: two thirds of encoding a small body's answer). A structure
    that holds itself ends in a RecursionError rather than `json`'s ValueError. Interpreters
    without the C encoder, or whose C encoder does not take these arguments, get `json`'s."""
    fallback = json.JSONEncoder(default=json_default, separators=(",", ":")).encode
    try:
        from _json import make_encoder

        c_encode = make_encoder(
            None, json_default, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True
        )
        join = "".join

        def encode(value):
            return join(c_encode(value, 0))

        sample = {"a": [1, 2.5, "é", None, True], "b": {"c": float("nan")}}
        if encode(sample) == fallback(sample):
            return encode
    except Exception:  # noqa: BLE001 - any trouble means the pure route
        pass
    return fallback


_encode_json = _json_encoder()


def write_frame(stream, kind, call_id=0, meta=None, tensors=(), rows=(), arena=None, flags=0):
    """Writes one frame; `tensors` are `(name, encode_tensor(...))`, the large ones put in
    `arena`'s response slot for `call_id` when there is one and they fit."""
    meta_bytes = _encode_json(meta).encode("utf-8") if meta else b""
    descs = []
    payload = []
    offset = 0
    shm_next, shm_end = arena.response_slot(call_id) if arena is not None else (0, 0)
    for name, (code, dims, data) in tensors:
        nb = data.nbytes if isinstance(data, np.ndarray) else len(data)
        name_b = name.encode("utf-8")
        if isinstance(data, np.ndarray) and arena is not None and nb >= SHM_MIN_BYTES:
            at = arena.offset_of(data)
            if at is None and shm_next + nb <= shm_end:
                at = shm_next
                arena.mm[at : at + nb] = memoryview(data).cast("B")
                shm_next = (at + nb + 63) // 64 * 64
            if at is not None:
                descs.append(
                    TENSOR.pack(code, len(dims), 1, len(name_b))
                    + struct.pack("<%dq" % len(dims), *dims)
                    + TAIL.pack(at, nb)
                    + name_b
                )
                continue
        if isinstance(data, np.ndarray):
            data = memoryview(data).cast("B")
        descs.append(
            TENSOR.pack(code, len(dims), 0, len(name_b))
            + struct.pack("<%dq" % len(dims), *dims)
            + TAIL.pack(offset, nb)
            + name_b
        )
        payload.append(data)
        pad = (-nb) % 8
        if pad:
            payload.append(b"\0" * pad)
        offset += nb + pad
    head_rest = b"".join(descs) + struct.pack("<%dI" % len(rows), *rows) + meta_bytes
    pad = (-(HEADER.size + len(head_rest))) % 8
    head_rest += b"\0" * pad
    length = HEADER.size - 4 + len(head_rest) + offset
    stream.write(HEADER.pack(length, kind, flags, len(descs), call_id, len(rows), len(meta_bytes)))
    stream.write(head_rest)
    for p in payload:
        stream.write(p)
    if CALL_TIMES is not None and kind in (RESULT, ERROR) and len(CALL_TIMES) % 2:
        CALL_TIMES.append(time.monotonic_ns())
    stream.flush()
