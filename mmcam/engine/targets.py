"""Evaluate a batch's targets on a model output: ``(N, K)`` scores, one column per item."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..errors import MMCamError, TargetError
from ..targets import ClassLogit, logits_of
from .guard import describe

__all__ = ["TargetSet"]


class TargetSet:
    """The targets of one call.

    ``targets`` is ``None`` (each image's top class), one target or class index, a list of
    K targets shared by every image, or a list of B lists (one list of K per image). A
    target returns ``(N,)`` or ``(N, k)``; the columns of all targets are concatenated.
    """

    def __init__(self, targets: Any, batch_size: int):
        self.batch_size = batch_size
        self.shared: list[Callable] | None = None
        self.per_image: list[list[Callable]] | None = None
        if targets is None:
            return
        if callable(targets) or isinstance(targets, int):
            targets = [targets]
        if not isinstance(targets, Sequence) or isinstance(targets, str) or len(targets) == 0:
            raise TargetError(
                f"cannot use {targets!r} as targets; pass a target, a class index, a list of K targets "
                f"for every image, or a list of {batch_size} lists (one per image)"
            )
        nested = [isinstance(t, (list, tuple)) for t in targets]
        if all(nested):
            if len(targets) != batch_size:
                raise TargetError(
                    f"got {len(targets)} per-image target lists for a batch of {batch_size} images; "
                    f"pass one list per image ({batch_size} lists) or one flat list of K targets "
                    "applied to every image"
                )
            lengths = {len(t) for t in targets}
            if len(lengths) != 1 or 0 in lengths:
                raise TargetError(
                    f"per-image target lists have different lengths {sorted(lengths)}; every image "
                    "needs the same number K of targets: pass K for each (or explain images separately)"
                )
            self.per_image = [[_as_target(t) for t in ts] for ts in targets]
        elif any(nested):
            raise TargetError(f"targets mixes lists and single targets; pass either K targets for every image or {batch_size} lists of K targets")
        else:
            self.shared = [_as_target(t) for t in targets]

    @property
    def resolved(self) -> bool:
        return self.shared is not None or self.per_image is not None

    def resolve_default(self, output: Any) -> None:
        """With no targets given: each image's highest-scoring class."""
        try:
            logits = logits_of(output)
        except TargetError:
            raise TargetError(
                f"no targets were given and the model output ({type(output).__name__}) has no "
                "class logits to pick a default from; pass targets (see mmcam.targets)"
            ) from None
        if logits.ndim != 2:
            raise TargetError(f"no targets were given and the output has shape {tuple(logits.shape)}, not (B, num_classes); pass targets (see mmcam.targets)")
        top = logits.detach().argmax(1).tolist()
        self.per_image = [[ClassLogit(c)] for c in top]

    def items(self, image: int) -> list[Callable]:
        """The targets that apply to image ``image``."""
        return self.shared if self.shared is not None else self.per_image[image]

    def scores(self, output: Any, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, K)`` scores; row ``n`` of the output belongs to image ``rows[n]``."""
        if self.shared is not None:
            return _columns(self.shared, output)
        assert self.per_image is not None, "resolve_default() first"
        if rows is None:
            rows = torch.arange(self.batch_size)
        rows_list = rows.tolist()
        result: torch.Tensor | None = None
        for image in sorted(set(rows_list)):
            block = _columns(self.per_image[image], output)
            mask = torch.tensor([r == image for r in rows_list], device=block.device)
            if result is None:
                result = block.new_zeros((len(rows_list), block.shape[1]))
            result = torch.where(mask[:, None], block, result)
        return result


def _as_target(t: Any) -> Callable:
    if isinstance(t, bool):
        raise TargetError("a target cannot be a bool; pass a class index or a target callable")
    if isinstance(t, int):
        return ClassLogit(t)
    if not callable(t):
        raise TargetError(f"cannot use {t!r} as a target; pass a class index or a callable output -> scores (see mmcam.targets)")
    return t


def _call(target: Callable, output: Any) -> Any:
    """``target(output)``; an exception raised inside a user's target becomes a
    :class:`TargetError` naming the target and what the output is (the original as cause)."""
    try:
        return target(output)
    except MMCamError:
        raise
    except Exception as error:  # any failure inside the user's callable
        first = (str(error).strip().splitlines() or [""])[0]
        raise TargetError(
            f"target {target!r} raised {type(error).__name__}: {first} — on a model output "
            f"{describe(output)}; pass a target that fits this output (a class index in range, "
            "or a callable reading the right field; see mmcam.targets)"
        ) from error


def _columns(targets: list[Callable], output: Any) -> torch.Tensor:
    cols = []
    for t in targets:
        s = _call(t, output)
        if not isinstance(s, torch.Tensor):
            raise TargetError(
                f"target {t!r} returned {type(s).__name__}; pass a target that returns a torch tensor (B,) or "
                "(B, K) computed from the output (no .item(), .numpy() or .tolist())"
            )
        if s.ndim == 1:
            s = s[:, None]
        if s.ndim != 2:
            raise TargetError(f"target {t!r} returned shape {tuple(s.shape)}; pass a target that returns (B,) or (B, K)")
        cols.append(s)
    batch = {c.shape[0] for c in cols}
    if len(batch) != 1:
        raise TargetError(f"targets returned different batch sizes {sorted(batch)}; pass targets that each return one row per image of the batch")
    return torch.cat(cols, 1) if len(cols) > 1 else cols[0]
