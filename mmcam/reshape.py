"""Turn a layer's activation into a spatial grid ``(B, C, h, w)``.

CNNs give ``NCHW`` maps, Swin-style models give channels-last ``NHWC`` maps and ViT-style
models give token sequences ``(B, N, D)`` with some prefix tokens (CLS, distillation,
registers) before ``h * w`` patch tokens. A *reshape* is a callable
``(tensor, input_size) -> (B, C, h, w)``; ``"auto"`` decides from facts: the model's
declared patch size and prefix-token count where it has them, else the input size
(a grid whose stride is the same along both axes), never a hard-coded grid.

Every reshape also names the *channel axis* of the raw layout (``channel_dim``), which
perturbation methods use to ablate one channel in the layer's own layout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .errors import InputError

__all__ = ["Reshape", "NCHW", "NHWC", "Tokens", "ScatterTokens", "Auto", "resolve"]

Size = tuple[int, int]


class Reshape:
    """Base: map a raw activation to ``(B, C, h, w)``."""

    channel_dim: int = 1

    def __call__(self, t: torch.Tensor, input_size: Size | None) -> torch.Tensor:
        raise NotImplementedError

    def for_tensor(self, t: torch.Tensor, input_size: Size | None) -> "Reshape":
        """The concrete reshape used for ``t`` (``Auto`` resolves itself here)."""
        return self


class NCHW(Reshape):
    """Channels-first maps (CNNs). 3-D ``(B, C, L)`` is treated as a ``1 x L`` grid."""

    channel_dim = 1

    def __call__(self, t: torch.Tensor, input_size: Size | None) -> torch.Tensor:
        if t.ndim == 4:
            return t
        if t.ndim == 3:
            return t.unsqueeze(2)
        raise InputError(f"NCHW reshape needs a 3-D or 4-D activation, got shape {tuple(t.shape)}")


class NHWC(Reshape):
    """Channels-last maps (torchvision Swin, ConvNeXt blocks): ``(B, h, w, C)``."""

    channel_dim = -1

    def __call__(self, t: torch.Tensor, input_size: Size | None) -> torch.Tensor:
        if t.ndim != 4:
            raise InputError(f"NHWC reshape needs a 4-D activation, got shape {tuple(t.shape)}")
        return t.permute(0, 3, 1, 2)


@dataclass
class Tokens(Reshape):
    """Token sequences ``(B, N, D)``: drop ``prefix`` tokens, fold the rest into ``grid``.

    Unset fields are derived: ``grid`` from the input size and ``patch_size`` (or, without a
    patch size, as the factorisation of ``N - prefix`` whose stride is equal along both
    axes of the input), ``prefix`` as ``N - h * w``.
    """

    prefix: int | None = None
    grid: Size | None = None
    patch_size: int | None = None
    channel_dim = -1

    def layout(self, n_tokens: int, input_size: Size | None) -> tuple[int, Size]:
        """Number of prefix tokens and the ``(h, w)`` grid for a sequence of ``n_tokens``."""
        if self.grid is not None:
            prefix = n_tokens - self.grid[0] * self.grid[1] if self.prefix is None else self.prefix
            return prefix, self.grid
        if input_size is not None and self.patch_size:
            grid = (input_size[0] // self.patch_size, input_size[1] // self.patch_size)
            prefix = n_tokens - grid[0] * grid[1]
            if 0 <= prefix and (self.prefix is None or prefix == self.prefix):
                return prefix, grid
        prefixes = [self.prefix] if self.prefix is not None else range(0, 17)
        fits = [(fit[0] + 0.002 * p, p, fit[1]) for p in prefixes if (fit := _grid_for(n_tokens - p, input_size))]
        if fits:
            _, prefix, grid = min(fits)
            return prefix, grid
        raise InputError(f"cannot fold {n_tokens} tokens into a grid for input size {input_size}: pass reshape=mmcam.reshape.Tokens(prefix=P, grid=(h, w))")

    def __call__(self, t: torch.Tensor, input_size: Size | None) -> torch.Tensor:
        if t.ndim != 3:
            raise InputError(f"token reshape needs (B, N, D), got shape {tuple(t.shape)}")
        prefix, (h, w) = self.layout(t.shape[1], input_size)
        if prefix < 0 or prefix + h * w > t.shape[1]:
            raise InputError(f"{t.shape[1]} tokens do not hold {prefix} prefix tokens and a {h}x{w} grid")
        patches = t[:, prefix : prefix + h * w]
        return patches.transpose(1, 2).reshape(t.shape[0], t.shape[2], h, w)


@dataclass
class ScatterTokens(Reshape):
    """Image tokens in any order: ``index[b, j]`` is the flat grid position (``row * w + col``)
    of token ``start + j`` of image b (e.g. ViLT, which shuffles its patches on every call)."""

    start: int
    index: torch.Tensor  # (B, N) long
    grid: Size
    channel_dim = -1

    def __call__(self, t: torch.Tensor, input_size: Size | None) -> torch.Tensor:
        if t.ndim != 3:
            raise InputError(f"token reshape needs (B, N, D), got shape {tuple(t.shape)}")
        n = self.index.shape[1]
        tokens = t[:, self.start : self.start + n].transpose(1, 2)  # (B', D, N)
        index = self.index.to(t.device)
        if tokens.shape[0] != index.shape[0]:  # gradients come as (K * B, ...): repeat the layout
            index = index.repeat(tokens.shape[0] // index.shape[0], 1)
        out = tokens.new_zeros(tokens.shape[0], tokens.shape[1], self.grid[0] * self.grid[1])
        out.scatter_(2, index[:, None, :].expand(-1, tokens.shape[1], -1), tokens)
        return out.view(tokens.shape[0], tokens.shape[1], *self.grid)


def _grid_for(n: int, input_size: Size | None) -> tuple[float, Size] | None:
    """``(mismatch, (h, w))`` for the ``h * w == n`` grid whose stride is most nearly equal
    along both input axes (``None`` if none is within 10%)."""
    if n <= 0:
        return None
    if input_size is None:
        side = round(n**0.5)
        return (0.0, (side, side)) if side * side == n else None
    height, width = input_size
    best: tuple[float, Size] | None = None
    for h in range(1, n + 1):
        if n % h:
            continue
        w = n // h
        sh, sw = height / h, width / w
        mismatch = abs(sh - sw) / max(sh, sw)
        if mismatch < 0.1 and (best is None or mismatch < best[0]):
            best = (mismatch, (h, w))
    return best


class Auto(Reshape):
    """Pick the layout from the tensor, the model's facts and the input size.

    * 3-D ``(B, N, D)``: tokens, with ``patch_size`` and prefix count from the model
      (HF ``config.patch_size``/``num_register_tokens``, torchvision ``patch_size``,
      timm ``num_prefix_tokens``) when it declares them;
    * 4-D: ``NCHW`` unless the input size says channels-last (the stride is consistent
      for ``(h, w) = dims 1, 2`` but not for dims 2, 3), or the model is known NHWC.
    """

    def __init__(self, model: nn.Module | None = None):
        self.facts = _model_facts(model) if model is not None else {}

    def for_tensor(self, t: torch.Tensor, input_size: Size | None) -> Reshape:
        if t.ndim == 3:
            return Tokens(prefix=self.facts.get("prefix"), patch_size=self.facts.get("patch_size"))
        if t.ndim == 4:
            if input_size is not None:
                nchw = _consistent(t.shape[2], t.shape[3], input_size)
                nhwc = _consistent(t.shape[1], t.shape[2], input_size)
                if nhwc and not nchw:
                    return NHWC()
                if nhwc and nchw and self.facts.get("channels_last"):
                    return NHWC()
            return NCHW()
        raise InputError(
            f"cannot make a spatial map from an activation of shape {tuple(t.shape)}: hook a "
            "layer with a (B, C, h, w), (B, h, w, C) or (B, N, D) output, or pass reshape="
        )

    def __call__(self, t: torch.Tensor, input_size: Size | None) -> torch.Tensor:
        return self.for_tensor(t, input_size)(t, input_size)


def _consistent(h: int, w: int, input_size: Size) -> bool:
    """True when a ``h x w`` grid covers the input with the same stride on both axes."""
    if h < 1 or w < 1:
        return False
    sh, sw = input_size[0] / h, input_size[1] / w
    return sh >= 1 and sw >= 1 and abs(sh - sw) / max(sh, sw) < 0.15


def _model_facts(model: nn.Module) -> dict:
    """Patch size, prefix-token count and layout declared by the model itself."""
    facts: dict = {}
    config = getattr(model, "config", None)
    vision = getattr(config, "vision_config", None) or getattr(config, "encoder", None) or config
    patch = getattr(vision, "patch_size", None) or getattr(model, "patch_size", None)
    if isinstance(patch, (tuple, list)):
        patch = patch[0] if patch[0] == patch[-1] else None
    if isinstance(patch, int):
        facts["patch_size"] = patch
    if hasattr(model, "num_prefix_tokens"):
        facts["prefix"] = int(model.num_prefix_tokens)
    elif vision is not None and getattr(vision, "model_type", "") in {"vit", "deit", "clip_vision_model", "beit", "dinov2"}:
        registers = int(getattr(vision, "num_register_tokens", 0) or 0)
        distilled = 1 if getattr(vision, "model_type", "") == "deit" else 0  # HF DeiT embeds CLS + distillation
        facts["prefix"] = 1 + registers + distilled
    name = type(model).__name__.lower()
    if "swin" in name and vision is None:
        facts["channels_last"] = True
    return facts


def resolve(spec: "str | Reshape | Callable | None", model: nn.Module) -> Reshape:
    """Turn a user's ``reshape=`` argument into a :class:`Reshape`."""
    if spec is None or spec == "auto":
        return Auto(model)
    if isinstance(spec, Reshape):
        return spec
    if isinstance(spec, str):
        table = {"nchw": NCHW, "nhwc": NHWC, "tokens": Tokens}
        if spec.lower() in table:
            return table[spec.lower()]()
        raise InputError(f"unknown reshape {spec!r}: pass 'auto', 'nchw', 'nhwc', 'tokens' or a callable")
    if callable(spec):
        return _Callable(spec)
    raise InputError(f"reshape must be 'auto', a name, a Reshape or a callable, got {type(spec).__name__}")


class _Callable(Reshape):
    def __init__(self, fn: Callable):
        self.fn = fn

    def __call__(self, t: torch.Tensor, input_size: Size | None) -> torch.Tensor:
        out = self.fn(t)
        if out.ndim != 4:
            raise InputError(f"the reshape callable must return (B, C, h, w), got {tuple(out.shape)}")
        return out
