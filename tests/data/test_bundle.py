"""Split helpers and the scaler shared by all builders."""

from __future__ import annotations

import numpy as np
import pytest

from dlrun.data.bundle import DatasetBundle, Split, Standardizer, random_split
from dlrun.errors import DataError


def test_random_split_is_a_seeded_partition() -> None:
    s = Split(np.arange(100), np.arange(100) * 2)
    train, val, test = random_split(s, (0.2, 0.1), seed=4, dataset="t")
    assert (len(train), len(val), len(test)) == (70, 20, 10)
    rows = np.concatenate([train.x, val.x, test.x])
    assert sorted(rows.tolist()) == list(range(100))
    np.testing.assert_array_equal(train.y, train.x * 2)
    assert (np.diff(train.x) > 0).all()  # original order kept inside a part
    again = random_split(s, (0.2, 0.1), seed=4, dataset="t")
    np.testing.assert_array_equal(again[1].x, val.x)
    # adding a test fraction does not change the validation rows
    only_val = random_split(s, (0.2,), seed=4, dataset="t")
    np.testing.assert_array_equal(only_val[1].x, val.x)


def test_empty_part_is_none_and_bundle_lists_splits() -> None:
    s = Split(np.zeros((10, 2)), np.zeros(10))
    train, val = random_split(s, (0.0,), seed=0, dataset="t")
    assert val is None and len(train) == 10
    assert list(DatasetBundle(train, None, None).splits()) == ["train"]


def test_split_length_mismatch() -> None:
    with pytest.raises(DataError, match="3 inputs but 2 targets"):
        Split(np.zeros(3), np.zeros(2))


def test_standardizer_constant_column_and_round_trip() -> None:
    x = np.array([[1.0, 5.0], [3.0, 5.0]])
    sc = Standardizer.fit(x)
    z = sc.transform(x)
    assert z.dtype == np.float32 and z[:, 1].tolist() == [0.0, 0.0]
    np.testing.assert_allclose(sc.inverse(z), x)
    np.testing.assert_allclose(Standardizer.from_meta(sc.to_meta()).mean, sc.mean)
