"""Ground-truth scenes: coloured shapes on a background, with exact masks, boxes, a caption
whose words link to objects, and question/answer pairs whose answers link to objects.

>>> from mmcam.data import generate_scene
>>> scene = generate_scene(7)
>>> scene.caption
'a red triangle , a green diamond and a yellow triangle'
>>> scene.word_links[:3]  # "a" -> nothing; "red", "triangle" -> object 2
[[], [2], [2]]
>>> scene.objects[2].color, scene.objects[2].shape
('red', 'triangle')
>>> scene.qa[0].question, scene.qa[0].answer, scene.qa[0].object_ids
('what color is the diamond ?', 'green', [0])

Everything is drawn on a numpy grid with hard edges (see :mod:`mmcam.data.raster`), so:

* the same seed gives the same bytes on every machine;
* an object's ``mask`` is exactly its visible pixels — objects are painted in order (later
  ones in front) and an occluding bar goes on top — and every mask pixel has the object's
  colour; no background, clutter or occluder pixel has an object colour;
* ``box`` is the tight box of the mask; ``semantic`` and ``instance`` are the masks painted
  into one map.

Captions and questions follow the grammar in :mod:`mmcam.data.language`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from ..errors import InputError
from .language import QA, caption, questions
from .raster import BACKGROUNDS, background, clutter, occluder_bar, shape_mask
from .vocab import CATEGORIES, COLORS, COUNT_WORDS, OCCLUDER_COLOR, RELATIONS, SHAPES, VOCAB

__all__ = [
    "SHAPES",
    "COLORS",
    "CATEGORIES",
    "COUNT_WORDS",
    "RELATIONS",
    "VOCAB",
    "SceneConfig",
    "SceneObject",
    "QA",
    "Scene",
    "generate_scene",
    "generate_scenes",
    "classification_config",
    "render_objects",
]

#: How many fresh layouts to try before giving up on a config that cannot be satisfied.
_LAYOUT_TRIES = 50
#: Candidate objects drawn per layout.
_CANDIDATES_PER_LAYOUT = 300


@dataclass(frozen=True)
class SceneConfig:
    """What a scene may contain. Sizes are object radii in pixels (an object spans ~2 r).

    Defaults: 64×64, 1–3 objects of radius 7–11 (14–22 px across), plain background,
    objects at least 3 px apart, and no two objects with the same colour *and* shape, so
    every caption and question is unambiguous.

    ``distractors``: number of small clutter blobs (colours outside ``COLORS``, no category);
    ``None`` means 4 for ``background="cluttered"`` and 0 otherwise.
    ``min_gap``: pixels between the bounding circles of two objects; negative lets objects
    overlap (the later one is in front and the earlier one's mask loses the hidden pixels).
    ``relation_margin``: pixels that keep spatial relations decidable: in two-object scenes
    the dominant axis wins by at least this much (``||dx| - |dy||``), and with three or more
    objects their centres differ by at least this much in x (the left-to-right order).
    ``min_visible``: share of each object's pixels that later objects must leave uncovered
    (the occluding bar comes on top and hides at most a 3-px-wide strip).
    """

    image_size: int = 64
    min_objects: int = 1
    max_objects: int = 3
    shapes: tuple[str, ...] = SHAPES
    colors: tuple[str, ...] = tuple(COLORS)
    min_radius: int = 7
    max_radius: int = 11
    background: str = "plain"  # "plain" | "textured" | "cluttered"
    occluders: bool = False
    distractors: int | None = None
    unique_attributes: bool = True
    min_gap: float = 3.0
    relation_margin: float = 4.0
    min_visible: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "shapes", tuple(self.shapes))
        object.__setattr__(self, "colors", tuple(self.colors))
        problems = list(self._problems())
        if problems:
            raise InputError("invalid SceneConfig: " + "; ".join(problems))

    def _problems(self):
        if not 0 <= self.min_objects <= self.max_objects <= len(COUNT_WORDS) - 1:
            yield f"need 0 <= min_objects <= max_objects <= {len(COUNT_WORDS) - 1}, got {self.min_objects}..{self.max_objects}"
        if not 2 <= self.min_radius <= self.max_radius:
            yield f"need 2 <= min_radius <= max_radius, got {self.min_radius}..{self.max_radius}"
        if self.image_size < 2 * self.max_radius + 4:
            yield f"image_size {self.image_size} cannot hold an object of radius {self.max_radius}; pass image_size >= {2 * self.max_radius + 4}"
        if not self.shapes or set(self.shapes) - set(SHAPES):
            yield f"shapes must be a non-empty subset of {SHAPES}, got {self.shapes}"
        if not self.colors or set(self.colors) - set(COLORS):
            yield f"colors must be a non-empty subset of {tuple(COLORS)}, got {self.colors}"
        if self.background not in BACKGROUNDS:
            yield f"background must be one of {BACKGROUNDS}, got {self.background!r}"
        if not 0 <= self.min_visible <= 1:
            yield f"min_visible must be in [0, 1], got {self.min_visible}"
        if self.distractors is not None and self.distractors < 0:
            yield f"distractors must be >= 0 or None, got {self.distractors}"
        if self.unique_attributes and self.max_objects > len(self.shapes) * len(self.colors):
            yield f"{self.max_objects} objects cannot all differ in colour/shape pairs; lower max_objects or pass unique_attributes=False"

    @property
    def n_distractors(self) -> int:
        """Clutter blobs per scene (resolves ``distractors=None``)."""
        if self.distractors is not None:
            return self.distractors
        return 4 if self.background == "cluttered" else 0


def classification_config(**overrides: Any) -> SceneConfig:
    """Single-object scenes for shape classification: ``Scene.label`` is the shape's category."""
    return SceneConfig(**{"min_objects": 1, "max_objects": 1, **overrides})


@dataclass
class SceneObject:
    """One object of a scene.

    ``center`` (x, y) in pixels is the centre of the full shape (its unoccluded box is
    symmetric about it); ``radius`` sets its size (``size`` = 2 r, the nominal extent).
    ``mask`` holds the *visible* pixels only; ``box`` (x, y, w, h) is their tight box.
    """

    shape: str
    color: str
    category_id: int  # SHAPES.index(shape) + 1
    center: tuple[float, float]
    radius: int
    mask: np.ndarray  # bool (H, W)
    box: tuple[int, int, int, int]

    @property
    def size(self) -> int:
        """Nominal extent in pixels (twice the radius)."""
        return 2 * self.radius

    @property
    def area(self) -> int:
        """Visible pixels."""
        return int(self.mask.sum())

    @property
    def rgb(self) -> tuple[int, int, int]:
        """The object's exact pixel colour."""
        return COLORS[self.color]


@dataclass
class Scene:
    """An image with exact ground truth (see the module docstring)."""

    seed: int
    image: np.ndarray  # uint8 (H, W, 3)
    objects: list[SceneObject]
    semantic: np.ndarray  # int64 (H, W): 0 background, else the visible object's category id
    instance: np.ndarray  # int64 (H, W): 0 background, else object index + 1
    caption_tokens: list[str]
    word_links: list[list[int]]  # per caption token, indices into ``objects``
    qa: list[QA] = field(default_factory=list)

    @property
    def caption(self) -> str:
        """The caption as one string (tokens joined by spaces)."""
        return " ".join(self.caption_tokens)

    @property
    def label(self) -> int:
        """Classification label: category id (1-based) of the largest visible object
        (the first one on ties); 0 for a scene without objects."""
        if not self.objects:
            return 0
        return max(self.objects, key=lambda o: o.area).category_id


class _Placement(NamedTuple):
    shape: str
    color: str
    cx: float
    cy: float
    r: int
    mask: np.ndarray  # bool (H, W): the full, unoccluded shape


def _draw_candidate(rng: np.random.Generator, config: SceneConfig) -> tuple[int, float, float]:
    r = int(rng.integers(config.min_radius, config.max_radius + 1))
    cx, cy = rng.uniform(r + 1, config.image_size - r - 1, 2)
    return r, float(cx), float(cy)


def _fits(r: int, cx: float, cy: float, placed: list[_Placement], n: int, config: SceneConfig) -> bool:
    """Far enough from every placed object, and every relation stays decidable."""
    for p in placed:
        dx, dy = abs(cx - p.cx), abs(cy - p.cy)
        reach = r + p.r + config.min_gap
        if reach > 0 and dx * dx + dy * dy < reach * reach:
            return False
        if n == 2 and abs(dx - dy) < config.relation_margin:
            return False
        if n >= 3 and dx < config.relation_margin:
            return False
    return True


def _layout(rng: np.random.Generator, config: SceneConfig, n: int) -> list[_Placement]:
    """``n`` objects placed by rejection sampling (a fresh layout if one gets stuck).

    Objects are painted in order, so a candidate goes in front of everything placed so far;
    it is rejected if it would leave an earlier object less than ``min_visible`` visible.
    """
    for _ in range(_LAYOUT_TRIES):
        placed: list[_Placement] = []
        covered: list[np.ndarray] = []  # per placed object: its pixels hidden by later objects
        for _ in range(_CANDIDATES_PER_LAYOUT):
            if len(placed) == n:
                break
            r, cx, cy = _draw_candidate(rng, config)
            if not _fits(r, cx, cy, placed, n, config):
                continue
            shape = config.shapes[int(rng.integers(len(config.shapes)))]
            color = config.colors[int(rng.integers(len(config.colors)))]
            if config.unique_attributes and any((p.shape, p.color) == (shape, color) for p in placed):
                continue
            mask = shape_mask(shape, cx, cy, r, config.image_size)
            hidden = [c | (p.mask & mask) for p, c in zip(placed, covered)]
            if any(h.sum() > (1 - config.min_visible) * p.mask.sum() for p, h in zip(placed, hidden)):
                continue
            placed.append(_Placement(shape, color, cx, cy, r, mask))
            covered = [*hidden, np.zeros_like(mask)]
        if len(placed) == n:
            return placed
    raise InputError(
        f"could not place {n} objects of radius {config.min_radius}..{config.max_radius} in {config.image_size}x{config.image_size} "
        f"with min_gap={config.min_gap} and relation_margin={config.relation_margin}; lower max_objects or max_radius, or raise image_size"
    )


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the smallest box holding every True pixel; zeros for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return (0, 0, 0, 0)
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def _visible_masks(full: list[np.ndarray], hidden: np.ndarray) -> list[np.ndarray]:
    """Each mask minus the pixels of later (front) masks and of ``hidden``."""
    covered = hidden.copy()
    visible = []
    for mask in reversed(full):
        visible.append(mask & ~covered)
        covered |= mask
    return visible[::-1]


def render_objects(objects: list[SceneObject], canvas: np.ndarray) -> np.ndarray:
    """Paint objects' visible masks in their colours onto a copy of ``canvas``."""
    image = canvas.copy()
    for obj in objects:
        image[obj.mask] = COLORS[obj.color]
    return image


def generate_scene(seed: int, config: SceneConfig = SceneConfig()) -> Scene:
    """One scene, fully determined by ``seed`` and ``config``."""
    rng = np.random.default_rng(seed)
    size = config.image_size
    image = background(rng, config.background, size)
    clutter(rng, image, config.n_distractors)
    n = int(rng.integers(config.min_objects, config.max_objects + 1))
    layout = _layout(rng, config, n)
    for p in layout:
        image[p.mask] = COLORS[p.color]
    hidden = np.zeros((size, size), bool)
    if config.occluders and layout:
        target = layout[int(rng.integers(len(layout)))]
        hidden = occluder_bar(rng, target.cx, target.cy, target.r, size)
        image[hidden] = OCCLUDER_COLOR
    objects = [
        SceneObject(p.shape, p.color, SHAPES.index(p.shape) + 1, (p.cx, p.cy), p.r, mask, _tight_box(mask))
        for p, mask in zip(layout, _visible_masks([p.mask for p in layout], hidden))
    ]
    semantic = np.zeros((size, size), np.int64)
    instance = np.zeros((size, size), np.int64)
    for i, obj in enumerate(objects):
        semantic[obj.mask] = obj.category_id
        instance[obj.mask] = i + 1
    tokens, links = caption(objects)
    return Scene(seed, image, objects, semantic, instance, tokens, links, questions(objects, rng))


def generate_scenes(n: int, seed: int, config: SceneConfig = SceneConfig()) -> list[Scene]:
    """``n`` scenes; scene ``i`` is ``generate_scene(seed * 100_003 + i, config)``."""
    return [generate_scene(seed * 100_003 + i, config) for i in range(n)]
