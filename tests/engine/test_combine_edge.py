"""Bilinear upsampling past the outermost cell centres (``edge``): hand-computed values, the
interior equal to ``F.interpolate``, fusion by hand, and the YOLO families' choice."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mmcam
from mmcam.adapters.base import Family
from mmcam.engine.combine import _reflected_axis, fuse, normalize, upsample
from mmcam.errors import InputError

# cells [0, 1] to 8 pixels: pixel p samples u = (p + 1/2) / 4 - 1/2 = -3/8, -1/8, 1/8, ..., 11/8
REPLICATE = [0.0, 0.0, 0.125, 0.375, 0.625, 0.875, 1.0, 1.0]  # u clamped to [0, 1]
REFLECT = [0.375, 0.125, 0.125, 0.375, 0.625, 0.875, 0.875, 0.625]  # u mirrored: 3/8, 1/8, ..., 7/8, 5/8


def test_two_cells_by_hand():
    cells = torch.tensor([[[[0.0, 1.0]]]])
    assert upsample(cells, (1, 8)).flatten().tolist() == REPLICATE
    assert upsample(cells, (1, 8), "reflect").flatten().tolist() == REFLECT
    assert upsample(cells.transpose(-1, -2), (8, 1), "reflect").flatten().tolist() == REFLECT


def test_an_edge_cell_maximum_peaks_beside_its_centre_not_on_the_border():
    corner = torch.tensor([[[[0.0, 0.0], [0.0, 1.0]]]])  # the outer product [0, 1] x [0, 1]
    up = upsample(corner, (8, 8), "reflect")[0, 0]
    torch.testing.assert_close(up, torch.outer(torch.tensor(REFLECT), torch.tensor(REFLECT)), rtol=0, atol=0)
    assert divmod(int(up.argmax()), 8) == (5, 5)  # 5 and 6 straddle the cell's centre (7.5 - 2 = 6 - 1/2)
    flat = upsample(corner, (8, 8))[0, 0]
    assert divmod(int(flat.argmax()), 8) == (6, 6) and float(flat[7, 7]) == 1.0  # the flat outer half cell


@pytest.mark.parametrize("size", [(40, 21), (16, 14), (3, 4), (5, 7)])
def test_reflect_is_bilinear_inside_the_outer_half_cells(size):
    torch.manual_seed(0)
    maps = torch.rand(2, 3, 5, 7)
    ours, theirs = upsample(maps, size, "reflect"), F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    (h, w), (n, m) = size, maps.shape[-2:]
    u_y, u_x = (torch.arange(h) + 0.5) * n / h - 0.5, (torch.arange(w) + 0.5) * m / w - 0.5  # cell coordinates sampled
    inside_y, inside_x = (u_y >= 0) & (u_y <= n - 1), (u_x >= 0) & (u_x <= m - 1)
    assert inside_y.any() and inside_x.any()
    torch.testing.assert_close(ours[..., inside_y, :][..., inside_x], theirs[..., inside_y, :][..., inside_x], rtol=1e-6, atol=1e-6)
    assert ours.shape == (2, 3, *size)


@pytest.mark.parametrize("shape, size", [((5, 7), (40, 21)), ((2, 2), (16, 16)), ((4, 3), (16, 24))])
def test_the_padded_fast_path_equals_the_mirrored_samples(shape, size):
    torch.manual_seed(1)
    maps = torch.rand(1, 3, *shape)
    expected = _reflected_axis(_reflected_axis(maps, -1, size[1]), -2, size[0])  # the general path, u mirrored by hand
    torch.testing.assert_close(upsample(maps, size, "reflect"), expected, rtol=1e-6, atol=1e-6)


def test_one_cell_is_constant_and_same_size_is_untouched():
    one = torch.full((1, 2, 1, 1), 3.0)
    assert torch.equal(upsample(one, (4, 5), "reflect"), torch.full((1, 2, 4, 5), 3.0))
    maps = torch.rand(1, 2, 4, 5)
    assert upsample(maps, (4, 5), "reflect") is maps


def test_fuse_by_hand():
    fine = torch.tensor([[[[0.0, 0.0], [0.0, 1.0]]]])
    coarse = torch.full((1, 1, 1, 1), 2.0)
    # 2 cells to 4 pixels: u = -1/4, 1/4, 3/4, 5/4 -> mirrored 1/4, 1/4, 3/4, 3/4: [1/4, 1/4, 3/4, 3/4] for cells [0, 1]
    axis = torch.tensor([0.25, 0.25, 0.75, 0.75])
    expected = torch.outer(axis, axis) + 2.0
    torch.testing.assert_close(fuse([fine, coarse], (4, 4), "reflect")[0, 0], expected, rtol=0, atol=0)
    torch.testing.assert_close(
        fuse([fine, coarse], (4, 4))[0, 0], torch.outer(torch.tensor([0.0, 0.25, 0.75, 1.0]), torch.tensor([0.0, 0.25, 0.75, 1.0])) + 2.0
    )  # u clamped


class _TwoScales(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fine = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.coarse = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        a = torch.relu(self.fine(x))
        return self.head(torch.relu(self.coarse(a)).mean((2, 3)) + a.mean((2, 3)))


def test_cam_edge_fuses_and_upsamples_with_the_rule():
    model, x = _TwoScales(), torch.rand(1, 3, 16, 16)
    exp = mmcam.CAM(model, ["fine", "coarse"], method="layercam", edge="reflect")(x, [0, 2])
    expected = normalize(upsample(fuse(exp.layer_raw, (8, 8), "reflect"), (16, 16), "reflect"))
    torch.testing.assert_close(exp.maps, expected, rtol=0, atol=0)
    plain = mmcam.CAM(model, ["fine", "coarse"], method="layercam")(x, [0, 2])
    assert not torch.allclose(plain.maps, exp.maps)
    with pytest.raises(InputError, match="edge must be one of"):
        mmcam.CAM(model, "fine", edge="zeros")


def test_yolo_families_reflect_the_others_replicate():
    from mmcam.adapters.ultralytics import YoloFamily
    from mmcam.adapters.ultralytics_e2e import YoloEndToEnd
    from mmcam.adapters.ultralytics_obb import YoloOBB
    from mmcam.adapters.ultralytics_pose import YoloPose

    assert Family.edge == "replicate"
    assert {YoloFamily.edge, YoloEndToEnd.edge, YoloOBB.edge, YoloPose.edge} == {"reflect"}
