"""Interventional agreement metrics against scipy and hand values; the Sobel baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage, stats

from mmcam.metrics.baselines import IMAGE_BASELINES, sobel_edges
from mmcam.metrics.interventional import kendall_tau, object_mass, spearman_rho, top_object_agreement


@pytest.mark.parametrize("seed", range(4))
def test_rank_agreement_equals_scipy(seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, 4, (7,), generator=g).float()  # ties on purpose
    b = torch.rand(7, generator=g)
    assert spearman_rho(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-9)
    assert kendall_tau(a, b) == pytest.approx(stats.kendalltau(a, b).statistic, abs=1e-9)  # τ-b


def test_rank_agreement_undefined_cases():
    assert math.isnan(spearman_rho(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 1.0])))  # < 3 objects
    assert kendall_tau(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 1.0])) == -1.0
    assert math.isnan(kendall_tau(torch.ones(3), torch.rand(3)))  # constant


def test_top_object_agreement_by_hand():
    assert top_object_agreement(torch.tensor([3.0, 1.0, 0.0]), torch.tensor([0.9, 0.1, 0.0])) == 1.0
    assert top_object_agreement(torch.tensor([1.0, 3.0, 0.0]), torch.tensor([0.9, 0.1, 0.0])) == 0.0
    assert top_object_agreement(torch.tensor([2.0, 2.0, 0.0]), torch.tensor([0.9, 0.1, 0.0])) == 0.5  # tie shares the hit
    assert math.isnan(top_object_agreement(torch.tensor([1.0]), torch.tensor([1.0])))


def test_object_mass_clips_negatives():
    maps = torch.tensor([[[1.0, -5.0], [2.0, 3.0]]])
    objects = torch.tensor([[[True, True], [False, False]], [[False, False], [True, True]]])
    assert object_mass(maps, objects).tolist() == [[1.0, 5.0]]


def test_sobel_equals_scipy():
    image = torch.rand(3, 9, 11, generator=torch.Generator().manual_seed(1))
    want = sum(np.hypot(ndimage.sobel(c, axis=1, mode="nearest"), ndimage.sobel(c, axis=0, mode="nearest")) for c in image.double().numpy())
    got = sobel_edges(image, 2)
    assert got.shape == (2, 9, 11)
    np.testing.assert_allclose(got[1].numpy(), want, rtol=1e-5, atol=1e-5)
    assert IMAGE_BASELINES["sobel"] is sobel_edges
    step = torch.zeros(1, 5, 6)
    step[..., 3:] = 1.0
    edges = sobel_edges(step)[0]
    assert edges[:, :2].eq(0).all() and edges[:, 2:4].eq(4).all() and edges[:, 4:].eq(0).all()  # |[1,2,1] ⊗ [-1,0,1]| on a unit step
