"""Dataset scale: explain every image of a COCO dataset or an image folder, batched,
sharded over ``torchrun`` ranks, resumable, with one merged index.

>>> from mmcam.batch import run_batch
>>> result = run_batch("classify", "zoo:classifier", "data/annotations/scenes.json", "out/batch")  # doctest: +SKIP

Same from the shell, on one process or N::

    mmcam batch data/annotations/scenes.json --task classify --model zoo:classifier --out out/batch
    torchrun --nproc-per-node 2 -m mmcam batch data/images --task classify --model zoo:classifier --out out/batch

:func:`all_reduce_sums` sums ``{name: (sum, count)}`` over ranks; :func:`all_reduce_evaluation`
uses it to turn each rank's ``evaluate(..., shard=(rank, world))`` into the whole table
(``torchrun ... -m mmcam.cli evaluate`` does this), equal to a single process's.
"""

from ..tasks.registry import BATCHED_TASKS, TASKS
from .distributed import Distributed, all_reduce_evaluation, all_reduce_sums, means, shards_for_rank
from .run import BatchResult, run_batch
from .source import Record, list_records

__all__ = [
    "run_batch",
    "BatchResult",
    "all_reduce_sums",
    "all_reduce_evaluation",
    "means",
    "Distributed",
    "shards_for_rank",
    "list_records",
    "Record",
    "TASKS",
    "BATCHED_TASKS",
]
