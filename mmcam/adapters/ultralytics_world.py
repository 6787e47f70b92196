"""YOLO-World and YOLOE (``ultralytics.YOLOWorld`` / ``YOLOE``) with the user's text classes.

YOLO-World (Cheng et al., 2024, https://arxiv.org/abs/2401.17270) and YOLOE (Wang et al., 2025,
https://arxiv.org/abs/2503.07465) score anchor ``a`` for class ``c`` by a region-text contrast,
``s[c, a] = exp(t) · <BN(e_a), w_c / |w_c|> + b``, where ``e_a`` is the class branch's
(``cv3``) embedding of the anchor and ``w_c`` the text embedding of class ``c``. ultralytics'
workflow sets the classes once (``model.set_classes([...])``: the text encoder — CLIP ViT-B/32
for YOLO-World, MobileCLIP for YOLOE — encodes them into the inner model's ``txt_feats`` /
``pe``, ``names`` follows) and then predicts with no text encoder. mmcam does the same:

* **classes already set** (or a random-init model's placeholders): the predictor's fused copy
  runs with the model's embeddings; boxes (and YOLOE-seg masks), NMS and photo coordinates are
  :class:`~mmcam.adapters.ultralytics.YoloFamily`'s, box k's target its contrast logit
  ``raw["scores"][:, c_k, a_k]`` (the dense logits: the class logit is not a function of the
  class branch alone, so the local-window path of :mod:`mmcam.adapters.yolo_local` does not apply);
* **text=[...]**: the model's own ``get_text_pe`` encodes the queries into mmcam's fused copy
  only (the user's embeddings / ``names`` / head ``nc`` are never written) when its text
  encoder's package and weights are on this machine; otherwise an
  :class:`~mmcam.errors.InputError` names what is missing instead of letting ultralytics
  download it. A prompt-free YOLOE (LRPC head) has no text classes and is refused.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..engine.guard import model_lock
from ..errors import InputError
from .ultralytics import YoloFamily, inner_model

__all__ = ["is_text_yolo", "text_encoder", "text_encoder_missing", "YoloWorldFamily"]

TEXT_HEADS = ("WorldDetect", "YOLOEDetect", "YOLOESegment", "YOLOESegment26")
_MOBILECLIP = {"mobileclip": "mobileclip_blt.ts", "mobileclip2": "mobileclip2_b.ts"}  # build_text_model's TorchScript files


def is_text_yolo(model: Any) -> bool:
    """True for a YOLO-World or YOLOE model (its head contrasts regions with text embeddings)."""
    try:
        return type(inner_model(model).model[-1]).__name__ in TEXT_HEADS
    except InputError:
        return False


def _world(inner: Any) -> bool:
    return type(inner.model[-1]).__name__ == "WorldDetect"


def text_encoder(inner: Any) -> tuple[str, Path]:
    """``(name, weights file)`` of the text encoder the model's ``get_text_pe`` builds."""
    from ultralytics.utils import WEIGHTS_DIR

    if _world(inner):
        return "CLIP ViT-B/32", Path(WEIGHTS_DIR) / "clip" / "ViT-B-32.pt"  # where ultralytics' CLIP wrapper has clip.load keep it
    base = str(getattr(inner, "text_model", "mobileclip:blt")).split(":")[0]
    file = _MOBILECLIP.get(base, f"{base} weights")
    return f"MobileCLIP ({base}, {file})", Path(file) if Path(file).is_file() else Path(WEIGHTS_DIR) / file


def text_encoder_missing(inner: Any) -> str | None:
    """What the model's text encoder lacks on this machine (``None``: it loads offline). Checked
    without calling ultralytics' loader, which pip-installs CLIP and downloads the weights."""
    name, weights = text_encoder(inner)
    missing = []
    if importlib.util.find_spec("clip") is None:  # both encoders tokenise with the CLIP package
        missing.append("the OpenAI CLIP package (`pip install git+https://github.com/ultralytics/CLIP.git`)")
    if not weights.is_file():
        missing.append(f"the {name} text-encoder weights ({weights})")
    return " and ".join(missing) or None


class YoloWorldFamily(YoloFamily):
    """A YOLO-World / YOLOE model run as its ``predict`` runs it, optionally with ``text``
    classes (see the module docstring); the other arguments are :class:`YoloFamily`'s."""

    name = "ultralytics YOLO-World / YOLOE"
    local_head = False  # the class logit is a text contrast of the branch output: dense logits

    def __init__(self, model: Any, text: "Sequence[str] | None" = None, **kwargs: Any):
        source = inner_model(model)
        if hasattr(source.model[-1], "lrpc"):
            raise InputError(
                "a prompt-free YOLOE (its LRPC head scores a built-in vocabulary, with no class logits per text) is not "
                "explained; load the text/visual-prompt YOLOE checkpoint (yoloe-*-seg.pt, not *-pf.pt) and set_classes"
            )
        super().__init__(model, **kwargs)
        self.key = "txt_feats" if _world(source) else "pe"
        if text is None:
            feats, nc = getattr(source, self.key, None), int(source.model[-1].nc)
        else:
            queries = [str(t) for t in ([text] if isinstance(text, str) else text)]
            if not queries or any(not q.strip() for q in queries):
                raise InputError(f"text= needs one or more non-empty class names; got {list(queries)!r}")
            if getattr(source.model[-1], "is_fused", False):
                raise InputError("this YOLOE has its classes fused into the head weights; pass an unfused model for text=, or explain without text=")
            missing = text_encoder_missing(source)
            if missing:
                raise InputError(
                    f"text= encodes the classes with the model's {text_encoder(source)[0]} text encoder, and this machine lacks "
                    f"{missing} (ultralytics would download them). Call model.set_classes({queries!r}) where the encoder is available "
                    "(the embeddings are then stored in the model), then explain without text="
                )
            with torch.no_grad():
                feats, nc = source.get_text_pe(queries), len(queries)
            self.names = dict(enumerate(queries))
        self.feats, self.nc = None if feats is None else feats.detach().clone(), nc  # set on the copy in context(), under its lock

    def _sync(self) -> None:
        """The classes on mmcam's fused copy (shared per model, so set again for each run)."""
        if self.feats is not None:
            setattr(self.inner, self.key, self.feats)
        elif hasattr(self.inner, self.key):
            delattr(self.inner, self.key)  # a YOLOE without classes set: get_cls_pe's zeros placeholder
        head = self.inner.model[-1]
        head.nc, head.no = self.nc, self.nc + head.reg_max * 4

    @contextmanager
    def context(self) -> Iterator[None]:
        """The classes set on the shared fused copy and the run under that copy's lock (the engine's
        re-entrant lock): two threads explaining with different ``text=`` never mix classes."""
        with model_lock(self.inner):
            self._sync()
            with super().context():
                yield
