"""Sub-stride input shifts for CNN CAMs: ``gradcam-shift``, ``layercam-shift`` (any ``NAME-shift``).

A CAM at a stride-``s`` layer has one value per ``s × s`` pixels; upsampled, its maximum
cannot sit inside an object smaller than about ``s`` pixels. Moving the input by
``round(k s / n)`` pixels (``k < n`` per axis), explaining each moved input with the same
targets, moving each map back and averaging gives the map at ``n`` phases of the grid — the
sub-patch shifts of ``gae-shift`` (:mod:`mmcam.engine.shifts`) with the layer's stride as the
patch::

    M = normalize( 1/n² Σ_{dy, dx} unshift_{dy,dx}( CAM(shift_{dy,dx}(x)) ) )

The per-layer rule is the wrapped method's (Grad-CAM: Selvaraju et al., ICCV 2017,
https://arxiv.org/abs/1610.02391; LayerCAM: Jiang et al., TIP 2021,
https://ieeexplore.ieee.org/document/9462463); the engine runs the ``n²`` passes
(:func:`mmcam.engine.shifts.mean_over_shifts`).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ..errors import MethodError
from .base import Context, Method

__all__ = ["InputShifts", "GradCAMShift", "LayerCAMShift"]


class InputShifts(Method):
    """``method`` averaged over ``phases²`` sub-stride input shifts (``phases=1``: the plain
    method, one pass). ``mmcam.CAM(model, "layer4", method=InputShifts("gradcam", phases=2))``
    or the names ``"gradcam-shift"`` / ``"layercam-shift"`` (3 phases, 9 passes). ``patch``:
    the input pixels ``(ph, pw)`` one shift cycle spans; default ``None``, the hooked layer's
    stride."""

    patch: "tuple[int, int] | str | None" = None

    def __init__(self, method: "str | Method" = "gradcam", phases: int = 3, patch: "tuple[int, int] | None" = None):
        from . import get

        self.inner = get(method)
        if getattr(self.inner, "attention", False) or isinstance(self.inner, InputShifts):
            raise MethodError(f"InputShifts wraps a CAM method (gradcam, layercam, ...); for attention maps use 'gae-shift', got {self.inner.name!r}")
        if int(phases) < 1:
            raise MethodError(f"InputShifts needs phases >= 1 (shifts per axis; 1 is the plain method), got {phases}")
        self.phases = int(phases)
        if patch is not None:
            self.patch = (int(patch[0]), int(patch[1]))
        self.name = f"{self.inner.name}-shift"  # type: ignore[misc]
        self.needs_grads = self.inner.needs_grads  # type: ignore[misc]

    def cam(self, acts: torch.Tensor, grads: torch.Tensor | None, ctx: Context) -> torch.Tensor:
        return self.inner.cam(acts, grads, ctx)

    def contributions(self, acts: torch.Tensor, grads: torch.Tensor | None, ctx: Context) -> torch.Tensor:
        return self.inner.contributions(acts, grads, ctx)

    def __repr__(self) -> str:
        patch = "" if self.patch is None else f", patch={self.patch!r}"
        return f"InputShifts({self.inner!r}, phases={self.phases}{patch})"


class GradCAMShift(InputShifts):
    """Grad-CAM averaged over 3 × 3 sub-stride input shifts (``method="gradcam-shift"``)."""

    name: ClassVar[str] = "gradcam-shift"

    def __init__(self, phases: int = 3):
        super().__init__("gradcam", phases)


class LayerCAMShift(InputShifts):
    """LayerCAM averaged over 3 × 3 sub-stride input shifts (``method="layercam-shift"``)."""

    name: ClassVar[str] = "layercam-shift"

    def __init__(self, phases: int = 3):
        super().__init__("layercam", phases)
