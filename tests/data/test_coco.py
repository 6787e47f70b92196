"""COCO export: standard fields readable by pycocotools, the grounding extension, and an
exact round trip (generate → write → load)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmcam.data import CATEGORIES, SceneConfig, generate_scenes, load_coco, write_coco
from mmcam.errors import InputError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools vs numpy 2


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    scenes = generate_scenes(12, 7, SceneConfig(occluders=True, background="cluttered"))
    out = tmp_path_factory.mktemp("coco")
    return scenes, out, write_coco(scenes, out, name="val")


def test_layout_and_standard_fields(written):
    scenes, out, path = written
    assert path == out / "annotations" / "val.json"
    data = json.loads(path.read_text())
    assert data["categories"] == CATEGORIES
    assert [im["file_name"] for im in data["images"]] == [f"{i:06d}.png" for i in range(1, 13)]
    assert all((out / "images" / im["file_name"]).is_file() for im in data["images"])
    anns = data["annotations"]
    assert len(anns) == sum(len(s.objects) for s in scenes)
    assert len({a["id"] for a in anns}) == len(anns)
    objects = [(i + 1, o) for i, s in enumerate(scenes) for o in s.objects]
    for ann, (image_id, obj) in zip(anns, objects):
        assert ann["image_id"] == image_id and ann["iscrowd"] == 0
        assert ann["category_id"] == obj.category_id and ann["color"] == obj.color
        assert ann["bbox"] == list(obj.box) and ann["area"] == obj.mask.sum()
        assert set(ann["segmentation"]) == {"size", "counts"}  # RLE


def test_pycocotools_reads_masks_and_areas(written):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    scenes, _, path = written
    coco = COCO(str(path))
    for image_id, scene in enumerate(scenes, start=1):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        for ann, obj in zip(anns, scene.objects):
            assert np.array_equal(coco.annToMask(ann).astype(bool), obj.mask)
            assert mask_utils.area(coco.annToRLE(ann)) == ann["area"]
            assert list(mask_utils.toBbox(coco.annToRLE(ann))) == ann["bbox"]


def test_round_trip_is_exact(written):
    scenes, _, path = written
    loaded = load_coco(path)
    assert [item.image_id for item in loaded] == list(range(1, 13))
    for scene, item in zip(scenes, loaded):
        assert np.array_equal(item.load_image(), scene.image)
        assert np.array_equal(item.masks, np.stack([o.mask for o in scene.objects]))
        assert item.boxes.tolist() == [list(o.box) for o in scene.objects]
        assert item.categories.tolist() == [o.category_id for o in scene.objects]
        assert item.colors == [o.color for o in scene.objects]
        assert item.caption == scene.caption and item.tokens == scene.caption_tokens
        assert item.word_links == scene.word_links
        assert item.qa == scene.qa


def test_extension_links_are_annotation_ids(written):
    scenes, _, path = written
    data = json.loads(path.read_text())
    ann_by_id = {a["id"]: a for a in data["annotations"]}
    for cap in data["captions"]:
        for word, links in zip(cap["tokens"], cap["word_links"]):
            assert all(ann_by_id[a]["image_id"] == cap["image_id"] for a in links)
            if word in ("red", "green", "blue", "yellow", "purple"):
                assert [ann_by_id[a]["color"] for a in links] == [word]
    assert len(data["vqa"]) == sum(len(s.qa) for s in scenes)
    for q in data["vqa"]:
        assert all(ann_by_id[a]["image_id"] == q["image_id"] for a in q["answer_annotation_ids"])


def test_writing_is_deterministic_and_plain_coco_loads(written, tmp_path):
    scenes, _, path = written
    again = write_coco(scenes, tmp_path / "again", name="val")
    assert again.read_bytes() == path.read_bytes()
    plain = json.loads(path.read_text())
    del plain["captions"], plain["vqa"]
    (tmp_path / "plain.json").write_text(json.dumps(plain))
    loaded = load_coco(tmp_path / "plain.json", image_dir=path.parent.parent / "images")
    assert loaded[0].caption is None and loaded[0].qa == [] and loaded[0].word_links == []
    assert np.array_equal(loaded[0].masks, np.stack([o.mask for o in scenes[0].objects]))
    assert np.array_equal(loaded[0].load_image(), scenes[0].image)


def test_missing_files_raise_input_errors(tmp_path, written):
    with pytest.raises(InputError, match="does not exist"):
        load_coco(tmp_path / "nope.json")
    _, _, path = written
    with pytest.raises(InputError, match="image_dir"):
        load_coco(path, image_dir=tmp_path)[0].load_image()
