"""``mmcam.loading``: what each model spec loads, and that loading is safe by default — a
pickle payload in a ``.pt``, an ``eval`` in a model yaml or pickled HF weights never run
unless the caller passes ``trust_pickle=True`` / ``--trust-pickle``."""

from __future__ import annotations

import subprocess
import sys
from copy import deepcopy
from pathlib import Path

import pytest
import torch

from mmcam.errors import InputError
from mmcam.loading import load_model, load_observation

ultralytics = pytest.importorskip("ultralytics")
BUS = Path(ultralytics.__file__).parent / "assets" / "bus.jpg"  # a real photo, 810 x 1080


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: the file appears iff the payload ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _payload_pt(tmp_path: Path) -> tuple[Path, Path]:
    marker, path = tmp_path / "payload-ran", tmp_path / "evil.pt"
    torch.save({"model": _Payload(marker), "train_args": {}}, path)
    return path, marker


def _trainer_checkpoint(tmp_path: Path) -> tuple[Path, "ultralytics.YOLO"]:
    """A checkpoint written the way ultralytics' trainer ``save_model`` writes ``last.pt``:
    the EMA model in half precision under ``ema``, ``model`` None, optimizer state, train
    args as a dict and metadata."""
    from datetime import datetime

    from ultralytics import YOLO, __version__
    from ultralytics.cfg import DEFAULT_CFG_DICT

    yolo = YOLO("yolov8n.yaml")
    optimizer = torch.optim.SGD(yolo.model.parameters(), lr=0.01, momentum=0.9)
    path = tmp_path / "last.pt"
    torch.save(
        {
            "epoch": 0,
            "best_fitness": None,
            "model": None,
            "ema": deepcopy(yolo.model).half(),
            "updates": 0,
            "optimizer": optimizer.state_dict(),
            "train_args": {**DEFAULT_CFG_DICT, "model": "yolov8n.yaml", "imgsz": 64, "task": "detect"},
            "train_metrics": {"fitness": 0.0},
            "date": datetime.now().isoformat(),
            "version": __version__,
            "license": "AGPL-3.0 (https://ultralytics.com/license)",
            "docs": "https://docs.ultralytics.com",
        },
        path,
    )
    return path, yolo


def _boxes(yolo) -> torch.Tensor:
    result = yolo.predict(str(BUS), imgsz=64, conf=0.0001, verbose=False, device="cpu")[0]
    return result.boxes.data


def test_pickle_payload_does_not_run_by_default(tmp_path):
    path, marker = _payload_pt(tmp_path)
    with pytest.raises(InputError, match="--trust-pickle") as info:
        load_model(str(path), task="detect")
    assert not marker.exists()
    assert len(str(info.value).splitlines()) == 1
    # the payload is real: the opt-in runs it (ultralytics then rejects the non-model)
    with pytest.raises(TypeError):  # not an InputError: the opt-in hands the file to ultralytics as it is
        load_model(str(path), task="detect", trust_pickle=True)
    assert marker.exists()


def test_genuine_trainer_checkpoint_loads_and_predicts_under_defaults(tmp_path):
    path, _ = _trainer_checkpoint(tmp_path)
    model, processor = load_model(str(path), task="detect")
    assert processor is None and type(model).__name__ == "YOLO" and model.task == "detect"
    reference, _ = load_model(str(path), task="detect", trust_pickle=True)  # ultralytics' own full unpickling
    boxes = _boxes(model)
    assert boxes.shape[0] > 0
    torch.testing.assert_close(boxes, _boxes(reference))


def test_model_save_checkpoint_loads_under_defaults(tmp_path):
    """``YOLO.save()`` (the other format ultralytics writes: ``model`` set, no ``ema``)."""
    from ultralytics import YOLO

    path = tmp_path / "saved.pt"
    YOLO("yolov8n.yaml").save(str(path))
    model, _ = load_model(str(path), task="detect")
    assert _boxes(model).shape[1] == 6


