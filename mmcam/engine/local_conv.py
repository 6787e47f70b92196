"""Convolution backwards restricted to where the cotangent is non-zero (exact).

A box's score reads one anchor's window, so during its backward the cotangent ``dY`` reaching a
convolution is zero outside a rectangle that grows layer by layer. The gradient of a 2-D
convolution with respect to its input (stride ``s``, padding ``p``, dilation ``d``, kernel ``k``) is

    dX[i] = sum over (o, j) with o * s - p + j * d = i of W[:, :, j]^T dY[o],

so the output rows ``r0..r1`` (columns alike) with a non-zero ``dY`` reach only the input rows
``r0 * s - p .. r1 * s - p + (k - 1) * d``: outside them ``dX`` is 0 (every term is ``0 * W``, for
finite weights), inside it is the same backward of the cropped ``dY`` on an unpadded input of
that extent (its rows outside the map are the padding's, dropped). This module computes it so:
the kernels run on the rectangle instead of the map. Inside it the sums have the same terms;
the kernel may add them in another order (a few ulps; ``tests/engine/test_local_conv.py``).
A 1x1 stride-1 convolution's input gradient is a matrix product ``W^T dY``, run as one.

The engine routes the explained forward's ``conv2d`` calls through :class:`LocalConv` (a
``TorchFunctionMode``; the forward is the same ``conv2d`` call) when the input needs a gradient
and neither the weight nor the bias does, and turns the restriction on only for its looped,
one-target-at-a-time backward (``active``); otherwise the backward is the ordinary
``convolution_backward``, as autograd's own node runs it. Measured in ``docs/speed.md``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = ["LocalConv", "input_grad"]

# crop only when the rectangle covers at most this fraction of the output map (else the full kernel:
# measured on YOLOv8n / 11n at 640, cropping a larger rectangle saves less than its copies cost)
MAX_FRACTION = 0.5


def _format(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format


def _full(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, conf: tuple) -> torch.Tensor:
    stride, padding, dilation, groups = conf
    return torch.ops.aten.convolution_backward(grad, x, weight, None, stride, padding, dilation, False, [0, 0], groups, [True, False, False])[0]


def _pointwise(grad: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``W^T dY`` of a 1x1 stride-1 convolution without groups, as one matrix product over the
    cotangent's own layout (at one thread PyTorch runs a batch-1 1x1 convolution's backward on
    its reference kernel, ``_slow_conv2d_backward``, 1-2.5x slower; the same sums)."""
    w = weight.flatten(1)  # (O, C)
    if grad.is_contiguous(memory_format=torch.channels_last) and not grad.is_contiguous():
        return torch.matmul(grad.permute(0, 2, 3, 1), w).permute(0, 3, 1, 2)
    n, o, h, wd = grad.shape
    return torch.matmul(w.t(), grad.reshape(n, o, h * wd)).reshape(n, w.shape[1], h, wd)


def _plain(grad: torch.Tensor, x: torch.Tensor) -> bool:
    """Both in the contiguous (N, C, H, W) layout: the product's result then has the layout the
    ordinary kernel gives (a channels-last model's backward slows down on mixed layouts)."""
    return grad.is_contiguous() and x.is_contiguous()


def _is_pointwise(weight: torch.Tensor, conf: tuple) -> bool:
    stride, padding, _, groups = conf
    return tuple(weight.shape[-2:]) == (1, 1) and tuple(stride) == (1, 1) and tuple(padding) == (0, 0) and groups == 1


def input_grad(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, conf: tuple, crop: bool = True) -> torch.Tensor:
    """``dX`` of ``conv2d(x, weight, stride, padding, dilation, groups)`` (``conf``) for the
    cotangent ``grad``, on the rectangle where ``grad`` is non-zero (see the module docstring);
    ``crop=False``, or a rectangle over :data:`MAX_FRACTION` of the map: the ordinary
    ``convolution_backward``."""
    out = _restricted(grad, x, weight, conf) if crop else None
    if out is None:
        out = _pointwise(grad, weight) if crop and _plain(grad, x) and _is_pointwise(weight, conf) else _full(grad, x, weight, conf)
    return out


