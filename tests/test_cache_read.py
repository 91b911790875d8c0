"""Reading cached rows straight from the chunk files gives what zarr gives, in buffers that behave as usual."""
import numpy as np
import pytest
import torch
import zarr
from zarr.codecs import BloscCodec

from cache.buffers import HUGE_PAGE, BufferPool, empty_array, empty_tensor
from cache.store import _raw_chunk_folder, read_rows

RANGES = [(0, 50), (3, 21), (16, 24), (45, 50), (7, 7), (0, None), (40, 100)]


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_raw_chunks_are_read_like_zarr_reads_them(tmp_path, dtype):
    array = zarr.create_array(tmp_path / "a", shape=(50, 3, 4), chunks=(8, 3, 4), dtype=dtype, compressors=None,
                              fill_value=0)
    data = np.random.default_rng(0).integers(-100, 100, (50, 3, 4)).astype(dtype)
    data[16:24] = 0  # a chunk of only the fill value, which zarr does not write
    array[:] = data
    assert _raw_chunk_folder(array) == tmp_path / "a" and not (tmp_path / "a" / "c" / "2").exists()
    for start, stop in RANGES:
        rows = read_rows(array, start, stop)
        assert rows.dtype == data.dtype
        np.testing.assert_array_equal(rows, data[start:stop])


@pytest.mark.parametrize("layout", [dict(compressors=BloscCodec()), dict(compressors=None, chunks=(8, 2, 4))],
                         ids=["compressed", "chunked-within-rows"])
def test_other_layouts_are_read_by_zarr(tmp_path, layout):
    array = zarr.create_array(tmp_path / "a", shape=(50, 3, 4), dtype="float16", **{"chunks": (8, 3, 4), **layout})
    data = np.random.default_rng(0).standard_normal((50, 3, 4)).astype(np.float16)
    array[:] = data
    assert _raw_chunk_folder(array) is None
    for start, stop in RANGES:
        np.testing.assert_array_equal(read_rows(array, start, stop), data[start:stop])


def test_large_buffers_hold_what_is_written_for_as_long_as_they_are_used():
    array = empty_array((HUGE_PAGE // 2 + 1, 2), np.float16)
    assert array.shape == (HUGE_PAGE // 2 + 1, 2) and array.dtype == np.float16 and array.flags.writeable
    array[:] = 1.5
    tensor = empty_tensor((3, HUGE_PAGE), torch.int8, torch.device("cpu"))
    tensor.fill_(-3)
    view = tensor[1:]  # outlives the tensor it was cut from
    del tensor
    assert float(array.astype(np.float32).sum()) == 1.5 * array.size and int(view.sum()) == -3 * view.numel()
    small = empty_tensor((2, 3), torch.float32, torch.device("cpu"))
    assert small.shape == (2, 3) and small.dtype == torch.float32


def test_a_large_buffer_is_reused_only_once_nothing_uses_it():
    pool = BufferPool(max_idle_bytes=8 * HUGE_PAGE)
    address = lambda a: a.__array_interface__["data"][0]  # noqa: E731
    first = pool.array((4 * HUGE_PAGE,), np.uint8)
    first[:] = 7
    tensor = torch.from_numpy(first)[10:]  # a view in torch keeps the memory in use
    where = address(first)
    del first
    second = pool.array((4 * HUGE_PAGE,), np.uint8)
    assert address(second) != where and int(tensor.min()) == 7
    del tensor
    assert pool.idle_bytes() == 4 * HUGE_PAGE
    reused = pool.array((2 * HUGE_PAGE - 50, 1), np.float16)  # a little smaller and another dtype: fits
    assert address(reused) == where and reused.shape == (2 * HUGE_PAGE - 50, 1) and pool.idle_bytes() == 0
    small = pool.array((HUGE_PAGE,), np.uint8)  # far smaller: a map of its own
    del reused, second, small
    assert pool.idle_bytes() == 5 * HUGE_PAGE  # 9 came back; the oldest 4 went to keep at most 8
