"""Cross-check against Quantus (Hedström et al., JMLR 2023), an optional test dependency:
our pointing game, relevance mass / rank accuracy and ROAD curves equal Quantus's on the
same maps. Maps have distinct values (Quantus breaks ties by sort order, we share them)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mmcam.metrics import faithfulness as faith
from mmcam.metrics.localization import pointing_game, rank_accuracy, relevance_mass

quantus = pytest.importorskip("quantus")

N, H, W = 6, 8, 8


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(N, H, W, generator=g)  # distinct values almost surely
    masks = torch.zeros(N, H, W, dtype=torch.bool)
    for i in range(N):
        r, c = 1 + i % 4, 2 + i % 3
        masks[i, r : r + 3, c : c + 2 + i % 2] = True
    maps[0][masks[0]] += 1.0  # one map whose maximum is on the mask, for sure
    x = torch.rand(N, 1, H, W, generator=g)
    return maps, masks, x


def _q(metric, maps, masks, x, model=None):
    a = maps[:, None].numpy().astype(np.float64)
    s = masks[:, None].numpy().astype(np.float64)
    scores = metric(model=model, x_batch=x.numpy(), y_batch=np.zeros(N, int), a_batch=a, s_batch=s, device="cpu")
    return np.asarray(scores, dtype=np.float64)


def test_pointing_mass_rank_equal_quantus(data):
    maps, masks, x = data
    ours = {
        "pointing": pointing_game(maps, masks).numpy(),
        "mass": relevance_mass(maps, masks).numpy(),
        "rank": rank_accuracy(maps, masks).numpy(),
    }
    theirs = {
        "pointing": _q(quantus.PointingGame(disable_warnings=True), maps, masks, x),
        "mass": _q(quantus.RelevanceMassAccuracy(disable_warnings=True), maps, masks, x),
        "rank": _q(quantus.RelevanceRankAccuracy(disable_warnings=True), maps, masks, x),
    }
    for name in ours:
        np.testing.assert_allclose(ours[name], theirs[name], atol=1e-6, err_msg=name)
    assert 0 < ours["pointing"].sum() < N  # both hits and misses are compared


class _Linear(nn.Module):
    """A fixed 2-class model on 1×8×8 inputs: class 0 iff the left half outweighs the right."""

    def forward(self, x):
        left, right = x[..., : W // 2].flatten(1).sum(1), x[..., W // 2 :].flatten(1).sum(1)
        return torch.stack([left - right + 1.0, torch.zeros_like(left)], 1)


def test_road_equals_quantus_without_noise(data):
    """Noise 0 makes both deterministic; Quantus scores the argmax staying on the label, so our
    curve is taken of the same indicator (our default scores the label's probability)."""
    maps, _, x = data
    model = _Linear().eval()
    percentages = [25, 50, 75]  # whole pixel counts at 64 px: Quantus floors, we round

    def indicator(xs):
        return (model(xs).argmax(1) == 0).float()[:, None].expand(-1, N)

    ours = torch.stack([faith.road(indicator, x[i], maps[i : i + 1], order="morf", percentages=percentages, noise=0.0).curves[0] for i in range(N)])
    theirs = []
    for i in range(N):  # Quantus averages its ROAD over the batch: one instance per call
        metric = quantus.ROAD(percentages=percentages, noise=0.0, disable_warnings=True)
        metric(model=model, x_batch=x[i : i + 1].numpy(), y_batch=np.zeros(1, int), a_batch=maps[i : i + 1, None].numpy(), device="cpu", softmax=False)
        theirs.append([metric.evaluation_scores[p] for p in percentages])
    theirs = np.asarray(theirs, dtype=np.float32)
    np.testing.assert_array_equal(ours.numpy(), theirs)
    assert 0 < ours.sum() < ours.numel()  # the curves are not constant


def test_imputation_equals_quantus(data):
    _, masks, x = data
    from quantus.functions.perturb_func import noisy_linear_imputation

    for i in range(3):
        ours = faith.noisy_linear_imputation(x[i].double(), masks[i], noise=0.0)
        theirs = noisy_linear_imputation(arr=x[i].double().numpy(), indices=np.flatnonzero(masks[i].numpy()), noise=0.0)
        np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-8)
