"""Shape and indexing primitives: reshape, permute, broadcast, slicing, concat, pad, gathers.

Index-like attrs are kept hashable (tuples), so the static passes can compare nodes.
"""

from __future__ import annotations

import functools
import operator

import numpy as np

from dlrun.engine.prims.registry import Kind, broadcast_shapes, primitive
from dlrun.engine.prims.strides import follows, reshaped, view_of

M = Kind.MOVEMENT
I = Kind.INDEX  # noqa: E741


def _reshape_rule(x, *, shape):
    if int(np.prod(shape, dtype=np.int64)) != int(np.prod(x.shape, dtype=np.int64)):
        raise ValueError(f"cannot reshape a tensor of shape {x.shape} into {shape}")
    return tuple(shape), x.dtype


def _reshape_layout(shapes, strides, out_shape, *, shape):
    return reshaped(shapes[0], strides[0], out_shape)  # None: this reshape must copy


@primitive("reshape", M, _reshape_rule, view=True, layout=_reshape_layout, same_order=True)
def reshape(xp, x, *, shape, out=None):
    """A view when x's layout allows; with `out` (the memory plan gives one to a reshape of a
    transposed value, which must copy) the values are copied into that buffer."""
    if out is None:
        return x.reshape(shape)
    xp.copyto(out.reshape(x.shape), x)
    return out


@reshape.defspecialize
def _reshape_specialize(xp, avals, *, shape):
    view = operator.methodcaller("reshape", shape)

    def run(x, out=None):
        return view(x) if out is None else reshape.forward(xp, x, shape=shape, out=out)

    return run


@reshape.defvjp
def _reshape_vjp(g, y, x, *, shape):
    return (reshape(g, shape=x.shape),)


def _permute_rule(x, *, axes):
    if sorted(axes) != list(range(len(x.shape))):
        raise ValueError(f"permute: {axes} is not a permutation of the {len(x.shape)} dims")
    return tuple(x.shape[a] for a in axes), x.dtype


@primitive("permute", M, _permute_rule, view=True,
           layout=view_of(lambda x, *, axes: x.transpose(axes)))
def permute(xp, x, *, axes):
    return x.transpose(axes)


@permute.defspecialize
def _permute_specialize(xp, avals, *, axes):
    return operator.methodcaller("transpose", axes)  # the forward, as one C-level call


@permute.defvjp
def _permute_vjp(g, y, x, *, axes):
    return (permute(g, axes=tuple(int(i) for i in np.argsort(axes))),)


def _broadcast_rule(x, *, shape):
    if broadcast_shapes(x.shape, shape) != tuple(shape):
        raise ValueError(f"cannot broadcast shape {x.shape} to {shape}")
    return tuple(shape), x.dtype


@primitive("broadcast_to", M, _broadcast_rule, view=True,
           layout=view_of(lambda x, *, shape: np.broadcast_to(x, shape)))
def broadcast_to(xp, x, *, shape):
    return xp.broadcast_to(x, shape)


@broadcast_to.defvjp
def _broadcast_to_vjp(g, y, x, *, shape):
    return (g,)  # autograd's unbroadcast sums it back to x's shape


# ----- basic slicing ---------------------------------------------------------------------------
# A normalized index is a tuple of ("i", k) | ("s", start, stop, step) | ("n",) items.


def _zeroed(xp, out, shape, dtype):
    """A zero array: the planned buffer `out` cleared, or a new one."""
    if out is None:
        return xp.zeros(shape, dtype=dtype)
    out.fill(0)
    return out


def to_python_index(index):
    out = []
    for item in index:
        if item[0] == "i":
            out.append(item[1])
        elif item[0] == "s":
            out.append(slice(item[1], item[2], item[3]))
        else:
            out.append(None)
    return tuple(out)


def _getitem_rule(x, *, index):
    probe = np.broadcast_to(np.empty((), dtype=bool), x.shape)
    return probe[to_python_index(index)].shape, x.dtype


@primitive("getitem", M, _getitem_rule, view=True,
           layout=view_of(lambda x, *, index: x[to_python_index(index)]))
def getitem(xp, x, *, index):
    return x[to_python_index(index)]


@getitem.defspecialize
def _getitem_specialize(xp, avals, *, index):
    return operator.itemgetter(to_python_index(index))  # the forward, as one C-level call


@getitem.defvjp
def _getitem_vjp(g, y, x, *, index):
    # Kept as a part; autograd assembles all slices of x's gradient with one assemble_slices,
    # so T slices of one tensor (an RNN over time) cost O(size), not O(T * size).
    from dlrun.engine.autograd import SliceGrads

    return (SliceGrads(x.shape, [(g, index)]),)


