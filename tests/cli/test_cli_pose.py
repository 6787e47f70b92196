"""The pose task through the command line and the batch path: ``mmcam explain --task pose``,
``mmcam list``, and ``build_task("pose")`` on a batch equal to ``explain_pose`` one photo at a time."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from yolo_models import ZIDANE, yolo

import mmcam
from mmcam.tasks.registry import build_task


def run(*args):
    return subprocess.run([sys.executable, "-m", "mmcam.cli", *args], capture_output=True, text=True, timeout=300)


def test_explain_task_pose_on_a_yolo_pose_yaml(tmp_path):
    Image.fromarray(ZIDANE).save(tmp_path / "zidane.png")
    res = run("explain", str(tmp_path / "zidane.png"), "--task", "pose", "--model", "yolo11n-pose.yaml", "--conf", "0.9", "--out", str(tmp_path / "p"))
    assert res.returncode == 0, res.stderr  # random weights: nobody above conf, still a clean run
    summary = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert summary["task"] == "pose" and summary["explained"][0]["note"].startswith("nothing to explain: no person above conf=0.9")


def test_list_shows_the_pose_task():
    res = run("list")
    assert res.returncode == 0 and "pose" in res.stdout.split("tasks:")[1].splitlines()[0] and "-cls" in res.stdout


def test_batch_pose_equals_explain_pose():
    pytest.importorskip("ultralytics")
    model = yolo("yolo11n-pose.yaml")
    photos = [ZIDANE, np.ascontiguousarray(ZIDANE[:, ::-1])]  # equal letterbox shapes: one forward
    neck = [f"model.{i}" for i in model.model.model[-1].f]
    task = build_task("pose", model, conf=0.03, layers=neck)
    task.family.max_det = 1
    batched = task.explain([task.prepare(p) for p in photos])
    for photo, got in zip(photos, batched):
        want = mmcam.explain_pose(model, photo, conf=0.03, max_people=1, layers=neck)
        assert len(got.items) == 18 and got.meta["raw_indices"] == want.meta["raw_indices"] and got.meta["class_ids"] == want.meta["class_ids"]
        for key in ("keypoints", "confidences", "boxes"):  # a batch of two runs other conv kernels: last bits differ
            torch.testing.assert_close(torch.tensor(got.meta[key]), torch.tensor(want.meta[key]), atol=1e-3, rtol=1e-4)
        torch.testing.assert_close(got.maps, want.maps, atol=1e-4, rtol=0)
