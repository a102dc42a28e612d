from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from likeness.report import write_score_report


def _image(path: Path, shade: int) -> Path:
    Image.fromarray(np.full((120, 90, 3), shade, np.uint8)).save(path, format="PNG")
    return path


def _row(path: Path, match: float | None, flags=(), passed=False, **extra) -> dict:
    return {
        "path": str(path), "sha256": f"{abs(hash(str(path))):064x}"[:64], "match": match,
        "distance": None if match is None else 1 - match / 10, "pass": passed,
        "flags": list(flags), "angle": "front", "expression": "neutral", "body_pose": "other",
        "yaw": 3.0, "sharpness": 120.0, "grain": 1.5, "plastic": 1.1, **extra,
    }  # fmt: skip


def test_report_lists_references_first_then_candidates_by_match(tmp_path):
    ref = _row(_image(tmp_path / "ref.png", 90), 10.0, passed=True)
    rows = [
        _row(_image(tmp_path / "low.png", 30), 2.5, flags=["multiple_faces"]),
        _row(_image(tmp_path / "high.png", 200), 8.9, passed=True),
        _row(tmp_path / "gone.png", None, flags=["unreadable"], error="gone.png: not found"),
    ]
    index = write_score_report(tmp_path / "out", rows, [ref], thresholds={"match": 5.0})
    page = index.read_text()
    order = [m for m in re.findall(r'title="[^"]*/(\w+)\.png"', page)]
    assert order == ["ref", "high", "low", "gone"]
    assert page.index("References") < page.index("Scored images")
    assert "multiple_faces" in page and "gone.png: not found" in page and "no preview" in page
    assert "3 images scored, 1 pass, against 1" in page


def test_report_folder_is_self_contained(tmp_path):
    rows = [_row(_image(tmp_path / f"{i}.png", 40 * i), float(i)) for i in range(1, 5)]
    index = write_score_report(tmp_path / "out", rows, [])
    page = index.read_text()
    links = re.findall(r'src="([^"]+)"', page)
    assert links, "no images in the page"
    for link in links:
        assert not link.startswith(("/", "http", "file:")), link
        assert (index.parent / link).is_file(), link
    plots = {p.name for p in (index.parent / "plots").iterdir()}
    # Every metric with values gets a histogram; metrics with none (brisque) do not.
    assert {"match.png", "sharpness.png", "grain.png", "plastic.png", "angle.png"} <= plots
    assert "brisque.png" not in plots
    with Image.open(index.parent / "plots" / "match.png") as plot:
        assert plot.size[0] > 200


def test_names_replace_blob_paths(tmp_path):
    blob = _image(tmp_path / "ab12", 120)
    page = write_score_report(
        tmp_path / "out", [_row(blob, 7.0)], [], names={str(blob): "holiday.jpg"}
    ).read_text()
    assert "holiday.jpg" in page
