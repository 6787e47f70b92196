"""A heatmap for every word a generative VLM says: ``explain_generation``.

``generate()`` runs under no-grad, so the answer is generated first (or taken from
``answer=``), then prompt + answer run as **one** teacher-forced forward: position ``T - 1 + i``
of a ``T``-token prompt predicts answer token ``i`` (an encoder-decoder VLM: of the decoder's ``T``
start tokens, :mod:`mmcam.adapters.vlm.seq2seq`). Each word's score is the summed
log-probability of its sub-word tokens (:class:`mmcam.targets.CaptionTokens`) and all words'
maps come from that forward's one batched backward, read at a vision-tower layer through the
model's image-token layout (:mod:`mmcam.adapters.vlm`) and returned on the photo.
With a generated answer, the vision tower runs once per call where the family allows it
(:mod:`mmcam.adapters.vlm.shared_tower`): ``generate()`` and the teacher-forced forward read the
same image features (``mm_encoder_outputs``), the maps bit for bit those of the two-pass call.
With plain greedy decoding and an answer of up to ``GRAPH_STEPS`` tokens, the language model runs
once too (:mod:`mmcam.adapters.vlm.shared_prefill`): ``generate()``'s own loop runs with the graph
and its steps' logits are the explained scores (maps equal the teacher-forced ones to rounding).

``method="logit-lens"`` is forward-only: the language model's head already scores every
position, so a word's map is its tokens' logits at the image tokens' positions (the "logit
lens" map of Token Activation Maps, Li et al., ICCV 2025), min-max scaled. ``method="tam"``
is the same forward with TAM's estimated causal inference: the part of word t's map that the
earlier words' maps explain is removed (:func:`remove_interference`).

``target="contrastive"`` scores each word against its strongest competitor at the same step:
``Σ_{t ∈ w} [log p(token_t) − max_{v ≠ token_t} log p(v)]`` (:class:`ContrastiveTokens`).

``explain_vqa`` and ``explain_caption`` route generative VLMs here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..adapters.base import Family, Prepared
from ..adapters.hf_text import merge_subwords
from ..adapters.teacher import kept_logits
from ..adapters.vlm import ImageLayout, decoder_inputs, decoder_prefix, generated_answer, layout_for
from ..adapters.vlm.shared_prefill import GRAPH_STEPS, SharedPrefill, generate_with_graph, plain_greedy
from ..adapters.vlm.shared_tower import SharedTower, image_features, shares_tower, supports_features, with_features
from ..engine import CAM
from ..engine.hooks import resolve_layers
from ..errors import InputError, MethodError, TargetError
from ..io import load_image
from ..targets import CaptionTokens
from .base import Task
from .generation_gae import GAE, GAE_TOWER, default_method, gae_maps, shift_phases
from .generation_lens import FORWARD_ONLY, LOGIT_LENS, TAM, ContrastiveTokens, _forward_only, remove_interference, token_activation_maps
from .words import WordsExplanation

__all__ = [
    "GenerationExplanation",
    "GenerationTask",
    "explain_generation",
    "chat_prompt",
    "ContrastiveTokens",
    "remove_interference",
    "token_activation_maps",
    "LOGIT_LENS",
    "TAM",
    "TARGETS",
    "DEFAULT_MAX_NEW_TOKENS",
]

OWN_METHODS = (*FORWARD_ONLY, GAE_TOWER)  # method names this task runs itself, not registered methods
#: what a word's score is: its log-probability, or that minus its strongest competitor's
TARGETS = ("log-prob", "contrastive")
#: new tokens generated when neither the call nor the model's generation config says
DEFAULT_MAX_NEW_TOKENS = 32
#: the default where gae-tower does not apply (generation_gae.default_method): LayerCAM, pointing 0.685 / 0.675 on zoo:vlm
DEFAULT_METHOD = "layercam"


@dataclass
class GenerationExplanation(WordsExplanation):
    """``items``: the answer's words; ``maps[k]``: word k's map on the photo; ``meta``:
    ``prompt``, ``answer``, ``token_ids``, ``word_log_probs``, ``image_tokens`` (positions,
    grid), ``teacher_forced_argmax_matches``."""

    task: str = "generation"

    @property
    def answer(self) -> str:
        return " ".join(self.items)


def chat_prompt(processor: Any, text: str) -> str:
    """``text`` as a one-image user turn: the processor's chat template if it has one, else the
    image placeholder followed by ``text``."""
    if getattr(processor, "chat_template", None):
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
        return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return f"{_placeholder(processor)} {text}"


def _placeholder(processor: Any) -> str:
    token = getattr(processor, "image_token", None)
    token = getattr(token, "content", token)  # Blip2Processor keeps an AddedToken
    if not isinstance(token, str):
        raise InputError(f"{type(processor).__name__} names no image_token; pass the VLM's own processor (e.g. LlavaProcessor)")
    return token


class GenerationTask(Task):
    """Every word of the VLM's answer to ``prompt`` on each photo (see :func:`explain_generation`);
    one photo per forward (each answer is generated on its own first)."""

    name = "generation"
    batched = False

    def __init__(
        self,
        model: nn.Module,
        processor: Any,
        prompt: "str | list[dict]",
        answer: str | None = None,
        *,
        method: str | None = None,
        layers: Any = None,
        max_new_tokens: int | None = None,
        layout: ImageLayout | None = None,
        task: str = "generation",
        target: str = "log-prob",
    ):
        self.layout = layout_for(model, layout)
        if target not in TARGETS:
            raise TargetError(f"unknown target {target!r}; pass one of {', '.join(TARGETS)}")
        if target == "contrastive" and method == TAM:
            raise MethodError(
                f"{TAM!r} removes interference from log-prob logit-lens maps; use target='log-prob' with it, or 'contrastive' with {LOGIT_LENS!r} or a CAM method"
            )
        self.target = target
        if processor is None:
            raise InputError("a generative VLM needs its processor (e.g. LlavaProcessor) to expand the image placeholder")
        self.method = method or default_method(self.layout, layers, DEFAULT_METHOD)
        from .. import methods

        if self.method not in (*OWN_METHODS, GAE) and getattr(methods.get(self.method), "attention", False):
            raise MethodError(
                f"method {self.method!r} is not available for generative VLMs yet; use {GAE!r}, a CAM method (gradcam, layercam, ...), {LOGIT_LENS!r} or {TAM!r}"
            )
        self.decoder = decoder_prefix(model, self.method in FORWARD_ONLY)  # None: a causal language model
        if self.decoder is not None and self.method in (GAE, GAE_TOWER):
            raise MethodError(
                f"{type(model).__name__} is an encoder-decoder: {self.method!r} reads the causal LM's self-attention; use a CAM method (layercam, ...)"
            )
        if answer is not None and not answer.strip():
            raise InputError("the answer is empty; pass the answer text to explain, or None to let the model generate it")
        self.prompt = _prompt_text(processor, prompt)
        self.model, self.processor, self.answer, self.layers, self.max_new_tokens, self.task = model, processor, answer, layers, max_new_tokens, task
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.family = Family(model, processor)

    def prepare(self, image: Any) -> Prepared:
        return self.layout.prepare(self.processor, load_image(image), self.prompt)

    def run(self, batch: list[Prepared]) -> list[GenerationExplanation]:
        return [self._one(prepared) for prepared in batch]

    def _one(self, prepared: Prepared) -> GenerationExplanation:
        inputs = prepared.inputs
        tokens = self.layout.image_tokens(inputs, prepared.frame)
        prompt_ids = inputs["input_ids"]
        start = (prompt_ids.shape[1] if self.decoder is None else len(self.decoder)) - 1  # position T - 1 + i predicts answer token i
        # generate() and the explained forward read one vision-tower pass (shared_tower) where the family takes mm_encoder_outputs
        shared = self.answer is None and self.decoder is None and self.method not in (GAE, GAE_TOWER) and supports_features(self.model)
        if self.method in FORWARD_ONLY:
            features = _no_grad_features(self.model, inputs) if shared else None
            answer_ids = self._answer(inputs if features is None else with_features(inputs, features), start)
            target, forced = self._target(answer_ids, start), self._forced(inputs, answer_ids)
            forced = forced if features is None else with_features(forced, features)
            maps, scores, logits, layers = _forward_only(self.model, forced, tokens, target, self.method)
            method = self.method
        elif self.method in (GAE, GAE_TOWER):  # Chefer et al.'s relevance through the language model (generation_gae)
            answer_ids = self._answer(inputs, start)
            target = self._target(answer_ids, start)
            maps, scores, logits, layers = gae_maps(self.model, self._forced(inputs, answer_ids), tokens, target, self.method, shift_phases(self.task))
            method = self.method
        else:
            layers_ = self.layout.default_layers(self.model) if self.layers is None else self.layers
            reshape = self.layout.reshape(tokens)
            if shared and shares_tower(self.model, self.method, resolve_layers(self.model, layers_)):
                if plain_greedy(self.model, self._generate_kwargs()):  # the greedy decoding is the explained forward (shared_prefill)
                    view = SharedPrefill(self.model, lambda i: self._decode(i, start), self._forced, *self._targets(start))
                else:
                    view = SharedTower(self.model, lambda i: self._answer(i, start), self._forced, lambda a: self._target(a, start))
                exp = CAM(view, layers_, method=self.method, reshape=reshape)(inputs, [view.lazy_target], input_size=tokens.input_size)
                answer_ids, target = view.answer_ids, view.target
            else:
                answer_ids = self._answer(inputs, start)
                target = self._target(answer_ids, start)
                exp = CAM(self.model, layers_, method=self.method, reshape=reshape)(self._forced(inputs, answer_ids), [target], input_size=tokens.input_size)
            maps, scores, logits, layers, method = exp.maps[0], exp.scores[0], exp.output["logits"][0], exp.layers, exp.method
        strings, _, words = self._words(answer_ids)
        argmax = _argmax(self.model, logits, target.positions)
        return GenerationExplanation(
            image=prepared.photo,
            maps=prepared.frame.maps_to_photo(maps),
            items=words,
            scores=scores,
            method=method,
            layers=layers,
            task=self.task,
            meta={
                "prompt": self.prompt,
                "answer": " ".join(words),
                "family": self.layout.family,
                "generated": self.answer is None,
                "token_ids": answer_ids,
                "teacher_forced_argmax_matches": argmax == answer_ids,
                "target": self.target,
                **_score_meta(self.target, scores, target, logits, self.tokenizer),
                "image_tokens": {"first": tokens.positions[0], "count": len(tokens.positions), "prefix": tokens.prefix, "grid": list(tokens.grid)},
                "pipeline": prepared.frame.to_meta(),
            },
            tokens=strings,
        )

    def _answer(self, inputs: dict[str, Any], start: int) -> list[int]:
        """The generated answer's token ids (or the given answer's), refused when empty."""
        answer_ids = self._generate(inputs, start + 1) if self.answer is None else self._given()
        if not answer_ids:
            raise TargetError("the model generated no words (it stopped at once): nothing to explain; pass answer= to explain a given answer")
        return answer_ids

    def _words(self, answer_ids: list[int]) -> tuple[list[str], list[list[int]], list[str]]:
        """The answer's sub-word strings, their groups into words, and the words."""
        strings = list(self.tokenizer.convert_ids_to_tokens(answer_ids))
        groups = merge_subwords(strings)
        return strings, groups, [self.tokenizer.convert_tokens_to_string([strings[i] for i in g]).strip() for g in groups]

    def _keep(self, answer_ids: list[int]) -> dict[str, int]:
        return kept_logits(self.model, self.method, len(answer_ids), (*OWN_METHODS, GAE))  # the LM head on the answer's rows only

    def _target(self, answer_ids: list[int], start: int, rows: bool = False) -> CaptionTokens:
        """Each word's score on the teacher-forced logits (with ``logits_to_keep``, or ``rows``:
        the decode steps' logits, row i predicts token i)."""
        groups = self._words(answer_ids)[1]
        positions = [(0 if rows or self._keep(answer_ids) else start) + i for i in range(len(answer_ids))]
        suppress = list(getattr(self.model.generation_config, "suppress_tokens", None) or [])
        return ContrastiveTokens(positions, answer_ids, groups, suppress) if self.target == "contrastive" else CaptionTokens(positions, answer_ids, groups)

    def _forced(self, inputs: dict[str, torch.Tensor], answer_ids: list[int]) -> dict[str, Any]:
        """Prompt + answer as one teacher-forced input (the last answer token predicts nothing)."""
        more = answer_ids[:-1]
        forced = decoder_inputs(inputs, self.decoder, more) if self.decoder else _teacher_forced(inputs, more, self.layout.answer_token_types)
        return {**forced, **self._keep(answer_ids)}

    def _generate_kwargs(self) -> dict[str, Any]:
        if self.max_new_tokens is not None:
            return {"max_new_tokens": self.max_new_tokens}
        return {"max_new_tokens": DEFAULT_MAX_NEW_TOKENS} if getattr(self.model.generation_config, "max_new_tokens", None) is None else {}

    def _generate(self, inputs: dict[str, Any], known: int) -> list[int]:
        with torch.no_grad():
            out = self.model.generate(**inputs, **self._generate_kwargs())
        return self._cut(out[0, known:].tolist() if self.decoder is None else generated_answer(out[0].tolist(), self.decoder))

    def _cut(self, new: list[int]) -> list[int]:
        """The new tokens up to the first stop token."""
        stops = _stop_ids(self.model)
        end = next((i for i, t in enumerate(new) if t in stops), len(new))
        return [int(t) for t in new[:end]]

    def _decode(self, inputs: dict[str, Any], start: int) -> tuple[list[int], torch.Tensor | None]:
        """generate()'s greedy answer and, up to GRAPH_STEPS tokens, its steps' logits ``(1, T, V)``
        with the graph (shared_prefill); ``None`` for a longer answer (teacher-forced instead)."""
        out = generate_with_graph(self.model, inputs, GRAPH_STEPS, **self._generate_kwargs())
        answer_ids = self._cut(out.sequences[0, start + 1 :].tolist())
        if not answer_ids:
            raise TargetError("the model generated no words (it stopped at once): nothing to explain; pass answer= to explain a given answer")
        return answer_ids, torch.stack(out.logits[: len(answer_ids)], 1) if len(answer_ids) <= GRAPH_STEPS else None

    def _targets(self, start: int) -> tuple[Any, Any]:
        """The teacher-forced forward's target and the decode steps' (row i predicts token i)."""
        return (lambda a: self._target(a, start)), (lambda a: self._target(a, start, rows=True))

    def _given(self) -> list[int]:
        ids = self.tokenizer(self.answer, add_special_tokens=False)["input_ids"]
        if not ids:
            raise InputError(f"the answer {self.answer!r} has no tokens; pass the answer text to explain, or None to generate it")
        return [int(t) for t in ids]


