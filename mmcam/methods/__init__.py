"""CAM methods: weighting rules registered by name.

>>> import mmcam
>>> mmcam.methods.available()  # doctest: +ELLIPSIS
['ablationcam', 'attnlrp', 'attnlrp-shift', 'cam', 'cell-occlusion', 'eigencam', 'eigengradcam', 'gae', 'gae-detr', 'gae-detr-shift', ...]

A method is a small class (see :mod:`mmcam.methods.base`); register your own with
:func:`register`. Pixel-space explainers composed from the engine (Guided Backprop,
Guided Grad-CAM) live in :mod:`mmcam.engine.guided`.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import MethodError, close_matches
from .attention import GenericAttention, ShiftedAttention
from .attnlrp import AttnLRP, ShiftedAttnLRP
from .base import Context, ElementwiseMethod, Method, WeightMethod
from .cam import ClassActivationMap
from .cells import SARFA, CellOcclusion, CellShapley, SARFAToggle
from .detr_relevance import DetrRelevance, ShiftedDetrRelevance
from .detr_shift import ShiftedDetrCAM
from .eigen import EigenCAM, EigenGradCAM, EigenSmooth
from .gradient import ODAM, GradCAM, GradCAMElementwise, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from .legrad import LeGrad
from .perturbation import AblationCAM, ScoreCAM
from .shifted import GradCAMShift, InputShifts, LayerCAMShift

__all__ = [
    "available",
    "get",
    "register",
    "Context",
    "Method",
    "WeightMethod",
    "ElementwiseMethod",
    "GradCAM",
    "HiResCAM",
    "GradCAMElementwise",
    "GradCAMPlusPlus",
    "XGradCAM",
    "LayerCAM",
    "EigenCAM",
    "EigenGradCAM",
    "EigenSmooth",
    "ScoreCAM",
    "AblationCAM",
    "ClassActivationMap",
    "GenericAttention",
    "ShiftedAttention",
    "CellOcclusion",
    "SARFA",
    "SARFAToggle",
    "CellShapley",
    "ODAM",
    "DetrRelevance",
    "ShiftedDetrRelevance",
    "ShiftedDetrCAM",
    "LeGrad",
    "AttnLRP",
    "InputShifts",
    "GradCAMShift",
    "LayerCAMShift",
    "ShiftedAttnLRP",
]

_REGISTRY: dict[str, Callable[[], Method]] = {}


def register(name: str, factory: Callable[[], Method]) -> None:
    """Register a method factory under ``name``; names are unique."""
    if name in _REGISTRY:
        raise MethodError(f"a method named {name!r} is already registered")
    _REGISTRY[name] = factory


def available() -> list[str]:
    """Names of the registered methods, sorted."""
    return sorted(_REGISTRY)


def get(spec: "str | Method") -> Method:
    """A method instance from a registered name (case-insensitive) or an instance."""
    if isinstance(spec, Method):
        return spec
    if not isinstance(spec, str):
        raise MethodError(f"method must be a name or a Method instance, got {type(spec).__name__}")
    key = spec.lower().replace("_", "-")
    aliases = {"gradcampp": "gradcam++", "gradcamplusplus": "gradcam++", "grad-cam": "gradcam", "score-cam": "scorecam"}
    key = aliases.get(key, key)
    if key.endswith("+eigensmooth"):
        inner = get(key[: -len("+eigensmooth")])
        if isinstance(inner, InputShifts):  # the shifts stay outermost: every pass's map eigen-smoothed
            smoothed = InputShifts(EigenSmooth(inner.inner), inner.phases)
            smoothed.patch = inner.patch  # a DETR's encoder-token cycle stays
            return smoothed
        return EigenSmooth(inner)
    base = key[: -len("-shift")]
    if key.endswith("-shift") and key not in _REGISTRY and (base in _REGISTRY or base.endswith("+eigensmooth")):
        return InputShifts(get(base))
    if key not in _REGISTRY:
        raise MethodError(
            f"unknown method {spec!r}; pass one of: {', '.join(available())} (close matches: "
            f"{close_matches(key, available())}); pixel-space methods are mmcam.GuidedBackprop "
            "and mmcam.GuidedGradCAM"
        )
    return _REGISTRY[key]()


for _cls in (
    GradCAM,
    HiResCAM,
    GradCAMElementwise,
    GradCAMPlusPlus,
    XGradCAM,
    LayerCAM,
    EigenCAM,
    EigenGradCAM,
    ScoreCAM,
    AblationCAM,
    ClassActivationMap,
    GenericAttention,
    ShiftedAttention,
    CellOcclusion,
    SARFA,
    SARFAToggle,
    CellShapley,
    ODAM,
    DetrRelevance,
    ShiftedDetrRelevance,
    ShiftedDetrCAM,
    LeGrad,
    AttnLRP,
    GradCAMShift,
    LayerCAMShift,
    ShiftedAttnLRP,
):
    register(_cls.name, _cls)
