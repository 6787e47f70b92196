"""A CAM rule on a DETR, averaged over sub-token input shifts (``method="layercam-detr-shift"``).

DETR's box head reads the encoder's tokens — one per ``p × p`` input pixels (16 px on the zoo
DETR's 64 px input, a 4 × 4 grid) — so even a map taken at a finer backbone stage carries the
token grid: the gradient of a box's class logit reaches the stride-4 stage through the 16 px
tokens, and the map's maximum lands where the grid puts it. Moving the input by ``(dy, dx)``,
``dy, dx ∈ {round(k p / n)}``, ``k < n`` (``n = phases``, edges replicated; :mod:`mmcam.engine.shifts`),
explaining every moved input for the *same* boxes (query index and class of the unshifted pass),
moving each map back and averaging puts the token grid at ``n`` phases per axis::

    M_k = normalize( 1/n² Σ_{dy,dx} unshift_{dy,dx}( normalize(LayerCAM_k(shift_{dy,dx}(x))) ) )

LayerCAM: Jiang et al., *LayerCAM: Exploring Hierarchical Class Activation Maps for
Localization*, IEEE TIP 2021 — https://ieeexplore.ieee.org/document/9462463
(``Σ_c ReLU(∂y_k/∂A_c) ⊙ A_c`` at the family's default layer, the backbone's stride-4 stage).

Measured on the zoo DETR (docs/methods.md, ``bench/detr_shift.py``): pointing 0.894 / 0.857 on
two fresh samples (LayerCAM 0.659 / 0.643), but the map fails cascading randomization as LayerCAM
does (ρ with the fully re-initialised DETR 0.47 / 0.45): not the task default.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import torch

from ..errors import MethodError, TargetError
from .base import Method
from .detr_relevance import FAMILIES

__all__ = ["ShiftedDetrCAM"]


class ShiftedDetrCAM(Method):
    """A CAM rule (``base``, default ``"layercam"``) at a DETR's default layer, averaged over
    ``phases²`` sub-token input shifts (module docstring). Scores, output and ``raw`` are the
    unshifted pass's. ``phases=1`` is the ``base`` method. Cost: ``phases²`` forwards and
    batched backwards. DETR / Conditional DETR only; it picks its own layer (the task's
    default), so it takes no ``layers``."""

    name: ClassVar[str] = "layercam-detr-shift"
    attention: ClassVar[bool] = True  # runs its own passes (run_attention) at the family's default layer
    families: ClassVar[tuple[str, ...]] = FAMILIES

    def __init__(self, base: str = "layercam", phases: int = 3):
        from . import get

        if int(phases) < 1:
            raise MethodError(f"ShiftedDetrCAM needs phases >= 1 (shifts per axis; 1 is plain {base}), got {phases}")
        inner = get(base)
        if getattr(inner, "attention", False):
            raise MethodError(f"ShiftedDetrCAM shifts a CAM rule at a layer; {base!r} reads attention maps: use 'gae-detr-shift'")
        self.base, self.phases = inner.name, int(phases)

    def cam(self, acts, grads, ctx):  # the engine routes this method to run_attention
        raise MethodError(f"{self.name!r} runs its own shifted passes; run it through explain_detections or mmcam.CAM")

    def run_attention(self, model: Any, reshape: Any, grad_mode: str, batch: Any, targets: Any, size: "tuple[int, int] | None") -> Any:
        """What ``CAM(detr, method="layercam-detr-shift")(inputs, targets)`` returns."""
        from ..adapters.detr import layers_and_grid
        from ..engine.core import CAM
        from ..engine.shifts import mean_over_shifts, shift_grid

        names = [cls.__name__ for cls in type(model).__mro__]
        if not any(n in FAMILIES for n in names):
            raise MethodError(
                f"method {self.name!r} shifts the input by fractions of a DETR encoder token; it supports {', '.join(FAMILIES)}, got {type(model).__name__}"
            )
        if batch.image is None or batch.image.ndim != 4 or size is None:
            raise MethodError(f"method {self.name!r} shifts the image tensor (B, C, H, W); these inputs have none. Use method {self.base!r}")
        layers, grid = layers_and_grid(model, batch.value)
        cam = CAM(model, layers, method=self.base, reshape=reshape, grad_mode=grad_mode)
        if not targets.resolved:
            raise TargetError(f"method {self.name!r} needs box targets: use explain_detections or pass mmcam.targets.DetectionBoxScore(queries, classes)")
        per_image = [list(targets.items(i)) for i in range(batch.batch_size)]  # every pass scores the same boxes

        def explain(image: torch.Tensor) -> Any:
            value = image if batch.image_key is None else {**batch.value, batch.image_key: image}
            return cam(value, per_image, input_size=size)

        exp = explain(batch.image)
        if self.phases <= 1 or exp.maps.shape[1] == 0:
            return replace(exp, method=self.name)
        (H, W) = batch.spatial_size
        patch = (max(1, H // grid[0]), max(1, W // grid[1]))
        maps = mean_over_shifts(exp.maps, lambda image: explain(image).maps, batch.image, patch, self.phases)
        return replace(exp, maps=maps, method=self.name, layers=[*exp.layers, f"mean over input shifts {shift_grid(patch, self.phases)}"])

    def __repr__(self) -> str:
        return f"ShiftedDetrCAM(base={self.base!r}, phases={self.phases})"
