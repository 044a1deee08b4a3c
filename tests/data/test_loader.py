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
