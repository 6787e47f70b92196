"""Gradient-weighted methods: Grad-CAM and its direct descendants.

With ``A`` the layer's activations ``(C, S)`` and ``g = ∂y^k/∂A`` for the k-th explained
scalar ``y^k``:
"""

from __future__ import annotations

import torch

from .base import ElementwiseMethod, WeightMethod

__all__ = ["GradCAM", "HiResCAM", "GradCAMElementwise", "GradCAMPlusPlus", "XGradCAM", "LayerCAM", "ODAM"]

EPS = 1e-7


class GradCAM(WeightMethod):
    """Grad-CAM (Selvaraju et al., ICCV 2017, https://arxiv.org/abs/1610.02391).

    ``α^k_c = (1/S) Σ_s g_{cs}``, ``L^k = ReLU(Σ_c α^k_c A_c)``.
    """

    name = "gradcam"

    def weights(self, acts, grads, ctx):
        return grads.mean(-1)


class HiResCAM(ElementwiseMethod):
    """HiResCAM (Draelos & Carin 2020, https://arxiv.org/abs/2011.08891).

    ``L^k = ReLU(Σ_c g_{cs} A_{cs})`` — the gradient multiplies each position, no averaging.
    """

    name = "hirescam"

    def contributions(self, acts, grads, ctx):
        return grads * acts[:, None]


class GradCAMElementwise(ElementwiseMethod):
    """Element-wise Grad-CAM (pytorch-grad-cam's variant of HiResCAM).

    ``L^k = Σ_c ReLU(g_{cs} A_{cs})``.
    """

    name = "gradcam-elementwise"

    def contributions(self, acts, grads, ctx):
        return torch.relu(grads * acts[:, None])


class GradCAMPlusPlus(WeightMethod):
    """Grad-CAM++ (Chattopadhyay et al., WACV 2018, https://arxiv.org/abs/1710.11063).

    With the exponential-output closed form:
    ``a_{cs} = g² / (2 g² + Σ_s' A_{cs'} g³)`` (0 where ``g = 0``),
    ``α^k_c = Σ_s a_{cs} ReLU(g_{cs})``, ``L^k = ReLU(Σ_c α^k_c A_c)``.
    """

    name = "gradcam++"

    def weights(self, acts, grads, ctx):
        g2 = grads.pow(2)
        g3 = g2 * grads
        total = acts.sum(-1)[:, None, :, None]
        alpha = g2 / (2 * g2 + total * g3 + EPS)
        alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
        return (alpha * torch.relu(grads)).sum(-1)


class XGradCAM(WeightMethod):
    """XGrad-CAM (Fu et al., BMVC 2020, https://arxiv.org/abs/2008.02312).

    ``α^k_c = Σ_s g_{cs} A_{cs} / (Σ_s A_{cs} + ε)``.
    """

    name = "xgradcam"

    def weights(self, acts, grads, ctx):
        return (grads * acts[:, None]).sum(-1) / (acts.sum(-1)[:, None] + EPS)


class LayerCAM(ElementwiseMethod):
    """LayerCAM (Jiang et al., IEEE TIP 2021, https://doi.org/10.1109/TIP.2021.3089943).

    ``L^k = ReLU(Σ_c ReLU(g_{cs}) A_{cs})``; reliable at shallow layers too, and the
    method of choice for fusing several layers.
    """

    name = "layercam"

    def contributions(self, acts, grads, ctx):
        return torch.relu(grads) * acts[:, None]


class ODAM(HiResCAM):
    """ODAM, object detector activation maps (Zhao & Chan, ICLR 2023,
    https://arxiv.org/abs/2304.06354; authors' code https://github.com/Cyang-Zhao/ODAM).

    For one detected instance and one of its predicted attributes ``y^p`` (its class score or
    a box coordinate), ``H^p = ReLU(Σ_c ∂y^p/∂A_c ⊙ A_c)``: the gradient weights every
    position of every channel (no spatial averaging), so the map stays on the evidence for
    *this* instance rather than for its class. The rule is HiResCAM's, element for element
    (the authors' ``relu((grad * fm).sum(1))``); what makes it ODAM is the target — the
    instance's own raw output: :func:`mmcam.explain_detections` explains each kept box's
    class logit (``attribute="score"``) or a coordinate of its box (``attribute="x0"`` ... ``"y1"``,
    :class:`mmcam.targets.DetectionBoxScore`). Maps of several feature levels (``layers=[...]``)
    are summed at the finest grid, as for every method.
    """

    name = "odam"
