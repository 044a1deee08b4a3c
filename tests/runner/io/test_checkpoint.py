"""Checkpoints: safetensors + JSON round trip, integrity checks, and never unpickling."""

from __future__ import annotations

import hashlib
import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest

from dlrun.engine import rng
from dlrun.errors import CheckpointError
from dlrun.runner.io.checkpoint import (
    load_checkpoint,
    pack_state,
    parameters_hash,
    resolve_checkpoint,
    save_checkpoint,
    unpack_state,
)
from dlrun.runner.io.rundir import create_run_dir


def sample_arrays() -> dict[str, np.ndarray]:
    r = np.random.default_rng(0)
    return {
        "model.fc.weight": r.standard_normal((4, 3)).astype(np.float32),
        "model.fc.bias": r.standard_normal(4),  # float64
        "optim.state.0.exp_avg": r.standard_normal((4, 3)).astype(np.float32),
        "optim.step": np.array(12, dtype=np.int64),  # 0-d stays 0-d
        "model.mask": np.asfortranarray(r.integers(0, 5, (3, 2))).astype(np.int64),
    }


@pytest.fixture
def ckpt_dir(tmp_path: Path) -> Path:
    return create_run_dir(tmp_path, "ck") / "checkpoints"


def test_round_trip_keeps_values_dtypes_and_meta(
    ckpt_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rng, "_GENERATORS", {})  # leave the global generator as it was
    monkeypatch.setattr(rng, "_SEED", rng.initial_seed())
    rng.manual_seed(5)
    rng.generator("cpu").random(3)
    meta = {"step": 40, "epoch": 2, "metrics": {"val_loss": 0.25, "bad": math.nan},
            "rng": rng.get_state(), "loader": {"epoch": 2, "position": 0}}
    arrays = sample_arrays()
    path = save_checkpoint(ckpt_dir, "last", arrays, meta)
    assert path == ckpt_dir / "last.json"
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["last.json", "last.safetensors"]

    loaded, info = load_checkpoint(ckpt_dir.parent)  # the run folder -> last
    assert set(loaded) == set(arrays)
    for name, a in arrays.items():
        assert loaded[name].dtype == a.dtype and loaded[name].shape == a.shape
        np.testing.assert_array_equal(loaded[name], a)
    assert info["step"] == 40 and info["epoch"] == 2 and info["metrics"]["val_loss"] == 0.25
    assert math.isnan(info["metrics"]["bad"])
    assert info["tag"] == "last" and info["dlrun_version"] and len(info["weights_sha256"]) == 64
    assert info["arrays"]["model.fc.weight"] == {"dtype": "float32", "shape": [4, 3]}

    expected = rng.generator("cpu").random(4)
    rng.set_state(info["rng"])
    np.testing.assert_array_equal(rng.generator("cpu").random(4), expected)


@pytest.mark.parametrize("which", ["dir", "ckdir", "json", "safetensors"])
def test_load_accepts_every_path(ckpt_dir: Path, which: str) -> None:
    save_checkpoint(ckpt_dir, "best", {"model.w": np.ones(2)}, {"step": 1})
    path = {"dir": ckpt_dir.parent, "ckdir": ckpt_dir, "json": ckpt_dir / "best.json",
            "safetensors": ckpt_dir / "best.safetensors"}[which]
    arrays, meta = load_checkpoint(path, tag="best")
    assert meta["step"] == 1 and arrays["model.w"].tolist() == [1.0, 1.0]


def test_saving_again_replaces_the_pair(ckpt_dir: Path) -> None:
    save_checkpoint(ckpt_dir, "last", {"model.w": np.zeros(3)}, {"step": 1})
    save_checkpoint(ckpt_dir, "last", {"model.w": np.ones(3)}, {"step": 2})
    arrays, meta = load_checkpoint(ckpt_dir)
    assert meta["step"] == 2 and arrays["model.w"].sum() == 3
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["last.json", "last.safetensors"]


