"""What every model family provides: its own pipeline from a photo to model inputs.

A family object (one per model kind: a YOLO detector, a DETR-family detector, a torchvision
detector, an HF or torchvision classifier, a segmenter, each captioner / VQA kind) has the
same few entries, chosen once per call by the task:

* ``prepare(photo)`` → :class:`Prepared`: the model's **own** pipeline (ultralytics'
  letterbox, the HF processor, torchvision's weights transforms), with the :class:`Frame`
  that maps its input back to the photo;
* ``module``: the ``nn.Module`` the engine hooks; ``context()``: the mode it runs in;
* ``default_layers(inputs)`` and ``reshape``: where and how the maps are read; ``edge``: how
  they are resampled past the outermost cell centres (:func:`mmcam.engine.combine.upsample`);
* the model's own decoding (kept boxes, masks, regions), in the photo's coordinates.

This module holds the shared pieces: :class:`Prepared`, :func:`processor_prepare` (any
HF-style processor, its frame read from the processor's own settings) and
:func:`imagenet_prepare` (the documented default for a plain classifier).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..errors import InputError
from .frame import Frame

__all__ = ["Prepared", "Kept", "Family", "processor_prepare", "imagenet_prepare", "eval_mode", "IMAGENET_MEAN", "IMAGENET_STD", "DEFAULT_SHORT_SIDE"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: a plain classifier without a processor: the photo's shorter side is resized to this (aspect
#: kept, nothing cropped), then ImageNet mean / std, as torchvision's weights resize.
DEFAULT_SHORT_SIDE = 224


@dataclass
class Kept:
    """One image's kept detections: raw ``indices`` (YOLO anchors, DETR queries, torchvision
    kept positions), ``classes``, ``confidences`` (K,), ``boxes`` (K, 4) xyxy in the model
    input and ``photo_boxes`` in the photo; YOLO segment models: ``masks`` (K, h, w) bool in
    the input (ultralytics' own), ``regions`` at prototype resolution; ``extra``: what the
    family's scoring keeps (a box-term reference, a target object)."""

    indices: list[int]
    classes: list[int]
    confidences: torch.Tensor
    boxes: torch.Tensor
    photo_boxes: torch.Tensor
    masks: "torch.Tensor | None" = None
    regions: "torch.Tensor | None" = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.indices)

    def subset(self, keep: torch.Tensor) -> Kept:
        take = [i for i, k in enumerate(keep.tolist()) if k]
        pick = lambda t: None if t is None else t[take]  # noqa: E731
        return Kept(
            [self.indices[i] for i in take],
            [self.classes[i] for i in take],
            self.confidences[take],
            self.boxes[take],
            self.photo_boxes[take],
            pick(self.masks),
            pick(self.regions),
        )


@dataclass
class Prepared:
    """One photo ready for the model: ``inputs`` (a batch of one: tensor or dict of tensors),
    the ``photo`` as the viewer shows it (uint8 ``(H, W, 3)``), the :class:`Frame` from photo to
    input, and task ``extra`` (e.g. a question)."""

    inputs: Any
    photo: np.ndarray
    frame: Frame
    extra: dict[str, Any] = field(default_factory=dict)

    def signature(self) -> Any:
        """Equal for inputs that can be stacked into one batch."""
        x = self.inputs
        if isinstance(x, torch.Tensor):
            return tuple(x.shape[1:])
        return tuple(sorted((k, tuple(v.shape[1:]) if isinstance(v, torch.Tensor) else repr(v)) for k, v in x.items()))


