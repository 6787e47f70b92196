"""``mmcam evaluate``: how good are a task's maps — against exact ground truth, against the
model itself, and under the sanity checks — with baselines beside every number.

For one task, model and set of methods, over a COCO-format dataset read through pycocotools
(by default: scenes generated from ``seed`` and written as COCO first), it reports per method

- localization (``mmcam.metrics.localization``): pointing game, relevance mass and its ratio
  to chance, rank accuracy, pixel AUROC, and the mass landing on *other* objects (ODAM's
  discrimination for boxes, the distractor for caption words);
- faithfulness (``mmcam.metrics.faithfulness``): deletion / insertion AUC, ROAD MoRF / LeRF,
  average drop / increase in confidence;
- sanity (``mmcam.metrics.sanity``): Spearman of |map| after cascading randomization of the
  model (Grad-CAM must fall below 0.3; Guided Backprop, where the model has ReLUs, is shown
  failing), and between the maps of two different targets;
- optionally the captum baselines (occlusion, gradients, SmoothGrad, Integrated Gradients,
  KernelSHAP) on the same items, and every method's rank correlation with occlusion (the
  Grad-CAM paper's faithfulness measure);

plus rows for the centre-Gaussian, uniform and random maps. Deterministic from ``seed``.
"""

from .cases import TASKS
from .runner import FRESH_SEEDS, ZOO_MODEL, evaluate
from .scoring import torchray_tolerance
from .table import COLUMNS, Evaluation

__all__ = ["evaluate", "Evaluation", "COLUMNS", "TASKS", "ZOO_MODEL", "FRESH_SEEDS", "torchray_tolerance"]
