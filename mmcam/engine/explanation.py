"""What the engine returns: :class:`Explanation` (maps, raw maps, scores, the resolved
targets) and :func:`detached`, the model output kept without its autograd graph."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Explanation", "detached"]


@dataclass
class Explanation:
    """Class activation maps for B images × K targets.

    ``maps``: ``(B, K, H, W)`` in [0, 1] at input resolution; ``raw``: ``(B, K, h, w)`` at
    layer resolution after ReLU (several layers: summed at the finest grid); ``scores``:
    ``(B, K)`` the explained scalars; ``output``: the model output, detached;
    ``resolved_targets``: each image's target callables (defaults filled in).
    """

    maps: torch.Tensor
    raw: torch.Tensor
    scores: torch.Tensor
    method: str
    layers: list[str]
    targets: list[list[str]]
    output: Any = None
    layer_raw: list[torch.Tensor] = field(default_factory=list)
    resolved_targets: list[list[Any]] = field(default_factory=list)

    def __repr__(self) -> str:
        b, k, h, w = self.maps.shape
        return f"Explanation(method={self.method!r}, layers={self.layers}, maps={b}x{k}x{h}x{w})"

    def _repr_html_(self) -> str:
        """Jupyter display: one colour-mapped map per image (row) and target (column), with
        the target's name and explained score."""
        import html

        from ..render.overlay import colorize, data_uri

        b, k, h, w = self.maps.shape
        scale = max(1, 128 // max(h, w, 1))
        rows = []
        for i in range(b):
            cells = []
            for j in range(k):
                name = self.targets[i][j] if i < len(self.targets) and j < len(self.targets[i]) else str(j)
                uri = data_uri(colorize(self.maps[i, j].detach().float().cpu().numpy()), scale)
                cells.append(
                    f'<figure style="display:inline-block;margin:4px;text-align:center"><img src="{uri}" '
                    f'style="image-rendering:pixelated"/><figcaption style="font-size:12px">{html.escape(str(name))} '
                    f"({float(self.scores[i, j]):.3g})</figcaption></figure>"
                )
            rows.append(f"<div>image {i}: {''.join(cells)}</div>")
        head = f"<b>{html.escape(self.method)}</b> @ {html.escape(', '.join(self.layers))} · {b}×{k} maps"
        return f"<div>{head}{''.join(rows)}</div>"


def detached(value: Any) -> Any:
    """A copy of a model output with every tensor detached (keeps no autograd graph)."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, Mapping):
        items = {k: detached(v) for k, v in value.items()}
        try:
            return type(value)(**items)
        except TypeError:
            return items
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(detached(v) for v in value))
    if isinstance(value, (list, tuple)):
        return type(value)(detached(v) for v in value)
    return value
