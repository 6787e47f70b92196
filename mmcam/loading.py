"""Model loading for ``mmcam explain`` / ``batch`` / ``evaluate``: one spec string, one place.

``load_model(spec)`` takes ``zoo:NAME`` (a shipped model), a local HF model directory or a
cached hub id (never the network), an ultralytics ``.pt`` checkpoint or ``.yaml`` model, or
a torchvision model name with a weights file; ``load_observation`` reads the action task's
``.npy`` observations.

**Safe by default** (see ``docs/safety.md``): nothing a file contains runs while it loads.
Ultralytics ``.pt`` checkpoints are pickles; they load through ultralytics' restricted
loader (``torch.load(weights_only=True)`` against its allow-list of model classes), which
also builds ``.yaml`` models without ``eval``. HF directories load from safetensors only;
torchvision weights from safetensors or a ``weights_only`` state dict. A file that needs the
full unpickler is refused with one line naming ``trust_pickle=True`` / ``--trust-pickle``,
the opt-in for files you trust as you would trust code.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import InputError

__all__ = ["load_model", "load_observation", "HF_AUTO", "TRUST_HINT"]

#: The transformers class each task loads an HF model with.
HF_AUTO = {
    "classify": "AutoModelForImageClassification",
    "segment": "AutoModelForSemanticSegmentation",
    "caption": "VisionEncoderDecoderModel",
    "vqa": "AutoModelForVisualQuestionAnswering",
    "detect": "AutoModelForObjectDetection",
}

#: How to opt in, named by every refusal.
TRUST_HINT = "if you trust the file as you would trust code, pass --trust-pickle (Python: load_model(..., trust_pickle=True))"


def load_model(spec: str, weights: str | None = None, task: str = "classify", *, trust_pickle: bool = False) -> tuple[Any, Any]:
    """``(model, processor)`` for ``zoo:NAME``, an ultralytics weights/yaml file, a local HF
    model directory (``save_pretrained`` output) or cached hub id, or a torchvision model name
    (``weights``: its state dict). ``trust_pickle``: allow files that only a full unpickler
    can read (runs whatever code they carry)."""
    if spec.startswith("zoo:"):
        from . import zoo

        return zoo.load(spec[4:])  # only the shipped names (the error lists them)
    path = Path(spec)
    if spec.endswith((".pt", ".yaml", ".yml")):
        if not path.exists() and not spec.endswith((".yaml", ".yml")):
            raise InputError(f"ultralytics weights file {spec!r} does not exist; pass the path of your .pt file")
        return _load_yolo(spec, trust_pickle), None
    if not path.exists() and _looks_like_hub_id(spec):
        return _load_hf(spec, task, f"{spec!r} (no such local directory; read as an HF hub id)", trust_pickle)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise InputError(f"{spec!r} is a directory without config.json; pass a local HF model directory (save_pretrained)")
        return _load_hf(spec, task, f"directory {spec!r}", trust_pickle)
    import torchvision

    if spec in torchvision.models.list_models(module=torchvision.models):
        model = torchvision.models.get_model(spec, weights=None)
        if weights:
            model.load_state_dict(_load_weights(Path(weights)))
        return model.eval(), None
    if spec in torchvision.models.list_models(module=torchvision.models.detection):  # SSD, Mask / Keypoint R-CNN, ...
        model = torchvision.models.get_model(spec, weights=None, weights_backbone=None)  # no backbone download
        if weights:
            model.load_state_dict(_load_weights(Path(weights)))
        return model.eval(), None
    raise InputError(
        f"unknown model spec {spec!r}; pass zoo:NAME (see `mmcam list`), a local HF model directory, an "
        "ultralytics .pt file, or a torchvision model name with --weights FILE"
    )


def load_observation(path: Path) -> Any:
    """An observation ``(C, H, W)`` (frame stacks on C) from a ``.npy`` file (no pickles)."""
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read observation {str(path)!r}: {error}; pass a .npy array (C, H, W) saved with numpy.save") from None


def _looks_like_hub_id(spec: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", spec) is not None


# -- ultralytics ------------------------------------------------------------------------------

_SAFE_LOAD_LOCK = threading.Lock()


def _load_yolo(spec: str, trust_pickle: bool) -> Any:
    """``ultralytics.YOLO(spec)``; unless trusted, under ultralytics' restricted loading."""
    try:
        return _yolo(spec, trust_pickle)
    except FileNotFoundError as error:
        raise InputError(
            f"{spec!r} is neither a file nor an ultralytics model yaml ({' '.join(str(error).split())}); pass the path of your "
            ".pt / .yaml file, or a yaml name ultralytics ships (yolov8n.yaml, yolo11n-seg.yaml, ...)"
        ) from None


def _yolo(spec: str, trust_pickle: bool) -> Any:
    from ultralytics import RTDETR, YOLO

    # YOLO(path) turns a .pt with an RT-DETR head into an RTDETR itself, not an rtdetr-*.yaml
    build = RTDETR if spec.endswith((".yaml", ".yml")) and "rtdetr" in Path(spec).stem.lower() else YOLO
    if trust_pickle:
        return build(spec)
    import pickle

    with _ultralytics_restricted(spec):
        try:
            return build(spec)
        except (TypeError, pickle.UnpicklingError, ModuleNotFoundError) as error:
            reason = str(error).replace("ERROR ❌️ ", "").strip().splitlines()[0]
            raise InputError(f"refused to load {spec!r} under restricted loading ({reason}); {TRUST_HINT}") from None


