"""What a dataset run reads: the image list of a COCO file or a folder, and a ``Dataset``
whose ``DataLoader`` workers decode and preprocess the images."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import InputError, MMCamError
from ..io import IMAGE_SUFFIXES, load_image

__all__ = ["Record", "list_records", "records_digest", "ImageDataset", "collate", "pack", "unpack", "die_with_parent"]


@dataclass(frozen=True)
class Record:
    """One image of the dataset: its position, its id (COCO ``id`` or path under the folder)."""

    index: int
    image_id: "int | str"
    path: str


def list_records(source: "str | Path", image_dir: "str | Path | None" = None, observations: bool = False) -> list[Record]:
    """The images of ``source``, in a fixed order, checked before any worker starts.

    ``source``: a COCO annotation file (``.json``; images in ``image_dir``, by default the
    ``images/`` folder beside its ``annotations/`` folder, as :func:`mmcam.data.write_coco`
    lays it out; images sorted by id), or a folder of images (searched recursively, sorted by
    relative path) — of ``.npy`` observations with ``observations=True`` (the action task).
    Missing paths raise :class:`~mmcam.errors.InputError`; a file that is listed but missing
    or unreadable is not an error here — the run records it and goes on.
    """
    path = Path(source)
    if not path.exists():
        raise InputError(f"dataset {str(path)!r} does not exist; pass a COCO annotation .json file or a folder of images")
    if observations:
        files = sorted(p for p in path.rglob("*.npy") if p.is_file()) if path.is_dir() else []
        if not files:
            raise InputError(f"no .npy observations under {str(path)!r}; pass a folder of observations (C, H, W) saved with numpy.save")
        return [Record(i, p.relative_to(path).as_posix(), str(p)) for i, p in enumerate(files)]
    if path.is_file():
        if path.suffix.lower() != ".json":
            raise InputError(f"{str(path)!r} is not a COCO annotation file; pass a .json annotation file or a folder of images")
        return _coco_records(path, image_dir)
    if image_dir is not None:
        raise InputError("image_dir goes with a COCO annotation file; for a folder of images pass the folder only")
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {str(path)!r}; pass a folder of images or a COCO .json")
    return [Record(i, p.relative_to(path).as_posix(), str(p)) for i, p in enumerate(files)]


def _coco_records(path: Path, image_dir: "str | Path | None") -> list[Record]:
    from pycocotools.coco import COCO

    images = Path(image_dir) if image_dir is not None else path.parent.parent / "images"
    if not images.is_dir():
        raise InputError(f"image folder {str(images)!r} of {str(path)!r} does not exist; pass image_dir= (--image-dir) where the COCO images are")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco = COCO(str(path))
        infos = coco.loadImgs(sorted(coco.getImgIds()))
    except (json.JSONDecodeError, KeyError, TypeError, AssertionError) as error:
        raise InputError(f"{str(path)!r} is not a COCO annotation file ({error}); pass the JSON with an 'images' list") from None
    if not infos:
        raise InputError(f"COCO file {str(path)!r} lists no images; pass a dataset with images")
    return [Record(i, info["id"], str(images / info["file_name"])) for i, info in enumerate(infos)]


def records_digest(records: list[Record]) -> str:
    """A short hash of the image list (a resumed run must see the same list)."""
    text = "\n".join(f"{r.image_id}\t{r.path}" for r in records)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ImageDataset(Dataset):
    """``dataset[i]`` → ``{"index", "error"}`` plus ``"data"``: ``prepare(read(path))`` (run in the
    ``DataLoader`` worker; ``read`` is :func:`mmcam.io.load_image` unless given). An unreadable
    file gives ``error`` = the reason, not an exception, so one bad file never stops a worker."""

    def __init__(self, records: list[Record], prepare: Callable[[Any], Any], read: Callable[[str], Any] = load_image):
        self.records = records
        self.prepare = prepare
        self.read = read

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        record = self.records[i]
        try:
            return {"index": record.index, "error": None, "data": pack(self.prepare(self.read(record.path)))}
        except MMCamError as error:
            return {"index": record.index, "error": str(error), "data": None}


class _Array:
    """A tensor travelling from a worker as a numpy array (pickled through the pipe: measured
    here, half the per-image cost of moving small tensors through shared memory)."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray):
        self.array = array


def pack(data: Any) -> Any:
    """``data`` with every tensor (in tuples, lists, dicts) as an :class:`_Array`."""
    if isinstance(data, torch.Tensor):
        return _Array(data.numpy())
    if isinstance(data, (tuple, list)):
        return type(data)(pack(x) for x in data)
    if isinstance(data, dict):
        return {k: pack(v) for k, v in data.items()}
    return data


def unpack(data: Any) -> Any:
    """Undo :func:`pack` (numpy arrays that were arrays stay arrays)."""
    if isinstance(data, _Array):
        return torch.from_numpy(data.array)
    if isinstance(data, (tuple, list)):
        return type(data)(unpack(x) for x in data)
    if isinstance(data, dict):
        return {k: unpack(v) for k, v in data.items()}
    return data


def collate(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep a batch as a list: images may differ in size and task data in structure; the
    engine stacks what it can."""
    return items


def die_with_parent(worker_id: int) -> None:
    """``worker_init_fn``: on Linux, a ``DataLoader`` worker gets SIGKILL when its rank
    process dies. Without it, a rank killed with SIGKILL leaves its workers behind, blocked
    flushing prefetched batches into a queue nobody reads."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
