"""Moving a photo by hand and its maps back, the references the ``-shift`` methods' tests compare
against (independent of :mod:`mmcam.engine.shifts`)."""

from __future__ import annotations

import numpy as np
import torch


def moved(photo: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """The photo moved dy rows down and dx columns right, its first row / column repeated."""
    h, w = photo.shape[:2]
    rows, cols = np.clip(np.arange(h) - dy, 0, None), np.clip(np.arange(w) - dx, 0, None)
    return np.ascontiguousarray(photo[rows][:, cols])


def back(maps: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Maps of a moved photo moved back, their last row / column repeated."""
    h, w = maps.shape[-2:]
    rows, cols = torch.clamp(torch.arange(h) + dy, max=h - 1), torch.clamp(torch.arange(w) + dx, max=w - 1)
    return maps[..., rows, :][..., cols]
