"""Text generation: a GPT's KV cache and a recurrent model's carried state give the text of full
recompute (same seed, temperature, top-k), static mode traces the prompt and the step once each,
and `dlrun eval --sample` reports tokens per second and rejects bad sampling options."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import dlrun
from dlrun.cli import app
from dlrun.errors import ConfigError
from dlrun.models import build_model
from dlrun.models.generation import (
    KVCache,
    KVCacheDecoder,
    RecomputeDecoder,
    StateDecoder,
    generate,
    sample_next,
)
from dlrun.models.gpt import GPT, GPTConfig
from dlrun.runner.commands.evaluate import sample_text
from tests.cli_helpers import assert_cli_fails as _fails

VOCAB = 11


def _gpt() -> GPT:
    dlrun.manual_seed(0)
    return GPT(GPTConfig(block_size=16, vocab_size=VOCAB, n_layer=2, n_head=2, n_embd=32))


def _rnn(kind: str):
    dlrun.manual_seed(0)
    return build_model({"type": kind, "hidden_size": 24, "num_layers": 2, "embedding_dim": 8},
                       {"input_shape": (12,), "task": "language_model", "vocab_size": VOCAB})


# ----- sampling -----------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2, 3, 4, 6])
def test_top_k_keeps_what_nanogpt_keeps(k: int) -> None:
    """nanoGPT: logits below torch.topk's k-th value get -inf (ties with it are kept), then a
    float64 softmax; the one uniform draw picks by the cumulative probabilities."""
    torch = pytest.importorskip("torch")
    logits = np.array([0.5, 2.0, -1.0, 2.0, 0.5, 3.0], dtype=np.float32)
    t = torch.tensor(logits, dtype=torch.float64) / 0.7
    v, _ = torch.topk(t, k)
    t[t < v[-1]] = -float("inf")
    cdf = np.cumsum(torch.softmax(t, -1).numpy())
    picked = set()
    for u in np.linspace(0.0, 1.0, 400, endpoint=False) + 1e-4:
        want = int(np.searchsorted(cdf, u * cdf[-1], side="right"))
        assert _pick(logits, u, k) == want, u
        picked.add(want)
    assert len(picked) == {1: 1, 2: 3, 3: 3, 4: 5, 6: 6}[k]  # the ties at the k-th value


class _Fixed:
    """A stand-in Generator whose one draw is u."""

    def __init__(self, u: float) -> None:
        self.u = u

    def random(self) -> float:
        return self.u


def _pick(logits: np.ndarray, u: float, k: int) -> int:
    return sample_next(logits, _Fixed(u), 0.7, k)  # type: ignore[arg-type]


def test_one_draw_per_token() -> None:
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    sample_next(np.zeros(5), a, 1.0, 2)
    b.random()
    assert a.random() == b.random()


# ----- GPT: KV cache == full recompute ------------------------------------------------------------
@pytest.mark.parametrize("static", [False, True])
def test_kv_cache_logits_match_full_recompute(static: bool) -> None:
    """Every position, past block_size (the cache re-primed) included."""
    model = _gpt().eval()
    ids = [int(i) for i in np.random.default_rng(0).integers(0, VOCAB, 40)]
    full, kv = RecomputeDecoder(model, window=16), KVCacheDecoder(model, static)
    with dlrun.no_grad():
        assert np.allclose(full.prime(ids[:3]), kv.prime(ids[:3]), rtol=0, atol=1e-5)
        for n in range(4, len(ids) + 1):
            assert np.allclose(full.step(ids[:n]), kv.step(ids[:n]), rtol=0, atol=1e-5), n
    assert kv.trace_counts() == ({"prompt": 1, "step": 1} if static else {})


@pytest.mark.parametrize("top_k", [None, 3])
def test_gpt_generates_the_text_of_full_recompute(top_k: int | None) -> None:
    model = _gpt()
    prompt = [1, 2, 3, 4, 5]
    runs = {(m, s): generate(model, prompt, 40, temperature=0.8, top_k=top_k, seed=7, method=m,
                             static=s)
            for m, s in (("recompute", False), ("kv_cache", False), ("kv_cache", True))}
    ref = runs["recompute", False]
    assert len(ref.ids) == 45 > model.block_size and ref.method == "recompute"
    assert runs["kv_cache", False].ids == ref.ids
    static = runs["kv_cache", True]
    assert static.ids == ref.ids and static.static
    assert static.traces == {"prompt": 1, "step": 1}  # 40 tokens, 25 of them past block_size
    assert model.training  # generate restores the mode


def test_kv_cache_buffers_and_checkpoint() -> None:
    model = _gpt()
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    cache = KVCache(model)
    assert len(cache.k) == 2 and cache.k[0].shape == (1, 2, 16, 16)
    generate(model, [1], 20, static=True)
    after = model.state_dict()
    assert before.keys() == after.keys()  # the cache is no module buffer
    assert all(np.array_equal(before[k], after[k].numpy()) for k in before)


# ----- recurrent models: carried state == recompute over the whole history -----------------------
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_step_in_pieces_is_forward_whole(kind: str) -> None:
    model = _rnn(kind).eval()
    x = dlrun.tensor(np.random.default_rng(1).integers(0, VOCAB, (2, 9)))
    with dlrun.no_grad():
        full = model(x)
        assert full.shape == (2, 9, VOCAB)  # forward(x) unchanged
        _, state = model.step(x[:, :5])
        _, state = model.step(x[:, 5:8], state)
        last, _ = model.step(x[:, 8:], state)
    assert np.allclose(last.numpy(), full.numpy()[:, -1], atol=1e-5)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_carried_state_generates_the_text_of_whole_history_recompute(kind: str) -> None:
    """The carried state has seen the whole history: the reference re-runs the model on all of
    it (not on a window) for every token."""
    model = _rnn(kind)
    ref = generate(model, [3, 1, 4], 40, top_k=4, seed=2, method="recompute")
    eager = generate(model, [3, 1, 4], 40, top_k=4, seed=2)
    static = generate(model, [3, 1, 4], 40, top_k=4, seed=2, static=True)
    assert eager.method == "state" and eager.ids == ref.ids == static.ids
    assert static.traces == {"prompt": 1, "step": 1}
    decoder = StateDecoder(model.eval())
    with dlrun.no_grad():
        decoder.prime(ref.ids[:3])
        logits = [decoder.step(ref.ids[:n]) for n in range(4, len(ref.ids))]
    whole = RecomputeDecoder(model)
    with dlrun.no_grad():
        assert np.allclose(logits[-1], whole.prime(ref.ids[:-1]), atol=1e-5)


def test_gpt_methods_with_a_batch_of_two() -> None:
    model = _gpt().eval()
    x = np.random.default_rng(4).integers(0, VOCAB, (2, 9))
    cache = model.new_kv_cache(batch=2)
    padded = np.zeros((2, 16), dtype=np.int64)
    padded[:, :6] = x[:, :6]
    with dlrun.no_grad():
        model.forward_prompt(dlrun.tensor(padded), dlrun.tensor(np.int64(5)), cache)
        for pos in range(6, 9):
            got = model.forward_step(dlrun.tensor(x[:, pos:pos + 1]),
                                     dlrun.tensor(np.int64(pos)), cache)
        want = model(dlrun.tensor(x)).numpy()[:, -1]
    assert np.allclose(got.numpy(), want, atol=1e-5)


def test_model_helpers_and_bad_options() -> None:
    out = _rnn("lstm").generate([1, 2], 5, seed=1)
    assert len(out.new_ids) == 5 and out.tokens_per_second > 0
    out = _gpt().generate([1, 2], 20, seed=1, static=True, top_k=2)
    assert out.method == "kv_cache" and out.traces == {"prompt": 1, "step": 1}
    for bad in ({"temperature": 0.0}, {"temperature": float("nan")}, {"top_k": 0},
                {"method": "beam"}):
        with pytest.raises(ConfigError):
            generate(_rnn("gru"), [1], 3, **bad)
    with pytest.raises(ConfigError, match="KV cache needs a GPT"):
        generate(_rnn("gru"), [1], 3, method="kv_cache")


# ----- dlrun eval --sample ------------------------------------------------------------------------
MODELS = {"gpt": {"type": "gpt", "n_layer": 2, "n_head": 2, "n_embd": 16},
          "lstm": {"type": "lstm", "hidden_size": 16, "embedding_dim": 8}}


def _lm_run(tmp_path: Path, model: str) -> Path:
    """A tiny character language model trained for a few steps (static mode, seq_len 16)."""
    text = tmp_path / "corpus.txt"
    text.write_text("the quick brown fox jumps over the lazy dog.\n" * 30)
    cfg = {"name": "lm", "seed": 0, "mode": "static",
           "data": {"name": "text", "options": {"path": str(text), "seq_len": 16}},
           "model": MODELS[model], "optimizer": {"name": "adam", "lr": 0.01},
           "train": {"epochs": 1, "max_steps": 4, "batch_size": 8}}
    path = tmp_path / f"{model}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["train", str(path), "--runs-dir", str(runs), "--quiet"])
    assert result.exit_code == 0, result.output
    return next(runs.iterdir())


@pytest.mark.parametrize("model", ["gpt", "lstm"])
def test_eval_sample_reports_tokens_per_second(tmp_path: Path, model: str) -> None:
    run = _lm_run(tmp_path, model)
    args = ["eval", str(run), "--sample", "30", "--prompt", "the ", "--top-k", "3",
            "--temperature", "0.8", "--seed", "4"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    gen = out["generation"]
    assert out["sample"].startswith("the ") and len(out["sample"]) == 34
    assert gen["tokens"] == 30 and gen["tokens_per_second"] > 0 and gen["mode"] == "static"
    assert gen["method"] == ("kv_cache" if model == "gpt" else "state")
    assert gen["traces"] == {"prompt": 1, "step": 1}
    assert "val_loss" in out["metrics"]
    # the same text as eager full recompute (a GPT: 34 characters pass its block of 16)
    ref = sample_text(run, "the ", 30, 0.8, 4, top_k=3, method="recompute",
                      overrides=["mode=eager"])
    if model == "gpt":
        assert ref["text"] == out["sample"] and ref["mode"] == "eager"
    result = CliRunner().invoke(app, [*args, "--mode", "eager"])
    assert result.exit_code == 0, result.output
    assert "tokens/s" in result.output and "eager" in result.output


def test_eval_sample_bad_options(tmp_path: Path) -> None:
    run = str(_lm_run(tmp_path, "lstm"))
    eval_json = run + "/checkpoints/eval.json"
    _fails(["eval", run, "--sample", "5", "--prompt", "The Fox!"], "--prompt", "'T'", "'F'",
           "'!'", "vocabulary")
    _fails(["eval", run, "--sample", "5", "--temperature", "0"], "--temperature", "> 0")
    _fails(["eval", run, "--sample", "5", "--temperature", "-1"], "--temperature")
    _fails(["eval", run, "--sample", "5", "--top-k", "0"], "--top-k", ">= 1")
    assert not Path(eval_json).exists()  # rejected before the evaluation wrote anything
