"""Open-vocabulary detectors: OWL-ViT, OWLv2, Grounding DINO and MM-Grounding DINO, boxes for text queries.

``explain_detections(model, photo, processor=..., text=["a person", "a bus"])`` runs the
model's processor on the photo and the queries, keeps boxes exactly as its post-processing
keeps them, and gives one map per kept box for the query that box answers.

* **OWL-ViT / OWLv2** (Minderer et al., https://arxiv.org/abs/2205.06230,
  https://arxiv.org/abs/2306.09683): every image patch predicts a box and one logit per
  query; as ``post_process_object_detection``: ``score = sigmoid(max_j logits[p, j])``, the
  query ``j`` is the argmax, kept where ``score > threshold`` (default 0.1), in patch order.
  Box k's target is ``logits[p_k, j_k]``. OWLv2's processor pads the photo to a square
  (bottom / right) before resizing it to 960 x 960; the frame records it, and its boxes are
  scaled by ``max(H, W)`` as the processor scales them. Default layer: the input of the last
  vision encoder layer's attention (``layer_norm1``: the last layer's output tokens feed only
  their own patch's box and logits), the patch tokens folded into the ``(H / p, W / p)`` grid.
* **Grounding DINO / MM-Grounding DINO** (Liu et al., https://arxiv.org/abs/2303.05499): the
  queries are joined as ``"a person. a bus."``; each of the decoder's queries predicts a box
  and one logit per text token; as ``post_process_grounded_object_detection``: ``score =
  max_t sigmoid(logits[q, t])`` over all tokens, kept where ``score > threshold`` (box
  threshold, default 0.25), its text label the tokens above ``text_threshold``. The query a
  box answers is the phrase holding its highest-scoring phrase token ``t*``; box k's target is
  ``logits[q_k, t*_k]``. Default layers: the per-level projections of the backbone into the
  encoder (``input_proj_vision.*``), maps fused.

**Text evidence** (``meta["text_evidence"]``, one entry per kept box): gradient x input of the
box's target with respect to the text encoder's word (token) embeddings ``e``, before positions
are added and normalised (after a LayerNorm the target is nearly invariant to the scale of its
input, so gradient x input there is near zero), summed over channels, ``v_t = sum_d e[t, d] * d target / d e[t, d]``, and
summed over each word's tokens (BPE pieces up to ``</w>``, WordPiece ``##`` continuations).
OWL: the words of the box's own query (its logit depends on that query alone); Grounding DINO:
the words of every query (its text encoder and fusion layers mix them), with the phrase index
of each word.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from torch import nn

from ..errors import InputError, TargetError
from ..reshape import Tokens
from ..targets.detection import padded_box_scores
from .base import Family, Kept, Prepared, eval_mode, processor_prepare
from .frame import Frame

__all__ = ["OPEN_VOCAB", "is_open_vocab", "OpenVocabFamily"]

#: class name -> kind
OPEN_VOCAB = {
    "OwlViTForObjectDetection": "owl",
    "Owlv2ForObjectDetection": "owlv2",
    "GroundingDinoForObjectDetection": "grounding",
    "MMGroundingDinoForObjectDetection": "grounding",
}


def _kind(model: Any) -> str | None:
    for cls in type(model).__mro__:
        if cls.__name__ in OPEN_VOCAB:
            return OPEN_VOCAB[cls.__name__]
    return None


def is_open_vocab(model: Any) -> bool:
    """True for an HF OWL-ViT, OWLv2, Grounding DINO or MM-Grounding DINO detection model."""
    return isinstance(model, nn.Module) and _kind(model) is not None


class OpenVocabFamily(Family):
    """An open-vocabulary detector run as its processor runs it, on ``text`` queries (see the
    module docstring). ``conf``: the processor's (box) ``threshold``; ``text_conf``: Grounding
    DINO's ``text_threshold`` (its text labels)."""

    name = "HF open-vocabulary detector"
    batched = False

    def __init__(
        self,
        model: nn.Module,
        processor: Any,
        text: "Sequence[str] | None",
        conf: float | None = None,
        text_conf: float = 0.25,
        max_boxes: int | None = None,
        box_weight: float = 0.0,
        attribute: str = "score",
        evidence: bool = True,
    ):
        super().__init__(model, processor)
        self.kind = _kind(model)
        name = type(model).__name__
        if processor is None or getattr(processor, "tokenizer", None) is None:
            raise InputError(f"{name} needs its processor (image processor and tokenizer), e.g. processor=AutoProcessor.from_pretrained(checkpoint)")
        self.queries = _queries(text, name)
        self.conf = (0.1 if self.kind != "grounding" else 0.25) if conf is None else float(conf)
        self.text_conf, self.max_boxes, self.box_weight, self.attribute, self.evidence = text_conf, max_boxes, box_weight, attribute, evidence
        self.names = dict(enumerate(self.queries))
        self._check_length()

    def _check_length(self) -> None:
        tokenizer, name = self.processor.tokenizer, type(self.model).__name__
        if self.kind == "grounding":
            limit = int(self.model.config.max_text_len)
            merged = ". ".join(q.strip().lower() for q in self.queries) + "."
            count = len(tokenizer(merged)["input_ids"])
            if count > limit:
                raise InputError(
                    f"the {len(self.queries)} text queries are {count} tokens joined ({merged[:60]!r}...); {name}'s text encoder "
                    f"takes at most max_text_len={limit}: pass fewer or shorter queries"
                )
            return
        limit = int(self.model.config.text_config.max_position_embeddings)
        for query in self.queries:
            count = len(tokenizer(query)["input_ids"])
            if count > limit:
                raise InputError(f"the text query {query!r} is {count} tokens; {name}'s text encoder takes at most {limit} per query: pass a shorter query")

    def context(self) -> Any:
        return eval_mode(self.model)

    def prepare(self, photo: Image.Image) -> Prepared:
        prepared = processor_prepare(self.processor, photo, text=list(self.queries))
        self._input_ids = prepared.inputs["input_ids"].cpu()  # the same queries for every photo (outputs without input_ids)
        if self.kind == "owlv2":  # padded to a square (bottom / right), then resized
            (h, w), size = (photo.size[1], photo.size[0]), prepared.frame.input
            scale = size[0] / max(h, w)
            frame = Frame(
                (h, w), size, (scale, scale), (0.0, 0.0), f"{type(self.processor).__name__}: pad to {max(h, w)}x{max(h, w)}, resize to {size[0]}x{size[1]}"
            )
            prepared = Prepared(prepared.inputs, prepared.photo, frame)
        return prepared

    def layers_and_reshape(self, inputs: Any, layers: Any) -> tuple[Any, Any]:
        if self.kind == "grounding":
            from ..engine.layers import per_layout
            from .detr_family import probe_layers

            chosen, reshape = per_layout(self.model, inputs, probe_layers)
            return (chosen if layers is None else layers), reshape
        vision = _vision(self.model)
        blocks = next(n for n, m in self.model.named_modules() if n.endswith("vision_model.encoder.layers") and isinstance(m, nn.ModuleList))
        patch = int(vision.config.patch_size)
        size = inputs["pixel_values"].shape[-2:] if isinstance(inputs, dict) else None
        grid = None if size is None else (int(size[0]) // patch, int(size[1]) // patch)
        default = [f"{blocks}.{len(self.model.get_submodule(blocks)) - 1}.layer_norm1"]
        return (default if layers is None else layers), Tokens(prefix=1, grid=grid, patch_size=patch)

    def decide(self, output: Any, frames: list[Frame]) -> list[Kept]:
        logits, boxes = getattr(output, "logits", None), getattr(output, "pred_boxes", None)
        if not isinstance(logits, torch.Tensor) or not isinstance(boxes, torch.Tensor):
            raise TargetError("expected an HF open-vocabulary detection output with .logits and .pred_boxes")
        logits, boxes = logits.detach(), boxes.detach()
        kept = []
        for b, frame in enumerate(frames):
            if self.kind == "grounding":
                given = getattr(output, "input_ids", None)  # Grounding DINO returns its token ids
                ids = given[b].cpu() if isinstance(given, torch.Tensor) else self._input_ids[0]
                phrase = _phrases(ids, self.processor.tokenizer)
                score = logits[b].sigmoid().max(-1).values
                index = (score > self.conf).nonzero().flatten()
                in_phrase = torch.as_tensor(phrase, device=logits.device) >= 0
                masked = logits[b][index][:, : len(phrase)].masked_fill(~in_phrase, float("-inf"))
                token = masked.argmax(-1)
                label = torch.as_tensor([phrase[int(t)] for t in token], dtype=torch.long)
                theirs = self.processor.post_process_grounded_object_detection(
                    _Out(logits[b : b + 1], boxes[b : b + 1]), ids[None], threshold=self.conf, text_threshold=self.text_conf, target_sizes=[frame.photo]
                )[0]
                extra = {"tokens": token.tolist(), "text_labels": list(theirs["text_labels"])}
            else:
                best, label = logits[b].max(-1)
                score = best.sigmoid()
                index = (score > self.conf).nonzero().flatten()
                label = label[index]
                theirs = self.processor.post_process_grounded_object_detection(
                    _Out(logits[b : b + 1], boxes[b : b + 1]), threshold=self.conf, target_sizes=[frame.photo]
                )[0]
                extra = {}
                if not torch.equal(theirs["labels"].cpu(), label.cpu()):
                    raise TargetError(f"{type(self.processor).__name__} kept other queries than this family's rule; report this model")
            score = score[index]
            if len(theirs["scores"]) != len(score) or not torch.allclose(theirs["scores"].cpu().float(), score.cpu().float(), rtol=1e-5, atol=1e-6):
                raise TargetError(
                    f"{type(self.processor).__name__} kept other boxes ({len(theirs['scores'])}) than this family's rule ({len(score)}); report this model"
                )
            photo_boxes = theirs["boxes"].to(score.device).float()
            if self.max_boxes is not None and len(score) > self.max_boxes:
                best_k = score.topk(self.max_boxes).indices.sort().values
                index, label, score, photo_boxes = index[best_k], label[best_k], score[best_k], photo_boxes[best_k]
                extra = {key: [value[i] for i in best_k.tolist()] for key, value in extra.items()}
            cxcywh = boxes[b][index]
            corners = torch.cat((cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2), -1)
            kept.append(Kept(index.tolist(), label.tolist(), score, corners, photo_boxes, extra=extra))
        return kept

    def box_scores(self, output: Any, kept: Kept, b: int, pad: int) -> torch.Tensor:
        if self.kind != "grounding":
            return padded_box_scores(output, kept, b, pad, self.box_weight, self.attribute)
        tokens = Kept(kept.indices, kept.extra["tokens"], kept.confidences, kept.boxes, kept.photo_boxes, extra=kept.extra)
        return padded_box_scores(output, tokens, b, pad, self.box_weight, self.attribute)

    def item_meta(self, prepared: Prepared, kept: Kept) -> dict[str, Any]:
        """``queries``, Grounding DINO's ``text_labels`` and, with ``evidence``, each kept box's
        ``text_evidence`` (see the module docstring)."""
        meta: dict[str, Any] = {"queries": list(self.queries)}
        if "text_labels" in kept.extra:
            meta["text_labels"] = list(kept.extra["text_labels"])
        if self.evidence and len(kept):
            meta["text_evidence"] = self._text_evidence(prepared.inputs, kept)
        return meta

    def _text_evidence(self, inputs: dict, kept: Kept) -> list[dict[str, Any]]:
        from ..engine.guard import model_lock

        embeddings = _text_embeddings(self.model)
        captured: list[torch.Tensor] = []

        def leaf(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
            captured.append(output.detach().requires_grad_(True))
            return captured[-1]

        device = next(self.model.parameters()).device
        batch = {k: v.to(device) for k, v in inputs.items()}
        with model_lock(self.model), eval_mode(self.model), torch.enable_grad():
            handle = embeddings.register_forward_hook(leaf)
            try:
                output = self.model(**batch)
            finally:
                handle.remove()
            columns = self.box_scores(output, kept, 0, len(kept))[0]
            grads = [torch.autograd.grad(columns[k], captured[0], retain_graph=k + 1 < len(kept))[0] for k in range(len(kept))]
        values = [(g * captured[0].detach()).sum(-1) for g in grads]  # (rows, L) each
        ids = batch["input_ids"].cpu()
        tokenizer = self.processor.tokenizer
        result = []
        for k, v in enumerate(values):
            if self.kind == "grounding":
                words = _words(ids[0], v[0].cpu(), tokenizer, _phrases(ids[0], tokenizer))
            else:
                query = kept.classes[k]
                words = _words(ids[query], v[query].cpu(), tokenizer, [query] * ids.shape[1])
            result.append({"words": [w for w, _, _ in words], "values": [round(float(x), 6) for _, x, _ in words], "queries": [q for _, _, q in words]})
        return result


class _Out:
    """The two fields the post-processors read."""

    def __init__(self, logits: torch.Tensor, pred_boxes: torch.Tensor):
        self.logits, self.pred_boxes = logits, pred_boxes


def _queries(text: Any, name: str) -> list[str]:
    if text is None:
        raise InputError(f"{name} detects what text queries name: pass text=['a person', 'a bus'] (one string per query)")
    if isinstance(text, str):
        text = [text]
    queries = [str(t) for t in text]
    if not queries or not all(q.strip() for q in queries):
        raise InputError(f"{name} needs at least one non-empty text query: pass text=['a person', 'a bus']")
    return queries


def _vision(model: nn.Module) -> nn.Module:
    return next(m for n, m in model.named_modules() if n.endswith("vision_model"))


def _text_embeddings(model: nn.Module) -> nn.Module:
    for suffix in ("text_model.embeddings.token_embedding", "text_backbone.embeddings.word_embeddings"):
        for n, m in model.named_modules():
            if n.endswith(suffix):
                return m
    raise InputError(f"found no text embeddings in {type(model).__name__}")


def _phrases(ids: torch.Tensor, tokenizer: Any) -> list[int]:
    """Per token: the index of the query phrase it belongs to (``-1``: special tokens and the
    ``.`` separating the phrases)."""
    special = set(tokenizer.all_special_ids)
    dot = tokenizer.convert_tokens_to_ids(".")
    phrase, out = 0, []
    for i in ids.tolist():
        if i == dot:
            out.append(-1)
            phrase += 1
        else:
            out.append(-1 if i in special else phrase)
    return out


def _words(ids: torch.Tensor, values: torch.Tensor, tokenizer: Any, phrase: Sequence[int]) -> list[tuple[str, float, int]]:
    """``(word, summed value, phrase)`` for each word of the non-special tokens (BPE pieces up
    to ``</w>``, WordPiece ``##`` continuations joined)."""
    special = set(tokenizer.all_special_ids)
    tokens = tokenizer.convert_ids_to_tokens(ids.tolist())
    bpe = any(t.endswith("</w>") for t in tokens)
    words: list[list[Any]] = []
    open_word = False
    for i, (tid, token, value) in enumerate(zip(ids.tolist(), tokens, values.tolist())):
        if tid in special or phrase[i] < 0:
            open_word = False
            continue
        continues = (open_word if bpe else token.startswith("##")) and bool(words) and words[-1][2] == phrase[i]
        piece = token.replace("</w>", "") if bpe else token.removeprefix("##")
        if continues:
            words[-1][0] += piece
            words[-1][1] += value
        else:
            words.append([piece, value, phrase[i]])
        open_word = bpe and not token.endswith("</w>")
    return [(w, float(v), int(q)) for w, v, q in words]
