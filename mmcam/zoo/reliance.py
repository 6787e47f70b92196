"""Reliance: does a zoo model's prediction depend on the object it should depend on?

Fresh scenes (an unseen seed) are re-rendered *exactly* without one object, using
``mmcam.data``'s own rasteriser: the background and clutter are replayed from the scene's
seed and the remaining objects repainted from their full shapes (no inpainting guesswork).
Deleting the **referred** object (the one the prediction is about) should change the
prediction; deleting a **distractor** (another object, or a clutter blob) should not.
This is the deletion test behind "Sanity checks"-style evaluations (Adebayo et al. 2018,
https://arxiv.org/abs/1810.03292; RISE deletion, Petsiuk et al. 2018,
https://arxiv.org/abs/1806.07421) applied to the input rather than to a saliency map.

Per model (scenes where the original prediction is correct):

==========  ====================================  =================  =====================
model       prediction compared                   referred           distractor
==========  ====================================  =================  =====================
classifier  argmax class                          the object         a clutter blob
vit         argmax class                          the object         a clutter blob
segmenter   majority class on the referred mask   an object          another object
yolo, detr  a box of its class at IoU>=0.5, s>=.5 an object          another object
captioner   the generated caption                 an object          a clutter blob
vqa         the answer to a question about it     an object it asks  an object it doesn't
qnet        argmax action (10 n grid states)      a wall whose       a wall whose removal
                                                  removal changes    keeps the BFS-optimal
                                                  the BFS action     action
==========  ====================================  =================  =====================

``python -m mmcam.zoo.reliance [--n 200] [--seed 31337] [--models yolo detr ...]`` prints
the table (referred change rate: high is good; distractor change rate: low is good).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data import COLORS, GridConfig, Scene, SceneConfig, classification_config, generate_grids, generate_scenes
from ..data.gridworld import EMPTY, WALL, _q_values, distances
from ..data.raster import background, clutter, shape_mask
from ..errors import InputError

__all__ = ["scene_layers", "render_without", "measure", "MODELS", "SEED"]

#: Scenes for reliance never overlap training (seed * 1_000_003 + step) or the quality seeds.
SEED = 31_337


def scene_layers(scene: Scene, config: SceneConfig) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """The scene's clean background and its clutter blobs ``(mask, rgb)``, replayed from
    ``scene.seed`` exactly as ``mmcam.data.generate_scene`` drew them."""
    if config.occluders:
        raise InputError("scenes with occluders cannot be re-rendered object by object; pass a SceneConfig with occluders=False")
    rng = np.random.default_rng(scene.seed)
    size = config.image_size
    canvas = background(rng, config.background, size)
    blobs = []
    for _ in range(config.n_distractors):  # clutter(rng, img, 1) n times draws what clutter(rng, img, n) draws
        scratch = np.zeros_like(canvas)
        clutter(rng, scratch, 1)
        mask = scratch.any(-1)
        blobs.append((mask, scratch[mask][0]))
    return canvas, blobs


def render_without(scene: Scene, config: SceneConfig, objects: Sequence[int] = (), blobs: Sequence[int] = ()) -> np.ndarray:
    """``scene.image`` re-rendered without the given objects (indices into
    ``scene.objects``) and clutter blobs; with nothing dropped it equals ``scene.image``."""
    canvas, clutter_blobs = scene_layers(scene, config)
    image = canvas.copy()
    for k, (mask, rgb) in enumerate(clutter_blobs):
        if k not in blobs:
            image[mask] = rgb
    for i, obj in enumerate(scene.objects):
        if i not in objects:
            image[shape_mask(obj.shape, obj.center[0], obj.center[1], obj.radius, config.image_size)] = COLORS[obj.color]
    return image


# -- per-model predictions -------------------------------------------------------------------


def _class_logits(model: Any, processor: Any, images: list[np.ndarray]) -> torch.Tensor:
    inputs = processor(images)
    with torch.no_grad():
        out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
    return getattr(out, "logits", out)


def _detections(name: str, model: Any, processor: Any, images: list[np.ndarray], threshold: float = 0.5) -> list[list[tuple[list[float], int]]]:
    """Per image, kept ``(xyxy box, 0-based class)`` at score >= ``threshold``."""
    if name in ("yolo", "yolo26"):
        from .recipes.common import predict

        results = [predict(model, im[..., ::-1].copy(), imgsz=64, conf=threshold, verbose=False, device="cpu")[0].boxes for im in images]
        return [[(b, int(c)) for b, c in zip(r.xyxy.tolist(), r.cls.tolist())] for r in results]
    with torch.no_grad():
        outputs = model(**processor(images=images, return_tensors="pt"))
    dets = processor.post_process_object_detection(outputs, threshold=threshold, target_sizes=[im.shape[:2] for im in images])
    return [[(b, int(c)) for b, c in zip(d["boxes"].tolist(), d["labels"].tolist())] for d in dets]


def _found(dets: list[tuple[list[float], int]], box: tuple[int, int, int, int], label: int) -> bool:
    x, y, w, h = box
    for (x0, y0, x1, y1), cls in dets:
        inter = max(0.0, min(x1, x + w) - max(x0, x)) * max(0.0, min(y1, y + h) - max(y0, y))
        if cls == label and inter / ((x1 - x0) * (y1 - y0) + w * h - inter) >= 0.5:
            return True
    return False


Rates = tuple[list[bool], list[bool]]


def _classifier(name: str, n: int, seed: int) -> Rates:
    from . import load

    model, processor = load(name)
    config = classification_config(background="cluttered")
    scenes = generate_scenes(n, seed, config)
    rng = np.random.default_rng(seed)
    drop_blob = [int(rng.integers(config.n_distractors)) for _ in scenes]
    pred = _class_logits(model, processor, [s.image for s in scenes]).argmax(1)
    no_obj = _class_logits(model, processor, [render_without(s, config, objects=[0]) for s in scenes]).argmax(1)
    no_blob = _class_logits(model, processor, [render_without(s, config, blobs=[b]) for s, b in zip(scenes, drop_blob)]).argmax(1)
    ok = [int(p) == s.label - 1 for p, s in zip(pred, scenes)]
    return ([bool(a != b) for a, b, k in zip(pred, no_obj, ok) if k], [bool(a != b) for a, b, k in zip(pred, no_blob, ok) if k])


def _pairs(scenes: list[Scene], seed: int) -> list[tuple[int, int]]:
    """A (referred, distractor) pair of object indices per scene (needs >= 2 objects)."""
    rng = np.random.default_rng(seed)
    pairs = []
    for s in scenes:
        r, d = rng.choice(len(s.objects), 2, replace=False)
        pairs.append((int(r), int(d)))
    return pairs


def _segmenter(n: int, seed: int) -> Rates:
    from . import load

    model, processor = load("segmenter")
    config = SceneConfig(min_objects=2, background="textured")
    scenes = generate_scenes(n, seed, config)
    pairs = _pairs(scenes, seed)

    def labels(images: list[np.ndarray]) -> torch.Tensor:
        logits = _class_logits(model, processor, images)
        return F.interpolate(logits, size=images[0].shape[:2], mode="bilinear", align_corners=False).argmax(1)

    def majority(maps: torch.Tensor) -> list[int]:
        return [int(torch.mode(m[torch.from_numpy(s.objects[r].mask)]).values) for m, s, (r, _) in zip(maps, scenes, pairs)]

    orig = majority(labels([s.image for s in scenes]))
    no_ref = majority(labels([render_without(s, config, objects=[r]) for s, (r, _) in zip(scenes, pairs)]))
    no_dis = majority(labels([render_without(s, config, objects=[d]) for s, (_, d) in zip(scenes, pairs)]))
    ok = [o == s.objects[r].category_id for o, s, (r, _) in zip(orig, scenes, pairs)]
    return ([a != b for a, b, k in zip(orig, no_ref, ok) if k], [a != b for a, b, k in zip(orig, no_dis, ok) if k])


def _detector(name: str, n: int, seed: int) -> Rates:
    from . import load

    model, processor = load(name)
    config = SceneConfig(min_objects=2, background="textured")
    scenes = generate_scenes(n, seed, config)
    pairs = _pairs(scenes, seed)

    def found(images: list[np.ndarray]) -> list[bool]:
        dets = _detections(name, model, processor, images)
        return [_found(d, s.objects[r].box, s.objects[r].category_id - 1) for d, s, (r, _) in zip(dets, scenes, pairs)]

    orig = found([s.image for s in scenes])
    no_ref = found([render_without(s, config, objects=[r]) for s, (r, _) in zip(scenes, pairs)])
    no_dis = found([render_without(s, config, objects=[d]) for s, (_, d) in zip(scenes, pairs)])
    return ([not b for a, b in zip(orig, no_ref) if a], [not b for a, b in zip(orig, no_dis) if a])


def _captioner(n: int, seed: int) -> Rates:
    from . import load

    model, processor = load("captioner")
    config = SceneConfig(background="cluttered")
    scenes = generate_scenes(n, seed, config)
    rng = np.random.default_rng(seed)
    choice = [(int(rng.integers(len(s.objects))), int(rng.integers(config.n_distractors))) for s in scenes]

    def captions(images: list[np.ndarray]) -> list[str]:
        with torch.no_grad():
            ids = model.generate(**processor(images=images))
        return processor.batch_decode(ids)

    orig = captions([s.image for s in scenes])
    no_ref = captions([render_without(s, config, objects=[r]) for s, (r, _) in zip(scenes, choice)])
    no_dis = captions([render_without(s, config, blobs=[b]) for s, (_, b) in zip(scenes, choice)])
    ok = [o.split() == s.caption_tokens for o, s in zip(orig, scenes)]
    return ([a != b for a, b, k in zip(orig, no_ref, ok) if k], [a != b for a, b, k in zip(orig, no_dis, ok) if k])


def _vqa(n: int, seed: int) -> Rates:
    from . import load

    model, processor = load("vqa")
    config = SceneConfig(min_objects=2, background="textured")
    scenes = generate_scenes(n, seed, config)
    rng = np.random.default_rng(seed)
    rows = []  # (scene, question, referred, distractor)
    for s in scenes:
        about = [q for q in s.qa if q.object_ids and len(q.object_ids) < len(s.objects)]
        q = about[int(rng.integers(len(about)))]
        others = [i for i in range(len(s.objects)) if i not in q.object_ids]
        rows.append((s, q, q.object_ids[int(rng.integers(len(q.object_ids)))], others[int(rng.integers(len(others)))]))

    def answers(images: list[np.ndarray]) -> list[str]:
        with torch.no_grad():
            logits = model(**processor(images=images, text=[q.question for _, q, _, _ in rows])).logits
        return [model.config.id2label[int(i)] for i in logits.argmax(1)]

    orig = answers([s.image for s, *_ in rows])
    no_ref = answers([render_without(s, config, objects=[r]) for s, _, r, _ in rows])
    no_dis = answers([render_without(s, config, objects=[d]) for s, _, _, d in rows])
    ok = [o == q.answer for o, (_, q, _, _) in zip(orig, rows)]
    return ([a != b for a, b, k in zip(orig, no_ref, ok) if k], [a != b for a, b, k in zip(orig, no_dis, ok) if k])


def _qnet(n: int, seed: int) -> Rates:
    from . import load

    model, _ = load("qnet")
    rng = np.random.default_rng(seed)
    originals, deciding, idle = [], [], []
    for state in generate_grids(10 * n, seed, GridConfig()):  # ~6% of states have a wall that decides the action
        walls: dict[bool, list[np.ndarray]] = {True: [], False: []}
        for cell in map(tuple, np.argwhere(state.grid == WALL)):
            grid = state.grid.copy()
            grid[cell] = EMPTY
            q = _q_values(grid, state.agent, distances(grid, state.goal))
            best = np.flatnonzero(q == q.max())
            if state.optimal_action not in best:  # the old action is no longer optimal
                walls[True].append(grid)
            elif len(best) == 1:  # still the only optimal action
                walls[False].append(grid)
        if walls[True] and walls[False]:
            originals.append(state)
            deciding.append(walls[True][int(rng.integers(len(walls[True])))])
            idle.append(walls[False][int(rng.integers(len(walls[False])))])

    def actions(grids: list[np.ndarray]) -> list[int]:
        from ..data.gridworld import AGENT, GOAL

        obs = np.stack([np.stack([g == AGENT, g == GOAL, g == WALL]).astype(np.float32) for g in grids])
        with torch.no_grad():
            return model(torch.from_numpy(obs)).argmax(1).tolist()

    orig = actions([s.grid for s in originals])
    no_ref, no_dis = actions(deciding), actions(idle)
    ok = [o == s.optimal_action for o, s in zip(orig, originals)]
    return ([a != b for a, b, k in zip(orig, no_ref, ok) if k], [a != b for a, b, k in zip(orig, no_dis, ok) if k])


#: What "referred" and "distractor" mean per model (written into the model cards).
DEFINITIONS = {
    "classifier": "referred = the only object (a 4-way classifier must still name some class, so ~25% stay the same by chance), distractor = a clutter blob",
    "vit": "referred = the only object (a 4-way classifier must still name some class, so ~25% stay the same by chance), distractor = a clutter blob",
    "segmenter": "prediction = majority class on the referred object's pixels; distractor = another object",
    "yolo": "prediction = a box of the referred object's class at IoU >= 0.5, score >= 0.5; distractor = another object",
    "detr": "prediction = a box of the referred object's class at IoU >= 0.5, score >= 0.5; distractor = another object",
    "yolo26": "prediction = a box of the referred object's class at IoU >= 0.5, score >= 0.5; distractor = another object",
    "captioner": "prediction = the generated caption; referred = one object, distractor = a clutter blob",
    "vqa": "prediction = the answer to a question about the referred object; distractor = an object the question does not involve",
    "qnet": "referred = a wall whose removal makes the action non-optimal (BFS), distractor = a wall whose removal keeps it optimal",
}

MODELS: dict[str, Callable[[int, int], Rates]] = {
    "classifier": lambda n, seed: _classifier("classifier", n, seed),
    "vit": lambda n, seed: _classifier("vit", n, seed),
    "segmenter": _segmenter,
    "yolo": lambda n, seed: _detector("yolo", n, seed),
    "detr": lambda n, seed: _detector("detr", n, seed),
    "yolo26": lambda n, seed: _detector("yolo26", n, seed),
    "captioner": _captioner,
    "vqa": _vqa,
    "qnet": _qnet,
}


def measure(name: str, n: int = 200, seed: int = SEED) -> dict[str, float]:
    """Reliance of zoo model ``name`` on ``n`` fresh scenes (or grid states): the share of
    correctly predicted cases whose prediction changes when the referred object is deleted
    (``referred_change``, want high) and when a distractor is deleted (``distractor_change``,
    want low), with the case counts."""
    if name not in MODELS:
        raise InputError(f"no reliance test for {name!r}; pass one of {', '.join(MODELS)}")
    referred, distractor = MODELS[name](n, seed)
    return {
        "referred_change": round(float(np.mean(referred)), 4) if referred else float("nan"),
        "distractor_change": round(float(np.mean(distractor)), 4) if distractor else float("nan"),
        "cases": len(referred),
        "distractor_cases": len(distractor),
    }


def main(argv: list[str] | None = None) -> None:
    from . import available

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="scenes (grid states) per model")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--models", nargs="*", default=None, help="default: every shipped model")
    parser.add_argument("--write", action="store_true", help="store the rates in the shipped JSON configs and rewrite the model cards")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    names = args.models or [m for m in MODELS if m in available()]
    print("| model | delete referred: prediction changes | delete distractor: prediction changes | cases |")
    print("|---|---|---|---|")
    for name in names:
        r = measure(name, args.n, args.seed)
        print(f"| {name} | {r['referred_change']:.1%} | {r['distractor_change']:.1%} | {r['cases']} |", flush=True)
        if args.write:
            _write(name, {**r, "seed": args.seed, "n": args.n, "definition": DEFINITIONS[name]})


def _write(name: str, rates: dict[str, Any]) -> None:
    import json

    from . import WEIGHTS_DIR
    from .cards import write_card

    path = WEIGHTS_DIR / f"{name}.json"
    cfg = json.loads(path.read_text())
    cfg["reliance"] = rates
    path.write_text(json.dumps(cfg, indent=2))
    write_card(name, cfg)


if __name__ == "__main__":
    main()
