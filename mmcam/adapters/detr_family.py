"""More HF DETR-family detectors: Deformable DETR, DAB-DETR, D-FINE, RT-DETRv2, LW-DETR, RF-DETR, YOLOS.

They run through :class:`mmcam.adapters.detr.DetrFamily` (kept queries decided exactly as the
image processor's ``post_process_object_detection`` decides them); this module holds what
differs per family:

* **scoring** (:data:`SCORING`), the rule of the processor each checkpoint ships with:

  - ``softmax`` (YOLOS, ``YolosImageProcessor``): ``p = softmax(logits)``, the last
    ("no object") class dropped, ``score, class = max p[:, :-1]``, kept where ``score > t``;
  - ``sigmoid-top100`` (Deformable DETR and LW-DETR with ``DeformableDetrImageProcessor``,
    DAB-DETR with ``ConditionalDetrImageProcessor``): ``p = sigmoid(logits)`` flattened over
    ``query x class``, top ``k = min(100, Q * C)``, ``query = flat // C``, ``class = flat % C``,
    kept where ``score > t``;
  - ``sigmoid-topq`` (D-FINE and RT-DETRv2 with ``RTDetrImageProcessor``, RF-DETR with
    ``RfDetrImageProcessor``): the same with ``k = Q`` (the number of queries).

* **normalisation** without a processor (:func:`normalisation`): RT-DETR-style processors only
  rescale to [0, 1]; the others subtract the ImageNet mean and divide by its std.

* **default layers** (:func:`layers_and_reshape`), by structure from one probing forward: the
  last parametrised module whose output is a spatial ``(B, C, h, w)`` map of the input, and
  its parallel siblings when it is one branch of a ``ModuleList`` (the per-level projections
  feeding the transformer: Deformable DETR's ``model.input_proj.*``, D-FINE's / RT-DETRv2's
  ``model.decoder_input_proj.*``, LW-DETR's multi-scale projector, RF-DETR's projector),
  maps fused. DAB-DETR keeps DETR's rule (its single-level encoder; see
  :mod:`mmcam.adapters.detr`). YOLOS (a ViT whose detection tokens come last): the input of
  the last encoder layer's attention (``layernorm_before``; the last layer's *output* patch
  tokens are read by no detection token, so their gradient is zero), the ``1 + h * w``
  leading tokens folded into the ``(H / p, W / p)`` patch grid, the detection tokens dropped.

A Deformable DETR encoder layer given as ``layers=`` outputs the levels' tokens flattened one
after another, ``(B, sum_l h_l * w_l, d)``; :class:`LevelTokens` folds one level's tokens
(the finest by default) into its ``(h_l, w_l)`` grid, read from the same probing forward.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..reshape import NCHW, Reshape, Tokens

__all__ = ["SCORING", "normalisation", "layers_and_reshape", "probe_layers", "LevelTokens", "YOLOS_LIKE"]

#: class name -> how the image processor of that family scores queries
SCORING = {
    "DeformableDetrForObjectDetection": "sigmoid-top100",
    "DabDetrForObjectDetection": "sigmoid-top100",
    "LwDetrForObjectDetection": "sigmoid-top100",
    "DFineForObjectDetection": "sigmoid-topq",
    "RTDetrV2ForObjectDetection": "sigmoid-topq",
    "RfDetrForObjectDetection": "sigmoid-topq",
    "YolosForObjectDetection": "softmax",
}
_RESCALE_ONLY = ("DFineForObjectDetection", "RTDetrV2ForObjectDetection")
_DETR_RULE = ("DabDetrForObjectDetection",)  # default layers as DETR / Conditional DETR
YOLOS_LIKE = ("YolosForObjectDetection",)


def _name(model: Any) -> str | None:
    for cls in type(model).__mro__:
        if cls.__name__ in SCORING:
            return cls.__name__
    return None


def normalisation(model: Any) -> str | None:
    """``"rescale"`` (pixels / 255 only), ``"imagenet"`` (also ImageNet mean / std) for a family
    of this module, ``None`` for any other model (the caller's own rule applies)."""
    name = _name(model)
    if name is None:
        return None
    return "rescale" if name in _RESCALE_ONLY else "imagenet"


def layers_and_reshape(model: nn.Module, inputs: Any, layers: Any) -> "tuple[Any, Any] | None":
    """The layers to hook (the user's, else this family's default) and the reshape, or ``None``
    for a model this module does not define defaults for (see the module docstring)."""
    name = _name(model)
    if name is None or name in _DETR_RULE:
        return None
    from ..engine.layers import per_layout

    chosen, reshape = per_layout(model, inputs, _probe)
    return (chosen if layers is None else layers), reshape


def _probe(model: nn.Module, batch: Any) -> tuple[list[str], Reshape]:
    from ..engine.layers import probe, spatial_maps

    size = batch.spatial_size
    seen = probe(model, batch)
    if _name(model) in YOLOS_LIKE:
        return _yolos(model, size)
    spatial = spatial_maps(seen, size)
    if not spatial:
        raise InputError(f"found no spatial feature map in {type(model).__name__}; pass layers= (a name from model.named_modules())")
    levels = _encoder_levels(seen, size)
    reshape: Any = LevelTokens(levels) if levels else "auto"
    into_decoder = getattr(getattr(model, "model", None), "decoder_input_proj", None)
    if isinstance(into_decoder, nn.ModuleList):  # D-FINE / RT-DETRv2: hooked even where they are identities
        return [f"model.decoder_input_proj.{child}" for child, _ in into_decoder.named_children()], reshape
    last = spatial[-1][0]
    names = {n for n, _ in spatial}
    chosen = [last]
    parts = last.split(".")
    for depth in range(len(parts) - 1, 0, -1):  # the innermost ModuleList holding the last map
        parent_name = ".".join(parts[:depth])
        if isinstance(model.get_submodule(parent_name), nn.ModuleList):
            suffix = ".".join(parts[depth + 1 :])
            branches = [f"{parent_name}.{child}" + (f".{suffix}" if suffix else "") for child, _ in model.get_submodule(parent_name).named_children()]
            chosen = [b for b in branches if b in names] or [last]
            break
    return chosen, reshape


probe_layers = _probe  # the structural default of a model outside :data:`SCORING` (Grounding DINO)


def _encoder_levels(seen: list, size: Any) -> list[tuple[int, int]]:
    """Deformable DETR: the ``(h_l, w_l)`` of the per-level maps flattened into the encoder's
    tokens (the ``ModuleList`` branches named ``input_proj.*``), in level order."""
    from ..reshape import _consistent

    return [
        (int(shape[2]), int(shape[3]))
        for n, _, shape, calls, plain in seen
        if plain and len(shape) == 4 and n.rpartition(".")[0].endswith("input_proj") and (size is None or _consistent(shape[2], shape[3], size))
    ]


def _yolos(model: nn.Module, size: Any) -> tuple[list[str], Reshape]:
    config = model.config
    patch = config.patch_size if isinstance(config.patch_size, int) else config.patch_size[0]
    last = len(model.vit.encoder.layer) - 1
    grid = None if size is None else (size[0] // patch, size[1] // patch)
    return [f"vit.encoder.layer.{last}.layernorm_before"], Tokens(prefix=1, grid=grid, patch_size=patch)


class LevelTokens(Reshape):
    """Maps as they are (``NCHW``); multi-level encoder tokens ``(B, sum h_l * w_l, d)`` (levels
    one after another, as Deformable DETR flattens them) give level ``level``'s tokens folded
    into its ``(h_l, w_l)`` grid (level 0, the finest, by default)."""

    channel_dim = 1

    def __init__(self, levels: list[tuple[int, int]], level: int = 0):
        self.levels, self.level = [tuple(v) for v in levels], level

    def for_tensor(self, t: torch.Tensor, input_size: "tuple[int, int] | None") -> Reshape:
        if t.ndim == 4:
            return NCHW()
        total = sum(h * w for h, w in self.levels)
        if t.ndim == 3 and t.shape[1] == total:
            start = sum(h * w for h, w in self.levels[: self.level])
            return Tokens(prefix=start, grid=self.levels[self.level])
        raise InputError(
            f"a layer with output {tuple(t.shape)} is not spatial: the encoder's tokens are the levels "
            f"{' + '.join(f'{h}x{w}' for h, w in self.levels)} = {total} per image (decoder layers hold queries, "
            "not positions). Hook a backbone stage, an input projection or an encoder layer"
        )

    def __call__(self, t: torch.Tensor, input_size: "tuple[int, int] | None") -> torch.Tensor:
        return self.for_tensor(t, input_size)(t, input_size)
