"""Large host buffers on transparent huge pages.

The first write to fresh memory costs the kernel a page fault per 4 KB page. For the sampler's reads and
batches (tens to hundreds of MB each, allocated anew every time) those faults cost more than the copying
itself: on the bench VM a fresh buffer filled at 1-3 GB/s, the same buffer on 2 MB pages at ~9 GB/s.
Linux only; elsewhere, and for small buffers, an ordinary allocation.
"""
import math
import mmap

import numpy as np
import torch

HUGE_PAGE = 2 << 20
NUMPY_DTYPES = {torch.float16: np.float16, torch.float32: np.float32, torch.int8: np.int8, torch.uint8: np.uint8}


def empty_array(shape: tuple[int, ...], dtype) -> np.ndarray:
    """np.empty(shape, dtype), on huge pages when it is large."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < HUGE_PAGE or not hasattr(mmap, "MADV_HUGEPAGE"):
        return np.empty(shape, dtype)
    # private: a shared anonymous map is shmem, which ignores the advice
    memory = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    memory.madvise(mmap.MADV_HUGEPAGE)
    return np.frombuffer(memory, dtype).reshape(shape)


def empty_tensor(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """torch.empty(shape, dtype, device), on huge pages when it is large and in host memory."""
    if device.type != "cpu" or dtype not in NUMPY_DTYPES:
        return torch.empty(shape, dtype=dtype, device=device)
    return torch.from_numpy(empty_array(tuple(shape), NUMPY_DTYPES[dtype]))
