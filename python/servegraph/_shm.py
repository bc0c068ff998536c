"""The worker's shared memory: the engine hands it a memfd (`SERVEGRAPH_SHM=fd:len:depth`),
split into 2*depth equal slots. Inputs of 64 KiB or more arrive in request slot `id % depth` as
read-only views (valid for the call only: the slot is reused by a later call); outputs of
64 KiB or more are copied into response slot `depth + id % depth` when they fit, or, when an
output *is* a view of the shared memory (a model returning its input), sent as its offset
with no copy at all (`_frames.write_frame` decides which).
"""

import os

import numpy as np

# Tensors this large or larger go through shared memory when they fit.
MIN_BYTES = 64 << 10


class Arena:
    """The engine's memfd for this worker, mapped."""

    def __init__(self, spec):
        import mmap

        fd, size, depth = (int(x) for x in spec.split(":"))
        self.mm = mmap.mmap(fd, size)
        os.close(fd)
        self.size = size
        self.depth = depth
        self.slot = size // (2 * depth)
        self.base = np.frombuffer(self.mm, dtype=np.uint8).__array_interface__["data"][0]

    def view(self, dtype, dims, offset, nbytes):
        if offset + nbytes > self.size:
            raise ValueError("a tensor outside the shared memory")
        arr = np.frombuffer(self.mm, dtype=dtype, count=nbytes // dtype.itemsize, offset=offset)
        arr = arr.reshape(dims)
        arr.flags.writeable = False
        return arr

    def offset_of(self, arr):
        """Where a contiguous array lies in the mapping, or None."""
        if not arr.flags.c_contiguous:
            return None
        addr = arr.__array_interface__["data"][0]
        if self.base <= addr and addr + arr.nbytes <= self.base + self.size:
            return addr - self.base
        return None

    def response_slot(self, call_id):
        start = (self.depth + call_id % self.depth) * self.slot
        return start, start + self.slot
