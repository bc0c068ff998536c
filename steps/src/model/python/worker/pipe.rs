//! A loaded worker's pipes, non-blocking on the runtime: its stdin, and its stdout read with
//! a buffer of our own so that an answer can be polled for before the task sleeps.

use std::os::fd::OwnedFd;
use std::process::{ChildStdin, ChildStdout};
use std::sync::Arc;
use std::time::Instant;

use tokio::net::unix::pipe;
use tokio::runtime::Handle;

use crate::model::python::error::WorkerError;
use crate::model::python::frame::{self, Frame};
use crate::model::python::shm::Arena;

/// A loaded worker's pipes, non-blocking on the runtime, and its shared memory.
pub(super) struct Io {
    pub(super) input: pipe::Sender,
    pub(super) output: Output,
    pub(super) arena: Option<Arc<Arena>>,
}

impl Io {
    pub(super) fn new(
        input: ChildStdin,
        output: ChildStdout,
        arena: Option<Arc<Arena>>,
        handle: &Handle,
    ) -> Result<Io, WorkerError> {
        let _runtime = handle.enter();
        Ok(Io {
            input: pipe::Sender::from_owned_fd(OwnedFd::from(input)).map_err(WorkerError::Pipes)?,
            output: Output {
                rx: pipe::Receiver::from_owned_fd(OwnedFd::from(output))
                    .map_err(WorkerError::Pipes)?,
                buf: vec![0; 1 << 16],
                start: 0,
                end: 0,
            },
            arena,
        })
    }
}

/// A worker's stdout, read with a buffer of our own so that an answer can also be waited for
/// by polling the pipe for a few µs (`spin_us`) before sleeping until the reactor sees it: on
/// a VM, waking a thread on another CPU costs tens of µs.
pub(super) struct Output {
    rx: pipe::Receiver,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Output {
    /// Fills `out`; `false` at end of stream. Until `spin`, the pipe is polled.
    async fn read_exact(&mut self, out: &mut [u8], spin: Option<Instant>) -> std::io::Result<bool> {
        let mut got = (self.end - self.start).min(out.len());
        out[..got].copy_from_slice(&self.buf[self.start..self.start + got]);
        self.start += got;
        while got < out.len() {
            if out.len() - got >= self.buf.len() {
                match read_some(&self.rx, &mut out[got..], spin).await? {
                    0 => return Ok(false),
                    n => got += n,
                }
            } else {
                let n = read_some(&self.rx, &mut self.buf, spin).await?;
                if n == 0 {
                    return Ok(false);
                }
                let take = n.min(out.len() - got);
                out[got..got + take].copy_from_slice(&self.buf[..take]);
                (self.start, self.end) = (take, n);
                got += take;
            }
        }
        Ok(true)
    }
}

/// Some bytes from the pipe (0 at end of stream): polled until `spin`, then awaited.
async fn read_some(
    rx: &pipe::Receiver,
    into: &mut [u8],
    spin: Option<Instant>,
) -> std::io::Result<usize> {
    use rustix::io::Errno;
    if let Some(until) = spin {
        loop {
            match rustix::io::read(rx, &mut *into) {
                Ok(n) => return Ok(n),
                Err(Errno::AGAIN) if Instant::now() < until => std::hint::spin_loop(),
                Err(Errno::AGAIN) => break,
                Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    loop {
        match rx.try_read(into) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => rx.readable().await?,
            Err(e) => return Err(e),
        }
    }
}

/// The next frame from a worker; `Ok(None)` when it is gone.
pub(super) async fn read_frame(
    output: &mut Output,
    buf: &mut Vec<u8>,
    arena: Option<&Arena>,
    spin: Option<Instant>,
) -> Result<Option<Frame>, WorkerError> {
    let mut head = [0u8; frame::HEADER];
    if !output
        .read_exact(&mut head, spin)
        .await
        .map_err(WorkerError::Read)?
    {
        return Ok(None);
    }
    buf.clear();
    buf.resize(frame::body_len(&head)?, 0);
    if !output
        .read_exact(buf, spin)
        .await
        .map_err(WorkerError::Read)?
    {
        return Ok(None);
    }
    frame::parse(&head, buf, arena).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use servegraph_engine::{Tensor, TensorData};
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn frames_are_read_whole_from_the_pipe_polled_or_awaited_and_none_once_it_closes() {
        let (mut tx, rx) = pipe::pipe().unwrap();
        let mut output = Output {
            rx,
            buf: vec![0; 64],
            start: 0,
            end: 0,
        };
        // One frame larger than the buffer, one smaller, and one cut short by the close.
        let big = Tensor::new(
            "x",
            vec![100],
            TensorData::Fp64((0..100).map(f64::from).collect()),
        )
        .unwrap();
        let small = Tensor::new("y", vec![1], TensorData::Int32(vec![7])).unwrap();
        let (mut wire, mut buf) = (Vec::new(), Vec::new());
        for (id, t) in [(1, &big), (2, &small)] {
            frame::encode(
                &mut buf,
                frame::RESULT,
                id,
                None,
                std::slice::from_ref(t),
                &[],
                None,
            )
            .unwrap();
            wire.extend_from_slice(&buf);
        }
        wire.extend_from_slice(&buf[..10]);
        let writer = tokio::spawn(async move {
            for chunk in wire.chunks(100) {
                tx.write_all(chunk).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let spin = Some(Instant::now() + std::time::Duration::from_millis(1));
        let first = read_frame(&mut output, &mut buf, None, spin)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((first.call_id, &first.tensors[0]), (1, &big));
        let second = read_frame(&mut output, &mut buf, None, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((second.call_id, &second.tensors[0]), (2, &small));
        writer.await.unwrap();
        assert!(
            read_frame(&mut output, &mut buf, None, None)
                .await
                .unwrap()
                .is_none()
        );
    }
}
