"""torchvision SSD / SSDlite boxes, Mask R-CNN instances and Keypoint R-CNN people (random init)
on real photos: what mmcam explains is exactly the model's own eval output (boxes, scores, labels,
``masks > 0.5``, ``keypoints``, ``keypoints_scores``) in the photo's pixels; one map per item;
K items at once = one at a time; the model untouched; keypoints drawn on the overlays.

SSDlite runs at its own input size (320); the R-CNNs on a ResNet-18 FPN at ``min_size=400``, the
Keypoint R-CNN head narrowed to 2 x 64 channels and 5 keypoints: the torchvision builders' ResNet-50 at 800 (and
SSD300-VGG16) cost ~25 s per forward on one shared CPU thread here — the same checks on those,
as a script, are in docs/detectors.md."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from modelstate import assert_same_state, snapshot
from yolo_models import BUS, ZIDANE

import mmcam
from mmcam.adapters.base import eval_mode

torchvision = pytest.importorskip("torchvision")
from torchvision.models import detection  # noqa: E402

RCNN = dict(
    min_size=400, max_size=667, rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=10, box_score_thresh=0.0
)  # 10 proposals: ROIAlign backward on CPU (time)


def fpn18():
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    return resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5)


def own(model, photo):
    """The model's own eval output on the photo (a [0, 1] tensor at its size, as mmcam passes it)."""
    x = torch.from_numpy(photo.astype(np.float32) / 255).permute(2, 0, 1)[None]
    with eval_mode(model), torch.no_grad():
        return model(x)[0]


def same_detections(exp_boxes, exp_scores, exp_labels, theirs, atol=1e-6):
    torch.testing.assert_close(torch.tensor(exp_boxes), theirs["boxes"], atol=0.01, rtol=0)  # rounded to 0.01
    torch.testing.assert_close(exp_scores, theirs["scores"], atol=atol, rtol=1e-5)
    assert exp_labels == theirs["labels"].tolist()


def test_ssdlite_on_an_skimage_photo_equals_the_model_output():
    skimage = pytest.importorskip("skimage")
    photo = skimage.data.astronaut()
    torch.manual_seed(0)
    model = detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, score_thresh=0.001, detections_per_img=2)
    exp = mmcam.explain_detections(model, photo)
    same_detections(exp.meta["boxes"], exp.scores, exp.meta["class_ids"], own(model, photo))
    assert exp.maps.shape == (2, *photo.shape[:2])


