"""Scenes in COCO format, read back through pycocotools.

``write_coco(scenes, out_dir, name)`` writes ``out_dir/images/000001.png ...`` and
``out_dir/annotations/{name}.json``.

Standard COCO parts: ``images`` (``id`` from 1, ``file_name``, ``height``, ``width``, plus
the scene ``seed``), ``categories`` (the shapes, ids 1..4 as in ``CATEGORIES``) and
``annotations``, one per object in scene order: RLE ``segmentation`` of the *visible*
mask (``pycocotools.mask.encode``), ``bbox`` [x, y, w, h] (tight box of the mask),
``area`` (visible pixels), ``iscrowd`` 0, ``category_id``, plus ``color`` (a ``COLORS`` name).

mmcam's grounding extension — top-level keys that pycocotools keeps in ``COCO.dataset``
and otherwise ignores:

* ``captions``: one per image,
  ``{"image_id", "caption", "tokens": [word, ...], "word_links": [[annotation id, ...], ...]}``
  — for each token, the annotations (objects) it refers to (``[]`` for "a", ",", "and");
* ``vqa``: one per question,
  ``{"image_id", "question", "answer", "type", "answer_annotation_ids": [annotation id, ...]}``
  — the objects the answer depends on (``[]`` for a "no" existence answer).

``load_coco(path)`` reads such a file (with or without the extension) and returns one
:class:`CocoImage` per image, where the links are indices into that image's masks.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError
from .language import QA
from .scenes import CATEGORIES, Scene

__all__ = ["write_coco", "load_coco", "CocoImage"]


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _annotation(ann_id: int, image_id: int, obj) -> dict:
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": obj.category_id,
        "segmentation": _rle(obj.mask),
        "area": float(obj.area),
        "bbox": [float(v) for v in obj.box],
        "iscrowd": 0,
        "color": obj.color,
    }


def write_coco(scenes: list[Scene], out_dir: str | Path, name: str = "scenes") -> Path:
    """Write the images and one annotation file (see the module docstring); return its path."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    images, annotations, captions, vqa = [], [], [], []
    for image_id, scene in enumerate(scenes, start=1):
        file_name = f"{image_id:06d}.png"
        Image.fromarray(scene.image).save(out / "images" / file_name)
        h, w = scene.image.shape[:2]
        images.append({"id": image_id, "file_name": file_name, "height": h, "width": w, "seed": scene.seed})
        ids = [len(annotations) + k + 1 for k in range(len(scene.objects))]
        annotations.extend(_annotation(ann_id, image_id, obj) for ann_id, obj in zip(ids, scene.objects))
        captions.append(
            {
                "image_id": image_id,
                "caption": scene.caption,
                "tokens": scene.caption_tokens,
                "word_links": [[ids[i] for i in link] for link in scene.word_links],
            }
        )
        vqa.extend(
            {"image_id": image_id, "question": q.question, "answer": q.answer, "type": q.type, "answer_annotation_ids": [ids[i] for i in q.object_ids]}
            for q in scene.qa
        )
    dataset = {
        "info": {"description": "mmcam scenes (grounding extension: captions, vqa)"},
        "images": images,
        "categories": CATEGORIES,
        "annotations": annotations,
        "captions": captions,
        "vqa": vqa,
    }
    path = out / "annotations" / f"{name}.json"
    path.write_text(json.dumps(dataset))
    return path


@dataclass
class CocoImage:
    """One image's ground truth as read back from a COCO file; links index into ``masks``."""

    image_id: int
    path: Path
    masks: np.ndarray  # bool (N, H, W)
    boxes: np.ndarray  # float32 (N, 4) xywh
    categories: np.ndarray  # int64 (N,)
    colors: list[str | None]  # per annotation (None without the extension)
    annotation_ids: list[int]
    caption: str | None
    tokens: list[str]
    word_links: list[list[int]]  # per token, indices into ``masks``
    qa: list[QA]  # object_ids index into ``masks``

    def load_image(self) -> np.ndarray:
        """uint8 (H, W, 3) pixels of the image file."""
        try:
            return np.asarray(Image.open(self.path).convert("RGB"))
        except (OSError, ValueError) as err:
            raise InputError(f"cannot read image {str(self.path)!r} ({err}); pass image_dir= where the COCO images are") from err


def load_coco(annotation_file: str | Path, image_dir: str | Path | None = None) -> list[CocoImage]:
    """Read a COCO file through ``pycocotools.coco.COCO``, one :class:`CocoImage` per image
    (sorted by id). ``image_dir`` defaults to ``images/`` beside the ``annotations/`` folder."""
    from pycocotools.coco import COCO

    path = Path(annotation_file)
    if not path.is_file():
        raise InputError(f"annotation file {str(path)!r} does not exist; pass the JSON that write_coco returned")
    images_dir = Path(image_dir) if image_dir is not None else path.parent.parent / "images"
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco = COCO(str(path))
    captions = {c["image_id"]: c for c in coco.dataset.get("captions", [])}
    questions: dict[int, list[dict]] = {}
    for q in coco.dataset.get("vqa", []):
        questions.setdefault(q["image_id"], []).append(q)
    return [_image(coco, image_id, images_dir, captions.get(image_id), questions.get(image_id, [])) for image_id in sorted(coco.getImgIds())]


def _image(coco, image_id: int, images_dir: Path, cap: dict | None, questions: list[dict]) -> CocoImage:
    info = coco.loadImgs(image_id)[0]
    anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
    ids = [a["id"] for a in anns]
    index = {ann_id: i for i, ann_id in enumerate(ids)}
    if anns:
        masks = np.stack([coco.annToMask(a).astype(bool) for a in anns])
    else:
        masks = np.zeros((0, info["height"], info["width"]), bool)
    return CocoImage(
        image_id=image_id,
        path=images_dir / info["file_name"],
        masks=masks,
        boxes=np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4),
        categories=np.array([a["category_id"] for a in anns], np.int64),
        colors=[a.get("color") for a in anns],
        annotation_ids=ids,
        caption=cap["caption"] if cap else None,
        tokens=list(cap["tokens"]) if cap else [],
        word_links=[[index[a] for a in link] for link in cap["word_links"]] if cap else [],
        qa=[QA(q["question"], q["answer"], q["type"], [index[a] for a in q["answer_annotation_ids"]]) for q in questions],
    )
