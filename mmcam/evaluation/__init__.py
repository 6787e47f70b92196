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
import zlib
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

__all__ = ["evaluate", "Evaluation", "COLUMNS", "TASKS", "ZOO_MODEL", "torchray_tolerance"]

#: Generated scenes and grid states use seeds from here on: the zoo's training draws use
#: ``seed * 1_000_003 + step`` (step < 10^6), so evaluation never sees a training scene.
FRESH_SEEDS = 10**9

#: The zoo model each task is evaluated on by default.
ZOO_MODEL = {"classify": "classifier", "detect": "yolo", "segment": "segmenter", "caption": "captioner", "vqa": "vqa", "action": "qnet"}

#: column -> (header, better: "up" / "down" / ""), in table order.
COLUMNS = {
    "pointing": ("pointing", "up"),
    "pointing_tol": ("pointing ±r", "up"),
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
    """One task's table.

    ``totals[name][column] = [sum, count]`` over the explained items (NaN-free values only),
    ``rows[name][column]`` the means (``sum / count``) shown in the table (see
    :data:`COLUMNS`), ``counts[name]`` items per row, ``sanity[name]`` the randomization curve
    (``sums``/``count`` per stage, ``spearman`` their means), ``records`` one dict per
    explained item and row (``case``, ``item``, ``row`` and its values), ``settings`` what ran.

    **Aggregating across processes** (e.g. ``torch.distributed`` ranks): run
    ``evaluate(..., shard=(rank, world_size))`` on every rank (each takes cases
    ``rank, rank + world, ...`` of the same seeded dataset), then combine the per-rank
    results with :meth:`merge` — it adds the sums and counts (and the sanity sums) and
    recomputes every mean, so the merged table equals a single-process run up to the order of
    float additions. With ``torch.distributed``, gather ``ev.to_dict()`` with
    ``dist.all_gather_object`` and call ``Evaluation.merge([Evaluation.from_dict(d) for d in
    gathered])`` on rank 0. Means are never averaged with each other.
    """

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
    totals: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Evaluation":
        """Inverse of :meth:`to_dict` (e.g. for results gathered from other processes)."""
        return cls(**data)

    @classmethod
    def merge(cls, parts: "Sequence[Evaluation]") -> "Evaluation":
        """One table from the shards of one evaluation: sums and counts added, means recomputed."""
        if not parts:
            raise InputError("merge needs at least one Evaluation")
        first = parts[0]
        if any(p.task != first.task or p.model != first.model for p in parts):
            raise InputError("merge only evaluations of the same task and model (one shard per process)")
        totals: dict[str, dict[str, list[float]]] = {}
        for part in parts:
            for name, columns in part.totals.items():
                row = totals.setdefault(name, {})
                for column, (total, count) in columns.items():
                    acc = row.setdefault(column, [0.0, 0])
                    acc[0] += total
                    acc[1] += count
        sanity: dict[str, dict[str, Any]] = {}
        for part in parts:
            for name, s in part.sanity.items():
                acc = sanity.setdefault(name, {"stages": s["stages"], "sums": [0.0] * len(s["sums"]), "count": 0})
                acc["sums"] = [a + b for a, b in zip(acc["sums"], s["sums"])]
                acc["count"] += s["count"]
        for s in sanity.values():
            s["spearman"] = [round(v / max(s["count"], 1), 4) for v in s["sums"]]
            s["passes"] = s["spearman"][-1] < PASS_THRESHOLD
        settings = dict(first.settings, shard=None)
        return cls(
            task=first.task, model=first.model, rows=_means(totals), counts=_counts(totals), sanity=sanity, settings=settings,
            samples=sum(p.samples for p in parts), cases=sum(p.cases for p in parts), items=sum(p.items for p in parts),
            seconds=max(p.seconds for p in parts), notes=first.notes, totals=totals, records=[r for p in parts for r in p.records],
        )

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

        return generate_grids(n, FRESH_SEEDS + seed)
    from ..data import load_coco

    if dataset is None:
        from ..data import SceneConfig, generate_scenes, write_coco

        backgrounds = ("plain", "textured", "cluttered")
        scenes = [s for i, b in enumerate(backgrounds) for s in generate_scenes(n // 3 + (i < n % 3), FRESH_SEEDS + seed * 3 + i, SceneConfig(background=b))]
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


def torchray_tolerance(height: int, width: int) -> int:
    """TorchRay's pointing-game tolerance, 15 px at ImageNet's 224, scaled to the map's size."""
    return int(round(15 * min(height, width) / 224))


def _localization(maps: torch.Tensor, case: Case, tolerance: int | None) -> dict[str, list[float]]:
    r = torchray_tolerance(*maps.shape[-2:]) if tolerance is None else tolerance
    values = {
        "pointing": pointing_game(maps, case.masks).tolist(),
        "pointing_tol": pointing_game(maps, case.masks, r).tolist(),
        "mass": relevance_mass(maps, case.masks).tolist(),
        "mass_ratio": relevance_mass_ratio(maps, case.masks).tolist(),
        "rank_acc": rank_accuracy(maps, case.masks).tolist(),
        "auroc": pixel_auroc(maps, case.masks).tolist(),
    }
    has_others = case.others.flatten(1).any(1)
    others = relevance_mass(maps, case.others)
    values["others_mass"] = [float(v) if ok else math.nan for v, ok in zip(others, has_others)]
    return values


def _faithfulness(maps: torch.Tensor, case: Case, steps: int, percentages: tuple[int, ...], seed: int) -> dict[str, list[float]]:
    fn, x = case.probabilities, case.pixels
    drop, increase = faith.average_drop_increase(fn, x, maps)
    return {
        "deletion": faith.deletion(fn, x, maps, steps=steps).auc.tolist(),
        "insertion": faith.insertion(fn, x, maps, steps=steps).auc.tolist(),
        "road_morf": faith.road(fn, x, maps, order="morf", percentages=percentages, seed=seed).auc.tolist(),
        "road_lerf": faith.road(fn, x, maps, order="lerf", percentages=percentages, seed=seed).auc.tolist(),
        "avg_drop": drop.tolist(),
        "avg_increase": increase.tolist(),
    }


class _Row:
    """Accumulates one table row: per column ``[sum, count]`` of the finite values, per item
    records, and the time spent making maps."""

    def __init__(self, name: str, records: list[dict[str, Any]]) -> None:
        self.name = name
        self.totals: dict[str, list[float]] = {}
        self.records = records
        self.index: dict[tuple[str, int], dict[str, Any]] = {}
        self.seconds = 0.0
        self.calls = 0

    def add(self, values: dict[str, list[float]], case: "Case | None" = None) -> None:
        for column, vs in values.items():
            acc = self.totals.setdefault(column, [0.0, 0])
            for v in vs:
                if not math.isnan(v):
                    acc[0] += float(v)
                    acc[1] += 1
        if case is not None:
            for k, item in enumerate(case.items):
                record = self.index.get((case.sample_id, k))
                if record is None:
                    record = self.index[(case.sample_id, k)] = {"row": self.name, "case": case.sample_id, "item": k, "label": item}
                    self.records.append(record)
                record.update({c: (None if math.isnan(vs[k]) else round(float(vs[k]), 6)) for c, vs in values.items() if len(vs) == len(case.items)})

    def finish(self) -> dict[str, list[float]]:
        if self.calls:
            self.totals["seconds_per_image"] = [self.seconds, self.calls]
        return self.totals


def _means(totals: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    return {name: {c: round(t / n, 4) if n else math.nan for c, (t, n) in cols.items()} for name, cols in totals.items()}


def _counts(totals: dict[str, dict[str, list[float]]]) -> dict[str, int]:
    return {name: int(max((n for c, (_, n) in cols.items() if c != "seconds_per_image"), default=0)) for name, cols in totals.items()}


def evaluate(
    task: str,
    model: Any = None,
    processor: Any = None,
    *,
    methods: Sequence[str] = ("gradcam",),
    layers: Any = None,
    dataset: "str | Path | None" = None,
    image_dir: "str | Path | None" = None,
    images: int = 200,
    seed: int = 0,
    faithfulness_images: int = 40,
    attributions: Sequence[str] = (),
    attribution_images: int = 10,
    sanity_images: int = 8,
    steps: int = 20,
    road_percentages: Sequence[int] = faith.ROAD_PERCENTAGES,
    tolerance: int | None = None,
    threads: int | None = None,
    shard: tuple[int, int] | None = None,
    progress: bool | None = None,
    command: str = "",
) -> Evaluation:
    """Evaluate ``methods`` on ``task`` (see the module docstring); deterministic from ``seed``.

    ``model``: ``None`` (the task's zoo model), a spec as for ``mmcam explain`` (``zoo:NAME``, a
    local HF directory, a YOLO .pt) or a loaded model (with ``processor``). ``dataset``: a COCO
    annotation file read with pycocotools (with this project's caption/VQA extension for those
    tasks, see ``mmcam.data.write_coco``); ``None`` generates ``images`` scenes from ``seed``
    (a third each on plain, textured and cluttered backgrounds) and writes them as COCO first.
    ``layers``: the layer(s) every method's maps come from, as for the task's ``explain_*``
    (``None``: each task's default layer).

    Localisation runs on every case; the costlier parts on the first cases only:
    ``faithfulness_images`` (deletion/insertion with ``steps`` steps, ROAD at
    ``road_percentages``, average drop/increase), ``attribution_images`` (captum
    ``attributions``) and ``sanity_images`` (cascading randomization, other-target test);
    0 turns a part off. ``pointing`` is the exact pointing game; ``pointing_tol`` allows
    ``tolerance`` pixels (default: TorchRay's 15 px at 224 scaled to the input, 4 px at 64).
    ``threads``: torch CPU threads for the call (restored after; on a
    busy machine 1 is several times faster than oversubscribed cores). ``shard=(rank, world)``:
    evaluate only cases ``rank::world`` — combine the shards with :meth:`Evaluation.merge`.
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
    if shard is not None and not (len(shard) == 2 and 0 <= shard[0] < shard[1]):
        raise InputError(f"shard must be (rank, world_size) with 0 <= rank < world_size, got {shard!r}")
    if images < 1:
        raise InputError(f"images must be at least 1, got {images}")
    disable = None if progress is None else not progress
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(max(1, threads))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return _evaluate(
                task, model, processor, methods, layers, dataset, image_dir, images, seed, faithfulness_images, attributions,
                attribution_images, sanity_images, steps, tuple(road_percentages), tolerance, shard, disable, command, tqdm,
            )
    finally:
        torch.set_num_threads(previous_threads)


def _evaluate(task, model, processor, methods, layers, dataset, image_dir, images, seed, faithfulness_images, attributions,
              attribution_images, sanity_images, steps, road_percentages, tolerance, shard, disable, command, tqdm) -> Evaluation:
    start = time.perf_counter()
    model, processor, model_name = _load(task, model, processor)
    with tempfile.TemporaryDirectory(prefix="mmcam-eval-") as tmp:
        samples = _samples(task, dataset, image_dir, images, seed, Path(tmp))
        positions = list(range(len(samples)))[shard[0] :: shard[1]] if shard is not None else list(range(len(samples)))
        samples = [samples[i] for i in positions]
        cases: list[Case] = []
        index: list[int] = []  # each case's sample position in the whole (unsharded) dataset
        for position, sample in zip(positions, tqdm(samples, desc=f"{task}: predictions", unit="image", disable=disable)):
            prepared = prepare(task, model, processor, sample, layers=layers)
            cases.extend(prepared)
            index.extend([position] * len(prepared))
    if not cases:
        raise InputError(f"none of the {len(samples)} samples gave an item with ground truth for {task!r}; check the model and dataset")

    records: list[dict[str, Any]] = []
    rows: dict[str, _Row] = {}

    def row_of(name: str) -> _Row:
        return rows.setdefault(name, _Row(name, records))

    # the costlier parts run on the cases of the first N samples of the whole dataset, and every
    # random draw is seeded by the case's position there: shards add up to the unsharded run
    def score(row: _Row, maps: torch.Tensor, case: Case, i: int, faithful: bool = True) -> None:
        row.add(_localization(maps, case, tolerance), case)
        if faithful and index[i] < faithfulness_images:
            row.add(_faithfulness(maps, case, steps, road_percentages, _case_seed(seed, case)), case)

    method_maps: dict[str, list[torch.Tensor]] = {}
    for method in methods:
        row = row_of(method)
        method_maps[method] = []
        for i, case in enumerate(tqdm(cases, desc=f"{task}: {method}", unit="case", disable=disable)):
            t0 = time.perf_counter()
            maps = case.explain(model, method)
            row.seconds += time.perf_counter() - t0
            row.calls += 1
            method_maps[method].append(maps)
            score(row, maps, case, i)

    for name, make in BASELINES.items():
        row = row_of(f"baseline: {name}")
        for i, case in enumerate(cases):
            k, (h, w) = len(case.items), case.pixels.shape[-2:]
            maps = make(k, h, w, _case_seed(seed, case)) if name == "random" else make(k, h, w)
            # a constant map has no order: its deletion/ROAD curves would only follow row-major order
            score(row, maps, case, i, faithful=name != "uniform")

    notes: list[str] = []
    subset = [j for j, i in enumerate(index) if i < attribution_images] if attributions else []
    occlusion: list[torch.Tensor] = []
    if subset:
        from ..metrics.attribution import attribution_maps

        for name in attributions:
            row = row_of(f"captum: {name}")
            for j in tqdm(subset, desc=f"{task}: {name}", unit="case", disable=disable):
                case = cases[j]
                t0 = time.perf_counter()
                maps = attribution_maps(name, case.probabilities, case.pixels, len(case.items), seed=_case_seed(seed, case))
                row.seconds += time.perf_counter() - t0
                row.calls += 1
                if name == "occlusion":
                    occlusion.append(maps)
                score(row, maps, case, j)
        if occlusion:
            for method in methods:
                for j, o in zip(subset, occlusion):
                    rows[method].add({"rho_occlusion": spearman(method_maps[method][j], o).tolist()}, cases[j])
            notes.append(f"ρ occlusion: Spearman of each map with captum's occlusion map (the Grad-CAM paper's faithfulness measure), captum rows: cases of the first {attribution_images} images")
    if faithfulness_images:
        notes.append(f"deletion/insertion ({steps} steps), ROAD (at {', '.join(map(str, road_percentages))}%), average drop/increase: cases of the first {faithfulness_images} images")

    sanity: dict[str, dict[str, Any]] = {}
    chosen = [c for c, i in zip(cases, index) if i < sanity_images]
    if chosen:
        target = model if isinstance(model, torch.nn.Module) else None
        if target is None:
            notes.append("sanity checks skipped: the model is not a torch.nn.Module")
        else:
            for method in tqdm(list(methods), desc=f"{task}: sanity", unit="method", disable=disable):
                result = cascading_randomization(target, lambda m, method=method: torch.cat([c.explain(m, method) for c in chosen]), seed=seed)
                sanity[method] = _sanity_entry(result)
                rows[method].add({"rho_randomized": result.per_map[-1]})
                others = [(c.explain(model, method), c.explain_other(model, method)) for c in chosen if c.explain_other is not None]
                others += [(m[:1], m[1:2]) for c, m in zip(chosen, method_maps[method]) if c.explain_other is None and m.shape[0] > 1]
                if others:
                    rows[method].add({"rho_other_target": [float(spearman(a, b).mean()) for a, b in others]})
            if all(c.guided is not None for c in chosen):
                result = cascading_randomization(target, lambda m: torch.cat([c.guided(m) for c in chosen]), seed=seed)
                sanity["guided-backprop"] = _sanity_entry(result)
                row_of("guided-backprop").add({"rho_randomized": result.per_map[-1]})
                # Guided Grad-CAM (Selvaraju et al.): guided backprop ⊙ Grad-CAM, renormalised
                result = cascading_randomization(target, lambda m: torch.cat([_guided_gradcam(c, m) for c in chosen]), seed=seed)
                sanity["guided-gradcam"] = _sanity_entry(result)
                row_of("guided-gradcam").add({"rho_randomized": result.per_map[-1]})
            else:
                notes.append("guided-backprop sanity row: not available for this task (its model family has no guided-backprop case)")
            notes.append(f"ρ randomized / ρ other target: cases of the first {sanity_images} images")

    totals = {name: row.finish() for name, row in rows.items()}
    settings = {
        "task": task, "methods": list(methods), "layers": _layer_names(layers), "dataset": str(dataset) if dataset else f"generated scenes (seed {seed})", "images": images,
        "seed": seed, "faithfulness_images": faithfulness_images, "attributions": list(attributions), "attribution_images": attribution_images,
        "sanity_images": sanity_images, "steps": steps, "road_percentages": list(road_percentages), "tolerance": tolerance if tolerance is not None else "torchray (15 px at 224, scaled)",
        "shard": list(shard) if shard else None, "threads": torch.get_num_threads(), "command": command,
    }
    return Evaluation(
        task=task, model=model_name, rows=_means(totals), counts=_counts(totals), sanity=sanity,
        settings=settings, samples=len(samples), cases=len(cases), items=sum(len(c.items) for c in cases),
        seconds=round(time.perf_counter() - start, 1), notes=notes, totals=totals, records=records,
    )


def _layer_names(layers: Any) -> "list[str] | None":
    """Layers as JSON-safe names (modules by class name)."""
    if layers is None:
        return None
    items = layers if isinstance(layers, (list, tuple)) else [layers]
    return [x if isinstance(x, str) else type(x).__name__ for x in items]


def _guided_gradcam(case: Case, model: torch.nn.Module) -> torch.Tensor:
    product = case.guided(model) * case.explain(model, "gradcam")
    peak = product.flatten(1).amax(1).clamp_min(1e-12)
    return product / peak[:, None, None]


def _case_seed(seed: int, case: Case) -> int:
    """A seed for one case's random draws (random baseline, ROAD noise, captum sampling) that
    does not depend on which process evaluates it."""
    return seed * 1_000_003 + zlib.crc32(case.sample_id.encode()) % 1_000_003


def _sanity_entry(result: Any) -> dict[str, Any]:
    count = len(result.per_map[0])
    sums = [float(sum(v)) for v in result.per_map]
    return {"stages": result.stages, "sums": sums, "count": count, "spearman": result.spearman, "passes": result.passes}
