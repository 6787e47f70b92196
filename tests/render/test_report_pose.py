"""The report's pose links: each person's box opens that person's map (not map number p), each
keypoint dot its keypoint's map."""

from __future__ import annotations

import re

from mmcam.render.report import _boxes_svg, _pose_refs


def test_pose_boxes_and_dots_link_to_their_own_items():
    # two people with two keypoints each: items 0 (person 0), 1-2 (its keypoints), 3 (person 1), 4-5
    meta = {
        "boxes": [[0, 0, 10, 10], [20, 20, 40, 40]],
        "person": [0, 0, 0, 1, 1, 1],
        "keypoint": [-1, 0, 1, -1, 0, 1],
        "keypoints": [[[1, 2, 0.9], [3, 4, 0.8]], [[21, 22, 0.9], [23, 24, 0.7]]],
    }
    svg = _boxes_svg(meta["boxes"], 64, 48, None, _pose_refs(meta))
    rects = re.findall(r"<rect data-item-ref='(\d+)' x='(\d+)'", svg)
    dots = re.findall(r"<circle data-item-ref='(\d+)' cx='([\d.]+)' cy='([\d.]+)'", svg)
    assert rects == [("0", "0"), ("3", "20")]
    assert dots == [("1", "1.0", "2.0"), ("2", "3.0", "4.0"), ("4", "21.0", "22.0"), ("5", "23.0", "24.0")]


def test_other_tasks_link_box_k_to_item_k():
    assert _pose_refs({"boxes": [[0, 0, 1, 1]]}) is None
    assert re.findall(r"data-item-ref='(\d+)'", _boxes_svg([[0, 0, 1, 1], [2, 2, 3, 3]], 8, 8)) == ["0", "1"]