def _prompt_text(processor: Any, prompt: "str | list[dict]") -> str:
    """The prompt as text with exactly one image placeholder (chat messages through the
    processor's chat template)."""
    if isinstance(prompt, list):
        prompt = processor.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("the prompt is empty; pass the text to ask (with the image placeholder), or chat messages")
    token = _placeholder(processor)
    count = prompt.count(token)
    if count == 0:
        raise InputError(
            f"the prompt has no image placeholder {token!r}; put it where the image goes (e.g. '{token} describe the image'), "
            "pass chat messages with {'type': 'image'}, or use explain_vqa / explain_caption, which add it"
        )
    if count != 1:
        raise InputError(f"the prompt has {count} image placeholders {token!r} but one image is explained; put exactly one {token!r} in the prompt")
    return prompt


def _teacher_forced(inputs: dict[str, torch.Tensor], more: list[int], types: dict[str, int] | None = None) -> dict[str, torch.Tensor]:
    """``inputs`` with ``more`` text tokens appended: ``input_ids`` extended, the attention mask
    all ones, other per-token inputs (``mm_token_type_ids``, ``token_type_ids``) padded with
    ``types[key]`` (default 0, text; PaliGemma's answer is its suffix, 1)."""
    prompt = inputs["input_ids"]
    ids = torch.cat([prompt, prompt.new_tensor([more])], 1)
    out = {**inputs, "input_ids": ids, "attention_mask": torch.ones_like(ids)}
    for key, value in inputs.items():
        if key not in ("input_ids", "attention_mask") and isinstance(value, torch.Tensor) and value.shape == prompt.shape:
            out[key] = torch.cat([value, value.new_full((1, len(more)), (types or {}).get(key, 0))], 1)
    return out