def _blocks(indices, shape) -> tuple[int, list[tuple[int, int]], bool] | None:
    """(axis, spans, rows) for indices that each select one row (("i", k),) (rows=True) or one
    contiguous block (full slices, then ("s", a, b, 1 or None)) along a common axis; else None."""
    spans, axis, rows = [], None, None
    for index in indices:
        if len(index) == 1 and index[0][0] == "i":
            ax, lo, hi, row = 0, index[0][1], index[0][1] + 1, True
        else:
            *lead, last = index
            if (last[0] != "s" or last[3] not in (None, 1) or last[1] is None or last[2] is None
                    or any(item != ("s", None, None, None) for item in lead)):
                return None
            ax, lo, hi, row = len(lead), last[1], min(last[2], shape[len(lead)]), False
        if axis is None:
            axis, rows = ax, row
        if ax != axis or row != rows or not 0 <= lo < hi:
            return None
        spans.append((lo, hi))
    return axis, spans, rows


def _assemble_rule(*gs, shape, indices):
    return tuple(shape), np.result_type(*(g.dtype for g in gs))


@functools.lru_cache(maxsize=4096)
def assemble_layout(indices, shape) -> tuple[bool, tuple, tuple | None]:
    """(disjoint, Python indices, gather) of an assemble_slices, worked out once per distinct
    (indices, shape), not on every call (an RNN assembles one per time step). `gather` is set
    when the parts are disjoint rows or blocks along one axis that cover it: (stack?, axis,
    order of the parts along the axis), so the parts are gathered by one stack/concatenate."""
    where = tuple(to_python_index(index) for index in indices)
    blocks = _blocks(indices, shape)
    if blocks is None:
        return False, where, None
    axis, spans, rows = blocks
    order = sorted(range(len(spans)), key=lambda k: spans[k])
    ordered = [spans[k] for k in order]
    if any(a[1] > b[0] for a, b in zip(ordered, ordered[1:], strict=False)):
        return False, where, None
    covered = ordered[0][0] == 0 and ordered[-1][1] == shape[axis] and all(
        a[1] == b[0] for a, b in zip(ordered, ordered[1:], strict=False))
    return True, where, (rows, axis, tuple(order)) if covered else None


@functools.lru_cache(maxsize=4096)
def _assembler(xp, shape, indices):
    """assemble_slices for one (shape, indices), its layout worked out once."""
    disjoint, where, gather = assemble_layout(indices, shape)
    if gather is not None:
        # rows (an RNN's time steps) or blocks (an LSTM's gates) covering an axis: one copy
        rows, axis, order = gather

        def gathered(*gs, out=None):
            parts = [gs[k] for k in order]
            if rows:
                return xp.stack(parts, out=out)
            return xp.concatenate(parts, axis=axis, out=out)

        return gathered

    def scattered(*gs, out=None):
        out = _zeroed(xp, out, shape, np.result_type(*(g.dtype for g in gs)))
        for g, index in zip(gs, where, strict=True):
            if disjoint:  # copies, not adds
                out[index] = g
            else:
                out[index] += g
        return out

    return scattered


def _assemble_parts(shapes, out_shape, *, shape, indices):
    _, where, gather = assemble_layout(indices, tuple(shape))
    return None if gather is None else list(where)


@primitive("assemble_slices", M, _assemble_rule, parts=_assemble_parts)
def assemble_slices(xp, *gs, shape, indices, out=None):
    """Zeros of `shape` with each g added at its basic index (the transpose of getitem)."""
    return _assembler(xp, tuple(shape), indices)(*gs, out=out)


@assemble_slices.defspecialize
def _assemble_specialize(xp, avals, *, shape, indices):
    return _assembler(xp, tuple(shape), indices)


@assemble_slices.defvjp
def _assemble_slices_vjp(gg, y, *gs, shape, indices):
    return tuple(getitem(gg, index=index) for index in indices)


def _concat_rule(*xs, axis):
    first = xs[0].shape
    for x in xs[1:]:
        if len(x.shape) != len(first) or any(
            a != b for i, (a, b) in enumerate(zip(x.shape, first, strict=True)) if i != axis
        ):
            raise ValueError(f"concat along dim {axis}: shapes {[x.shape for x in xs]} differ")
    size = sum(x.shape[axis] for x in xs)
    return first[:axis] + (size,) + first[axis + 1 :], np.result_type(*(x.dtype for x in xs))


def _concat_parts(shapes, out_shape, *, axis):
    index_list, start = [], 0
    for shape in shapes:
        stop = start + shape[axis]
        index_list.append((slice(None),) * axis + (slice(start, stop),))
        start = stop
    return index_list


@primitive("concat", M, _concat_rule, parts=_concat_parts)
def concat(xp, *xs, axis, out=None):
    return xp.concatenate(xs, axis=axis, out=out)


