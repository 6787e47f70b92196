"""method="gae-shift": gae averaged over sub-patch input shifts, against an explicit loop of
plain gae on photos shifted by hand (captioner and ViLT), maps at the photo's size on a
non-square photo, the model left as found."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from modelstate import assert_same_state, snapshot
from shifting import back as _back
from shifting import moved as _moved
from vl_models import tiny_ved, tiny_vilt

from mmcam.engine.combine import normalize
from mmcam.errors import MethodError
from mmcam.methods import ShiftedAttention, get
from mmcam.tasks import explain_caption, explain_vqa

SQUARE = (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)  # the processors' own size: shifting it shifts pixel_values
WIDE = (np.random.default_rng(2).random((48, 80, 3)) * 255).astype(np.uint8)
SHIFTS = [(dy, dx) for dy in (0, 3, 5) for dx in (0, 3, 5)]  # patch 8, the default three phases per axis
QUESTION = "what color is the circle ?"


@pytest.fixture(scope="module")
def captioner():
    return tiny_ved(decoder_layers=2)


@pytest.fixture(scope="module")
def vilt():
    return tiny_vilt(["red", "green", "blue", "yes", "no"])


def test_gae_shift_equals_a_loop_of_gae_on_shifted_photos(captioner, vilt):
    model, processor = captioner
    before = snapshot(model)
    exp = explain_caption(model, processor, SQUARE, method="gae-shift")
    assert_same_state(before, snapshot(model))
    assert exp.method == "gae-shift" and exp.layers[-1] == f"mean over input shifts {SHIFTS}"
    loop = [_back(explain_caption(model, processor, _moved(SQUARE, dy, dx), caption=exp.caption, method="gae").maps, dy, dx) for dy, dx in SHIFTS]
    torch.testing.assert_close(exp.maps, normalize(torch.stack(loop).mean(0)))
    plain = explain_caption(model, processor, SQUARE, caption=exp.caption, method="gae")
    torch.testing.assert_close(exp.scores, plain.scores)  # the scores are the unshifted input's
    assert not torch.allclose(exp.maps, plain.maps)

    model, processor = vilt
    before = snapshot(model)
    exp = explain_vqa(model, processor, SQUARE, QUESTION, method="gae-shift")  # the top answer: pinned on the shifted passes
    assert_same_state(before, snapshot(model))
    loop = [_back(explain_vqa(model, processor, _moved(SQUARE, dy, dx), QUESTION, answer=exp.items[0], method="gae").maps, dy, dx) for dy, dx in SHIFTS]
    torch.testing.assert_close(exp.maps, normalize(torch.stack(loop).mean(0)))
    torch.testing.assert_close(exp.scores, explain_vqa(model, processor, SQUARE, QUESTION, method="gae").scores)


def test_gae_shift_maps_at_the_photo_size_and_one_phase_is_gae(captioner, vilt):
    model, processor = captioner
    before = snapshot(model)
    exp = explain_caption(model, processor, WIDE, method="gae-shift")
    two = explain_caption(model, processor, WIDE, caption=exp.caption, method=ShiftedAttention(phases=2))
    assert_same_state(before, snapshot(model))
    assert exp.maps.shape == two.maps.shape == (len(exp.items), *WIDE.shape[:2]) and torch.isfinite(exp.maps).all()
    assert float(exp.maps.amin()) >= 0 and float(exp.maps.amax()) <= 1
    assert two.layers[-1] == "mean over input shifts [(0, 0), (0, 4), (4, 0), (4, 4)]"
    one = explain_caption(model, processor, WIDE, caption=exp.caption, method=ShiftedAttention(phases=1))
    torch.testing.assert_close(one.maps, explain_caption(model, processor, WIDE, caption=exp.caption, method="gae").maps)
    model, processor = vilt
    before = snapshot(model)
    answer = explain_vqa(model, processor, WIDE, QUESTION, method="gae-shift")
    assert_same_state(before, snapshot(model))
    assert answer.maps.shape == (1, *WIDE.shape[:2])
    assert get("gae-shift").phases == 3 and get("gae").phases == 1
    with pytest.raises(MethodError, match="phases >= 1"):
        ShiftedAttention(phases=0)


def test_gae_shift_on_a_vit_classifier_keeps_the_top_classes_of_the_unshifted_image():
    """explain_classification's top classes are pinned: every shifted pass explains the classes the
    unshifted image picked, not its own top classes."""
    from transformers import ViTConfig, ViTForImageClassification

    from mmcam import explain_classification
    from mmcam.engine.shifts import shift_grid, shifted, unshifted

    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=4)
    model = ViTForImageClassification(config).eval()
    torch.nn.init.normal_(model.classifier.weight, std=0.5)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))  # some shifts change its top-2 classes
    before = snapshot(model)
    exp = explain_classification(model, x, topk=2, method="gae-shift")
    assert_same_state(before, snapshot(model))
    classes = list(exp.meta["classes"])
    loop = [unshifted(explain_classification(model, shifted(x, dy, dx), classes, method="gae").maps, dy, dx) for dy, dx in shift_grid((8, 8), 3)]
    torch.testing.assert_close(exp.maps, normalize(torch.stack(loop).mean(0)))
    tops = {tuple(explain_classification(model, shifted(x, dy, dx), topk=2, method="gae").meta["classes"]) for dy, dx in shift_grid((8, 8), 3)}
    assert len(tops) > 1  # a shifted image's own top classes differ, so the equality above checks the pinning
