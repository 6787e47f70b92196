"""A catalogue of bad and unusual inputs through the public API (``mmcam.CAM``,
``mmcam.explain_classification``, ``mmcam.io.load_image``).

Each bad case asserts the mmcam error class, a one-line message that says what to pass
instead, and that the model is exactly as found (parameters, ``requires_grad``, ``.grad``,
``training`` flags, buffers, hooks — :mod:`modelstate`). Each unusual-but-valid case (fp16,
bf16, channels_last, DataParallel, frozen, train mode, user hooks, EXIF-rotated, 16-bit,
float and palette files, real photos) asserts a correct result and the same untouched model.

``torch.compile`` is covered only with ``MMCAM_TEST_COMPILE=1``: it works (hooks on the
compiled module's submodules, same maps), but compiling takes ~25 s on a 2-core CPU.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from catalogue_models import (
    Buggy,
    SharedReLU,
    X,
    all_frozen,
    channels_last,
    data_parallel,
    half,
    tiny_segformer,
    tiny_vit,
    user_model,
    with_every_hook,
    write_file,
)
from modelstate import assert_same_state, snapshot
from PIL import Image
from torch import nn

import mmcam
from mmcam.errors import (
    ForwardError,
    GradientError,
    InputError,
    LayerError,
    MethodError,
    MMCamError,
    MMCamWarning,
    TargetError,
)

SAYS_WHAT_TO_PASS = re.compile(r"\b(pass|hook|use|try)\b", re.IGNORECASE)


@dataclass
class Bad:
    """``call(model, tmp)`` must raise ``error`` whose message matches ``match``."""

    id: str
    call: Callable[[nn.Module, Path], Any]
    error: type[BaseException]
    match: str
    model: Callable[[], nn.Module] = user_model
    cause: type[BaseException] | None = None


def _cam(layers: Any = "block", **kw: Any) -> Callable:
    return lambda inputs, targets: lambda model, tmp: mmcam.CAM(model, layers, **kw)(inputs, targets)


def _explain_file(name: str, **kw: Any) -> Callable:
    return lambda model, tmp: mmcam.explain_classification(model, write_file(tmp, name), **kw)


def _explain(image: Any, **kw: Any) -> Callable:
    return lambda model, tmp: mmcam.explain_classification(model, image, **kw)


def _raise(error: BaseException) -> Callable:
    def target(output):
        raise error

    return target


def _in_inference_mode(model, tmp):
    with torch.inference_mode():
        mmcam.CAM(model, "block")(X, [0])


NAN = np.full((8, 8, 3), 0.5, np.float32)
NAN[1, 1, 1] = np.nan
INF = np.full((8, 8, 3), 0.5, np.float32)
INF[0, 0, 0] = np.inf

BAD = [
    # -- image files -------------------------------------------------------------------
    Bad("file-missing", _explain_file("missing.png"), InputError, "does not exist"),
    Bad("file-directory", _explain_file("dir"), InputError, "directory"),
    Bad("file-truncated", _explain_file("truncated.png"), InputError, "truncated", cause=OSError),
    Bad("file-random-bytes", _explain_file("random.jpg"), InputError, "cannot read image"),
    Bad("file-empty", _explain_file("empty.png"), InputError, "cannot read image"),
    Bad("file-text-as-png", _explain_file("text.png"), InputError, "cannot read image"),
    Bad("file-decompression-bomb", _explain_file("bomb.png"), InputError, "decompression bomb", cause=Image.DecompressionBombError),
    Bad("file-past-pixel-limit", _explain_file("huge.png"), InputError, "8200x8200.*MAX_PIXELS"),
    Bad("file-float-tiff-out-of-range", _explain_file("odd.tif"), InputError, r"neither \[0, 1\] nor \[0, 255\]"),
    Bad("file-float-tiff-nan", _explain_file("nan.tif"), InputError, "NaN/Inf"),
    Bad("url-string", _explain("https://example.com/cat.jpg"), InputError, "does not exist"),
    # -- image arrays ------------------------------------------------------------------
    Bad("array-nan", _explain(NAN), InputError, "NaN/Inf"),
    Bad("array-inf", _explain(INF), InputError, "NaN/Inf"),
    Bad("array-normalised", _explain(np.random.default_rng(0).normal(size=(8, 8, 3)).astype(np.float32) * 2), InputError, "normalised"),
    Bad("array-negative-ints", _explain(np.full((8, 8, 3), -4, np.int64)), InputError, "uint8"),
    Bad("array-channels-first", _explain(np.zeros((3, 8, 8), np.uint8)), InputError, r"np.transpose"),
    Bad("array-five-channels", _explain(np.zeros((8, 8, 5), np.uint8)), InputError, "RGBA"),
    Bad("array-empty", _explain(np.zeros((0, 8, 3), np.uint8)), InputError, "empty"),
    Bad("array-4d", _explain(np.zeros((1, 8, 8, 3), np.uint8)), InputError, "got shape"),
    Bad("array-complex", _explain(np.zeros((8, 8, 3), np.complex64)), InputError, "dtype complex64"),
    Bad("image-list", _explain([[0, 1], [2, 3]]), InputError, "cannot use list"),
    Bad("image-none", _explain(None), InputError, "cannot use NoneType"),
    # -- tensors -----------------------------------------------------------------------
    Bad("tensor-unbatched-3d", _cam()(torch.rand(3, 16, 16), [0]), InputError, r"x\[None\]"),
    Bad("tensor-five-channels", _cam()(torch.rand(2, 5, 16, 16), [0]), ForwardError, r"expects 3 input channels, got 5", cause=RuntimeError),
    Bad("tensor-one-channel", _cam()(torch.rand(2, 1, 16, 16), [0]), ForwardError, r"\(B, 3, H, W\)"),
    Bad("tensor-2d", _cam()(torch.rand(3, 16), [0]), ForwardError, "forward failed"),
    Bad("tensor-1d", _cam()(torch.rand(3), [0]), InputError, "batch dimension"),
    Bad("tensor-uint8", _cam()(torch.zeros(1, 3, 16, 16, dtype=torch.uint8), [0]), InputError, "float"),
    Bad("tensor-complex", _cam()(torch.zeros(1, 3, 16, 16, dtype=torch.complex64), [0]), InputError, "float"),
    Bad("tensor-empty-batch", _cam()(torch.rand(0, 3, 16, 16), [0]), InputError, "empty"),
    Bad("inputs-list", _cam()([1, 2, 3], [0]), InputError, "tensor or a dict"),
    Bad("inputs-dict-wrong-key", _cam()({"foo": X}, [0]), ForwardError, "forward\\(\\) arguments", cause=TypeError),
    Bad("inputs-dict-no-tensor", _cam()({"n": 3}, [0]), InputError, "no tensor"),
    Bad("inference-mode", _in_inference_mode, InputError, "inference_mode"),
    Bad("model-bug-in-forward", _cam()(X, [0]), ForwardError, "Buggy's forward failed", model=lambda: Buggy()),
    # -- targets -----------------------------------------------------------------------
    Bad("class-out-of-range", _cam()(X, [7]), TargetError, "out of range for 5 classes"),
    Bad("class-negative-out-of-range", _cam()(X, [-9]), TargetError, "out of range"),
    Bad("target-bool", _cam()(X, [True]), TargetError, "bool"),
    Bad("target-string", _cam()(X, "cat"), TargetError, "cannot use 'cat'"),
    Bad("target-string-in-list", _cam()(X, ["cat"]), TargetError, "callable"),
    Bad("target-none-in-list", _cam()(X, [None]), TargetError, "callable"),
    Bad("targets-empty-list", _cam()(X, []), TargetError, "cannot use"),
    Bad("targets-wrong-count-of-lists", _cam()(X, [[0], [1], [2]]), TargetError, "2 lists"),
    Bad("targets-ragged-lists", _cam()(X, [[0], [1, 2]]), TargetError, "same number K"),
    Bad("targets-mixed", _cam()(X, [[0], 1]), TargetError, "mixes"),
    Bad("target-raises-indexerror", _cam()(X, [lambda out: out[:, 99]]), TargetError, r"IndexError.*Tensor\(2, 5\) float32", cause=IndexError),
    Bad("target-raises-keyerror", _cam()(X, [_raise(KeyError("logits"))]), TargetError, "raised KeyError", cause=KeyError),
    Bad("target-raises-runtimeerror", _cam()(X, [_raise(RuntimeError("boom"))]), TargetError, "_raise.<locals>.target.*boom", cause=RuntimeError),
    Bad("target-raises-typeerror", _cam()(X, [lambda out: out.logits]), TargetError, "AttributeError", cause=AttributeError),
    Bad("target-returns-float", _cam()(X, [lambda out: 1.0]), TargetError, "returned float"),
    Bad("target-returns-numpy", _cam()(X, [lambda out: out.detach().numpy()[:, 0]]), TargetError, "returned ndarray"),
    Bad("target-returns-3d", _cam()(X, [lambda out: out[:, :, None, None].expand(2, 5, 2, 2)[..., 0]]), TargetError, r"returned shape \(2, 5, 2\)"),
    Bad("targets-different-batch", _cam()(X, [0, lambda out: out[:1, 0]]), TargetError, "different batch sizes"),
    Bad("target-class-probability-out-of-range", _cam()(X, [mmcam.targets.ClassProbability(10)]), TargetError, "out of range"),
    Bad("target-raw-score-of-logits", _cam()(X, [mmcam.targets.RawScore()]), TargetError, "pass index="),
    Bad("target-action-out-of-range", _cam()(X, [mmcam.targets.ActionValue(9)]), TargetError, "action 9 is out of range"),
    Bad("target-caption-on-class-logits", _cam()(X, [mmcam.targets.CaptionTokens([0], [1])]), TargetError, r"\(B, T, vocab\)"),
    Bad("target-segmentation-on-class-logits", _cam()(X, [mmcam.targets.SegmentationRegion([1])]), TargetError, r"\(B, C, h, w\)"),
    Bad(
        "target-sum-of-mismatched-shapes",
        _cam()(X, [mmcam.targets.ClassLogit(0) + (lambda out: out[:, :2])]),
        TargetError,
        r"ClassLogit\(0\) \+ <function",
        cause=RuntimeError,
    ),
    Bad("target-detached", _cam()(X, [lambda out: out[:, 0].detach()]), GradientError, "do not depend"),
    Bad("target-constant", _cam()(X, [lambda out: out[:, 0] * 0]), GradientError, "all zero"),
    # -- layers and methods ------------------------------------------------------------
    Bad("layer-unknown", _cam("blok")(X, [0]), LayerError, "close matches: 'block'"),
    Bad("layer-not-in-model", _cam(nn.Conv2d(3, 3, 1))(X, [0]), LayerError, "not part of the model"),
    Bad("layer-bad-type", _cam(3)(X, [0]), LayerError, "pass a module, a dotted name"),
    Bad("layer-empty-list", _cam([])(X, [0]), LayerError, "non-empty list"),
    Bad("layer-runs-twice", _cam("act")(torch.rand(1, 3, 16, 16), [0]), LayerError, "ran 2 times", model=lambda: SharedReLU()),
    Bad("method-unknown", _cam(method="gradcm")(X, [0]), MethodError, "close matches: 'gradcam'"),
    Bad("grad-mode-unknown", _cam(grad_mode="fast")(X, [0]), InputError, "grad_mode"),
    Bad("gae-vit-wrong-channels", _cam(None, method="gae")({"pixel_values": torch.rand(1, 4, 16, 16)}, [0]), ForwardError, "forward failed", model=tiny_vit),
    Bad("gae-vit-class-out-of-range", _cam(None, method="gae")({"pixel_values": torch.rand(1, 3, 16, 16)}, [5]), TargetError, "out of range", model=tiny_vit),
    Bad("gae-on-a-cnn", _cam(None, method="gae")(X, [0]), MethodError, "CAM method"),
    Bad("explain-class-out-of-range", _explain(np.zeros((8, 8, 3), np.uint8), target=9), TargetError, "out of range"),
    Bad("explain-method-unknown", _explain(np.zeros((8, 8, 3), np.uint8), method="nope"), MethodError, "pass one of: .*gradcam"),
    Bad("explain-layer-unknown", _explain(np.zeros((8, 8, 3), np.uint8), layers="stem.9"), LayerError, "close matches"),
]


@pytest.mark.parametrize("case", BAD, ids=[c.id for c in BAD])
def test_bad_input(case: Bad, tmp_path):
    model = case.model()
    before = snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MMCamWarning)
        with pytest.raises(case.error) as info:
            case.call(model, tmp_path)
    error = info.value
    message = str(error)
    assert isinstance(error, MMCamError)
    assert re.search(case.match, message), message
    assert "\n" not in message, message
    assert SAYS_WHAT_TO_PASS.search(message), f"does not say what to pass: {message}"
    if case.cause is not None:
        assert isinstance(error.__cause__, case.cause), repr(error.__cause__)
    assert_same_state(before, snapshot(model))


# -- unusual but valid: correct results, model untouched -------------------------------


def _reference(x: torch.Tensor, targets: list, layers: str = "block") -> mmcam.Explanation:
    return mmcam.CAM(user_model("eval"), layers, grad_mode="loop")(x, targets)


@dataclass
class Good:
    id: str
    model: Callable[[], nn.Module]
    call: Callable[[nn.Module, Path], Any]
    check: Callable[[Any], None]


def _same_maps(layers: str = "block", atol: float = 2e-2, x: torch.Tensor = X, targets=(1, 3)):
    def call(model, tmp):
        return mmcam.CAM(model, layers)(x, list(targets))

    def check(exp):
        ref = _reference(x.float(), list(targets))
        assert exp.maps.dtype == torch.float32
        torch.testing.assert_close(exp.maps, ref.maps, atol=atol, rtol=0)

    return call, check


def _shown(shape: tuple[int, int]):
    def check(exp):
        assert exp.image.shape[:2] == shape and exp.image.dtype == np.uint8
        assert exp.maps.shape[-2:] == shape and bool(torch.isfinite(exp.maps).all())

    return check


def _explain_ok(image: Any, **kw: Any):
    return lambda model, tmp: mmcam.explain_classification(model, write_file(tmp, image) if isinstance(image, str) else image, **kw)


def _not_flat(exp):
    assert exp.image.std() > 10  # not saturated to white or black (PIL's convert("RGB") of I;16 is)


def _photo(name: str) -> Path:
    import ultralytics

    return Path(ultralytics.__file__).parent / "assets" / name


GOOD = [
    Good("fp16-model", half(torch.float16), *_same_maps(atol=0.05)),
    Good("bf16-model", half(torch.bfloat16), *_same_maps(atol=0.08)),
    Good("float64-input", lambda: user_model("eval"), *_same_maps(x=X.double(), atol=1e-5)),
    Good("channels-last-model", channels_last, *_same_maps(x=X.to(memory_format=torch.channels_last), atol=1e-5)),
    Good("data-parallel-explicit-layer", data_parallel, *_same_maps(layers="module.block", atol=1e-5)),
    Good("data-parallel-default-layer", data_parallel, lambda m, t: mmcam.CAM(m)(X, [1]), lambda e: e.layers == ["module.block"] or pytest.fail(e.layers)),
    Good("all-parameters-frozen", all_frozen, *_same_maps(atol=1e-5)),
    Good("user-hooks-everywhere", with_every_hook, *_same_maps(atol=1e-5)),
    Good("train-mode-default-layer", user_model, lambda m, t: mmcam.CAM(m)(X, [1]), lambda e: e.layers == ["block"] or pytest.fail(e.layers)),
    Good(
        "train-mode-scorecam",
        user_model,
        lambda m, t: mmcam.CAM(m, "block", method="scorecam")(X, [1]),
        lambda e: e.maps.shape == (2, 1, 16, 16) or pytest.fail(),
    ),
    Good(
        "guided-gradcam-train-mode",
        user_model,
        lambda m, t: mmcam.GuidedGradCAM(m, "block")(X, [1]),
        lambda e: e.pixels.shape == (2, 1, 3, 16, 16) or pytest.fail(),
    ),
    Good(
        "gae-vit-train-mode",
        tiny_vit,
        lambda m, t: mmcam.CAM(m, None, method="gae")({"pixel_values": torch.rand(2, 3, 16, 16)}, [1]),
        lambda e: e.maps.shape == (2, 1, 16, 16) or pytest.fail(),
    ),
    Good(
        "vit-default-layer-bf16",
        lambda: tiny_vit().to(torch.bfloat16),
        lambda m, t: mmcam.CAM(m)({"pixel_values": torch.rand(1, 3, 16, 16)}, [1]),
        lambda e: e.layers[0].endswith("layernorm_before") or pytest.fail(e.layers),
    ),
    Good(
        "segformer-train-mode-cam",
        tiny_segformer,
        lambda m, t: mmcam.CAM(m)({"pixel_values": torch.rand(1, 3, 32, 32)}, [mmcam.targets.SegmentationRegion([1])]),
        lambda e: e.maps.shape == (1, 1, 32, 32) or pytest.fail(),
    ),
    Good(
        "tiny-1x1-input",
        lambda: user_model("eval"),
        lambda m, t: mmcam.CAM(m, "block")(torch.rand(1, 3, 1, 1), [0]),
        lambda e: e.maps.shape == (1, 1, 1, 1) or pytest.fail(),
    ),
    Good("fp16-explain-from-path", half(torch.float16), _explain_ok("rotated.jpg", topk=2), _shown((20, 12))),
    Good("bf16-explain-from-array", half(torch.bfloat16), _explain_ok(np.full((10, 14, 3), 0.25, np.float32)), _shown((10, 14))),
    Good("exif-rotated-jpeg", user_model, _explain_ok("rotated.jpg"), _shown((20, 12))),
    Good("gray-16-bit-png", user_model, _explain_ok("gray16.png"), lambda e: (_shown((12, 20))(e), _not_flat(e))),
    Good("float-tiff", user_model, _explain_ok("unit.tif"), lambda e: (_shown((12, 20))(e), _not_flat(e))),
    Good("palette-png-transparent", user_model, _explain_ok("palette.png"), _shown((12, 20))),
    Good("la-png", user_model, _explain_ok("la.png"), _shown((12, 20))),
    Good("rgba-png", user_model, _explain_ok("rgba.png"), _shown((12, 20))),
    Good("cmyk-jpeg", user_model, _explain_ok("cmyk.jpg"), _shown((12, 20))),
    Good("bilevel-png", user_model, _explain_ok("bilevel.png"), _shown((12, 20))),
    Good("float-array-0-255", user_model, _explain_ok(np.full((6, 6, 3), 200.0)), lambda e: int(e.image[0, 0, 0]) == 200 or pytest.fail(e.image[0, 0])),
    Good("uint16-array", user_model, _explain_ok(np.full((6, 6), 65535, np.uint16)), lambda e: int(e.image.min()) == 255 or pytest.fail()),
    Good("real-photo-bus", user_model, lambda m, t: mmcam.explain_classification(m, _photo("bus.jpg"), size=32), _shown((1080, 810))),  # maps on the photo
    Good("real-photo-zidane", user_model, lambda m, t: mmcam.explain_classification(m, _photo("zidane.jpg"), size=24), _shown((720, 1280))),
]


@pytest.mark.parametrize("case", GOOD, ids=[c.id for c in GOOD])
def test_unusual_input(case: Good, tmp_path):
    model = case.model()
    before = snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MMCamWarning)
        result = case.call(model, tmp_path)
    case.check(result)
    assert_same_state(before, snapshot(model))


def test_real_photos_from_skimage():
    skimage_data = pytest.importorskip("skimage.data")
    model = user_model()
    before = snapshot(model)
    for image in (skimage_data.astronaut(), skimage_data.coffee(), skimage_data.chelsea().astype(np.float32) / 255):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MMCamWarning)
            exp = mmcam.explain_classification(model, image)
        assert exp.image.shape == image.shape and exp.maps.shape[-2:] == image.shape[:2]
    assert_same_state(before, snapshot(model))


# -- warnings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "inputs, match",
    [
        (torch.full((1, 3, 8, 8), float("nan")), "NaN or Inf"),
        (X.clone().index_fill_(2, torch.tensor([0]), float("inf")), "NaN or Inf"),
        (torch.full((1, 3, 8, 8), 1e6), "NaN or Inf"),  # finite in float32, Inf in the model's fp16
    ],
    ids=["nan", "inf", "overflows-fp16"],
)
def test_nonfinite_inputs_warn(inputs, match):
    model = user_model("eval").half()
    before = snapshot(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            mmcam.CAM(model, "block")(inputs, [0])
        except GradientError:
            pass  # NaN scores may leave no usable gradient: the warning already said why
    found = [w for w in caught if issubclass(w.category, MMCamWarning)]
    assert found and re.search(match, str(found[0].message)), [str(w.message) for w in caught]
    assert "\n" not in str(found[0].message) and "pass" in str(found[0].message).lower()
    assert_same_state(before, snapshot(model))


def test_all_zero_maps_warn():
    class Negative(nn.Module):  # the logit decreases with the activation everywhere
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).mean((2, 3)))

    model = Negative()
    with torch.no_grad():
        model.conv.weight.fill_(0.1)
        model.conv.bias.fill_(0.1)
        model.fc.weight.fill_(-1.0)
    before = snapshot(model)
    with pytest.warns(MMCamWarning, match=r"2 of 2 maps are all zero.*ClassLogit\(0\)") as caught:
        exp = mmcam.CAM(model, "conv")(torch.rand(2, 3, 8, 8), [0])
    assert float(exp.maps.max()) == 0.0
    assert all("\n" not in str(w.message) for w in caught)
    assert_same_state(before, snapshot(model))


def test_no_warning_on_ordinary_maps():
    model = user_model("eval")
    with warnings.catch_warnings():
        warnings.simplefilter("error", MMCamWarning)
        mmcam.CAM(model, "block", method="layercam")(X, [0])


@pytest.mark.skipif(not os.environ.get("MMCAM_TEST_COMPILE"), reason="torch.compile takes ~25 s on a 2-core CPU; set MMCAM_TEST_COMPILE=1")
def test_torch_compile():
    model = user_model("eval")
    compiled = torch.compile(model)
    before = snapshot(model)
    exp = mmcam.CAM(compiled, "_orig_mod.block")(X, [1, 3])
    torch.testing.assert_close(exp.maps, _reference(X, [1, 3]).maps, atol=1e-4, rtol=0)
    assert_same_state(before, snapshot(model))


def test_catalogue_size():
    assert len(BAD) + len(GOOD) + 3 + 2 + 1 >= 60


def test_gae_twice_leaves_no_transformers_capture_hooks():
    """transformers installs output-capturing hooks on a model's first output_attentions call
    and keeps them; gae removes the ones it caused, and the next call still captures."""
    model = tiny_vit().eval()
    before = snapshot(model)
    x = {"pixel_values": torch.rand(1, 3, 16, 16)}
    first = mmcam.CAM(model, None, method="gae")(x, [1])
    assert_same_state(before, snapshot(model))
    second = mmcam.CAM(model, None, method="gae")(x, [1])
    torch.testing.assert_close(first.maps, second.maps)
    assert_same_state(before, snapshot(model))
    model(**x, output_attentions=True)  # the user's own call: transformers' hooks, kept as it installs them
    hooked = snapshot(model)
    mmcam.CAM(model, None, method="gae")(x, [1])
    assert_same_state(hooked, snapshot(model))


# -- task calls (the lead's task code wires engine.guard.untouched around its own forwards) --


def test_task_wrapped_in_untouched_leaves_train_mode_segformer_as_found():
    from mmcam.engine.guard import untouched

    model = tiny_segformer()
    image = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    before = snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with untouched(model):
            mmcam.explain_segmentation(model, image, class_id=1)
    assert_same_state(before, snapshot(model))


def test_explain_segmentation_leaves_train_mode_segformer_as_found():
    model = tiny_segformer()
    image = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    before = snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mmcam.explain_segmentation(model, image, class_id=1)
    assert_same_state(before, snapshot(model))


def test_three_d_batches_that_models_expand_themselves_are_not_refused():
    """Only a Conv2d that receives a 3-D tensor proves a missing batch dimension: a model
    taking (B, T, F) spectrograms and adding the channel itself works with B = 1."""

    class Spectrogram(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x[:, None])).mean((2, 3)))

    model = Spectrogram()
    before = snapshot(model)
    exp = mmcam.CAM(model, "conv")(torch.rand(1, 12, 20), [0])
    assert exp.raw.shape == (1, 1, 12, 20)
    assert_same_state(before, snapshot(model))
