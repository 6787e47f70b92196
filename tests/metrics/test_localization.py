"""Localisation metrics on hand-computed cases."""

from __future__ import annotations

import pytest
import torch

from mmcam.metrics import localization_table, pixel_auroc, pointing_game, rank_accuracy, relevance_mass, relevance_mass_ratio


def _mask():
    m = torch.zeros(1, 4, 4, dtype=torch.bool)
    m[0, 1:3, 1:3] = True  # 4 of 16 pixels
    return m


def test_map_equal_to_the_mask_is_perfect():
    m = _mask()
    perfect = m.float()
    assert pointing_game(perfect, m).item() == 1
    assert relevance_mass(perfect, m).item() == 1
    assert relevance_mass_ratio(perfect, m).item() == pytest.approx(4.0)
    assert rank_accuracy(perfect, m).item() == 1
    assert pixel_auroc(perfect, m).item() == 1


def test_constant_map_scores_chance():
    m = _mask()
    flat = torch.ones(1, 4, 4)
    assert relevance_mass(flat, m).item() == pytest.approx(0.25)
    assert relevance_mass_ratio(flat, m).item() == pytest.approx(1.0)
    assert pixel_auroc(flat, m).item() == pytest.approx(0.5)
    assert pointing_game(flat, m).item() == pytest.approx(0.25)  # expected hit over the tied maxima
    assert rank_accuracy(flat, m).item() == pytest.approx(0.25)
    assert relevance_mass(torch.zeros(1, 4, 4), m).item() == pytest.approx(0.25)
    # tolerance 1 (a disc of radius 1) grows the 2x2 mask to 12 pixels: the chance value follows
    assert pointing_game(flat, m, tolerance=1).item() == pytest.approx(12 / 16)


def test_ties_count_in_proportion():
    m = _mask()
    heat = torch.zeros(1, 4, 4)
    heat[0, 0, 0] = heat[0, 1, 1] = 1.0  # two tied maxima, one inside
    assert pointing_game(heat, m).item() == pytest.approx(0.5)
    # top-4: both maxima (1 hit), then 2 slots among 14 tied zeros of which 3 are mask pixels
    assert rank_accuracy(heat, m).item() == pytest.approx((1 + 2 * 3 / 14) / 4)


def test_metrics_are_batched_per_sample():
    m = _mask().expand(3, 4, 4).clone()
    maps = torch.stack([m[0].float(), torch.ones(4, 4), torch.rand(4, 4)])
    for fn in (pointing_game, relevance_mass, rank_accuracy, pixel_auroc):
        batched = fn(maps, m)
        single = torch.cat([fn(maps[i : i + 1], m[i : i + 1]) for i in range(3)])
        torch.testing.assert_close(batched, single)


def test_hand_values():
    m = _mask()
    heat = torch.arange(16.0).view(1, 4, 4) / 100  # distinct small values: no ties
    heat[0, 0, 0] = 3.0  # outside
    heat[0, 1, 1] = 1.0  # inside
    assert pointing_game(heat, m).item() == 0
    assert pointing_game(heat, m, tolerance=1).item() == 0  # (0,0) is sqrt(2) px from the mask
    assert pointing_game(heat, m, tolerance=2).item() == 1
    inside = heat[m].sum()
    assert relevance_mass(heat, m).item() == pytest.approx((inside / heat.sum()).item())
    assert rank_accuracy(heat, m).item() == pytest.approx(0.25)  # top-4: (0,0), (1,1), (3,3), (3,2)
    # AUROC = P(a mask pixel outranks an outside pixel), by brute force
    pos, neg = heat[m].tolist(), heat[~m].tolist()
    expected = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg) / (len(pos) * len(neg))
    assert pixel_auroc(heat, m).item() == pytest.approx(expected)
    tied = torch.zeros(1, 4, 4)
    tied[0, 1, 1] = 1.0  # one mask pixel above 15 tied zeros
    assert pixel_auroc(tied, m).item() == pytest.approx((12 * 1.0 + 3 * 12 * 0.5) / 48)


def test_table_has_baselines_beside_the_method():
    m = _mask().expand(3, 4, 4)
    table = localization_table({"gradcam": m.float()}, m)
    assert set(table) == {"gradcam", "baseline:centre", "baseline:uniform", "baseline:random"}
    assert table["gradcam"]["pointing"] == 1 and table["baseline:uniform"]["mass_ratio"] == pytest.approx(1.0)


def test_table_scores_the_tolerant_pointing_game_when_asked():
    mask = torch.zeros(1, 9, 9, dtype=torch.bool)
    mask[0, 4, 4] = True
    off = torch.zeros(1, 9, 9)
    off[0, 4, 6] = 1.0  # the peak 2 px right of the object
    assert "pointing_tol" not in localization_table({"m": off}, mask)["m"]
    row = localization_table({"m": off}, mask, tolerance=2)["m"]
    assert row["pointing"] == 0 and row["pointing_tol"] == 1
    assert localization_table({"m": off}, mask, tolerance=1)["m"]["pointing_tol"] == 0