def _no_grad_features(model: nn.Module, inputs: dict[str, torch.Tensor]) -> Any:
    """The image features once, for generate() and a forward-only method's forward."""
    with torch.no_grad():
        return image_features(model, inputs)


def _stop_ids(model: nn.Module) -> set[int]:
    out: set[int] = set()
    for value in (getattr(model.generation_config, "eos_token_id", None), getattr(model.generation_config, "pad_token_id", None)):
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v is not None:
                out.add(int(v))
    return out


def _argmax(model: nn.Module, logits: torch.Tensor, positions: list[int]) -> list[int]:
    """The teacher-forced argmax at ``positions`` over the tokens generation allows
    (``suppress_tokens`` masked), to compare with the generated tokens."""
    suppress = getattr(model.generation_config, "suppress_tokens", None) or []
    picked = logits[positions].clone()
    if suppress:
        picked[:, list(suppress)] = -float("inf")
    return [int(t) for t in picked.argmax(-1)]


def _score_meta(kind: str, scores: torch.Tensor, target: CaptionTokens, logits: torch.Tensor, tokenizer: Any) -> dict[str, Any]:
    if kind != "contrastive":
        return {"word_log_probs": [round(float(s), 5) for s in scores]}
    rivals = target.competitors(logits)
    names = list(tokenizer.convert_ids_to_tokens(rivals))
    return {"word_contrastive_scores": [round(float(s), 5) for s in scores], "competitors": [[names[i] for i in g] for g in target.groups]}


