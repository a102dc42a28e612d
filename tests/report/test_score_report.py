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
        "yaw": 3.0, "sharpness": 120.0, "grain": 1.5, "plastic": 0.1, "plastic_relative": -0.2,
        **extra,
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
    assert "plastic_relative.png" in plots
    assert "brisque.png" not in plots
    with Image.open(index.parent / "plots" / "match.png") as plot:
        assert plot.size[0] > 200


def test_names_replace_blob_paths(tmp_path):
    blob = _image(tmp_path / "ab12", 120)
    page = write_score_report(
        tmp_path / "out", [_row(blob, 7.0)], [], names={str(blob): "holiday.jpg"}
    ).read_text()
    assert "holiday.jpg" in page


def test_names_flags_and_errors_are_escaped(tmp_path):
    name = '"><script>alert(1)</script>.png'
    blob = _image(tmp_path / "blob", 120)
    row = _row(blob, 7.0, flags=["<b>x</b>"], error="<img src=x onerror=alert(2)>")
    page = write_score_report(
        tmp_path / "out", [row], [], title="<i>t</i>", names={str(blob): name}
    ).read_text()
    assert "<script>" not in page and "<img src=x" not in page and "<b>x" not in page
    assert "<i>t" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_a_failed_thumbnail_leaves_no_partial_file(tmp_path, monkeypatch):
    from likeness.report import score_report

    blob = _image(tmp_path / "blob.png", 120)

    def broken_save(self, target, *args, **kwargs):
        Path(target).write_bytes(b"\xff\xd8 half a JPEG")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    thumbs = tmp_path / "thumbs"
    thumbs.mkdir()
    assert score_report._thumbnail(blob, thumbs, "k") is None  # "no preview", not a crash
    assert list(thumbs.iterdir()) == []  # nothing a later run would take for a thumbnail


def test_a_plot_that_cannot_be_saved_closes_its_figure(tmp_path):
    import matplotlib.pyplot as plt
    import pytest

    from likeness.report.plots import histogram_png

    before = set(plt.get_fignums())
    with pytest.raises(OSError):
        histogram_png(tmp_path / "missing" / "m.png", "match", [1.0, 2.0])
    assert set(plt.get_fignums()) == before
