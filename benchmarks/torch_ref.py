"""PyTorch eager references for the benchmark workloads (optional: nothing here is needed by dlrun).

The same networks, losses and optimizers as `benchmarks/floor.py` (and configs/bench/*.yaml), in
PyTorch eager mode with its default thread settings. The LSTM comes twice: `nn.LSTM` (one fused
kernel for the whole sequence) and `lstm_loop`, the same cell written as a per-step op loop with
manual gates (input projection of all steps hoisted into one matmul, as dlrun does).

    if torch_ref.available():
        step = torch_ref.make_step("cnn", x, y)   # x, y NumPy arrays; returns a no-arg callable
        step()                                     # one training step

`available()` is False when torch cannot be imported; `installed()` and `version()` answer
without importing it (the harness keeps torch out of the processes that time dlrun).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

WORKLOADS = ("linreg", "mlp", "cnn", "lstm", "lstm_loop", "gpt")


def installed() -> bool:
    """Whether a torch package is installed (checked without importing it)."""
    return importlib.util.find_spec("torch") is not None


def available() -> bool:
    """Whether torch can be imported (it is an optional reference, never a dlrun dependency)."""
    if not installed():
        return False
    try:
        import torch  # noqa: F401
    except Exception:  # a broken install counts as absent
        return False
    return True


def version() -> str | None:
    """The installed torch version, read from its metadata (no import)."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def num_threads() -> int | None:
    if not available():
        return None
    import torch

    return int(torch.get_num_threads())


def _modules() -> Any:
    """Model classes, defined lazily so this file imports without torch."""
    import torch
    from torch import nn

    class LSTMLoop(nn.Module):
        """Embedding -> LSTM cell as a per-step op loop -> Linear at every step. The cell's
        parameters are nn.LSTM's (same init, layout and order: weight_ih_l0, weight_hh_l0,
        bias_ih_l0, bias_hh_l0); only the fused kernel is replaced by the loop."""

        def __init__(self, vocab: int, dim: int, hidden: int) -> None:
            super().__init__()
            self.embedding = nn.Embedding(vocab, dim)
            self.rnn = nn.LSTM(dim, hidden, batch_first=True)  # parameters only
            self.head = nn.Linear(hidden, vocab)
            self.hidden = hidden

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            r = self.rnn
            e = self.embedding(x)  # (B, T, D)
            b, t, _ = e.shape
            gx = e @ r.weight_ih_l0.T + (r.bias_ih_l0 + r.bias_hh_l0)
            w_hh_t = r.weight_hh_l0.T
            h = e.new_zeros(b, self.hidden)
            c = e.new_zeros(b, self.hidden)
            outs = []
            for i in range(t):
                gates = gx[:, i] + h @ w_hh_t
                ig, fg, gg, og = gates.chunk(4, 1)
                c = torch.sigmoid(fg) * c + torch.sigmoid(ig) * torch.tanh(gg)
                h = torch.sigmoid(og) * torch.tanh(c)
                outs.append(h)
            return self.head(torch.stack(outs, 1))

    class LSTMLM(nn.Module):
        def __init__(self, vocab: int, dim: int, hidden: int) -> None:
            super().__init__()
            self.embedding = nn.Embedding(vocab, dim)
            self.rnn = nn.LSTM(dim, hidden, batch_first=True)
            self.head = nn.Linear(hidden, vocab)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, _ = self.rnn(self.embedding(x))
            return self.head(out)

    return LSTMLoop, LSTMLM


def _gpt_module() -> Any:
    """nanoGPT's model (karpathy/nanoGPT model.py), trimmed to what the benchmark uses."""
    import math

    import torch
    from torch import nn
    from torch.nn import functional as F  # noqa: N812

    class Block(nn.Module):
        def __init__(self, d: int, heads: int) -> None:
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.c_attn, self.attn_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.c_fc, self.mlp_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
            self.heads = heads

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, t, d = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=2)
            q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2)
                       for z in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.attn_proj(y.transpose(1, 2).contiguous().view(b, t, d))
            return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))

    class GPT(nn.Module):
        def __init__(self, vocab: int, block: int, layers: int, heads: int, d: int) -> None:
            super().__init__()
            self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(block, d)
            self.h = nn.ModuleList([Block(d, heads) for _ in range(layers)])
            self.ln_f = nn.LayerNorm(d)
            self.lm_head = nn.Linear(d, vocab, bias=False)
            self.lm_head.weight = self.wte.weight  # tied
            for name, p in self.named_parameters():
                if p.dim() >= 2:
                    std = 0.02 / math.sqrt(2 * layers) if name.endswith("proj.weight") else 0.02
                    nn.init.normal_(p, 0.0, std)
                elif name.endswith(".bias") and not name.startswith("ln"):
                    nn.init.zeros_(p)

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
            for block in self.h:
                x = block(x)
            return self.lm_head(self.ln_f(x))

    return GPT