@concat.defvjp
def _concat_vjp(g, y, *xs, axis):
    grads, start = [], 0
    for x in xs:
        stop = start + x.shape[axis]
        index = tuple(("s", None, None, None) for _ in range(axis)) + (("s", start, stop, 1),)
        grads.append(getitem(g, index=index))
        start = stop
    return tuple(grads)


def _pad_rule(x, *, pad_width, value):
    if len(pad_width) != len(x.shape):
        raise ValueError(f"pad: {len(pad_width)} (before, after) pairs for {len(x.shape)} dims")
    return tuple(n + a + b for n, (a, b) in zip(x.shape, pad_width, strict=True)), x.dtype


@primitive("pad", M, _pad_rule, layout=follows(0))
def pad(xp, x, *, pad_width, value, out=None):
    if out is None:
        return xp.pad(x, pad_width, mode="constant", constant_values=value)
    inner = tuple(slice(a, a + n) for (a, _), n in zip(pad_width, x.shape, strict=True))
    out.fill(value)  # (a planned buffer may hold anything from the last call)
    out[inner] = x
    return out


@pad.defvjp
def _pad_vjp(g, y, x, *, pad_width, value):
    index = tuple(("s", a, a + n, 1) for (a, _), n in zip(pad_width, x.shape, strict=True))
    return (getitem(g, index=index),)


# ----- integer-array indexing (gathers) and their scatter-add gradients -------------------------


def scatter_add_into(xp, out, index, values):
    """out[index] += values, accumulating repeated indices."""
    if xp is np:
        np.add.at(out, index, values)
    else:
        import cupyx

        cupyx.scatter_add(out, index, values)
    return out


def _take_rule(x, idx, *, axis):
    if idx.dtype.kind not in "iu":
        raise TypeError(f"index tensors must be integer, got {idx.dtype}")
    return x.shape[:axis] + tuple(idx.shape) + x.shape[axis + 1 :], x.dtype


@primitive("take", I, _take_rule)
def take(xp, x, idx, *, axis, out=None):
    """x indexed by an integer array along one axis (index_select / embedding lookup)."""
    return xp.take(x, idx, axis=axis, out=out)


@take.defvjp
def _take_vjp(g, y, x, idx, *, axis):
    return index_add(g, idx, axis=axis, size=x.shape[axis]), None


def _index_add_rule(g, idx, *, axis, size):
    nidx = len(idx.shape)
    return g.shape[:axis] + (size,) + g.shape[axis + nidx :], g.dtype


def _rows_by_index(g, idx):
    """(flat idx, 2-D rows of g) with row k of g the one idx's k-th entry points to; when g's
    index dims are permuted in memory (a time-major gradient of (B, T) tokens), idx is
    permuted to match instead of copying g: a sum over all rows does not care about order."""
    k = idx.ndim
    if k > 1 and not g.flags.c_contiguous:
        order = sorted(range(k), key=lambda a: -g.strides[a])
        gp = g.transpose(tuple(order) + tuple(range(k, g.ndim)))
        if gp.flags.c_contiguous:
            return idx.transpose(order).reshape(-1), gp.reshape((idx.size, -1))
    return idx.reshape(-1), g.reshape((idx.size, -1))


@primitive("index_add", I, _index_add_rule)
def index_add(xp, g, idx, *, axis, size, out=None):
    """Zeros with `size` rows along axis, g's slices added at idx (the transpose of take)."""
    pre, post = g.shape[:axis], g.shape[axis + idx.ndim :]
    out_shape = pre + (size,) + post
    n_pre = int(np.prod(pre, dtype=np.int64))
    if xp is np and n_pre == 1:
        flat_idx, rows = _rows_by_index(g, idx)
        if size <= 1024 and size * flat_idx.size <= 1 << 22 and g.dtype.kind == "f":
            # a small vocabulary: one-hot(idx) @ rows, one GEMM instead of a sort or an
            # unbuffered add.at; it writes every row of out
            onehot = np.zeros((size, flat_idx.size), dtype=g.dtype)
            onehot[flat_idx, np.arange(flat_idx.size)] = 1
            out = np.empty(out_shape, dtype=g.dtype) if out is None else out
            np.matmul(onehot, rows, out=out.reshape((size, -1)))
            return out
        # embedding gradients: sort the rows by index and sum each run once (np.add.at adds
        # row by row and is several times slower)
        out = _zeroed(xp, out, out_shape, g.dtype)
        order = np.argsort(flat_idx, kind="stable")
        keys = flat_idx[order]
        starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
        sums = np.add.reduceat(rows[order], starts, axis=0)
        out.reshape((size, -1))[keys[starts]] += sums
        return out
    out = _zeroed(xp, out, out_shape, g.dtype)
    flat_out = out.reshape((n_pre, size) + post)
    flat_g = g.reshape((n_pre, idx.size) + post)
    scatter_add_into(xp, flat_out, (slice(None), idx.reshape(-1)), flat_g)
    return out


