//! The frames the engine and a Python worker exchange over the worker's stdin and stdout
//! (the layout is documented once, in `python/servegraph/_frames.py`): a 24-byte header,
//! tensor descriptors, the row split of a joined batch, JSON metadata (empty on the hot path),
//! and the tensors' raw little-endian bytes. Nothing is pickled.

use std::io::{Read, Write};

use servegraph_engine::protocol::{decode_binary, encode_binary};
use servegraph_engine::{DataType, Tensor, TensorData};

use super::error::WorkerError;
use super::shm::{self, Arena};

pub(super) const HELLO: u8 = 1;
pub(super) const LOAD: u8 = 2;
pub(super) const LOADED: u8 = 3;
pub(super) const LOAD_ERROR: u8 = 4;
pub(super) const INFER: u8 = 5;
pub(super) const RESULT: u8 = 6;
pub(super) const ERROR: u8 = 7;
// 8 is SHUTDOWN, which the worker also takes; the engine stops a worker by closing its pipes.
/// A custom operation: `{"op", "body"}` in the metadata, answered by REPLY or ERROR.
pub(super) const CALL: u8 = 9;
/// An operation's answer: `{"result"}` in the metadata.
pub(super) const REPLY: u8 = 10;
/// A piece of a streamed answer (a `predict` that yields, called with `"stream": true`): its
/// tensors; the call's RESULT (or ERROR) follows the last one.
pub(super) const CHUNK: u8 = 11;

/// A flag of an answer's header: the worker's own run of its last call (the user's code, not
/// the pipe) took at most a quarter of `spin_us`, so polling for the next answer pays.
pub(super) const QUICK: u8 = 1;

pub(super) const HEADER: usize = 24;
/// A frame larger than this is refused (a worker writing garbage must not make us allocate
/// without bound).
pub(super) const MAX_FRAME: usize = 1 << 31;

/// One frame, decoded.
#[derive(Debug, Default)]
pub(super) struct Frame {
    pub(super) kind: u8,
    /// The header's flags ([`QUICK`]).
    pub(super) flags: u8,
    pub(super) call_id: u64,
    pub(super) meta: Option<serde_json::Value>,
    pub(super) tensors: Vec<Tensor>,
}

fn code(datatype: DataType) -> u8 {
    match datatype {
        DataType::Bool => 1,
        DataType::Uint8 => 2,
        DataType::Uint16 => 3,
        DataType::Uint32 => 4,
        DataType::Uint64 => 5,
        DataType::Int8 => 6,
        DataType::Int16 => 7,
        DataType::Int32 => 8,
        DataType::Int64 => 9,
        DataType::Fp16 => 10,
        DataType::Fp32 => 11,
        DataType::Fp64 => 12,
        DataType::Bytes => 13,
    }
}

fn datatype(code: u8) -> Option<DataType> {
    Some(match code {
        1 => DataType::Bool,
        2 => DataType::Uint8,
        3 => DataType::Uint16,
        4 => DataType::Uint32,
        5 => DataType::Uint64,
        6 => DataType::Int8,
        7 => DataType::Int16,
        8 => DataType::Int32,
        9 => DataType::Int64,
        10 => DataType::Fp16,
        11 => DataType::Fp32,
        12 => DataType::Fp64,
        13 => DataType::Bytes,
        _ => return None,
    })
}

/// The size of a tensor's data in the frame: raw elements, BYTES as 4-byte lengths and the
/// bytes (what `encode_binary` writes).
fn byte_len(data: &TensorData) -> usize {
    match data {
        TensorData::Bytes(items) => items.iter().map(|b| 4 + b.len()).sum(),
        d => d.len() * d.datatype().element_size().expect("a fixed-size datatype"),
    }
}

/// Writes one frame (into `buf`, reused between calls, then to `out` in one write).
pub(super) fn write(
    out: &mut impl Write,
    buf: &mut Vec<u8>,
    kind: u8,
    call_id: u64,
    meta: Option<&serde_json::Value>,
    tensors: &[Tensor],
    rows: &[u32],
) -> std::io::Result<()> {
    encode(buf, kind, call_id, meta, tensors, rows, None)?;
    out.write_all(buf)?;
    out.flush()
}

