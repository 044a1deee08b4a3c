"""DataLoader over memory-mapped rows (index, transform) and with a prefetching thread: the same
batches as without, an exact resume position, a clean stop, errors raised in the caller."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from dlrun.data.bundle import BatchKey, Split
from dlrun.data.loader import DataLoader
from dlrun.data.transforms import Augment, Normalize
from dlrun.errors import DataError

N = 57


@pytest.fixture
def mapped(tmp_path: Path) -> tuple[np.memmap, np.ndarray]:
    """uint8 'images' in a memory-mapped .npy file and labels; x[i] is filled with i % 256."""
    path = tmp_path / "x.npy"
    x = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(N, 1, 4, 4))
    x[...] = (np.arange(N) % 256).astype(np.uint8)[:, None, None, None]
    x.flush()
    return np.load(path, mmap_mode="r"), np.arange(N, dtype=np.int64)


def _loader(x: np.ndarray, y: np.ndarray, **kw) -> DataLoader:
    rows = np.arange(3, N, 2)  # a split: every other row of the shared array
    transform = Normalize(np.array([[[0.5]]]), np.array([[[0.25]]]), 1 / 255, Augment(True, 1))
    opts = {"seed": 5, "index": rows, "transform": transform, "augment": True, **kw}
    return DataLoader(x, y[rows], 6, **opts)


def _batches(loader: DataLoader, epochs: int = 2) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for _ in range(epochs):
        out += [(np.array(xb), np.array(yb)) for xb, yb in loader]
    return out


def _same(a: list, b: list) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_index_and_transform_gather_only_the_split_rows(mapped: tuple) -> None:
    x, y = mapped
    loader = _loader(x, y, augment=False, shuffle=False)
    xb, yb = next(iter(loader))
    assert yb.tolist() == [3, 5, 7, 9, 11, 13]
    assert xb.dtype == np.float32
    np.testing.assert_allclose(xb[:, 0, 0, 0], (yb / 255 - 0.5) / 0.25, rtol=1e-6)
    split = Split(x, y).take(np.arange(10, 20))
    assert split.x is x and split.index.tolist() == list(range(10, 20))  # no copy of the map


@pytest.mark.parametrize("sampling", ["permutation", "random"])
@pytest.mark.parametrize("reuse", [False, True])
def test_prefetch_gives_the_same_batches(mapped: tuple, sampling: str, reuse: bool) -> None:
    x, y = mapped
    plain = _batches(_loader(x, y, sampling=sampling, reuse_buffers=reuse))
    for depth in (1, 2, 5):
        _same(_batches(_loader(x, y, sampling=sampling, reuse_buffers=reuse, prefetch=depth)),
              plain)


def test_prefetched_batches_are_not_counted_and_resume_exactly(mapped: tuple) -> None:
    x, y = mapped
    whole = _batches(_loader(x, y), epochs=2)
    loader = _loader(x, y, prefetch=3)
    it = iter(loader)
    seen = [tuple(np.array(a) for a in next(it)) for _ in range(2)]
    state = loader.state_dict()
    assert state["position"] == 2  # the thread ran ahead, the position did not
    del it  # the run stops here (an interrupt); the thread stops with the iterator
    resumed = _loader(x, y, prefetch=2)
    resumed.load_state_dict(state)
    rest = _batches(resumed, epochs=2)[: len(whole) - 2]
    _same(seen + rest, whole)


def test_stopping_early_stops_the_thread(mapped: tuple) -> None:
    x, y = mapped
    before = threading.active_count()
    loader = _loader(x, y, prefetch=2)
    for i, _ in enumerate(loader):
        if i == 1:
            break
    assert threading.active_count() == before
    assert loader.position == 2


def test_an_error_while_prefetching_is_raised_in_the_caller(mapped: tuple) -> None:
    x, y = mapped

    def broken(xb: np.ndarray, key: BatchKey | None, dtype: np.dtype) -> np.ndarray:
        if key is not None and key.batch == 2:
            raise DataError("bad batch 2")
        return xb.astype(dtype)

    loader = DataLoader(x, y, 10, transform=broken, augment=True, prefetch=2)
    it = iter(loader)
    next(it), next(it)
    with pytest.raises(DataError, match="bad batch 2"):
        next(it)
    assert loader.position == 2


def test_bad_prefetch(mapped: tuple) -> None:
    with pytest.raises(DataError, match="prefetch"):
        DataLoader(*mapped, 4, prefetch=-1)
    with pytest.raises(DataError, match="index"):
        DataLoader(mapped[0], mapped[1][:3], 4, index=np.array([0, 1, N]))
