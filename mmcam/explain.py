"""Task-level explanations: one object per image with its maps, items and metadata.

:class:`TaskExplanation` is the base every task's result extends (classification here;
captions, VQA, detections, segmentation and actions in :mod:`mmcam.tasks`). It holds one
image, ``K`` maps (one per explained item: a class, a word, a box, an answer) and knows how
to save itself (overlay PNGs + a JSON summary) and to show itself in Jupyter.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from .errors import InputError
from .io import load_image
from .render.overlay import data_uri, overlay, save_png, to_uint8_image

__all__ = ["TaskExplanation", "prepare_image", "label_names", "map_stats"]


def map_stats(heat: torch.Tensor) -> dict[str, Any]:
    """Summary numbers of one ``(H, W)`` map in [0, 1]: peak position, mean, mass share of the
    top 10% of pixels."""
    flat = heat.flatten()
    peak = int(flat.argmax())
    total = float(flat.sum())
    return {
        "peak_xy": [peak % heat.shape[-1], peak // heat.shape[-1]],
        "mean": round(float(flat.mean()), 4),
        "top10_mass": round(_top_sum(flat, max(1, flat.numel() // 10)) / total, 4) if total > 0 else 0.0,
    }


def _top_sum(flat: torch.Tensor, n: int) -> float:
    """The sum of the ``n`` largest values, without sorting: with ``t`` the n-th largest, every
    value above ``t`` plus ``t`` for each of the remaining places (ties at ``t`` included).
    O(N) selection; a full sort of a 12-megapixel map took ~3 s."""
    if n >= flat.numel():
        return float(flat.sum())
    t = flat.kthvalue(flat.numel() - n + 1).values
    above = flat > t
    return float(flat[above].sum()) + (n - int(above.sum())) * float(t)


@dataclass
class TaskExplanation:
    """One image's explanation: ``maps[k]`` in [0, 1] at the image's size for ``items[k]``."""

    image: np.ndarray
    maps: torch.Tensor
    items: list[str]
    scores: torch.Tensor
    method: str
    layers: list[str]
    task: str = "task"
    meta: dict[str, Any] = field(default_factory=dict)

    def overlays(self, alpha: float = 0.5) -> list[np.ndarray]:
        """One uint8 RGB overlay per item."""
        return [overlay(self.image, m, alpha) for m in self.maps]

    def rendered(self, alpha: float = 0.5) -> list[np.ndarray]:
        """:meth:`overlays`, computed once for :meth:`save` and the report together (a dozen
        overlays of a 12-megapixel photo take tens of seconds); recomputed when ``maps`` or
        ``image`` is replaced or ``maps`` is changed in place."""
        return self._once("_rendered", (alpha,), lambda: self.overlays(alpha))

    def _map_stats(self) -> list[dict[str, Any]]:
        """:func:`map_stats` of each map, computed once for the JSON file, the run's summary and
        the report (recomputed when ``maps`` is replaced or changed in place)."""
        return self._once("_stats", (), lambda: [map_stats(m) for m in self.maps])

    def _once(self, name: str, key: tuple, compute: Any) -> Any:
        """``compute()``, kept under ``name`` until ``key``, ``maps``, ``image`` or the maps' in-place version changes."""
        key = (*key, getattr(self.maps, "_version", None))
        cache = self.__dict__.get(name)
        if cache is None or cache[0] != key or cache[1] is not self.maps or cache[2] is not self.image:
            cache = (key, self.maps, self.image, compute())
            self.__dict__[name] = cache
        return cache[3]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: items with scores and map statistics, method, layers, metadata."""
        return {
            "task": self.task,
            "method": self.method,
            "layers": list(self.layers),
            "image_size": list(self.image.shape[:2]),
            "items": [
                {"index": k, "label": label, "score": round(float(s), 6), **stats}
                for k, (label, stats, s) in enumerate(zip(self.items, self._map_stats(), self.scores))
            ],
            **_jsonable(self.meta),
        }

    def save(self, out_dir: "str | Path", stem: str = "explanation", scale: int = 1) -> list[Path]:
        """Write ``{stem}_{k}_{item}.png`` overlays and ``{stem}.json``; return the paths."""
        out = Path(out_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(f"cannot write to {str(out)!r}: {error.strerror}; pass a writable --out directory") from None
        paths = []
        for k, (label, img) in enumerate(zip(self.items, self.rendered())):
            paths.append(save_png(img, out / f"{stem}_{k:02d}_{_slug(label)}.png", scale))
        summary = self.to_dict()
        summary["files"] = [p.name for p in paths]
        json_path = out / f"{stem}.json"
        json_path.write_text(json.dumps(summary, indent=2))
        return paths + [json_path]

    def _repr_html_(self) -> str:
        cells = "".join(
            f'<figure style="display:inline-block;margin:4px;text-align:center">'
            f'<img src="{data_uri(img, _scale(img))}" style="image-rendering:pixelated"/>'
            f"<figcaption>{_escape(label)} ({float(s):.3g})</figcaption></figure>"
            for label, img, s in zip(self.items, self.overlays(), self.scores)
        )
        return f"<div><b>{self.task}</b> · {self.method} @ {', '.join(self.layers)}<br/>{cells}</div>"


def prepare_image(image: Any, processor: Any = None, size: "int | tuple[int, int] | None" = None) -> tuple[Any, np.ndarray]:
    """Model inputs and the photo for one image: a tensor ``(3, H, W)`` / ``(1, 3, H, W)`` as
    given; else ``processor`` (see :func:`mmcam.adapters.base.processor_prepare`) or ImageNet
    mean / std at the photo's size (after an optional resize to ``size``)."""
    from .adapters.base import imagenet_prepare, processor_prepare

    if isinstance(image, torch.Tensor) and processor is None:
        x = image if image.ndim == 4 else image[None]
        if x.ndim != 4 or x.shape[0] != 1:
            raise InputError(f"an image tensor must be (3, H, W) or (1, 3, H, W) (one image; a batch: mmcam.CAM), got {tuple(image.shape)}")
        shown = x[0].float()
        return x, to_uint8_image((shown - shown.min()) / (shown.max() - shown.min() + 1e-8))
    pil = load_image(image)
    if size is not None:
        pil = pil.resize((size, size) if isinstance(size, int) else (size[1], size[0]), Image.BILINEAR)
    prepared = processor_prepare(processor, pil) if processor is not None else imagenet_prepare(pil, None)
    return prepared.inputs, prepared.photo


def label_names(model: nn.Module, labels: Any) -> dict[int, str]:
    if isinstance(labels, dict):
        return {int(k): str(v) for k, v in labels.items()}
    if isinstance(labels, (list, tuple)):
        return dict(enumerate(map(str, labels)))
    id2label = getattr(getattr(model, "config", None), "id2label", None)
    if id2label:
        return {int(k): str(v) for k, v in id2label.items()}
    names = getattr(model, "labels", None)  # zoo torchvision models carry their label names
    return dict(enumerate(map(str, names))) if isinstance(names, (list, tuple)) else {}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:40] or "item"


def _scale(img: np.ndarray) -> int:
    return max(1, 192 // max(img.shape[:2]))


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return value
