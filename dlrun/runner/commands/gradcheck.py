"""`dlrun gradcheck`: every parameter's gradient, eager and static, against central differences.

The configured experiment is rebuilt in float64 and one small batch of the training split is
used. Finite differences need the loss to be a deterministic function of the parameters, so
dropout is switched off by setting every `Dropout`'s `p` (and a recurrent layer's inter-layer
`dropout`) to 0. The model is *not* put in `eval()` mode: BatchNorm stays in train mode and
normalises with the batch statistics, so the function checked is the one whose gradient training
uses (its running averages still move at every forward, but they do not enter a train-mode loss).

An entry passes when its relative error |a - n| / max(|a|, |n|, 1e-8) is at most 1e-5, or when
|a - n| is within the rounding noise of the central difference itself, NOISE_FACTOR * machine
epsilon * max(|loss|, 1) / eps: for a gradient entry near 1e-5 that noise alone gives relative
errors above 1e-5 (seen on LSTM recurrent weights), which would be a false alarm. A wrong
gradient is off by far more than that noise on the entries that matter.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

import dlrun
from dlrun.backend import get_xp
from dlrun.config import ExperimentConfig
from dlrun.engine.tensor import Tensor
from dlrun.errors import ConfigError, NumericalError
from dlrun.nn import Dropout, Module, RNNBase
from dlrun.runner.experiment import Experiment, batch_tensors, build_experiment
from dlrun.runner.experiment.builders import loss_function

TOLERANCE = 1e-5  # worst relative error allowed in float64
_FLOOR = 1e-8  # denominator floor of the relative error (both gradients ~0)
NOISE_FACTOR = 16.0  # rounding-noise bound of a central difference, in eps_mach * |loss| / eps


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> np.ndarray:
    """|a - n| / max(|a|, |n|, 1e-8), elementwise."""
    a, n = np.abs(analytic), np.abs(numeric)
    return np.abs(analytic - numeric) / np.maximum(np.maximum(a, n), _FLOOR)


def disable_dropout(model: Module) -> int:
    """Set every dropout probability in `model` to 0 (train mode kept); returns how many."""
    count = 0
    for m in model.modules():
        if isinstance(m, Dropout) and m.p > 0.0:
            m.p, count = 0.0, count + 1
        elif isinstance(m, RNNBase) and m.dropout > 0.0:
            m.dropout, count = 0.0, count + 1
    return count


def gradcheck(cfg: ExperimentConfig, batch: int = 4, eps: float = 1e-6,
              max_per_param: int = 20) -> dict[str, Any]:
    """Check each parameter's analytic gradient (eager and static) against central differences.

    Returns `{"passed", "parameters": [{"name", "shape", "checked", "eager_error",
    "static_error", "passed", "within_noise"}, ...], "failed", "message", ...}`; the errors are
    the worst relative errors over up to `max_per_param` entries of each parameter, chosen at
    random with the config's seed. Raises ConfigError for bad arguments, NumericalError when
    the loss is not a deterministic function of the parameters.
    """
    _check_arguments(batch, eps, max_per_param)
    start = time.perf_counter()
    exp = build_experiment(cfg.model_copy(update={"dtype": "float64", "mode": "eager"}))
    model = exp.model
    model.train()
    disable_dropout(model)
    loss_fn = loss_function(exp.loss_name, exp.task, cfg.loss.label_smoothing)
    x, y = _small_batch(exp, batch)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]

    def loss_value() -> float:
        with dlrun.no_grad():
            return float(loss_fn(model(x), y).item())

    loss = loss_value()
    if loss != loss_value():
        raise NumericalError(f"gradcheck: the loss of {cfg.name!r} is not deterministic (random "
                             "ops other than dropout in the model?); cannot use finite "
                             "differences")

    def eager_step(xb: Tensor, yb: Tensor) -> None:
        loss_fn(model(xb), yb).backward()

    def static_step(xb: Tensor, yb: Tensor) -> list[Tensor | None]:
        loss_fn(model(xb), yb).backward()
        return [p.grad for p in params]

    eager = _analytic(params, eager_step, x, y)
    static = _analytic(params, dlrun.compile(static_step), x, y)

    atol = NOISE_FACTOR * float(np.finfo(np.float64).eps) * max(abs(loss), 1.0) / eps
    rng = np.random.default_rng(cfg.seed)
    rows = [_check_parameter(name, p, g_eager, g_static, rng, max_per_param, eps, atol,
                             loss_value)
            for (name, p), g_eager, g_static in zip(named, eager, static, strict=True)]
    failed = [r["name"] for r in rows if not r["passed"]]
    message = _verdict(rows, failed, atol)
    return {
        "name": cfg.name, "passed": not failed, "parameters": rows, "failed": failed,
        "message": message, "tolerance": TOLERANCE, "noise_atol": atol, "eps": eps,
        "batch": int(x.shape[0]), "loss": loss, "dtype": "float64", "device": exp.device,
        "seconds": time.perf_counter() - start,
    }


def _check_arguments(batch: int, eps: float, max_per_param: int) -> None:
    if batch < 1:
        raise ConfigError(f"gradcheck: batch must be >= 1, got {batch}")
    if not eps > 0:
        raise ConfigError(f"gradcheck: eps must be > 0, got {eps}")
    if max_per_param < 1:
        raise ConfigError(f"gradcheck: max_per_param must be >= 1, got {max_per_param}")


def _check_parameter(name: str, p: Tensor, g_eager: np.ndarray, g_static: np.ndarray,
                     rng: np.random.Generator, max_per_param: int, eps: float, atol: float,
                     loss_value: Callable[[], float]) -> dict[str, Any]:
    """One parameter's row: up to `max_per_param` entries (seeded choice), both modes'
    gradients against central differences."""
    size = int(np.prod(p.shape))
    idx = (np.arange(size) if size <= max_per_param
           else np.sort(rng.choice(size, max_per_param, replace=False)))
    numeric = _numeric(p, idx, eps, loss_value)
    checks = [_compare(g.reshape(-1)[idx], numeric, atol) for g in (g_eager, g_static)]
    return {
        "name": name, "shape": list(p.shape), "checked": int(idx.size),
        "eager_error": checks[0][0], "static_error": checks[1][0],
        "passed": checks[0][1] and checks[1][1],
        "within_noise": checks[0][2] or checks[1][2],
    }


def _verdict(rows: list[dict[str, Any]], failed: list[str], atol: float) -> str:
    if failed:
        worst = max(max(r["eager_error"], r["static_error"]) for r in rows if not r["passed"])
        return (f"gradient check failed for {len(failed)} of {len(rows)} parameters "
                f"({', '.join(failed)}): worst relative error {worst:.2e} > {TOLERANCE:.0e}")
    return (f"all {len(rows)} parameter gradients match finite differences "
            f"(relative error <= {TOLERANCE:.0e} or within the noise {atol:.1e})")


def _compare(analytic: np.ndarray, numeric: np.ndarray, atol: float) -> tuple[float, bool, bool]:
    """(worst relative error, all entries pass, some pass only by being within the noise)."""
    if analytic.size == 0:
        return 0.0, True, False
    rel = relative_error(analytic, numeric)
    close = rel <= TOLERANCE
    noise = ~close & (np.abs(analytic - numeric) <= atol)
    return float(rel.max()), bool(np.all(close | noise)), bool(noise.any())


def _small_batch(exp: Experiment, batch: int) -> tuple[Tensor, Tensor]:
    """The first `batch` training samples as float64 (float data) tensors on the device."""
    split = exp.bundle.train
    xb, yb = split.inputs(slice(0, batch)), split.y[:batch]
    if xb.dtype.kind == "f":
        xb = xb.astype(np.float64)
    if yb.dtype.kind == "f":
        yb = yb.astype(np.float64)
    xp = get_xp(exp.device)
    return batch_tensors(exp, xp.asarray(xb), xp.asarray(yb))


def _analytic(params: list[Tensor], step: Any, x: Tensor, y: Tensor) -> list[np.ndarray]:
    """Run `step(x, y)` (which calls backward) from cleared grads; the grads as host arrays."""
    for p in params:
        p.grad = None
    step(x, y)
    out = [np.zeros(p.shape) if p.grad is None else np.array(p.grad.numpy(), dtype=np.float64)
           for p in params]
    for p in params:
        p.grad = None
    return out


def _numeric(p: Tensor, idx: np.ndarray, eps: float, loss_value: Any) -> np.ndarray:
    """Central differences of the loss at the flat entries `idx` of `p` (restored after)."""
    orig = np.array(p.numpy(), copy=True)
    xp = get_xp(p.device)
    out = np.empty(idx.size)
    try:
        for j, k in enumerate(idx):
            values = []
            for delta in (eps, -eps):
                moved = orig.copy()
                moved.flat[k] += delta
                with dlrun.no_grad():
                    p.copy_(xp.asarray(moved))
                values.append(loss_value())
            out[j] = (values[0] - values[1]) / (2 * eps)
    finally:
        with dlrun.no_grad():
            p.copy_(xp.asarray(orig))
    return out
