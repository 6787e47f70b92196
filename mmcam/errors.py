"""Exceptions raised by mmcam.

Every error a caller can cause is an :class:`MMCamError` whose message says what was
wrong and what to pass instead.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "MMCamError",
    "LayerError",
    "MethodError",
    "TargetError",
    "GradientError",
    "InputError",
    "ForwardError",
    "MMCamWarning",
    "close_matches",
]


class MMCamError(Exception):
    """Base class of every mmcam error."""


class LayerError(MMCamError, LookupError):
    """A layer that cannot be used: unknown name, never runs, runs twice, off the path."""


class MethodError(MMCamError, LookupError):
    """An unknown or misconfigured CAM method."""


class TargetError(MMCamError, ValueError):
    """Targets that do not fit the model output or the batch."""


class GradientError(MMCamError, RuntimeError):
    """Gradients that are missing or all zero, so no map can be formed."""


class InputError(MMCamError, ValueError):
    """Inputs of the wrong kind, shape or dtype, or unreadable image files."""


class ForwardError(InputError, RuntimeError):
    """The model's forward failed on the inputs given (wrong channel count, shape, device,
    keyword arguments); the model's own exception is the ``__cause__``. A ``RuntimeError``
    too, so code that caught torch's error still catches it."""


class MMCamWarning(UserWarning):
    """Something that still gives a result but probably not the one wanted: NaN/Inf inputs,
    maps that are zero everywhere."""


def close_matches(word: str, candidates: Iterable[str], n: int = 5) -> str:
    """A human-readable hint listing the candidates closest to ``word``."""
    names = list(candidates)
    found = difflib.get_close_matches(word, names, n=n, cutoff=0.5)
    if not found:
        found = [c for c in names if word.split(".")[-1] in c][:n]
    return ", ".join(repr(f) for f in found) if found else "none"
