"""``mmcam batch`` in one process: the index, equality with the single-image path, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from batch_runs import CORRUPT, N_IMAGES, load_run
from modelstate import assert_same_state, snapshot

from mmcam import zoo
from mmcam.batch import all_reduce_sums, means, run_batch, shards_for_rank
from mmcam.cli import main
from mmcam.errors import InputError
from mmcam.tasks.classification import explain_classification
from mmcam.tasks.registry import build_task
from mmcam.tasks.segmentation import explain_segmentation


def test_reference_run_explains_every_image_once_and_records_the_unreadable_one(reference):
    rows, maps = load_run(reference)
    assert [r["index"] for r in rows] == list(range(N_IMAGES))  # topk=1: one row per image, in order
    assert [r["image_id"] for r in rows] == list(range(1, N_IMAGES + 1))  # COCO ids
    failed = [r for r in rows if r["status"] == "failed"]
    assert [r["index"] for r in failed] == [CORRUPT]
    assert "cannot read image" in failed[0]["error"] and failed[0]["file"].endswith(f"{CORRUPT + 1:06d}.png")
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == len(maps) == N_IMAGES - 1
    for r in ok:
        m = maps[r["key"]]
        assert m.dtype == np.uint8 and m.shape == (1, 64, 64) and m.max() == 255  # min-max normalised maps
        assert r["label"] == r["prediction"] and r["maps"] == f"shards/shard-{r['index'] // 4:05d}.npz"
    summary = json.loads((reference / "summary.json").read_text())
    assert (summary["images"], summary["explained"], summary["failed"], summary["items"], summary["shards"]) == (40, 39, 1, 39, 10)
    assert summary["stats"]["score"] == pytest.approx(np.mean([r["score"] for r in ok]), rel=1e-6)
    assert summary["failures"][0]["index"] == CORRUPT


def test_stored_maps_and_rows_equal_the_single_image_path(reference, coco):
    model, processor = zoo.load("classifier")
    rows, maps = load_run(reference)
    for r in [r for r in rows if r["status"] == "ok"][:8]:
        exp = explain_classification(model, r["file"], processor=processor)
        assert r["label"] == exp.items[0] and r["prediction"] == exp.meta["predicted_label"]
        assert r["score"] == pytest.approx(float(exp.scores[0]), abs=1e-5)
        expected = (exp.maps.clamp(0, 1) * 255).round().numpy()
        assert np.abs(maps[r["key"]].astype(int) - expected).max() <= 1  # float noise may flip one level


def _scene_arrays(n: int, seed: int, **config) -> list[np.ndarray]:
    from mmcam.data import SceneConfig, generate_scenes

    return [s.image for s in generate_scenes(n, seed=seed, config=SceneConfig(**config))]


def test_classify_engine_batch_equals_explain_classification_and_leaves_model_untouched():
    model, processor = zoo.load("classifier")
    images = _scene_arrays(5, seed=11)
    before = snapshot(model)
    engine = build_task("classify", model, processor, method="gradcam", topk=2)
    batched = engine.explain([engine.prepare(img) for img in images])  # one forward for 5 images x 2 classes
    assert_same_state(before, snapshot(model))
    for img, got in zip(images, batched):
        want = explain_classification(model, img, processor=processor, topk=2)
        assert got.items == want.items and got.meta == want.meta
        torch.testing.assert_close(got.scores, want.scores, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got.maps, want.maps, atol=1e-4, rtol=0)


def test_segment_engine_batch_equals_explain_segmentation():
    model, processor = zoo.load("segmenter")
    images = _scene_arrays(4, seed=5)
    engine = build_task("segment", model, processor, method="gradcam")
    batched = engine.explain([engine.prepare(img) for img in images])
    assert len({len(e.items) for e in batched}) > 1  # images with different K share one forward
    for img, got in zip(images, batched):
        want = explain_segmentation(model, img, processor=processor)
        assert got.items == want.items and got.meta == want.meta
        torch.testing.assert_close(got.scores, want.scores, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(got.maps, want.maps, atol=1e-4, rtol=0)
        assert all(np.array_equal(a, b) for a, b in zip(got.regions, want.regions))


def test_missing_dataset_or_annotation_file_is_a_one_line_error_before_anything_runs(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["batch", str(tmp_path / "nope"), "--model", "zoo:classifier", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("mmcam: error: dataset") and "does not exist" in err
    (tmp_path / "annotations").mkdir()
    assert main(["batch", str(tmp_path / "annotations" / "missing.json"), "--model", "zoo:classifier", "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not out.exists()  # nothing written, no model loaded, no worker started
    with pytest.raises(InputError, match="image folder"):
        (tmp_path / "annotations" / "a.json").write_text('{"images": []}')
        run_batch("classify", "zoo:classifier", tmp_path / "annotations" / "a.json", out)
    with pytest.raises(InputError, match="needs a question"):
        run_batch("vqa", "zoo:vqa", tmp_path, out)


def test_a_resumed_run_must_keep_its_settings(reference, coco):
    with pytest.raises(InputError, match="shard_size"):
        run_batch("classify", "zoo:classifier", coco, reference, shard_size=8)


def test_shards_for_rank_cover_every_shard_once_without_padding():
    for shards in (0, 1, 7, 10):
        for world in (1, 2, 3, 4):
            assigned = [s for rank in range(world) for s in shards_for_rank(shards, rank, world)]
            assert sorted(assigned) == list(range(shards))


def test_all_reduce_sums_is_the_identity_in_one_process():
    sums = {"pointing": (3.0, 4), "mass": (1.5, 3)}
    assert all_reduce_sums(sums) == {"pointing": (3.0, 4.0), "mass": (1.5, 3.0)}
    assert means(all_reduce_sums(sums)) == {"pointing": 0.75, "mass": 0.5}


def test_action_engine_batch_equals_explain_action_and_runs_over_npy_folder(tmp_path):
    from mmcam.data import generate_grids
    from mmcam.tasks.action import explain_action

    model, _ = zoo.load("qnet")
    states = generate_grids(6, seed=4)
    engine = build_task("action", model, method="gradcam")
    batched = engine.explain([engine.prepare(s.obs) for s in states])
    for state, got in zip(states, batched):
        want = explain_action(model, state.obs, method="gradcam")
        assert got.items == want.items and got.meta["action"] == want.meta["action"] and got.meta["q_values"] == want.meta["q_values"]
        torch.testing.assert_close(got.maps, want.maps, atol=1e-4, rtol=0)
    for i, state in enumerate(states):
        np.save(tmp_path / f"obs{i}.npy", state.obs)
    (tmp_path / "obs9.npy").write_bytes(b"junk")
    result = run_batch("action", "zoo:qnet", tmp_path, tmp_path / "out", batch_size=4, num_workers=0, progress=False)
    assert (result.images, result.explained, result.failed) == (7, 6, 1)
    rows, _ = load_run(tmp_path / "out")
    assert [r["prediction"] for r in rows if r["status"] == "ok"] == [e.meta["action_name"] for e in batched]


def test_detect_engine_batch_equals_explain_detections_on_yolo(tmp_path):
    from mmcam.tasks.detection import explain_detections

    model, _ = zoo.load("yolo")
    images = _scene_arrays(4, seed=8) + [np.full((64, 64, 3), 255, np.uint8)]  # a blank image keeps no box
    engine = build_task("detect", model)
    from PIL import Image

    batched = engine.explain([engine.prepare(Image.fromarray(img)) for img in images])
    assert len({len(e.items) for e in batched}) > 1 and len(batched[-1].items) == 0
    for img, got in zip(images, batched):
        want = explain_detections(model, img)
        assert got.items == want.items and got.meta["raw_indices"] == want.meta["raw_indices"]
        np.testing.assert_allclose(got.meta["boxes"], want.meta["boxes"], atol=0.02)
        torch.testing.assert_close(got.scores, want.scores, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(got.maps, want.maps, atol=1e-4, rtol=0)
    for i, img in enumerate(images):
        Image.fromarray(img).save(tmp_path / f"{i}.png")
    run_batch("detect", "zoo:yolo", tmp_path, tmp_path / "out", batch_size=8, num_workers=0, progress=False)
    rows, maps = load_run(tmp_path / "out")
    assert [r["label"] for r in rows if r["status"] == "ok"] == [item for e in batched for item in e.items]
    assert [r["index"] for r in rows if r["status"] == "empty"] == [4]  # the blank image: a row, no map
    assert all(maps[r["key"]].shape[0] == len(batched[r["index"]].items) for r in rows if r["status"] == "ok")


def test_caption_runs_image_by_image_over_a_nested_folder(tmp_path):
    from PIL import Image

    from mmcam.tasks.caption import explain_caption

    images = _scene_arrays(3, seed=21)
    (tmp_path / "data" / "sub").mkdir(parents=True)
    paths = [tmp_path / "data" / "a.png", tmp_path / "data" / "sub" / "b.png", tmp_path / "data" / "sub" / "c.png"]
    for img, path in zip(images, paths):
        Image.fromarray(img).save(path)
    result = run_batch("caption", "zoo:captioner", tmp_path / "data", tmp_path / "out", batch_size=2, num_workers=1, progress=False)
    assert (result.images, result.explained, result.failed) == (3, 3, 0)
    rows, maps = load_run(tmp_path / "out")
    model, processor = zoo.load("captioner")
    for path, image_id in zip(paths, ["a.png", "sub/b.png", "sub/c.png"]):
        want = explain_caption(model, processor, str(path))
        mine = [r for r in rows if r["image_id"] == image_id]
        assert [r["label"] for r in mine] == want.items and {r["prediction"] for r in mine} == {want.meta["caption"]}
        assert maps[mine[0]["key"]].shape == (len(want.items), *want.maps.shape[-2:])
