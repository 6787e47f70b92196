"""``mmcam.evaluation.evaluate``: a tiny run on the zoo classifier — files written, numbers
deterministic from the seed, shards that add up to the single-process table, model untouched."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mmcam import zoo
from mmcam.errors import InputError
from mmcam.evaluation import COLUMNS, Evaluation, evaluate

SMALL = dict(images=4, faithfulness_images=2, sanity_images=2, steps=5, road_percentages=(30, 70), progress=False, threads=1)


@pytest.fixture(scope="module")
def classifier():
    return zoo.load("classifier")


@pytest.fixture(scope="module")
def run(classifier):
    model, processor = classifier
    return evaluate("classify", model, processor, methods=("gradcam",), seed=3, **SMALL)


def _numbers(ev: Evaluation) -> dict:
    return {name: {c: v for c, v in row.items() if c != "seconds_per_image"} for name, row in ev.rows.items()}


def test_table_has_methods_baselines_and_sanity(run, tmp_path):
    assert {"gradcam", "baseline: centre", "baseline: uniform", "baseline: random", "guided-backprop", "guided-gradcam"} <= set(run.rows)
    assert set(run.sanity) == {"gradcam", "guided-backprop", "guided-gradcam"}
    row = run.rows["gradcam"]
    for column in (
        "pointing",
        "pointing_tol",
        "mass",
        "mass_ratio",
        "rank_acc",
        "auroc",
        "deletion",
        "insertion",
        "road_morf",
        "road_lerf",
        "avg_drop",
        "rho_randomized",
    ):
        assert column in row and not math.isnan(row[column]), column
    assert 0 <= row["pointing"] <= 1 and 0 <= row["auroc"] <= 1
    # constant map: chance values, exactly
    assert run.rows["baseline: uniform"]["mass_ratio"] == pytest.approx(1.0)
    assert run.rows["baseline: uniform"]["auroc"] == pytest.approx(0.5)
    assert "deletion" not in run.rows["baseline: uniform"]  # a constant map has no order to delete by
    # faithfulness on the first 2 images' cases only, localisation on all
    assert run.totals["gradcam"]["pointing"][1] == run.items
    assert run.totals["gradcam"]["deletion"][1] <= 2
    assert [len(s["spearman"]) for s in run.sanity.values()] and run.sanity["gradcam"]["count"] >= 1
    md, js = run.save(tmp_path)
    text = md.read_text()
    assert "| gradcam |" in text and "baseline: centre" in text and "Cascading randomization" in text
    data = json.loads(js.read_text())
    assert data["rows"]["gradcam"]["pointing"] == run.rows["gradcam"]["pointing"]
    assert Evaluation.from_dict(data).rows == run.rows
    assert set(run.rows["gradcam"]) <= set(COLUMNS)


def test_means_are_sums_over_counts_and_records_match(run):
    for name, columns in run.totals.items():
        for column, (total, count) in columns.items():
            if count:
                assert run.rows[name][column] == pytest.approx(total / count, abs=1e-4)
    pointing = [r["pointing"] for r in run.records if r["row"] == "gradcam"]
    assert len(pointing) == run.items and sum(pointing) / len(pointing) == pytest.approx(run.rows["gradcam"]["pointing"], abs=1e-4)


def test_same_seed_same_numbers_other_seed_other_scenes(run, classifier):
    model, processor = classifier
    again = evaluate("classify", model, processor, methods=("gradcam",), seed=3, **SMALL)
    assert _numbers(again) == _numbers(run)
    assert [s["spearman"] for s in again.sanity.values()] == [s["spearman"] for s in run.sanity.values()]
    other = evaluate("classify", model, processor, methods=("gradcam",), seed=4, **dict(SMALL, faithfulness_images=0, sanity_images=0))
    assert _numbers(other)["gradcam"]["mass"] != _numbers(run)["gradcam"]["mass"]  # other scenes


def test_shards_merge_into_the_single_process_table(run, classifier):
    model, processor = classifier
    parts = [evaluate("classify", model, processor, methods=("gradcam",), seed=3, shard=(r, 2), **SMALL) for r in range(2)]
    assert sum(p.samples for p in parts) == run.samples
    merged = Evaluation.merge([Evaluation.from_dict(json.loads(json.dumps(p.to_dict()))) for p in parts])
    assert merged.items == run.items
    for name, row in _numbers(run).items():
        for column, value in row.items():
            assert merged.rows[name][column] == pytest.approx(value, abs=2e-4), (name, column)
        assert merged.counts[name] == run.counts[name]
    for name, s in run.sanity.items():
        assert merged.sanity[name]["spearman"] == pytest.approx(s["spearman"], abs=2e-4)


def test_model_left_untouched_and_bad_arguments(classifier):
    from modelstate import assert_same_state, snapshot

    model, processor = classifier
    before = snapshot(model)
    evaluate("classify", model, processor, methods=("gradcam",), **dict(SMALL, images=2, faithfulness_images=1, sanity_images=1))
    assert_same_state(before, snapshot(model))
    with pytest.raises(InputError, match="choose from"):
        evaluate("nonsense", model, processor)
    with pytest.raises(Exception, match="gradcam"):
        evaluate("classify", model, processor, methods=("gradcma",))
    with pytest.raises(InputError, match="rank, world_size"):
        evaluate("classify", model, processor, shard=(2, 2))
    assert torch.get_num_threads() >= 1


def test_layers_reach_every_explanation(classifier):
    """``layers=`` is what every map comes from: naming the default layer reproduces the default
    run exactly, another layer changes the maps (and so the method's row), and the setting is
    recorded; the CLI spells it in the reproducing command."""

    model, processor = classifier
    default = evaluate("classify", model, processor, methods=("gradcam",), seed=3, **SMALL)
    same = evaluate("classify", model, processor, methods=("gradcam",), layers="layer4", seed=3, **SMALL)
    other = evaluate("classify", model, processor, methods=("gradcam",), layers=["layer2"], seed=3, **SMALL)
    assert _numbers(same) == _numbers(default) and same.settings["layers"] == ["layer4"] and default.settings["layers"] is None
    assert other.rows["gradcam"] != default.rows["gradcam"] and other.settings["layers"] == ["layer2"]
    assert other.rows["baseline: centre"] == default.rows["baseline: centre"]
    from mmcam.errors import LayerError

    with pytest.raises(LayerError, match="no layer 'nonesuch'"):
        evaluate("classify", model, processor, layers="nonesuch", seed=3, **SMALL)


def test_cli_evaluate_layer_flag(tmp_path, capsys):
    from mmcam.cli import main

    assert (
        main(
            [
                "evaluate",
                "--task",
                "action",
                "--images",
                "6",
                "--faithfulness-images",
                "0",
                "--sanity-images",
                "0",
                "--layer",
                "features.1",
                "--out",
                str(tmp_path),
                "--threads",
                "1",
            ]
        )
        == 0
    )
    data = json.loads((tmp_path / "evaluate-action.json").read_text())
    assert data["settings"]["layers"] == ["features.1"] and "--layer features.1" in data["settings"]["command"]
