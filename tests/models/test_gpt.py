"""`gpt`: nanoGPT's architecture, config errors, tied weights, init, causality, eager == static,
and logits and gradients against a PyTorch re-implementation of nanoGPT in float64."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

import dlrun
from dlrun import functional as F
from dlrun import optim
from dlrun.config import load_config
from dlrun.errors import ConfigError
from dlrun.models import GPT, REGISTRY, build_model
from dlrun.models.gpt import GPTConfig

TEXT = {"input_shape": (16,), "task": "language_model", "vocab_size": 65}
TINY = {"type": "gpt", "n_layer": 2, "n_head": 2, "n_embd": 32}


def _ids(rng: np.random.Generator, shape: tuple[int, ...], vocab: int = 65) -> dlrun.Tensor:
    return dlrun.tensor(rng.integers(0, vocab, shape))


def _ce(logits: dlrun.Tensor, y: dlrun.Tensor) -> dlrun.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def _tied(model: GPT) -> bool:
    return model.lm_head.weight is model.transformer.wte.weight


# ----- the module tree and shapes ----------------------------------------------------------------


def test_registered_with_nanogpt_names_and_shapes() -> None:
    assert REGISTRY["gpt"] is not None
    model = build_model({"type": "gpt"}, {**TEXT, "input_shape": (64,)})
    assert isinstance(model, GPT)
    c = model.config
    assert (c.n_layer, c.n_head, c.n_embd, c.block_size, c.vocab_size) == (4, 4, 128, 64, 65)
    assert (c.dropout, c.bias, c.tie_weights) == (0.0, True, True)
    assert (model.n_layer, model.n_head, model.n_embd, model.block_size, model.vocab_size) == (
        4, 4, 128, 64, 65)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    block = {
        "ln_1.weight": (128,), "ln_1.bias": (128,),
        "attn.c_attn.weight": (384, 128), "attn.c_attn.bias": (384,),
        "attn.c_proj.weight": (128, 128), "attn.c_proj.bias": (128,),
        "ln_2.weight": (128,), "ln_2.bias": (128,),
        "mlp.c_fc.weight": (512, 128), "mlp.c_fc.bias": (512,),
        "mlp.c_proj.weight": (128, 512), "mlp.c_proj.bias": (128,),
    }
    expected = {"transformer.wte.weight": (65, 128), "transformer.wpe.weight": (64, 128)}
    for i in range(4):
        expected |= {f"transformer.h.{i}.{k}": s for k, s in block.items()}
    expected |= {"transformer.ln_f.weight": (128,), "transformer.ln_f.bias": (128,),
                 "lm_head.weight": (65, 128)}
    assert list(shapes) == list(expected) and shapes == expected  # nanoGPT's order, too
    gelu = model.transformer.h[0].mlp.gelu
    assert gelu.approximate == "none"
    out = model(_ids(np.random.default_rng(0), (3, 64)))
    assert out.shape == (3, 64, 65) and out.dtype == np.float32
    assert model(_ids(np.random.default_rng(0), (2, 5))).shape == (2, 5, 65)  # T < block_size


def test_options_bias_and_untied() -> None:
    model = build_model({**TINY, "bias": False, "tie_weights": False, "block_size": 24,
                         "dropout": 0.1}, TEXT)
    keys = list(model.state_dict())
    assert not [k for k in keys if k.endswith(".bias")]
    assert not _tied(model) and "lm_head.weight" in keys
    assert model.config.block_size == 24 and model.transformer.wpe.weight.shape == (24, 32)
    assert model.transformer.h[1].attn.dropout == 0.1
    with pytest.raises(ValueError, match="length 25, the block size is only 24"):
        model(_ids(np.random.default_rng(0), (1, 25)))


# ----- configuration errors ----------------------------------------------------------------------


@pytest.mark.parametrize("cfg, meta, message", [
    ({"type": "gpt", "n_embd": 100, "n_head": 3}, TEXT,
     "model.n_embd: 100 is not divisible by model.n_head: 3"),
    ({"type": "gpt", "block_size": 8}, TEXT,
     "model.block_size: 8 is shorter than the data's seq_len 16"),
    ({"type": "gpt", "n_layer": 0}, TEXT, "model.n_layer: expected an integer >= 1, got 0"),
    ({"type": "gpt", "n_head": -2}, TEXT, "model.n_head: expected an integer >= 1, got -2"),
    ({"type": "gpt", "n_embd": 0}, TEXT, "model.n_embd: expected an integer >= 1, got 0"),
    ({"type": "gpt", "block_size": 0}, TEXT, "model.block_size: expected an integer >= 1, got 0"),
    ({"type": "gpt", "n_layer": 2.5}, TEXT, "model.n_layer: expected an integer, got 2.5"),
    ({"type": "gpt", "dropout": 1.0}, TEXT, "model.dropout: expected a number in [0, 1), got 1"),
    ({"type": "gpt", "dropout": -0.1}, TEXT, "model.dropout: expected a number in [0, 1), "
     "got -0.1"),
    ({"type": "gpt", "bias": "no"}, TEXT, "model.bias: expected true or false"),
    ({"type": "gpt", "tie_weights": 1}, TEXT, "model.tie_weights: expected true or false"),
    ({"type": "gpt", "hidden_size": 8}, TEXT, "model.hidden_size: unknown key"),
    ({"type": "gpt", "n_heads": 8}, TEXT, "model.n_heads: unknown key; did you mean 'n_head'?"),
    ({"type": "gpt"}, {"input_shape": (12, 3), "task": "regression"},
     "model.type: 'gpt' is a language model and needs token data"),
    ({"type": "gpt"}, {"input_shape": (12,), "num_classes": 4},
     "model.type: 'gpt' is a language model and needs token data"),
    ({"type": "gpt"}, {"input_shape": (12,), "num_classes": 4, "vocab_size": 30},
     "this dataset gives token ids for classification"),
])
def test_config_errors_name_the_key(cfg: dict, meta: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_model(cfg, meta)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_other_families_point_to_gpt_for_language() -> None:
    with pytest.raises(ConfigError, match="use one of rnn, lstm, gru, gpt"):
        build_model({"type": "mlp"}, TEXT)


GPT_RUN = {
    "name": "tiny-gpt",
    "seed": 0,
    "mode": "static",
    "data": {"name": "tokens", "options": {"n": 48, "seq_len": 12, "vocab_size": 11}},
    "model": {"type": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 16},
    "optimizer": {"name": "adamw", "lr": 0.01},
    "train": {"epochs": 2, "batch_size": 8, "grad_clip_norm": 1.0},
    "logging": {"log_every": 5, "plots": False},
}


def _write(tmp_path: Path, cfg: dict) -> Path:
    path = tmp_path / "gpt.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_through_load_config_and_the_runner(tmp_path: Path) -> None:
    from dlrun.runner import train as runner
    from dlrun.runner.events import StepEnd

    path = _write(tmp_path, GPT_RUN)
    cfg = load_config(path)
    assert cfg.model.model_dump(exclude_unset=True) == GPT_RUN["model"]
    with pytest.raises(ConfigError, match=r"^model\.n_embd: 16 is not divisible by "
                                          r"model\.n_head: 3$"):
        runner.train(load_config(path, ["model.n_head=3"]), runs_dir=tmp_path / "bad")
    with pytest.raises(ConfigError, match=r"model\.block_size: 6 is shorter than the data's "
                                          r"seq_len 12"):
        runner.train(load_config(path, ["model.block_size=6"]), runs_dir=tmp_path / "bad")

    def interrupt(event) -> None:
        if isinstance(event, StepEnd) and event.step == 7:  # mid-epoch (5 steps per epoch)
            raise KeyboardInterrupt

    full = runner.train(cfg, runs_dir=tmp_path / "full")
    assert full.status == "completed" and full.trace_counts["train_step"] == 1
    part = runner.train(cfg, callbacks=[interrupt], runs_dir=tmp_path / "part")
    assert part.status == "interrupted"
    resumed = runner.resume(part.run_dir)  # the tied weight survives the checkpoint
    assert resumed.parameters_sha256 == full.parameters_sha256


# ----- parameters, init, tied weights ------------------------------------------------------------


def test_parameter_count_by_hand() -> None:
    model = build_model({"type": "gpt", "n_layer": 4, "n_head": 4, "n_embd": 128,
                         "block_size": 64}, {**TEXT, "input_shape": (64,)})
    v, c, block, layers = 65, 128, 64, 4
    per_block = (2 * c                      # ln_1
                 + c * 3 * c + 3 * c        # attn.c_attn
                 + c * c + c                # attn.c_proj
                 + 2 * c                    # ln_2
                 + c * 4 * c + 4 * c        # mlp.c_fc
                 + 4 * c * c + c)           # mlp.c_proj
    total = v * c + block * c + layers * per_block + 2 * c  # wte (= lm_head), wpe, blocks, ln_f
    assert total == 809_856
    assert model.num_parameters() == total
    assert sum(p.numel() for p in model.parameters()) == total  # the tied weight once
    assert len(list(model.parameters())) == len(model.state_dict()) - 1
    assert model.get_num_params() == model.num_parameters(non_embedding=True) == total - block * c
    untied = build_model({"type": "gpt", "tie_weights": False}, {**TEXT, "input_shape": (64,)})
    assert untied.num_parameters() == total + v * c


def test_nanogpt_init_statistics_and_seeded_builds() -> None:
    dlrun.manual_seed(0)
    model = build_model({"type": "gpt"}, {**TEXT, "input_shape": (64,)})
    c_proj = np.concatenate([p.numpy().ravel() for n, p in model.named_parameters()
                             if n.endswith("c_proj.weight")])
    np.testing.assert_allclose(c_proj.std(), 0.02 / math.sqrt(8), rtol=0.02)
    assert abs(c_proj.mean()) < 1e-4
    other = np.concatenate([p.numpy().ravel() for n, p in model.named_parameters()
                            if n.endswith(("c_attn.weight", "c_fc.weight", "wte.weight",
                                           "wpe.weight"))])
    np.testing.assert_allclose(other.std(), 0.02, rtol=0.02)
    for name, p in model.named_parameters():
        if name.endswith(".bias"):
            assert not p.numpy().any(), name
        elif "ln_" in name:
            np.testing.assert_array_equal(p.numpy(), 1.0)
    dlrun.manual_seed(0)
    again = build_model({"type": "gpt"}, {**TEXT, "input_shape": (64,)})
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)


def test_the_tied_weight_is_updated_once_per_step() -> None:
    dlrun.manual_seed(0)
    model = build_model(TINY, TEXT)
    assert _tied(model)
    params = list(model.parameters())
    opt = optim.SGD(params, lr=0.5)
    assert sum(p is model.lm_head.weight for g in opt.param_groups for p in g["params"]) == 1
    rng = np.random.default_rng(0)
    x, y = _ids(rng, (4, 16)), _ids(rng, (4, 16))
    before = model.lm_head.weight.numpy().copy()
    _ce(model(x), y).backward()
    grad = model.lm_head.weight.grad.numpy().copy()
    opt.step()
    np.testing.assert_allclose(model.lm_head.weight.numpy(), before - 0.5 * grad, rtol=1e-6,
                               atol=1e-7)
    assert _tied(model)


def test_tied_weights_stay_tied_through_training_and_state_dict_round_trips(
        tmp_path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    rng = np.random.default_rng(0)
    x, y = _ids(rng, (4, 16)), _ids(rng, (4, 16))
    dlrun.manual_seed(0)
    model = build_model(TINY, TEXT)
    opt = optim.AdamW(model.parameters(), lr=1e-2)

    def step(xb, yb):
        loss = _ce(model(xb), yb)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    step(x, y)
    dlrun.compile(step)(x, y)  # one eager and one static step
    assert _tied(model)
    state = model.state_dict()
    assert {"transformer.wte.weight", "lm_head.weight"} <= set(state)
    np.testing.assert_array_equal(state["lm_head.weight"].numpy(),
                                  state["transformer.wte.weight"].numpy())
    save_file({k: v.numpy() for k, v in state.items()}, str(tmp_path / "w.safetensors"))

    dlrun.manual_seed(1)
    fresh = build_model(TINY, TEXT)
    assert not np.array_equal(fresh(x).numpy(), model(x).numpy())
    fresh.load_state_dict(load_file(str(tmp_path / "w.safetensors")))
    assert _tied(fresh)
    np.testing.assert_array_equal(fresh(x).numpy(), model(x).numpy())
    fresh_opt = optim.SGD(fresh.parameters(), lr=0.1)
    _ce(fresh(x), y).backward()
    fresh_opt.step()  # still one parameter: the head moves with the embedding
    assert _tied(fresh)
    np.testing.assert_array_equal(fresh.state_dict()["lm_head.weight"].numpy(),
                                  fresh.state_dict()["transformer.wte.weight"].numpy())


# ----- behaviour ---------------------------------------------------------------------------------


def test_causal_a_token_changes_only_the_logits_from_its_position_on() -> None:
    dlrun.manual_seed(0)
    model = build_model(TINY, TEXT).double().eval()
    ids = np.random.default_rng(0).integers(0, 65, (2, 16))
    base = model(dlrun.tensor(ids)).numpy()
    for t in (0, 7, 15):
        changed = ids.copy()
        changed[:, t] = (changed[:, t] + 1) % 65
        out = model(dlrun.tensor(changed)).numpy()
        np.testing.assert_array_equal(out[:, :t], base[:, :t])
        assert np.abs(out[:, t:] - base[:, t:]).min(axis=-1).max() > 0


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_eager_and_static_training_agree(dropout: float) -> None:
    """50 AdamW steps with clipping: losses and final weights within 1e-5 relative (float32)."""
    rng = np.random.default_rng(0)
    x = dlrun.tensor(rng.integers(0, 65, (4, 16)))
    y = dlrun.tensor(rng.integers(0, 65, (4, 16)))

    def run(mode: str) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
        dlrun.manual_seed(0)
        model = build_model({**TINY, "dropout": dropout}, TEXT)
        params = list(model.parameters())
        opt = optim.AdamW(params, lr=3e-3, weight_decay=0.1)

        def step(xb, yb):
            loss = _ce(model(xb), yb)
            loss.backward()
            optim.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad()
            return loss

        fn = dlrun.compile(step) if mode == "static" else step
        losses = np.array([fn(x, y).item() for _ in range(50)])
        assert _tied(model)
        weights = {k: v.numpy() for k, v in model.state_dict().items()}
        return losses, weights, fn.trace_count if mode == "static" else 1

    eager, w_eager, _ = run("eager")
    static, w_static, traces = run("static")
    assert traces == 1
    np.testing.assert_allclose(static, eager, rtol=1e-5)
    for name, w in w_eager.items():
        assert np.abs(w_static[name] - w).max() <= 1e-5 * np.abs(w).max(), name
    assert eager[-1] < 0.5 * eager[0]  # it learns the (memorisable) batch


# ----- against PyTorch (nanoGPT's code) in float64 -----------------------------------------------


def _torch_nanogpt(torch, config: GPTConfig):  # noqa: ANN001, ANN202
    """nanoGPT's model.py (flash attention path), trimmed to the forward pass."""
    nn, tf = torch.nn, torch.nn.functional

    class LayerNorm(nn.Module):
        def __init__(self, ndim, bias):  # noqa: ANN001
            super().__init__()
            self.weight = nn.Parameter(torch.ones(ndim))
            self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

        def forward(self, x):  # noqa: ANN001, ANN202
            return tf.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)

    class CausalSelfAttention(nn.Module):
        def __init__(self, c):  # noqa: ANN001
            super().__init__()
            self.c_attn = nn.Linear(c.n_embd, 3 * c.n_embd, bias=c.bias)
            self.c_proj = nn.Linear(c.n_embd, c.n_embd, bias=c.bias)
            self.n_head, self.n_embd = c.n_head, c.n_embd

        def forward(self, x):  # noqa: ANN001, ANN202
            b, t, c = x.size()
            q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
            k = k.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
            q = q.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
            v = v.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
            y = tf.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0,
                                                is_causal=True)
            return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))

    class MLP(nn.Module):
        def __init__(self, c):  # noqa: ANN001
            super().__init__()
            self.c_fc = nn.Linear(c.n_embd, 4 * c.n_embd, bias=c.bias)
            self.gelu = nn.GELU()
            self.c_proj = nn.Linear(4 * c.n_embd, c.n_embd, bias=c.bias)

        def forward(self, x):  # noqa: ANN001, ANN202
            return self.c_proj(self.gelu(self.c_fc(x)))

    class Block(nn.Module):
        def __init__(self, c):  # noqa: ANN001
            super().__init__()
            self.ln_1, self.attn = LayerNorm(c.n_embd, c.bias), CausalSelfAttention(c)
            self.ln_2, self.mlp = LayerNorm(c.n_embd, c.bias), MLP(c)

        def forward(self, x):  # noqa: ANN001, ANN202
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class TorchGPT(nn.Module):
        def __init__(self, c):  # noqa: ANN001
            super().__init__()
            self.transformer = nn.ModuleDict(dict(
                wte=nn.Embedding(c.vocab_size, c.n_embd),
                wpe=nn.Embedding(c.block_size, c.n_embd),
                h=nn.ModuleList([Block(c) for _ in range(c.n_layer)]),
                ln_f=LayerNorm(c.n_embd, c.bias),
            ))
            self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
            if c.tie_weights:
                self.transformer.wte.weight = self.lm_head.weight

        def forward(self, idx):  # noqa: ANN001, ANN202
            pos = torch.arange(0, idx.size(1), dtype=torch.long)
            x = self.transformer.wte(idx) + self.transformer.wpe(pos)
            for block in self.transformer.h:
                x = block(x)
            return self.lm_head(self.transformer.ln_f(x))

    return TorchGPT(config).double()