class Family:
    """Base of the family objects (see the module docstring); ``model`` is what the user holds."""

    name = "model"
    reshape: Any = "auto"
    edge = "replicate"  # CAM(edge=...): the outer half cell of each map flat (F.interpolate)

    def __init__(self, model: Any, processor: Any = None):
        self.model, self.processor = model, processor

    @property
    def module(self) -> nn.Module:
        return self.model

    def context(self) -> Any:
        return nullcontext()

    def prepare(self, photo: Image.Image) -> Prepared:
        raise NotImplementedError

    def default_layers(self, inputs: Any) -> Any:
        """``None``: the engine's structural choice (:func:`mmcam.engine.layers.default_layers`)."""
        return None

    def layers_and_reshape(self, inputs: Any, layers: Any) -> tuple[Any, Any]:
        """The layers to hook (the user's, else the family's default) and the reshape to use."""
        return (self.default_layers(inputs) if layers is None else layers), self.reshape


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Every submodule in eval mode for the block; each ``training`` flag restored after."""
    flags = {m: m.training for m in module.modules()}
    try:
        module.eval()
        yield module
    finally:
        for m, flag in flags.items():
            m.training = flag


def imagenet_prepare(photo: Image.Image, short_side: int | None = DEFAULT_SHORT_SIDE) -> Prepared:
    """The documented default for a plain classifier: shorter side to ``short_side`` (bilinear,
    aspect kept, no crop; ``None`` keeps the size), ImageNet mean / std."""
    w, h = photo.size
    resized = photo
    if short_side is not None and min(h, w) != short_side:
        scale = short_side / min(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        resized = photo.resize(size, Image.BILINEAR)
    arr = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    x = ((arr - mean) / std)[None]
    frame = Frame.resize((h, w), tuple(x.shape[-2:]), f"imagenet: shorter side {short_side}, mean/std")
    return Prepared(x, np.asarray(photo), frame)


def processor_prepare(processor: Any, photo: Image.Image, **text: Any) -> Prepared:
    """``processor(images=photo, **text)`` as model inputs (an HF processor's dict of tensors,
    or the tensor a callable returns), with the frame read from the processor's own settings:
    a centre crop (HF ``do_center_crop`` / ``crop_size``, torchvision ``ImageClassification``'s
    ``resize_size`` / ``crop_size``) or else a resize of the whole photo to the input's size."""
    try:
        try:
            out = processor(images=photo, return_tensors="pt", **text)
        except TypeError:
            if text:
                raise
            out = processor(photo)  # a plain callable (torchvision transforms): PIL image -> tensor
    except Exception as error:  # noqa: BLE001 - any processor failure is the caller's input
        raise InputError(
            f"the processor ({type(processor).__name__}) rejected the image{' and text' if text else ''}: {error}. "
            "Pass the model's own processor (e.g. BlipProcessor, GitProcessor, CLIPProcessor, not its tokenizer) "
            "and an RGB image (path, PIL image, HxWx3 array)"
        ) from None
    if isinstance(out, torch.Tensor):
        inputs: Any = out[None] if out.ndim == 3 else out
        pixels = inputs
    else:
        inputs = {k: v for k, v in dict(out).items() if isinstance(v, torch.Tensor)}
        pixels = inputs.get("pixel_values")
    if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4:
        raise InputError(
            f"the processor ({type(processor).__name__}) returned no (B, 3, H, W) image tensor; pass the "
            "model's image processor (an HF processor, or a callable PIL image -> tensor (3, H, W))"
        )
    w, h = photo.size
    return Prepared(inputs, np.asarray(photo), _processor_frame(processor, (h, w), tuple(pixels.shape[-2:])))


def _processor_frame(processor: Any, photo: tuple[int, int], size: tuple[int, int]) -> Frame:
    name = type(processor).__name__
    image_processor = getattr(processor, "image_processor", processor)
    crop = _crop_size(image_processor)
    if crop is not None and tuple(crop) == tuple(size):
        resized = _resized_before_crop(image_processor, photo)
        if resized is not None:
            return Frame.resize_crop(photo, resized, crop, f"{name}: resize {resized[0]}x{resized[1]}, centre crop {crop[0]}x{crop[1]}")
    return Frame.resize(photo, size, f"{name}: resize to {size[0]}x{size[1]}")


def _sizes(value: Any) -> Any:
    """An HF size setting as a plain dict (transformers 5's ``SizeDict`` iterates its set fields)."""
    return dict(value) if type(value).__name__ == "SizeDict" else value


def _crop_size(p: Any) -> tuple[int, int] | None:
    crop = _sizes(getattr(p, "crop_size", None))
    if getattr(p, "do_center_crop", crop is not None and type(p).__name__ == "ImageClassification") is False or crop is None:
        return None
    if isinstance(crop, dict):
        if "height" in crop:
            return int(crop["height"]), int(crop["width"])
        return None
    crop = list(crop) if isinstance(crop, (list, tuple)) else [crop]
    return (int(crop[0]), int(crop[-1]))


def _resized_before_crop(p: Any, photo: tuple[int, int]) -> tuple[int, int] | None:
    """The (h, w) the photo is resized to before the crop: a shorter-side resize (torchvision
    ``resize_size``, HF ``size["shortest_edge"]``), or a fixed (height, width)."""
    h, w = photo
    short = None
    size = getattr(p, "resize_size", None)
    if size is not None:
        short = size[0] if isinstance(size, (list, tuple)) and len(size) == 1 else size
        if isinstance(size, (list, tuple)) and len(size) == 2:
            return int(size[0]), int(size[1])
    hf = _sizes(getattr(p, "size", None))
    if isinstance(hf, dict):
        if "shortest_edge" in hf:
            short = hf["shortest_edge"]
        elif "height" in hf:
            return int(hf["height"]), int(hf["width"])
    if short is None:
        return None
    short = int(short)
    if h <= w:  # torchvision / HF shorter-side resize: the long side is int(short * long / short_side)
        return short, int(short * w / h)
    return int(short * h / w), short
