"""How a photo became the model's input, and the way back to the photo's own pixels.

Every model pipeline mmcam runs (ultralytics' letterbox, an HF image processor's resize /
crop / pad, torchvision's weights transforms) maps a photo of ``H × W`` pixels to an input
of ``h × w`` by a per-axis scale and an offset::

    x_input = x_photo · scale_x + offset_x        y_input = y_photo · scale_y + offset_y

(letterbox: offsets are the top / left padding; a centre crop: negative offsets). A
:class:`Frame` records those facts; boxes and maps go back through its inverse, so
everything a task returns is in the photo's coordinates. Maps are resampled at the photo's
pixel centres: the photo's region of the input (inside any letterbox padding) is cropped and
resized to the photo; a centre crop is undone by sampling, zero outside the model's view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["Frame"]


@dataclass(frozen=True)
class Frame:
    """``photo`` (H, W) → ``input`` (h, w): ``scale`` (sy, sx), ``offset`` (oy, ox) in input pixels."""

    photo: tuple[int, int]
    input: tuple[int, int]
    scale: tuple[float, float]
    offset: tuple[float, float] = (0.0, 0.0)
    pipeline: str = "resize"

    @classmethod
    def resize(cls, photo: tuple[int, int], input: tuple[int, int], pipeline: str = "resize") -> Frame:
        """The whole photo stretched (or kept, for equal sizes) to ``input``."""
        (ph, pw), (ih, iw) = photo, input
        return cls((int(ph), int(pw)), (int(ih), int(iw)), (ih / ph, iw / pw), (0.0, 0.0), pipeline)

    @classmethod
    def resize_crop(cls, photo: tuple[int, int], resized: tuple[int, int], crop: tuple[int, int], pipeline: str) -> Frame:
        """Resized to ``resized`` (h, w), then the centre ``crop`` (h, w) taken — torchvision's
        ``CenterCrop`` offsets (``int(round((h - ch) / 2))``)."""
        (ph, pw), (rh, rw), (ch, cw) = photo, resized, crop
        top, left = int(round((rh - ch) / 2.0)), int(round((rw - cw) / 2.0))
        return cls((int(ph), int(pw)), (int(ch), int(cw)), (rh / ph, rw / pw), (-float(top), -float(left)), pipeline)

    def boxes_to_photo(self, boxes: torch.Tensor) -> torch.Tensor:
        """``(K, 4)`` xyxy boxes in input pixels → photo pixels, clipped to the photo."""
        (sy, sx), (oy, ox) = self.scale, self.offset
        out = (boxes - boxes.new_tensor((ox, oy, ox, oy))) / boxes.new_tensor((sx, sy, sx, sy))
        h, w = self.photo
        return torch.stack((out[:, 0].clamp(0, w), out[:, 1].clamp(0, h), out[:, 2].clamp(0, w), out[:, 3].clamp(0, h)), 1)

    def maps_to_photo(self, maps: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
        """``(K, h', w')`` maps covering the model input (any resolution) → ``(K, H, W)`` on
        the photo; each map rescaled to [0, 1] again (its peak may have been in the padding)."""
        if maps.shape[0] == 0:
            return maps.new_zeros((0, *self.photo))
        sampled = self._sample(maps.float()[None], mode)[0]
        if mode == "nearest":
            return sampled
        low = sampled.flatten(1).amin(1)[:, None, None]
        high = sampled.flatten(1).amax(1)[:, None, None]
        # torch.where(high > low, (sampled - low) / (high - low), 0) without a photo-sized select
        scaled = (sampled - low).div_((high - low).clamp(min=1e-12))
        return scaled.masked_fill_(~(high > low), 0.0)

    def logits_to_photo(self, logits: torch.Tensor) -> torch.Tensor:
        """``(B, C, h', w')`` class logits over the input → ``(B, C, H, W)`` over the photo (bilinear)."""
        return self._sample(logits.float(), "bilinear")

    def _sample(self, x: torch.Tensor, mode: str) -> torch.Tensor:
        kwargs = {} if mode == "nearest" else {"align_corners": False}
        (ph, pw), (ih, iw), (sy, sx), (oy, ox) = self.photo, self.input, self.scale, self.offset
        gh, gw = x.shape[-2:]
        if self.is_identity and (gh, gw) == self.photo:
            return x
        if oy >= 0 and ox >= 0:
            # the photo lies inside the input (a plain resize, letterbox padding, bottom/right
            # padding): crop its region on the map's grid and resize that to the photo, as
            # ultralytics' scale_masks and the processors' target_sizes post-processing do
            top, bottom = round(oy * gh / ih), round((oy + ph * sy) * gh / ih)
            left, right = round(ox * gw / iw), round((ox + pw * sx) * gw / iw)
            crop = x[..., max(top, 0) : max(bottom, top + 1), max(left, 0) : max(right, left + 1)]
            return F.interpolate(crop, size=self.photo, mode=mode, **kwargs)
        # the input is a crop of the photo: sample the input at the photo's pixel centres, zero
        # where the model saw nothing
        if (gh, gw) != (ih, iw):
            x = F.interpolate(x, size=(ih, iw), mode=mode, **kwargs)
        ys = (torch.arange(ph, dtype=torch.float32, device=x.device) + 0.5) * sy + oy
        xs = (torch.arange(pw, dtype=torch.float32, device=x.device) + 0.5) * sx + ox
        grid = torch.stack(torch.meshgrid(ys / ih * 2 - 1, xs / iw * 2 - 1, indexing="ij")[::-1], -1)[None].expand(x.shape[0], -1, -1, -1)
        sampled = F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=False)
        seen = ((ys >= 0) & (ys < ih))[:, None] & ((xs >= 0) & (xs < iw))[None, :]
        return sampled * seen.to(sampled.dtype)

    @property
    def is_identity(self) -> bool:
        return self.photo == self.input and self.offset == (0.0, 0.0)

    def to_meta(self) -> dict[str, Any]:
        """What ``meta["pipeline"]`` records: the input size, scale and padding / crop offset."""
        return {
            "name": self.pipeline,
            "photo_size": list(self.photo),
            "input_size": list(self.input),
            "scale": [round(float(v), 6) for v in self.scale],
            "offset": [round(float(v), 3) for v in self.offset],
        }
