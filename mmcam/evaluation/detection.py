"""Detector cases' helpers: box IoU, and the model input and probabilities of the explained
candidates on copies of a scene (YOLO's fused predictor copy, DETR's post-processed query scores)."""

from __future__ import annotations

from PIL import Image

from ..errors import InputError

__all__ = ["iou", "detector_scoring"]


def iou(a, b) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def detector_scoring(model, processor, photo, indices, classes):
    """``(x, probabilities, encode)``: the model input of a scene the detector takes as it is, and
    ``(N, C, H, W) -> (N, K)`` the probabilities of the explained candidates on copies of it
    (``encode``: another photo of that size as the same model input) —
    YOLO: the fused copy the predictor runs (class probabilities after the box); DETR family:
    the query's class probability as its post-processing scores it."""
    from ..adapters import detr
    from ..adapters import ultralytics as yolo

    if detr.is_detr(model):
        family = detr.DetrFamily(model, processor)
    else:
        family = yolo.YoloFamily(model)
    prepared = family.prepare(Image.fromarray(photo))
    if not prepared.frame.is_identity:
        raise InputError(
            f"the detect evaluation needs scenes the model takes as they are (got {prepared.frame.pipeline}); pass scenes at the model's input size"
        )
    if isinstance(family, detr.DetrFamily):
        x = prepared.inputs["pixel_values"][0]

        def probabilities(xs):
            with detr.eval_mode(model):
                logits = model(pixel_values=xs).logits
            probs = logits.softmax(-1) if family.scoring == "softmax" else logits.sigmoid()
            return probs[:, indices, classes]

        return x, probabilities, lambda p: family.prepare(Image.fromarray(p)).inputs["pixel_values"][0]
    x, inner = prepared.inputs[0], family.inner  # the fused copy the predictor runs
    dtype = next(inner.parameters()).dtype

    def probabilities(xs):
        with yolo.eval_mode(inner):
            y = inner(xs.to(dtype))[0].float()  # (N, 4 + nc, A): class probabilities after the box
        return y[:, 4:][:, classes, indices]

    return x, probabilities, lambda p: family.prepare(Image.fromarray(p)).inputs[0]