/// Encodes one frame into `buf` (cleared first); with `shm` (a worker's mapping and the
/// call's request slot), tensors of [`shm::MIN_BYTES`] or more that fit go into the slot.
pub(super) fn encode(
    buf: &mut Vec<u8>,
    kind: u8,
    call_id: u64,
    meta: Option<&serde_json::Value>,
    tensors: &[Tensor],
    rows: &[u32],
    shm: Option<(&Arena, (usize, usize))>,
) -> std::io::Result<()> {
    let meta = match meta {
        Some(m) => serde_json::to_vec(m)?,
        None => Vec::new(),
    };
    buf.clear();
    buf.resize(HEADER, 0);
    // The descriptors need each tensor's offset and size before the payload is written:
    // both follow from the data, so the tensors are encoded once, straight into `buf`.
    let mut offset = 0;
    // Where each tensor goes: in the frame, or at an offset of the mapping.
    let mut shared = Vec::with_capacity(tensors.len());
    let mut slot = shm.map(|(_, (start, len))| (start, start + len));
    for t in tensors {
        let nbytes = byte_len(&t.data);
        let name = t.name.as_bytes();
        let place = match &mut slot {
            Some((next, end))
                if nbytes >= shm::MIN_BYTES
                    && t.datatype() != DataType::Bytes
                    && *next + nbytes <= *end =>
            {
                let at = *next;
                *next = (at + nbytes).next_multiple_of(64);
                Some(at)
            }
            _ => None,
        };
        shared.push(place);
        buf.extend_from_slice(&[
            code(t.datatype()),
            t.shape.len() as u8,
            place.is_some() as u8,
            name.len().min(255) as u8,
        ]);
        for d in &t.shape {
            buf.extend_from_slice(&(*d as i64).to_le_bytes());
        }
        let at = place.unwrap_or(offset);
        buf.extend_from_slice(&(at as u64).to_le_bytes());
        buf.extend_from_slice(&(nbytes as u64).to_le_bytes());
        buf.extend_from_slice(&name[..name.len().min(255)]);
        if place.is_none() {
            offset += nbytes.next_multiple_of(8);
        }
    }
    for r in rows {
        buf.extend_from_slice(&r.to_le_bytes());
    }
    buf.extend_from_slice(&meta);
    buf.resize(buf.len().next_multiple_of(8), 0);
    for (t, place) in tensors.iter().zip(shared) {
        if let (Some(at), Some((arena, _))) = (place, shm) {
            arena.write_at(at, &raw_bytes(&t.data));
            continue;
        }
        let start = buf.len();
        encode_binary(&t.data, buf);
        debug_assert_eq!(buf.len() - start, byte_len(&t.data));
        buf.resize(buf.len().next_multiple_of(8), 0);
    }
    let length = (buf.len() - 4) as u32;
    buf[0..4].copy_from_slice(&length.to_le_bytes());
    buf[4] = kind;
    buf[5] = 0;
    buf[6..8].copy_from_slice(&(tensors.len() as u16).to_le_bytes());
    buf[8..16].copy_from_slice(&call_id.to_le_bytes());
    buf[16..20].copy_from_slice(&(rows.len() as u32).to_le_bytes());
    buf[20..24].copy_from_slice(&(meta.len() as u32).to_le_bytes());
    Ok(())
}

// Tensors are copied to and from the workers as their in-memory bytes.
const _: () = assert!(
    cfg!(target_endian = "little"),
    "the worker frames are little-endian"
);

/// A fixed-size tensor's elements as little-endian bytes (its own memory, but for BOOL).
fn raw_bytes(data: &TensorData) -> std::borrow::Cow<'_, [u8]> {
    use bytemuck::cast_slice;
    use std::borrow::Cow::Borrowed;
    match data {
        TensorData::Bool(v) => v.iter().map(|&b| b as u8).collect::<Vec<_>>().into(),
        TensorData::Uint8(v) => Borrowed(v),
        TensorData::Int8(v) => Borrowed(cast_slice(v)),
        TensorData::Uint16(v) => Borrowed(cast_slice(v)),
        TensorData::Int16(v) => Borrowed(cast_slice(v)),
        TensorData::Fp16(v) => Borrowed(cast_slice(v)),
        TensorData::Uint32(v) => Borrowed(cast_slice(v)),
        TensorData::Int32(v) => Borrowed(cast_slice(v)),
        TensorData::Fp32(v) => Borrowed(cast_slice(v)),
        TensorData::Uint64(v) => Borrowed(cast_slice(v)),
        TensorData::Int64(v) => Borrowed(cast_slice(v)),
        TensorData::Fp64(v) => Borrowed(cast_slice(v)),
        TensorData::Bytes(_) => unreachable!("BYTES always travel in the frame"),
    }
}

