"""Ground-truth data: generated scenes (COCO format) and a gridworld, exact by construction."""
from .coco import CocoImage, load_coco, write_coco
from .gridworld import ACTIONS, GridConfig, GridState, generate_grid, generate_grids
from .scenes import (
    CATEGORIES,
    COLORS,
    QA,
    SHAPES,
    VOCAB,
    Scene,
    SceneConfig,
    SceneObject,
    classification_config,
    generate_scene,
    generate_scenes,
)

__all__ = [
    "SceneConfig", "Scene", "SceneObject", "QA", "generate_scene", "generate_scenes", "classification_config",
    "SHAPES", "COLORS", "CATEGORIES", "VOCAB", "write_coco", "load_coco", "CocoImage",
    "GridConfig", "GridState", "generate_grid", "generate_grids", "ACTIONS",
]
