"""The in-place min-max rescaling (normalize, Frame.maps_to_photo) gives the bits of the
torch.where formulation it replaced, constant and NaN maps included."""

from __future__ import annotations

import torch

from mmcam.adapters.frame import Frame
from mmcam.engine.combine import normalize


def _maps() -> torch.Tensor:
    torch.manual_seed(0)
    maps = torch.rand(1, 6, 40, 30)
    maps[0, 1] = 0.5  # constant
    maps[0, 2] = 0.0
    maps[0, 3, 4, 4] = float("nan")
    return maps


def test_normalize_equals_the_where_formula():
    maps = _maps()
    flat = maps.flatten(-2)
    low = flat.min(-1, keepdim=True).values
    span = flat.max(-1, keepdim=True).values - low
    expected = torch.where(span > 0, (flat - low) / span.clamp_min(torch.finfo(maps.dtype).tiny), torch.zeros_like(flat)).view_as(maps)
    assert torch.equal(normalize(maps).nan_to_num(-1.0), expected.nan_to_num(-1.0))


def test_maps_to_photo_equals_the_where_formula():
    frame = Frame((90, 60), (48, 32), (48 / 90, 32 / 60), (0.0, 0.0), "letterbox")
    maps = _maps()[0]
    sampled = frame._sample(maps[None], "bilinear")[0]
    low, high = sampled.flatten(1).amin(1)[:, None, None], sampled.flatten(1).amax(1)[:, None, None]
    expected = torch.where(high > low, (sampled - low) / (high - low).clamp(min=1e-12), torch.zeros_like(sampled))
    got = frame.maps_to_photo(maps)
    assert got.shape == (6, 90, 60) and torch.equal(got.nan_to_num(-1.0), expected.nan_to_num(-1.0))
