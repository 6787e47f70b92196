"""ultralytics' ``predict`` sets the process's torch thread count (``select_device``:
``min(8, cpus - 1)``); the zoo's quality and reliance checks run it and keep the count."""

from __future__ import annotations

import os

import numpy as np
import torch

from mmcam import zoo
from mmcam.zoo.recipes.common import predict
from mmcam.zoo.reliance import _detections


def test_zoo_predict_keeps_the_thread_count(monkeypatch):
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    before = torch.get_num_threads()
    try:
        chosen = max(1, min(8, (os.cpu_count() or 1) - 1))  # what select_device sets
        wanted = 3 if chosen != 3 else 5
        torch.set_num_threads(wanted)
        image = np.zeros((64, 64, 3), np.uint8)
        assert isinstance(_detections("yolo", zoo.load("yolo")[0], None, [image]), list)  # a fresh model: its predictor is set up here
        assert torch.get_num_threads() == wanted
        predict(zoo.load("yolo")[0], image[..., ::-1].copy(), imgsz=64, verbose=False, device="cpu")
        assert torch.get_num_threads() == wanted
        zoo.load("yolo")[0].predict(image[..., ::-1].copy(), imgsz=64, verbose=False, device="cpu")  # ultralytics' own first call changes it
        assert torch.get_num_threads() == chosen
    finally:
        torch.set_num_threads(before)