def test_missing_checkpoint_and_missing_json(ckpt_dir: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint 'last'; none saved yet"):
        load_checkpoint(ckpt_dir.parent)
    with pytest.raises(CheckpointError, match="nothing.safetensors: no such checkpoint"):
        load_checkpoint(ckpt_dir / "nothing.safetensors")
    save_checkpoint(ckpt_dir, "best", {"model.w": np.ones(2)}, {})
    with pytest.raises(CheckpointError, match="checkpoints there: best"):
        load_checkpoint(ckpt_dir)
    (ckpt_dir / "best.json").unlink()
    with pytest.raises(CheckpointError, match=r"best\.json: missing metadata"):
        load_checkpoint(ckpt_dir / "best.safetensors")


def test_truncated_weights_are_detected(ckpt_dir: Path) -> None:
    save_checkpoint(ckpt_dir, "last", sample_arrays(), {})
    weights = ckpt_dir / "last.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match=r"last\.safetensors: corrupt or truncated"):
        load_checkpoint(ckpt_dir)


def test_flipped_byte_is_a_hash_mismatch(ckpt_dir: Path) -> None:
    save_checkpoint(ckpt_dir, "last", sample_arrays(), {})
    weights = ckpt_dir / "last.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="SHA-256 does not match last.json"):
        load_checkpoint(weights)


def test_pair_from_an_interrupted_save_is_rejected(ckpt_dir: Path) -> None:
    save_checkpoint(ckpt_dir, "last", {"model.w": np.zeros(3)}, {"step": 1})
    old_json = (ckpt_dir / "last.json").read_text()
    save_checkpoint(ckpt_dir, "last", {"model.w": np.ones(4)}, {"step": 2})
    (ckpt_dir / "last.json").write_text(old_json)  # as if the crash came before the JSON
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(ckpt_dir)


def test_bad_metadata(ckpt_dir: Path) -> None:
    save_checkpoint(ckpt_dir, "last", {"model.w": np.ones(1)}, {})
    meta_path = ckpt_dir / "last.json"
    meta_path.write_text("{not json")
    with pytest.raises(CheckpointError, match="last.json: unreadable checkpoint metadata"):
        load_checkpoint(ckpt_dir)
    meta_path.write_text(json.dumps({"step": 1}))
    with pytest.raises(CheckpointError, match="not a dlrun checkpoint"):
        load_checkpoint(ckpt_dir)


class _Exploit:
    """Unpickling this would create a file: proof that it was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.write_text, (self.marker, "pwned"))


def test_pickle_renamed_to_safetensors_is_never_unpickled(ckpt_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    blob = pickle.dumps({"model.w": _Exploit(marker)})
    save_checkpoint(ckpt_dir, "last", {"model.w": np.ones(1)}, {})
    meta = json.loads((ckpt_dir / "last.json").read_text())
    # A consistent-looking pair whose weights are a pickle: the hash matches, the format does not.
    meta.update(weights_sha256=hashlib.sha256(blob).hexdigest(), weights_bytes=len(blob))
    (ckpt_dir / "last.safetensors").write_bytes(blob)
    (ckpt_dir / "last.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"last\.safetensors: not a safetensors file"):
        load_checkpoint(ckpt_dir)
    assert not marker.exists()


def test_garbage_with_a_safetensors_like_header(ckpt_dir: Path) -> None:
    blob = (200).to_bytes(8, "little") + b'{"w": broken'
    save_checkpoint(ckpt_dir, "last", {"model.w": np.ones(1)}, {})
    meta = json.loads((ckpt_dir / "last.json").read_text())
    meta.update(weights_sha256=hashlib.sha256(blob).hexdigest(), weights_bytes=len(blob))
    (ckpt_dir / "last.safetensors").write_bytes(blob)
    (ckpt_dir / "last.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_checkpoint(ckpt_dir)


def test_bad_tag_and_reserved_meta(ckpt_dir: Path) -> None:
    with pytest.raises(ValueError, match="checkpoint tag"):
        save_checkpoint(ckpt_dir, "../evil", {}, {})
    with pytest.raises(ValueError, match="reserved keys: weights_sha256"):
        save_checkpoint(ckpt_dir, "last", {}, {"weights_sha256": "x"})


def test_parameters_hash() -> None:
    a = sample_arrays()
    h = parameters_hash(a)
    assert h == parameters_hash(dict(reversed(list(a.items()))))
    assert h == parameters_hash({k: v.copy(order="F") for k, v in a.items()})
    b = dict(a)
    b["model.fc.bias"] = b["model.fc.bias"].astype(np.float32)
    assert parameters_hash(b) != h  # dtype counts
    c = dict(a)
    c["model.fc.weight"] = c["model.fc.weight"].reshape(3, 4)
    assert parameters_hash(c) != h  # shape counts
    d = dict(a)
    d["model.fc.weight"] = d["model.fc.weight"] + np.float32(1e-6)
    assert parameters_hash(d) != h


def test_pack_and_unpack_state(ckpt_dir: Path) -> None:
    model = {"fc.weight": np.ones((2, 2), np.float32), "fc.bias": np.zeros(2, np.float32)}
    optim = {"state": {0: {"exp_avg": np.full((2, 2), 0.5), "step": np.array(3)}, 1: {}},
             "param_groups": [{"lr": 0.1, "params": [0, 1]}]}
    arrays, extra = pack_state(model, optim)
    assert set(arrays) == {"model.fc.weight", "model.fc.bias", "optim.state.0.exp_avg",
                           "optim.state.0.step"}
    save_checkpoint(ckpt_dir, "last", arrays, {"optimizer": extra})
    loaded, meta = load_checkpoint(ckpt_dir)
    m, o = unpack_state(loaded, meta["optimizer"])
    assert set(m) == set(model) and o is not None
    np.testing.assert_array_equal(o["state"][0]["exp_avg"], optim["state"][0]["exp_avg"])
    assert o["state"][0]["step"].shape == () and o["param_groups"] == optim["param_groups"]
    assert unpack_state(loaded)[1] is None


def test_resolve_checkpoint_rejects_other_files(tmp_path: Path) -> None:
    (tmp_path / "w.npz").write_bytes(b"PK")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        resolve_checkpoint(tmp_path / "w.npz")


@pytest.mark.parametrize("crash_at", [1, 2, 3, 4])
def test_a_save_interrupted_anywhere_leaves_a_loadable_checkpoint(
        ckpt_dir: Path, monkeypatch: pytest.MonkeyPatch, crash_at: int) -> None:
    """Crash at the k-th rename of a save (the weights, the JSON, the weights into place, the
    JSON again): the tag still loads, either as the old checkpoint or as the new one."""
    import os

    from dlrun.runner.io import checkpoint as ck

    save_checkpoint(ckpt_dir, "last", {"model.w": np.zeros(3)}, {"step": 1})
    real_replace, calls = os.replace, []

    def flaky_replace(src, dst):  # noqa: ANN001
        calls.append(dst)
        if len(calls) == crash_at:
            raise KeyboardInterrupt  # the process dies here
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky_replace)
    monkeypatch.setattr(ck.os, "replace", flaky_replace)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(ckpt_dir, "last", {"model.w": np.ones(3)}, {"step": 2})
    monkeypatch.setattr(os, "replace", real_replace)
    monkeypatch.setattr(ck.os, "replace", real_replace)
    arrays, meta = load_checkpoint(ckpt_dir)
    assert (meta["step"], arrays["model.w"].sum()) in ((1, 0.0), (2, 3.0))
