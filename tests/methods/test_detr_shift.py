"""method="gae-detr-shift": gae-detr averaged over sub-token input shifts, against an explicit
loop of plain gae-detr (the same queries and classes) on photos shifted by hand; phases=1 is
gae-detr; maps at the photo's size on a non-square photo; K boxes at once = one at a time; the
model left as found."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from detr_models import tiny_detr
from modelstate import assert_same_state, snapshot
from shifting import back as _back
from shifting import moved as _moved

import mmcam
from mmcam.engine.combine import normalize
from mmcam.errors import MethodError
from mmcam.methods import ShiftedDetrCAM, ShiftedDetrRelevance, get
from mmcam.targets import DetectionBoxScore
from mmcam.tasks import explain_detections

transformers = pytest.importorskip("transformers")

SQUARE = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)  # the processor's size: moving it moves pixel_values
WIDE = (np.random.default_rng(3).random((48, 80, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def detr():
    return tiny_detr()


def test_equals_a_loop_of_gae_detr_on_shifted_photos(detr):
    model, processor = detr
    before = snapshot(model)
    implementation = model.config._attn_implementation
    exp = explain_detections(model, SQUARE, processor=processor, conf=0.3, method=ShiftedDetrRelevance(phases=2))
    assert_same_state(before, snapshot(model))
    assert model.config._attn_implementation == implementation
    queries, classes = exp.meta["raw_indices"], exp.meta["class_ids"]
    shifts = [(0, 0), (0, 8), (8, 0), (8, 8)]  # 16 px tokens (4 x 4 at 64 px), two phases per axis
    assert len(queries) >= 2 and exp.method == "gae-detr-shift" and exp.layers[-1] == f"mean over input shifts {shifts}"
    pinned = (queries, classes)  # every pass explains the unshifted pass's queries and classes
    loop = [
        _back(explain_detections(model, _moved(SQUARE, dy, dx), processor=processor, method="gae-detr", candidates=pinned).maps, dy, dx) for dy, dx in shifts
    ]
    torch.testing.assert_close(exp.maps, normalize(torch.stack(loop).mean(0)), rtol=1e-4, atol=1e-5)
    plain = explain_detections(model, SQUARE, processor=processor, conf=0.3, method="gae-detr")
    assert plain.meta["raw_indices"] == queries
    torch.testing.assert_close(exp.scores, plain.scores)  # the scores are the unshifted input's
    assert not torch.allclose(exp.maps, plain.maps)
    one = explain_detections(model, SQUARE, processor=processor, conf=0.3, method=ShiftedDetrRelevance(phases=1))
    torch.testing.assert_close(one.maps, plain.maps)  # phases=1 is gae-detr

    # K boxes at once = one at a time, three phases (0, 5, 11 px)
    three = explain_detections(model, SQUARE, processor=processor, conf=0.3, method="gae-detr-shift")
    for k, (query, label) in enumerate(zip(queries, classes)):
        alone = explain_detections(model, SQUARE, processor=processor, method="gae-detr-shift", candidates=([query], [label]))
        torch.testing.assert_close(alone.maps[0], three.maps[k], rtol=1e-4, atol=1e-5)
    assert_same_state(before, snapshot(model))


def test_maps_at_the_photo_size_and_through_cam(detr):
    model, _ = detr
    wide = transformers.DetrImageProcessor(size={"shortest_edge": 48, "longest_edge": 80})
    before = snapshot(model)
    exp = explain_detections(model, WIDE, processor=wide, conf=0.3, method="gae-detr-shift")
    assert_same_state(before, snapshot(model))
    assert len(exp.items) >= 1 and exp.maps.shape == (len(exp.items), 48, 80)
    assert torch.isfinite(exp.maps).all() and float(exp.maps.amax()) == 1.0
    assert exp.layers[-1].startswith("mean over input shifts [(0, 0), (0, 5), (0, 11), (5, 0)")

    from mmcam.adapters.detr import EncoderGrid, layers_and_grid

    inputs = wide(images=WIDE, return_tensors="pt")
    reshape = EncoderGrid(layers_and_grid(model, inputs)[1])
    targets = DetectionBoxScore(exp.meta["raw_indices"], exp.meta["class_ids"])
    cam = mmcam.CAM(model, method=get("gae-detr-shift"), reshape=reshape)(inputs, targets)
    assert cam.maps.shape[-2:] == tuple(inputs["pixel_values"].shape[-2:]) and cam.raw.shape[-2:] == (3, 5)
    with pytest.raises(MethodError, match="phases >= 1"):
        ShiftedDetrRelevance(phases=0)


def test_layercam_shift_equals_a_loop_of_layercam_on_shifted_photos(detr):
    model, processor = detr
    before = snapshot(model)
    exp = explain_detections(model, SQUARE, processor=processor, conf=0.3, method=ShiftedDetrCAM(phases=2))
    assert_same_state(before, snapshot(model))
    queries, classes = exp.meta["raw_indices"], exp.meta["class_ids"]
    shifts = [(0, 0), (0, 8), (8, 0), (8, 8)]
    assert len(queries) >= 2 and exp.method == "layercam-detr-shift" and exp.layers[-1] == f"mean over input shifts {shifts}"
    plain = explain_detections(model, SQUARE, processor=processor, method="layercam", candidates=(queries, classes))
    assert exp.layers[:-1] == plain.layers  # the task's default layer
    loop = [
        _back(explain_detections(model, _moved(SQUARE, dy, dx), processor=processor, method="layercam", candidates=(queries, classes)).maps, dy, dx)
        for dy, dx in shifts
    ]
    torch.testing.assert_close(exp.maps, normalize(torch.stack(loop).mean(0)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(exp.scores, plain.scores)
    one = explain_detections(model, SQUARE, processor=processor, method=ShiftedDetrCAM(phases=1), candidates=(queries, classes))
    torch.testing.assert_close(one.maps, plain.maps)
    with pytest.raises(MethodError, match="gae-detr-shift"):
        ShiftedDetrCAM("gae-detr")


def test_centred_token_resampling():
    """centre = (p - 1) / 2 is plain bilinear upsampling; centre = 0 puts token (i, j) on pixel (p i, p j)."""
    from mmcam.methods.detr_relevance import centred

    raw = torch.rand(1, 2, 3, 5)
    plain = torch.nn.functional.interpolate(raw, size=(48, 80), mode="bilinear", align_corners=False)
    torch.testing.assert_close(centred(raw, (48, 80), (48, 80), 7.5), plain)
    torch.testing.assert_close(centred(raw, (48, 80), (48, 80), 0.0)[..., ::16, ::16], raw)
