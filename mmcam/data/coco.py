"""Scenes in COCO format, read back through pycocotools.

Standard parts: ``images``, ``categories`` (the shapes), ``annotations`` (one per object:
RLE ``segmentation`` of the visible mask, ``bbox`` [x, y, w, h], ``area``, ``iscrowd`` 0,
``category_id``, plus ``color``).

mmcam's grounding extension (top-level keys pycocotools ignores):

* ``captions``: ``{"image_id", "caption", "tokens": [...], "word_links": [[annotation ids], ...]}``
  — per token, the annotations (objects) it refers to;
* ``vqa``: ``{"image_id", "question", "answer", "type", "answer_annotation_ids": [...]}``
  — the objects the answer depends on.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError
from .scenes import CATEGORIES, Scene

__all__ = ["write_coco", "load_coco", "CocoImage"]


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def write_coco(scenes: list[Scene], out_dir: "str | Path", name: str = "scenes") -> Path:
    """Write ``out_dir/images/*.png`` and ``out_dir/annotations/{name}.json``; return the JSON path."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    images, annotations, captions, vqa = [], [], [], []
    next_ann = 1
    for image_id, scene in enumerate(scenes, start=1):
        file_name = f"{image_id:06d}.png"
        Image.fromarray(scene.image).save(out / "images" / file_name)
        h, w = scene.image.shape[:2]
        images.append({"id": image_id, "file_name": file_name, "height": h, "width": w, "seed": scene.seed})
        ids = []
        for obj in scene.objects:
            annotations.append(
                {
                    "id": next_ann,
                    "image_id": image_id,
                    "category_id": obj.category_id,
                    "segmentation": _rle(obj.mask),
                    "area": float(obj.area),
                    "bbox": [float(v) for v in obj.box],
                    "iscrowd": 0,
                    "color": obj.color,
                }
            )
            ids.append(next_ann)
            next_ann += 1
        captions.append(
            {"image_id": image_id, "caption": scene.caption, "tokens": scene.caption_tokens, "word_links": [[ids[i] for i in link] for link in scene.word_links]}
        )
        for q in scene.qa:
            vqa.append(
                {"image_id": image_id, "question": q.question, "answer": q.answer, "type": q.type, "answer_annotation_ids": [ids[i] for i in q.object_ids]}
            )
    path = out / "annotations" / f"{name}.json"
    path.write_text(
        json.dumps({"info": {"description": "mmcam scenes"}, "images": images, "categories": CATEGORIES, "annotations": annotations, "captions": captions, "vqa": vqa})
    )
    return path


@dataclass
class CocoImage:
    """One image's ground truth as read back from a COCO file."""

    image_id: int
    path: Path
    masks: np.ndarray  # bool (N, H, W)
    boxes: np.ndarray  # float (N, 4) xywh
    categories: np.ndarray  # int (N,)
    annotation_ids: list[int]
    caption: str | None
    tokens: list[str]
    word_links: list[list[int]]  # per token, indices into masks
    qa: list[dict]  # question, answer, type, object_indices

    def load_image(self) -> np.ndarray:
        return np.asarray(Image.open(self.path).convert("RGB"))


def load_coco(annotation_file: "str | Path", image_dir: "str | Path | None" = None) -> list[CocoImage]:
    """Read a COCO file (with or without mmcam's extension) through pycocotools."""
    from pycocotools.coco import COCO

    path = Path(annotation_file)
    if not path.exists():
        raise InputError(f"annotation file {str(path)!r} does not exist; pass a COCO instances JSON")
    images_dir = Path(image_dir) if image_dir else path.parent.parent / "images"
    coco = COCO(str(path))
    extra = coco.dataset
    captions = {c["image_id"]: c for c in extra.get("captions", [])}
    qas: dict[int, list[dict]] = {}
    for q in extra.get("vqa", []):
        qas.setdefault(q["image_id"], []).append(q)
    out = []
    for image_id in sorted(coco.getImgIds()):
        info = coco.loadImgs(image_id)[0]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        ids = [a["id"] for a in anns]
        index = {a: i for i, a in enumerate(ids)}
        masks = np.stack([coco.annToMask(a).astype(bool) for a in anns]) if anns else np.zeros((0, info["height"], info["width"]), bool)
        cap = captions.get(image_id)
        out.append(
            CocoImage(
                image_id=image_id,
                path=images_dir / info["file_name"],
                masks=masks,
                boxes=np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4),
                categories=np.array([a["category_id"] for a in anns], np.int64),
                annotation_ids=ids,
                caption=cap["caption"] if cap else None,
                tokens=cap["tokens"] if cap else [],
                word_links=[[index[a] for a in link] for link in cap["word_links"]] if cap else [],
                qa=[
                    {"question": q["question"], "answer": q["answer"], "type": q["type"], "object_indices": [index[a] for a in q["answer_annotation_ids"]]}
                    for q in qas.get(image_id, [])
                ],
            )
        )
    return out
