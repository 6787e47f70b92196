"""Pixel-space explainers composed on the engine: Guided Backpropagation and Guided Grad-CAM.

Guided Backpropagation (Springenberg et al., ICLR-W 2015, https://arxiv.org/abs/1412.6806)
passes back through every ReLU only positive gradients at positive inputs:
``R_l = 1[x_l > 0] · 1[R_{l+1} > 0] · R_{l+1}``. Guided Grad-CAM (Selvaraju et al. 2017)
multiplies it with the upsampled Grad-CAM map: ``G ⊙ up(L^k)``, fine-grained and
class-discriminative.

Guided Backprop is applied through per-call forward hooks on ``nn.ReLU`` modules (no
module is swapped); ReLUs called functionally (``F.relu``) keep their plain gradient.
Known to fail the model-randomisation sanity check (Adebayo et al. 2018): it largely
reconstructs the image whatever the weights; mmcam's metrics report that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import GradientError, InputError
from .combine import normalize
from .core import CAM
from .gradients import batched_grads, looped_grads
from .guard import model_lock, prepare_inputs
from .hooks import frozen_parameters
from .inputs import Inputs
from .targets import TargetSet

__all__ = ["GuidedBackprop", "GuidedGradCAM", "PixelExplanation"]


@dataclass
class PixelExplanation:
    """``pixels``: ``(B, K, C, H, W)`` input-space attributions; ``maps``: ``(B, K, H, W)``
    their channel-wise max of absolute values scaled to [0, 1]; ``scores``: ``(B, K)``."""

    pixels: torch.Tensor
    maps: torch.Tensor
    scores: torch.Tensor
    method: str


class _GuidedReLUGrad(torch.autograd.Function):
    """Identity forward; backward keeps gradient only where it and the ReLU output are > 0."""

    @staticmethod
    def forward(ctx, out: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(out)
        return out.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (out,) = ctx.saved_tensors
        return grad.clamp_min(0) * (out > 0).to(grad.dtype)


class GuidedBackprop:
    """Guided Backpropagation of every target to the input image, from one forward."""

    def __init__(self, model: nn.Module):
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model

    def __call__(self, inputs: Any, targets: Any = None) -> PixelExplanation:
        batch = prepare_inputs(Inputs(inputs), self.model)
        image = batch.image
        if image is None or image.ndim != 4:
            raise InputError("guided backprop needs an image tensor (B, C, H, W) as input or under 'pixel_values'")
        x = image.detach().clone().requires_grad_()
        rows = torch.arange(batch.batch_size)
        leaf_inputs = batch.take(rows, image=x)
        targets_set = TargetSet(targets, batch.batch_size)
        relus = [m for m in self.model.modules() if isinstance(m, nn.ReLU)]
        handles = []
        with model_lock(self.model), frozen_parameters(self.model):
            try:
                for relu in relus:
                    handles.append(relu.register_forward_hook(lambda m, a, out: _GuidedReLUGrad.apply(out)))
                with torch.enable_grad():
                    output = leaf_inputs.run(self.model)
                    if not targets_set.resolved:
                        targets_set.resolve_default(output)
                    scores = targets_set.scores(output)
                    if not scores.requires_grad:
                        raise GradientError("the scores do not depend on the input image (no_grad or detached output)")
                    grads = (batched_grads(scores, [x]) if scores.shape[1] > 1 else looped_grads(scores, [x]))[0]
            finally:
                for handle in handles:
                    handle.remove()
        pixels = grads.transpose(0, 1)  # (B, K, C, H, W)
        return PixelExplanation(pixels, normalize(pixels.abs().amax(2)), scores.detach(), "guided-backprop")


class GuidedGradCAM:
    """Guided Grad-CAM: Guided Backprop ⊙ the upsampled map of a CAM method (default Grad-CAM)."""

    def __init__(self, model: nn.Module, layers: Any = None, method: str = "gradcam", **cam_kwargs: Any):
        self.cam = CAM(model, layers, method=method, **cam_kwargs)
        self.guided = GuidedBackprop(model)

    def __call__(self, inputs: Any, targets: Any = None) -> PixelExplanation:
        cam = self.cam(inputs, targets)
        guided = self.guided(inputs, cam.resolved_targets)
        pixels = guided.pixels * cam.maps[:, :, None]
        return PixelExplanation(pixels, normalize(pixels.abs().amax(2)), cam.scores, f"guided-{cam.method}")
