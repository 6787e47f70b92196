"""A YOLO box's class logit recomputed from its anchor's receptive field of the head's input.

The Detect head's class branch of level ``s`` (``cv3[s]``: stride-1 convolutions with "same"
padding and element-wise activations) maps the level's input ``feats[s]`` to logits; the
logit of anchor ``(row, col)`` depends only on the ``(2R+1) x (2R+1)`` window of ``feats[s]``
around it (``R`` = the sum of the convolutions' radii). Running the branch on that window
(clipped at the map's border, where the full map's zero padding is the window's too) gives
the same value, and its backward touches only the window instead of running the three
levels' dense class branches backwards with zeros — the logit
``raw["scores"][:, cls, anchor]`` it replaces reads one entry of the concatenation of all
levels. Equal in exact arithmetic; in floating point to a few ulps (the convolution kernels
sum in another order on a smaller map), tested in ``tests/adapters/test_yolo_local.py``.

A branch with anything else (a strided or dilated-unpadded conv, pooling, attention, an
unknown module) gives ``None``: the caller keeps the dense logit.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["branch_radius", "local_class_logits"]

_CONTAINERS = ("Sequential", "Conv", "DWConv")  # ultralytics blocks whose forward is act(bn(conv(x)))
_POINTWISE = (nn.BatchNorm2d, nn.Identity, nn.SiLU, nn.ReLU, nn.LeakyReLU, nn.Hardswish, nn.GELU, nn.Sigmoid)


def branch_radius(branch: nn.Module) -> int | None:
    """``R`` of a class branch made only of stride-1, same-padded convolutions and point-wise
    modules (``None`` otherwise)."""
    radius = 0
    for module in branch.modules():
        if isinstance(module, nn.Conv2d):
            k, d, s, p = module.kernel_size, module.dilation, module.stride, module.padding
            if isinstance(p, str) or s != (1, 1) or module.padding_mode != "zeros":
                return None
            if any(ki % 2 == 0 or pi != di * (ki - 1) // 2 for ki, di, pi in zip(k, d, p)):
                return None
            radius += max(di * (ki - 1) // 2 for ki, di in zip(k, d))
        elif not isinstance(module, _POINTWISE) and type(module).__name__ not in _CONTAINERS:
            return None
    return radius


def _class_branches(head: nn.Module) -> list[nn.Module] | None:
    if getattr(head, "cv4", None) is not None and type(head).__name__.startswith(("World", "YOLOE")):
        return None  # cv3 gives region embeddings, the logits are their contrast with the text (cv4)
    one2many = getattr(head, "one2many", None)
    branches = one2many.get("cls_head") if isinstance(one2many, dict) else getattr(head, "cv3", None)
    return list(branches) if branches is not None else None


def local_class_logits(head: nn.Module, output: Any, indices: list[int], classes: list[int]) -> torch.Tensor | None:
    """``(N, K)``: the class logit ``classes[k]`` of anchor ``indices[k]`` for every row of the
    eval output ``(y, raw)``, each from its window of ``raw["feats"]`` (``None`` when the head
    or output is not of the supported kind, or there is nothing to score: use ``raw["scores"]``)."""
    raw = output[1] if isinstance(output, (tuple, list)) and len(output) == 2 and isinstance(output[1], dict) else None
    feats = raw.get("feats") if raw is not None else None
    branches = _class_branches(head)
    if not indices or not feats or branches is None or len(branches) != len(feats) or getattr(head, "end2end", False):
        return None
    radii = [branch_radius(branch) for branch in branches]
    if any(r is None for r in radii):
        return None
    starts, total = [], 0
    for f in feats:
        starts.append(total)
        total += f.shape[-2] * f.shape[-1]
    windows: dict[int, torch.Tensor] = {}  # one window per distinct anchor, every class of it
    columns = []
    for anchor, cls in zip(indices, classes):
        if anchor not in windows:
            level = max(i for i, s in enumerate(starts) if s <= anchor)
            f, r = feats[level], radii[level]
            row, col = divmod(anchor - starts[level], f.shape[-1])
            top, left = max(row - r, 0), max(col - r, 0)
            window = f[:, :, top : row + r + 1, left : col + r + 1]
            windows[anchor] = branches[level](window)[:, :, row - top, col - left]
        columns.append(windows[anchor][:, cls])
    # every level stays on the graph (zero gradient, not None, where no box reads it), as with
    # the dense logits: a hooked level no kept box uses is not "off the path"
    anchor = sum(f.flatten(1)[:, :1].sum(1) * 0 for f in feats)
    return torch.stack(columns, 1) + anchor[:, None]
