"""The result of ``evaluate``: one task's method x metric table, mergeable across shards."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..metrics.sanity import PASS_THRESHOLD

__all__ = ["COLUMNS", "Evaluation", "means", "counts"]

#: column -> (header, better: "up" / "down" / ""), in table order.
COLUMNS = {
    "pointing": ("pointing", "up"),
    "pointing_tol": ("pointing ±r", "up"),
    "mass": ("mass", "up"),
    "mass_ratio": ("mass / chance", "up"),
    "rank_acc": ("rank acc", "up"),
    "auroc": ("AUROC", "up"),
    "others_mass": ("mass on others", "down"),
    "mass_all": ("mass, all objects", "up"),
    "rank_all": ("rank acc, all objects", "up"),
    "pointing_int": ("pointing, intervention cells", "up"),
    "int_top": ("int. top object", "up"),
    "int_spearman": ("int. ρ", "up"),
    "int_kendall": ("int. τ", "up"),
    "miss_method": ("misses: method's", ""),
    "int_relies": ("model uses referred", "up"),
    "keep_only": ("keep-only score ratio", ""),
    "distract": ("distractibility", "down"),
    "decisive_cells": ("int. decisive cells", ""),
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
            task=first.task,
            model=first.model,
            rows=means(totals),
            counts=counts(totals),
            sanity=sanity,
            settings=settings,
            samples=sum(p.samples for p in parts),
            cases=sum(p.cases for p in parts),
            items=sum(p.items for p in parts),
            seconds=max(p.seconds for p in parts),
            notes=first.notes,
            totals=totals,
            records=[r for p in parts for r in p.records],
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


def means(totals: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    return {name: {c: round(t / n, 4) if n else math.nan for c, (t, n) in cols.items()} for name, cols in totals.items()}


def counts(totals: dict[str, dict[str, list[float]]]) -> dict[str, int]:
    return {name: int(max((n for c, (_, n) in cols.items() if c != "seconds_per_image"), default=0)) for name, cols in totals.items()}