def explain_generation(
    model: nn.Module,
    processor: Any,
    image: Any,
    prompt: "str | list[dict]",
    answer: str | None = None,
    *,
    method: str | None = None,
    layers: Any = None,
    max_new_tokens: int | None = None,
    layout: ImageLayout | None = None,
    target: str = "log-prob",
) -> GenerationExplanation:
    """One map per word of a generative VLM's answer to ``prompt`` (or of ``answer``, teacher-forced).

    ``prompt``: text holding the processor's image placeholder once (``"<image> what is on the
    left ?"``, or the chat template already applied), or chat messages (``[{"role": "user",
    "content": [{"type": "image"}, {"type": "text", "text": ...}]}]``). The answer is generated
    greedily (the model's generation config; ``max_new_tokens``), cut at EOS; word ``w``'s score
    is ``Σ_{t ∈ w} log p(token_t | prompt, image, tokens_<t)`` and every word's map comes from
    one teacher-forced forward and one batched backward. ``method``: ``"gae-tower"`` (LLaVA's default) / ``"gae"``
    (:mod:`.generation_gae`), a CAM method (default elsewhere or with ``layers``: ``"layercam"``) at ``layers`` (default: the vision-tower block the projector reads) or
    ``"logit-lens"`` / ``"tam"`` (forward-only; ``"tam"`` removes earlier words' interference).
    ``target``: ``"log-prob"`` or ``"contrastive"`` (the word against its strongest competitor
    at the same step, :class:`ContrastiveTokens`). ``layout``: the image-token layout of a model mmcam does
    not know (:class:`mmcam.adapters.vlm.ImageLayout`). Supported: the classes in
    :data:`mmcam.adapters.vlm.GENERATIVE_VLMS` (LLaVA, LLaVA-NeXT / OneVision, Qwen2 / 2.5 / 3-VL,
    Idefics3 / SmolVLM, InternVL, PaliGemma, Gemma 3, BLIP-2 / InstructBLIP (OPT, Vicuna, Flan-T5), Florence-2; tiles stitched back).

    Example::

        exp = mmcam.explain_generation(llava, processor, "photo.jpg", "<image> what color is the bus ?")
        exp.items, exp.maps.shape      # the answer's words, (K, H, W) on the photo
    """
    task = GenerationTask(model, processor, prompt, answer, method=method, layers=layers, max_new_tokens=max_new_tokens, layout=layout, target=target)
    return task(image)
