"""The same seeded model trains the same on a CUDA device as on the CPU (skipped without CuPy)."""

from __future__ import annotations

import numpy as np
import pytest

import dlrun
from dlrun import functional as F
from dlrun import optim
from dlrun.models import build_model

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("cfg", [
    {"type": "cnn", "channels": [4, 8], "kernel_size": 3, "hidden": [16], "batch_norm": True},
    {"type": "lstm", "hidden_size": 16, "num_layers": 2},
], ids=["cnn", "lstm"])
def test_training_on_cuda_matches_cpu(cfg: dict) -> None:
    rng = np.random.default_rng(0)
    if cfg["type"] == "cnn":
        meta = {"input_shape": (1, 12, 12), "num_classes": 3}
    else:
        meta = {"input_shape": (8, 2), "num_classes": 3}
    x_np = rng.standard_normal((16, *meta["input_shape"])).astype(np.float32)
    y_np = rng.integers(0, 3, 16)
    losses, params = {}, {}
    for device in ("cpu", "cuda:0"):
        dlrun.manual_seed(0)
        model = build_model(cfg, meta).to(device)  # built on the CPU: identical initial weights
        opt = optim.Adam(model.parameters(), lr=0.01)
        sched = optim.StepLR(opt, 1, gamma=0.5)
        x, y = dlrun.tensor(x_np, device=device), dlrun.tensor(y_np, device=device)
        trace = []
        for _ in range(4):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optim.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            trace.append(float(loss.item()))
        losses[device] = trace
        params[device] = [p.numpy() for p in model.parameters()]
        assert all(p.device == device for p in model.parameters())
        assert all(t.device == device for st in opt.state.values() for t in st.values())
    np.testing.assert_allclose(losses["cpu"], losses["cuda:0"], rtol=1e-4)
    for a, b in zip(params["cpu"], params["cuda:0"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_state_dicts_cross_devices() -> None:
    cfg, meta = {"type": "gru", "hidden_size": 8}, {"input_shape": (6, 2), "num_classes": 2}
    dlrun.manual_seed(0)
    cpu_model = build_model(cfg, meta)
    dlrun.manual_seed(1)
    gpu_model = build_model(cfg, meta).to("cuda:0")
    gpu_model.load_state_dict(cpu_model.state_dict())  # CPU tensors into CUDA parameters
    x = np.random.default_rng(0).standard_normal((3, 6, 2)).astype(np.float32)
    np.testing.assert_allclose(cpu_model(dlrun.tensor(x)).numpy(),
                               gpu_model(dlrun.tensor(x, device="cuda:0")).numpy(), rtol=1e-5,
                               atol=1e-6)
    opt = optim.SGD(gpu_model.parameters(), lr=0.1, momentum=0.9)
    opt.param_groups[0]["lr"] = 0.05
    assert opt.param_groups[0]["lr_t"].device == "cuda:0"
    saved = opt.state_dict()
    assert all(isinstance(v, np.ndarray) for s in saved["state"].values() for v in s.values())
    opt.load_state_dict(saved)
