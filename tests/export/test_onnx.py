"""dlrun export --format onnx: each model family's ONNX file passes the checker and reproduces
dlrun's outputs in ONNX Runtime at two batch sizes (GPT: and two sequence lengths); failures leave
no file behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

import dlrun  # noqa: E402
import dlrun.functional as F  # noqa: E402
from dlrun.cli import app  # noqa: E402
from dlrun.config import load_config  # noqa: E402
from dlrun.engine.prims import REGISTRY, Kind, primitive  # noqa: E402
from dlrun.errors import ExportError  # noqa: E402
from dlrun.export import onnx as onnx_export  # noqa: E402
from dlrun.nn import Linear, Module  # noqa: E402
from dlrun.runner import train as runner  # noqa: E402
from dlrun.runner.commands.evaluate import load_run  # noqa: E402
from dlrun.runner.commands.export_run import export  # noqa: E402

TOKENS = {"name": "tokens", "options": {"n": 16, "seq_len": 6, "vocab_size": 7}}
BLOBS = {"name": "blobs", "options": {"n": 120, "n_classes": 3, "n_features": 4, "spread": 1.0}}
FAMILIES = {
    "linear": (BLOBS, {"type": "linear"}),
    "mlp": (BLOBS, {"type": "mlp", "hidden": [16], "dropout": 0.2}),
    "cnn": ({"name": "images", "options": {"n": 40, "channels": 2, "size": 8, "n_classes": 3}},
            {"type": "cnn", "channels": [3, 4], "kernel_size": 3, "padding": 1, "hidden": [8],
             "batch_norm": True, "dropout": 0.3}),
    "rnn": ({"name": "sine", "options": {"n": 40, "lookback": 6}},
            {"type": "rnn", "hidden_size": 5}),
    "lstm": (TOKENS, {"type": "lstm", "hidden_size": 5, "embedding_dim": 4, "num_layers": 2,
                      "dropout": 0.3}),
    "gru": (TOKENS, {"type": "gru", "hidden_size": 5, "embedding_dim": 4}),
    "gpt": (TOKENS, {"type": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 8, "block_size": 8,
                     "dropout": 0.1}),
}


def _train(root: Path, family: str) -> Path:
    data, model = FAMILIES[family]
    cfg = {"name": family, "seed": 3, "mode": "static", "data": data, "model": model,
           "optimizer": {"name": "adam", "lr": 0.01},
           "train": {"max_steps": 3, "batch_size": 8}, "logging": {"log_every": 5}}
    path = root / f"{family}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return Path(runner.train(load_config(path), runs_dir=root / "runs").run_dir)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export")
    return {family: _train(root, family) for family in FAMILIES}


def _inputs(run: Path) -> tuple[object, np.ndarray]:
    exp, _, _ = load_run(run, "best", ["device=cpu"])
    xb, _ = next(iter(exp.loader("val")))
    return exp.model, np.asarray(xb)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_exports_and_matches_dlrun_at_two_batch_sizes(runs, family: str) -> None:
    result = export(runs[family])
    path = Path(result["path"])
    assert path == runs[family] / "export" / "model.onnx" and path.is_file()
    assert result["max_rel_error"] <= 1e-4
    assert not [p for p in path.parent.iterdir() if p.name != "model.onnx"]  # no temp files
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["output"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    seq_dim = model.graph.input[0].type.tensor_type.shape.dim[1]
    if family == "gpt":  # the sequence axis follows the input too
        assert result["dynamic_axes"] == ["batch", "seq"] and seq_dim.dim_param == "seq"
        assert result["seq_lens"] == [6, 3]
        assert model.graph.output[0].type.tensor_type.shape.dim[1].dim_param == "seq"
    else:  # RNNs unroll per step: their sequence stays fixed
        assert result["dynamic_axes"] == ["batch"] and seq_dim.dim_value
    if family in ("lstm", "gru"):
        assert "sequence length fixed at 6" in result["seq_note"]
    assert all(t.data_type != onnx.TensorProto.DOUBLE for t in model.graph.initializer)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    net, x = _inputs(runs[family])
    rows = np.concatenate([x] * 4)
    for n in (1, 7):  # sizes neither trace used (the exporter traces at 3 and 5)
        batch = rows[:n]
        got = session.run(["output"], {"input": batch.astype(np.float32)
                                       if batch.dtype.kind == "f" else batch})[0]
        net.eval()
        with dlrun.no_grad():
            want = net(dlrun.tensor(batch)).numpy()
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())


def test_gpt_matches_dlrun_at_two_batch_sizes_and_two_sequence_lengths(runs) -> None:
    session = ort.InferenceSession(str(export(runs["gpt"])["path"]),
                                   providers=["CPUExecutionProvider"])
    net, _ = _inputs(runs["gpt"])
    net.eval()
    tokens = np.random.default_rng(0).integers(0, 7, size=(7, 8))
    worst = 0.0
    for n in (2, 7):  # batch sizes neither trace used
        for t in (2, 8):  # sequence lengths neither trace used (it traces 6 and 5); 8 = block
            batch = tokens[:n, :t]
            got = session.run(["output"], {"input": batch})[0]
            with dlrun.no_grad():
                want = net(dlrun.tensor(batch)).numpy()
            assert got.shape == want.shape == (n, t, 7)
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())
            worst = max(worst, float(np.abs(got - want).max()))
    print(f"gpt dynamic batch x seq: max abs error {worst:.3g}")


@pytest.fixture
def toy_op() -> Iterator[object]:
    """A primitive without an ONNX lowering, removed afterwards."""

    @primitive("toy_no_onnx", Kind.ELEMENTWISE)
    def toy(xp, x, out=None):
        return xp.multiply(x, 2, out=out)

    yield toy
    del REGISTRY["toy_no_onnx"]


class _Toy(Module):
    def __init__(self, op) -> None:
        super().__init__()
        self.fc, self.op = Linear(3, 2), op

    def forward(self, x):
        return self.op(self.fc(x))  # the source line the error names


def test_an_op_without_a_lowering_is_named_with_its_source_line(toy_op, tmp_path) -> None:
    out = tmp_path / "toy.onnx"
    x = dlrun.tensor(np.ones((4, 3), dtype=np.float32))
    with pytest.raises(ExportError, match=r"'toy_no_onnx'.*test_onnx\.py:\d+") as info:
        onnx_export.export_onnx(_Toy(toy_op), x, out)
    assert "onnx=" in str(info.value)
    assert not out.exists()


class _Ops(Module):
    """Lowerings no family model uses: reductions, slicing, padding, masks, comparisons."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = Linear(6, 6)

    def forward(self, x):
        h = self.fc(x)  # (B, 6)
        m = F.amax(h, 1, True) + F.logsumexp(h, 1, True) + F.softmax(h, 1) - F.log_softmax(h, 1)
        s = h[:, 1:5:2] * h[:, -1:] + F.pad(h[:, :3], (1, 1)).sum(1, keepdim=True)
        q = h.reshape(-1, 2, 3)
        mask = dlrun.tensor(np.array([[True, False], [True, True]]))
        att = F.scaled_dot_product_attention(q, q, q, attn_mask=mask)
        w = F.where(h > 0.1, h.exp(), (-h).sigmoid()) + F.maximum(h, h * 0.5) + F.leaky_relu(h)
        return F.cat([m, s.abs().sqrt(), att.reshape(-1, 6), w, F.gelu(h)], 1)


