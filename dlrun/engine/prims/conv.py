"""Convolution and pooling on NCHW arrays via strided views.

Convolution is built in dlrun.functional from im2col (one strided copy) and a batched GEMM; its
transpose col2im is the one heavy gradient primitive it needs. Pooling runs KH*KW elementwise
passes over strided views; its gradients are primitives of their own, whose vjps close the set.
"""

from __future__ import annotations

import numpy as np

from dlrun.engine.prims.registry import Kind, primitive
from dlrun.engine.prims.strides import follows, own_order

C = Kind.CONV


def out_size(n, k, stride, padding, dilation=1):
    return (n + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def _pad_hw(xp, x, padding, value=0.0):
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    return xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def _hw_out(x_shape, kernel, stride, padding, dilation):
    oh = out_size(x_shape[2], kernel[0], stride[0], padding[0], dilation[0])
    ow = out_size(x_shape[3], kernel[1], stride[1], padding[1], dilation[1])
    if oh <= 0 or ow <= 0:
        raise ValueError(
            f"input of spatial size {tuple(x_shape[2:])} is too small for kernel {kernel} "
            f"(stride {stride}, padding {padding}, dilation {dilation})"
        )
    return oh, ow


# ----- convolution as im2col + one GEMM ----------------------------------------------------------
# conv2d (dlrun.functional) = im2col -> (O, KH*KW*C) @ (KH*KW*C, N*OH*OW) -> NCHW view.
# One large GEMM per product (not N small ones), every large array is a graph value the static
# memory plan preallocates, the weight gradient reuses the forward's columns, and the one heavy
# gradient primitive needed is col2im (im2col's transpose). Zero padding is applied inside
# both (no padded copy of the input, no padded gradient to crop).


def _cols_rule(x, *, kernel, stride, dilation, padding=(0, 0)):
    if len(x.shape) != 4:
        raise ValueError(f"conv2d expects NCHW input, got shape {x.shape}")
    oh, ow = _hw_out(x.shape, kernel, stride, padding, dilation)
    n, c = x.shape[:2]
    return (kernel[0] * kernel[1] * c, n * oh * ow), x.dtype


def _col_span(j, w, ow, stride, dilation, pad):
    """(first, stop, x0): the output columns [first, stop) whose kernel column j reads a real
    (not padding) input column, x0 being the first of those input columns."""
    shift = j * dilation - pad
    first = max(0, -(shift // stride)) if shift < 0 else 0
    stop = min(ow, (w - 1 - shift) // stride + 1) if w - 1 - shift >= 0 else 0
    return first, max(first, stop), first * stride + shift


@primitive("im2col", C, _cols_rule)
def im2col(xp, x, *, kernel, stride, dilation, padding=(0, 0), out=None):
    """(KH*KW*C, N*OH*OW) columns of an NCHW input zero-padded by `padding`: rows in
    (kh, kw, c) order, columns in (n, oh, ow) order."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (dh, dw), (ph, pw) = kernel, stride, dilation, padding
    oh, ow = _hw_out(x.shape, kernel, stride, padding, dilation)
    if out is None:
        out = xp.empty((kh * kw * c, n * oh * ow), dtype=x.dtype)
    out6 = out.reshape(kh, kw, c, n, oh, ow)
    xc = x.transpose(1, 0, 2, 3)  # (C, N, H, W): the columns' order
    # Per kernel column, one copy of the column-shifted input (runs of OW) into a strip with
    # the padding rows, then each kernel row is a row-shifted block of the strip (runs of
    # OH*OW): the transpose of col2im's two stages.
    strip = xp.empty((c, n, h + 2 * ph, ow), dtype=x.dtype)
    if ph:
        strip[:, :, :ph].fill(0)
        strip[:, :, ph + h:].fill(0)
    inner = strip[:, :, ph : ph + h]
    for j in range(kw):
        first, stop, x0 = _col_span(j, w, ow, sw, dw, pw)
        inner[..., :first].fill(0)
        inner[..., stop:].fill(0)
        xp.copyto(inner[..., first:stop], xc[..., x0 : x0 + sw * (stop - first - 1) + 1 : sw])
        for i in range(kh):
            xp.copyto(out6[i, j], strip[:, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh])
    return out


@im2col.defvjp
def _im2col_vjp(g, y, x, *, kernel, stride, dilation, padding=(0, 0)):
    return (col2im(g, x_shape=x.shape, kernel=kernel, stride=stride, dilation=dilation,
                   padding=padding),)


def _col2im_rule(g, *, x_shape, kernel, stride, dilation, padding=(0, 0)):
    return tuple(x_shape), g.dtype


# accumulated channel-major, like the columns it sums
@primitive("col2im", C, _col2im_rule, layout=own_order((1, 0, 2, 3)))
def col2im(xp, g, *, x_shape, kernel, stride, dilation, padding=(0, 0), out=None):
    """Sum (KH*KW*C, N*OH*OW) column gradients back into an NCHW array (the gradient of the
    unpadded input), accumulated in a (C, N, H, W) array (the columns' own layout); the result
    is that accumulator seen as NCHW (channel-major in memory, as the static plan lays out its
    buffer: no transposing copy).

    Two stages, so most adds run over long contiguous blocks: for each kernel column j, the
    KH row-shifted blocks are summed into a (C, N, H + 2*PH, OW) strip (a shift along H moves
    whole rows: runs of OH*OW), then the strip's real rows and columns are added at its column
    shift (runs of OW). KW adds walk short runs instead of KH*KW."""
    n, c, h, w = x_shape
    (kh, kw), (sh, sw), (dh, dw), (ph, pw) = kernel, stride, dilation, padding
    oh, ow = _hw_out(x_shape, kernel, stride, padding, dilation)
    g6 = g.reshape(kh, kw, c, n, oh, ow)
    acc = None if out is None else out.transpose(1, 0, 2, 3)
    in_place = acc is not None and acc.flags.c_contiguous
    if not in_place:
        acc = xp.empty((c, n, h, w), dtype=g.dtype)
    strip = xp.empty((c, n, h + 2 * ph, ow), dtype=g.dtype)
    rows = [slice(i * dh, i * dh + sh * (oh - 1) + 1, sh) for i in range(kh)]
    if pw:  # the first kernel column may not reach every input column: clear everything
        acc.fill(0)
    for j in range(kw):
        _sum_shifted(xp, strip, [g6[i, j] for i in range(kh)], rows, axis=2)
        first, stop, x0 = _col_span(j, w, ow, sw, dw, pw)
        cols = slice(x0, x0 + sw * (stop - first - 1) + 1, sw)
        part = strip[:, :, ph : ph + h, first:stop]
        if j == 0 and not pw:  # writes its columns, clears the rest
            _write_first(xp, acc, part, cols, axis=3)
        elif stop > first:
            view = acc[:, :, :, cols]
            xp.add(view, part, out=view)
    if out is None or in_place:
        return acc.transpose(1, 0, 2, 3) if out is None else out
    xp.copyto(out, acc.transpose(1, 0, 2, 3))
    return out


@col2im.defvjp
def _col2im_vjp(gg, y, g, *, x_shape, kernel, stride, dilation, padding=(0, 0)):
    return (im2col(gg, kernel=kernel, stride=stride, dilation=dilation, padding=padding),)


def _sum_shifted(xp, dst, parts, where, axis):
    """dst = sum of parts[k] placed at dst[..., where[k], ...] along axis (zeros elsewhere)."""
    _write_first(xp, dst, parts[0], where[0], axis)
    for part, sl in zip(parts[1:], where[1:], strict=True):
        view = dst[(slice(None),) * axis + (sl,)]
        xp.add(view, part, out=view)


def _write_first(xp, dst, part, sl, axis):
    """dst[..., sl, ...] = part and zeros elsewhere along axis, without clearing twice."""
    lead = (slice(None),) * axis
    xp.copyto(dst[lead + (sl,)], part)
    if sl.step == 1:
        if sl.start:
            dst[lead + (slice(0, sl.start),)].fill(0)
        if sl.stop < dst.shape[axis]:
            dst[lead + (slice(sl.stop, None),)].fill(0)
    else:  # strided: clear what the slice skips (rare: strided convolutions)
        mask = xp.ones(dst.shape[axis], dtype=bool)
        mask[sl] = False
        if mask.any():
            idx = xp.nonzero(mask)[0]
            dst[lead + (idx,)] = 0


# ----- pooling ------------------------------------------------------------------------------------


def _pool_rule(x, *, kernel, stride, padding):
    if len(x.shape) != 4:
        raise ValueError(f"pooling expects NCHW input, got shape {x.shape}")
    oh, ow = _hw_out(x.shape, kernel, stride, padding, (1, 1))
    return (x.shape[0], x.shape[1], oh, ow), x.dtype


def _pool_slices(xp, x, kernel, stride, padding, fill):
    """(i, j, view) for each kernel offset: the (N, C, OH, OW) strided view of padded x that
    window element (i, j) reads. Pooling as KH*KW elementwise passes over output-sized views is
    much faster in NumPy than reducing a 6-D window view."""
    oh, ow = _hw_out(x.shape, kernel, stride, padding, (1, 1))
    xpad = _pad_hw(xp, x, padding, fill)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            yield i, j, xpad[:, :, i : i + stride[0] * (oh - 1) + 1 : stride[0],
                             j : j + stride[1] * (ow - 1) + 1 : stride[1]]


def _first_max_masks(xp, x, y, kernel, stride, padding):
    """(i, j, mask) with mask true where window offset (i, j) is the first maximum (PyTorch's
    tie rule): each window routes its gradient to exactly one element. The masks are yielded
    in one reused buffer."""
    taken = None
    mask = xp.empty_like(y, dtype=bool)  # in y's memory layout, as every operand below
    for i, j, view in _pool_slices(xp, x, kernel, stride, padding, -np.inf):
        xp.equal(view, y, out=mask)
        if taken is None:
            taken = mask.copy(order="K")
        else:
            xp.greater(mask, taken, out=mask)  # mask and not taken
            xp.logical_or(taken, mask, out=taken)
        yield i, j, mask


def _like(xp, a, ref):
    """a in ref's memory layout (one copy when they differ): the mask passes then walk all
    their operands in the same order (mixed layouts make every pass several times slower)."""
    order = np.argsort([-s for s in a.strides], kind="stable")
    if (order == np.argsort([-s for s in ref.strides], kind="stable")).all():
        return a
    out = xp.empty_like(ref, dtype=a.dtype)
    xp.copyto(out, a)
    return out


def _tiles(x_shape, kernel, stride, padding):
    """True when the windows tile the input exactly: every element in exactly one window."""
    return (padding == (0, 0) and tuple(stride) == tuple(kernel)
            and x_shape[2] % kernel[0] == 0 and x_shape[3] % kernel[1] == 0)


@primitive("max_pool2d", C, _pool_rule, layout=follows(0))
def max_pool2d(xp, x, *, kernel, stride, padding, out=None):
    for k, (_, _, view) in enumerate(_pool_slices(xp, x, kernel, stride, padding, -np.inf)):
        if k == 0:
            out = xp.array(view) if out is None else _copy_into(xp, out, view)
        else:
            xp.maximum(out, view, out=out)
    return out


def _copy_into(xp, out, value):
    xp.copyto(out, value)
    return out


@max_pool2d.defvjp
def _max_pool2d_vjp(g, y, x, *, kernel, stride, padding):
    return (max_pool2d_grad(g, x, y, kernel=kernel, stride=stride, padding=padding),)


def _pool_grad_rule(g, x, y, *, kernel, stride, padding):
    return tuple(x.shape), g.dtype


@primitive("max_pool2d_grad", C, _pool_grad_rule, layout=follows(1))
def max_pool2d_grad(xp, g, x, y, *, kernel, stride, padding, out=None):
    """Route each window's gradient to its first maximum, like PyTorch (y = max_pool2d(x))."""
    n, c, h, w = x.shape
    (ph, pw), (oh, ow) = padding, g.shape[2:]
    g = _like(xp, g, y)
    if _tiles(x.shape, kernel, stride, padding):  # every element written once: no zeros, no adds
        gx = xp.empty_like(x, dtype=g.dtype) if out is None else out  # laid out like x
        for i, j, mask in _first_max_masks(xp, x, y, kernel, stride, padding):
            xp.multiply(g, mask, out=gx[:, :, i :: stride[0], j :: stride[1]])
        return gx
    gx = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=g.dtype)
    for i, j, mask in _first_max_masks(xp, x, y, kernel, stride, padding):
        view = gx[:, :, i : i + stride[0] * (oh - 1) + 1 : stride[0],
                  j : j + stride[1] * (ow - 1) + 1 : stride[1]]
        view += g * mask
    inner = gx[:, :, ph : ph + h, pw : pw + w]
    if out is None:
        return inner
    xp.copyto(out, inner)
    return out


@max_pool2d_grad.defvjp
def _max_pool2d_grad_vjp(gg, out, g, x, y, *, kernel, stride, padding):
    return max_pool2d_select(gg, x, y, kernel=kernel, stride=stride, padding=padding), None, None


def _select_rule(gg, x, y, *, kernel, stride, padding):
    return tuple(y.shape), gg.dtype


@primitive("max_pool2d_select", C, _select_rule)
def max_pool2d_select(xp, gg, x, y, *, kernel, stride, padding):
    """gg read at each window's first maximum of x (the transpose of max_pool2d_grad)."""
    out = xp.zeros(y.shape, dtype=gg.dtype)
    slices = _pool_slices(xp, gg, kernel, stride, padding, 0.0)
    for (_, _, mask), (_, _, view) in zip(_first_max_masks(xp, x, y, kernel, stride, padding),
                                          slices, strict=True):
        out += view * mask
    return out


@max_pool2d_select.defvjp
def _max_pool2d_select_vjp(g, out, gg, x, y, *, kernel, stride, padding):
    return max_pool2d_grad(g, x, y, kernel=kernel, stride=stride, padding=padding), None, None


@primitive("avg_pool2d", C, _pool_rule, layout=follows(0))
def avg_pool2d(xp, x, *, kernel, stride, padding, out=None):
    """Mean over each window, zero padding counted (PyTorch's count_include_pad=True)."""
    for k, (_, _, view) in enumerate(_pool_slices(xp, x, kernel, stride, padding, 0.0)):
        if k == 0:
            out = xp.array(view) if out is None else _copy_into(xp, out, view)
        else:
            xp.add(out, view, out=out)
    return xp.multiply(out, x.dtype.type(1.0 / (kernel[0] * kernel[1])), out=out)


@avg_pool2d.defvjp
def _avg_pool2d_vjp(g, y, x, *, kernel, stride, padding):
    return (avg_pool2d_grad(g, x_shape=x.shape, kernel=kernel, stride=stride, padding=padding),)


def _avg_grad_rule(g, *, x_shape, kernel, stride, padding):
    return tuple(x_shape), g.dtype


@primitive("avg_pool2d_grad", C, _avg_grad_rule)
def avg_pool2d_grad(xp, g, *, x_shape, kernel, stride, padding):
    n, c, h, w = x_shape
    (ph, pw), (oh, ow) = padding, g.shape[2:]
    gx = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=g.dtype)
    share = g * g.dtype.type(1.0 / (kernel[0] * kernel[1]))
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            view = gx[:, :, i : i + stride[0] * (oh - 1) + 1 : stride[0],
                      j : j + stride[1] * (ow - 1) + 1 : stride[1]]
            xp.add(view, share, out=view)
    return gx[:, :, ph : ph + h, pw : pw + w]


@avg_pool2d_grad.defvjp
def _avg_pool2d_grad_vjp(gg, y, g, *, x_shape, kernel, stride, padding):
    return (avg_pool2d(gg, kernel=kernel, stride=stride, padding=padding),)


# ----- ONNX lowerings (dlrun export): onnx(g, *input names, **attrs) -> output name ----------


def _im2col_onnx(g, x, *, kernel, stride, dilation, padding=(0, 0)):
    """im2col as a Conv whose fixed one-hot kernel copies each (kh, kw, c) patch element into
    its own output channel (im2col's row order), then (N, K, OH, OW) -> (K, N*OH*OW)."""
    c = g.shape(x)[1]
    (kh, kw), (ph, pw) = kernel, padding
    onehot = np.zeros((kh * kw * c, c, kh, kw), dtype=g.dtype(x))
    for i in range(kh):
        for j in range(kw):
            for ch in range(c):
                onehot[(i * kw + j) * c + ch, ch, i, j] = 1
    cols = g.op("Conv", x, g.const(onehot), kernel_shape=list(kernel), strides=list(stride),
                dilations=list(dilation), pads=[ph, pw, ph, pw])
    cols = g.op("Transpose", cols, perm=[1, 0, 2, 3])
    return g.op("Reshape", cols, g.ints([kh * kw * c, -1]))


def _pool_onnx(op_type, **extra):
    def lower(g, x, *, kernel, stride, padding):
        ph, pw = padding
        return g.op(op_type, x, kernel_shape=list(kernel), strides=list(stride),
                    pads=[ph, pw, ph, pw], **extra)

    return lower


im2col.onnx = _im2col_onnx
max_pool2d.onnx = _pool_onnx("MaxPool")
avg_pool2d.onnx = _pool_onnx("AveragePool", count_include_pad=1)
