"""ONNX export: a model's inference function, traced statically, as an ONNX ModelProto.

The model (in eval mode, without gradients) is traced at two batch sizes and run through the
passes that keep a graph portable (dce, cse, fold, simplify). Attribute ints that differ between
the two traces follow the batch: the lowerings get them as `Dim`s (a reshape infers one with -1,
a broadcast keeps 1, a slice bound or a second dynamic reshape dim reads it off the input's
`Shape`), so the exported graph takes any batch size. A token model ((B, T) int ids) is also
traced at a shorter sequence: when its graph has the same structure there (GPT: position rows
`wpe[:T]`, reshapes (B, T, H, hd), a causal mask built from `Range`s) the sequence axis is
dynamic too; otherwise (an RNN unrolled per step) the sequence stays fixed. Every node becomes
ONNX nodes through its primitive's `onnx` lowering (DESIGN R11: the exporter keeps no table of
ops); captured parameters and buffers become float32 initializers. `export_onnx` then checks
the model with the ONNX checker, runs it in ONNX Runtime on the run's own inputs against dlrun's
eager outputs and writes the file atomically only when they agree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Dim:
    """A dim that follows the input: `factor` times the product of the named input dims
    ("batch", "seq"); no names: it changes with them in some other way (only -1 / 1 can say it).
    """

    names: tuple[str, ...]
    factor: int = 1

    def __str__(self) -> str:
        return "*".join([*([str(self.factor)] if self.factor != 1 else []), *self.names]) or "?"


def _float32(dtype: np.dtype) -> np.dtype:
    """The dtype an exported value has: float64 runs export as float32."""
    return np.dtype(np.float32) if np.dtype(dtype).kind == "f" else np.dtype(dtype)


class Builder:
    """What a primitive's lowering writes into: `g.op(...)`, `g.const(...)`, fresh names.

    `g.opset` is the target opset; `g.shape(name)` / `g.dtype(name)` give a value's dlrun shape
    and dtype (the batch dim as traced) for lowerings that need them (im2col's channel count);
    `g.sym_shape(name)` the shape with `Dim`s where it follows the batch / sequence, `g.dim(d)`
    a 1-D int64 value holding a `Dim` at run time, and `g.ints` takes `Dim`s among its ints.
    """

    def __init__(self, opset: int) -> None:
        import onnx

        self.onnx = onnx
        self.opset = opset
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._shapes: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        self._sym: dict[str, tuple[Any, ...]] = {}
        self.axes: dict[str, int] = {"batch": 0}  # input axis of each dynamic dim name
        self._dims: dict[Dim, str] = {}
        self._input_shape: str | None = None  # Shape(input), made on the first g.dim
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
        """A 1-D int64 initializer (shapes, axes, pads); with `Dim`s among the values, the
        Concat of constants and the dims read off the input's shape."""
        values = list(values)
        if not any(isinstance(v, Dim) for v in values):
            return self.const(np.asarray(values, dtype=np.int64))
        parts = [self.dim(v) if isinstance(v, Dim) else self.const(np.asarray([v], np.int64))
                 for v in values]
        return parts[0] if len(parts) == 1 else self.op("Concat", *parts, axis=0)

    def dim(self, d: Any) -> str:
        """A 1-D int64 value of one element: the dim `d` (an int or a `Dim`) at run time."""
        if not isinstance(d, Dim):
            return self.ints([d])
        if not d.names or any(n not in self.axes for n in d.names):
            raise ValueError(f"a dim ({d}) follows the input's dims in no way the exporter "
                             "knows")
        if d not in self._dims:
            if self._input_shape is None:
                self._input_shape = self.op("Shape", "input")
            shape = self._input_shape
            out = None
            for n in d.names:
                ax = self.axes[n]
                part = self.op("Slice", shape, self.ints([ax]), self.ints([ax + 1]))
                out = part if out is None else self.op("Mul", out, part)
            if d.factor != 1:
                out = self.op("Mul", out, self.ints([d.factor]))
            self._dims[d] = out
        return self._dims[d]

    def tensor_type(self, dtype: Any) -> int:
        """The ONNX TensorProto element type of a NumPy dtype (float64 as float32)."""
        return self.onnx.helper.np_dtype_to_tensor_dtype(_float32(np.dtype(dtype)))

    def note(self, name: str, shape: tuple[int, ...], dtype: Any,
             sym: tuple[Any, ...] | None = None) -> None:
        self._shapes[name] = (tuple(shape), np.dtype(dtype))
        self._sym[name] = tuple(shape) if sym is None else tuple(sym)

    def sym_shape(self, name: str) -> tuple[Any, ...]:
        return self._sym[name]

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


def _solve(va: int, vb: int, vc: int | None, sizes: tuple[tuple[int, int], ...]) -> Any:
    """The int or `Dim` an attribute int is, from its values in the traces: a (batch B0, seq T0),
    b (B1, T0) and c (B0, T1) when the sequence is traced too. `sizes`: (B, T) of a, b, c."""
    if va == vb and (vc is None or va == vc):
        return va
    (b0, t0), (b1, _), (_, t1) = sizes
    candidates = [(("batch",), (b0, b1, b0))]
    if vc is not None:
        candidates += [(("seq",), (t0, t0, t1)), (("batch", "seq"), (b0 * t0, b1 * t0, b0 * t1))]
    for names, (ea, eb, ec) in candidates:
        if va % ea == 0 and va * eb == vb * ea and (vc is None or va * ec == vc * ea):
            return Dim(names, va // ea)
    return Dim(())


def _dynamic(va: Any, vb: Any, vc: Any, sizes: Any, seq: bool) -> Any:
    if freeze(va) == freeze(vb) and (not seq or freeze(va) == freeze(vc)):
        return va
    others = (vb, vc) if seq else (vb,)
    if isinstance(va, (tuple, list)) and all(
            isinstance(v, (tuple, list)) and len(v) == len(va) for v in others):
        return type(va)(_dynamic(p, q, r, sizes, seq)
                        for p, q, r in zip(va, vb, vc if seq else va, strict=True))
    ints = (va, vb, *((vc,) if seq else ()))
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in ints):
        return _solve(int(va), int(vb), int(vc) if seq else None, sizes)
    raise ValueError(f"{va} vs {vb}" + (f" vs {vc}" if seq else ""))


def _dynamic_attrs(a: Node, b: Node, c: Node | None, sizes: Any) -> dict[str, Any]:
    """a's attributes with the ints that differ from traces b (batch) / c (sequence) as Dims."""
    out = dict(a.attrs)
    for key, va in a.attrs.items():
        try:
            out[key] = _dynamic(va, b.attrs.get(key), c.attrs.get(key) if c else None, sizes,
                                c is not None)
        except ValueError as e:
            what = "batch size or sequence length" if c is not None else "batch size"
            raise ExportError(f"{a.op} at {a.where or '?'}: attribute {key} depends on the "
                              f"{what} ({e}); it cannot be exported with a dynamic "
                              f"{what}") from None
    return out


def _align(a: Graph, b: Graph, what: str = "batch size") -> None:
    if [n.op for n in a.nodes] != [n.op for n in b.nodes]:
        raise ExportError(f"the model's graph changes with the {what} (data-dependent "
                          f"control flow, a per-step unroll?): it cannot be exported with a "
                          f"dynamic {what}")


def _const(g: Builder, a: Node, b: Node, c: Node | None = None) -> str:
    """A const node: an initializer, or (a constant fill whose shape follows the batch) the
    fill expanded to the input's batch size."""
    va, vb = np.asarray(a.attrs["value"]), np.asarray(b.attrs["value"])
    if c is not None and np.shape(c.attrs["value"]) != va.shape:
        raise ExportError(f"a constant made at {a.where or '?'} depends on the sequence length")
    if va.shape == vb.shape:
        return g.const(va)
    flat = va.reshape(-1)
    batch_first = va.ndim == vb.ndim and (va.shape[0], vb.shape[0]) == TRACE_BATCHES
    if batch_first and va.size and (flat == flat[0]).all() and va.shape[1:] == vb.shape[1:]:
        batch = g.op("Slice", g.op("Shape", "input"), g.ints([0]), g.ints([1]))
        shape = g.op("Concat", batch, g.ints(va.shape[1:]), axis=0)
        return g.op("Expand", g.const(flat[0]), shape)
    raise ExportError(f"a constant made at {a.where or '?'} depends on the batch size")


def _input_shape(graph: Graph) -> tuple[int, ...]:
    return next(n.shape for n in graph.nodes if n.op == "input")


def _dim_param(d: Any, i: int) -> Any:
    if not isinstance(d, Dim):
        return d
    return str(d) if d.names and d.factor == 1 and len(d.names) == 1 else f"out_{i}"


def build_model(graph: Graph, other: Graph, state: list[Any], input_dtype: Any,
                opset: int = 17, seq_other: Graph | None = None) -> Any:
    """The ONNX ModelProto of `graph` (traced at one batch size; `other`, at another, tells
    which attribute dims follow the batch; `seq_other`, at the first batch size and a shorter
    sequence, which follow the sequence), with `state`'s values as initializers."""
    onnx, _ = require_onnx()
    _align(graph, other)
    if seq_other is not None:
        _align(graph, seq_other, "sequence length")
    g = Builder(opset)
    if seq_other is not None:
        g.axes["seq"] = 1
    (b0, t0), (b1, _) = _input_shape(graph)[:2], _input_shape(other)[:2]
    t1 = _input_shape(seq_other)[1] if seq_other is not None else t0
    sizes = ((b0, t0), (b1, t0), (b0, t1))
    helper = onnx.helper
    names: dict[int, str] = {}
    inputs, outputs = [], []
    thirds = seq_other.nodes if seq_other is not None else [None] * len(graph.nodes)
    for a, b, c in zip(graph.nodes, other.nodes, thirds, strict=True):
        g.node = a
        try:
            sym = _dynamic(tuple(a.shape), tuple(b.shape), tuple(c.shape) if c else None, sizes,
                           c is not None)
        except ValueError:
            raise ExportError(f"{a.op} at {a.where or '?'}: its rank changes with the batch "
                              "size or sequence length") from None
        if a.op == "input":
            if a.attrs["index"] != 0:
                raise ExportError("export takes models with one input tensor")
            name = "input"
            dims = ["batch", *(_dim_param(d, i + 1) for i, d in enumerate(sym[1:]))]
            inputs.append(helper.make_tensor_value_info(name, g.tensor_type(input_dtype), dims))
        elif a.op == "state":
            name = f"state_{a.attrs['slot']}"
            value = np.asarray(state[a.attrs["slot"]].numpy())
            g.initializers.append(onnx.numpy_helper.from_array(
                np.ascontiguousarray(value.astype(_float32(value.dtype))), name))
        elif a.op == "const":
            name = _const(g, a, b, c)
        elif a.op == "output":
            k = a.attrs["index"]
            name = "output" if k == 0 else f"output_{k}"
            g.nodes.append(helper.make_node("Identity", [names[a.inputs[0]]], [name]))
            out_dims = [_dim_param(d, i) for i, d in enumerate(sym)]
            outputs.append(helper.make_tensor_value_info(name, g.tensor_type(a.dtype),
                                                         out_dims))
        elif a.op in ("state_write", "grad_write", "state_grad"):
            raise ExportError(f"{a.op} at {a.where or '?'}: the inference function writes "
                              "state; export needs a pure forward")
        else:
            name = _lower(g, a, b, c, sizes, [names[i] for i in a.inputs])
        names[a.id] = name
        g.note(name, a.shape, a.dtype, sym)
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


def _lower(g: Builder, a: Node, b: Node, c: Node | None, sizes: Any, args: list[str]) -> str:
    prim = REGISTRY.get(a.op)
    if prim is None:
        raise ExportError(f"op {a.op!r} at {a.where or '?'} is not a primitive; it cannot be "
                          "exported")
    try:
        lowering: Callable[..., str] = prim.fact("onnx", "dlrun export")
    except MissingFact:
        raise ExportError(f"op {a.op!r} has no ONNX lowering (used at {a.where or '?'}); "
                          f"give its primitive an onnx= rule") from None
    attrs = _dynamic_attrs(a, b, c, sizes)
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


def _seq_len(x: Any) -> int | None:
    """T when x is a (B, T) array of token ids long enough to trace a shorter sequence."""
    return int(x.shape[1]) if (len(x.shape) == 2 and np.dtype(x.dtype).kind in "iu"
                               and x.shape[1] >= 3) else None


def _trim(x: Any, t: int) -> Any:
    import dlrun

    return dlrun.tensor(np.ascontiguousarray(np.asarray(x.numpy())[:, :t]))


def _build_checked(onnx: Any, graph: Graph, other: Graph, state: list[Any], dtype: Any,
                   opset: int, seq_other: Graph | None,
                   tamper: Callable[[Any], None] | None) -> tuple[Any, bytes]:
    kwargs = {"seq_other": seq_other} if seq_other is not None else {}
    proto = build_model(graph, other, state, dtype, opset, **kwargs)
    if tamper is not None:
        tamper(proto)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:  # onnx raises ValidationError / InferenceError
        raise ExportError(f"the exported model fails the ONNX checker: {e}") from None
    return proto, proto.SerializeToString()


def _checked_report(data: bytes, model: Any, inputs: list[Any], tolerance: float
                    ) -> dict[str, Any]:
    report = verify(data, model, inputs)
    if not report["max_rel_error"] <= tolerance:
        raise ExportError(f"ONNX Runtime's outputs differ from dlrun's: relative error "
                          f"{report['max_rel_error']:.3g} > {tolerance:g} (max abs error "
                          f"{report['max_abs_error']:.3g}); nothing written")
    return report


def export_onnx(model: Any, x: Any, out: Path | str, *, opset: int = 17,
                tolerance: float = TOLERANCE,
                tamper: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Export `model` to ONNX at `out`, verified on input tensor x (a batch of real inputs).

    Traced at two batch sizes (and, for (B, T) token ids, a shorter sequence: the sequence
    axis is dynamic when the graph keeps its structure, fixed otherwise), checked by
    onnx.checker (full_check), run by ONNX Runtime at two batch sizes (and two sequence
    lengths) against dlrun's eager outputs: when the relative error exceeds `tolerance` an
    ExportError is raised and nothing is written. `tamper(model_proto)` (tests) changes the
    model before verification. Returns the file, the errors, the dynamic axes and the graph's
    size.
    """
    onnx, _ = require_onnx()
    if opset < 13:
        raise ExportError(f"--opset {opset}: dlrun exports opset 13 or newer")
    trace_a, trace_b = batches_of(x, TRACE_BATCHES)
    graph, state = trace_inference(model, trace_a)
    other, _ = trace_inference(model, trace_b)
    n = int(x.shape[0])
    batches = batches_of(x, (n, max(1, n // 2) if n > 1 else 2))
    seq, seq_note, built = _seq_len(x), None, None
    if seq is not None:
        try:
            seq_other, _ = trace_inference(model, _trim(trace_a, seq - 1))
            proto, data = _build_checked(onnx, graph, other, state, x.dtype, opset, seq_other,
                                         tamper)
            short = seq // 2
            report = _checked_report(data, model, [*batches, _trim(batches[0], short)],
                                     tolerance)
            report.update(seq_lens=[seq, short])
            built = proto, data, report, ["batch", "seq"]
        except Exception as e:  # the model's own errors at a shorter sequence, or ExportError
            seq_note = f"sequence length fixed at {seq}: {e}"
    if built is None:
        proto, data = _build_checked(onnx, graph, other, state, x.dtype, opset, None, tamper)
        built = proto, data, _checked_report(data, model, batches, tolerance), ["batch"]
    proto, data, report, axes = built
    report["batch_sizes"] = [int(b.shape[0]) for b in batches]
    path = atomic_write_bytes(out, data)
    result = {"path": str(path), "format": "onnx", "opset": opset, "bytes": len(data),
              "onnx_nodes": len(proto.graph.node), "initializers": len(proto.graph.initializer),
              "dynamic_axes": axes, **report}
    if seq_note is not None:
        result["seq_note"] = seq_note
    return result
