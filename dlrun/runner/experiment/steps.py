"""The train and eval step functions of an experiment (compiled in static mode)."""

from __future__ import annotations

from typing import Any

import dlrun
from dlrun import optim
from dlrun.backend import get_xp
from dlrun.engine.tensor import Tensor
from dlrun.optim.amp import MixedPrecision
from dlrun.runner.experiment.builders import loss_function
from dlrun.runner.experiment.record import Experiment


def make_steps(exp: Experiment, mode: str | None = None) -> None:
    """Attach train_step(x, y) -> loss and eval_step(x, y) -> (mean loss, model outputs)."""
    cfg, model, opt = exp.cfg, exp.model, exp.optimizer
    loss_fn = loss_function(exp.loss_name, exp.task, cfg.loss.label_smoothing)
    params = exp.params
    clip_norm, clip_value = cfg.train.grad_clip_norm, cfg.train.grad_clip_value
    amp = exp.amp = exp.amp or MixedPrecision(cfg.precision, model, opt, exp.device)
    dp = exp.parallel

    def train_step(x: Tensor, y: Tensor) -> Tensor:
        loss = loss_fn(amp.run(model, x), y)
        amp.backward(loss)  # loss.backward(); fp16: of the scaled loss
        if dp is not None:  # one all-reduce: gradients (and the loss) summed over ranks
            loss = dp.reduce_gradients(params, loss)
        if clip_value is not None:
            optim.clip_grad_value_(amp.unscale_(), clip_value)
        amp.step(clip_norm)  # one flat pass: fp16 unscale, clip by norm, step (undone on inf/nan)
        opt.zero_grad()
        return loss

    def eval_step(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        with dlrun.no_grad():
            out = amp.run(model, x)
            return loss_fn(out, y), out

    if (mode or cfg.mode) == "static":
        exp.train_step = dlrun.compile(train_step, cuda_graphs=cfg.cuda_graphs)
        exp.eval_step = dlrun.compile(eval_step, max_traces=16)
    else:
        exp.train_step, exp.eval_step = train_step, eval_step


def batch_tensors(exp: Experiment, xb: Any, yb: Any) -> tuple[Tensor, Tensor]:
    xp = get_xp(exp.device)
    xb, yb = _wide_ids(xb), _wide_ids(yb)
    return Tensor._wrap(xb, exp.device, xp, False), Tensor._wrap(yb, exp.device, xp, False)


def _wide_ids(a: Any) -> Any:
    """Token ids kept narrow on disk (uint16/uint32 token files) as the int64 ids embeddings
    and losses index with; only the batch is converted."""
    return a.astype("int64") if a.dtype.kind == "u" and a.dtype.itemsize > 1 else a
