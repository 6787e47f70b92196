"""Gradient-free methods that weight channels by re-running the model.

Both run extra forwards in batches of ``ctx.batch_size`` under ``torch.no_grad``:
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import MethodError
from .base import Context, WeightMethod

__all__ = ["ScoreCAM", "AblationCAM"]


def _chunks(total: int, size: int) -> list[torch.Tensor]:
    return list(torch.arange(total).split(max(1, size)))


class ScoreCAM(WeightMethod):
    """Score-CAM (Wang et al., CVPR-W 2020, https://arxiv.org/abs/1910.01279).

    Each channel, upsampled to the input and scaled to [0, 1], masks the image:
    ``H_c = norm(up(A_c))``; ``α^k = softmax_c(y^k(X ⊙ H_c))``; ``L^k = ReLU(Σ_c α^k_c A_c)``
    (the softmax over channels follows pytorch-grad-cam's formulation).
    """

    name = "scorecam"
    needs_grads = False

    def weights(self, acts: torch.Tensor, grads: torch.Tensor | None, ctx: Context) -> torch.Tensor:
        image = ctx.inputs.image
        if image is None or image.ndim != 4:
            raise MethodError(
                "scorecam masks the input image, but no (B, C, H, W) image tensor was found in the "
                "inputs; pass the image as the tensor input or under 'pixel_values'"
            )
        batch, channels, _ = acts.shape
        maps = acts.reshape(batch, channels, *ctx.grid)
        out = acts.new_zeros(batch, ctx.scores.shape[1], channels)
        bar = tqdm(total=batch * channels, desc="scorecam", unit="mask", disable=_quiet(ctx))
        for b in range(batch):
            masks = F.interpolate(maps[b : b + 1], size=image.shape[-2:], mode="bilinear", align_corners=False)[0]
            flat = masks.flatten(1)
            low, high = flat.min(1).values, flat.max(1).values
            masks = (masks - low[:, None, None]) / (high - low + 1e-8)[:, None, None]
            scores = []
            for chunk in _chunks(channels, ctx.batch_size):
                rows = torch.full((len(chunk),), b, dtype=torch.long)
                masked = image[b : b + 1] * masks[chunk.to(masks.device), None]
                scores.append(ctx.rescore(ctx.inputs.take(rows, image=masked), rows))
                bar.update(len(chunk))
            out[b] = torch.cat(scores).softmax(0).T
        bar.close()
        return out


class AblationCAM(WeightMethod):
    """Ablation-CAM (Desai & Ramaswamy, WACV 2020,
    https://openaccess.thecvf.com/content_WACV_2020/papers/Desai_Ablation-CAM_Visual_Explanations_for_Deep_Convolutional_Network_via_Gradient-free_Localization_WACV_2020_paper.pdf).

    Channel ``c`` is zeroed through an output hook (no module is swapped), one channel per
    row of a batch: ``α^k_c = (y^k - y^k_{A_c=0}) / y^k``; ``L^k = ReLU(Σ_c α^k_c A_c)``.
    """

    name = "ablationcam"
    needs_grads = False

    def weights(self, acts: torch.Tensor, grads: torch.Tensor | None, ctx: Context) -> torch.Tensor:
        batch, channels, _ = acts.shape
        out = acts.new_zeros(batch, ctx.scores.shape[1], channels)
        bar = tqdm(total=batch * channels, desc="ablationcam", unit="channel", disable=_quiet(ctx))
        for b in range(batch):
            base = ctx.scores[b].detach()
            ablated = []
            for chunk in _chunks(channels, ctx.batch_size):
                rows = torch.full((len(chunk),), b, dtype=torch.long)
                ablated.append(ctx.rescore(ctx.inputs.take(rows), rows, edit=_zero_channels(chunk, ctx.channel_dim)))
                bar.update(len(chunk))
            drop = base[None] - torch.cat(ablated)  # (C, K)
            safe = torch.where(base.abs() < 1e-7, torch.full_like(base, 1e-7), base)
            out[b] = (drop / safe).T
        bar.close()
        return out


def _zero_channels(channels: torch.Tensor, channel_dim: int):
    """An activation edit zeroing channel ``channels[j]`` in row ``j``."""

    def edit(_: int, t: torch.Tensor) -> torch.Tensor:
        if t.shape[0] != len(channels):
            raise MethodError(f"ablation expected {len(channels)} rows at the layer, got {t.shape[0]}")
        t = t.clone()
        rows = torch.arange(len(channels), device=t.device)
        dim = channel_dim % t.ndim
        index = (rows,) + (slice(None),) * (dim - 1) + (channels.to(t.device),)
        t[index] = 0
        return t

    return edit


def _quiet(ctx: Context) -> bool | None:
    return None if ctx.progress is None else not ctx.progress
