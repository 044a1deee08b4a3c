from __future__ import annotations

import itertools

import numpy as np
import pytest

import dlrun
from dlrun import functional as F
from dlrun.engine.passes import run
from dlrun.engine.static.layout import allocate, dense, infer_layouts, order_of, reshaped
from dlrun.engine.static.memory import plan_memory
from tests.engine.passes.helpers import traced


def _elements(a: np.ndarray) -> tuple[int, ...]:
    return tuple(s // a.itemsize for s in a.strides)


@pytest.mark.parametrize("axes", list(itertools.permutations(range(3))))
def test_reshape_views_match_numpy(axes) -> None:
    a = np.zeros((2, 3, 4)).transpose(axes)
    for shape in ((24,), (a.shape[0], -1), (-1, a.shape[-1]), (6, 4), (4, 6), (2, 2, 6)):
        target = np.empty(a.shape).reshape(shape).shape
        got = reshaped(a.shape, _elements(a), target)
        view = a.reshape(target)
        assert (got is not None) == np.shares_memory(view, a), (axes, shape)
        if got is not None:
            assert got == _elements(view)


def test_views_and_elementwise_results_have_numpys_strides() -> None:
    x = dlrun.tensor(np.random.default_rng(0).standard_normal((4, 5, 6)))

    def fn(x):
        p = x.permute(2, 0, 1)  # a transposed view ...
        y = p.exp()  # ... keeps its layout through elementwise ops (order='K')
        return y[1:, ::2] * 2.0, F.relu(p).sum(0)

    r = traced(fn, x)
    layouts = infer_layouts(r.graph)
    arrays = {}  # the eager values, node by node
    from dlrun.engine.static.interpret import interpret

    env = interpret(r.graph, np, [x.numpy()], [t._value for t in r.state])
    for n in r.graph.nodes:
        if n.id in layouts and isinstance(env.get(n.id), np.ndarray) and env[n.id].ndim:
            arrays[n.id] = env[n.id]
    for nid, a in arrays.items():
        assert order_of(a.shape, layouts[nid]) == order_of(a.shape, _elements(a)), nid


def test_allocate_lays_out_axes_in_the_given_order() -> None:
    a = allocate(np, (2, 3, 4), np.float32, (1, 2, 0))
    assert a.shape == (2, 3, 4)
    assert _elements(a) == dense((2, 3, 4), (1, 2, 0)) == (1, 8, 2)
    assert order_of(a.shape, _elements(a)) == (1, 2, 0)


def test_conv_values_keep_the_channel_major_layout_of_the_gemm() -> None:
    rng = np.random.default_rng(0)
    from dlrun import nn

    conv = nn.Conv2d(3, 4, 3, padding=1, dtype="float64")
    x = dlrun.tensor(rng.standard_normal((2, 3, 8, 8)))

    def step(x):
        y = F.max_pool2d(conv(x), 2)
        return (y * y).sum()

    r = traced(step, x)
    g, _ = run(r.graph)
    memory = plan_memory(g)
    specs, buffers, by_id = memory.specs, memory.buffers, g.by_id()
    add = next(n for n in g.nodes if n.op == "add" and n.shape == (2, 4, 8, 8))
    pool = next(n for n in g.nodes if n.op == "max_pool2d")
    for n in (add, pool):  # channel-major in memory: no transposing bias add or pooling
        assert specs[buffers[n.id]][2] == (1, 0, 2, 3), by_id[n.id].op
    f = dlrun.compile(step)
    np.testing.assert_allclose(f(x).item(), step(x).item(), rtol=1e-12)


@pytest.mark.parametrize("workload", ["cnn", "lstm"])
def test_inferred_layouts_match_the_eager_values_of_a_whole_training_step(workload) -> None:
    """Every primitive's natural layout (out=None, as eager mode runs it) is what the memory
    plan assumes: a mismatch would make static buffers and eager arrays disagree on layout."""
    from pathlib import Path

    from benchmarks.run import fixed_batch
    from dlrun.config import load_config
    from dlrun.engine.static.interpret import interpret
    from dlrun.runner.experiment import batch_tensors, build_experiment

    configs = Path(__file__).resolve().parents[3] / "configs" / "bench"
    x, y, _ = fixed_batch(workload, configs)
    exp = build_experiment(load_config(configs / f"{workload}.yaml", ["mode=static"]))
    xt, yt = batch_tensors(exp, x[:8].copy(), y[:8].copy())  # a small batch: same graph shape
    exp.train_step(xt, yt)
    entry = exp.train_step.last
    graph, layouts = entry.graph, entry.memory.layouts
    state = [t._value.copy() for t in entry.result.state]
    env = interpret(graph, np, [xt._value, yt._value], state, [])
    checked = 0
    for n in graph.nodes:
        v = env.get(n.id)
        if n.id in layouts and isinstance(v, np.ndarray) and v.ndim >= 2 and v.size > 1:
            assert order_of(v.shape, _elements(v)) == order_of(n.shape, layouts[n.id]), n.format()
            checked += 1
    assert checked > 50