def build(workload: str, *, seed: int = 0, **shape: Any) -> tuple[Any, Any, Callable]:
    """(model, optimizer, loss_fn(out, y)) for a workload; `shape` overrides the workload's sizes
    (the same keywords as benchmarks.floor's constructors)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    if workload == "linreg":
        model = nn.Linear(shape.get("n_features", 13), 1)
        return model, torch.optim.SGD(model.parameters(), lr=0.01), nn.functional.mse_loss
    ce = nn.functional.cross_entropy
    if workload == "mlp":
        d, h, c = (shape.get("in_features", 784), shape.get("hidden", 128),
                   shape.get("n_classes", 10))
        model = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, c))
        return model, torch.optim.SGD(model.parameters(), lr=0.01), ce
    if workload == "cnn":
        cin, size = shape.get("in_channels", 1), shape.get("size", 28)
        c1, c2 = shape.get("channels", (16, 32))
        hd, nc = shape.get("hidden", 128), shape.get("n_classes", 10)
        flat = c2 * (size // 4) ** 2
        model = nn.Sequential(
            nn.Conv2d(cin, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(flat, hd), nn.ReLU(), nn.Linear(hd, nc))
        return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9), ce
    if workload in ("lstm", "lstm_loop"):
        v, d, h = shape.get("vocab", 65), shape.get("embedding_dim", 64), shape.get("hidden", 128)
        loop_cls, lm_cls = _modules()
        model = (lm_cls if workload == "lstm" else loop_cls)(v, d, h)

        def lm_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return ce(out.reshape(-1, out.shape[-1]), y.reshape(-1))

        return model, torch.optim.Adam(model.parameters(), lr=2e-3), lm_loss
    if workload == "gpt":
        model = _gpt_module()(shape.get("vocab", 65), shape.get("block_size", 64),
                              shape.get("n_layer", 4), shape.get("n_head", 4),
                              shape.get("n_embd", 128))
        params = list(model.parameters())  # nanoGPT's groups: decay matrices only
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        opt = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.99))

        def gpt_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return ce(out.reshape(-1, out.shape[-1]), y.reshape(-1))

        return model, opt, gpt_loss
    raise ValueError(f"unknown workload {workload!r}; expected one of {WORKLOADS}")


def load_params(model: Any, arrays: Sequence[np.ndarray]) -> None:
    """Copy arrays (e.g. a floor's torch_params()) into model.parameters(), in order."""
    import torch

    params = list(model.parameters())
    if len(params) != len(arrays):
        raise ValueError(f"model has {len(params)} parameters, got {len(arrays)} arrays")
    with torch.no_grad():
        for p, a in zip(params, arrays, strict=True):
            if tuple(p.shape) != tuple(a.shape):
                raise ValueError(f"shape mismatch: parameter {tuple(p.shape)}, array {a.shape}")
            p.copy_(torch.from_numpy(np.ascontiguousarray(a)))


def make_step(workload: str, x: np.ndarray, y: np.ndarray, *, seed: int = 0,
              dtype: Any = None, params: Sequence[np.ndarray] | None = None,
              compiled: bool = False, device: str = "cpu", **shape: Any) -> Callable[[], Any]:
    """A no-argument callable running one synchronous training step (zero_grad, forward, loss,
    backward, optimizer step) on the fixed batch (x, y); it returns the loss tensor. `params`
    (PyTorch layout, model order) replaces the initial parameters; `dtype` (e.g. torch.float64)
    converts the model and the float inputs; `compiled` runs the model through torch.compile.
    The gpt workload clips the gradient norm at 1.0, as its config does."""
    import torch

    model, opt, loss_fn = build(workload, seed=seed, **shape)
    clip = 1.0 if workload == "gpt" else None
    if dtype is not None:
        model.to(dtype)
    if params is not None:
        load_params(model, params)
    xt = torch.from_numpy(np.ascontiguousarray(x))
    yt = torch.from_numpy(np.ascontiguousarray(y))
    if xt.is_floating_point():
        xt = xt.to(dtype or torch.float32)
    if yt.is_floating_point():
        yt = yt.to(dtype or torch.float32)
    else:
        yt = yt.long()
    if not xt.is_floating_point():
        xt = xt.long()
    if workload == "linreg":
        yt = yt.reshape(-1, 1)
    model.to(device)  # "cuda" for the GPU check; the optimizer's state is created lazily there
    xt, yt = xt.to(device), yt.to(device)

    forward = torch.compile(model) if compiled else model

    def step() -> Any:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(forward(xt), yt)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        return loss

    step.model = model  # type: ignore[attr-defined]
    return step
