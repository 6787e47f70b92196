"""``mmcam evaluate``: how good are a task's maps — against exact ground truth, against the
model itself, and under the sanity checks — with baselines beside every number.

For one task, model and set of methods, over a COCO-format dataset read through pycocotools
(by default: scenes generated from ``seed`` and written as COCO first), it reports per method

- localization (``mmcam.metrics.localization``): pointing game, relevance mass and its ratio
  to chance, rank accuracy, pixel AUROC, and the mass landing on *other* objects (ODAM's
  discrimination for boxes, the distractor for caption words); CLEVR-XAI's mass and rank
  accuracy on the referred object and on all objects' union (Arras et al. 2022);
- faithfulness (``mmcam.metrics.faithfulness``): deletion / insertion AUC, ROAD MoRF / LeRF,
  average drop / increase in confidence;
- sanity (``mmcam.metrics.sanity``): Spearman of |map| after cascading randomization of the
  model (Grad-CAM must fall below 0.3; Guided Backprop, where the model has ReLUs, is shown
  failing), and between the maps of two different targets;
- optionally the captum baselines (occlusion, gradients, SmoothGrad, Integrated Gradients,
  KernelSHAP) on the same items, and every method's rank correlation with occlusion (the
  Grad-CAM paper's faithfulness measure);

- optionally (``interventions=True``) the interventional ground truth of
  :mod:`mmcam.evaluation.interventions`: every scene re-rendered without each object, with
  only the referred one, with an added distractor; does the map rank the objects as the
  model's own score changes do, and is a missed pointing the model's or the method's?

plus rows for the centre-Gaussian, uniform, random and Sobel-edge maps. ``shift=True``
evaluates on :data:`SHIFT` scenes (more, smaller objects, occluders, clutter). Deterministic
from ``seed``.
"""

from .cases import TASKS
from .interventions import SHIFT
from .runner import FRESH_SEEDS, ZOO_MODEL, evaluate
from .scoring import torchray_tolerance
from .table import COLUMNS, Evaluation

__all__ = ["evaluate", "Evaluation", "COLUMNS", "TASKS", "ZOO_MODEL", "FRESH_SEEDS", "SHIFT", "torchray_tolerance"]
