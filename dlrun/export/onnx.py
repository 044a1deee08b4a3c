"""ONNX export: a model's inference function, traced statically, as an ONNX ModelProto.

The model (in eval mode, without gradients) is traced at two batch sizes and run through the
passes that keep a graph portable (dce, cse, fold, simplify). Attribute dims that differ between
the two traces depend on the batch: a reshape gets -1 there, a broadcast 1 (ONNX broadcasts it
back), so the exported graph takes any batch size. Every node becomes ONNX nodes through its
primitive's `onnx` lowering (DESIGN R11: the exporter keeps no table of ops); captured
parameters and buffers become float32 initializers. `export_onnx` then checks the model with the
ONNX checker, runs it in ONNX Runtime on the run's own inputs against dlrun's eager outputs and
writes the file atomically only when they agree.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dlrun.atomic import atomic_write_bytes
from dlrun.engine.graph import Graph, Node, freeze
from dlrun.engine.prims.registry import REGISTRY, MissingFact
from dlrun.errors import ExportError

EXPORT_PASSES = ("dce", "cse", "fold", "simplify")  # not matmul_sum, fuse, memory: not portable
TOLERANCE = 1e-4
TRACE_BATCHES = (3, 5)  # the two batch sizes traced: attribute dims that differ follow the batch
EXTRA_HINT = "ONNX export needs the optional extra 'onnx': pip install 'dlrun[onnx]'"


def require_onnx() -> tuple[Any, Any]:
    """(onnx, onnxruntime), or an ExportError naming the extra that installs them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise ExportError(f"{EXTRA_HINT} ({e})") from None
    return onnx, onnxruntime


def _float32(dtype: np.dtype) -> np.dtype:
    """The dtype an exported value has: float64 runs export as float32."""
    return np.dtype(np.float32) if np.dtype(dtype).kind == "f" else np.dtype(dtype)


class Builder:
    """What a primitive's lowering writes into: `g.op(...)`, `g.const(...)`, fresh names.

    `g.opset` is the target opset; `g.shape(name)` / `g.dtype(name)` give a value's dlrun shape
    and dtype (the batch dim as traced) for lowerings that need them (im2col's channel count).
    """

    def __init__(self, opset: int) -> None:
        import onnx

        self.onnx = onnx
        self.opset = opset
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._shapes: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        self._count = 0
        self.node: Node | None = None  # the dlrun node being lowered

    def fresh(self, hint: str = "v") -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def op(self, op_type: str, *inputs: str, outputs: int = 1, **attrs: Any) -> Any:
        """Append one ONNX node; its output name (a list of names when outputs > 1)."""
        names = [self.fresh(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), names, **attrs))
        return names[0] if outputs == 1 else names

    def const(self, value: Any, dtype: Any = None) -> str:
        """An initializer holding `value` (float64 stored as float32); its name."""
        arr = np.asarray(value, dtype=dtype)
        arr = arr.astype(_float32(arr.dtype))
        name = self.fresh("const")
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(arr),
                                                                   name))
        return name

    def ints(self, values: Any) -> str:
        """A 1-D int64 initializer (shapes, axes, pads)."""
        return self.const(np.asarray(list(values), dtype=np.int64))

    def tensor_type(self, dtype: Any) -> int:
        """The ONNX TensorProto element type of a NumPy dtype (float64 as float32)."""
        return self.onnx.helper.np_dtype_to_tensor_dtype(_float32(np.dtype(dtype)))

    def note(self, name: str, shape: tuple[int, ...], dtype: Any) -> None:
        self._shapes[name] = (tuple(shape), np.dtype(dtype))

    def shape(self, name: str) -> tuple[int, ...]:
        return self._shapes[name][0]

    def dtype(self, name: str) -> np.dtype:
        return self._shapes[name][1]


# ----- tracing ----------------------------------------------------------------------------------


def trace_inference(model: Any, x: Any) -> tuple[Graph, list[Any]]:
    """The model's inference graph on input tensor x (eval mode, no grad, static) after the
    export passes, and the captured tensors by state slot."""
    import dlrun

    model.eval()

    def infer(inputs: Any) -> Any:
        with dlrun.no_grad():
            return model(inputs)

    fn = dlrun.compile(infer, passes=EXPORT_PASSES)
    fn(x)
    entry = fn.last
    return entry.graph, entry.result.state


