from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import dlrun
from dlrun import functional as F
from dlrun.engine import collective
from dlrun.engine.passes import overlap
from dlrun.engine.prims.collective import all_reduce_start, all_reduce_wait
from tests.engine.passes.helpers import assert_same_results, ops, traced


class OneRank:
    """The communicator of a job of one process: every sum is the value itself."""

    rank, size = 0, 1

    def __init__(self) -> None:
        self.polls = 0

    def all_reduce(self, x: Any, out: Any = None) -> Any:
        return x if out is None else np.copyto(out, x) or out

    def start(self, x: Any) -> Any:
        return x

    def wait(self, x: Any) -> Any:
        return x

    def progress(self) -> None:
        self.polls += 1


@pytest.fixture
def one_rank() -> Any:
    comm = OneRank()
    collective.set_world(comm)
    yield comm
    collective.set_world(None)


def _mlp_step() -> tuple[Any, tuple]:
    rng = np.random.default_rng(0)
    w1, w2, w3 = (dlrun.tensor(rng.standard_normal(s), requires_grad=True)
                  for s in ((4, 8), (8, 8), (8, 3)))
    x = dlrun.tensor(rng.standard_normal((5, 4)))

    def step(x):
        loss = (F.tanh(F.tanh(x @ w1) @ w2) @ w3).sum()
        loss.backward()
        buckets = [[w3], [w2, w1]]  # backward order: the last layer's gradient is final first
        started = [all_reduce_start(F.cat([p.grad.reshape(-1) * 0.5 for p in b]))
                   for b in buckets]
        flats = [all_reduce_wait(s) for s in started]
        with dlrun.no_grad():
            for b, flat in zip(buckets, flats, strict=True):
                offset = 0
                for p in b:
                    p.copy_(p - 0.1 * flat[offset:offset + p.numel()].reshape(*p.shape))
                    offset += p.numel()
        return loss

    return step, (x,)


def test_starts_move_into_the_backward_pass_and_nothing_else_moves(one_rank: OneRank) -> None:
    step, args = _mlp_step()
    r = traced(step, *args)
    g, detail = overlap(r.graph)
    g.verify()
    before, after = ops(r.graph), ops(g)
    assert detail["starts"] == 2 and detail["nodes_earlier"] > 0
    # the first bucket starts before the backward pass's last matmul, not after all of it
    def last_matmul(order: list[str]) -> int:
        return max(k for k, op in enumerate(order) if op == "matmul")

    assert before.index("all_reduce_start") > last_matmul(before)
    assert after.index("all_reduce_start") < last_matmul(after)
    # the waits stay after every start, and the other nodes keep their order
    assert max(k for k, op in enumerate(after) if op == "all_reduce_start") < \
        after.index("all_reduce_wait")
    moved = {n.id for n in g.nodes
             if n.op in ("all_reduce_start", "concat", "reshape", "mul", "const")}
    assert [n.id for n in r.graph.nodes if n.id not in moved] == \
        [n.id for n in g.nodes if n.id not in moved]
    assert_same_results(r.graph, g, r, args)


def test_a_graph_without_collectives_is_left_alone() -> None:
    r = traced(lambda x: (x * 2.0).sum(), dlrun.ones(3))
    g, detail = overlap(r.graph)
    assert g is r.graph and detail["starts"] == 0


def test_a_compiled_step_polls_its_started_all_reduces(one_rank: OneRank) -> None:
    step, args = _mlp_step()
    compiled = dlrun.compile(step)
    compiled(*args)
    assert one_rank.polls > 0  # the plan lets MPI progress between the backward's nodes
