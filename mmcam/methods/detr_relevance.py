"""Per-query relevance of an HF DETR detector by Chefer et al.'s encoder-decoder rules
(``method="gae-detr"``).

Chefer, Gur & Wolf, *Generic Attention-model Explainability for Interpreting Bi-Modal and
Encoder-Decoder Transformers*, ICCV 2021 — https://arxiv.org/abs/2103.15679 (§3, eqs. 5–11;
their DETR demonstration explains one object query at a time).

DETR's transformer has two token streams: the ``N = h·w`` image tokens (the backbone's
feature map, flattened) and the ``Q`` object queries. Every attention layer ``l`` gives its
head-averaged, gradient-weighted map ``Ā_l = E_h[(∇A_l ⊙ A_l)⁺]`` (eq. 5), the gradient
being that of box k's score — its class logit ``logits[query_k, class_k]``. Relevance
starts at ``R^{ii} = I_N``, ``R^{qq} = I_Q``, ``R^{qi} = 0`` and is updated layer by layer:

* encoder self-attention (eq. 6): ``R^{ii} ← R^{ii} + Ā · R^{ii}``
* decoder (query) self-attention (eqs. 6–7)::

      R^{qq} ← R^{qq} + Ā · R^{qq}          R^{qi} ← R^{qi} + Ā · R^{qi}

* decoder cross-attention (queries read the encoder's output; eq. 10 with the normalised
  relevance matrices of eqs. 8–9, ``R̄ = (R − I) / rowsum(R − I) + I``)::

      R^{qi} ← R^{qi} + (R̄^{qq})ᵀ · Ā · R̄^{ii}

Box k's map is row ``query_k`` of its ``R^{qi}`` (``Q × N``) folded onto the ``h × w``
feature grid, ReLU'd, upsampled to the model input and — through the family's
:class:`mmcam.adapters.frame.Frame` — to the photo. All K boxes come from one forward and
one batched backward (K gradients of every attention map).

Use: ``explain_detections(detr, photo, method="gae-detr")`` (``"gae"`` on a DETR is the
same) for ``DetrForObjectDetection`` and ``ConditionalDetrForObjectDetection`` (whose
cross-attention is also a full ``Q × N`` softmax). RT-DETR's deformable attention samples a
few points per query and has no such matrix: refused with the methods that apply.

``method="gae-detr-shift"`` (:class:`ShiftedDetrRelevance`): the same relevance averaged over
sub-token input shifts (:mod:`mmcam.engine.shifts`). The encoder's token grid (16 px cells on
the zoo DETR's 64 px input) is the finest the rules can tell apart; the image moved by
``(dy, dx)``, ``dy, dx ∈ {round(k p / n)}``, ``k < n`` (``p`` input pixels per token, ``n =
phases``), explained for the *same* queries and classes, each map moved back and the ``n²``
maps averaged::

    M_k = normalize( 1/n² Σ_{dy,dx} unshift_{dy,dx}( normalize(R^{qi}_{query_k}(shift_{dy,dx}(x))) ) )
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar

import torch

from ..errors import MethodError, TargetError
from .attention import encoder_decoder_relevance
from .base import Method

__all__ = ["DetrRelevance", "ShiftedDetrRelevance", "FAMILIES", "query_rows", "query_relevance"]

#: the model classes whose outputs carry every attention matrix the rules need
FAMILIES = ("DetrForObjectDetection", "ConditionalDetrForObjectDetection")
#: input shifts per axis of ``gae-detr-shift``
PHASES = 3


class DetrRelevance(Method):
    """Chefer et al.'s encoder-decoder relevance of each kept DETR query (module docstring)."""

    name: ClassVar[str] = "gae-detr"
    attention: ClassVar[bool] = True  # from every attention layer, not a hooked layer
    families: ClassVar[tuple[str, ...]] = FAMILIES

    def cam(self, acts, grads, ctx):  # the engine routes attention methods to run_attention
        raise MethodError("'gae-detr' builds its maps from DETR's attention probabilities; run it through explain_detections or mmcam.CAM")

    def run_attention(self, model: Any, reshape: Any, grad_mode: str, batch: Any, targets: Any, size: "tuple[int, int] | None") -> Any:
        """What ``CAM(detr, method="gae-detr")(inputs, targets)`` returns (see :func:`explain_queries`)."""
        return explain_queries(model, self, reshape, grad_mode, batch, targets, size)


