"""Ground-truth scenes: coloured shapes on a background, with exact masks, boxes, a caption
whose words link to objects, and question/answer pairs whose answers link to objects.

Everything is drawn on a numpy grid with hard edges (no anti-aliasing), so the ground
truth is exact: a pixel belongs to an object's mask if and only if it has that object's
colour, and the same seed gives the same bytes on every machine.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "SHAPES",
    "COLORS",
    "CATEGORIES",
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

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 205, 30),
    "purple": (150, 60, 200),
}
CATEGORIES: list[dict] = [{"id": i + 1, "name": s, "supercategory": "shape"} for i, s in enumerate(SHAPES)]
OCCLUDER_COLOR = (70, 70, 70)
COUNT_WORDS = ("zero", "one", "two", "three", "four", "five")
RELATIONS = ("left", "right", "above", "below")
VOCAB: tuple[str, ...] = tuple(
    sorted(
        set(SHAPES)
        | set(COLORS)
        | set(COUNT_WORDS)
        | {"a", "and", ",", "?", "of", "left", "right", "above", "below", "what", "color", "is", "the", "shape", "object"}
        | {"how", "many", "objects", "are", "there", "yes", "no"}
    )
)


@dataclass(frozen=True)
class SceneConfig:
    """Parameters of a scene. Sizes are object radii in pixels (an object spans ~2r)."""

    image_size: int = 64
    min_objects: int = 1
    max_objects: int = 3
    shapes: tuple[str, ...] = SHAPES
    colors: tuple[str, ...] = tuple(COLORS)
    min_radius: int = 7
    max_radius: int = 11
    background: str = "plain"  # "plain" | "textured" | "cluttered"
    occluders: bool = False
    distractors: int = 0  # clutter blobs of colours outside COLORS (with background="cluttered": 4)
    unique_attributes: bool = True  # no two objects share both shape and colour


def classification_config(**overrides) -> SceneConfig:
    """One object per image: the label is its shape."""
    return SceneConfig(min_objects=1, max_objects=1, **overrides)


@dataclass
class SceneObject:
    shape: str
    color: str
    category_id: int
    center: tuple[float, float]  # (x, y)
    radius: int
    mask: np.ndarray  # bool (H, W): visible pixels
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # (x, y, w, h) of the visible mask

    @property
    def area(self) -> int:
        return int(self.mask.sum())


@dataclass
class QA:
    question: str
    answer: str
    type: str  # "color" | "shape" | "count" | "position" | "existence"
    object_ids: list[int]


@dataclass
class Scene:
    seed: int
    image: np.ndarray  # uint8 (H, W, 3)
    objects: list[SceneObject]
    semantic: np.ndarray  # int64 (H, W): 0 background, else category id
    instance: np.ndarray  # int64 (H, W): 0 background, else object index + 1
    caption_tokens: list[str]
    word_links: list[list[int]]
    qa: list[QA] = field(default_factory=list)

    @property
    def caption(self) -> str:
        return " ".join(self.caption_tokens)

    @property
    def label(self) -> int:
        """Category id (1-based) of the largest visible object."""
        return max(self.objects, key=lambda o: o.area).category_id


def _shape_mask(shape: str, cx: float, cy: float, r: int, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        half = r * 0.85
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if shape == "triangle":
        top, bottom = cy - r, cy + r * 0.8
        frac = (yy - top) / (bottom - top)
        return (yy >= top) & (yy <= bottom) & (np.abs(dx) <= frac * r)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= r * 1.1
    raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


def _background(rng: np.random.Generator, config: SceneConfig) -> np.ndarray:
    size = config.image_size
    if config.background == "plain":
        base = np.full((size, size, 3), 200, np.int16) + rng.integers(-10, 11, 3)
    elif config.background in ("textured", "cluttered"):
        coarse = rng.integers(-18, 19, (size // 8 + 1, size // 8 + 1, 1))
        base = 190 + np.kron(coarse, np.ones((8, 8, 1), np.int64))[:size, :size] + rng.integers(-6, 7, (size, size, 1))
        base = np.repeat(base, 3, axis=2)
    else:
        raise ValueError(f"unknown background {config.background!r}; pass 'plain', 'textured' or 'cluttered'")
    return np.clip(base, 150, 235).astype(np.uint8)


def render_objects(objects: list[SceneObject], background: np.ndarray) -> np.ndarray:
    """Paint objects (later ones on top) onto a copy of ``background``."""
    image = background.copy()
    for obj in objects:
        image[obj.mask] = COLORS[obj.color]
    return image


def generate_scene(seed: int, config: SceneConfig = SceneConfig()) -> Scene:
    """One scene, fully determined by ``seed`` and ``config``."""
    rng = np.random.default_rng(seed)
    size = config.image_size
    image = _background(rng, config)
    n_clutter = config.distractors or (4 if config.background == "cluttered" else 0)
    for _ in range(n_clutter):  # small blobs in colours that are not object colours
        cx, cy = rng.uniform(3, size - 3, 2)
        blob = _shape_mask("circle", cx, cy, int(rng.integers(2, 4)), size)
        image[blob] = (int(rng.integers(100, 140)),) * 2 + (int(rng.integers(150, 180)),)
    n = int(rng.integers(config.min_objects, config.max_objects + 1))
    placed: list[tuple[float, float, int]] = []
    objects: list[SceneObject] = []
    used: set[tuple[str, str]] = set()
    attempts = 0
    while len(objects) < n and attempts < 500:
        attempts += 1
        r = int(rng.integers(config.min_radius, config.max_radius + 1))
        cx, cy = rng.uniform(r + 1, size - r - 1, 2)
        if any((cx - px) ** 2 + (cy - py) ** 2 < (r + pr + 3) ** 2 for px, py, pr in placed):
            continue
        shape = config.shapes[int(rng.integers(len(config.shapes)))]
        color = config.colors[int(rng.integers(len(config.colors)))]
        if config.unique_attributes and (shape, color) in used:
            continue
        used.add((shape, color))
        placed.append((cx, cy, r))
        objects.append(
            SceneObject(shape, color, SHAPES.index(shape) + 1, (float(cx), float(cy)), r, _shape_mask(shape, cx, cy, r, size))
        )
    image = render_objects(objects, image)
    if config.occluders and objects:
        target = objects[int(rng.integers(len(objects)))]
        x0 = int(target.center[0] + rng.integers(-2, 3))
        bar = np.zeros((size, size), bool)
        bar[:, max(0, x0) : min(size, x0 + 3)] = True
        bar &= np.abs(np.mgrid[0:size, 0:size][0] - target.center[1]) <= target.radius + 4
        image[bar] = OCCLUDER_COLOR
        for obj in objects:
            obj.mask = obj.mask & ~bar
    semantic = np.zeros((size, size), np.int64)
    instance = np.zeros((size, size), np.int64)
    for i, obj in enumerate(objects):
        ys, xs = np.nonzero(obj.mask)
        obj.box = (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)) if len(xs) else (0, 0, 0, 0)
        semantic[obj.mask] = obj.category_id
        instance[obj.mask] = i + 1
    tokens, links = _caption(objects)
    return Scene(seed, image, objects, semantic, instance, tokens, links, _questions(objects, rng))


def generate_scenes(n: int, seed: int, config: SceneConfig = SceneConfig()) -> list[Scene]:
    """``n`` scenes; scene ``i`` is ``generate_scene(seed * 100_003 + i, config)``."""
    return [generate_scene(seed * 100_003 + i, config) for i in range(n)]


def _relation(a: SceneObject, b: SceneObject) -> str:
    """Where ``a`` is relative to ``b``, along the dominant axis."""
    dx, dy = a.center[0] - b.center[0], a.center[1] - b.center[1]
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "above" if dy < 0 else "below"


def _caption(objects: list[SceneObject]) -> tuple[list[str], list[list[int]]]:
    """Caption tokens and, per token, the indices of the objects it refers to.

    1 object: "a red circle"; 2: "a red circle left of a blue square" (the larger object
    first; "left"/"right"/"above"/"below" + "of" link to both); 3+: objects left to right,
    "a red circle , a blue square and a green triangle".
    """
    tokens: list[str] = []
    links: list[list[int]] = []

    def phrase(i: int) -> None:
        tokens.extend(["a", objects[i].color, objects[i].shape])
        links.extend([[], [i], [i]])

    if len(objects) == 2:
        first = 0 if objects[0].area >= objects[1].area else 1
        second = 1 - first
        phrase(first)
        rel = _relation(objects[first], objects[second])
        if rel in ("left", "right"):
            tokens.extend([rel, "of"])
            links.extend([[first, second], [first, second]])
        else:
            tokens.append(rel)
            links.append([first, second])
        phrase(second)
        return tokens, links
    order = sorted(range(len(objects)), key=lambda i: objects[i].center[0])
    for k, i in enumerate(order):
        if k and k == len(order) - 1:
            tokens.append("and")
            links.append([])
        elif k:
            tokens.append(",")
            links.append([])
        phrase(i)
    return tokens, links


def _questions(objects: list[SceneObject], rng: np.random.Generator) -> list[QA]:
    """Question/answer pairs, each answer linked to the objects it depends on."""
    qa: list[QA] = []
    shapes = [o.shape for o in objects]
    colors = [o.color for o in objects]
    for i, obj in enumerate(objects):
        if shapes.count(obj.shape) == 1:
            qa.append(QA(f"what color is the {obj.shape} ?", obj.color, "color", [i]))
        if colors.count(obj.color) == 1:
            qa.append(QA(f"what shape is the {obj.color} object ?", obj.shape, "shape", [i]))
    qa.append(QA("how many objects are there ?", COUNT_WORDS[len(objects)], "count", list(range(len(objects)))))
    # existence, balanced: one present pair, one absent pair
    if objects:
        i = int(rng.integers(len(objects)))
        qa.append(QA(f"is there a {objects[i].color} {objects[i].shape} ?", "yes", "existence", [i]))
    present = {(o.color, o.shape) for o in objects}
    absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
    c, s = absent[int(rng.integers(len(absent)))]
    qa.append(QA(f"is there a {c} {s} ?", "no", "existence", []))
    if len(objects) == 2:
        a, b = 0, 1
        rel = _relation(objects[a], objects[b])
        phrase = f"{rel} of" if rel in ("left", "right") else rel
        qa.append(QA(f"what is {phrase} the {objects[b].color} {objects[b].shape} ?", objects[a].shape, "position", [a]))
    return qa
