"""An explanation with one map per word of generated text (captions, VLM answers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..explain import TaskExplanation
from ..render.overlay import save_png

__all__ = ["WordsExplanation"]


@dataclass
class WordsExplanation(TaskExplanation):
    """``items`` are the text's words, ``maps[k]`` word k's map, ``tokens`` the text's tokens."""

    tokens: list[str] = field(default_factory=list)

    def save(self, out_dir: "str | Path", stem: str = "explanation", scale: int = 1) -> list[Path]:
        """Also writes ``{stem}_strip.png``: one thumbnail per word, in text order."""
        paths = super().save(out_dir, stem, scale)
        if self.items:
            from ..render.text import caption_strip

            paths.append(save_png(caption_strip(self.image, self.maps, self.items), Path(out_dir) / f"{stem}_strip.png"))
        return paths
