"""The scoring report: a folder with `index.html`, thumbnails and histograms, nothing linked
from outside it, so it can be zipped, mailed or served as is.

Input rows are plain mappings in the `likeness score --json` shape (see docs/metrics.md);
this module measures nothing.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from likeness.imaging import ImageRejected, load_rgb
from likeness.report.plots import histogram_png

THUMB_SIDE = 256
DEFAULT_METRICS: tuple[tuple[str, str, str | None], ...] = (
    # (key, title, threshold key in `thresholds`)
    ("match", "match (0-10, higher = same person)", "match"),
    ("distance", "distance to nearest reference", "distance"),
    ("centroid_distance", "distance to reference centroid", None),
    ("yaw", "yaw (deg, + = toward image left)", None),
    ("pitch", "pitch (deg, + = chin down)", None),
    ("roll", "roll (deg, + = clockwise)", None),
    ("angle", "head angle", None),
    ("expression", "expression", None),
    ("body_pose", "body pose", None),
    ("sharpness", "sharpness (Laplacian variance)", "sharpness"),
    ("grain", "grain (noise sigma, grey levels)", "grain"),
    ("plastic", "plastic skin (0 = typical photo, + = smoother)", "plastic"),
    ("plastic_relative", "plastic skin vs references (0 = like refs)", None),
    ("clipping", "clipped face pixels (%)", "clipping"),
    ("face_px", "face width (px)", None),
    ("brisque", "BRISQUE (lower = better)", "brisque"),
)


def write_score_report(
    out_dir: Path,
    rows: Sequence[Mapping[str, Any]],
    references: Sequence[Mapping[str, Any]] = (),
    *,
    title: str = "Likeness score report",
    thresholds: Mapping[str, float] | None = None,
    names: Mapping[str, str] | None = None,
) -> Path:
    """Write the report into `out_dir` (created if needed) and return its index.html.

    Args:
        rows: scored images, `--json` shape (`path`, `match`, `flags`, `pass`, ...).
        references: the reference images' rows, shown first and drawn apart in histograms.
        thresholds (*optional*): metric key -> threshold, drawn as a line on its histogram.
        names (*optional*): path -> display name (e.g. a workspace image's original name).

    Example:
        >>> write_score_report(Path("report"), [s.to_json() for s in run.scores])  # doctest: +SKIP
    """
    out_dir = Path(out_dir)
    (out_dir / "thumbs").mkdir(parents=True, exist_ok=True)
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    thresholds = dict(thresholds or {})
    names = dict(names or {})
    # 1. Thumbnails (one per distinct image).
    thumbs: dict[str, str | None] = {}
    for row in [*references, *rows]:
        key = str(row.get("sha256") or row["path"])
        if key not in thumbs:
            thumbs[key] = _thumbnail(Path(str(row["path"])), out_dir / "thumbs", key)
    # 2. Histograms of every metric that has a value somewhere.
    plots = []
    for key, label, threshold_key in DEFAULT_METRICS:
        values = [r.get(key) for r in rows]
        ref_values = [r.get(key) for r in references]
        if all(v is None for v in [*values, *ref_values]):
            continue
        png = out_dir / "plots" / f"{key}.png"
        threshold = thresholds.get(threshold_key) if threshold_key else None
        histogram_png(png, label, values, ref_values, threshold)
        plots.append(png.name)
    # 3. The page: references first, then candidates sorted by match (best first).
    ordered = sorted(rows, key=lambda r: (r.get("match") is None, -(r.get("match") or 0.0)))
    page = _page(title, references, ordered, thumbs, plots, names)
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def _thumbnail(path: Path, folder: Path, key: str) -> str | None:
    name = f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.jpg"
    target = folder / name
    if not target.exists():
        partial = target.with_name(f".{name}.tmp")
        try:
            img = load_rgb(path)
            img.thumbnail((THUMB_SIDE, THUMB_SIDE))
            img.save(partial, format="JPEG", quality=85)
            partial.replace(target)
        except (ImageRejected, OSError):
            partial.unlink(missing_ok=True)
            return None
    return f"thumbs/{name}"


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _card(row: Mapping[str, Any], thumb: str | None, names: Mapping[str, str]) -> str:
    path = str(row["path"])
    name = names.get(path, Path(path).name)
    passed = bool(row.get("pass"))
    verdict = '<span class="ok">pass</span>' if passed else '<span class="bad">fail</span>'
    flags = "".join(
        f'<span class="flag">{html.escape(str(f))}</span>' for f in row.get("flags", [])
    )
    error = row.get("error")
    img = (
        f'<img src="{html.escape(thumb)}" alt="{html.escape(name)}" loading="lazy">'
        if thumb
        else '<div class="missing">no preview</div>'
    )
    facts = [
        ("match", _fmt(row.get("match"))),
        ("dist", _fmt(row.get("distance"), 3)),
        ("angle", _fmt(row.get("angle"))),
        ("yaw", _fmt(row.get("yaw"), 0)),
        ("expr", _fmt(row.get("expression"))),
        ("body", _fmt(row.get("body_pose"))),
        ("sharp", _fmt(row.get("sharpness"), 0)),
        ("grain", _fmt(row.get("grain"))),
        ("plastic", _fmt(row.get("plastic"))),
        ("vs refs", _fmt(row.get("plastic_relative"))),
        ("face", _fmt(row.get("face_px"), 0)),
    ]
    table = "".join(f"<dt>{k}</dt><dd>{html.escape(v)}</dd>" for k, v in facts)
    err = f'<div class="error">{html.escape(str(error))}</div>' if error else ""
    return (
        f'<figure class="card {"pass" if passed else "fail"}">{img}'
        f'<figcaption><div class="name" title="{html.escape(path)}">{html.escape(name)} '
        f"{verdict}</div><dl>{table}</dl><div>{flags}</div>{err}</figcaption></figure>"
    )


def _page(
    title: str,
    references: Sequence[Mapping[str, Any]],
    rows: Sequence[Mapping[str, Any]],
    thumbs: Mapping[str, str | None],
    plots: Sequence[str],
    names: Mapping[str, str],
) -> str:
    def cards(items: Sequence[Mapping[str, Any]]) -> str:
        return "".join(
            _card(r, thumbs.get(str(r.get("sha256") or r["path"])), names) for r in items
        )

    passed = sum(1 for r in rows if r.get("pass"))
    plot_html = "".join(f'<img class="plot" src="plots/{html.escape(p)}" alt="{p}">' for p in plots)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="summary">{len(rows)} images scored, {passed} pass, against {len(references)}
reference images. Sorted by match, best first.</p>
<h2>References</h2><div class="sheet">{cards(references) or "<p>none</p>"}</div>
<h2>Scored images</h2><div class="sheet">{cards(rows) or "<p>none</p>"}</div>
<h2>Distributions</h2><div class="plots">{plot_html}</div>
</body></html>
"""


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;background:#fafafa}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.6rem}
.summary{color:#555}
.sheet{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:.8rem}
.card{margin:0;background:#fff;border:1px solid #ddd;border-radius:6px;overflow:hidden}
.card.pass{border-top:4px solid #2a9d4a}.card.fail{border-top:4px solid #c03030}
.card img{width:100%;height:200px;object-fit:contain;background:#eee;display:block}
.missing{height:200px;display:flex;align-items:center;justify-content:center;background:#eee}
figcaption{padding:.4rem .5rem;font-size:.75rem}
.name{font-weight:600;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
dl{display:grid;grid-template-columns:auto 1fr auto 1fr;gap:0 .4rem;margin:.3rem 0}
dt{color:#777}dd{margin:0}
.ok{color:#2a9d4a}.bad{color:#c03030}
.flag{display:inline-block;background:#fde8e8;color:#a02020;border-radius:3px;
padding:0 .3rem;margin:.1rem .2rem 0 0}
.error{color:#a02020}
.plots{display:flex;flex-wrap:wrap;gap:.6rem}.plot{background:#fff;border:1px solid #ddd}
"""
