"""method="gradcam-shift" / "layercam-shift": a CNN CAM averaged over sub-stride input shifts,
against an explicit loop of the plain method on inputs moved by hand (top classes pinned, a
fixed segmentation mask moved with the image), one phase = the plain method, maps at the
photo's size on a non-square photo through the classify and segment tasks, the model left as
found."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from catalogue_models import tiny_segformer
from modelstate import assert_same_state, snapshot

from mmcam import CAM
from mmcam.engine.combine import normalize
from mmcam.engine.shifts import moved_target
from mmcam.errors import MethodError
from mmcam.methods import InputShifts, get
from mmcam.targets import ClassLogit, SegmentationRegion, TopClasses
from mmcam.tasks import explain_classification, explain_segmentation
from mmcam.zoo.models import SmallResNet

SHIFTS = [(dy, dx) for dy in (0, 3, 5) for dx in (0, 3, 5)]  # stride 8, the default three phases per axis
WIDE = (np.random.default_rng(3).random((40, 56, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    return SmallResNet(4, (4, 8, 8, 8), strides=(1, 2, 2, 1)).eval()  # layer4 at stride 8


@pytest.fixture(scope="module")
def segmenter():
    return tiny_segformer()  # train mode: the explained forwards must put its BatchNorm statistics back


def _moved(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x`` moved dy rows down and dx columns right, its first row / column repeated."""
    h, w = x.shape[-2:]
    rows, cols = torch.clamp(torch.arange(h) - dy, min=0), torch.clamp(torch.arange(w) - dx, min=0)
    return x[..., rows, :][..., cols]


