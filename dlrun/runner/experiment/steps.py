"""The train and eval step functions of an experiment (compiled in static mode).

A training step is backward of the loss, then the update (`update`: the gradient all-reduce
on several ranks, clipping, the optimizer step). With `train.accumulate: K` > 1 the step is
split in two functions (see accumulate.py): a micro-step per micro-batch (forward and backward,
gradients added into buffers) and one update per optimizer step, where the all-reduce then runs
once, on the accumulated gradients.
"""

from __future__ import annotations

from typing import Any

import dlrun
from dlrun import optim
from dlrun.backend import get_xp
from dlrun.engine.tensor import Tensor
from dlrun.optim.amp import MixedPrecision
from dlrun.runner.experiment.accumulate import AccumulatedStep, Accumulator
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

    def update(loss: Tensor) -> Tensor:
        """The gradients in `.grad` (of the loss, fp16: scaled) -> one optimizer step; the
        loss, global on several ranks. The one place the all-reduce is placed."""
        if dp is not None:  # one all-reduce: gradients (and the loss) summed over ranks
            loss = dp.reduce_gradients(params, loss)
        if clip_value is not None:
            optim.clip_grad_value_(amp.unscale_(), clip_value)
        amp.step(clip_norm)  # one flat pass: fp16 unscale, clip by norm, step (undone on inf/nan)
        opt.zero_grad()
        return loss

    def train_step(x: Tensor, y: Tensor) -> Tensor:
        loss = loss_fn(amp.run(model, x), y)
        amp.backward(loss)  # loss.backward(); fp16: of the scaled loss
        return update(loss)

    def eval_step(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        with dlrun.no_grad():
            out = amp.run(model, x)
            return loss_fn(out, y), out

    static = (mode or cfg.mode) == "static"

    def compiled(fn: Any) -> Any:
        return dlrun.compile(fn, cuda_graphs=cfg.cuda_graphs) if static else fn

    if cfg.train.accumulate > 1:
        acc = Accumulator(params, exp.device, exp.dtype)

        def micro_step(x: Tensor, y: Tensor) -> None:
            loss = loss_fn(amp.run(model, x), y)
            amp.backward(loss * acc.weight)  # the micro-batch's share of the step's mean
            acc.add(loss)

        def update_step() -> Tensor:
            loss = acc.take()
            amp.mark_scaled()  # fp16: the accumulated gradients carry the loss scale
            loss = update(loss)
            acc.clear()
            return loss

        ranks = 1 if dp is None else dp.world.size
        exp.train_step = AccumulatedStep(compiled(micro_step), compiled(update_step), acc,
                                         cfg.train.batch_size // ranks)
    else:
        exp.train_step = compiled(train_step)
    exp.eval_step = dlrun.compile(eval_step, max_traces=16) if static else eval_step


def batch_tensors(exp: Experiment, xb: Any, yb: Any) -> tuple[Tensor, Tensor]:
    xp = get_xp(exp.device)
    xb, yb = _wide_ids(xb), _wide_ids(yb)
    return Tensor._wrap(xb, exp.device, xp, False), Tensor._wrap(yb, exp.device, xp, False)


def _wide_ids(a: Any) -> Any:
    """Token ids kept narrow on disk (uint16/uint32 token files) as the int64 ids embeddings
    and losses index with; only the batch is converted."""
    return a.astype("int64") if a.dtype.kind == "u" and a.dtype.itemsize > 1 else a
