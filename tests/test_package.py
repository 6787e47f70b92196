"""Packaging facts: importing mmcam stays light; the public surface is what the docs say."""

from __future__ import annotations

import subprocess
import sys


def test_import_does_not_pull_heavy_optional_dependencies():
    code = (
        "import sys, mmcam, mmcam.methods, mmcam.targets, mmcam.reshape; "
        "mmcam.CAM; mmcam.explain_classification; mmcam.GuidedGradCAM; mmcam.TTA; "
        "print(sorted(m for m in ('transformers', 'ultralytics', 'pycocotools', 'captum', 'pytorch_grad_cam') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_public_names():
    import mmcam

    assert mmcam.methods.available() == sorted(
        [
            "ablationcam",
            "attnlrp",
            "attnlrp-shift",
            "cam",
            "cell-occlusion",
            "eigencam",
            "eigengradcam",
            "gae",
            "gae-detr",
            "gae-detr-shift",
            "gae-shift",
            "gradcam",
            "gradcam++",
            "gradcam-elementwise",
            "gradcam-shift",
            "hirescam",
            "layercam",
            "layercam-detr-shift",
            "layercam-shift",
            "legrad",
            "odam",
            "sarfa",
            "sarfa-toggle",
            "scorecam",
            "shapley",
            "xgradcam",
        ]
    )
    for name in ("explain_caption", "explain_detections", "explain_segmentation", "explain_action"):
        assert callable(getattr(mmcam.tasks, name)) and getattr(mmcam, name) is getattr(mmcam.tasks, name)
    assert callable(mmcam.zoo.load) and callable(mmcam.zoo.available)
