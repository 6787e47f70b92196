"""``torch.distributed`` for dataset runs: one process, or one per rank under ``torchrun``.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; :class:`Distributed` reads them and joins the process group (``gloo`` on
CPU, ``nccl`` on CUDA). Without them the run is a single process and every collective is
the identity.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Distributed", "shards_for_rank", "all_reduce_sums", "means", "all_reduce_evaluation"]


@dataclass
class Distributed:
    """The process group of one run (``rank`` 0 of 1 when not launched by ``torchrun``)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    owns_group: bool = False

    @classmethod
    def from_env(cls, device: str = "cpu") -> "Distributed":
        """Join the group ``torchrun`` describes in the environment (if any).

        Backend: ``nccl`` when ``device`` is CUDA, else ``gloo``. A group the caller already
        initialised is used as is (and left open on :meth:`close`).
        """
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), dist.get_backend())
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1 or "RANK" not in os.environ:
            return cls()
        backend = "nccl" if str(device).startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend, init_method="env://")
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), backend, owns_group=True)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (no-op in a single process)."""
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        """Leave the process group if this object created it, after a barrier: a rank that
        tears its gloo group down while a peer still finishes the last collective can make
        that peer abort ("terminate called without an active exception", seen once in CI)."""
        if self.owns_group:
            import torch.distributed as dist

            if self.world_size > 1:
                dist.barrier()
            dist.destroy_process_group()
            self.owns_group = False


def shards_for_rank(num_shards: int, rank: int, world_size: int) -> list[int]:
    """Shards ``rank, rank + world_size, ...``: every shard on exactly one rank, no padding.

    (``DistributedSampler`` pads the last round with repeated samples so every rank gets
    the same count; a dataset run must not explain an image twice, so ranks may differ by
    one shard.)
    """
    return list(range(rank, num_shards, world_size))


def all_reduce_sums(sums: Mapping[Any, Sequence[float]], device: "str | torch.device" = "cpu") -> dict[Any, tuple[float, float]]:
    """Sum ``{name: (sum, count)}`` over every rank; the same dict on every rank.

    Names are strings or tuples of strings (e.g. ``(method, metric)``). A name some ranks
    never saw counts as ``(0, 0)`` there (names are gathered first with
    ``all_gather_object``). Sums travel as float64, so totals of per-item metrics agree with a
    single process up to float64 rounding of the order of addition. In a single process the
    input comes back unchanged (as float tuples). ``device``: where the reduction tensor
    lives (``cuda`` for ``nccl``).

    Example (per rank, after evaluating cases ``rank::world``)::

        totals = all_reduce_sums({("gradcam", "pointing"): (hits, items)})
        pointing = means(totals)[("gradcam", "pointing")]
    """
    local = {k: (float(v[0]), float(v[1])) for k, v in sums.items()}
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    gathered: list[list[Any] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, list(local))
    names = sorted(set().union(*(g or [] for g in gathered)), key=repr)  # the same order on every rank
    packed = torch.tensor([local.get(n, (0.0, 0.0)) for n in names], dtype=torch.float64, device=device).reshape(-1, 2)
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    return {n: (float(s), float(c)) for n, (s, c) in zip(names, packed.cpu().tolist())}


def means(sums: Mapping[Any, Sequence[float]]) -> dict[Any, float]:
    """``sum / count`` per name (NaN where the count is 0)."""
    return {k: (float(v[0]) / float(v[1]) if v[1] else float("nan")) for k, v in sums.items()}


def all_reduce_evaluation(evaluation: Any) -> Any:
    """The whole ``mmcam evaluate`` table from each rank's ``evaluate(..., shard=(rank, world))``,
    the same on every rank (the input unchanged in a single process).

    The numbers are sums: the table's ``totals`` (sum, count per row and column), the sanity
    curves' per-stage sums and counts, and the sample/case/item counts go through
    :func:`all_reduce_sums`; what is not a sum — per-item records, the sanity stage names and
    the slowest rank's time — is gathered with ``all_gather_object``. One
    :meth:`mmcam.evaluation.Evaluation.merge` of the reduced result then recomputes every mean
    from the global sums, never from per-rank means.
    """
    import dataclasses

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return evaluation
    from ..evaluation import Evaluation

    ev = evaluation
    sums: dict[Any, tuple[float, float]] = {("total", n, c): (t, k) for n, cols in ev.totals.items() for c, (t, k) in cols.items()}
    sums.update({("sanity", n, str(i)): (v, s["count"]) for n, s in ev.sanity.items() for i, v in enumerate(s["sums"])})
    sums.update({("size", f): (getattr(ev, f), 1) for f in ("samples", "cases", "items")})
    reduced = all_reduce_sums(sums)
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (ev.records, {n: s["stages"] for n, s in ev.sanity.items()}, ev.seconds))
    totals: dict[str, dict[str, list[float]]] = {}
    sanity: dict[str, dict[str, Any]] = {}
    stages = {n: st for _, names, _ in gathered for n, st in names.items()}
    for key, (total, count) in reduced.items():
        if key[0] == "total":
            totals.setdefault(key[1], {})[key[2]] = [total, int(count)]
        elif key[0] == "sanity":
            curve = sanity.setdefault(key[1], {"stages": stages[key[1]], "sums": [0.0] * len(stages[key[1]]), "count": 0})
            curve["sums"][int(key[2])] = total
            curve["count"] = int(count)
    totals = {n: _ordered(cols, ev.totals.get(n, {})) for n, cols in _ordered(totals, ev.totals).items()}  # rank 0's table order
    whole = dataclasses.replace(
        ev,
        totals=totals,
        sanity=_ordered(sanity, ev.sanity),
        records=[r for records, _, _ in gathered for r in records],
        seconds=max(seconds for _, _, seconds in gathered),
        **{f: int(reduced[("size", f)][0]) for f in ("samples", "cases", "items")},
    )
    return Evaluation.merge([whole])


def _ordered(d: dict, like: Mapping) -> dict:
    """``d`` with the keys of ``like`` first, in its order."""
    return {**{k: d[k] for k in like if k in d}, **{k: v for k, v in d.items() if k not in like}}
