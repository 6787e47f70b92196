"""method="attnlrp-shift": AttnLRP averaged over sub-patch input shifts, against an explicit
loop of shift -> attnlrp -> unshift -> average (captioner and ViLT), one phase equals attnlrp,
the model left as found (rules removed, parameters and attention implementation restored)."""

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
from mmcam.methods import ShiftedAttnLRP, attnlrp, get
from mmcam.tasks import explain_caption, explain_vqa

SQUARE = (np.random.default_rng(3).random((64, 64, 3)) * 255).astype(np.uint8)  # the processors' size: a moved photo is moved pixel_values
WIDE = (np.random.default_rng(4).random((48, 80, 3)) * 255).astype(np.uint8)
SHIFTS = [(dy, dx) for dy in (0, 3, 5) for dx in (0, 3, 5)]  # patch 8, three phases per axis
QUESTION = "what color is the circle ?"


@pytest.fixture(scope="module")
def captioner():
    return tiny_ved()


@pytest.fixture(scope="module")
def vilt():
    return tiny_vilt(["red", "green", "blue", "yes", "no"])


def test_attnlrp_shift_equals_a_loop_of_attnlrp_on_shifted_photos(captioner, vilt):
    model, processor = captioner
    before = snapshot(model)
    exp = explain_caption(model, processor, SQUARE, method="attnlrp-shift")
    assert_same_state(before, snapshot(model))
    assert exp.method == "attnlrp-shift" and exp.layers[-1] == f"mean over input shifts {SHIFTS}"
    loop = [_back(explain_caption(model, processor, _moved(SQUARE, dy, dx), caption=exp.caption, method="attnlrp").maps, dy, dx) for dy, dx in SHIFTS]
    torch.testing.assert_close(exp.maps, normalize(torch.stack(loop).mean(0)))
    plain = explain_caption(model, processor, SQUARE, caption=exp.caption, method="attnlrp")
    torch.testing.assert_close(exp.scores, plain.scores)  # the scores are the unshifted photo's
    assert not torch.allclose(exp.maps, plain.maps)

    model, processor = vilt
    before = snapshot(model)
    exp = explain_vqa(model, processor, SQUARE, QUESTION, method="attnlrp-shift")  # the top answer, pinned on the moved passes
    assert_same_state(before, snapshot(model))
    loop = [_back(explain_vqa(model, processor, _moved(SQUARE, dy, dx), QUESTION, answer=exp.items[0], method="attnlrp").maps, dy, dx) for dy, dx in SHIFTS]
    torch.testing.assert_close(exp.maps, normalize(torch.stack(loop).mean(0)))
    torch.testing.assert_close(exp.scores, explain_vqa(model, processor, SQUARE, QUESTION, method="attnlrp").scores)


def test_attnlrp_shift_one_phase_is_attnlrp_and_maps_at_the_photo_size(captioner, vilt):
    model, processor = captioner
    before = snapshot(model)
    two = explain_caption(model, processor, WIDE, method=ShiftedAttnLRP(phases=2))
    one = explain_caption(model, processor, WIDE, caption=two.caption, method=ShiftedAttnLRP(phases=1))
    assert_same_state(before, snapshot(model))
    assert two.maps.shape == (len(two.items), *WIDE.shape[:2]) and torch.isfinite(two.maps).all()
    assert float(two.maps.amin()) >= 0 and float(two.maps.amax()) <= 1
    assert two.layers[-1] == "mean over input shifts [(0, 0), (0, 4), (4, 0), (4, 4)]"
    plain = explain_caption(model, processor, WIDE, caption=two.caption, method="attnlrp")
    torch.testing.assert_close(one.maps, plain.maps)
    assert one.layers == plain.layers
    model, processor = vilt
    answer = explain_vqa(model, processor, WIDE, QUESTION, method=ShiftedAttnLRP(phases=1))
    torch.testing.assert_close(answer.maps, explain_vqa(model, processor, WIDE, QUESTION, method="attnlrp").maps)
    assert get("attnlrp-shift").phases == 3 and get("attnlrp").phases == 1
    assert "Patent notice" in attnlrp.__doc__ and "attnlrp-shift" in attnlrp.__doc__
    with pytest.raises(MethodError, match="phases >= 1"):
        ShiftedAttnLRP(phases=0)
