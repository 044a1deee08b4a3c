"""DataLoader: seeded per-epoch order, full coverage, drop_last, resume, buffers."""

from __future__ import annotations

import numpy as np
import pytest

from dlrun.data.loader import DataLoader
from dlrun.errors import CheckpointError, DataError

N = 103


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    x = np.arange(N * 4, dtype=np.float32).reshape(N, 1, 2, 2)
    y = np.arange(N, dtype=np.int64)
    return x, y


def epoch_ids(loader: DataLoader) -> list[list[int]]:
    return [yb.tolist() for _, yb in loader]


def test_every_sample_once_per_epoch_and_rows_aligned(data: tuple) -> None:
    x, y = data
    loader = DataLoader(x, y, batch_size=10, shuffle=True, seed=1)
    assert len(loader) == 11
    seen = []
    for xb, yb in loader:
        assert xb.dtype == np.float32 and xb.shape[1:] == (1, 2, 2)
        np.testing.assert_array_equal(xb[:, 0, 0, 0], yb * 4)  # x row matches its label
        seen.extend(yb.tolist())
    assert sorted(seen) == list(range(N))
    assert [len(b) for b in epoch_ids(loader)] == [10] * 10 + [3]


def test_order_depends_only_on_seed_and_epoch(data: tuple) -> None:
    x, y = data
    a = DataLoader(x, y, 16, seed=7)
    b = DataLoader(x, y, 16, seed=7)
    first, second = epoch_ids(a), epoch_ids(a)
    assert first != second  # a new permutation every epoch
    assert epoch_ids(b) == first
    b.set_epoch(1)
    assert epoch_ids(b) == second
    c = DataLoader(x, y, 16, seed=8)
    assert epoch_ids(c) != first
    # batch size does not change the sample order of an epoch
    d = DataLoader(x, y, 5, seed=7)
    assert sum(epoch_ids(d), []) == sum(first, [])


def test_no_shuffle_keeps_order(data: tuple) -> None:
    x, y = data
    loader = DataLoader(x, y, 50, shuffle=False)
    assert sum(epoch_ids(loader), []) == list(range(N))
    assert sum(epoch_ids(loader), []) == list(range(N))


def test_drop_last(data: tuple) -> None:
    x, y = data
    loader = DataLoader(x, y, 10, seed=0, drop_last=True)
    assert len(loader) == 10
    batches = epoch_ids(loader)
    assert len(batches) == 10 and all(len(b) == 10 for b in batches)
    assert len(set(sum(batches, []))) == 100
    small = DataLoader(x[:5], y[:5], 10, drop_last=True)
    assert len(small) == 0 and epoch_ids(small) == []


def test_resume_mid_epoch_reproduces_the_batches(data: tuple) -> None:
    x, y = data
    reference = DataLoader(x, y, 8, seed=3)
    ref = epoch_ids(reference) + epoch_ids(reference)

    run = DataLoader(x, y, 8, seed=3)
    got = []
    for i, (_, yb) in enumerate(run):
        got.append(yb.tolist())
        if i == 4:
            break
    state = run.state_dict()
    assert state["epoch"] == 0 and state["position"] == 5

    resumed = DataLoader(x, y, 8, seed=3)
    resumed.load_state_dict(state)
    got += epoch_ids(resumed) + epoch_ids(resumed)
    assert got == ref


def test_state_saved_after_last_batch_rolls_over(data: tuple) -> None:
    x, y = data
    ref = DataLoader(x, y, 20, seed=2)
    ref.set_epoch(1)
    expected = epoch_ids(ref)
    loader = DataLoader(x, y, 20, seed=2)
    loader.load_state_dict({"epoch": 0, "position": len(loader)})
    assert epoch_ids(loader) == expected
    assert loader.state_dict()["epoch"] == 2 and loader.state_dict()["position"] == 0


def test_mismatched_state_is_rejected(data: tuple) -> None:
    x, y = data
    state = DataLoader(x, y, 8, seed=3).state_dict()
    with pytest.raises(CheckpointError, match="batch_size 8 \\(now 16\\)"):
        DataLoader(x, y, 16, seed=3).load_state_dict(state)
    with pytest.raises(CheckpointError, match="out of range"):
        DataLoader(x, y, 8, seed=3).load_state_dict({**state, "position": 99})