@pytest.mark.parametrize("options", [{}, {"bias": False, "tie_weights": False}],
                         ids=["tied-bias", "untied-nobias"])
def test_logits_and_gradients_match_pytorch_float64(options: dict) -> None:
    torch = pytest.importorskip("torch")
    dlrun.manual_seed(0)
    model = build_model({**TINY, **options}, TEXT).double()
    rng = np.random.default_rng(0)
    with dlrun.no_grad():  # non-trivial biases and LayerNorm affines, so they are checked too
        for p in model.parameters():
            p.copy_(p.numpy() + 0.05 * rng.standard_normal(p.shape))
    ref = _torch_nanogpt(torch, model.config)
    ref.load_state_dict({k: torch.from_numpy(v.numpy().copy())
                         for k, v in model.state_dict().items()})
    assert [n for n, _ in ref.named_parameters()] == [n for n, _ in model.named_parameters()]
    ids, targets = rng.integers(0, 65, (3, 16)), rng.integers(0, 65, (3, 16))

    logits = model(dlrun.tensor(ids))
    _ce(logits, dlrun.tensor(targets)).backward()
    ref_logits = ref(torch.from_numpy(ids))
    torch.nn.functional.cross_entropy(ref_logits.reshape(-1, 65),
                                      torch.from_numpy(targets).reshape(-1)).backward()

    np.testing.assert_allclose(logits.numpy(), ref_logits.detach().numpy(), rtol=1e-9,
                               atol=1e-12)
    for (name, p), (_, q) in zip(model.named_parameters(), ref.named_parameters(), strict=True):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-9, atol=1e-12,
                                   err_msg=name)
