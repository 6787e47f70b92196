"""Ground a VQA answer in the image: ``explain_vqa``.

Supported:

* HF ``BlipForQuestionAnswering`` (generative answer): the answer is generated under no-grad,
  then its tokens are teacher-forced through the text decoder in one forward; the explained
  score is the answer's log-probability ``Σ_t log p(answer_t | answer_<t, question, image)``.
  (BLIP-VQA's ``forward()`` returns no logits: mmcam reads the text decoder's.)
* HF ``ViltForQuestionAnswering`` (answer classifier, score = the answer's logit). ViLT shuffles its image
patches on every call (``visual_embed`` draws them with ``torch.multinomial``, even in eval
and even when it keeps all of them). During an explanation mmcam seeds that draw with hooks
on the model's embeddings (:func:`seeded_patches`; the caller's random state is put back):
the explained forward, every re-scoring forward and the ``patch_index`` used to scatter the
map back onto the grid (:func:`patch_order`) see the same draw, repeated calls give the same
map, and methods that mask the image (Score-CAM) still get ``pixel_values`` to mask.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..adapters.base import Family, Prepared
from ..adapters.hf_text import (
    ANSWER_GENERATORS,
    chosen_layers,
    decoding_for,
    generated_argmax,
    processor_inputs,
    require_attention_family,
    run_cam,
    teacher_forced,
    text_ids,
    vision_layers,
)
from ..adapters.vlm import GENERATIVE_VLMS, is_generative_vlm
from ..engine import CAM
from ..engine.layers import default_layers
from ..errors import InputError, TargetError, close_matches
from ..explain import TaskExplanation
from ..render.overlay import save_png
from ..reshape import ScatterTokens
from ..targets import ClassLogit, TopClasses, logits_of
from .base import Task
from .generation import GenerationExplanation, GenerationTask, chat_prompt

__all__ = ["VQAExplanation", "VQATask", "explain_vqa", "seeded_patches", "patch_order", "SUPPORTED"]

SUPPORTED = ("ViltForQuestionAnswering", *ANSWER_GENERATORS)


@dataclass
class VQAExplanation(TaskExplanation):
    """``items`` = [answer]; ``meta``: ``question``, ``answer``, ``probability`` and, for
    classifiers, ``top`` (the three most likely answers)."""

    task: str = "vqa"

    def save(self, out_dir: "str | Path", stem: str = "explanation", scale: int = 1) -> list[Path]:
        """Also writes ``{stem}_panel.png``: image, question, answer and its heatmap."""
        paths = super().save(out_dir, stem, scale)
        if self.items:
            from ..render.text import answer_panel

            panel = answer_panel(self.image, self.maps[0], self.meta.get("question", ""), self.items[0], self.meta.get("probability"))
            paths.append(save_png(panel, Path(out_dir) / f"{stem}_panel.png"))
        return paths


def explain_vqa(
    model: nn.Module,
    processor: Any,
    image: Any,
    question: str,
    answer: "str | int | None" = None,
    *,
    method: str | None = None,
    layers: Any = None,
    max_length: int | None = None,
) -> "VQAExplanation | GenerationExplanation":
    """The map of the model's answer (or of ``answer``) to ``question`` about ``image``.

    ``model``: ``ViltForQuestionAnswering`` (``answer``: one of its labels, or a label index) or
    ``BlipForQuestionAnswering`` (any ``answer`` text is teacher-forced; by default the
    generated answer). ``method``: default ``"gae-shift"`` for ViLT (gradient-weighted attention
    relevance of the pooler token averaged over 3 x 3 sub-patch shifts of the image, 9 forwards +
    backwards, :class:`mmcam.methods.attention.ShiftedAttention`: on the zoo it points at the
    answer's object 0.92 of the time, one pass of ``"gae"`` 0.81, Grad-CAM 0.39; ``"attnlrp"``
    0.84; ``"attnlrp-shift"`` (the same 9 shifts) points and picks the interventional top object
    more often than the default on two 60-scene seeds (docs/methods.md); both opt-in as LRP
    carries a patent notice —
    :mod:`mmcam.methods.attnlrp`), ``"gradcam"`` for BLIP or when ``layers`` are given. ``layers``
    overrides the default layer of a CAM method (found by structure).

    A generative VLM (``LlavaForConditionalGeneration``) gets ``question`` as a one-image user
    turn (its processor's chat template) and one map per word of its answer
    (:func:`mmcam.tasks.generation.explain_generation`).

    Example::

        exp = mmcam.explain_vqa(vilt, processor, "scene.png", "what color is the circle ?")
        exp.meta["answer"], exp.maps[0]     # the answer and where it was grounded
        exp.save("out/")                    # overlay + answer-grounding panel + JSON
    """
    if is_generative_vlm(model):
        if answer is not None and not isinstance(answer, str):
            raise InputError(f"{type(model).__name__} generates its answer as text: pass answer= as a string, got {answer!r}")
        if not question or not question.strip():
            raise InputError("the question is empty; pass a question about the image, e.g. 'what color is the circle ?'")
        prompt = chat_prompt(processor, question)
        return GenerationTask(model, processor, prompt, answer, method=method, layers=layers, max_new_tokens=max_length, task="vqa")(image)
    return VQATask(model, processor, question, answer, method=method, layers=layers, max_length=max_length)(image)


class VQATask(Task):
    """The answer to ``question`` on each photo, grounded (see :func:`explain_vqa`); one photo
    per forward (generative answers are generated on their own first)."""

    name = "vqa"
    batched = False

    def __init__(
        self,
        model: nn.Module,
        processor: Any,
        question: str,
        answer: "str | int | None" = None,
        *,
        method: str | None = None,
        layers: Any = None,
        max_length: int | None = None,
    ):
        family = type(model).__name__
        if family not in SUPPORTED:
            raise InputError(
                f"explain_vqa supports {', '.join(SUPPORTED + GENERATIVE_VLMS)}; got {family}. For another model use "
                "mmcam.CAM(model, layers=<an image-encoder layer>) with a target over its answer logits "
                "(mmcam.targets.ClassLogit(i) for a classifier, mmcam.targets.CaptionTokens for generated text)"
            )
        if processor is None:
            raise InputError("the vqa task needs the model's processor (e.g. --model zoo:vqa, or a directory saved with its processor)")
        if not question or not question.strip():
            raise InputError("the question is empty; pass a question about the image, e.g. --question 'what color is the circle ?'")
        self.vilt = family == "ViltForQuestionAnswering"
        self.method = method or (DEFAULT_METHOD if self.vilt and layers is None else "gradcam")
        self.model, self.processor, self.question, self.answer, self.layers, self.max_length = model, processor, question, answer, layers, max_length
        self.family = Family(model, processor)

    def prepare(self, image: Any) -> Prepared:
        return processor_inputs(self.processor, image, text=self.question)

    def run(self, batch: list[Prepared]) -> list[VQAExplanation]:
        if self.vilt:
            return [_explain_vilt(self.model, p, self.question, self.answer, self.method, self.layers) for p in batch]
        return [_explain_generative(self.model, self.processor, p, self.question, self.answer, self.method, self.layers, self.max_length) for p in batch]


def _explain_generative(model, processor, prepared, question, answer, method, layers, max_length) -> VQAExplanation:
    """BLIP-VQA: generate (or take) the answer, teacher-force it, explain log p(answer)."""
    decoding = decoding_for(model, ANSWER_GENERATORS)
    require_attention_family(method, decoding.family, ("ViltForQuestionAnswering",))
    if answer is not None and not isinstance(answer, str):
        raise InputError(f"{decoding.family} generates its answer as text: pass answer= as a string, got {answer!r}")
    inputs = prepared.inputs
    tokenizer = getattr(processor, "tokenizer", processor)
    question_inputs = {k: inputs[k] for k in ("input_ids", "attention_mask", "pixel_values") if k in inputs}
    if answer is None:
        ids = decoding.generate(question_inputs, **({"max_length": max_length} if max_length else {}))
    else:
        if not answer.strip():
            raise InputError("the answer is empty; pass the answer text to explain, or None to generate it")
        ids = text_ids(decoding, tokenizer, answer)
    forced = teacher_forced(decoding, tokenizer, ids, whole=True)
    chosen = chosen_layers(layers, method, lambda: vision_layers(model, inputs["pixel_values"]))
    forward_inputs = decoding.forward_inputs(question_inputs, forced.decoder_ids)
    exp = run_cam(model, decoding.module, chosen, method, forward_inputs, [forced.target])
    logits = exp.output["logits"][0]
    predicted = generated_argmax(logits, decoding, forced.target.positions)
    text = forced.words[0]
    return VQAExplanation(
        image=prepared.photo,
        maps=prepared.frame.maps_to_photo(exp.maps[0]),
        items=[text],
        scores=exp.scores[0],
        method=exp.method,
        layers=exp.layers,
        meta={
            "question": question,
            "answer": text,
            "family": decoding.family,
            "generated": answer is None,
            "probability": round(float(exp.scores[0, 0].exp()), 5),
            "log_prob": round(float(exp.scores[0, 0]), 5),
            "token_ids": forced.token_ids,
            "tokens": forced.tokens,
            "teacher_forced_argmax_matches": predicted == forced.token_ids,
            "pipeline": prepared.frame.to_meta(),
        },
    )


#: ViLT's default: ``gae`` averaged over 3 x 3 sub-patch input shifts (9 passes; zoo:vqa answers
#: 0.917 / 0.807 pointing with / without the shifts, docs/quality.md)
DEFAULT_METHOD = "gae-shift"

PATCH_SEED = 0  # ViLT's patch draw during an explanation (see the module docstring)


@contextmanager
def seeded_patches(model: nn.Module, seed: int | None = None) -> Iterator[None]:
    """While active, every forward of ``model`` (a ``ViltForQuestionAnswering``) draws its
    image patches from ``seed``: hooks around ``model.vilt.embeddings`` seed the CPU generator
    before it runs and put the caller's generator state back after, so the draw is the same on
    every call and nothing else sees the seed (default :data:`PATCH_SEED`). The hooks are
    removed on exit."""
    seed = PATCH_SEED if seed is None else seed
    embeddings = model.vilt.embeddings
    saved: list[torch.Tensor] = []

    def before(module: nn.Module, args: Any, kwargs: Any) -> None:
        saved.append(torch.random.get_rng_state())
        torch.manual_seed(seed)

    def after(module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        torch.random.set_rng_state(saved.pop())

    handles = [embeddings.register_forward_pre_hook(before, with_kwargs=True), embeddings.register_forward_hook(after, with_kwargs=True)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        if saved:  # a forward that failed inside the embeddings
            torch.random.set_rng_state(saved[0])


def patch_order(model: nn.Module, pixel_values: torch.Tensor, pixel_mask: torch.Tensor, seed: int | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
    """``(patch_index (B, N, 2), (h, w))`` of the draw :func:`seeded_patches` makes (ViLT's own
    ``visual_embed``, same seed, caller's generator untouched)."""
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(PATCH_SEED if seed is None else seed)
        _, _, (index, (h, w)) = model.vilt.embeddings.visual_embed(pixel_values, pixel_mask, max_image_length=model.config.max_image_length)
    return index, (int(h), int(w))


def _explain_vilt(model, prepared, question, answer, method, layers) -> VQAExplanation:
    inputs = dict(prepared.inputs)
    pixel_values = inputs["pixel_values"]
    inputs.setdefault("pixel_mask", torch.ones(pixel_values.shape[0], *pixel_values.shape[-2:], dtype=torch.long))
    patch_index, (h, w) = patch_order(model, pixel_values, inputs["pixel_mask"])
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    if answer is None:
        target: Any = TopClasses(1)
    elif isinstance(answer, int):  # a label index
        if not 0 <= answer < model.config.num_labels:
            raise TargetError(f"answer index {answer} is out of range for {model.config.num_labels} labels; pass 0..{model.config.num_labels - 1} or a label")
        target = ClassLogit(answer)
    else:
        label2id = {v: k for k, v in id2label.items()}
        if answer not in label2id:
            raise TargetError(
                f"{answer!r} is not one of the model's answers ({len(label2id)} labels); close ones: "
                f"{close_matches(answer, label2id)}. Pass one of model.config.id2label's values, or None"
            )
        target = ClassLogit(label2id[answer])
    text_len = inputs["input_ids"].shape[1]
    reshape = ScatterTokens(start=text_len + 1, index=patch_index[..., 0] * w + patch_index[..., 1], grid=(h, w))
    with seeded_patches(model):
        chosen = chosen_layers(layers, method, lambda: default_layers(model, inputs))
        exp = CAM(model, chosen, method=method, reshape=reshape)(inputs, [target], input_size=tuple(pixel_values.shape[-2:]))
    probs = logits_of(exp.output)[0].sigmoid()
    index = int(probs.argmax()) if answer is None else target.index
    top = probs.topk(min(3, probs.numel()))
    return VQAExplanation(
        image=prepared.photo,
        maps=prepared.frame.maps_to_photo(exp.maps[0]),
        items=[id2label.get(index, str(index))],
        scores=exp.scores[0],
        method=exp.method,
        layers=exp.layers,
        meta={
            "question": question,
            "answer": id2label.get(index, str(index)),
            "family": "ViltForQuestionAnswering",
            "probability": round(float(probs[index]), 5),
            "top": [[id2label.get(int(i), str(int(i))), round(float(p), 5)] for p, i in zip(top.values, top.indices)],
            "pipeline": prepared.frame.to_meta(),
        },
    )
