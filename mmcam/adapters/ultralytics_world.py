"""YOLO-World (``ultralytics.YOLOWorld``, a ``WorldDetect`` head) with the user's text classes.

YOLO-World (Cheng et al., 2024, https://arxiv.org/abs/2401.17270) scores anchor ``a`` for class
``c`` by a region-text contrast, ``s[c, a] = exp(t) · <BN(e_a), w_c / |w_c|> + b``, where ``e_a``
is the class branch's (``cv3``) embedding of the anchor and ``w_c`` the CLIP text embedding of
class ``c``. ultralytics' workflow sets the classes once (``model.set_classes([...])``: CLIP
ViT-B/32 encodes them into the inner ``WorldModel.txt_feats``, ``names`` follows) and then
predicts with no text encoder. mmcam does the same:

* **classes already set** (or a random-init model's ``nc`` placeholders): the predictor's fused
  copy runs with the model's ``txt_feats``; boxes, NMS and photo coordinates are
  :class:`~mmcam.adapters.ultralytics.YoloFamily`'s, box k's target its contrast logit
  ``raw["scores"][:, c_k, a_k]`` (the dense logits: the class logit is not a function of the
  class branch alone, so the local-window path of :mod:`mmcam.adapters.yolo_local` does not apply);
* **text=[...]**: the model's own ``get_text_pe`` encodes the queries into mmcam's fused copy
  only (the user's ``txt_feats`` / ``names`` / head ``nc`` are never written) when its CLIP
  package and weights are on this machine; otherwise an :class:`~mmcam.errors.InputError` names
  what is missing instead of letting ultralytics download it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from .ultralytics import YoloFamily, inner_model

__all__ = ["is_world", "text_encoder_missing", "YoloWorldFamily"]

CLIP_VARIANT = "ViT-B/32"  # WorldModel.get_text_pe's build_text_model("clip:ViT-B/32")


def is_world(model: Any) -> bool:
    """True for a YOLO-World model (its head is a ``WorldDetect``)."""
    try:
        return type(inner_model(model).model[-1]).__name__ == "WorldDetect"
    except InputError:
        return False


def text_encoder_missing() -> str | None:
    """What the YOLO-World text encoder lacks on this machine (``None``: it loads offline).
    Checked without calling ultralytics' loader, which pip-installs CLIP and downloads its weights."""
    from ultralytics.utils import WEIGHTS_DIR

    weights = Path(WEIGHTS_DIR) / "clip" / "ViT-B-32.pt"  # where ultralytics' CLIP wrapper has clip.load keep it
    missing = []
    if importlib.util.find_spec("clip") is None:
        missing.append("the OpenAI CLIP package (`pip install git+https://github.com/ultralytics/CLIP.git`)")
    if not weights.is_file():
        missing.append(f"the CLIP {CLIP_VARIANT} text-encoder weights ({weights})")
    return " and ".join(missing) or None


class YoloWorldFamily(YoloFamily):
    """A YOLO-World model run as ``YOLOWorld.predict`` runs it, optionally with ``text`` classes
    (see the module docstring); the other arguments are :class:`YoloFamily`'s."""

    name = "ultralytics YOLO-World"
    local_head = False  # the class logit is a text contrast of the branch output: dense logits

    def __init__(self, model: Any, text: "Sequence[str] | None" = None, **kwargs: Any):
        super().__init__(model, **kwargs)
        source = inner_model(model)
        if text is None:
            feats, nc = source.txt_feats, int(source.model[-1].nc)
        else:
            queries = [str(t) for t in ([text] if isinstance(text, str) else text)]
            if not queries or any(not q.strip() for q in queries):
                raise InputError(f"text= needs one or more non-empty class names for YOLO-World; got {list(queries)!r}")
            missing = text_encoder_missing()
            if missing:
                raise InputError(
                    f"text= for YOLO-World encodes the classes with its CLIP {CLIP_VARIANT} text encoder, and this machine lacks "
                    f"{missing} (ultralytics would download them). Call model.set_classes({queries!r}) where the encoder is available "
                    "(the embeddings are then stored in the model), then explain without text="
                )
            with torch.no_grad():
                feats, nc = source.get_text_pe(queries), len(queries)
            self.names = dict(enumerate(queries))
        self.txt_feats, self.nc = feats.detach().clone(), nc
        self._sync()

    def _sync(self) -> None:
        """The classes on mmcam's fused copy (shared per model, so set again for each run)."""
        self.inner.txt_feats = self.txt_feats
        head = self.inner.model[-1]
        head.nc, head.no = self.nc, self.nc + head.reg_max * 4

    def context(self) -> Any:
        self._sync()
        return super().context()