def test_x_shape_flattens_without_copy(data: tuple) -> None:
    x, y = data
    loader = DataLoader(x, y, 10, shuffle=False, x_shape=(4,))
    xb, _ = next(iter(loader))
    assert xb.shape == (10, 4) and np.shares_memory(xb, x)
    with pytest.raises(DataError, match="x_shape"):
        DataLoader(x, y, 10, x_shape=(5,))


def test_reused_buffers_give_the_same_batches(data: tuple) -> None:
    x, y = data
    fresh = DataLoader(x, y, 10, seed=4)
    reused = DataLoader(x, y, 10, seed=4, reuse_buffers=True)
    for (xa, ya), (xb, yb) in zip(fresh, reused, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    batches = [xb for xb, _ in DataLoader(x, y, 10, seed=4)]
    assert not np.shares_memory(batches[0], batches[1])  # CPU default: caller may keep them


def test_bad_arguments(data: tuple) -> None:
    x, y = data
    with pytest.raises(DataError, match="103 inputs but 102 targets"):
        DataLoader(x, y[:-1], 10)
    with pytest.raises(DataError, match="batch_size must be an integer >= 1"):
        DataLoader(x, y, 0)
    with pytest.raises(DataError, match="empty"):
        DataLoader(x[:0], y[:0], 4)
    with pytest.raises(DataError, match="NumPy arrays"):
        DataLoader(x.tolist(), y, 4)  # type: ignore[arg-type]


@pytest.mark.gpu
@pytest.mark.parametrize("resident", [False, True])
def test_cuda_batches_match_cpu(data: tuple, resident: bool) -> None:
    x, y = data
    cpu = DataLoader(x, y, 10, seed=5)
    gpu = DataLoader(x, y, 10, seed=5, device="cuda", resident=resident)
    for (xa, ya), (xb, yb) in zip(cpu, gpu, strict=True):
        assert type(xb).__module__.startswith("cupy")
        np.testing.assert_array_equal(xa, xb.get())
        np.testing.assert_array_equal(ya, yb.get())


# ----- random sampling over strided text windows (nanoGPT's get_batch) ------------------------

T = 16


@pytest.fixture
def corpus() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A corpus of ids and its stride-1 next-token windows (views, as dlrun.data.text makes)."""
    ids = np.random.default_rng(0).integers(0, 50, size=2000)
    view = np.lib.stride_tricks.sliding_window_view(ids, T + 1)
    return ids, view[:, :-1], view[:, 1:]


def random_batches(loader: DataLoader, n: int | None = None) -> list[list[int]]:
    out = []
    for xb, _ in loader:
        out.append(xb[:, 0].tolist())
        if n is not None and len(out) == n:
            break
    return out


def test_random_batches_are_the_slices_at_the_drawn_offsets(corpus: tuple) -> None:
    ids, x, y = corpus
    loader = DataLoader(x, y, 12, seed=3, sampling="random")
    assert len(loader) == len(x) // 12
    for b, (xb, yb) in enumerate(loader):
        offsets = loader.draw(0, b)
        assert offsets.min() >= 0 and offsets.max() < len(ids) - T
        assert xb.shape == yb.shape == (12, T) and xb.dtype == np.int64
        np.testing.assert_array_equal(xb, np.stack([ids[i:i + T] for i in offsets]))
        np.testing.assert_array_equal(yb, np.stack([ids[i + 1:i + T + 1] for i in offsets]))
        if b == 3:
            break
    # drawn with replacement: batches may be larger than the data, and are always full
    small = DataLoader(x[:5], y[:5], 8, sampling="random")
    assert len(small) == 1 and [len(b) for b in random_batches(small)] == [8]


def test_random_batches_depend_only_on_seed_epoch_and_step(corpus: tuple) -> None:
    _, x, y = corpus
    a = DataLoader(x, y, 12, seed=7, sampling="random")
    first = random_batches(a, 5)
    assert random_batches(DataLoader(x, y, 12, seed=7, sampling="random"), 5) == first
    assert random_batches(DataLoader(x, y, 12, seed=8, sampling="random"), 5) != first
    assert first[0] != first[1]  # fresh offsets every step
    later = DataLoader(x, y, 12, seed=7, sampling="random")
    later.set_epoch(1)
    second = random_batches(later, 5)
    assert second != first
    again = DataLoader(x, y, 12, seed=7, sampling="random")
    again.set_epoch(1)
    assert random_batches(again, 5) == second
    # the same batches with reused buffers (the GPU path) and through order()
    reused = DataLoader(x, y, 12, seed=7, sampling="random", reuse_buffers=True)
    assert random_batches(reused, 5) == first
    assert a.order(0)[:12].tolist() == a.draw(0, 0).tolist()


def test_random_sampling_resumes_mid_epoch_exactly(corpus: tuple) -> None:
    _, x, y = corpus
    n = len(x) // 40
    full = DataLoader(x, y, 40, seed=2, sampling="random")
    ref = random_batches(full) + random_batches(full)  # epochs 0 and 1
    assert len(ref) == 2 * n

    run = DataLoader(x, y, 40, seed=2, sampling="random")
    got = random_batches(run, 17)
    state = run.state_dict()
    assert (state["epoch"], state["position"], state["sampling"]) == (0, 17, "random")
    resumed = DataLoader(x, y, 40, seed=2, sampling="random")
    resumed.load_state_dict(state)
    got += random_batches(resumed) + random_batches(resumed)
    assert got == ref
    with pytest.raises(CheckpointError, match="sampling 'random' \\(now 'permutation'\\)"):
        DataLoader(x, y, 40, seed=2).load_state_dict(state)


def test_gathering_from_windows_copies_only_the_batch(corpus: tuple) -> None:
    import tracemalloc

    ids = np.arange(200_000, dtype=np.int64)  # its stride-1 windows would be 100 MB as a copy
    view = np.lib.stride_tricks.sliding_window_view(ids, 65)
    x, y = view[:, :-1], view[:, 1:]
    for loader in (DataLoader(x, y, 32, seed=1, sampling="random"),
                   DataLoader(x, y, 32, seed=1),
                   DataLoader(x, y, 32, seed=1, reuse_buffers=True)):
        tracemalloc.start()
        try:
            batches = iter(loader)
            for _ in range(3):
                xb, yb = next(batches)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 4_000_000, peak  # the permutation of 200k rows is 1.6 MB; a copy 100 MB
        np.testing.assert_array_equal(yb - xb, 1)


def test_random_sampling_arguments(corpus: tuple) -> None:
    _, x, y = corpus
    with pytest.raises(DataError, match="sampling must be one of permutation, random"):
        DataLoader(x, y, 4, sampling="replacement")
    with pytest.raises(DataError, match="shuffle=False"):
        DataLoader(x, y, 4, shuffle=False, sampling="random")


def test_resident_copy_of_windows_moves_the_span_not_the_rows(monkeypatch) -> None:
    from dlrun.data import loader as loader_module

    sent: list[int] = []

    def transfer(a: np.ndarray, device: str) -> np.ndarray:  # a host -> device copy
        sent.append(a.nbytes)
        return np.array(a, copy=True)

    monkeypatch.setattr(loader_module, "to_device", transfer)
    ids = np.arange(1000, dtype=np.int64)
    x = np.lib.stride_tricks.sliding_window_view(ids, 65)[:, :-1]  # 936 rows of 64
    moved = loader_module._resident_copy(x, "cpu")  # on a GPU: the same on CuPy arrays
    np.testing.assert_array_equal(moved, x)
    assert not np.shares_memory(moved, ids)
    assert sent == [(1000 - 1) * 8]  # the corpus it spans, not 64 times it
    rows = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]  # not overlapping: compact copy
    np.testing.assert_array_equal(loader_module._resident_copy(rows, "cpu"), rows)
    assert sent[-1] == rows.nbytes
