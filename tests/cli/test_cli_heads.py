"""The new heads through the command line and the batch path: ``mmcam explain --task detect``
routes an OBB yaml and a torchvision SSDlite (name + a saved state dict), ``build_task`` (what
``mmcam batch`` runs) picks each family's own object, and ``mmcam list`` names them."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from yolo_models import BUS

from mmcam.tasks.registry import build_task


def run(*args):
    """``mmcam ...`` in this process (a subprocess pays torch's import again: ~10 s here)."""
    from mmcam.cli import main

    return main(list(args))


def test_explain_detect_on_an_obb_yaml_routes_to_rotated_boxes(tmp_path):
    Image.fromarray(BUS).save(tmp_path / "bus.png")
    res = run("explain", str(tmp_path / "bus.png"), "--task", "detect", "--model", "yolo11n-obb.yaml", "--conf", "0.9", "--out", str(tmp_path / "o"))
    assert res == 0  # random weights: no box above conf, still a clean run
    explained = json.loads((tmp_path / "o" / "summary.json").read_text())["explained"][0]
    assert explained["rotated_boxes"] == [] and explained["note"].startswith("nothing to explain")


def test_explain_detect_on_a_torchvision_ssdlite_with_saved_weights(tmp_path):
    from safetensors.torch import save_file
    from torchvision.models import detection

    torch.manual_seed(0)
    model = detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
    save_file(model.state_dict(), str(tmp_path / "ssd.safetensors"))
    Image.fromarray(BUS).save(tmp_path / "bus.png")
    args = ("--task", "detect", "--model", "ssdlite320_mobilenet_v3_large", "--weights", str(tmp_path / "ssd.safetensors"), "--conf", "0.5")
    res = run("explain", str(tmp_path / "bus.png"), *args, "--out", str(tmp_path / "s"))
    assert res == 0
    explained = json.loads((tmp_path / "s" / "summary.json").read_text())["explained"][0]
    assert explained["pipeline"]["input_size"] == [320, 320] and explained["pipeline"]["name"].startswith("GeneralizedRCNNTransform")


def test_build_task_picks_each_new_family():
    ultralytics = pytest.importorskip("ultralytics")
    from torchvision.models import detection
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    from mmcam.adapters.rtdetr_ultralytics import RtdetrFamily
    from mmcam.adapters.torchvision_detection import TorchvisionDetector
    from mmcam.adapters.torchvision_instances import TorchvisionKeypoints, TorchvisionMasks
    from mmcam.adapters.ultralytics_obb import YoloOBB, YoloOBBEndToEnd

    tv = dict(weights=None, weights_backbone=None)
    fpn = resnet_fpn_backbone(backbone_name="resnet18", weights=None)  # the R-CNN classes on a small backbone (time)
    assert type(build_task("detect", ultralytics.YOLO("yolo26n-obb.yaml")).family) is YoloOBB
    from mmcam.loading import load_model

    assert type(build_task("detect", load_model("rtdetr-l.yaml", task="detect")[0]).family) is RtdetrFamily  # what --model rtdetr-l.yaml loads
    assert type(build_task("detect", detection.ssdlite320_mobilenet_v3_large(**tv)).family) is TorchvisionDetector
    assert type(build_task("segment", detection.MaskRCNN(fpn, num_classes=91)).family) is TorchvisionMasks
    assert type(build_task("pose", detection.KeypointRCNN(fpn, num_classes=2)).family) is TorchvisionKeypoints
    from mmcam.tasks.detection import detector_family

    assert type(detector_family(ultralytics.YOLO("yolo26n-obb.yaml"), nms=False)) is YoloOBBEndToEnd


def test_list_names_the_new_heads(capsys):
    from mmcam.cli import main

    assert main(["list"]) == 0
    shown = capsys.readouterr().out
    for name in ("OBB", "ultralytics RT-DETR", "SSDlite", "Mask R-CNN (one map per instance mask)", "Keypoint R-CNN: one map per person", "YOLO-World / YOLOE"):
        assert name in shown, name