@pytest.mark.parametrize("opset", [13, 17, 18])
def test_other_lowerings_at_several_opsets(tmp_path, opset: int) -> None:
    dlrun.manual_seed(0)
    x = dlrun.tensor(np.random.default_rng(0).normal(size=(6, 6)).astype(np.float32))
    result = onnx_export.export_onnx(_Ops(), x, tmp_path / "ops.onnx", opset=opset)
    assert result["max_rel_error"] <= 1e-4 and result["batch_sizes"] == [6, 3]


def test_a_mismatch_fails_the_command_and_leaves_no_file(runs, tmp_path, monkeypatch) -> None:
    def tampered(*args, **kwargs):
        model = build(*args, **kwargs)
        first = model.graph.initializer[0]
        value = onnx.numpy_helper.to_array(first) + 0.5
        first.CopyFrom(onnx.numpy_helper.from_array(value, first.name))
        return model

    build = onnx_export.build_model
    monkeypatch.setattr(onnx_export, "build_model", tampered)
    out = tmp_path / "bad" / "model.onnx"
    result = CliRunner().invoke(app, ["export", str(runs["mlp"]), "--out", str(out)])
    assert result.exit_code == 1
    assert "relative error" in result.output and "nothing written" in result.output
    assert not out.exists() and not list(out.parent.glob("*"))


def test_the_tolerance_is_a_parameter(runs, tmp_path) -> None:
    out = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match="relative error"):
        export(runs["lstm"], out=out, tolerance=-1.0)
    assert not out.exists()


def test_cli_happy_path_and_json(runs, tmp_path) -> None:
    out = tmp_path / "cnn.onnx"
    result = CliRunner().invoke(app, ["export", str(runs["cnn"]), "--format", "onnx",
                                      "--out", str(out), "--opset", "17", "--tag", "last"])
    assert result.exit_code == 0, result.output
    assert str(out) in result.output.replace("\n", "") and "max rel error" in result.output
    assert out.is_file()
    result = CliRunner().invoke(app, ["export", str(runs["mlp"]), "--json"])
    assert result.exit_code == 0, result.output
    assert '"max_abs_error"' in result.output


def test_bad_format_and_missing_extra(runs, monkeypatch) -> None:
    result = CliRunner().invoke(app, ["export", str(runs["mlp"]), "--format", "tflite"])
    assert result.exit_code == 1 and "tflite" in result.output
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)
    result = CliRunner().invoke(app, ["export", str(runs["mlp"])])
    assert result.exit_code == 1 and "dlrun[onnx]" in result.output