def test_model_yaml_builds_without_eval(tmp_path):
    """Ultralytics ``eval``s a yaml's ``activation`` unless loading is restricted."""
    import yaml
    from ultralytics.nn.tasks import yaml_model_load

    marker = tmp_path / "yaml-ran"
    spec = yaml_model_load("yolov8n.yaml")
    spec.pop("yaml_file", None)
    spec["activation"] = f"open({str(marker)!r}, 'w') and None or __import__('torch').nn.SiLU()"
    path = tmp_path / "yolov8n.yaml"  # the scale ultralytics reads from the name
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(InputError, match="--trust-pickle"):
        load_model(str(path), task="detect")
    assert not marker.exists()
    model, _ = load_model("yolov8n.yaml", task="detect")  # the shipped yaml builds under restriction
    assert model.task == "detect"


def _hf_directory(tmp_path: Path, pickled: bool) -> Path:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    directory = tmp_path / "vit"
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, num_labels=3)
    model = ViTForImageClassification(config)
    model.save_pretrained(directory)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(directory)
    if pickled:
        (directory / "model.safetensors").unlink()
        torch.save(model.state_dict(), directory / "pytorch_model.bin")
    return directory


def test_hf_directory_with_pickled_weights_needs_trust(tmp_path):
    directory = _hf_directory(tmp_path, pickled=True)
    with pytest.raises(InputError, match="pytorch_model.bin.*--trust-pickle"):
        load_model(str(directory))
    model, processor = load_model(str(directory), trust_pickle=True)
    assert type(model).__name__ == "ViTForImageClassification" and processor is not None


def test_hf_directory_with_safetensors_loads(tmp_path):
    model, _ = load_model(str(_hf_directory(tmp_path, pickled=False)))
    assert not model.training


def test_torchvision_weights_are_a_plain_state_dict(tmp_path):
    import torchvision

    good = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18(num_classes=1000).state_dict(), good)
    model, _ = load_model("resnet18", str(good))
    assert not model.training
    evil, marker = _payload_pt(tmp_path)
    with pytest.raises(InputError, match="not a plain state dict"):
        load_model("resnet18", str(evil))
    assert not marker.exists()


def test_zoo_takes_only_shipped_names():
    from mmcam import zoo

    for name in ("nope", "../weights/classifier", "/etc/passwd"):
        with pytest.raises(InputError, match="no zoo model named") as info:
            load_model(f"zoo:{name}")
        assert all(shipped in str(info.value) for shipped in zoo.available())


def test_observations_refuse_pickles(tmp_path):
    import numpy as np

    path = tmp_path / "obs.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="cannot read observation"):
        load_observation(path)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmcam.cli", *args], capture_output=True, text=True, timeout=300)


def test_cli_refuses_a_payload_and_names_the_flag(tmp_path):
    path, marker = _payload_pt(tmp_path)
    res = _cli("explain", str(BUS), "--task", "detect", "--model", str(path), "--out", str(tmp_path / "out"))
    assert res.returncode == 2 and "--trust-pickle" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not marker.exists()


def test_cli_explains_with_a_genuine_checkpoint(tmp_path):
    path, _ = _trainer_checkpoint(tmp_path)
    out = tmp_path / "out"
    res = _cli("explain", str(BUS), "--task", "detect", "--model", str(path), "--conf", "0.0001", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert (out / "summary.json").exists() and list(out.glob("bus_*.png"))


@pytest.mark.parametrize("command", ["batch", "evaluate"])
def test_batch_and_evaluate_refuse_a_payload(tmp_path, command):
    path, marker = _payload_pt(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    (images / "bus.jpg").write_bytes(BUS.read_bytes())
    where = [str(images)] if command == "batch" else ["--images", "1"]
    res = _cli(command, *where, "--task", "detect", "--model", str(path), "--out", str(tmp_path / "out"))
    assert res.returncode == 2 and "--trust-pickle" in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert not marker.exists()
