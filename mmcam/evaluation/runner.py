"""``evaluate``: load, prepare the cases, make every row's maps and score them."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import GradientError, InputError
from ..loading import load_model
from ..metrics import faithfulness as faith
from ..metrics.baselines import BASELINES, IMAGE_BASELINES
from ..metrics.sanity import cascading_randomization, spearman
from .cases import TASKS, Case, prepare
from .defaults import default_method
from .generative import generative_caption, generative_vqa
from .interventions import SHIFT, grid_effects, map_values, scene_effects
from .scoring import Row, case_seed, faithfulness_values, guided_gradcam, localization_values, sanity_entry
from .table import Evaluation, counts, means

__all__ = ["evaluate", "FRESH_SEEDS", "ZOO_MODEL"]

#: Generated scenes and grid states use seeds from here on: the zoo's training draws use
#: ``seed * 1_000_003 + step`` (step < 10^6), so evaluation never sees a training scene.
FRESH_SEEDS = 10**9

#: The zoo model each task is evaluated on by default.
ZOO_MODEL = {"classify": "classifier", "detect": "yolo", "segment": "segmenter", "caption": "captioner", "vqa": "vqa", "action": "qnet"}


def _samples(task: str, dataset, image_dir, n: int, seed: int, workdir: Path, shift: bool = False) -> tuple[list[Any], list[Any]]:
    """The samples, and beside each its generated source ``(Scene, SceneConfig)`` (the
    ``GridState`` itself for ``action``; ``None`` for a user's dataset)."""
    if task == "action":
        if dataset is not None:
            raise InputError("the action task runs on generated gridworld states; leave out --dataset")
        from ..data import GridConfig, generate_grids

        grids = generate_grids(n, FRESH_SEEDS + seed, GridConfig(n_walls=14) if shift else GridConfig())
        return grids, grids
    from ..data import load_coco

    if dataset is not None:
        loaded = load_coco(dataset, image_dir)[:n]
        return loaded, [None] * len(loaded)
    from ..data import SceneConfig, generate_scenes, write_coco

    if shift:  # one shifted distribution (seeds offset so no scene repeats an in-distribution one)
        configs = [(SHIFT, generate_scenes(n, 2 * FRESH_SEEDS + seed, SHIFT))]
    else:
        backgrounds = ("plain", "textured", "cluttered")
        configs = [
            (c, generate_scenes(n // 3 + (i < n % 3), FRESH_SEEDS + seed * 3 + i, c)) for i, c in enumerate(SceneConfig(background=b) for b in backgrounds)
        ]
    sources = [(scene, c) for c, scenes in configs for scene in scenes]
    path = write_coco([scene for scene, _ in sources], workdir, name=f"scenes-seed{seed}")
    return load_coco(path, image_dir)[:n], sources[:n]


def _load(task: str, model: Any, processor: Any, trust_pickle: bool) -> tuple[Any, Any, str]:
    if model is None:
        model = f"zoo:{ZOO_MODEL[task]}"
    if isinstance(model, str):
        spec = model
        model, processor = load_model(spec, None, task, trust_pickle=trust_pickle)
        return model, processor, spec
    return model, processor, type(model).__name__


def evaluate(
    task: str,
    model: Any = None,
    processor: Any = None,
    *,
    methods: Sequence[str] | None = None,
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
    trust_pickle: bool = False,
    interventions: bool = False,
    shift: bool = False,
) -> Evaluation:
    """Evaluate ``methods`` on ``task`` (see the module docstring); deterministic from ``seed``.
    ``methods=None``: the task's own default for the model (:func:`.defaults.default_method`).

    ``model``: ``None`` (the task's zoo model), a spec as for ``mmcam explain`` (``zoo:NAME``, a
    local HF directory, a YOLO .pt; ``trust_pickle`` as for :func:`mmcam.loading.load_model`)
    or a loaded model (with ``processor``). ``dataset``: a COCO
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

    ``interventions``: also the interventional ground truth on generated scenes (see
    :mod:`mmcam.evaluation.interventions`: each object removed, only the referred object kept,
    a distractor added; for ``action``, each cell changed) — the ``int_*`` columns per map,
    and a ``model: interventions`` row. ``shift``: evaluate on :data:`SHIFT` scenes instead
    (2–4 objects of radius 5–8, an occluding bar, 8 clutter blobs on a cluttered background;
    for ``action`` grids with 14 walls instead of 8).
    """
    from tqdm.auto import tqdm

    from .. import methods as methods_mod

    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    from ..tasks.generation import OWN_METHODS

    for m in methods or ():
        if m not in OWN_METHODS:  # generative VLMs' own maps (logit-lens, tam, gae-tower)
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
                task,
                model,
                processor,
                methods,
                layers,
                dataset,
                image_dir,
                images,
                seed,
                faithfulness_images,
                attributions,
                attribution_images,
                sanity_images,
                steps,
                tuple(road_percentages),
                tolerance,
                shard,
                disable,
                command,
                tqdm,
                trust_pickle,
                interventions,
                shift,
            )
    finally:
        torch.set_num_threads(previous_threads)


def _evaluate(
    task,
    model,
    processor,
    methods,
    layers,
    dataset,
    image_dir,
    images,
    seed,
    faithfulness_images,
    attributions,
    attribution_images,
    sanity_images,
    steps,
    road_percentages,
    tolerance,
    shard,
    disable,
    command,
    tqdm,
    trust_pickle,
    interventions=False,
    shift=False,
) -> Evaluation:
    start = time.perf_counter()
    model, processor, model_name = _load(task, model, processor, trust_pickle)
    with tempfile.TemporaryDirectory(prefix="mmcam-eval-") as tmp:
        samples, sources = _samples(task, dataset, image_dir, images, seed, Path(tmp), shift)
        if interventions and any(s is None for s in sources):
            raise InputError("interventions need the generated scenes (they are re-rendered); leave out --dataset")
        positions = list(range(len(samples)))[shard[0] :: shard[1]] if shard is not None else list(range(len(samples)))
        samples = [samples[i] for i in positions]
        cases: list[Case] = []
        index: list[int] = []  # each case's sample position in the whole (unsharded) dataset
        for position, sample in zip(positions, tqdm(samples, desc=f"{task}: predictions", unit="image", disable=disable)):
            prepared = _prepare(task, model, processor, sample, layers)
            cases.extend(prepared)
            index.extend([position] * len(prepared))
    methods = list(methods) if methods else [default_method(task, model, processor, samples, layers)]
    if not cases:
        raise InputError(f"none of the {len(samples)} samples gave an item with ground truth for {task!r}; check the model and dataset")

    records: list[dict[str, Any]] = []
    rows: dict[str, Row] = {}

    def row_of(name: str) -> Row:
        return rows.setdefault(name, Row(name, records))

    effects = []
    if interventions:
        model_row = row_of("model: interventions")
        for i, case in enumerate(tqdm(cases, desc=f"{task}: interventions", unit="case", disable=disable)):
            source = sources[index[i]]
            e = grid_effects(model, case, source) if task == "action" else scene_effects(case, *source, seed=case_seed(seed, case))
            model_row.add(e.model_values(), case)
            effects.append(e)

    # the costlier parts run on the cases of the first N samples of the whole dataset, and every
    # random draw is seeded by the case's position there: shards add up to the unsharded run
    def score(row: Row, maps: torch.Tensor, case: Case, i: int, faithful: bool = True) -> None:
        row.add(localization_values(maps, case, tolerance), case)
        if effects:
            row.add(map_values(maps, case, effects[i]), case)
        if faithful and index[i] < faithfulness_images:
            row.add(faithfulness_values(maps, case, steps, road_percentages, case_seed(seed, case)), case)

    method_maps: dict[str, list[torch.Tensor]] = {}
    empty: dict[str, int] = {}
    for method in methods:
        row = row_of(method)
        method_maps[method] = []
        for i, case in enumerate(tqdm(cases, desc=f"{task}: {method}", unit="case", disable=disable)):
            t0 = time.perf_counter()
            try:
                maps = case.explain(model, method)
            except GradientError:  # a saturated target: the method has nothing to show, scored as an empty map
                maps = torch.zeros(len(case.items), *case.pixels.shape[-2:])
                empty[method] = empty.get(method, 0) + 1
            row.seconds += time.perf_counter() - t0
            row.calls += 1
            method_maps[method].append(maps)
            score(row, maps, case, i)

    for name, make in BASELINES.items():
        row = row_of(f"baseline: {name}")
        for i, case in enumerate(cases):
            k, (h, w) = len(case.items), case.pixels.shape[-2:]
            maps = make(k, h, w, case_seed(seed, case)) if name == "random" else make(k, h, w)
            # a constant map has no order: its deletion/ROAD curves would only follow row-major order
            score(row, maps, case, i, faithful=name != "uniform")
    for name, make in IMAGE_BASELINES.items():
        row = row_of(f"baseline: {name}")
        for i, case in enumerate(cases):
            score(row, make(case.pixels, len(case.items)), case, i)

    notes: list[str] = [f"{method}: {n} case(s) raised GradientError (all-zero gradients), scored as empty maps" for method, n in empty.items()]
    subset = [j for j, i in enumerate(index) if i < attribution_images] if attributions else []
    occlusion: list[torch.Tensor] = []
    if subset:
        from ..metrics.attribution import attribution_maps

        for name in attributions:
            row = row_of(f"captum: {name}")
            for j in tqdm(subset, desc=f"{task}: {name}", unit="case", disable=disable):
                case = cases[j]
                t0 = time.perf_counter()
                maps = attribution_maps(name, case.probabilities, case.pixels, len(case.items), seed=case_seed(seed, case))
                row.seconds += time.perf_counter() - t0
                row.calls += 1
                if name == "occlusion":
                    occlusion.append(maps)
                score(row, maps, case, j)
        if occlusion:
            for method in methods:
                for j, o in zip(subset, occlusion):
                    rows[method].add({"rho_occlusion": spearman(method_maps[method][j], o).tolist()}, cases[j])
            notes.append(
                f"ρ occlusion: Spearman of each map with captum's occlusion map (the Grad-CAM paper's faithfulness measure), captum rows: cases of the first {attribution_images} images"
            )
    if faithfulness_images:
        notes.append(
            f"deletion/insertion ({steps} steps), ROAD (at {', '.join(map(str, road_percentages))}%), average drop/increase: cases of the first {faithfulness_images} images"
        )

    sanity: dict[str, dict[str, Any]] = {}
    chosen = [c for c, i in zip(cases, index) if i < sanity_images]
    if chosen:
        target = model if isinstance(model, torch.nn.Module) else None
        if target is None:
            notes.append("sanity checks skipped: the model is not a torch.nn.Module")
        else:
            for method in tqdm(list(methods), desc=f"{task}: sanity", unit="method", disable=disable):
                result = cascading_randomization(target, lambda m, method=method: torch.cat([c.explain(m, method) for c in chosen]), seed=seed)
                sanity[method] = sanity_entry(result)
                rows[method].add({"rho_randomized": result.per_map[-1]})
                others = [(c.explain(model, method), c.explain_other(model, method)) for c in chosen if c.explain_other is not None]
                others += [(m[:1], m[1:2]) for c, m in zip(chosen, method_maps[method]) if c.explain_other is None and m.shape[0] > 1]
                if others:
                    rows[method].add({"rho_other_target": [float(spearman(a, b).mean()) for a, b in others]})
            if all(c.guided is not None for c in chosen):
                result = cascading_randomization(target, lambda m: torch.cat([c.guided(m) for c in chosen]), seed=seed)
                sanity["guided-backprop"] = sanity_entry(result)
                row_of("guided-backprop").add({"rho_randomized": result.per_map[-1]})
                # Guided Grad-CAM (Selvaraju et al.): guided backprop ⊙ Grad-CAM, renormalised
                result = cascading_randomization(target, lambda m: torch.cat([guided_gradcam(c, m) for c in chosen]), seed=seed)
                sanity["guided-gradcam"] = sanity_entry(result)
                row_of("guided-gradcam").add({"rho_randomized": result.per_map[-1]})
            else:
                notes.append("guided-backprop sanity row: not available for this task (its model family has no guided-backprop case)")
            notes.append(f"ρ randomized / ρ other target: cases of the first {sanity_images} images")

    totals = {name: row.finish() for name, row in rows.items()}
    settings = {
        "task": task,
        "methods": list(methods),
        "layers": _layer_names(layers),
        "dataset": str(dataset) if dataset else f"generated scenes (seed {seed})",
        "images": images,
        "seed": seed,
        "faithfulness_images": faithfulness_images,
        "attributions": list(attributions),
        "attribution_images": attribution_images,
        "sanity_images": sanity_images,
        "steps": steps,
        "road_percentages": list(road_percentages),
        "tolerance": tolerance if tolerance is not None else "torchray (15 px at 224, scaled)",
        "shard": list(shard) if shard else None,
        "threads": torch.get_num_threads(),
        "command": command,
        "interventions": interventions,
        "distribution": "shift" if shift else "in-distribution",
    }
    return Evaluation(
        task=task,
        model=model_name,
        rows=means(totals),
        counts=counts(totals),
        sanity=sanity,
        settings=settings,
        samples=len(samples),
        cases=len(cases),
        items=sum(len(c.items) for c in cases),
        seconds=round(time.perf_counter() - start, 1),
        notes=notes,
        totals=totals,
        records=records,
    )


def _layer_names(layers: Any) -> "list[str] | None":
    """Layers as JSON-safe names (modules by class name)."""
    if layers is None:
        return None
    items = layers if isinstance(layers, (list, tuple)) else [layers]
    return [x if isinstance(x, str) else type(x).__name__ for x in items]


def _prepare(task: str, model: Any, processor: Any, sample: Any, layers: Any) -> list[Case]:
    """:func:`mmcam.evaluation.cases.prepare`, or for a generative VLM's caption / vqa (answers
    as text) the cases of :mod:`mmcam.evaluation.generative`."""
    from ..adapters.vlm import is_generative_vlm

    if task in ("caption", "vqa") and is_generative_vlm(model):
        return (generative_caption if task == "caption" else generative_vqa)(model, processor, sample, layers=layers)
    return prepare(task, model, processor, sample, layers=layers)
