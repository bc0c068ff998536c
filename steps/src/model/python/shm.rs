//! A worker's shared memory: one anonymous `memfd` mapping per worker process, which the
//! process inherits and maps too, so a large tensor crosses as one copy into the mapping
//! and arrives in Python as a NumPy view of it (and back the same way). The mapping is split
//! into `2 × DEPTH` equal slots: the engine writes a call's large inputs into request slot
//! `id % DEPTH`, and the worker its large outputs into response slot `DEPTH + id % DEPTH`
//! (or points at the input itself when it returns it). A slot is reused only after the call
//! that used it was answered and its outputs copied out; tensors that do not fit travel in
//! the frame instead. Pages are allocated only when touched: `shm_mb` bounds, it does not
//! reserve.

// Mapping memory needs `unsafe`; it stays in this file, behind bounds-checked copies.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// Tensors at least this large go through shared memory (below it a pipe costs the same).
pub(super) const MIN_BYTES: usize = 64 << 10;

/// A worker process's mapping.
pub(super) struct Arena {
    ptr: *mut u8,
    len: usize,
    /// Slots of each kind (the calls a worker may have written ahead).
    depth: usize,
    fd: OwnedFd,
}

// SAFETY: the mapping is plain memory owned by this value; which slot is written when is
// ordered by the calls (see the module docs), never by two threads at once.
unsafe impl Send for Arena {}
unsafe impl Sync for Arena {}

impl Arena {
    /// A mapping of `len` bytes (rounded down to whole slots of a page multiple).
    pub(super) fn new(len: usize, depth: usize) -> std::io::Result<Arena> {
        use rustix::fs::{MemfdFlags, memfd_create};
        use rustix::mm::{MapFlags, ProtFlags, mmap};
        let page = rustix::param::page_size();
        let slot = (len / (2 * depth)) / page * page;
        let len = slot * 2 * depth;
        if len == 0 {
            return Err(std::io::Error::other(
                "shared memory smaller than a page per slot",
            ));
        }
        let fd = memfd_create("servegraph-python", MemfdFlags::CLOEXEC)?;
        rustix::fs::ftruncate(&fd, len as u64)?;
        // SAFETY: a fresh shared mapping of a file of exactly `len` bytes, unmapped on drop.
        let ptr = unsafe {
            mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &fd,
                0,
            )?
        };
        Ok(Arena {
            ptr: ptr.cast(),
            len,
            depth,
            fd,
        })
    }

    /// Has the worker `command` starts inherit the mapping (only that child: the descriptor
    /// stays close-on-exec for every other), and tells it where it is: `SERVEGRAPH_SHM` is
    /// `fd:len:depth`.
    pub(super) fn share_with(&self, command: &mut std::process::Command) {
        use std::os::unix::process::CommandExt;
        command.env("SERVEGRAPH_SHM", self.describe());
        let fd = self.fd.as_raw_fd();
        // SAFETY: between fork and exec the closure only calls fcntl, which is
        // async-signal-safe, on a descriptor the child inherited.
        unsafe {
            command.pre_exec(move || {
                let fd = std::os::fd::BorrowedFd::borrow_raw(fd);
                rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
                Ok(())
            });
        }
    }

    /// `fd:len:depth`.
    fn describe(&self) -> String {
        format!(
            "{}:{}:{}",
            self.fd.as_fd().as_raw_fd(),
            self.len,
            self.depth
        )
    }

    fn slot_len(&self) -> usize {
        self.len / (2 * self.depth)
    }

    /// Where call `id` may put its large inputs: (offset, length).
    pub(super) fn request_slot(&self, id: u64) -> (usize, usize) {
        let k = (id % self.depth as u64) as usize;
        (k * self.slot_len(), self.slot_len())
    }

    /// Copies `src` into the mapping at `offset` (a request slot: the worker reads it only
    /// once the call's frame is written, and only the worker's writer task writes there).
    pub(super) fn write_at(&self, offset: usize, src: &[u8]) {
        let end = offset
            .checked_add(src.len())
            .expect("an offset in the mapping");
        assert!(end <= self.len, "a write past the shared memory");
        // SAFETY: in bounds (checked above); `src` is process memory, never the mapping.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.add(offset), src.len()) }
    }

    /// The bytes a worker's answer points at, or `None` outside the mapping. The worker wrote
    /// them before its answer and writes there again only for a later call.
    pub(super) fn bytes(&self, offset: usize, len: usize) -> Option<&[u8]> {
        let end = offset.checked_add(len)?;
        // SAFETY: in bounds; see above for who writes when.
        (end <= self.len).then(|| unsafe { std::slice::from_raw_parts(self.ptr.add(offset), len) })
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: mapped in `new` with this length; no slice outlives `self`.
        let _ = unsafe { rustix::mm::munmap(self.ptr.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_whole_pages_and_bounded() {
        let a = Arena::new(1 << 20, 2).unwrap();
        let (off0, len) = a.request_slot(2);
        let (off1, _) = a.request_slot(3);
        assert_eq!((off0, off1, len), (0, 256 << 10, 256 << 10));
        a.write_at(off1, &[1, 2, 3, 4]);
        assert_eq!(a.bytes(off1, 4), Some(&[1, 2, 3, 4][..]));
        assert_eq!(a.bytes((1 << 20) - 2, 4), None);
        assert!(a.describe().ends_with(":1048576:2"));
    }
}
