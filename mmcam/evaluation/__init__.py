"""``mmcam evaluate``: how good are a task's maps — against exact ground truth, against the
model itself, and under the sanity checks — with baselines beside every number.

For one task, model and set of methods, over a COCO-format dataset read through pycocotools
(by default: scenes generated from ``seed`` and written as COCO first), it reports per method

- localization (``mmcam.metrics.localization``): pointing game, relevance mass and its ratio
  to chance, rank accuracy, pixel AUROC, and the mass landing on *other* objects (ODAM's
  discrimination for boxes, the distractor for caption words);
- faithfulness (``mmcam.metrics.faithfulness``): deletion / insertion AUC, ROAD MoRF / LeRF,
  average drop / increase in confidence;
- sanity (``mmcam.metrics.sanity``): Spearman of |map| after cascading randomization of the
  model (Grad-CAM must fall below 0.3; Guided Backprop, where the model has ReLUs, is shown
  failing), and between the maps of two different targets;
- optionally the captum baselines (occlusion, gradients, SmoothGrad, Integrated Gradients,
  KernelSHAP) on the same items, and every method's rank correlation with occlusion (the
  Grad-CAM paper's faithfulness measure);

plus rows for the centre-Gaussian, uniform and random maps. Deterministic from ``seed``.
"""
from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from ..metrics import faithfulness as faith
from ..metrics.baselines import BASELINES
from ..metrics.localization import pixel_auroc, pointing_game, rank_accuracy, relevance_mass, relevance_mass_ratio
from ..metrics.sanity import PASS_THRESHOLD, cascading_randomization, spearman
from .cases import TASKS, Case, prepare

__all__ = ["evaluate", "Evaluation", "COLUMNS", "TASKS", "ZOO_MODEL"]

#: The zoo model each task is evaluated on by default.
ZOO_MODEL = {"classify": "classifier", "detect": "yolo", "segment": "segmenter", "caption": "captioner", "vqa": "vqa", "action": "qnet"}

#: column -> (header, better: "up" / "down" / ""), in table order.
COLUMNS = {
    "pointing": ("pointing", "up"),
    "mass": ("mass", "up"),
    "mass_ratio": ("mass / chance", "up"),
    "rank_acc": ("rank acc", "up"),
    "auroc": ("AUROC", "up"),
    "others_mass": ("mass on others", "down"),
    "deletion": ("deletion", "down"),
    "insertion": ("insertion", "up"),
    "road_morf": ("ROAD MoRF", "down"),
    "road_lerf": ("ROAD LeRF", "up"),
    "avg_drop": ("avg drop %", "down"),
    "avg_increase": ("avg incr %", "up"),
    "rho_occlusion": ("ρ occlusion", "up"),
    "rho_randomized": ("ρ randomized", "down"),
    "rho_other_target": ("ρ other target", "down"),
    "seconds_per_image": ("s / image", "down"),
}


@dataclass
class Evaluation:
    """One task's table: ``rows[name][column]`` (see :data:`COLUMNS`), ``counts[name]`` items
    averaged per row, ``sanity[name]`` the randomization curve, ``settings`` what ran."""

    task: str
    model: str
    rows: dict[str, dict[str, float]]
    counts: dict[str, int]
    sanity: dict[str, dict[str, Any]]
    settings: dict[str, Any]
    samples: int
    cases: int
    items: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_markdown(self) -> str:
        used = [c for c in COLUMNS if any(c in row for row in self.rows.values())]
        arrow = {"up": " ↑", "down": " ↓", "": ""}
        head = "| maps | items | " + " | ".join(COLUMNS[c][0] + arrow[COLUMNS[c][1]] for c in used) + " |"
        lines = [
            f"### {self.task} · {self.model}",
            "",
            f"{self.samples} samples, {self.cases} cases, {self.items} explained items with ground truth; "
            f"seed {self.settings.get('seed')}; {self.seconds:.0f} s. Command: `{self.settings.get('command', '')}`",
            "",
            head,
            "|" + "---|" * (len(used) + 2),
        ]
        for name, row in self.rows.items():
            cells = [_cell(row.get(c)) for c in used]
            lines.append(f"| {name} | {self.counts.get(name, '')} | " + " | ".join(cells) + " |")
        if self.sanity:
            lines += ["", f"Cascading randomization (Spearman of |map| with the trained model's, head first; passes below {PASS_THRESHOLD}):", ""]
            for name, s in self.sanity.items():
                verdict = "passes" if s["passes"] else "**fails**"
                curve = " → ".join(f"{v:.2f}" for v in s["spearman"])
                lines.append(f"- {name}: {curve} — {verdict}")
        lines += [f"- {n}" for n in self.notes] if self.notes else []
        return "\n".join(lines) + "\n"

    def save(self, out: "str | Path", stem: str | None = None) -> tuple[Path, Path]:
        """Write ``{stem}.md`` and ``{stem}.json`` (stem: ``evaluate-{task}``)."""
        out = Path(out)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(f"cannot write to {str(out)!r} ({error.strerror}); pass a writable --out") from None
        stem = stem or f"evaluate-{self.task}"
        md, js = out / f"{stem}.md", out / f"{stem}.json"
        md.write_text(self.to_markdown())
        js.write_text(json.dumps(self.to_dict(), indent=2))
        return md, js


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.1f}" if abs(v) >= 10 else f"{v:.3f}"
    return str(v)


