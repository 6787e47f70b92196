"""The fixed vocabularies of the scenes: shapes (the categories), colours, and every word a
caption, question or answer can use.

These are contracts: trained models size their heads and tokenizers from them, so adding
or reordering an entry invalidates shipped weights.
"""

from __future__ import annotations

__all__ = ["SHAPES", "COLORS", "CATEGORIES", "COUNT_WORDS", "RELATIONS", "VOCAB", "OCCLUDER_COLOR"]

#: The object categories, in category-id order (``category_id = SHAPES.index(shape) + 1``).
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")

#: Saturated, mutually distant object colours (RGB). No background, distractor or occluder
#: pixel ever takes one of these values, so a mask can be checked against the pixels.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 205, 30),
    "purple": (150, 60, 200),
}

#: COCO ``categories`` entries: one per shape, ids 1-based.
CATEGORIES: list[dict] = [{"id": i + 1, "name": s, "supercategory": "shape"} for i, s in enumerate(SHAPES)]

#: Answers to "how many objects are there ?", indexed by the count.
COUNT_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five")

#: Spatial relations, decided by the dominant axis between two object centres.
RELATIONS: tuple[str, ...] = ("left", "right", "above", "below")

#: The dark grey of occluding bars (not an object colour).
OCCLUDER_COLOR: tuple[int, int, int] = (70, 70, 70)

_GRAMMAR = {"a", "and", ",", "?", "of", "what", "color", "is", "the", "shape", "object"}
_QUESTIONS = {"how", "many", "objects", "are", "there", "yes", "no"}

#: Every word of every caption, question and answer, sorted.
VOCAB: tuple[str, ...] = tuple(sorted(set(SHAPES) | set(COLORS) | set(COUNT_WORDS) | set(RELATIONS) | _GRAMMAR | _QUESTIONS))