@index_add.defvjp
def _index_add_vjp(gg, y, g, idx, *, axis, size):
    return take(gg, idx, axis=axis), None


def _gather_rule(x, idx, *, axis):
    if len(idx.shape) != len(x.shape):
        raise ValueError(f"gather: index has {len(idx.shape)} dims, input has {len(x.shape)}")
    return tuple(idx.shape), x.dtype


@primitive("gather", I, _gather_rule)
def gather(xp, x, idx, *, axis):
    """torch.gather: out[..., i, ...] = x[..., idx[..., i, ...], ...] along axis."""
    return xp.take_along_axis(x, idx, axis=axis)


@gather.defvjp
def _gather_vjp(g, y, x, idx, *, axis):
    return scatter_add(g, idx, axis=axis, shape=x.shape), None


def _scatter_add_rule(g, idx, *, axis, shape):
    return tuple(shape), g.dtype


@primitive("scatter_add", I, _scatter_add_rule)
def scatter_add(xp, g, idx, *, axis, shape, out=None):
    """Zeros of `shape` with g added at idx along axis (the transpose of gather)."""
    out = _zeroed(xp, out, shape, g.dtype)
    grid = list(xp.ogrid[tuple(slice(n) for n in idx.shape)])
    grid[axis] = idx
    scatter_add_into(xp, out, tuple(grid), g)
    return out


@scatter_add.defvjp
def _scatter_add_vjp(gg, y, g, idx, *, axis, shape):
    return gather(gg, idx, axis=axis), None


# ----- ONNX lowerings (dlrun export): onnx(g, *input names, **attrs) -> output name ----------
# A `shape` dim that is not an int is a dlrun.export.onnx.Dim: it follows the batch size or the
# sequence length (the exporter found it differ between traces). Reshape infers a single one
# (-1) and reads two or more off the input's shape (g.ints); Expand keeps the input's dim (1).
_INT64_MAX = np.iinfo(np.int64).max
_INT64_MIN = np.iinfo(np.int64).min



def _static(d):
    return isinstance(d, (int, np.integer))


def _reshape_onnx(g, x, *, shape):
    if sum(not _static(d) for d in shape) == 1:
        shape = [d if _static(d) else -1 for d in shape]
    return g.op("Reshape", x, g.ints(shape))


reshape.onnx = _reshape_onnx
permute.onnx = lambda g, x, *, axes: g.op("Transpose", x, perm=list(axes))
broadcast_to.onnx = lambda g, x, *, shape: g.op("Expand", x,
                                                g.ints(d if _static(d) else 1 for d in shape))
concat.onnx = lambda g, *xs, axis: g.op("Concat", *xs, axis=axis)
take.onnx = lambda g, x, idx, *, axis: g.op("Gather", x, idx, axis=axis)
gather.onnx = lambda g, x, idx, *, axis: g.op("GatherElements", x, idx, axis=axis)


def _getitem_onnx(g, x, *, index):
    """Basic indexing as one Slice (ints as one-element slices), then Squeeze of the int axes
    and Unsqueeze of the new (None) axes."""
    starts, ends, axes, steps, squeeze, new_axes = [], [], [], [], [], []
    dim = out_pos = 0
    for item in index:
        if item[0] == "n":
            new_axes.append(out_pos)
            out_pos += 1
            continue
        if item[0] == "i":
            k = item[1]
            starts.append(k)
            ends.append(_INT64_MAX if k == -1 else k + 1)
            steps.append(1)
            squeeze.append(dim)
        else:
            _, start, stop, step = item
            step = 1 if step is None else step
            starts.append((0 if step > 0 else -1) if start is None else start)
            ends.append((_INT64_MAX if step > 0 else _INT64_MIN) if stop is None else stop)
            steps.append(step)
            out_pos += 1
        axes.append(dim)
        dim += 1
    y = x
    if axes:
        y = g.op("Slice", x, g.ints(starts), g.ints(ends), g.ints(axes), g.ints(steps))
    if squeeze:
        y = g.op("Squeeze", y, g.ints(squeeze))
    if new_axes:
        y = g.op("Unsqueeze", y, g.ints(new_axes))
    return y if y != x else g.op("Identity", x)


getitem.onnx = _getitem_onnx


def _pad_onnx(g, x, *, pad_width, value):
    pads = [int(a) for a, _ in pad_width] + [int(b) for _, b in pad_width]
    return g.op("Pad", x, g.ints(pads), g.const(np.asarray(value, dtype=g.dtype(x))))


pad.onnx = _pad_onnx