def _batch_free_attrs(a: Node, b: Node) -> dict[str, Any]:
    """a's attributes with the dims that differ from trace b's (the batch) made dynamic."""
    out = dict(a.attrs)
    for key, va in a.attrs.items():
        vb = b.attrs.get(key)
        if freeze(va) == freeze(vb):
            continue
        if (key == "shape" and isinstance(va, tuple) and isinstance(vb, tuple)
                and len(va) == len(vb)):
            out[key] = tuple(-1 if p != q else p for p, q in zip(va, vb, strict=True))
            continue
        raise ExportError(f"{a.op} at {a.where or '?'}: attribute {key} depends on the batch "
                          f"size ({va} vs {vb}); it cannot be exported with a dynamic batch")
    return out


def _align(a: Graph, b: Graph) -> None:
    if [n.op for n in a.nodes] != [n.op for n in b.nodes]:
        raise ExportError("the model's graph changes with the batch size (data-dependent "
                          "control flow?): it cannot be exported with a dynamic batch")


def _const(g: Builder, a: Node, b: Node) -> str:
    """A const node: an initializer, or (a constant fill whose shape follows the batch) the
    fill expanded to the input's batch size."""
    va, vb = np.asarray(a.attrs["value"]), np.asarray(b.attrs["value"])
    if va.shape == vb.shape:
        return g.const(va)
    flat = va.reshape(-1)
    batch_first = va.ndim == vb.ndim and (va.shape[0], vb.shape[0]) == TRACE_BATCHES
    if batch_first and va.size and (flat == flat[0]).all() and va.shape[1:] == vb.shape[1:]:
        batch = g.op("Slice", g.op("Shape", "input"), g.ints([0]), g.ints([1]))
        shape = g.op("Concat", batch, g.ints(va.shape[1:]), axis=0)
        return g.op("Expand", g.const(flat[0]), shape)
    raise ExportError(f"a constant made at {a.where or '?'} depends on the batch size")


def build_model(graph: Graph, other: Graph, state: list[Any], input_dtype: Any,
                opset: int = 17) -> Any:
    """The ONNX ModelProto of `graph` (traced at one batch size; `other`, at another, tells
    which attribute dims follow the batch), with `state`'s values as initializers."""
    onnx, _ = require_onnx()
    _align(graph, other)
    g = Builder(opset)
    helper = onnx.helper
    names: dict[int, str] = {}
    inputs, outputs = [], []
    for a, b in zip(graph.nodes, other.nodes, strict=True):
        g.node = a
        dims = ["batch", *a.shape[1:]] if a.shape else []
        if a.op == "input":
            if a.attrs["index"] != 0:
                raise ExportError("export takes models with one input tensor")
            name = "input"
            inputs.append(helper.make_tensor_value_info(name, g.tensor_type(input_dtype), dims))
        elif a.op == "state":
            name = f"state_{a.attrs['slot']}"
            value = np.asarray(state[a.attrs["slot"]].numpy())
            g.initializers.append(onnx.numpy_helper.from_array(
                np.ascontiguousarray(value.astype(_float32(value.dtype))), name))
        elif a.op == "const":
            name = _const(g, a, b)
        elif a.op == "output":
            k = a.attrs["index"]
            name = "output" if k == 0 else f"output_{k}"
            g.nodes.append(helper.make_node("Identity", [names[a.inputs[0]]], [name]))
            out_dims = [f"out_{i}" if p != q else p
                        for i, (p, q) in enumerate(zip(a.shape, b.shape, strict=True))]
            out_dims = ["batch" if i == 0 and d == "out_0" else d for i, d in enumerate(out_dims)]
            outputs.append(helper.make_tensor_value_info(name, g.tensor_type(a.dtype),
                                                         out_dims))
        elif a.op in ("state_write", "grad_write", "state_grad"):
            raise ExportError(f"{a.op} at {a.where or '?'}: the inference function writes "
                              "state; export needs a pure forward")
        else:
            name = _lower(g, a, b, [names[i] for i in a.inputs])
        names[a.id] = name
        g.note(name, a.shape, a.dtype)
    model = helper.make_model(
        helper.make_graph(g.nodes, "dlrun", inputs, outputs, g.initializers),
        opset_imports=[helper.make_opsetid("", opset)], producer_name="dlrun")
    model.ir_version = _ir_version(helper, opset, model.ir_version)
    return model


def _ir_version(helper: Any, opset: int, default: int) -> int:
    """The oldest IR version that carries `opset` (older runtimes load the file too)."""
    try:
        return int(helper.find_min_ir_version_for([helper.make_opsetid("", opset)]))
    except Exception:  # an opset this onnx does not know: its default
        return default


