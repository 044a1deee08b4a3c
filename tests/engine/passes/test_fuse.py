from __future__ import annotations

import numpy as np
import pytest

import dlrun
from dlrun.engine.passes import fuse
from dlrun.engine.prims.fused import cuda_chain, cuda_kernel_source
from dlrun.engine.static.lower import bind
from tests.engine.passes.helpers import assert_same_results, ops, traced


def _source(node) -> tuple[str, str, str]:
    return cuda_kernel_source(node.attrs["program"], len(node.inputs))


def test_fuses_elementwise_chain_into_one_node() -> None:
    b = dlrun.tensor([0.5, -1.0, 2.0], dtype="float64")
    x = dlrun.tensor([[1.0, 2.0, 3.0]], dtype="float64")
    r = traced(lambda x: ((x + b).tanh() * 3.0).relu().sum(), x)
    g = fuse(r.graph)[0]
    fused = [n for n in g.nodes if n.op == "fused"]
    assert len(fused) == 1
    assert [s[0] for s in fused[0].attrs["program"]] == ["add", "tanh", "mul", "relu"]
    assert "sum" in ops(g)
    assert_same_results(r.graph, g, r, (x,))


def test_value_with_two_users_ends_a_chain() -> None:
    x = dlrun.ones(3, dtype="float64")
    r = traced(lambda x: (lambda e: e * e.tanh())(x.exp()), x)  # exp feeds mul and tanh
    g = fuse(r.graph)[0]
    assert "exp" in ops(g)  # not absorbed: it has two users
    assert_same_results(r.graph, g, r, (x,))


def test_fused_node_runs_in_place_into_out() -> None:
    x = dlrun.tensor(np.linspace(-2, 2, 6).reshape(2, 3))
    r = traced(lambda x: (x * 2.0).sigmoid() + 1.0, x)
    node = next(n for n in fuse(r.graph)[0].nodes if n.op == "fused")
    run = bind(node, np)
    consts = {n.id: n.attrs["value"] for n in r.graph.nodes if n.op == "const"}
    ext = [x._value if i == 0 else consts[i] for i in node.inputs]
    out = np.empty(node.shape, node.dtype)
    res = run(*ext, out=out)
    assert res is out
    np.testing.assert_allclose(out, 1 / (1 + np.exp(-2 * x.numpy())) + 1.0, rtol=1e-6)


def test_cuda_kernel_source_composes_expressions() -> None:
    x = dlrun.ones(3)
    r = traced(lambda x: (x * 2.0).tanh() + x.relu().relu(), x)
    for node in fuse(r.graph)[0].nodes:
        if node.op == "fused":
            in_params, out_params, body = _source(node)
            assert in_params.startswith("T0 in0") and out_params == "O out"
            assert body.startswith("out = (O)(") and "in0" in body
    node = next(n for n in fuse(r.graph)[0].nodes if n.op == "fused"
                and n.attrs["program"][0][0] == "mul")
    assert _source(node)[2] == "out = (O)(((tanh(((in0 * in1)))) + in2))"


def test_cuda_source_types_casts_and_relu() -> None:
    x = dlrun.ones(3, dtype="float64")
    r = traced(lambda x: ((x * 2.0).to_dtype("float32") + 1.0).relu(), x)
    nodes = [n for n in fuse(r.graph)[0].nodes if n.op == "fused"]
    bodies = [_source(n)[2] for n in nodes]
    assert any("(float)" in b for b in bodies)
    assert any("<= 0 ? 0 :" in b for b in bodies)  # relu
    assert all("float32" not in b for b in bodies)


@pytest.mark.gpu
def test_fused_kernel_runs_on_cuda_and_matches_numpy() -> None:
    import cupy

    x = dlrun.tensor(np.linspace(-2, 2, 6).reshape(2, 3))
    r = traced(lambda x: ((x * 2.0).tanh() + 1.0).relu(), x)
    node = next(n for n in fuse(r.graph)[0].nodes if n.op == "fused")
    consts = {n.id: n.attrs["value"] for n in r.graph.nodes if n.op == "const"}
    ext = [x._value if i == 0 else consts[i] for i in node.inputs]
    run = cuda_chain(cupy, node.attrs["program"], len(node.inputs))
    got = run(*[cupy.asarray(e) for e in ext]).get()
    np.testing.assert_allclose(got, np.maximum(np.tanh(2 * x.numpy()) + 1, 0), rtol=1e-6)