@pytest.mark.parametrize("name", ["ssdlite320_mobilenet_v3_large"])  # ssd300_vgg16: the same path, 23 s here (docs/detectors.md)
def test_ssd_boxes_equal_the_model_output(name):
    torch.manual_seed(0)
    k = 1 if "vgg" in name else 3  # VGG16: one box (time)
    model = getattr(detection, name)(weights=None, weights_backbone=None, score_thresh=0.001, detections_per_img=k)
    before = snapshot(model)
    exp = mmcam.explain_detections(model, BUS)
    theirs = own(model, BUS)
    assert len(exp.items) == len(theirs["scores"]) == k
    same_detections(exp.meta["boxes"], exp.scores, exp.meta["class_ids"], theirs)
    assert exp.maps.shape == (k, *BUS.shape[:2]) and exp.maps.amax((1, 2)).min() > 0
    assert exp.layers == (["backbone.features.0", "backbone.features.1"] if "lite" in name else ["backbone.features", "backbone.extra.0"])
    assert_same_state(before, snapshot(model))
    if "lite" in name:  # K boxes at once = one box at a time (a plain (B,) target each)
        x = torch.from_numpy(BUS.astype(np.float32) / 255).permute(2, 0, 1)[None]
        frame = mmcam.adapters.torchvision_detection.TorchvisionDetector(model).prepare(mmcam.io.load_image(BUS)).frame
        with eval_mode(model):
            singles = mmcam.CAM(model, exp.layers, method="layercam")(x, [lambda out, k=k: out[0]["scores"][k][None] for k in range(3)], input_size=frame.input)
        torch.testing.assert_close(singles.scores[0], exp.scores, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(frame.maps_to_photo(singles.maps[0]), exp.maps, atol=1e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def mask_rcnn():
    torch.manual_seed(0)
    return detection.MaskRCNN(fpn18(), num_classes=91, box_detections_per_img=2, **RCNN)


def test_mask_rcnn_instances_equal_the_model_masks(mask_rcnn):
    from mmcam.adapters.torchvision_instances import TorchvisionMasks

    before = snapshot(mask_rcnn)
    exp = mmcam.explain_segmentation(mask_rcnn, BUS, conf=0.0)
    theirs = own(mask_rcnn, BUS)
    assert len(exp.items) == len(theirs["scores"]) == 2
    same_detections(exp.meta["boxes"], torch.tensor(exp.meta["confidences"]), exp.meta["classes"], theirs, atol=1e-5)  # rounded to 1e-5
    assert np.array_equal(np.stack(exp.regions), (theirs["masks"][:, 0] > 0.5).numpy()) and exp.regions[0].shape == BUS.shape[:2]
    assert exp.maps.shape == (2, *BUS.shape[:2]) and exp.maps.amax((1, 2)).min() > 0
    assert_same_state(before, snapshot(mask_rcnn))
    # K instances at once = one at a time: each instance's mask logits over its region, read by hand
    captured = []
    handle = mask_rcnn.roi_heads.mask_predictor.register_forward_hook(lambda m, a, out: captured.append(out))
    try:
        x = torch.from_numpy(BUS.astype(np.float32) / 255).permute(2, 0, 1)[None]
        labels = exp.meta["classes"]

        def one(k):
            def target(out):
                logits = captured[-1][k, labels[k]]
                return (logits * (logits > 0).float()).sum()[None] if (logits > 0).any() else logits.sum()[None]

            return target

        frame = TorchvisionMasks(mask_rcnn).prepare(mmcam.io.load_image(BUS)).frame
        with eval_mode(mask_rcnn):
            singles = mmcam.CAM(mask_rcnn, exp.layers, method="layercam")(x, [one(k) for k in range(2)], input_size=frame.input)
    finally:
        handle.remove()
    torch.testing.assert_close(singles.scores[0], exp.scores, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(frame.maps_to_photo(singles.maps[0]), exp.maps, atol=1e-5, rtol=1e-4)


def test_keypoint_rcnn_people_and_keypoints_equal_the_model_output():
    from mmcam.adapters.torchvision_instances import TorchvisionKeypoints

    torch.manual_seed(0)
    from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor

    head = dict(keypoint_head=KeypointRCNNHeads(256, (64, 64)), keypoint_predictor=KeypointRCNNPredictor(64, 5))
    model = detection.KeypointRCNN(fpn18(), num_classes=2, box_detections_per_img=2, **head, **RCNN)  # 5 keypoints: 12 backward passes (time)
    before = snapshot(model)
    exp = mmcam.explain_pose(model, ZIDANE, conf=0.0)
    theirs = own(model, ZIDANE)
    people = len(theirs["scores"])
    assert people == 2 and len(exp.items) == people * 6 and exp.maps.shape == (12, *ZIDANE.shape[:2])
    same_detections(exp.meta["boxes"], torch.tensor(exp.meta["confidences"]), exp.meta["class_ids"], theirs)
    torch.testing.assert_close(torch.tensor(exp.meta["keypoints"]), theirs["keypoints"], atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.tensor(exp.meta["keypoint_scores"]), theirs["keypoints_scores"], atol=1e-5, rtol=1e-5)
    want = torch.cat([theirs["scores"][:, None], theirs["keypoints_scores"]], 1).flatten()  # person, then its 17 keypoints
    torch.testing.assert_close(exp.scores, want, atol=1e-5, rtol=1e-5)
    assert exp.meta["keypoint"][:6] == list(range(-1, 5)) and exp.meta["person"][6:] == [1] * 6 and exp.items[0].startswith("person")
    assert_same_state(before, snapshot(model))
    # K maps at once = one at a time (person 0 and two of its keypoints)
    x = torch.from_numpy(ZIDANE.astype(np.float32) / 255).permute(2, 0, 1)[None]
    picks = [-1, 0, 4]
    frame = TorchvisionKeypoints(model).prepare(mmcam.io.load_image(ZIDANE)).frame
    with eval_mode(model):
        singles = mmcam.CAM(model, exp.layers, method="layercam")(
            x, [lambda out, j=j: (out[0]["scores"][0] if j < 0 else out[0]["keypoints_scores"][0, j])[None] for j in picks], input_size=frame.input
        )
    torch.testing.assert_close(singles.scores[0], exp.scores[[j + 1 for j in picks]], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(frame.maps_to_photo(singles.maps[0]), exp.maps[[j + 1 for j in picks]], atol=1e-5, rtol=1e-4)
    # the overlay of keypoint 4 marks that keypoint
    x4, y4 = (int(round(v)) for v in exp.meta["keypoints"][0][4][:2])
    assert (exp.overlays()[5][y4, x4] == (255, 214, 10)).all()
