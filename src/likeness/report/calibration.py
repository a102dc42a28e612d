"""The calibration report: the same-person and different-person distance histograms with the
current and proposed identity bars drawn on them, the numbers, the outliers and the nearest
other faces with thumbnails. A folder with `index.html`, `separation.png` and `thumbs/`.

Rendering only: it takes the `likeness calibrate --json` object (docs/cli.md) and a function
that finds an image file by sha256::

    write_calibration_report(data, "calibration/", image_path=paths.__getitem__)
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from likeness.report.card import ImagePath, thumbnail

if TYPE_CHECKING:
    from PIL import Image

THUMB = 160
FACE_CONTEXT = 1.8
NEAREST_SHOWN = 6
SAME_COLOUR, OTHER_COLOUR = "#2a7bd0", "#d07a2a"


def write_calibration_report(
    data: Mapping[str, Any], folder: str | Path, *, image_path: ImagePath
) -> Path:
    """index.html + separation.png + thumbnails; returns the index path.

    Example:
        >>> write_calibration_report(result, "calibration/", image_path=ws.blobs.path)  # doctest: +SKIP
    """
    folder = Path(folder)
    (folder / "thumbs").mkdir(parents=True, exist_ok=True)
    write_separation_plot(data, folder / "separation.png")
    shown: dict[tuple[str, int], str | None] = {}

    def thumb(sha: str, label: str, box: Sequence[float] | None = None, face: int = -1) -> str:
        """An <img> of the photo `sha` (cropped to `box` when given), written once."""
        if (sha, face) not in shown:
            img = face_thumbnail(sha, box, image_path, THUMB)
            shown[sha, face] = None
            if img is not None:
                name = f"{sha[:24]}_{face + 1}.jpg"
                img.convert("RGB").save(folder / "thumbs" / name, format="JPEG", quality=85)
                shown[sha, face] = f"thumbs/{name}"
        src = shown[sha, face]
        if src is None:
            return '<div class="missing">no preview</div>'
        return f'<img class="thumb" src="{src}" alt="{html.escape(label)}">'

    page = _page(data, thumb)
    index = folder / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def face_thumbnail(
    sha: str, box: Sequence[float] | None, image_path: ImagePath, size: int
) -> Image.Image | None:
    """The photo `sha` cropped to a face box [x0, y0, x1, y1] (with some context) and shrunk
    to fit `size` px; the whole photo without a box; None when it cannot be read."""
    if box is None:
        return thumbnail(sha, image_path, size)
    from likeness.imaging import ImageRejected, open_image

    try:
        img = open_image(image_path(sha)).image
    except (ImageRejected, OSError, KeyError):
        return None
    x0, y0, x1, y1 = box
    half = FACE_CONTEXT / 2 * max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    crop = img.crop(
        (
            int(max(0, cx - half)),
            int(max(0, cy - half)),
            int(min(img.width, cx + half)),
            int(min(img.height, cy + half)),
        )
    )
    crop.thumbnail((size, size))
    return crop


def write_separation_plot(data: Mapping[str, Any], out: str | Path) -> Path:
    """Two histograms on one distance axis (same person above, other people below) with the
    backend's threshold and the current and proposed bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    same = [p["distance"] for p in data["same_person"]["pairs"]]
    other = [f["distance"] for f in data["different_person"]["faces"]]
    threshold = float(data["threshold"])
    current, proposal = data["current"], data.get("proposal")
    lines = [current["distance"], threshold]
    if proposal:
        lines.append(proposal["distance"])
    high = max([*same, *other, *lines]) * 1.08
    bins = [high * i / 40 for i in range(41)]
    fig, axes = plt.subplots(2, 1, figsize=(7.0, 4.6), dpi=100, sharex=True)
    try:
        for ax, values, colour, title in (
            (axes[0], same, SAME_COLOUR, f"same person: {len(same)} pairs of source photos"),
            (axes[1], other, OTHER_COLOUR, f"other people: {len(other)} faces, to the nearest source"),
        ):  # fmt: skip
            if values:
                ax.hist(values, bins=bins, color=colour)
            else:
                ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes)
            ax.axvline(threshold, color="#777", linestyle=":", linewidth=1,
                       label=f"backend threshold {threshold:g}")  # fmt: skip
            ax.axvline(current["distance"], color="#c03030", linestyle="--", linewidth=1.2,
                       label=f"current bar {current['distance']:.3f} (match {current['match']:g})")  # fmt: skip
            if proposal:
                ax.axvline(proposal["distance"], color="#2a9d4a", linewidth=1.6,
                           label=f"proposed {proposal['distance']:.3f} (match {proposal['match']:g})")  # fmt: skip
            ax.set_title(title, fontsize=9)
            ax.set_ylabel("count", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.set_xlim(0, high)
        axes[0].legend(fontsize=7, frameon=False, loc="upper left")
        axes[1].set_xlabel("distance between face embeddings (lower = more alike)", fontsize=8)
        fig.tight_layout()
        out = Path(out)
        fig.savefig(out)
    finally:
        plt.close(fig)
    return out


def _rate(value: float | None, count: int) -> str:
    if value is None:
        return "–"
    return f"{value:.0%} of {count}"


def _page(data: Mapping[str, Any], thumb: Callable[..., str]) -> str:
    e = html.escape
    same, other = data["same_person"], data["different_person"]
    proposal = data.get("proposal")
    backend = data.get("backend", {})
    rows = []
    for label, bar in (("current", data["current"]), ("proposed", proposal)):
        if bar is None:
            rows.append(f"<tr><td>{label}</td><td colspan='4'>none (see the warnings)</td></tr>")
            continue
        rows.append(
            f"<tr><td>{label}</td><td>{bar['distance']:.3f}</td><td>{bar['match']:g}</td>"
            f"<td>{_rate(bar['false_reject'], same['count'])}</td>"
            f"<td>{_rate(bar['false_accept'], other['count'])}</td></tr>"
        )
    rule = f"<p>Rule: {e(proposal['explanation'])}.</p>" if proposal else ""
    warnings = "".join(f"<li>{e(w['message'])}</li>" for w in data["warnings"])
    outliers = "".join(
        f"<figure>{thumb(o['sha256'], o['name'], o.get('box'))}<figcaption>{e(o['name'])}<br>median distance "
        f"{o['median_distance']:.3f}<br>{e(o['kind'].replace('_', ' '))}</figcaption></figure>"
        for o in data["outliers"]
    )
    nearest = "".join(
        f"<figure>{thumb(f['sha256'], f['name'], f.get('box'), f['face'])}<figcaption>{e(f['name'])} face {f['face']}"
        f" ({e(f['origin'])})<br>{f['distance']:.3f} from {e(f['nearest'])}</figcaption></figure>"
        for f in other["faces"][:NEAREST_SHOWN]
    )
    duplicates = "".join(
        f"<tr><td>{e(p['a'])}</td><td>{e(p['b'])}</td><td>{p['distance']:.3f}</td></tr>"
        for p in data["near_duplicates"]
    )
    pairs = sorted(same["pairs"], key=lambda p: -p["distance"])
    pair_rows = "".join(
        f"<tr><td>{e(p['a'])}</td><td>{e(p['b'])}</td><td>{p['distance']:.3f}</td></tr>"
        for p in pairs
    )
    sources = data.get("sources", {})
    applied = data.get("applied")
    applied_html = (
        f"<p class='applied'>Written to likeness.toml: identity.pass_match "
        f"{applied['old']:g} &rarr; {applied['new']:g}.</p>"
        if applied
        else ""
    )
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Identity calibration</title><style>{_STYLE}</style></head><body>
<h1>Identity calibration</h1>
<p>Backend {e(str(backend.get("name", "?")))}, same-person threshold {data["threshold"]:g};
{sources.get("with_face", 0)} source photos with a face in {sources.get("shots", 0)} distinct
shots; {other["count"]} faces of other people in {other["photos"]} photos. Match units follow
the current source photos (typical distance {data["typical"]:.3f}).</p>
<table><tr><th>bar</th><th>distance</th><th>match</th><th>false rejects (same-person pairs)</th>
<th>false accepts (other faces)</th></tr>{"".join(rows)}</table>
{rule}{applied_html}
<img src="separation.png" alt="same-person and different-person distance histograms" class="plot">
<h2>Warnings</h2>{f"<ul class='warnings'>{warnings}</ul>" if warnings else "<p>none</p>"}
<h2>Outliers among the source photos</h2><div class="sheet">{outliers or "<p>none</p>"}</div>
<h2>Nearest faces of other people</h2><div class="sheet">{nearest or "<p>none given</p>"}</div>
<h2>Same-person pairs, farthest first</h2>
<p>{same["count"]} pairs, {_span(same)}.</p>
<table><tr><th>photo</th><th>photo</th><th>distance</th></tr>{pair_rows}</table>
<h2>Near-duplicate pairs left out</h2>
<table><tr><th>photo</th><th>photo</th><th>distance</th></tr>{duplicates or "<tr><td colspan='3'>none</td></tr>"}</table>
</body></html>
"""


def _span(summary: Mapping[str, Any]) -> str:
    if not summary["count"]:
        return "none"
    return f"{summary['min']:.3f} to {summary['max']:.3f}, median {summary['median']:.3f}"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 60rem; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
.plot { max-width: 100%; border: 1px solid #ddd; }
.sheet { display: flex; flex-wrap: wrap; gap: 0.8rem; }
figure { margin: 0; width: 170px; font-size: 0.8rem; }
img.thumb { width: 160px; height: 160px; object-fit: contain; background: #eee; }
.missing { width: 160px; height: 160px; background: #eee; display: flex; align-items: center;
  justify-content: center; }
.warnings li { color: #a05000; }
.applied { color: #228b22; font-weight: bold; }
"""
