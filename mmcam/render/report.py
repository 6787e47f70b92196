"""A self-contained HTML report: one section per image, every heatmap inlined.

Each section shows the image with one item's heatmap and the list of items (classes,
caption words, boxes, answers). Hovering or clicking an item shows its heatmap; boxes are
drawn over the image and clickable. No server, no network, no external script: the file
works opened from disk. The overlays are the same PNG bytes :meth:`TaskExplanation.save`
writes, so what the page shows can be checked against the files.
"""

from __future__ import annotations

import html
import json
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .overlay import data_uri

__all__ = ["write_report", "render_report"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#1d1d1f;background:#fafafa}
h1{font-size:22px;margin:0 0 4px} .sub{color:#666;margin-bottom:20px}
section{background:#fff;border:1px solid #e3e3e3;border-radius:10px;padding:16px;margin:0 0 18px}
section h2{font-size:16px;margin:0 0 10px} .row{display:flex;gap:18px;flex-wrap:wrap;align-items:flex-start}
.stage{position:relative;flex:none;width:min(640px,100%);cursor:zoom-in} .stage img{display:block;width:100%;height:auto;border-radius:6px}
.stage.small{width:320px} .stage.small img{image-rendering:pixelated}
.stage.full{width:auto;max-width:none;cursor:zoom-out} .stage.full img{width:auto;max-width:none}
.stage svg{position:absolute;left:0;top:0;width:100%;height:100%}
.stage rect,.stage polygon,.stage circle{fill:transparent;stroke:#fff;stroke-width:2;cursor:pointer} .stage rect.active,.stage polygon.active,.stage circle.active{stroke:#ff2d55;stroke-width:3}
.side{flex:1;min-width:260px} .caption{font-size:20px;line-height:1.8;margin:4px 0 10px}
.word,.chip{cursor:pointer;padding:2px 5px;border-radius:5px} .word:hover,.word.active,.chip.active{background:#ffd60a}
.chip{display:inline-block;border:1px solid #ccc;margin:2px;font-size:13px}
.qa{font-size:15px;margin:4px 0 10px} .qa b{color:#0a84ff}
.now{font-size:13px;color:#444;margin-top:6px} .note{color:#a05a00}
table{border-collapse:collapse;font-size:12px;margin-top:8px} td,th{border-bottom:1px solid #eee;padding:2px 8px;text-align:left}
footer{color:#777;font-size:12px;margin-top:24px}
"""

_JS = """
document.querySelectorAll('section[data-section]').forEach(function(sec){
  var view = sec.querySelector('img.view'), now = sec.querySelector('.now');
  function show(k){
    var src = sec.getAttribute('data-src-' + k); if(!src){return;}
    view.src = src; view.setAttribute('data-item', k);
    sec.querySelectorAll('[data-item-ref]').forEach(function(el){
      el.classList.toggle('active', el.getAttribute('data-item-ref') === String(k));});
    if(now){ now.textContent = 'showing: ' + sec.getAttribute('data-label-' + k); }
  }
  var stage = sec.querySelector('.stage');
  if(stage && view){ view.addEventListener('click', function(){ stage.classList.toggle('full'); }); }
  sec.querySelectorAll('[data-item-ref]').forEach(function(el){
    var k = el.getAttribute('data-item-ref');
    el.addEventListener('mouseenter', function(){ show(k); });
    el.addEventListener('click', function(){ show(k); });
  });
});
"""


def render_report(explanations: Sequence[Any], title: str = "mmcam report", names: Sequence[str] | None = None, footer: dict | None = None) -> str:
    """The report as one HTML string (see the module docstring)."""
    report = Report(title, footer)
    for i, exp in enumerate(explanations):
        report.add(exp, names[i] if names else f"image {i}")
    return report.html()


def write_report(path: "str | Path", explanations: Sequence[Any], **kwargs: Any) -> Path:
    """Write :func:`render_report` to ``path``."""
    return _write(path, render_report(explanations, **kwargs))


class Report:
    """A report built one photo at a time: :meth:`add` renders the photo's section at once, so a
    run over a folder keeps only the sections' HTML, not every photo's full-size maps."""

    def __init__(self, title: str = "mmcam report", footer: dict | None = None):
        self.title, self.footer, self.sections = title, footer, []

    def add(self, exp: Any, name: str) -> None:
        if self.footer is None:
            self.footer = _default_footer([exp])
        self.sections.append(_section(len(self.sections), exp, name))

    def html(self) -> str:
        foot = " · ".join(f"{html.escape(str(k))}: {html.escape(str(v))}" for k, v in (self.footer or {}).items())
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        return (
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(self.title)}</h1><div class='sub'>{len(self.sections)} image(s) · generated {stamp}</div>"
            + "".join(self.sections)
            + f"<footer>{foot}</footer><script>{_JS}</script></body></html>"
        )

    def write(self, path: "str | Path") -> Path:
        return _write(path, self.html())


def _write(path: "str | Path", text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _default_footer(explanations: Sequence[Any]) -> dict:
    import torch

    from .. import __version__

    first = explanations[0] if explanations else None
    out = {"mmcam": __version__, "torch": torch.__version__, "python": sys.version.split()[0]}
    if first is not None:
        out.update(method=first.method, layers=", ".join(first.layers))
        if first.meta.get("model"):
            out["model"] = first.meta["model"]
    return out


PREVIEW = 2048  # the longest side of a photo embedded in the report; the PNG files keep the full size


def _uri(img: Any) -> str:
    """PNG for small images (exact pixels), JPEG for photos (a report of a dozen 1080p overlays
    stays a few MB), at most :data:`PREVIEW` pixels on the longest side (a dozen full-size
    overlays of a 12-megapixel photo would make a report of ~30 MB)."""
    if max(img.shape[:2]) <= 256:
        return data_uri(img)
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    picture = Image.fromarray(img)
    if max(picture.size) > PREVIEW:
        picture.thumbnail((PREVIEW, PREVIEW), Image.BILINEAR)
    picture.save(buffer, format="JPEG", quality=88)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _section(index: int, exp: Any, name: str) -> str:
    overlays = exp.rendered() if hasattr(exp, "rendered") else exp.overlays()
    uris = [_uri(img) for img in overlays]  # each encoded once: the first is also the one shown
    attrs = "".join(f' data-src-{k}="{uri}" data-label-{k}="{html.escape(label, quote=True)}"' for k, (uri, label) in enumerate(zip(uris, exp.items)))
    first = uris[0] if uris else _uri(exp.image)
    h, w = exp.image.shape[:2]
    svg = _boxes_svg(exp.meta.get("boxes"), w, h, exp.meta.get("polygons"), _pose_refs(exp.meta))
    hint = "full size" if max(h, w) <= PREVIEW else f"{PREVIEW} px (full size: the PNG files)"
    body = [_task_header(exp)]
    if exp.task == "caption":
        body.append(
            "<div class='caption'>"
            + " ".join(f"<span class='word' data-item-ref='{k}'>{html.escape(word)}</span>" for k, word in enumerate(exp.items))
            + "</div>"
        )
    else:
        body.append(
            "<div>"
            + "".join(
                f"<span class='chip' data-item-ref='{k}'>{html.escape(label)} <small>{float(s):.3g}</small></span>"
                for k, (label, s) in enumerate(zip(exp.items, exp.scores))
            )
            + "</div>"
        )
    if not exp.items:
        body.append(f"<p class='note'>{html.escape(str(exp.meta.get('note', 'nothing to explain')))}</p>")
    body.append(f"<div class='now'>showing: {html.escape(exp.items[0]) if exp.items else 'the image'}</div>")
    body.append(_details(exp))
    return (
        f"<section data-section='{index}' data-task='{exp.task}' data-name='{html.escape(name, quote=True)}'{attrs}>"
        f"<h2>{html.escape(name)} — {html.escape(exp.task)}</h2><div class='row'>"
        f"<div class='stage{' small' if max(h, w) <= 256 else ''}' title='click: {hint} / fit'>"
        f"<img class='view' data-item='0' src='{first}' alt='heatmap' width='{w}' height='{h}'/>{svg}</div>"
        f"<div class='side'>{''.join(body)}</div></div></section>"
    )


def _task_header(exp: Any) -> str:
    meta = exp.meta
    if exp.task == "vqa" and "prompt" in meta:  # a generative VLM's answer: every word hoverable, as a caption's
        words = " ".join(f"<span class='word' data-item-ref='{k}'>{html.escape(word)}</span>" for k, word in enumerate(exp.items))
        return f"<div class='qa'>Q: {html.escape(str(meta['prompt']))}<br/>A: <span class='caption'>{words}</span></div>"
    if exp.task == "vqa":
        return f"<div class='qa'>Q: {html.escape(str(meta.get('question', '')))}<br/>A: <b>{html.escape(str(meta.get('answer', '')))}</b></div>"
    if exp.task == "classification" and "predicted_label" in meta:
        return f"<div class='qa'>predicted: <b>{html.escape(str(meta['predicted_label']))}</b></div>"
    if exp.task == "action" and "action" in meta:
        return f"<div class='qa'>action: <b>{html.escape(str(meta.get('action_name', meta['action'])))}</b></div>"
    return ""


def _pose_refs(meta: dict) -> tuple[list[int], list[tuple[int, float, float]]] | None:
    """For pose results (items person by person: the person, then its keypoints): the item of
    each person's box, and ``(item, x, y)`` of each explained keypoint; None for other tasks."""
    if "person" not in meta or "keypoint" not in meta:
        return None
    people, joints, points = list(meta["person"]), list(meta["keypoint"]), meta.get("keypoints", [])
    boxes = [people.index(p) for p in range(len(meta.get("boxes", [])))]
    dots = [(k, float(points[p][j][0]), float(points[p][j][1])) for k, (p, j) in enumerate(zip(people, joints)) if j >= 0 and p < len(points)]
    return boxes, dots


def _boxes_svg(boxes: Any, width: int, height: int, polygons: Any = None, pose: Any = None) -> str:
    """Clickable boxes over the image: rotated boxes (OBB) as their 4-corner polygons; for pose,
    each box opens its person's map and each keypoint (a dot) its keypoint's map."""
    if polygons:
        shapes = "".join(f"<polygon data-item-ref='{k}' points='{' '.join(f'{x},{y}' for x, y in poly)}'/>" for k, poly in enumerate(polygons))
        return f"<svg viewBox='0 0 {width} {height}' preserveAspectRatio='none'>{shapes}</svg>"
    if not boxes:
        return ""
    refs, dots = pose if pose else (list(range(len(boxes))), [])
    rects = "".join(
        f"<rect data-item-ref='{k}' x='{x0}' y='{y0}' width='{max(x1 - x0, 1)}' height='{max(y1 - y0, 1)}'/>" for k, (x0, y0, x1, y1) in zip(refs, boxes)
    )
    rects += "".join(f"<circle data-item-ref='{k}' cx='{x:.1f}' cy='{y:.1f}' r='{max(2.0, min(width, height) / 150):.1f}'/>" for k, x, y in dots)
    return f"<svg viewBox='0 0 {width} {height}' preserveAspectRatio='none'>{rects}</svg>"


def _details(exp: Any) -> str:
    summary = exp.to_dict()
    rows = "".join(
        f"<tr><td>{item['index']}</td><td>{html.escape(str(item['label']))}</td><td>{item['score']:.4g}</td>"
        f"<td>{item['peak_xy']}</td><td>{item['top10_mass']:.3f}</td></tr>"
        for item in summary["items"]
    )
    extra = {k: v for k, v in summary.items() if k not in ("items", "task", "method", "layers", "image_size", "boxes")}
    return (
        "<table><tr><th>#</th><th>item</th><th>score</th><th>peak (x, y)</th><th>top-10% mass</th></tr>"
        f"{rows}</table><details><summary>metadata</summary><pre>{html.escape(json.dumps(extra, indent=1)[:4000])}</pre></details>"
    )
