"""``mmcam demo``: every task on the zoo models over a few generated scenes, offline.

Writes one folder per task (overlay PNGs + JSON per image) and ``report.html`` with all of
them. A task whose zoo model is not shipped in this build is listed as skipped, with why.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .render.report import write_report

__all__ = ["run_demo", "DEMO_TASKS"]


def _classify(name: str) -> Callable[[Any, Any], Any]:
    def run(scene: Any, zoo: Any) -> Any:
        from .tasks.classification import explain_classification

        model, processor = zoo.load(name)
        return explain_classification(model, scene.image, processor=processor, topk=2)

    return run


def _caption(scene: Any, zoo: Any) -> Any:
    from .tasks.caption import explain_caption

    model, processor = zoo.load("captioner")
    return explain_caption(model, processor, scene.image)


def _vqa(scene: Any, zoo: Any) -> Any:
    from .tasks.vqa import explain_vqa

    model, processor = zoo.load("vqa")
    question = scene.qa[0].question
    return explain_vqa(model, processor, scene.image, question)


def _detect(name: str) -> Callable[[Any, Any], Any]:
    def run(scene: Any, zoo: Any) -> Any:
        from .tasks.detection import explain_detections

        model, processor = zoo.load(name)
        return explain_detections(model, scene.image, processor=processor)

    return run


def _segment(scene: Any, zoo: Any) -> Any:
    from .tasks.segmentation import explain_segmentation

    model, processor = zoo.load("segmenter")
    return explain_segmentation(model, scene.image, processor=processor)


DEMO_TASKS: dict[str, tuple[str, Callable[[Any, Any], Any]]] = {
    "classify": ("classifier", _classify("classifier")),
    "vit": ("vit", _classify("vit")),
    "caption": ("captioner", _caption),
    "vqa": ("vqa", _vqa),
    "detect-yolo": ("yolo", _detect("yolo")),
    "detect-detr": ("detr", _detect("detr")),
    "segment": ("segmenter", _segment),
}


def _action_explanations(zoo: Any, n: int, seed: int) -> list[Any]:
    from .data import GridConfig, generate_grids
    from .tasks.action import explain_action

    model, _ = zoo.load("qnet")
    return [explain_action(model, state.obs, image=state.obs_image(8)) for state in generate_grids(n, seed, GridConfig())]


class _CachedZoo:
    """The zoo, loading each model once per demo run."""

    def __init__(self, module: Any):
        self.available = module.available
        self.load = functools.lru_cache(maxsize=None)(module.load)


def run_demo(out: Path, n_images: int = 3, seed: int = 2026) -> Path:
    """Run the demo into ``out``; return the report's path."""
    from . import zoo as zoo_module
    from .data import SceneConfig, generate_scenes

    zoo = _CachedZoo(zoo_module)

    out.mkdir(parents=True, exist_ok=True)
    scenes = generate_scenes(n_images, seed, SceneConfig())
    available = set(zoo.available())
    explanations, names, log = [], [], {"ran": {}, "skipped": {}}
    jobs = [(task, model, fn) for task, (model, fn) in DEMO_TASKS.items()]
    for task, model_name, fn in tqdm(jobs, desc="demo", unit="task"):
        if model_name not in available:
            log["skipped"][task] = f"zoo model {model_name!r} is not shipped in this build"
            continue
        start = time.perf_counter()
        try:
            for i, scene in enumerate(scenes):
                exp = fn(scene, zoo)
                exp.save(out / task, stem=f"scene{i}")
                explanations.append(exp)
                names.append(f"scene {i} · {task}")
        except ImportError as error:
            log["skipped"][task] = f"task module missing in this build: {error}"
            continue
        log["ran"][task] = round(time.perf_counter() - start, 2)
    if "qnet" in available:
        try:
            start = time.perf_counter()
            for i, exp in enumerate(_action_explanations(zoo, n_images, seed)):
                exp.save(out / "action", stem=f"grid{i}")
                explanations.append(exp)
                names.append(f"grid {i} · action")
            log["ran"]["action"] = round(time.perf_counter() - start, 2)
        except ImportError as error:
            log["skipped"]["action"] = f"task module missing in this build: {error}"
    else:
        log["skipped"]["action"] = "zoo model 'qnet' is not shipped in this build"
    (out / "demo.json").write_text(json.dumps(log, indent=2))
    for task, why in log["skipped"].items():
        print(f"demo: skipped {task}: {why}")
    return write_report(out / "report.html", explanations, title="mmcam demo", names=names)
