"""Actions and segmentation regions: targets against hand computation, K-at-once, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from modelstate import assert_same_state, snapshot

import mmcam
from mmcam.errors import InputError, TargetError
from mmcam.targets import ActionValue, GreedyActionValue, SegmentationRegion
from mmcam.tasks import explain_action, explain_segmentation
from mmcam.zoo.models import QNetwork


def _qnet():
    torch.manual_seed(0)
    return QNetwork(in_channels=6, num_actions=4, grid=7, width=8).eval()  # 2 stacked frames


def test_action_targets_and_k_at_once():
    model = _qnet()
    obs = torch.rand(2, 6, 7, 7)
    q = model(obs).detach()
    together = mmcam.CAM(model, "features")(obs, [ActionValue(a) for a in range(4)])
    torch.testing.assert_close(together.scores, q)
    for a in range(4):
        alone = mmcam.CAM(model, "features")(obs, [ActionValue(a)])
        torch.testing.assert_close(together.raw[:, a], alone.raw[:, 0], rtol=1e-5, atol=1e-7)
    greedy = mmcam.CAM(model, "features")(obs, [GreedyActionValue()])
    torch.testing.assert_close(greedy.scores[:, 0], q.max(1).values)


def test_explain_action_defaults_to_greedy_and_leaves_model():
    model = _qnet()
    before = snapshot(model)
    obs = np.random.default_rng(0).random((6, 7, 7)).astype(np.float32)
    exp = explain_action(model, obs, action_names=["up", "down", "left", "right"])
    q = model(torch.from_numpy(obs)[None]).detach()[0]
    assert exp.meta["action"] == int(q.argmax()) and exp.items == [exp.meta["action_name"]]
    assert exp.maps.shape == (1, 56, 56) and torch.isfinite(exp.maps).all()
    several = explain_action(model, obs, action=[0, 3])
    assert several.maps.shape[0] == 2
    assert_same_state(before, snapshot(model))
    with pytest.raises(InputError, match="one observation"):
        explain_action(model, np.zeros((2, 2, 6, 7, 7), np.float32))
    with pytest.raises(TargetError, match="out of range"):
        explain_action(model, obs, action=9)


def _segmenter():
    from mmcam.zoo.models import build
    from mmcam.zoo.recipes.segmenter import train_segmenter  # noqa: F401  (the recipe's architecture)

    torch.manual_seed(0)
    config = {
        "num_channels": 3,
        "num_encoder_blocks": 2,
        "depths": [1, 1],
        "sr_ratios": [2, 1],
        "hidden_sizes": [8, 16],
        "patch_sizes": [3, 3],
        "strides": [2, 2],
        "num_attention_heads": [1, 1],
        "mlp_ratios": [2, 2],
        "decoder_hidden_size": 16,
        "num_labels": 3,
    }
    return build({"architecture": {"type": "hf_segformer", "config": config}}).eval()


def test_torchvision_segmentation_default_layer():
    from mmcam.tasks.segmentation import default_segmentation_layer

    model = torchvision.models.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3)
    assert default_segmentation_layer(model) == "backbone.16"


def test_segmentation_target_is_the_hand_sum():
    logits = torch.randn(2, 3, 4, 4)
    mask = torch.zeros(4, 4)
    mask[1:3, 0:2] = 1
    got = SegmentationRegion([1, 2], mask)({"out": logits})
    expected = torch.stack([(logits[:, c] * mask).sum((1, 2)) for c in (1, 2)], 1)
    torch.testing.assert_close(got, expected)
    predicted = SegmentationRegion(2)(logits)  # region = where class 2 wins
    win = logits.argmax(1) == 2
    torch.testing.assert_close(predicted[:, 0], (logits[:, 2] * win).sum((1, 2)))
    with pytest.raises(TargetError, match="out of range"):
        SegmentationRegion(5)(logits)


def test_explain_segmentation_regions_from_one_forward():
    model = _segmenter()
    model(pixel_values=torch.rand(1, 3, 64, 64))  # transformers 5 adds its own output-recording hooks on the first call
    before = snapshot(model)
    image = (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)
    exp = explain_segmentation(model, image, class_id=[0, 1, 2])
    assert exp.maps.shape == (3, 64, 64) and torch.isfinite(exp.maps).all()
    assert exp.layers == ["decode_head.linear_fuse"]
    for k, c in enumerate([0, 1, 2]):
        alone = explain_segmentation(model, image, class_id=c)
        torch.testing.assert_close(exp.maps[k], alone.maps[0], rtol=1e-4, atol=1e-5)
    mask = np.zeros((64, 64), bool)
    mask[10:30, 10:30] = True
    masked = explain_segmentation(model, image, class_id=1, mask=mask)
    assert masked.regions[0][20, 20] and not masked.regions[0][50, 50]
    assert_same_state(before, snapshot(model))
    with pytest.raises(InputError, match="empty"):
        explain_segmentation(model, image, class_id=1, mask=np.zeros((64, 64), bool))
    with pytest.raises(TargetError, match="out of range"):
        explain_segmentation(model, image, class_id=7)
