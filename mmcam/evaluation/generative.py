"""Evaluation cases for generative VLMs (``LlavaForConditionalGeneration``, ...): captions and
VQA answers generated as text, then explained word by word (:mod:`mmcam.tasks.generation`).

Ground truth is the same as for the other caption / VQA models (``EVALUATION.md``): a caption
word's linked object(s), only for captions generated exactly; a question's object(s). The
targets are frozen at the generated text; ``probabilities`` re-runs the teacher-forced forward
on perturbed pixel inputs (the processor's ``pixel_values``), the prompt and answer tokens
fixed, and returns each explained item's probability (a word's: the product of its tokens').
"""

from __future__ import annotations

from typing import Any

import torch

from ..tasks.caption import CAPTION_PROMPT, explain_caption
from ..tasks.generation import GenerationTask, _teacher_forced, chat_prompt
from ..tasks.vqa import explain_vqa
from .cases import Case, _fit, _union

__all__ = ["generative_caption", "generative_vqa"]


def _forced(model: Any, processor: Any, image: Any, prompt: str, token_ids: list[int]) -> tuple[dict[str, torch.Tensor], int]:
    """The teacher-forced inputs of ``prompt`` + ``token_ids`` and the logit position that
    predicts the first of them."""
    prepared = GenerationTask(model, processor, prompt).prepare(image)
    inputs = prepared.inputs
    return _teacher_forced(inputs, token_ids[:-1]), inputs["input_ids"].shape[1] - 1


def _word_probabilities(model: Any, forced: dict[str, torch.Tensor], start: int, token_ids: list[int], groups: list[list[int]]):
    """``xs (N, C, H, W) -> (N, W)``: each word's probability given the perturbed pixels."""
    positions = [start + i for i in range(len(token_ids))]

    def probabilities(xs: torch.Tensor) -> torch.Tensor:
        batch = {k: v.expand(xs.shape[0], *v.shape[1:]) if k != "pixel_values" else xs for k, v in forced.items()}
        logp = model(**batch).logits.log_softmax(-1)[:, positions, token_ids]  # (N, T)
        return torch.stack([logp[:, g].sum(1) for g in groups], 1).exp()

    return probabilities


def _runner_up(model: Any, processor: Any, forced: dict[str, torch.Tensor], start: int, token: int) -> str:
    """The strongest competitor of the answer's first token at its step (among the tokens
    generation allows), as text."""
    with torch.no_grad():
        logits = model(**forced).logits[0, start].float()
    logits[[token, *(getattr(model.generation_config, "suppress_tokens", None) or [])]] = -float("inf")
    tokenizer = getattr(processor, "tokenizer", processor)
    return tokenizer.convert_tokens_to_string([tokenizer.convert_ids_to_tokens(int(logits.argmax()))]).strip()


def _groups(tokens: list[str]) -> list[list[int]]:
    from ..adapters.hf_text import merge_subwords

    return merge_subwords(tokens)


def generative_caption(model: Any, processor: Any, sample: Any, layers: Any = None) -> list[Case]:
    """The caption case of one sample: the words linked to an object, if the generated caption
    is exactly the dataset's."""
    image = sample.load_image()
    first = explain_caption(model, processor, image, layers=layers)
    if first.items != list(sample.tokens):
        return []  # only an exactly generated caption has the dataset's word links
    keep = [k for k, links in enumerate(sample.word_links) if links]
    if not keep:
        return []
    token_ids, groups = first.meta["token_ids"], _groups(first.tokens)
    forced, start = _forced(model, processor, image, chat_prompt(processor, CAPTION_PROMPT), token_ids)
    x = forced["pixel_values"][0].detach()
    size = tuple(x.shape[-2:])
    words = _word_probabilities(model, forced, start, token_ids, groups)

    def explain(m, method):
        return _fit(torch.as_tensor(explain_caption(m, processor, image, caption=first.answer, method=method, layers=layers).maps)[keep], size)

    n = len(sample.masks)
    masks = torch.stack([_union(sample.masks, sample.word_links[k], size) for k in keep])
    others = torch.stack([_union(sample.masks, [i for i in range(n) if i not in sample.word_links[k]], size) for k in keep])
    return [Case(str(sample.image_id), [first.items[k] for k in keep], x, masks, others, lambda xs: words(xs)[:, keep], explain)]


def generative_vqa(model: Any, processor: Any, sample: Any, layers: Any = None) -> list[Case]:
    """One case per question about an object: the generated answer (its words' maps averaged
    into one), the other target its strongest competitor at the first answer step."""
    image = sample.load_image()
    cases = []
    n = len(sample.masks)
    for qi, qa in enumerate(sample.qa):
        if not qa.object_ids:
            continue  # e.g. "is there a ...? no": nothing in the image to point at
        first = explain_vqa(model, processor, image, qa.question, layers=layers)
        token_ids = first.meta["token_ids"]
        forced, start = _forced(model, processor, image, chat_prompt(processor, qa.question), token_ids)
        x = forced["pixel_values"][0].detach()
        size = tuple(x.shape[-2:])
        words = _word_probabilities(model, forced, start, token_ids, [list(range(len(token_ids)))])
        other = _runner_up(model, processor, forced, start, token_ids[0])

        def explain(m, method, q=qa.question, ans=first.answer, size=size):
            maps = torch.as_tensor(explain_vqa(m, processor, image, q, answer=ans, method=method, layers=layers).maps)
            return _fit(maps.mean(0, keepdim=True), size)

        masks = _union(sample.masks, qa.object_ids, size)[None]
        others = _union(sample.masks, [i for i in range(n) if i not in qa.object_ids], size)[None]
        cases.append(
            Case(
                f"{sample.image_id}/q{qi}",
                [f"{qa.question} -> {first.answer}"],
                x,
                masks,
                others,
                words,
                explain,
                explain_other=lambda m, method, explain=explain, other=other: explain(m, method, ans=other),
            )
        )
    return cases