class ShiftedDetrRelevance(DetrRelevance):
    """``gae-detr`` averaged over sub-token input shifts (``method="gae-detr-shift"``).

    Chefer et al.'s per-query relevance (https://arxiv.org/abs/2103.15679, the module docstring)
    of the image moved by ``(dy, dx)`` for ``dy, dx`` in ``round(k p / phases)``, ``k < phases``,
    ``p`` the input pixels per encoder token (edges replicated; :func:`mmcam.engine.shifts.shift_grid`).
    Every pass explains the unshifted pass's boxes — the same query index and class (a task's
    kept boxes are decided once, on the unshifted output) —, each pass's min-max scaled map is
    moved back and the ``phases²`` maps are averaged, then min-max scaled. Scores, output and
    ``raw`` are the unshifted pass's. ``phases=1`` is ``gae-detr``. Cost: ``phases²`` forwards
    and batched backwards.

    ``centre``: where each token sits when its map is resampled to pixels. ``None`` (default):
    as every CAM, at the middle of its ``p × p`` cell (bilinear, ``(p - 1) / 2``); a number ``c``:
    token ``(i, j)`` at input pixel ``(c + p i, c + p j)`` (:func:`centred`) — ``c = 0`` is the
    receptive-field centre of a ResNet backbone whose stride-2 layers are all "same"-padded
    (output index ``i`` is centred on input index ``2 i`` at every one).
    """

    name: ClassVar[str] = "gae-detr-shift"

    def __init__(self, phases: int = PHASES, centre: "float | None" = None):
        if int(phases) < 1:
            raise MethodError(f"ShiftedDetrRelevance needs phases >= 1 (shifts per axis; 1 is plain gae-detr), got {phases}")
        self.phases = int(phases)
        self.centre = None if centre is None else float(centre)

    def _pass(self, model: Any, reshape: Any, grad_mode: str, batch: Any, targets: Any, size: "tuple[int, int] | None") -> Any:
        from ..engine.combine import normalize

        exp = explain_queries(model, self, reshape, grad_mode, batch, targets, size)
        if self.centre is None or exp.maps.shape[1] == 0 or size is None:
            return exp
        return replace(exp, maps=normalize(centred(exp.raw, size, batch.spatial_size or size, self.centre)))

    def run_attention(self, model: Any, reshape: Any, grad_mode: str, batch: Any, targets: Any, size: "tuple[int, int] | None") -> Any:
        """:func:`explain_queries` of the unshifted image, its maps replaced by the mean over the
        shifts (:func:`mmcam.engine.attention.over_shifts`, the loop of every ``-shift`` method)."""
        from ..engine.attention import over_shifts

        return over_shifts(lambda b, t: self._pass(model, reshape, grad_mode, b, t, size), self, batch, targets, size)

    def __repr__(self) -> str:
        return f"ShiftedDetrRelevance(phases={self.phases}, centre={self.centre})"


def centred(raw: torch.Tensor, size: tuple[int, int], spatial: tuple[int, int], centre: float) -> torch.Tensor:
    """``(B, K, h, w)`` token maps resampled bilinearly to ``size`` with token ``(i, j)`` at input
    pixel ``(centre + s_y i, centre + s_x j)`` (``s = spatial / grid``, input pixels per token;
    edges replicated) instead of the cell's middle, ``(s - 1) / 2``."""
    import torch.nn.functional as F

    (h, w), (H, W) = raw.shape[-2:], size
    axes = []
    for cells, out, inp in ((h, H, spatial[0]), (w, W, spatial[1])):
        pixel = (torch.arange(out, dtype=torch.float32, device=raw.device) + 0.5) * inp / out - 0.5  # each map pixel in input pixels
        token = (pixel - centre) / (inp / cells)
        axes.append(token / (cells - 1) * 2 - 1 if cells > 1 else torch.zeros_like(token))
    gy, gx = torch.meshgrid(*axes, indexing="ij")
    grid = torch.stack((gx, gy), -1).expand(raw.shape[0] * raw.shape[1], H, W, 2).to(raw.dtype)
    flat = raw.reshape(-1, 1, h, w)
    return F.grid_sample(flat, grid, mode="bilinear", padding_mode="border", align_corners=True).reshape(*raw.shape[:2], H, W)


def query_relevance(
    encoder: Sequence[torch.Tensor],
    encoder_grads: Sequence[torch.Tensor],
    decoder: Sequence[torch.Tensor],
    decoder_grads: Sequence[torch.Tensor],
    cross: Sequence[torch.Tensor],
    cross_grads: Sequence[torch.Tensor],
    rows: torch.Tensor,
) -> torch.Tensor:
    """``(K, B, N)``: row ``rows[k, b]`` of column k's ``R^{qi}`` (attention maps ``(B, H, ·, ·)``
    in layer order, gradients ``(K, B, H, ·, ·)``; ``rows`` ``(K, B)`` query indices)."""
    r_qi = encoder_decoder_relevance(encoder, encoder_grads, decoder, decoder_grads, cross, cross_grads)  # (K, B, Q, N)
    index = rows[..., None, None].expand(*rows.shape, 1, r_qi.shape[-1])
    return r_qi.gather(2, index)[:, :, 0]


