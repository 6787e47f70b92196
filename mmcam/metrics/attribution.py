"""Non-CAM attribution baselines from captum (optional dependency, ``pip install mmcam[bench]``),
run on the same ground truth beside the CAM methods: occlusion, vanilla gradients, SmoothGrad,
Integrated Gradients and KernelSHAP. A thin adapter: captum computes, mmcam turns each
attribution into a map ``(H, W)`` in [0, 1] (``|a|`` summed over channels, divided by its max).

``score_fn(images (N, C, H, W)) -> (N, K)`` is the same function the faithfulness metrics use,
but it must keep autograd on for the gradient methods (do not wrap it in ``no_grad``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import InputError

__all__ = ["ATTRIBUTIONS", "attribution_maps", "forward_count"]

#: name -> short description (the cost column of the evaluation table counts forwards).
ATTRIBUTIONS = {
    "occlusion": "captum Occlusion: a zero patch (1/8 of the side) slid at stride 1/16",
    "saliency": "captum Saliency: |d score / d input| (Simonyan et al. 2014)",
    "smoothgrad": "captum NoiseTunnel(Saliency), 16 samples, sigma 0.15 of the input range",
    "integrated-gradients": "captum IntegratedGradients, 32 steps from a zero input",
    "kernelshap": "captum KernelShap over an 8x8 grid of superpixels, 200 samples",
}


def _captum():
    try:
        import captum.attr as attr
    except ImportError:
        raise InputError("attribution baselines need captum: pip install 'mmcam[bench]' (or pip install captum)") from None
    return attr


def _geometry(h: int, w: int) -> tuple[int, int]:
    window = max(2, min(h, w) // 8)
    return window, max(1, window // 2)


def forward_count(name: str, h: int, w: int) -> int:
    """Forward passes one item's attribution costs (Grad-CAM: 1 forward + 1 backward)."""
    window, stride = _geometry(h, w)
    return {
        "occlusion": ((h - window) // stride + 1) * ((w - window) // stride + 1) + 1,
        "saliency": 1,
        "smoothgrad": 16,
        "integrated-gradients": 32,
        "kernelshap": 200,
    }[name]


def attribution_maps(
    name: str, score_fn: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, items: int, *, seed: int = 0, batch_size: int = 64
) -> torch.Tensor:
    """Maps ``(K, H, W)`` in [0, 1] of captum method ``name`` for items ``0..K-1`` of ``image``
    ``(C, H, W)``."""
    if name not in ATTRIBUTIONS:
        raise InputError(f"unknown attribution {name!r}; choose from {', '.join(ATTRIBUTIONS)}")
    attr = _captum()
    c, h, w = image.shape
    x = image[None].detach().clone()
    maps = []
    for k in range(items):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + k)
            a = _attribute(attr, name, score_fn, x, k, batch_size)
        heat = a.detach()[0].abs().sum(0)
        maps.append(heat / heat.max() if heat.max() > 0 else heat)
    return torch.stack(maps) if maps else image.new_zeros((0, h, w))


def _attribute(attr, name: str, score_fn, x: torch.Tensor, k: int, batch_size: int) -> torch.Tensor:
    c, h, w = x.shape[1:]
    if name == "occlusion":
        window, stride = _geometry(h, w)
        return attr.Occlusion(score_fn).attribute(
            x,
            target=k,
            sliding_window_shapes=(c, window, window),
            strides=(c, stride, stride),
            baselines=0.0,
            perturbations_per_eval=batch_size,
        )
    if name == "saliency":
        return attr.Saliency(score_fn).attribute(x.requires_grad_(), target=k, abs=True)
    if name == "smoothgrad":
        spread = float(x.max() - x.min()) * 0.15
        return attr.NoiseTunnel(attr.Saliency(score_fn)).attribute(
            x.requires_grad_(), target=k, nt_type="smoothgrad", nt_samples=16, nt_samples_batch_size=batch_size, stdevs=spread
        )
    if name == "integrated-gradients":
        return attr.IntegratedGradients(score_fn).attribute(x, target=k, n_steps=32, internal_batch_size=batch_size)
    cell_h, cell_w = max(1, h // 8), max(1, w // 8)
    rows = (torch.arange(h) // cell_h).clamp(max=7)
    cols = (torch.arange(w) // cell_w).clamp(max=7)
    mask = (rows[:, None] * 8 + cols[None, :]).expand(1, c, h, w)
    return attr.KernelShap(score_fn).attribute(x, target=k, feature_mask=mask, n_samples=200, perturbations_per_eval=batch_size)
