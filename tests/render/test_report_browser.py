"""The HTML report in a real browser: Debian's chromium driven headless by Playwright.

Hovering an item (caption word / class chip) and clicking a box must switch the shown
heatmap, and the shown heatmap must be the same image as the PNG `save()` wrote.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from browser import ARTIFACTS, CHROMIUM_ARGS, chromium_path, decode_png_uri, offline
from PIL import Image

import mmcam
from mmcam.explain import TaskExplanation
from mmcam.render.report import write_report


def _explanations() -> list[TaskExplanation]:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).eval()
    image = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    cls = mmcam.explain_classification(model, image, topk=3)
    words = TaskExplanation(
        image=cls.image, maps=cls.maps, items=["a", "red", "circle"], scores=cls.scores, method=cls.method, layers=cls.layers, task="caption"
    )
    boxes = TaskExplanation(
        image=cls.image,
        maps=cls.maps,
        items=["circle 0.9", "square 0.8", "triangle 0.7"],
        scores=cls.scores,
        method=cls.method,
        layers=cls.layers,
        task="detection",
        meta={"boxes": [[2, 2, 30, 30], [34, 34, 62, 62], [2, 40, 20, 60]]},
    )
    return [cls, words, boxes]


def test_report_hover_and_click_switch_heatmaps(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    exps = _explanations()
    for i, exp in enumerate(exps):
        exp.save(tmp_path / f"e{i}", stem="img")
    report = write_report(tmp_path / "report.html", exps)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 1200})
            offline(page)
            page.goto(report.as_uri())
            caption = page.locator("section[data-task='caption']")
            view = caption.locator("img.view")
            before = view.get_attribute("src")
            caption.locator(".word", has_text="circle").hover()
            after = view.get_attribute("src")
            assert after != before
            saved = np.asarray(Image.open(tmp_path / "e1" / "img_02_circle.png").convert("RGB"))
            assert np.array_equal(decode_png_uri(after), saved)
            assert "circle" in caption.locator(".now").inner_text()

            detection = page.locator("section[data-task='detection']")
            dview = detection.locator("img.view")
            first = dview.get_attribute("src")
            detection.locator("rect[data-item-ref='1']").click(force=True)
            clicked = dview.get_attribute("src")
            assert clicked != first
            saved = np.asarray(Image.open(tmp_path / "e2" / "img_01_square-0-8.png").convert("RGB"))
            assert np.array_equal(decode_png_uri(clicked), saved)
            assert detection.locator("rect.active").get_attribute("data-item-ref") == "1"
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        finally:
            browser.close()
