"""Convolution and pooling on NCHW arrays via strided windows (im2col + one GEMM).

The gradients are primitives of their own (conv2d_grad_input, conv2d_grad_weight, pool grads),
so backward is a few heavy ops instead of a long chain of small ones; their vjps close the set.
"""

from __future__ import annotations

import numpy as np

from dlrun.engine.prims.registry import Kind, primitive

C = Kind.CONV


def out_size(n, k, stride, padding, dilation=1):
    return (n + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def _windows(xp, x, kernel, stride, dilation, out_hw):
    """A (N, C, OH, OW, KH, KW) strided view of an already padded x (no copy)."""
    n, c = x.shape[:2]
    s0, s1, s2, s3 = x.strides
    shape = (n, c, out_hw[0], out_hw[1], kernel[0], kernel[1])
    strides = (s0, s1, s2 * stride[0], s3 * stride[1], s2 * dilation[0], s3 * dilation[1])
    return xp.lib.stride_tricks.as_strided(x, shape=shape, strides=strides)


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


def _cols(xp, x, kernel, stride, padding, dilation):
    """im2col: (N*OH*OW, C*KH*KW) patches of x, and (OH, OW)."""
    oh, ow = _hw_out(x.shape, kernel, stride, padding, dilation)
    win = _windows(xp, _pad_hw(xp, x, padding), kernel, stride, dilation, (oh, ow))
    n, c = x.shape[:2]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kernel[0] * kernel[1])
    return cols, (oh, ow)


def _col2im(xp, gcols, x_shape, kernel, stride, padding, dilation, out_hw):
    """Sum (N, OH, OW, C, KH, KW) patch gradients back into an (N, C, H, W) array."""
    n, c, h, w = x_shape
    (ph, pw), (oh, ow) = padding, out_hw
    gx = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=gcols.dtype)
    for i in range(kernel[0]):
        hi = i * dilation[0]
        for j in range(kernel[1]):
            wj = j * dilation[1]
            gx[:, :, hi : hi + stride[0] * (oh - 1) + 1 : stride[0],
               wj : wj + stride[1] * (ow - 1) + 1 : stride[1]] += gcols[:, :, :, :, i, j].transpose(
                0, 3, 1, 2)
    return gx[:, :, ph : ph + h, pw : pw + w]


# ----- conv2d -------------------------------------------------------------------------------------


def _conv_rule(x, w, *, stride, padding, dilation):
    if len(x.shape) != 4 or len(w.shape) != 4:
        raise ValueError(f"conv2d expects NCHW input and OIHW weight, got {x.shape} and {w.shape}")
    if x.shape[1] != w.shape[1]:
        raise ValueError(
            f"conv2d: input has {x.shape[1]} channels but the weight expects {w.shape[1]}"
        )
    oh, ow = _hw_out(x.shape, w.shape[2:], stride, padding, dilation)
    return (x.shape[0], w.shape[0], oh, ow), np.result_type(x.dtype, w.dtype)


@primitive("conv2d", C, _conv_rule)
def conv2d(xp, x, w, *, stride, padding, dilation):
    n, o = x.shape[0], w.shape[0]
    cols, (oh, ow) = _cols(xp, x, w.shape[2:], stride, padding, dilation)
    out = cols @ w.reshape(o, -1).T
    return out.reshape(n, oh, ow, o).transpose(0, 3, 1, 2)


@conv2d.defvjp
def _conv2d_vjp(g, y, x, w, *, stride, padding, dilation, needs):
    kw = dict(stride=stride, padding=padding, dilation=dilation)
    gx = conv2d_grad_input(g, w, x_shape=x.shape, **kw) if needs[0] else None
    gw = conv2d_grad_weight(g, x, w_shape=w.shape, **kw) if needs[1] else None
    return gx, gw


def _grad_input_rule(g, w, *, x_shape, stride, padding, dilation):
    return tuple(x_shape), g.dtype


@primitive("conv2d_grad_input", C, _grad_input_rule)
def conv2d_grad_input(xp, g, w, *, x_shape, stride, padding, dilation):
    n, o, oh, ow = g.shape
    c, kh, kw = w.shape[1:]
    g2 = g.transpose(0, 2, 3, 1).reshape(n * oh * ow, o)
    gcols = (g2 @ w.reshape(o, c * kh * kw)).reshape(n, oh, ow, c, kh, kw)
    return _col2im(xp, gcols, x_shape, (kh, kw), stride, padding, dilation, (oh, ow))


@conv2d_grad_input.defvjp
def _conv2d_grad_input_vjp(gg, y, g, w, *, x_shape, stride, padding, dilation, needs):
    kw = dict(stride=stride, padding=padding, dilation=dilation)
    dg = conv2d(gg, w, **kw) if needs[0] else None
    dw = conv2d_grad_weight(g, gg, w_shape=w.shape, **kw) if needs[1] else None
    return dg, dw


def _grad_weight_rule(g, x, *, w_shape, stride, padding, dilation):
    return tuple(w_shape), g.dtype


@primitive("conv2d_grad_weight", C, _grad_weight_rule)
def conv2d_grad_weight(xp, g, x, *, w_shape, stride, padding, dilation):
    o = w_shape[0]
    cols, _ = _cols(xp, x, w_shape[2:], stride, padding, dilation)
    g2 = g.transpose(1, 0, 2, 3).reshape(o, -1)
    return (g2 @ cols).reshape(w_shape)


@conv2d_grad_weight.defvjp
def _conv2d_grad_weight_vjp(gg, y, g, x, *, w_shape, stride, padding, dilation, needs):
    kw = dict(stride=stride, padding=padding, dilation=dilation)
    dg = conv2d(x, gg, **kw) if needs[0] else None
    dx = conv2d_grad_input(g, gg, x_shape=x.shape, **kw) if needs[1] else None
    return dg, dx


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
    tie rule): each window routes its gradient to exactly one element."""
    taken = xp.zeros(y.shape, dtype=bool)
    for i, j, view in _pool_slices(xp, x, kernel, stride, padding, -np.inf):
        mask = view == y
        mask &= ~taken
        taken |= mask
        yield i, j, mask


@primitive("max_pool2d", C, _pool_rule)
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


@primitive("max_pool2d_grad", C, _pool_grad_rule)
def max_pool2d_grad(xp, g, x, y, *, kernel, stride, padding):
    """Route each window's gradient to its first maximum, like PyTorch (y = max_pool2d(x))."""
    n, c, h, w = x.shape
    (ph, pw), (oh, ow) = padding, g.shape[2:]
    gx = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=g.dtype)
    for i, j, mask in _first_max_masks(xp, x, y, kernel, stride, padding):
        gx[:, :, i : i + stride[0] * (oh - 1) + 1 : stride[0],
           j : j + stride[1] * (ow - 1) + 1 : stride[1]] += g * mask
    return gx[:, :, ph : ph + h, pw : pw + w]


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


@primitive("avg_pool2d", C, _pool_rule)
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
    n, c, oh, ow = g.shape
    share = (g / (kernel[0] * kernel[1])).transpose(0, 2, 3, 1)
    gcols = xp.broadcast_to(share[..., None, None], (n, oh, ow, c, kernel[0], kernel[1]))
    return _col2im(xp, gcols, x_shape, kernel, stride, padding, (1, 1), (oh, ow))


@avg_pool2d_grad.defvjp
def _avg_pool2d_grad_vjp(gg, y, g, *, x_shape, kernel, stride, padding):
    return (avg_pool2d(gg, kernel=kernel, stride=stride, padding=padding),)
