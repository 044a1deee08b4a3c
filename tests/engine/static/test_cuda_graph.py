"""CUDA-graph replay of compiled steps: the decision and the fixed-address bindings run on NumPy
(a replay is emulated by running the plan over the bound arrays, which is what the captured graph
does); the capture itself is tested on CUDA (marked gpu)."""

from __future__ import annotations

import numpy as np
import pytest

import dlrun
from dlrun import functional as F
from dlrun import nn, optim
from dlrun.engine.static.cuda_graph import Bindings, blocker


def _setup(device: str = "cpu", dropout: float = 0.0, cuda_graphs: bool = False):
    dlrun.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 3))
    model.to(device)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def step(x, y):
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    rng = np.random.default_rng(0)
    batches = [(dlrun.tensor(rng.standard_normal((8, 6)).astype(np.float32), device=device),
                dlrun.tensor(rng.integers(0, 3, 8), device=device)) for _ in range(6)]
    return model, opt, dlrun.compile(step, cuda_graphs=cuda_graphs), batches


def test_blocker_names_the_reason() -> None:
    _, _, step, batches = _setup()
    step(*batches[0])
    entry = step.last
    assert "CUDA device" in blocker(entry.graph, entry.plan, "cpu", 0)
    assert blocker(entry.graph, entry.plan, "cuda:0", 0) is None
    assert "zero_grad" in blocker(entry.graph, entry.plan, "cuda:0", 1)
    _, _, step, batches = _setup(dropout=0.5)
    step(*batches[0])
    entry = step.last
    assert "random op 'dropout_mask'" in blocker(entry.graph, entry.plan, "cuda:0", 0)


def test_cpu_run_with_cuda_graphs_asked_records_why_not() -> None:
    _, _, step, batches = _setup(cuda_graphs=True)
    step(*batches[0])
    assert step.last.cuda_graph is None and "CUDA device" in step.last.graph_blocker


def test_bound_replay_equals_plain_steps_even_when_state_is_rebound() -> None:
    """Emulate the captured graph on NumPy: the plan always runs over the static input buffers
    and the captured state arrays, fresh writes copied back into them; a learning-rate change
    in between (which rebinds a state tensor's array) must reach the replay."""
    ref_model, ref_opt, ref_step, batches = _setup()
    model, opt, step, _ = _setup()
    for x, y in batches[:2]:
        ref_step(x, y)
        step(x, y)
    entry = step.last
    tensors = entry.result.state
    bindings = Bindings(np, [a._value for a in batches[0]], [t._value for t in tensors],
                        entry.plan)
    captured = list(bindings.state)
    for k, (x, y) in enumerate(batches[2:]):
        if k == 2:
            for o in (opt, ref_opt):
                o.param_groups[0]["lr"] = 0.05
        ref_loss = ref_step(x, y).item()
        bindings.bind_inputs([x._value, y._value])
        copied = bindings.bind_state(tensors)
        assert copied == (1 if k == 2 else 0) or k == 0
        outs, writes, _ = entry.plan.run(bindings.inputs, bindings.state, [])
        bindings.store_writes(writes)
        assert float(outs[0]) == pytest.approx(ref_loss, rel=1e-6)
        assert all(a is b for a, b in zip(bindings.state, captured, strict=True))
    for p, q in zip(model.parameters(), ref_model.parameters(), strict=True):
        np.testing.assert_allclose(p.numpy(), q.numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_graph_replay_matches_plain_static(precision: str) -> None:
    from dlrun.optim.amp import MixedPrecision

    results = {}
    for graphs in (False, True):
        model, opt, _, batches = _setup("cuda:0")
        amp = MixedPrecision(precision, model, opt, "cuda:0")

        def step(x, y, model=model, amp=amp, opt=opt):
            loss = F.cross_entropy(amp.run(model, x), y)
            amp.backward(loss)
            amp.step()
            opt.zero_grad()
            return loss

        compiled = dlrun.compile(step, cuda_graphs=graphs)
        losses = []
        for k, (x, y) in enumerate(batches):
            if k == 4:
                opt.param_groups[0]["lr"] = 0.05  # rebinds lr_t: the replay must see it
            losses.append(compiled(x, y).item())
        if graphs:
            assert compiled.last.cuda_graph is not None, compiled.last.graph_blocker
        results[graphs] = (losses, [p.numpy() for p in model.parameters()])
    np.testing.assert_allclose(results[True][0], results[False][0], rtol=1e-6)
    for a, b in zip(results[True][1], results[False][1], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
