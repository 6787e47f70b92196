"""Output of explanations on large photos: the fast colour lookup, blend, top-10 % mass and PNG
writing equal their direct forms; overlays are rendered once for the files and the report; the
report embeds previews at most ``PREVIEW`` pixels long; reading a corrupt file never reaches
ultralytics' auto-installing ``Image.open``."""

from __future__ import annotations

import base64
import importlib
import io
import re

import numpy as np
import pytest
import torch
from PIL import Image

import mmcam.explain as explain_module
from mmcam.errors import InputError
from mmcam.explain import TaskExplanation, map_stats
from mmcam.io import load_image
from mmcam.render.report import PREVIEW, render_report

overlay_module = importlib.import_module("mmcam.render.overlay")  # mmcam.render.overlay is also a function name


def _direct_colorize(heat: np.ndarray) -> np.ndarray:
    anchors = overlay_module._ANCHORS
    h = np.clip(np.nan_to_num(np.asarray(heat, dtype=np.float32)), 0.0, 1.0)
    pos = h * (len(anchors) - 1)
    low = np.floor(pos).astype(int).clip(0, len(anchors) - 2)
    frac = (pos - low)[..., None]
    return (anchors[low] * (1 - frac) + anchors[low + 1] * frac).round().astype(np.uint8)


def test_colour_lookup_within_one_unit_of_the_interpolated_ramp():
    rng = np.random.default_rng(0)
    heat = rng.random((300, 200)).astype(np.float32)
    heat[0, :6] = [0.0, 1.0, np.nan, np.inf, -np.inf, -3.0]
    fast, direct = overlay_module.colorize(heat).astype(int), _direct_colorize(heat).astype(int)
    assert fast.shape == (300, 200, 3) and fast.dtype == np.int64
    assert np.abs(fast - direct).max() <= 1
    assert (fast[0, 0] == direct[0, 0]).all() and (fast[0, 1] == direct[0, 1]).all()  # both ends exact
    assert (fast[0, 2] == fast[0, 0]).all() and (fast[0, 3] == fast[0, 1]).all() and (fast[0, 4] == fast[0, 0]).all()  # NaN 0, +inf 1, -inf 0


@pytest.mark.parametrize("alpha", [0.5, 0.25, 0.3])
def test_blend_within_one_unit_of_the_float_blend(alpha):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (120, 90, 3), dtype=np.uint8)
    heat = rng.random((120, 90)).astype(np.float32)
    direct = ((1 - alpha) * image.astype(np.float32) + alpha * overlay_module.colorize(heat).astype(np.float32)).round().clip(0, 255)
    fast = overlay_module.overlay(image, heat, alpha).astype(int)
    assert np.abs(fast - direct).max() <= 1
    if alpha == 0.3:  # not a multiple of 1/256: the float path itself
        assert (fast == direct).all()


def test_top_mass_without_sorting_equals_the_sorted_sum():
    torch.manual_seed(0)
    for heat in (torch.rand(97, 131), (torch.rand(64, 64) * 4).round() / 4, torch.zeros(5, 7), torch.ones(3, 3)):
        flat = heat.flatten()
        n = max(1, flat.numel() // 10)
        total = float(flat.sum())
        expected = round(float(flat.sort(descending=True).values[:n].sum()) / total, 4) if total > 0 else 0.0
        assert map_stats(heat)["top10_mass"] == pytest.approx(expected, abs=1e-4)


def _explanation(h: int, w: int, k: int = 3) -> TaskExplanation:
    torch.manual_seed(0)
    maps = torch.nn.functional.interpolate(torch.rand(1, k, 6, 8), size=(h, w), mode="bilinear")[0]
    image = np.full((h, w, 3), 120, dtype=np.uint8)
    return TaskExplanation(image, maps, [f"item{i}" for i in range(k)], torch.arange(k).float(), "gradcam", ["layer"])


def test_overlays_rendered_once_for_files_and_report(tmp_path, monkeypatch):
    calls = []
    real = explain_module.overlay
    monkeypatch.setattr(explain_module, "overlay", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    exp = _explanation(300, 500)
    exp.save(tmp_path)
    render_report([exp])
    assert len(calls) == 3  # one per item, shared by save() and the report
    exp.maps.mul_(0.5)  # changed in place: rendered again
    exp.save(tmp_path)
    assert len(calls) == 6
    exp.maps = exp.maps.clone()  # replaced: rendered again
    render_report([exp])
    assert len(calls) == 9


def test_report_previews_are_bounded_and_files_full_size(tmp_path):
    exp = _explanation(PREVIEW + 700, PREVIEW - 300, k=2)
    paths = exp.save(tmp_path)
    assert Image.open(paths[0]).size == (PREVIEW - 300, PREVIEW + 700)
    page = render_report([exp])
    shown = [Image.open(io.BytesIO(base64.b64decode(b))) for b in re.findall(r"data:image/jpeg;base64,([A-Za-z0-9+/=]+)", page)]
    assert len(shown) == 3 and all(  # the one shown first, then each item's
        max(img.size) == PREVIEW for img in shown
    )
    assert f"{PREVIEW} px (full size: the PNG files)" in page


def test_corrupt_file_never_reaches_ultralytics_auto_install(tmp_path, monkeypatch):
    pytest.importorskip("ultralytics")
    import ultralytics.utils.checks as checks
    import ultralytics.utils.patches  # noqa: F401  (the patch of Image.open)

    assert Image.open is ultralytics.utils.patches.image_open
    asked = []
    monkeypatch.setattr(checks, "check_requirements", lambda *a, **kw: asked.append(a))
    bad = tmp_path / "photo.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(InputError, match="cannot read image"):
        load_image(bad)
    assert asked == []
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(good)
    assert load_image(good).size == (6, 4)