def query_rows(targets: Any, image: int, columns: int) -> list[int]:
    """The query index of each of image ``image``'s ``columns`` score columns: a
    :class:`mmcam.targets.DetectionBoxScore`'s ``indices``, or a task's kept boxes (an
    ``ImageItems`` whose decision kept queries), padding columns at query 0."""
    found: list[int] = []
    for target in targets.items(image):
        indices = getattr(target, "indices", None)
        decision = getattr(target, "decision", None)
        if indices is None and decision is not None and decision.kept is not None:
            kept = decision.kept[target.b]
            indices = list(kept.indices) + [0] * (max(len(k) for k in decision.kept) - len(kept.indices))
        if indices is None:
            raise TargetError(
                f"method 'gae-detr' explains DETR queries and needs targets that name them: mmcam.targets.DetectionBoxScore "
                f"(query indices, classes) or explain_detections' kept boxes; got {target!r}"
            )
        found.extend(int(i) for i in indices)
    if len(found) != columns:
        raise TargetError(f"the targets name {len(found)} queries for {columns} score columns; pass one query per column")
    return found


def explain_queries(model: Any, method: Method, reshape: Any, grad_mode: str, batch: Any, targets: Any, size: "tuple[int, int] | None") -> Any:
    """One forward with the attention probabilities kept, K gradients of each attention map
    (one batched vector-Jacobian product), the rules of the module docstring, each column's
    query row on the encoder grid, then the CAM engine's upsampling and normalisation."""
    from ..engine.attention import _field, _gradients, _run, eager_attention, token_explanation
    from ..engine.explanation import Explanation, detached
    from ..engine.guard import transient_capture_hooks
    from ..engine.hooks import frozen_parameters

    names = [cls.__name__ for cls in type(model).__mro__]
    if not any(n in FAMILIES for n in names):
        raise MethodError(
            f"method 'gae-detr' explains {', '.join(FAMILIES)} queries; got {type(model).__name__}. "
            "Use 'gae' for ViT / ViLT / captioners, or a CAM method (layercam, odam, ...)"
        )
    with eager_attention(model), transient_capture_hooks(model), frozen_parameters(model, requires_grad=True), torch.enable_grad():
        output, _ = _run(model, batch)
        maps = {key: list(_field(output, f"{key}_attentions") or ()) for key in ("encoder", "decoder", "cross")}
        if not all(maps.values()) or len(maps["decoder"]) != len(maps["cross"]):
            raise MethodError(
                f"{type(model).__name__} returned {[(k, len(v)) for k, v in maps.items()]} attention maps with output_attentions=True; "
                "gae-detr needs encoder, decoder and cross-attention probabilities (one decoder and one cross map per decoder layer)"
            )
        if not targets.resolved:
            raise TargetError("method 'gae-detr' needs box targets: use explain_detections or pass mmcam.targets.DetectionBoxScore(queries, classes)")
        scores = targets.scores(output)
        k, b = scores.shape[1], scores.shape[0]
        titles = [f"encoder self-attention x{len(maps['encoder'])}", f"query self-attention x{len(maps['decoder'])}", f"cross-attention x{len(maps['cross'])}"]
        if k == 0:
            zeros = scores.new_zeros((b, 0, *(size or (1, 1))))
            return Explanation(zeros, zeros, scores.detach(), method.name, titles, [[] for _ in range(b)], detached(output))
        tensors = maps["encoder"] + maps["decoder"] + maps["cross"]
        grads = _gradients(scores, tensors, grad_mode)
    with torch.no_grad():
        attns = [t.detach() for t in tensors]
        n_enc, n_dec = len(maps["encoder"]), len(maps["decoder"])
        rows = torch.tensor([query_rows(targets, image, k) for image in range(b)], device=scores.device).T  # (K, B)
        vectors = query_relevance(
            attns[:n_enc], grads[:n_enc], attns[n_enc : n_enc + n_dec], grads[n_enc : n_enc + n_dec], attns[n_enc + n_dec :], grads[n_enc + n_dec :], rows
        )
    return token_explanation(vectors, reshape, size, scores.detach(), method.name, titles, targets, output)
