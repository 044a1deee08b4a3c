"""CSV tables and time series: columns by name/index, scaling on train only, bad values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dlrun.data import download, tabular
from dlrun.data.bundle import Standardizer
from dlrun.data.tabular import csv_dataset, read_csv, series
from dlrun.errors import DataError


@pytest.fixture
def iris_like(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    lines = ["length,width,height,species"]
    for i in range(60):
        cls = ["setosa", "versicolor", "virginica"][i % 3]
        a, b, c = rng.normal(size=3) * 2 + i % 3 * 5 + 10
        lines.append(f"{a:.3f},{b:.3f},{c:.3f},{cls}")
    path = tmp_path / "iris.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_classification_by_name(iris_like: Path) -> None:
    b = csv_dataset(iris_like, target="species", val_fraction=0.2, test_fraction=0.1, seed=0)
    assert b.meta["classes"] == ["setosa", "versicolor", "virginica"]
    assert b.meta["features"] == ["length", "width", "height"] and b.meta["num_classes"] == 3
    assert len(b.train) == 42 and len(b.val) == 12 and len(b.test) == 6
    # the table is one memory-mapped float32 cache; the splits are row indices into it
    assert isinstance(b.train.x, np.memmap) and b.train.x.shape == (60, 3)
    assert b.train.x.dtype == np.float32 and b.train.y.dtype == np.int64
    train_x = b.train.inputs(slice(None))
    assert train_x.shape == (42, 3) and train_x.dtype == np.float32
    # standardisation fitted on the training rows only
    np.testing.assert_allclose(train_x.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(train_x.std(axis=0), 1, atol=1e-4)
    raw = csv_dataset(
        iris_like, target="species", val_fraction=0.2, test_fraction=0.1, standardize=False
    )
    scaler = Standardizer.from_meta(b.meta["scaler"])
    raw_val = raw.val.inputs(slice(None))
    np.testing.assert_allclose(scaler.transform(raw_val), b.val.inputs(slice(None)), atol=1e-5)
    np.testing.assert_allclose(b.meta["scaler"]["mean"],
                               raw.train.inputs(slice(None)).mean(axis=0), rtol=1e-5)
    rows = np.array([[float(v) for v in r[:3]] for r in read_csv(iris_like).rows], np.float32)
    np.testing.assert_array_equal(raw.train.inputs(slice(None)), rows[raw.train.index])
    json.dumps(b.meta)


def test_columns_by_index_and_regression(iris_like: Path) -> None:
    b = csv_dataset(
        iris_like,
        target=0,
        features=[1, "height"],
        task="regression",
        val_fraction=0.0,
        scale_target=True,
    )
    assert b.meta["target"] == "length" and b.meta["features"] == ["width", "height"]
    assert b.train.y.shape == (60, 1) and b.train.y.dtype == np.float32
    assert b.meta["output_dim"] == 1 and b.meta["target_scaler"]["kind"] == "standard"
    np.testing.assert_allclose(b.train.y.mean(), 0, atol=1e-5)
    last = csv_dataset(iris_like, target=-1)
    assert last.meta["target"] == "species"


def test_chunked_parse_and_cache(iris_like: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = csv_dataset(iris_like, target="species", val_fraction=0.2)
    cache = Path(whole.meta["cache"])
    assert cache.parent == iris_like.parent / ".dlrun-cache"
    cache.unlink()
    monkeypatch.setattr(tabular, "CHUNK_ROWS", 7)  # 60 rows in 9 chunks
    chunked = csv_dataset(iris_like, target="species", val_fraction=0.2)
    np.testing.assert_array_equal(chunked.train.x, whole.train.x)
    np.testing.assert_array_equal(chunked.train.y, whole.train.y)
    assert chunked.meta["classes"] == whole.meta["classes"]
    stamp = cache.stat().st_mtime_ns
    csv_dataset(iris_like, target="species", val_fraction=0.2)
    assert cache.stat().st_mtime_ns == stamp  # unchanged file: read from the cache
    with iris_like.open("a") as f:
        f.write("1,2,3,setosa\n")
    assert len(csv_dataset(iris_like, target="species", val_fraction=0.0).train) == 61
    with iris_like.open("a") as f:
        f.write("1,x,3,setosa\n")
    with pytest.raises(DataError, match=r"iris\.csv, line 63, column 'width': 'x' is not a"):
        csv_dataset(iris_like, target="species")


def test_numeric_classes_sort_numerically(tmp_path: Path) -> None:
    path = tmp_path / "n.csv"
    path.write_text("x,label\n" + "".join(f"{i},{c}\n" for i, c in enumerate([10, 2, 9] * 4)))
    b = csv_dataset(path, target="label", val_fraction=0.0)
    assert b.meta["classes"] == ["2", "9", "10"]


def test_missing_column_lists_available(iris_like: Path) -> None:
    with pytest.raises(
        DataError,
        match=r"iris\.csv: no column 'colour'; available columns: "
        r"length, width, height, species",
    ):
        csv_dataset(iris_like, target="colour")
    with pytest.raises(DataError, match=r"iris\.csv: no column 'depth'"):
        csv_dataset(iris_like, target="species", features=["length", "depth"])
    with pytest.raises(DataError, match=r"column index 7 out of range"):
        csv_dataset(iris_like, target=7)


def test_non_numeric_value_gives_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    # CRLF endings and a blank line: the reported line is the physical line in the file
    path.write_bytes(b"a,b,y\r\n1,2,0\r\n\r\n3,4,1\r\n5,oops,0\r\n")
    with pytest.raises(DataError, match=r"bad\.csv, line 5, column 'b': 'oops' is not a number"):
        csv_dataset(path, target="y")
    path.write_bytes(b"a,b,y\n1,,0\n")
    with pytest.raises(DataError, match=r"bad\.csv, line 2, column 'b': empty value"):
        csv_dataset(path, target="y")
    path.write_bytes(b"a,b,y\n1,inf,0\n")
    with pytest.raises(DataError, match=r"line 2, column 'b': 'inf' is not a finite number"):
        csv_dataset(path, target="y")


def test_ragged_row_and_empty_files(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("a,b\n1,2\n3\n")
    with pytest.raises(DataError, match=r"r\.csv, line 3: 1 fields, expected 2"):
        read_csv(path)
    path.write_text("")
    with pytest.raises(DataError, match=r"r\.csv: the CSV file is empty"):
        read_csv(path)
    path.write_text("a,b\n")
    with pytest.raises(DataError, match="header but no data rows"):
        read_csv(path)
    with pytest.raises(DataError, match=r"missing\.csv: file not found"):
        read_csv(tmp_path / "missing.csv")


def test_quoted_header_crlf_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_bytes(b'\xef\xbb\xbf"date","value"\r\n1949-01-01,112\r\n1949-02-01,118\r\n')
    t = read_csv(path)
    assert t.columns == ["date", "value"] and t.rows[1] == ["1949-02-01", "118"]
    assert t.numbers(t.column_index("value")).tolist() == [112.0, 118.0]


def test_bad_task(iris_like: Path) -> None:
    with pytest.raises(DataError, match="task must be"):
        csv_dataset(iris_like, target="species", task="ranking")
    with pytest.raises(DataError, match="also a feature"):
        csv_dataset(iris_like, target="length", features=["length"])


# --- series --------------------------------------------------------------------------------


@pytest.fixture
def ramp(tmp_path: Path) -> Path:
    path = tmp_path / "ramp.csv"
    path.write_text("t,v\n" + "".join(f"{i},{i}\n" for i in range(100)))
    return path


def test_series_windows_are_chronological(ramp: Path) -> None:
    b = series(
        ramp, column="v", lookback=5, horizon=2, val_fraction=0.2, test_fraction=0.1, scale="none"
    )
    assert b.meta["points"] == {"train": 70, "val": 20, "test": 10}
    assert b.train.x.shape == (64, 5, 1) and b.train.y.shape == (64, 2)
    np.testing.assert_array_equal(b.train.x[0, :, 0], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(b.train.y[0], [5, 6])
    # targets stay inside their part; val inputs may look back into train
    assert b.train.y.max() == 69
    assert b.val.y.min() == 70 and b.val.y.max() == 89 and b.val.x.min() == 65
    assert b.test.y.min() == 90 and b.test.y.max() == 99
    assert b.meta["task"] == "regression" and b.meta["input_shape"] == [5, 1]
    json.dumps(b.meta)


def test_series_scaling_fitted_on_train_only(ramp: Path) -> None:
    b = series(ramp, lookback=3, val_fraction=0.2, test_fraction=0.2)
    mean, std = np.arange(60).mean(), np.arange(60).std()
    assert b.meta["scaler"]["mean"] == [pytest.approx(mean)]
    assert b.meta["scaler"]["std"] == [pytest.approx(std)]
    assert b.meta["column"] == "v"  # default: last column
    inv = Standardizer.from_meta(b.meta["scaler"]).inverse(b.test.y)
    np.testing.assert_allclose(inv[-1], [99], atol=1e-4)
    m = series(ramp, lookback=3, scale="minmax", val_fraction=0.2, test_fraction=0.2)
    assert float(m.train.x.min()) == 0.0 and float(m.train.y.max()) == 1.0
    assert float(m.test.y.max()) > 1.0  # beyond the training range, as it should be


def test_series_errors(ramp: Path, tmp_path: Path) -> None:
    with pytest.raises(
        DataError,
        match=r"ramp\.csv: the test part \(5 of 100 values\) is too "
        r"short for lookback=3 and horizon=10",
    ):
        series(ramp, lookback=3, horizon=10, test_fraction=0.05)
    with pytest.raises(DataError, match=r"no column 'Temp'; available columns: t, v"):
        series(ramp, column="Temp")
    with pytest.raises(DataError, match="scale must be"):
        series(ramp, scale="log")
    with pytest.raises(DataError, match="unknown series 'sunspots'"):
        series(dataset="sunspots")
    bad = tmp_path / "bad.csv"
    bad.write_text("d,v\n1,2.5\n2,?0.2\n")
    with pytest.raises(DataError, match=r"bad\.csv, line 3, column 'v': '\?0\.2' is not a number"):
        series(bad)


@pytest.mark.realdata
def test_real_daily_min_temperatures(data_dir: Path) -> None:
    path = data_dir / "timeseries" / "daily-min-temperatures.csv"
    download.verify_file(path, download.SOURCES["timeseries"].files[path.name], use_stamp=False)
    t = read_csv(path)
    temps = t.numbers(t.column_index("Temp"))
    assert len(temps) == 3650 and temps.min() == 0.0 and temps.max() == 26.3
    b = series(path, column="Temp", lookback=30, val_fraction=0.15, test_fraction=0.15)
    assert sum(b.meta["points"].values()) == 3650
    assert b.train.x.shape[1:] == (30, 1) and b.train.y.shape[1:] == (1,)
    assert len(b.train) + len(b.val) + len(b.test) == 3650 - 30


@pytest.mark.realdata
def test_real_air_passengers_crlf(data_dir: Path) -> None:
    path = data_dir / "timeseries" / "AirPassengers.csv"
    download.verify_file(path, download.SOURCES["timeseries"].files[path.name], use_stamp=False)
    assert b"\r\n" in path.read_bytes()
    b = series(dataset="airpassengers", root=data_dir, lookback=12)
    assert b.meta["column"] == "value" and sum(b.meta["points"].values()) == 144
    raw = read_csv(path).numbers(1)
    assert raw[0] == 112 and raw[-1] == 432