def _back(maps: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Maps of a moved input moved back, their last row / column repeated."""
    h, w = maps.shape[-2:]
    rows, cols = torch.clamp(torch.arange(h) + dy, max=h - 1), torch.clamp(torch.arange(w) + dx, max=w - 1)
    return maps[..., rows, :][..., cols]


def _pixels(photo: np.ndarray) -> torch.Tensor:
    """The segmentation task's input without a processor: ImageNet mean / std, no resize (short side <= 520)."""
    x = torch.as_tensor(photo).permute(2, 0, 1).float()[None] / 255
    return (x - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[:, None, None]


def _shifted_mask(mask: np.ndarray, dy: int, dx: int) -> torch.Tensor:
    out = np.zeros_like(mask)
    out[dy:, dx:] = mask[: mask.shape[0] - dy, : mask.shape[1] - dx]
    return torch.as_tensor(out, dtype=torch.float32)


@pytest.mark.parametrize("method", ["gradcam", "layercam"])
def test_shift_equals_a_loop_of_the_plain_method_on_moved_inputs(classifier, method):
    x = torch.randn(2, 3, 40, 56)
    before = snapshot(classifier)
    exp = CAM(classifier, "layer4", method=f"{method}-shift")(x, TopClasses(2))
    assert_same_state(before, snapshot(classifier))
    plain = CAM(classifier, "layer4", method=method)
    first = plain(x, TopClasses(2))
    classes = first.output.topk(2, dim=1).indices.tolist()
    pinned = [[ClassLogit(c) for c in row] for row in classes]
    loop = [_back(plain(_moved(x, dy, dx), pinned).maps, dy, dx) for dy, dx in SHIFTS]
    torch.testing.assert_close(exp.maps, normalize(torch.stack(loop).mean(0)))
    torch.testing.assert_close(exp.scores, first.scores)  # scores, output and raw: the unshifted pass's
    torch.testing.assert_close(exp.raw, first.raw)
    assert exp.method == f"{method}-shift" and exp.layers == ["layer4", f"mean over input shifts {SHIFTS}"]
    assert exp.maps.shape == (2, 2, 40, 56) and not torch.allclose(exp.maps, first.maps)


def test_one_phase_is_the_plain_method_and_names(classifier):
    x = torch.randn(1, 3, 40, 56)
    one = CAM(classifier, "layer4", method=InputShifts("gradcam", phases=1))(x, [1, 2])
    plain = CAM(classifier, "layer4", method="gradcam")(x, [1, 2])
    torch.testing.assert_close(one.maps, plain.maps, rtol=0, atol=0)
    two = CAM(classifier, "layer4", method=InputShifts("layercam", phases=2))(x, 1)
    assert two.layers[-1] == "mean over input shifts [(0, 0), (0, 4), (4, 0), (4, 4)]"
    assert get("gradcam-shift").phases == get("layercam-shift").phases == 3
    assert repr(get("hirescam-shift")) == "InputShifts(HiResCAM(), phases=3)"  # any CAM method by suffix
    for name in ("gradcam-shift+eigensmooth", "gradcam+eigensmooth-shift"):  # eigen-smoothing inside every pass
        assert repr(get(name)) == "InputShifts(EigenSmooth(GradCAM()), phases=3)" and get(name).name == "gradcam+eigensmooth-shift"
    assert CAM(classifier, "layer4", method="gradcam-shift+eigensmooth")(x, 1).layers[-1] == f"mean over input shifts {SHIFTS}"
    with pytest.raises(MethodError, match="phases >= 1"):
        InputShifts("gradcam", phases=0)
    with pytest.raises(MethodError, match="gae-shift"):
        InputShifts("gae")


def test_classify_task_maps_at_the_photo_size_with_pinned_top_classes(classifier):
    before = snapshot(classifier)
    exp = explain_classification(classifier, torch.as_tensor(WIDE).permute(2, 0, 1).float() / 255, method="gradcam-shift", topk=2)
    assert_same_state(before, snapshot(classifier))
    assert exp.maps.shape == (2, 40, 56) and exp.method == "gradcam-shift"
    x = (torch.as_tensor(WIDE).permute(2, 0, 1).float() / 255)[None]
    classes = exp.meta["classes"]
    plain = CAM(classifier, "layer4", method="gradcam")
    loop = [_back(plain(_moved(x, dy, dx), [ClassLogit(c) for c in classes]).maps[0], dy, dx) for dy, dx in SHIFTS]
    torch.testing.assert_close(exp.maps, normalize(torch.stack(loop).mean(0)[None])[0])


def test_segment_task_maps_at_the_photo_size_and_the_fixed_mask_moves(segmenter):
    before = snapshot(segmenter)
    exp = explain_segmentation(segmenter, WIDE, class_id=[1, 2], method="gradcam-shift")
    assert_same_state(before, snapshot(segmenter))
    assert exp.maps.shape == (2, 40, 56) and exp.method == "gradcam-shift" and torch.isfinite(exp.maps).all()
    assert exp.layers[-1] == "mean over input shifts [(0, 0), (0, 1), (0, 3), (1, 0), (1, 1), (1, 3), (3, 0), (3, 1), (3, 3)]"  # stride 4
    mask = np.zeros((40, 56), dtype=bool)
    mask[8:20, 12:30] = True
    masked = explain_segmentation(segmenter, WIDE, class_id=1, mask=mask, method="gradcam-shift")
    assert_same_state(before, snapshot(segmenter))
    assert masked.maps.shape == (1, 40, 56) and masked.regions[0].shape == (40, 56)
    model = tiny_segformer().eval()  # no dropout: the shifted passes and the loop see the same model
    masked = explain_segmentation(model, WIDE, class_id=1, mask=mask, method="gradcam-shift")
    x = _pixels(WIDE)
    plain = CAM(model, "decode_head.linear_fuse", method="gradcam")
    grid = [(dy, dx) for dy in (0, 1, 3) for dx in (0, 1, 3)]
    loop = [_back(plain({"pixel_values": _moved(x, dy, dx)}, [SegmentationRegion(1, _shifted_mask(mask, dy, dx))]).maps, dy, dx) for dy, dx in grid]
    torch.testing.assert_close(masked.maps, normalize(torch.stack(loop).mean(0))[0])
    moved = moved_target(SegmentationRegion(1, torch.as_tensor(mask)), 3, 1, (40, 56))
    expected = np.zeros((40, 56), dtype=bool)
    expected[11:23, 13:31] = True
    assert np.array_equal(moved.mask.numpy() > 0.5, expected) and moved.classes == [1]
    half = moved_target(SegmentationRegion(1, torch.as_tensor(mask[::2, ::2].copy())), 4, 2, (40, 56))  # at the mask's own resolution
    expected = np.zeros((20, 28), dtype=bool)
    expected[6:12, 7:16] = True  # (4, 2) input pixels are (2, 1) mask pixels
    assert np.array_equal(half.mask.numpy() > 0.5, expected)
    free = SegmentationRegion(1)
    assert moved_target(free, 3, 1, (40, 56)) is free  # a region from the model's own prediction moves with the output