@contextmanager
def _ultralytics_restricted(spec: str) -> Iterator[None]:
    """Ultralytics' own restricted loading for one load: what ``ULTRALYTICS_SAFE_LOAD=1``
    switches on for a whole process. Checkpoints unpickle with ``torch.load(weights_only=True)``
    against its allow-list of model classes; model yamls resolve layers and activations
    without ``eval``. Ultralytics reads the environment variable once, at import, into
    ``ultralytics.nn.tasks.SAFE_LOAD``, which ``YOLO(path)`` consults on every load; this
    sets that flag for the call and puts it back (other threads' ultralytics loads in that
    window are restricted too, never the other way round)."""
    from ultralytics.nn import tasks

    if not getattr(getattr(tasks, "_SafeLoad", None), "SUPPORTED", False) or not hasattr(tasks, "SAFE_LOAD"):
        raise InputError(
            f"this ultralytics/torch has no restricted loader (needs ultralytics with ULTRALYTICS_SAFE_LOAD and "
            f"torch >= 2.6), so {spec!r} cannot be loaded safely; upgrade them, or {TRUST_HINT}"
        )
    with _SAFE_LOAD_LOCK:
        previous = tasks.SAFE_LOAD
        tasks.SAFE_LOAD = True
        try:
            yield
        finally:
            tasks.SAFE_LOAD = previous


# -- transformers and torchvision -----------------------------------------------------------


def _load_hf(spec: str, task: str, what: str, trust_pickle: bool = False) -> tuple[Any, Any]:
    """A transformers model + processor from a local directory or the local HF cache, never
    the network (``local_files_only``): a hub id that is not cached is a one-line error.
    Weights come from safetensors unless ``trust_pickle`` (then ``.bin`` too, which
    transformers reads with ``torch.load(weights_only=True)``)."""
    if task not in HF_AUTO:
        raise InputError(f"HF models are supported for tasks {sorted(HF_AUTO)}, not {task!r}")
    path = Path(spec)
    if not trust_pickle and path.is_dir() and not any(path.glob("*.safetensors")) and _pickle_weights(path):
        raise InputError(
            f"{what} has pickled weights ({', '.join(_pickle_weights(path))}) and no safetensors; save it with save_pretrained (safetensors), or {TRUST_HINT}"
        )
    import transformers

    auto = "AutoModelForImageTextToText" if task in ("caption", "vqa") and _generative_vlm(spec) else _auto_class(transformers, spec, task)
    try:
        model = getattr(transformers, auto).from_pretrained(spec, local_files_only=True, use_safetensors=None if trust_pickle else True).eval()
    except OSError as error:
        if not trust_pickle and "safetensors" in str(error):
            raise InputError(f"{what} has no safetensors weights, and pickled ones are refused by default; {TRUST_HINT}") from None
        raise InputError(
            f"{what} is not in the local HF cache, and loading it would need the network; on a connected machine run "
            f"`hf download {spec}` (or save_pretrained to a directory) and pass that, or pass zoo:NAME"
        ) from None
    except ValueError as error:
        raise InputError(f"{what} cannot do the {task!r} task ({str(error).splitlines()[0]}); pass a model made for it") from None
    try:
        processor = transformers.AutoProcessor.from_pretrained(spec, local_files_only=True)
    except (OSError, ValueError):
        raise InputError(f"no processor saved with {what}; save it beside the model with processor.save_pretrained()") from None
    return model, processor


def _auto_class(transformers: Any, spec: str, task: str) -> str:
    """``HF_AUTO[task]``; for detect, the zero-shot class when the saved config is an
    open-vocabulary detector (OWL-ViT, OWLv2, Grounding DINO)."""
    if task == "detect":
        from transformers.models.auto.modeling_auto import MODEL_FOR_ZERO_SHOT_OBJECT_DETECTION_MAPPING_NAMES as zero_shot

        try:
            model_type = transformers.AutoConfig.from_pretrained(spec, local_files_only=True).model_type
        except (OSError, ValueError):
            model_type = None
        if model_type in zero_shot:
            return "AutoModelForZeroShotObjectDetection"
    return HF_AUTO[task]


def _generative_vlm(spec: str) -> bool:
    """Whether the saved config names a generative VLM (LLaVA, Qwen2-VL, ...): those answer and
    caption as text and load with ``AutoModelForImageTextToText``."""
    import transformers

    from .adapters.vlm import GENERATIVE_VLMS

    try:
        config = transformers.AutoConfig.from_pretrained(spec, local_files_only=True)
    except (OSError, ValueError):
        return False
    return any(name in GENERATIVE_VLMS for name in getattr(config, "architectures", None) or [])


def _pickle_weights(directory: Path) -> list[str]:
    return sorted(p.name for pattern in ("*.bin", "*.pt", "*.pth", "*.ckpt") for p in directory.glob(pattern))


def _load_weights(path: Path) -> dict:
    """A torchvision state dict: safetensors, or ``torch.load(weights_only=True)`` (tensors
    and containers only; a pickle that needs more is refused by torch)."""
    if not path.exists():
        raise InputError(f"weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import pickle

    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = next(
            (line.split("error: ", 1)[-1].split(". ")[0] for line in lines if "WeightsUnpickler" in line), lines[0] if lines else type(error).__name__
        )
        raise InputError(f"weights file {str(path)!r} is not a plain state dict ({reason}); save model.state_dict() with safetensors or torch.save") from None