/// A tensor's elements from their little-endian bytes: fixed-size ones as one copy (the
/// bytes may be unaligned), BYTES and BOOL (which must be 0 or 1) as the binary extension
/// decodes them.
fn decode_raw(dt: DataType, bytes: &[u8], count: usize) -> servegraph_engine::Result<TensorData> {
    // One pass when the bytes are aligned (shared memory always is), else a zeroed vector
    // filled.
    fn copy<T: bytemuck::Pod>(bytes: &[u8]) -> Vec<T> {
        match bytemuck::try_cast_slice::<u8, T>(bytes) {
            Ok(aligned) => aligned.to_vec(),
            Err(_) => bytemuck::pod_collect_to_vec(bytes),
        }
    }
    let Some(size) = dt.element_size() else {
        return decode_binary(dt, bytes, count);
    };
    if count.checked_mul(size) != Some(bytes.len()) {
        return decode_binary(dt, bytes, count);
    }
    Ok(match dt {
        DataType::Uint8 => TensorData::Uint8(bytes.to_vec()),
        DataType::Int8 => TensorData::Int8(copy(bytes)),
        DataType::Uint16 => TensorData::Uint16(copy(bytes)),
        DataType::Int16 => TensorData::Int16(copy(bytes)),
        DataType::Fp16 => TensorData::Fp16(copy(bytes)),
        DataType::Uint32 => TensorData::Uint32(copy(bytes)),
        DataType::Int32 => TensorData::Int32(copy(bytes)),
        DataType::Fp32 => TensorData::Fp32(copy(bytes)),
        DataType::Uint64 => TensorData::Uint64(copy(bytes)),
        DataType::Int64 => TensorData::Int64(copy(bytes)),
        DataType::Fp64 => TensorData::Fp64(copy(bytes)),
        DataType::Bool | DataType::Bytes => return decode_binary(dt, bytes, count),
    })
}

/// Reads one frame; `Ok(None)` at end of stream (the worker is gone).
pub(super) fn read(input: &mut impl Read, buf: &mut Vec<u8>) -> Result<Option<Frame>, WorkerError> {
    let mut head = [0u8; HEADER];
    let eof = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => Ok(None),
        _ => Err(WorkerError::Read(e)),
    };
    if let Err(e) = input.read_exact(&mut head) {
        return eof(e);
    }
    buf.clear();
    buf.resize(body_len(&head)?, 0);
    if let Err(e) = input.read_exact(buf) {
        return eof(e);
    }
    parse(&head, buf, None).map(Some)
}

/// How many bytes follow a frame's header.
pub(super) fn body_len(head: &[u8; HEADER]) -> Result<usize, WorkerError> {
    let length = u32::from_le_bytes(head[0..4].try_into().expect("4")) as usize;
    if !(HEADER - 4..=MAX_FRAME).contains(&length) {
        return Err(WorkerError::FrameSize(length));
    }
    Ok(length - (HEADER - 4))
}

/// Decodes a frame from its header and the `body` that followed it; tensors the worker put
/// in shared memory are copied out of `arena`.
pub(super) fn parse(
    head: &[u8; HEADER],
    body: &[u8],
    arena: Option<&Arena>,
) -> Result<Frame, WorkerError> {
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4"));
    let kind = head[4];
    let n_tensors = u16::from_le_bytes([head[6], head[7]]) as usize;
    let call_id = u64::from_le_bytes(head[8..16].try_into().expect("8"));
    let n_requests = u32_at(head, 16) as usize;
    let meta_len = u32_at(head, 20) as usize;
    let bad = WorkerError::Malformed;
    let mut pos = 0;
    let take = |pos: &mut usize, n: usize| -> Result<&[u8], WorkerError> {
        let s = body.get(*pos..*pos + n).ok_or_else(|| bad("truncated"))?;
        *pos += n;
        Ok(s)
    };
    let mut descs = Vec::with_capacity(n_tensors);
    for _ in 0..n_tensors {
        let d = take(&mut pos, 4)?;
        let (dtype, ndim, shared, name_len) = (d[0], d[1] as usize, d[2] != 0, d[3] as usize);
        let mut dims = Vec::with_capacity(ndim);
        for _ in 0..ndim {
            let v = i64::from_le_bytes(take(&mut pos, 8)?.try_into().expect("8"));
            dims.push(usize::try_from(v).map_err(|_| bad("a negative dimension"))?);
        }
        let offset = u64::from_le_bytes(take(&mut pos, 8)?.try_into().expect("8")) as usize;
        let nbytes = u64::from_le_bytes(take(&mut pos, 8)?.try_into().expect("8")) as usize;
        let name = std::str::from_utf8(take(&mut pos, name_len)?)
            .map_err(|_| bad("a tensor name that is not UTF-8"))?
            .to_owned();
        descs.push((name, dtype, dims, offset, nbytes, shared));
    }
    // The row split of a joined batch: the engine splits what comes back itself.
    take(&mut pos, 4 * n_requests)?;
    let meta = if meta_len > 0 {
        Some(serde_json::from_slice(take(&mut pos, meta_len)?).map_err(WorkerError::Meta)?)
    } else {
        None
    };
    pos += (8 - (pos + HEADER) % 8) % 8;
    let payload = body.get(pos..).ok_or_else(|| bad("truncated"))?;
    let mut tensors = Vec::with_capacity(descs.len());
    for (name, dtype, dims, offset, nbytes, shared) in descs {
        let dt = datatype(dtype).ok_or(WorkerError::Datatype(dtype))?;
        let bytes = if shared {
            arena
                .and_then(|a| a.bytes(offset, nbytes))
                .ok_or_else(|| bad("a tensor outside the shared memory"))?
        } else {
            payload
                .get(offset..offset.saturating_add(nbytes))
                .ok_or_else(|| bad("a tensor outside the payload"))?
        };
        let count = servegraph_engine::tensor::checked_element_count(&dims)
            .ok_or_else(|| bad("a shape too large"))?;
        let data = decode_raw(dt, bytes, count).map_err(|source| WorkerError::Output {
            name: name.clone(),
            source: Box::new(source),
        })?;
        tensors.push(Tensor::new(name, dims, data).map_err(|e| WorkerError::Tensor(Box::new(e)))?);
    }
    Ok(Frame {
        kind,
        flags: head[5],
        call_id,
        meta,
        tensors,
    })
}