def _lower(g: Builder, a: Node, b: Node, args: list[str]) -> str:
    prim = REGISTRY.get(a.op)
    if prim is None:
        raise ExportError(f"op {a.op!r} at {a.where or '?'} is not a primitive; it cannot be "
                          "exported")
    try:
        lowering: Callable[..., str] = prim.fact("onnx", "dlrun export")
    except MissingFact:
        raise ExportError(f"op {a.op!r} has no ONNX lowering (used at {a.where or '?'}); "
                          f"give its primitive an onnx= rule") from None
    attrs = _batch_free_attrs(a, b)
    try:
        return lowering(g, *args, **attrs)
    except (ValueError, KeyError, TypeError) as e:
        raise ExportError(f"op {a.op!r} at {a.where or '?'} cannot be lowered to ONNX: {e}"
                          ) from None


# ----- verification and the file ----------------------------------------------------------------


def _eager(model: Any, x: Any) -> np.ndarray:
    import dlrun

    model.eval()
    with dlrun.no_grad():
        out = model(x)
    return np.asarray(out.numpy())


def _ort_run(session: Any, x: np.ndarray) -> np.ndarray:
    dtype = _float32(x.dtype)
    return session.run(["output"], {"input": x.astype(dtype)})[0]


def compare(ort_out: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(largest absolute error, that error relative to the largest |reference| value)."""
    if ort_out.shape != ref.shape:
        raise ExportError(f"ONNX Runtime returned shape {ort_out.shape}, dlrun {ref.shape}")
    diff = np.abs(ort_out.astype(np.float64) - ref.astype(np.float64))
    abs_err = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    return abs_err, abs_err / max(scale, np.finfo(np.float32).tiny)


def verify(data: bytes, model: Any, batches: list[Any]) -> dict[str, Any]:
    """Run the serialized model in ONNX Runtime (CPU) on each input tensor of `batches` against
    dlrun's eager outputs; the largest absolute and relative errors and the batch sizes."""
    _, ort = require_onnx()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's own error types
        raise ExportError(f"ONNX Runtime cannot load the exported model: {e}") from None
    abs_err = rel_err = 0.0
    for x in batches:
        try:
            got = _ort_run(session, np.asarray(x.numpy()))
        except Exception as e:
            raise ExportError(f"ONNX Runtime cannot run the exported model at batch size "
                              f"{x.shape[0]}: {e}") from None
        a, r = compare(got, _eager(model, x))
        abs_err, rel_err = max(abs_err, a), max(rel_err, r)
    return {"max_abs_error": abs_err, "max_rel_error": rel_err,
            "batch_sizes": [int(x.shape[0]) for x in batches]}


def batches_of(x: Any, sizes: tuple[int, ...]) -> list[Any]:
    """Input tensors of the given batch sizes made from the rows of x (repeated if needed)."""
    import dlrun

    arr = np.asarray(x.numpy())
    rows = np.concatenate([arr] * (1 + max(sizes) // max(len(arr), 1)))
    return [dlrun.tensor(rows[:n]) for n in sizes]


def export_onnx(model: Any, x: Any, out: Path | str, *, opset: int = 17,
                tolerance: float = TOLERANCE,
                tamper: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Export `model` to ONNX at `out`, verified on input tensor x (a batch of real inputs).

    Traced at two batch sizes, checked by onnx.checker (full_check), run by ONNX Runtime at two
    batch sizes against dlrun's eager outputs: when the relative error exceeds `tolerance` an
    ExportError is raised and nothing is written. `tamper(model_proto)` (tests) changes the
    model before verification. Returns the file, the errors and the graph's size.
    """
    onnx, _ = require_onnx()
    if opset < 13:
        raise ExportError(f"--opset {opset}: dlrun exports opset 13 or newer")
    trace_a, trace_b = batches_of(x, TRACE_BATCHES)
    graph, state = trace_inference(model, trace_a)
    other, _ = trace_inference(model, trace_b)
    proto = build_model(graph, other, state, x.dtype, opset)
    if tamper is not None:
        tamper(proto)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:  # onnx raises ValidationError / InferenceError
        raise ExportError(f"the exported model fails the ONNX checker: {e}") from None
    data = proto.SerializeToString()
    n = int(x.shape[0])
    report = verify(data, model, batches_of(x, (n, max(1, n // 2) if n > 1 else 2)))
    if not report["max_rel_error"] <= tolerance:
        raise ExportError(f"ONNX Runtime's outputs differ from dlrun's: relative error "
                          f"{report['max_rel_error']:.3g} > {tolerance:g} (max abs error "
                          f"{report['max_abs_error']:.3g}); nothing written")
    path = atomic_write_bytes(out, data)
    return {"path": str(path), "format": "onnx", "opset": opset, "bytes": len(data),
            "onnx_nodes": len(proto.graph.node), "initializers": len(proto.graph.initializer),
            **report}
