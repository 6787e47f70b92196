"""One language-model prefill per explained call of a causal VLM: the greedy decoding *is* the
explained forward.

:mod:`.shared_tower` runs the vision tower once, but the language model still ran twice:
``generate()`` (a prefill of the prompt + one step per answer token, under no-grad) and then the
teacher-forced forward of prompt + answer (another prefill-sized forward, with the graph). With
greedy decoding, step ``i``'s logits (the last position of the prefill, then of each one-token
step reading the KV cache) are the teacher-forced logits that predict answer token ``i``:
``logits_i = LM(features, prompt, answer_<i)[-1]``, computed once. Here:

1. :func:`~.shared_tower.image_features` runs once with autograd on (the CAM layer hooked in the
   tower or projector fires there, the graph starts at it: the prefix cut, no parameter gradients).
2. transformers' own ``generate()`` code runs on those features **with autograd on**
   (:func:`generate_with_graph`: the function under its ``@torch.no_grad()`` decorator, so the
   same logits processors, stopping criteria and cache; ``output_logits=True`` keeps each step's
   raw logits). The prefill's keys / values stay on the graph in the cache, each decode step's
   attention reads them, so each step's logits depend on the features through every earlier
   position, as the teacher-forced forward's do.
3. The step logits of the answer's tokens, ``(1, T, V)``, are the explained output: one batched
   backward for all words, through the decode steps and the prefill, to the hooked layer.

The tokens are ``generate()``'s by construction (its own loop, argmax over the processed scores;
tested on LLaVA, Qwen2-VL, Idefics3 and ``zoo:vlm``); the scores and maps equal the teacher-forced
path's to rounding (a one-row attention over the cache against one full-sequence attention:
other kernel shapes, not the same sums). Only for **plain greedy search** (:func:`plain_greedy`:
``do_sample`` off, one beam, no contrastive / assisted / constrained decoding), where step ``i``'s
logits belong to the kept sequence; anything else keeps the :class:`~.shared_tower.SharedTower`
path. Memory: the graph holds every step's activations, as the teacher-forced forward does for
its ``T`` rows, plus each step's concatenated cache keys / values (``O(T × sequence)`` per layer,
not ``O(sequence)``): docs/vlm.md gives the peak RSS beside the other paths.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .shared_tower import SharedTower, image_features, with_features

__all__ = ["GRAPH_STEPS", "plain_greedy", "generate_with_graph", "SharedPrefill"]


def _ungraded_generate() -> Callable[..., Any] | None:
    """transformers' ``GenerationMixin.generate`` without its decorators (``@torch.no_grad()``,
    keyword deprecations), or ``None`` where it is not a wrapped function."""
    from transformers import GenerationMixin

    inner = inspect.unwrap(GenerationMixin.generate)
    return inner if inner is not GenerationMixin.generate else None


def plain_greedy(model: nn.Module, generate_kwargs: dict[str, Any]) -> bool:
    """Whether ``model.generate(**generate_kwargs)`` is plain greedy search under its generation
    config (one beam, no sampling, no contrastive / assisted / constrained decoding, one sequence)
    and transformers' undecorated ``generate`` is reachable: :class:`SharedPrefill` serves it."""
    from transformers.generation import GenerationMode

    if _ungraded_generate() is None:
        return False
    config = copy.deepcopy(model.generation_config)
    config.update(**generate_kwargs)
    return config.get_generation_mode() == GenerationMode.GREEDY_SEARCH and (config.num_return_sequences or 1) == 1


#: answers of up to this many tokens are scored on the decode steps' logits; a longer answer is
#: teacher-forced on the same features (the steps' graph dropped after this many steps). Each step's
#: backward costs about its forward again while the saving is one prefill: the break-even measured in
#: docs/vlm.md ("One language-model prefill per call") is 2-3 tokens on zoo:vlm, 5-8 at SmolVLM's shape
GRAPH_STEPS = 3


class _GraphSteps:
    """A logits processor that changes no score and turns autograd off once ``steps`` steps' logits
    are out (``generate()`` calls it after each step's forward, before the next): later decode
    steps run without a graph. The caller's ``torch.enable_grad()`` block restores the mode."""

    def __init__(self, steps: int):
        self.left = steps

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.left -= 1
        if self.left == 0:
            torch.set_grad_enabled(False)
        return scores


def generate_with_graph(model: nn.Module, inputs: dict[str, Any], steps: int | None = None, **kwargs: Any) -> Any:
    """transformers' ``generate(**inputs, **kwargs)`` with autograd on and each step's raw logits
    returned (``return_dict_in_generate``, ``output_logits``): the steps' logits keep the graph to
    every input that requires grad (the image features); with ``steps``, only the first ``steps``."""
    from transformers import LogitsProcessorList

    generate = _ungraded_generate()
    if generate is None:
        raise RuntimeError("transformers' generate() is not a decorated function here; the SharedPrefill path does not apply")
    if steps is not None:
        kwargs["logits_processor"] = LogitsProcessorList([_GraphSteps(steps)])  # changes no score: generate()'s tokens
    with torch.enable_grad():  # restores the caller's mode on exit, also after _GraphSteps turned it off
        return generate(model, **inputs, **kwargs, return_dict_in_generate=True, output_logits=True)


class SharedPrefill(SharedTower):
    """A view of a causal VLM (as :class:`~.shared_tower.SharedTower`: its own children under
    their own names, nothing copied) whose ``forward(**inputs)`` runs :func:`image_features` once
    and ``decode(inputs)`` on them with the graph (``decode``: the features' inputs -> the answer's
    token ids and its ``(1, T, V)`` step logits, row ``i`` predicting answer token ``i``, or
    ``None`` for an answer longer than :data:`GRAPH_STEPS`, e.g. through
    :func:`generate_with_graph`). Returns ``{"logits": step logits}`` with :attr:`target`
    ``step_target_for(answer_ids)``; for a long answer, as the tower view, the teacher-forced
    ``force(inputs, answer_ids)`` forward on the same features with ``target_for(answer_ids)``.
    :attr:`answer_ids`, :attr:`target` and :attr:`lazy_target` as the tower view's."""

    def __init__(
        self,
        model: nn.Module,
        decode: Callable[[dict[str, Any]], tuple[list[int], torch.Tensor | None]],
        force: Callable[[dict[str, Any], list[int]], dict[str, Any]],
        target_for: Callable[[list[int]], Any],
        step_target_for: Callable[[list[int]], Any],
    ):
        super().__init__(model, _no_generate, force, target_for)
        self._decode, self._step_target_for = decode, step_target_for

    def forward(self, **inputs: Any) -> dict[str, torch.Tensor]:
        model = self._wrapped
        features = image_features(model, inputs)
        self.answer_ids, logits = self._decode(with_features(inputs, features))
        if logits is not None:
            self.target = self._step_target_for(self.answer_ids)
            return {"logits": logits}
        self.target = self._target_for(self.answer_ids)
        return {"logits": model(**with_features(self._force(inputs, self.answer_ids), features)).logits}


def _no_generate(inputs: dict[str, Any]) -> list[int]:
    raise RuntimeError("SharedPrefill decodes in its forward")
