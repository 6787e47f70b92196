"""Ground-truth data, exact by construction: generated scenes (exact masks, boxes, captions
with word→object links, questions with answer→object links) in COCO format, and a
gridworld whose optimal action and decisive cells come from breadth-first search.

>>> from mmcam.data import generate_scenes, SceneConfig
>>> scenes = generate_scenes(100, seed=0, config=SceneConfig(background="textured"))
"""

from .coco import CocoImage, load_coco, write_coco
from .gridworld import ACTIONS, GridConfig, GridState, generate_grid, generate_grids
from .language import QA
from .scenes import Scene, SceneConfig, SceneObject, classification_config, generate_scene, generate_scenes
from .vocab import CATEGORIES, COLORS, COUNT_WORDS, RELATIONS, SHAPES, VOCAB

__all__ = [
    "SceneConfig",
    "Scene",
    "SceneObject",
    "QA",
    "generate_scene",
    "generate_scenes",
    "classification_config",
    "SHAPES",
    "COLORS",
    "CATEGORIES",
    "VOCAB",
    "COUNT_WORDS",
    "RELATIONS",
    "write_coco",
    "load_coco",
    "CocoImage",
    "GridConfig",
    "GridState",
    "generate_grid",
    "generate_grids",
    "ACTIONS",
]
