"""The new detector heads at the torchvision / ultralytics builders' own sizes, beside the model's own output.

    python -m bench.heads_real [--only obb,rtdetr,ssd,maskrcnn,keypointrcnn]

Random-init models (nothing downloaded) on the ultralytics photos, each explained with its
defaults and compared with the model's own predictor / eval output:

* ``yolo11n-obb`` at imgsz 1024: rotated boxes vs ``YOLO.predict(...).obb``;
* ``rtdetr-l`` at 640: boxes vs ``RTDETR.predict``;
* ``ssd300_vgg16`` (300) and ``ssdlite320_mobilenet_v3_large`` (320): boxes vs the eval output;
* ``maskrcnn_resnet50_fpn`` (min_size 800): instance masks vs its ``masks > 0.5``;
* ``keypointrcnn_resnet50_fpn`` (min_size 800): keypoints vs its ``keypoints``.

Prints one line per model: items, the largest differences, and the seconds of the explain call
beside the seconds of the model's own call (one run each; the load average is printed).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

ALL = ("obb", "rtdetr", "ssd", "maskrcnn", "keypointrcnn")


def _photos():
    import ultralytics

    from mmcam.io import load_image

    assets = Path(ultralytics.__file__).parent / "assets"
    return np.asarray(load_image(assets / "bus.jpg")), np.asarray(load_image(assets / "zidane.jpg"))


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _tensor(photo):
    return torch.from_numpy(photo.astype(np.float32) / 255).permute(2, 0, 1)[None]


def _warm(inner, photo, size):
    """BatchNorm statistics from one train-mode pass (a random-init net's activations vanish otherwise)."""
    norms = [m for m in inner.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    x = torch.nn.functional.interpolate(_tensor(photo), size=(size, size))
    with torch.no_grad():
        for m in norms:
            m.momentum = 1.0
        inner.train()(x)
        for m in norms:
            m.momentum = 0.03
        inner.eval()


def obb(bus, zidane):
    import ultralytics

    import mmcam

    torch.manual_seed(0)
    model = ultralytics.YOLO("yolo11n-obb.yaml")
    _warm(model.model, bus, 640)
    exp, t = _timed(lambda: mmcam.explain_detections(model, bus, conf=0.01, max_boxes=10, size=1024))
    res, tp = _timed(lambda: model.predict(bus[..., ::-1].copy(), conf=0.01, max_det=10, imgsz=1024, verbose=False)[0].obb)
    d = (torch.tensor(exp.meta["rotated_boxes"]) - res.xywhr).abs().max().item()
    return (
        f"yolo11n-obb @1024: {len(exp.items)} vs {len(res)} boxes, max |xywhr diff| {d:.2e}, classes equal {exp.meta['class_ids'] == res.cls.int().tolist()}",
        t,
        tp,
    )


def rtdetr(bus, zidane):
    import ultralytics

    import mmcam

    torch.manual_seed(0)
    model = ultralytics.RTDETR("rtdetr-l.yaml")
    _warm(model.model, bus, 320)
    exp, t = _timed(lambda: mmcam.explain_detections(model, bus, conf=0.05, max_boxes=10))
    res, tp = _timed(lambda: model.predict(bus[..., ::-1].copy(), conf=0.05, max_det=10, verbose=False)[0].boxes)
    d = (torch.tensor(exp.meta["boxes"]) - res.xyxy).abs().max().item()
    return (
        f"rtdetr-l @640: {len(exp.items)} vs {len(res)} boxes, max |box diff| {d:.3f} px, classes equal {exp.meta['class_ids'] == res.cls.int().tolist()}",
        t,
        tp,
    )


def _own(model, photo):
    with torch.no_grad():
        return model.eval()(_tensor(photo))[0]


def ssd(bus, zidane):
    from torchvision.models import detection

    import mmcam

    lines, total, own = [], 0.0, 0.0
    for name in ("ssd300_vgg16", "ssdlite320_mobilenet_v3_large"):
        torch.manual_seed(0)
        model = getattr(detection, name)(weights=None, weights_backbone=None, score_thresh=0.001, detections_per_img=10)
        exp, t = _timed(lambda model=model: mmcam.explain_detections(model, bus))
        res, tp = _timed(lambda model=model: _own(model, bus))
        d = (torch.tensor(exp.meta["boxes"]) - res["boxes"]).abs().max().item()
        ds = (exp.scores - res["scores"]).abs().max().item()
        lines.append(f"{name}: {len(exp.items)} vs {len(res['scores'])} boxes, max |box diff| {d:.3f} px, |score diff| {ds:.1e}")
        total, own = total + t, own + tp
    return "; ".join(lines), total, own


def maskrcnn(bus, zidane):
    from torchvision.models import detection

    import mmcam

    torch.manual_seed(0)
    model = detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, box_score_thresh=0.0, box_detections_per_img=5)
    exp, t = _timed(lambda: mmcam.explain_segmentation(model, bus, conf=0.0))
    res, tp = _timed(lambda: _own(model, bus))
    same = np.array_equal(np.stack(exp.regions), (res["masks"][:, 0] > 0.5).numpy())
    return f"maskrcnn_resnet50_fpn @800: {len(exp.items)} vs {len(res['scores'])} instances, masks identical {same}", t, tp


def keypointrcnn(bus, zidane):
    from torchvision.models import detection

    import mmcam

    torch.manual_seed(0)
    model = detection.keypointrcnn_resnet50_fpn(weights=None, weights_backbone=None, box_score_thresh=0.0, box_detections_per_img=2)
    exp, t = _timed(lambda: mmcam.explain_pose(model, zidane, conf=0.0))
    res, tp = _timed(lambda: _own(model, zidane))
    d = (torch.tensor(exp.meta["keypoints"]) - res["keypoints"]).abs().max().item()
    return (
        f"keypointrcnn_resnet50_fpn @800: {len(exp.meta['boxes'])} vs {len(res['scores'])} people, {len(exp.items)} maps, max |keypoint diff| {d:.2e} px",
        t,
        tp,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(ALL))
    args = parser.parse_args()
    bus, zidane = _photos()
    print(f"load average before: {os.getloadavg()[0]:.1f}, torch threads {torch.get_num_threads()}")
    for name in args.only.split(","):
        line, t, tp = globals()[name](bus, zidane)
        print(f"{line} | explain {t:.1f} s, model's own call {tp:.1f} s", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
