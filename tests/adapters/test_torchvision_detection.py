"""torchvision Faster R-CNN / RetinaNet / FCOS: one map per kept detection from one forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from modelstate import assert_same_state, snapshot

import mmcam
from mmcam.adapters.ultralytics import eval_mode
from mmcam.errors import TargetError
from mmcam.tasks import explain_detections

torchvision = pytest.importorskip("torchvision")
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet  # noqa: E402
from torchvision.models.detection.backbone_utils import BackboneWithFPN  # noqa: E402
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7  # noqa: E402

IMAGE = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
SMALL = dict(num_classes=4, min_size=64, max_size=64)


def build(family: str):
    """Random-init resnet18 + 64-channel FPN (FCOS GroupNorm needs 64 at the 1x1 P7 level) detectors at 64 px; thresholds lowered so the
    untrained heads keep boxes, and the class heads widened so the scores do not tie."""
    torch.manual_seed(0)
    levels = ["layer1", "layer2", "layer3", "layer4"] if family == "fasterrcnn" else ["layer2", "layer3", "layer4"]
    extra = LastLevelMaxPool() if family == "fasterrcnn" else LastLevelP6P7(64, 64)
    backbone = BackboneWithFPN(
        torchvision.models.resnet18(),
        {name: str(i) for i, name in enumerate(levels)},
        [64 * 2 ** (int(name[-1]) - 1) for name in levels],
        out_channels=64,
        extra_blocks=extra,
    )
    if family == "fasterrcnn":
        model = FasterRCNN(
            backbone,
            box_score_thresh=0.0,
            rpn_pre_nms_top_n_test=100,
            rpn_post_nms_top_n_test=30,
            box_detections_per_img=6,
            **SMALL,
        )
        head = model.roi_heads.box_predictor.cls_score
    else:
        kind = RetinaNet if family == "retinanet" else FCOS
        model = kind(backbone, score_thresh=0.0, detections_per_img=6, topk_candidates=100, **SMALL)
        head = model.head.classification_head.cls_logits
    with torch.no_grad():
        head.weight.mul_(20)
    return model


@pytest.fixture(scope="module", params=["fasterrcnn", "retinanet", "fcos"])
def detector(request):
    return request.param, build(request.param)


def test_one_map_per_kept_detection_with_the_model_scores(detector):
    name, model = detector
    before = snapshot(model)
    exp = explain_detections(model, IMAGE)
    k = len(exp.items)
    assert k == 6 and exp.maps.shape == (6, 64, 64)
    assert torch.isfinite(exp.maps).all() and (exp.maps.flatten(1).std(1) > 0).all()
    assert exp.layers == [f"backbone.fpn.layer_blocks.{i}" for i in range(len(model.backbone.fpn.layer_blocks))]
    # the explained scalars are the model's own final scores, boxes and labels, in its order
    x = torch.from_numpy(IMAGE.astype(np.float32) / 255).permute(2, 0, 1)[None]
    with eval_mode(model), torch.no_grad():
        theirs = model(x)[0]
    torch.testing.assert_close(exp.scores, theirs["scores"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.tensor(exp.meta["boxes"]), theirs["boxes"], atol=0.01, rtol=0)
    assert exp.meta["class_ids"] == theirs["labels"].tolist() and exp.meta["raw_indices"] == list(range(6))
    assert exp.meta["labels"] == [str(c) for c in exp.meta["class_ids"]]  # torchvision models carry no names
    assert_same_state(before, snapshot(model))


def test_box_maps_equal_single_box_runs(detector):
    """K at once equals K separate runs, each with a naive target: the k-th kept score."""
    name, model = detector
    exp = explain_detections(model, IMAGE, max_boxes=2)
    x = torch.from_numpy(IMAGE.astype(np.float32) / 255).permute(2, 0, 1)[None]
    with eval_mode(model):
        for k in range(2):
            alone = mmcam.CAM(model, exp.layers, method="layercam")(x, [lambda out, k=k: out[0]["scores"][k : k + 1]])
            torch.testing.assert_close(exp.maps[k], alone.maps[0, 0], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(exp.scores[k], alone.scores[0, 0])
    names = ["bg", "cat", "dog", "cow"]
    single = explain_detections(model, IMAGE, candidates=([1], [exp.meta["class_ids"][1]]), labels=names)
    torch.testing.assert_close(single.maps[0], exp.maps[1], rtol=1e-4, atol=1e-5)
    assert single.meta["labels"] == [names[exp.meta["class_ids"][1]]] and single.items[0].startswith(names[exp.meta["class_ids"][1]])


def test_padded_grid_is_cropped_to_the_image():
    """A 64x80 image is padded to 64x96 inside the model: the map covers the image only."""
    model = build("fasterrcnn")
    model.transform.max_size = 100
    wide = (np.random.default_rng(1).random((64, 80, 3)) * 255).astype(np.uint8)
    exp = explain_detections(model, wide, max_boxes=2)
    assert exp.maps.shape == (2, 64, 80) and torch.isfinite(exp.maps).all()
    assert exp.maps.flatten(1).amax(1).tolist() == [1.0, 1.0]


def test_empty_out_of_range_and_conf(detector):
    name, model = detector
    exp = explain_detections(model, IMAGE, conf=1.0)
    assert exp.items == [] and exp.maps.shape == (0, 64, 64) and "nothing to explain" in exp.meta["note"]
    with pytest.raises(TargetError, match="out of range: the model kept 6"):
        explain_detections(model, IMAGE, candidates=([6], [0]))
    x = torch.from_numpy(IMAGE.astype(np.float32) / 255).permute(2, 0, 1)[None]
    with eval_mode(model), torch.no_grad():
        scores = model(x)[0]["scores"]
    conf = float(scores[2:4].mean())  # between the 3rd and 4th kept scores: 3 detections pass
    some = explain_detections(model, IMAGE, conf=conf)
    assert some.meta["raw_indices"] == [0, 1, 2] and min(some.meta["confidences"]) > conf


def test_later_forwards_score_the_same_detections():
    """Perturbation methods re-run the model: each frozen box is scored by the same-label
    detection overlapping it most (IoU >= 0.5), else 0."""
    from mmcam.adapters.torchvision_detection import KeptDetections

    boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 40], [0, 0, 10, 10]])
    first = [{"boxes": boxes, "labels": torch.tensor([1, 2, 3]), "scores": torch.tensor([0.9, 0.8, 0.7])}]
    kept = KeptDetections(max_boxes=2)
    torch.testing.assert_close(kept(first), torch.tensor([[0.9, 0.8]]))
    later = [
        first[0],
        {"boxes": torch.tensor([[21.0, 21, 40, 40], [0, 0, 10, 10]]), "labels": torch.tensor([2, 3]), "scores": torch.tensor([0.5, 0.4])},
        {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.long), "scores": torch.zeros(0)},
    ]
    # image 1: box 0 (label 1) has only a label-3 twin -> 0; box 1 matches at IoU 0.9; image 2 is empty
    torch.testing.assert_close(kept(later), torch.tensor([[0.9, 0.8], [0.0, 0.5], [0.0, 0.0]]))


def test_box_term_adds_the_matched_iou():
    from mmcam.adapters.torchvision_detection import KeptDetections

    first = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 40]]), "labels": torch.tensor([1, 2]), "scores": torch.tensor([0.9, 0.8])}]
    kept = KeptDetections(box_weight=2.0)
    torch.testing.assert_close(kept(first), torch.tensor([[0.9 + 2, 0.8 + 2]]))  # each box is its own reference
    later = [{"boxes": torch.tensor([[21.0, 21, 40, 40]]), "labels": torch.tensor([2]), "scores": torch.tensor([0.5])}]
    iou = (19 * 19) / (20 * 20)  # [21, 40]^2 inside [20, 40]^2
    torch.testing.assert_close(kept(later), torch.tensor([[0.0, 0.5 + 2 * iou]]))