def _restricted(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, conf: tuple) -> torch.Tensor | None:
    """:func:`input_grad` on the cotangent's rectangle, ``None`` when it covers more than
    :data:`MAX_FRACTION` of the map."""
    stride, padding, dilation, groups = conf
    kh, kw = weight.shape[-2:]
    fmt = _format(x)
    peak = grad.abs().amax((0, 1))  # (Ho, Wo); a NaN stays NaN, and NaN != 0
    rows, cols = (peak.amax(1) != 0).nonzero().flatten(), (peak.amax(0) != 0).nonzero().flatten()
    if rows.numel() == 0:
        return torch.zeros_like(x, memory_format=fmt)
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    ho, wo = grad.shape[-2:]
    if (r1 - r0 + 1) * (c1 - c0 + 1) > MAX_FRACTION * ho * wo:
        return None
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    top, left = r0 * sh - ph, c0 * sw - pw  # the input rows / columns the rectangle reaches
    bottom, right = r1 * sh - ph + (kh - 1) * dh, c1 * sw - pw + (kw - 1) * dw
    part_grad = grad[:, :, r0 : r1 + 1, c0 : c1 + 1]
    if _is_pointwise(weight, conf):
        part = _pointwise(part_grad, weight)
    else:
        virtual = torch.empty((x.shape[0], x.shape[1], bottom - top + 1, right - left + 1), dtype=x.dtype, device=x.device, memory_format=fmt)
        part = _full(part_grad, virtual, weight, (stride, [0, 0], dilation, groups))
    h, w = x.shape[-2:]
    t, b, lo, ro = max(top, 0), min(bottom, h - 1), max(left, 0), min(right, w - 1)
    out = torch.zeros_like(x, memory_format=fmt)
    out[:, :, t : b + 1, lo : ro + 1] = part[:, :, t - top : b - top + 1, lo - left : ro - left + 1]
    return out


class _Conv(torch.autograd.Function):
    """``conv2d`` whose input gradient is :func:`input_grad` (weight and bias need none)."""

    @staticmethod
    def forward(x, weight, bias, stride, padding, dilation, groups, switch):
        return torch.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, _, stride, padding, dilation, groups, switch = inputs
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, dilation, groups)
        ctx.switch = switch

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        out = None
        # a node whose cotangent was dense once (a later backward of the loop, another target)
        # keeps the full kernel without looking: the look costs a pass over the cotangent
        if ctx.switch.on and not getattr(ctx, "dense", False):
            out = _restricted(grad, x, weight, ctx.conf)
            ctx.dense = out is None
        if out is None:  # the matrix product where cotangent and input are plain (N, C, H, W) arrays; else the ordinary kernel
            dense = ctx.switch.on and _plain(grad, x) and _is_pointwise(weight, ctx.conf)
            out = _pointwise(grad, weight) if dense else _full(grad, x, weight, ctx.conf)
        return out, None, None, None, None, None, None, None


def _pair(value: Any) -> list[int] | None:
    if isinstance(value, int):
        return [value, value]
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return list(value)
    return None


class LocalConv(TorchFunctionMode):
    """For the explained forward: ``conv2d`` calls whose input needs a gradient (and whose
    finite weight and bias need none) run as :class:`_Conv`; the restricted backward is on
    only inside :meth:`active` (the engine's looped backward). ``enabled=False``: a no-op."""

    def __init__(self, model: nn.Module | None = None, enabled: bool = True):
        super().__init__()
        self.on = False
        self.enabled = enabled and (model is None or any(isinstance(m, nn.Conv2d) for m in model.modules()))
        self.routed = 0

    def __enter__(self):
        return super().__enter__() if self.enabled else self

    def __exit__(self, *exc: Any):
        return super().__exit__(*exc) if self.enabled else None

    @contextmanager
    def active(self) -> Iterator[None]:
        """The restricted backward for the backward passes run inside."""
        self.on = True
        try:
            yield
        finally:
            self.on = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.conv2d and not kwargs and len(args) >= 2:
            routed = self._route(*args)
            if routed is not None:
                return routed
        return func(*args, **kwargs)

    def _route(self, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        conf = _pair(stride), _pair(padding), _pair(dilation)
        if (
            not isinstance(x, torch.Tensor)
            or x.dim() != 4
            or not x.requires_grad
            or not x.is_floating_point()
            or weight.requires_grad
            or (bias is not None and bias.requires_grad)
            or any(c is None for c in conf)
            or not isinstance(groups, int)
            or torch.is_grad_enabled() is False
            or not bool(torch.isfinite(weight).all())
        ):
            return None
        self.routed += 1
        return _Conv.apply(x, weight, bias, *conf, groups, self)
