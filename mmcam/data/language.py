"""Captions and question/answer pairs for a scene, every word and answer linked to the
objects it is about.

Grammar (deterministic, so a model can learn it exactly):

* 1 object: ``a red circle``.
* 2 objects: ``a red circle left of a blue square``. The first object is the one whose
  colour comes first in ``COLORS`` (then the shape, in ``SHAPES`` order; then the leftmost),
  so the order is decided by what is visible; the relation is where the first object is
  relative to the second along the dominant axis between their centres (``left of``,
  ``right of``, ``above``, ``below``).
* 3 or more objects, left to right: ``a red circle , a blue square and a green triangle``.

Word links: a colour or shape word links to its object; ``left``/``right``/``above``/
``below``/``of`` link to both objects of the relation; ``a``, ``,`` and ``and`` link to none.

Questions (``QA.object_ids`` = the objects the answer depends on):

* color — ``what color is the circle ?`` (asked only when exactly one circle): that object;
* shape — ``what shape is the blue object ?`` (only when exactly one blue object): that object;
* count — ``how many objects are there ?``: every object;
* existence — ``is there a green square ?``: one ``yes`` (a present object, linked) and one
  ``no`` (an absent colour/shape pair, linked to nothing) per scene, so answers are balanced;
* position — two-object scenes, both directions: ``what is left of the blue square ?`` →
  the other object's shape, linked to that object (the one the answer names).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .vocab import COLORS, COUNT_WORDS, SHAPES

if TYPE_CHECKING:
    from .scenes import SceneObject

__all__ = ["QA", "QUESTION_TYPES", "relation", "relation_phrase", "caption", "questions"]

QUESTION_TYPES: tuple[str, ...] = ("color", "shape", "count", "position", "existence")


@dataclass
class QA:
    """A question, its one-word answer (in ``VOCAB``) and the objects the answer depends on."""

    question: str
    answer: str
    type: str  # one of QUESTION_TYPES
    object_ids: list[int] = field(default_factory=list)


def relation(a: tuple[float, float], b: tuple[float, float]) -> str:
    """Where centre ``a`` (x, y) is relative to centre ``b``, along the dominant axis.

    Ties (|dx| == |dy|) count as horizontal; the generator keeps pairs away from ties.
    """
    dx, dy = a[0] - b[0], a[1] - b[1]
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "above" if dy < 0 else "below"


def relation_phrase(rel: str) -> list[str]:
    """The words of a relation: ``left``/``right`` take ``of``; ``above``/``below`` stand alone."""
    return [rel, "of"] if rel in ("left", "right") else [rel]


def _mention_order(objects: list[SceneObject]) -> tuple[int, int]:
    """The two objects of a two-object scene in caption order (by colour, shape, then x)."""
    colors, shapes = list(COLORS), list(SHAPES)

    def key(i: int) -> tuple:
        o = objects[i]
        return colors.index(o.color), shapes.index(o.shape), o.center[0], o.center[1], i

    first, second = sorted(range(2), key=key)
    return first, second


def caption(objects: list[SceneObject]) -> tuple[list[str], list[list[int]]]:
    """Caption tokens and, per token, the indices of the objects it refers to."""
    tokens: list[str] = []
    links: list[list[int]] = []

    def say(words: list[str], link: list[int]) -> None:
        tokens.extend(words)
        links.extend([list(link) for _ in words])

    def phrase(i: int) -> None:
        say(["a"], [])
        say([objects[i].color, objects[i].shape], [i])

    if len(objects) == 2:
        first, second = _mention_order(objects)
        phrase(first)
        say(relation_phrase(relation(objects[first].center, objects[second].center)), [first, second])
        phrase(second)
        return tokens, links
    order = sorted(range(len(objects)), key=lambda i: (objects[i].center[0], i))
    for k, i in enumerate(order):
        if k:
            say(["and" if k == len(order) - 1 else ","], [])
        phrase(i)
    return tokens, links


def questions(objects: list[SceneObject], rng: np.random.Generator) -> list[QA]:
    """Question/answer pairs, each answer linked to the objects it depends on (see module doc)."""
    qa: list[QA] = []
    shapes = [o.shape for o in objects]
    colors = [o.color for o in objects]
    for i, obj in enumerate(objects):
        if shapes.count(obj.shape) == 1:
            qa.append(QA(f"what color is the {obj.shape} ?", obj.color, "color", [i]))
        if colors.count(obj.color) == 1:
            qa.append(QA(f"what shape is the {obj.color} object ?", obj.shape, "shape", [i]))
    qa.append(QA("how many objects are there ?", COUNT_WORDS[len(objects)], "count", list(range(len(objects)))))
    qa.extend(_existence(objects, rng))
    if len(objects) == 2:
        for a, b in (_mention_order(objects), _mention_order(objects)[::-1]):
            where = " ".join(relation_phrase(relation(objects[a].center, objects[b].center)))
            qa.append(QA(f"what is {where} the {objects[b].color} {objects[b].shape} ?", objects[a].shape, "position", [a]))
    return qa


def _existence(objects: list[SceneObject], rng: np.random.Generator) -> list[QA]:
    """One "yes" question about a present object (if any) and one "no" about an absent pair."""
    qa = []
    if objects:
        i = int(rng.integers(len(objects)))
        qa.append(QA(f"is there a {objects[i].color} {objects[i].shape} ?", "yes", "existence", [i]))
    present = {(o.color, o.shape) for o in objects}
    absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
    color, shape = absent[int(rng.integers(len(absent)))]
    qa.append(QA(f"is there a {color} {shape} ?", "no", "existence", []))
    return qa
