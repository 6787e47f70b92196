"""README's first command end to end: the demo's report in a real browser.

Runs `mmcam demo`, opens report.html from disk in Debian's chromium (Playwright, no
network), hovers a caption word and clicks a detection box, and checks that the shown
heatmap changed and is the very PNG the demo saved for that word / box.
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
from browser import ARTIFACTS, CHROMIUM_ARGS, chromium_path, decode_png_uri, offline
from PIL import Image


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "mmcam.cli", "demo", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return out, time.perf_counter() - start, res


def test_demo_runs_every_shipped_task_in_two_minutes(demo):
    out, seconds, res = demo
    assert seconds < 120, f"demo took {seconds:.0f} s"
    assert (out / "report.html").exists()
    for task in ("classify", "caption", "detect-yolo", "segment", "action"):
        assert list((out / task).glob("*.png")), f"no {task} overlays"


def test_hover_word_and_click_box(demo):
    sync_api = pytest.importorskip("playwright.sync_api")
    out, _, _ = demo
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 1000})
            offline(page)
            page.goto((out / "report.html").as_uri())

            section = page.locator("section[data-name='scene 0 · caption']")
            view = section.locator("img.view")
            words = section.locator(".word")
            assert words.count() >= 2
            before = view.get_attribute("src")
            words.nth(1).hover()
            after = view.get_attribute("src")
            assert after != before
            word = words.nth(1).inner_text()
            saved = np.asarray(Image.open(next((out / "caption").glob(f"scene0_01_{word}.png"))).convert("RGB"))
            assert np.array_equal(decode_png_uri(after), saved)

            boxes = page.locator("section[data-task='detection'] rect")
            assert boxes.count() >= 1
            detection = page.locator("section[data-task='detection']").filter(has=page.locator("rect[data-item-ref='0']")).first
            name = detection.get_attribute("data-name")
            scene = name.split(" ")[1]
            dview = detection.locator("img.view")
            detection.locator("rect[data-item-ref='0']").click(force=True)
            shown = decode_png_uri(dview.get_attribute("src"))
            saved = np.asarray(Image.open(next((out / "detect-yolo").glob(f"scene{scene}_00_*.png"))).convert("RGB"))
            assert np.array_equal(shown, saved)
            assert detection.locator("rect.active").get_attribute("data-item-ref") == "0"
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "demo_report.png"), full_page=True)
        finally:
            browser.close()