/// Python's error in words, from an ERROR or LOAD_ERROR frame's metadata (`type`, `message`,
/// `traceback`): `what: Type: message`, then (`traceback`) its last frames.
pub(super) fn python_error(
    what: &str,
    meta: Option<&serde_json::Value>,
    traceback: bool,
) -> String {
    let Some(m) = meta else {
        return format!("{what} (the worker gave no reason)");
    };
    let text = |k: &str| m[k].as_str().unwrap_or_default().to_owned();
    let mut out = format!("{what}: {}: {}", text("type"), text("message"));
    let tb = text("traceback");
    if traceback && !tb.is_empty() {
        out.push('\n');
        out.push_str(tb.trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let tensors = vec![
            Tensor::new("x", vec![2, 2], TensorData::Fp32(vec![1.0, 2.0, 3.0, 4.0])).unwrap(),
            Tensor::new(
                "s",
                vec![3],
                TensorData::Bytes(vec![b"a\0b".to_vec(), vec![], vec![0xff]]),
            )
            .unwrap(),
        ];
        let meta = serde_json::json!({"parameters": {"k": 1}});
        let (mut wire, mut buf) = (Vec::new(), Vec::new());
        write(
            &mut wire,
            &mut buf,
            INFER,
            7,
            Some(&meta),
            &tensors,
            &[1, 1],
        )
        .unwrap();
        assert_eq!(wire.len() % 8, 0);
        let frame = read(&mut wire.as_slice(), &mut buf).unwrap().unwrap();
        assert_eq!((frame.kind, frame.call_id), (INFER, 7));
        assert_eq!(frame.meta, Some(meta));
        assert_eq!(frame.tensors, tensors);
        assert!(
            read(&mut &wire[..10], &mut buf).unwrap().is_none(),
            "cut short"
        );
    }

    #[test]
    fn large_tensors_go_through_shared_memory_when_they_fit() {
        let arena = Arena::new(4 << 20, 2).unwrap();
        let big = Tensor::new(
            "big",
            vec![1, 1 << 16],
            TensorData::Fp32((0..1 << 16).map(|i| i as f32).collect()),
        )
        .unwrap();
        let small = Tensor::new("small", vec![2], TensorData::Int64(vec![7, 8])).unwrap();
        let too_big = Tensor::new(
            "too_big",
            vec![1 << 20],
            TensorData::Uint8(vec![9; 1 << 20]),
        )
        .unwrap();
        let tensors = vec![big, small, too_big];
        let mut buf = Vec::new();
        let slot = arena.request_slot(3);
        encode(
            &mut buf,
            INFER,
            3,
            None,
            &tensors,
            &[],
            Some((&arena, slot)),
        )
        .unwrap();
        // The big tensor is in the slot, the small one and the one too large for the slot
        // (1 MiB of the 1 MiB slot, after the big one) in the frame.
        assert!(buf.len() < (1 << 20) + 4096 && buf.len() > 1 << 20);
        assert_eq!(buf[HEADER + 2], 1, "`big` is in shared memory");
        let head: [u8; HEADER] = buf[..HEADER].try_into().unwrap();
        assert_eq!(body_len(&head).unwrap(), buf.len() - HEADER);
        let frame = parse(&head, &buf[HEADER..], Some(&arena)).unwrap();
        assert_eq!(frame.tensors, tensors);
        assert!(
            parse(&head, &buf[HEADER..], None).is_err(),
            "a shared tensor without the mapping is refused"
        );
    }
}