def _samples(task: str, dataset: "str | Path | None", image_dir: "str | Path | None", n: int, seed: int, workdir: Path) -> list[Any]:
    if task == "action":
        if dataset is not None:
            raise InputError("the action task runs on generated gridworld states; leave out --dataset")
        from ..data import generate_grids

        return generate_grids(n, seed)
    from ..data import load_coco

    if dataset is None:
        from ..data import SceneConfig, generate_scenes, write_coco

        backgrounds = ("plain", "textured", "cluttered")
        scenes = [s for i, b in enumerate(backgrounds) for s in generate_scenes(n // 3 + (i < n % 3), seed * 3 + i, SceneConfig(background=b))]
        dataset = write_coco(scenes, workdir, name=f"scenes-seed{seed}")
    return load_coco(dataset, image_dir)[:n]


def _load(task: str, model: Any, processor: Any) -> tuple[Any, Any, str]:
    if model is None:
        model = f"zoo:{ZOO_MODEL[task]}"
    if isinstance(model, str):
        from ..cli import load_model

        spec = model
        model, processor = load_model(spec, None, task)
        return model, processor, spec
    return model, processor, type(model).__name__


def _localization(maps: torch.Tensor, case: Case, tolerance: int) -> dict[str, list[float]]:
    values = {
        "pointing": pointing_game(maps, case.masks, tolerance).tolist(),
        "mass": relevance_mass(maps, case.masks).tolist(),
        "mass_ratio": relevance_mass_ratio(maps, case.masks).tolist(),
        "rank_acc": rank_accuracy(maps, case.masks).tolist(),
        "auroc": pixel_auroc(maps, case.masks).tolist(),
    }
    has_others = case.others.flatten(1).any(1)
    others = relevance_mass(maps, case.others)
    values["others_mass"] = [float(v) if ok else math.nan for v, ok in zip(others, has_others)]
    return values


def _faithfulness(maps: torch.Tensor, case: Case, steps: int, seed: int) -> dict[str, list[float]]:
    fn, x = case.probabilities, case.pixels
    drop, increase = faith.average_drop_increase(fn, x, maps)
    return {
        "deletion": faith.deletion(fn, x, maps, steps=steps).auc.tolist(),
        "insertion": faith.insertion(fn, x, maps, steps=steps).auc.tolist(),
        "road_morf": faith.road(fn, x, maps, order="morf", seed=seed).auc.tolist(),
        "road_lerf": faith.road(fn, x, maps, order="lerf", seed=seed).auc.tolist(),
        "avg_drop": drop.tolist(),
        "avg_increase": increase.tolist(),
    }


class _Row:
    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}
        self.seconds = 0.0
        self.calls = 0

    def add(self, values: dict[str, list[float]]) -> None:
        for k, v in values.items():
            self.values.setdefault(k, []).extend(v)

    def summary(self) -> dict[str, float]:
        out = {}
        for k, v in self.values.items():
            finite = [x for x in v if not math.isnan(x)]
            out[k] = round(sum(finite) / len(finite), 4) if finite else math.nan
        if self.calls:
            out["seconds_per_image"] = round(self.seconds / self.calls, 4)
        return out


def evaluate(
    task: str,
    model: Any = None,
    processor: Any = None,
    *,
    methods: Sequence[str] = ("gradcam",),
    dataset: "str | Path | None" = None,
    image_dir: "str | Path | None" = None,
    images: int = 200,
    seed: int = 0,
    faithfulness: bool = True,
    attributions: Sequence[str] = (),
    attribution_images: int = 20,
    sanity_images: int = 8,
    steps: int = 20,
    tolerance: int = 0,
    progress: bool | None = None,
    command: str = "",
) -> Evaluation:
    """Evaluate ``methods`` on ``task`` (see the module docstring).

    ``model``: ``None`` (the task's zoo model), a spec as for ``mmcam explain`` (``zoo:NAME``, a
    local HF directory, a YOLO .pt) or a loaded model (with ``processor``). ``dataset``: a COCO
    annotation file with this project's caption/VQA extension (``mmcam.data.write_coco``);
    ``None`` generates ``images`` scenes from ``seed``. ``sanity_images``/``attribution_images``:
    how many cases the (costlier) randomization and captum rows use; 0 turns them off.
    """
    from tqdm.auto import tqdm

    from .. import methods as methods_mod

    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    for m in methods:
        methods_mod.get(m)  # unknown names fail here, before any work
    if attributions:
        from ..metrics.attribution import ATTRIBUTIONS

        unknown = [a for a in attributions if a not in ATTRIBUTIONS]
        if unknown:
            raise InputError(f"unknown attribution(s) {unknown}; choose from {', '.join(ATTRIBUTIONS)}")
    disable = None if progress is None else not progress
    start = time.perf_counter()
    model, processor, model_name = _load(task, model, processor)
    with tempfile.TemporaryDirectory(prefix="mmcam-eval-") as tmp:
        samples = _samples(task, dataset, image_dir, images, seed, Path(tmp))
        cases: list[Case] = []
        for sample in tqdm(samples, desc=f"{task}: predictions", unit="image", disable=disable):
            cases.extend(prepare(task, model, processor, sample))
    if not cases:
        raise InputError(f"none of the {len(samples)} samples gave an item with ground truth for {task!r}; check the model and dataset")

    rows: dict[str, _Row] = {}
    method_maps: dict[str, list[torch.Tensor]] = {}
    for method in methods:
        row = rows.setdefault(method, _Row())
        method_maps[method] = []
        for i, case in enumerate(tqdm(cases, desc=f"{task}: {method}", unit="case", disable=disable)):
            t0 = time.perf_counter()
            maps = case.explain(model, method)
            row.seconds += time.perf_counter() - t0
            row.calls += 1
            method_maps[method].append(maps)
            row.add(_localization(maps, case, tolerance))
            if faithfulness:
                row.add(_faithfulness(maps, case, steps, seed + i))

    for name, make in BASELINES.items():
        row = rows.setdefault(f"baseline: {name}", _Row())
        for i, case in enumerate(cases):
            k, (h, w) = len(case.items), case.pixels.shape[-2:]
            maps = make(k, h, w, seed + i) if name == "random" else make(k, h, w)
            row.add(_localization(maps, case, tolerance))
            if faithfulness and name != "uniform":  # a constant map's order is just row-major
                row.add(_faithfulness(maps, case, steps, seed + i))

    notes: list[str] = []
    subset = cases[:attribution_images] if attributions else []
    occlusion: list[torch.Tensor] = []
    if subset:
        from ..metrics.attribution import attribution_maps

        for name in attributions:
            row = rows.setdefault(f"captum: {name}", _Row())
            for i, case in enumerate(tqdm(subset, desc=f"{task}: {name}", unit="case", disable=disable)):
                t0 = time.perf_counter()
                maps = attribution_maps(name, case.probabilities, case.pixels, len(case.items), seed=seed + i)
                row.seconds += time.perf_counter() - t0
                row.calls += 1
                if name == "occlusion":
                    occlusion.append(maps)
                row.add(_localization(maps, case, tolerance))
                if faithfulness:
                    row.add(_faithfulness(maps, case, steps, seed + i))
        if occlusion:
            for method in methods:
                rho = [spearman(m, o).tolist() for m, o in zip(method_maps[method], occlusion)]
                rows[method].add({"rho_occlusion": [v for r in rho for v in r]})
            notes.append(f"ρ occlusion: Spearman with captum occlusion maps on the first {len(subset)} cases (Grad-CAM paper's faithfulness)")
        notes.append(f"captum rows: first {len(subset)} cases only")

    sanity: dict[str, dict[str, Any]] = {}
    chosen = cases[:sanity_images]
    if chosen:
        target = model if isinstance(model, torch.nn.Module) else None
        if target is None:
            notes.append("sanity checks skipped: the model is not a torch.nn.Module")
        else:
            for method in tqdm(list(methods), desc=f"{task}: sanity", unit="method", disable=disable):
                result = cascading_randomization(target, lambda m, method=method: torch.cat([c.explain(m, method) for c in chosen]), seed=seed)
                sanity[method] = {"stages": result.stages, "spearman": result.spearman, "passes": result.passes}
                rows[method].add({"rho_randomized": [result.final]})
                others = [(c.explain(model, method), c.explain_other(model, method)) for c in chosen if c.explain_other is not None]
                others += [(m[:1], m[1:2]) for c, m in zip(chosen, method_maps[method]) if c.explain_other is None and m.shape[0] > 1]
                if others:
                    rows[method].add({"rho_other_target": [float(spearman(a, b).mean()) for a, b in others]})
            if all(c.guided is not None for c in chosen):
                result = cascading_randomization(target, lambda m: torch.cat([c.guided(m) for c in chosen]), seed=seed)
                sanity["guided-backprop"] = {"stages": result.stages, "spearman": result.spearman, "passes": result.passes}
                rows.setdefault("guided-backprop", _Row()).add({"rho_randomized": [result.final]})
            notes.append(f"ρ randomized / ρ other target: first {len(chosen)} cases")

    counts = {name: max((len(v) for k, v in row.values.items() if k == "pointing"), default=0) for name, row in rows.items()}
    settings = {
        "methods": list(methods), "dataset": str(dataset) if dataset else f"generated scenes (seed {seed})", "images": images,
        "seed": seed, "faithfulness": faithfulness, "attributions": list(attributions), "attribution_images": attribution_images,
        "sanity_images": sanity_images, "steps": steps, "tolerance": tolerance, "command": command,
    }
    return Evaluation(
        task=task, model=model_name, rows={n: r.summary() for n, r in rows.items()}, counts=counts, sanity=sanity,
        settings=settings, samples=len(samples), cases=len(cases), items=sum(len(c.items) for c in cases),
        seconds=round(time.perf_counter() - start, 1), notes=notes,
    )
