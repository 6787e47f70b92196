"""Faithfulness metrics, sanity checks and attribution baselines on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mmcam.metrics.faithfulness import average_drop_increase, blur, deletion, insertion, noisy_linear_imputation, road
from mmcam.metrics.sanity import cascading_randomization, randomization_stages, spearman

H = W = 10
OBJECT = torch.zeros(H, W, dtype=torch.bool)
OBJECT.view(-1)[-20:] = True  # the last 20 pixels in row-major order: 20% of the image


def object_mean(images: torch.Tensor) -> torch.Tensor:
    """A 'probability' that is the mean of channel 0 over the object: (N, 1)."""
    return images[:, 0][:, OBJECT].mean(1, keepdim=True)


IMAGE = torch.ones(1, H, W)


def test_deletion_of_the_object_first_falls_at_once():
    curves = deletion(object_mean, IMAGE, OBJECT.float()[None], steps=10)
    # 10% steps: half the object gone after one step, all of it after two
    torch.testing.assert_close(curves.curves[0, :4], torch.tensor([1.0, 0.5, 0.0, 0.0]))
    assert curves.auc.item() == pytest.approx(0.1)  # = object share / 2


def test_deletion_with_a_constant_map_follows_row_major_order():
    curves = deletion(object_mean, IMAGE, torch.ones(1, H, W), steps=10)
    # the object is the last 20%: untouched until 80% of the pixels are gone
    assert curves.auc.item() == pytest.approx(0.9)


def test_insertion_mirrors_deletion():
    curves = insertion(object_mean, IMAGE, OBJECT.float()[None], steps=10, baseline=torch.zeros(1, H, W))
    torch.testing.assert_close(curves.curves[0, :3], torch.tensor([0.0, 0.5, 1.0]))
    assert curves.auc.item() == pytest.approx(0.9)


def test_maps_are_scored_on_their_own_column():
    def two(images):
        return torch.stack([images[:, 0, 0, 0], images[:, 0, -1, -1]], 1)

    a = torch.zeros(2, H, W)
    a[0, 0, 0] = 1  # map 0 points at pixel (0, 0): column 0 falls at the first step
    a[1, -1, -1] = 1
    curves = deletion(two, IMAGE, a, steps=10)
    assert curves.curves[:, 1].tolist() == [0.0, 0.0]


def test_blur_keeps_a_constant_image():
    torch.testing.assert_close(blur(torch.full((3, 16, 16), 0.3)), torch.full((3, 16, 16), 0.3))


@pytest.mark.parametrize("solver", ["lu", "cg"])
def test_road_imputation_hand_solved_3x3(solver):
    v = torch.arange(9, dtype=torch.float64).reshape(1, 3, 3) ** 1.5
    # the centre alone: the weighted mean of its 8 neighbours (weights sum to 1)
    removed = torch.zeros(3, 3, dtype=torch.bool)
    removed[1, 1] = True
    edge = v[0, 0, 1] + v[0, 1, 0] + v[0, 1, 2] + v[0, 2, 1]
    diag = v[0, 0, 0] + v[0, 0, 2] + v[0, 2, 0] + v[0, 2, 2]
    out = noisy_linear_imputation(v, removed, noise=0.0, solver=solver)
    assert out[0, 1, 1].item() == pytest.approx((edge / 6 + diag / 12).item(), rel=1e-9)
    assert torch.equal(out[~removed[None]], v[~removed[None]])

    # a corner: 2 edge neighbours (1/6) and 1 diagonal (1/12), weights sum to 5/12
    removed = torch.zeros(3, 3, dtype=torch.bool)
    removed[0, 0] = True
    want = (v[0, 0, 1] / 6 + v[0, 1, 0] / 6 + v[0, 1, 1] / 12) / (5 / 12)
    assert noisy_linear_imputation(v, removed, noise=0.0, solver=solver)[0, 0, 0].item() == pytest.approx(want.item(), rel=1e-9)

    # top-middle a=(0,1) and centre c=(1,1), coupled:
    #   (2/3) a - c/6 = (v00 + v02)/6 + (v10 + v12)/12
    #   c - a/6       = (v10 + v12 + v21)/6 + (v00 + v02 + v20 + v22)/12
    removed = torch.zeros(3, 3, dtype=torch.bool)
    removed[0, 1] = removed[1, 1] = True
    g = v[0]
    lhs = np.array([[2 / 3, -1 / 6], [-1 / 6, 1.0]])
    rhs = np.array(
        [
            (g[0, 0] + g[0, 2]) / 6 + (g[1, 0] + g[1, 2]) / 12,
            (g[1, 0] + g[1, 2] + g[2, 1]) / 6 + (g[0, 0] + g[0, 2] + g[2, 0] + g[2, 2]) / 12,
        ]
    )
    a, c = np.linalg.solve(lhs, rhs)
    out = noisy_linear_imputation(v, removed, noise=0.0, solver=solver)
    assert out[0, 0, 1].item() == pytest.approx(a, rel=1e-9)
    assert out[0, 1, 1].item() == pytest.approx(c, rel=1e-9)


def test_road_imputation_matches_a_sparse_direct_solve():
    sparse = pytest.importorskip("scipy.sparse")
    linalg = pytest.importorskip("scipy.sparse.linalg")
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 12, 9, generator=g, dtype=torch.float64)
    removed = torch.rand(12, 9, generator=g) < 0.5
    got = noisy_linear_imputation(img, removed, noise=0.0, solver="cg")
    torch.testing.assert_close(noisy_linear_imputation(img, removed, noise=0.0, solver="lu"), got, rtol=1e-5, atol=1e-8)
    h, w = removed.shape
    weights = {(-1, 0): 1 / 6, (1, 0): 1 / 6, (0, -1): 1 / 6, (0, 1): 1 / 6, (-1, -1): 1 / 12, (-1, 1): 1 / 12, (1, -1): 1 / 12, (1, 1): 1 / 12}
    unknown = [(i, j) for i in range(h) for j in range(w) if removed[i, j]]
    index = {p: n for n, p in enumerate(unknown)}
    for ch in range(2):
        a = sparse.lil_matrix((len(unknown), len(unknown)))
        b = np.zeros(len(unknown))
        for n, (i, j) in enumerate(unknown):
            for (di, dj), wt in weights.items():
                y, x = i + di, j + dj
                if 0 <= y < h and 0 <= x < w:
                    a[n, n] += wt
                    if (y, x) in index:
                        a[n, index[(y, x)]] -= wt
                    else:
                        b[n] += wt * float(img[ch, y, x])
        sol = linalg.spsolve(a.tocsr(), b)
        np.testing.assert_allclose(got[ch][removed].numpy(), sol, rtol=1e-5, atol=1e-8)


def test_road_noise_only_touches_removed_pixels():
    img = torch.rand(3, 16, 16)
    removed = torch.zeros(16, 16, dtype=torch.bool)
    removed[4:8, 4:8] = True
    a = noisy_linear_imputation(img, removed, noise=0.0)
    b = noisy_linear_imputation(img, removed, noise=0.01, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a[:, ~removed], b[:, ~removed])
    diff = (b - a)[:, removed]
    assert 0.005 < diff.std().item() < 0.02


def test_road_morf_below_lerf_for_the_object_map():
    img = torch.zeros(1, H, W)
    img[0][OBJECT] = 1.0  # bright object on a dark background
    morf = road(object_mean, img, OBJECT.float()[None], order="morf", noise=0.0)
    lerf = road(object_mean, img, OBJECT.float()[None], order="lerf", noise=0.0)
    assert morf.auc.item() < 0.3 < 0.7 < lerf.auc.item()


def test_average_drop_and_increase():
    full_map = torch.ones(1, H, W)
    nothing = torch.zeros(1, H, W)

    def twice(images):
        return object_mean(images).expand(-1, 2)

    drop, increase = average_drop_increase(twice, IMAGE, torch.cat([full_map, nothing]))
    torch.testing.assert_close(drop, torch.tensor([0.0, 100.0]))
    torch.testing.assert_close(increase, torch.tensor([0.0, 0.0]))
    half = torch.full((1, H, W), 0.5)
    drop, _ = average_drop_increase(object_mean, IMAGE, half)
    assert drop.item() == pytest.approx(50.0)


def test_spearman_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(1)
    a = torch.rand(3, 5, 5, generator=g).round(decimals=1)  # with ties
    b = torch.rand(3, 5, 5, generator=g).round(decimals=1)
    got = spearman(a, b)
    for i in range(3):
        assert got[i].item() == pytest.approx(stats.spearmanr(a[i].flatten(), b[i].flatten()).statistic, abs=1e-5)
    assert spearman(a, a).tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert spearman(a, -a).tolist() == pytest.approx([-1.0, -1.0, -1.0])
    assert spearman(a, torch.ones_like(a)).tolist() == [0.0, 0.0, 0.0]


def _net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)
    ).eval()


def test_randomization_stages_go_from_the_head_down():
    stages = randomization_stages(_net(), n_stages=3)
    assert stages == [["6"], ["2"], ["0"]]


def test_cascading_randomization_leaves_the_model_untouched():
    from modelstate import assert_same_state, snapshot

    import mmcam

    model = _net()
    x = torch.randn(2, 3, 12, 12)
    before = snapshot(model)
    calls = []

    def explain(m):
        calls.append(m)
        return mmcam.CAM(m, "2")(x, [1]).maps[:, 0]

    result = cascading_randomization(model, explain, n_stages=3)
    assert_same_state(before, snapshot(model))
    assert all(m is not model for m in calls)
    assert len(result.spearman) == 3 and all(-1 <= v <= 1 for v in result.spearman)


def test_saliency_of_a_linear_score_is_its_weights():
    pytest.importorskip("captum")
    from mmcam.metrics.attribution import attribution_maps

    weights = torch.zeros(1, 8, 8)
    weights[0, 2:4, 5:7] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])

    def linear(images):
        return (images * weights).flatten(1).sum(1, keepdim=True)

    maps = attribution_maps("saliency", linear, torch.rand(1, 8, 8), 1)
    torch.testing.assert_close(maps[0], weights[0] / 4)
    occl = attribution_maps("occlusion", linear, torch.ones(1, 8, 8), 1)
    # a 2x2 zero patch at stride 1 only ever covers the weighted pixels from rows 1-4, cols 4-7
    reach = torch.zeros(8, 8, dtype=torch.bool)
    reach[1:5, 4:8] = True
    assert occl[0][~reach].max().item() == 0
    assert occl[0][2:4, 5:7].min().item() > 0
