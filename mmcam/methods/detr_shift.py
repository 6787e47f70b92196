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

It is :class:`mmcam.methods.InputShifts` with the encoder's token as the shift cycle
(``patch="encoder"``), which :func:`mmcam.explain_detections` resolves from the model's encoder
grid; the engine runs the passes (:func:`mmcam.engine.shifts.mean_over_shifts`).
"""

from __future__ import annotations

from typing import ClassVar

from ..errors import MethodError
from .detr_relevance import FAMILIES
from .shifted import InputShifts

__all__ = ["ShiftedDetrCAM"]


class ShiftedDetrCAM(InputShifts):
    """A CAM rule (``base``, default ``"layercam"``) at a DETR's default layer, averaged over
    ``phases²`` sub-token input shifts (module docstring). Scores, output and ``raw`` are the
    unshifted pass's. ``phases=1`` is the ``base`` method. Cost: ``phases²`` forwards and
    batched backwards. DETR / Conditional DETR, through :func:`mmcam.explain_detections`
    (which knows the encoder's grid)."""

    name: ClassVar[str] = "layercam-detr-shift"  # type: ignore[misc]
    families: ClassVar[tuple[str, ...]] = FAMILIES

    def __init__(self, base: str = "layercam", phases: int = 3):
        from . import get

        inner = get(base)
        if getattr(inner, "attention", False):
            raise MethodError(f"ShiftedDetrCAM shifts a CAM rule at a layer; {base!r} reads attention maps: use 'gae-detr-shift'")
        if int(phases) < 1:
            raise MethodError(f"ShiftedDetrCAM needs phases >= 1 (shifts per axis; 1 is plain {base}), got {phases}")
        super().__init__(inner, phases)
        self.name = "layercam-detr-shift" if inner.name == "layercam" else f"{inner.name}-detr-shift"  # type: ignore[misc]
        self.patch = "encoder"

    def __repr__(self) -> str:
        return f"ShiftedDetrCAM(base={self.inner.name!r}, phases={self.phases})"
