"""The HTML report of a sweep: ranking table, heat maps, per-axis line plots, contact sheets.

Rendering only: it takes the sweep as plain data (the `likeness sweep --json` shape) and a
function that finds an image file by sha256, and writes a self-contained folder::

    write_sweep_report(result.to_json(), "report/", image_path=ws.blobs.path)
    # report/index.html, report/assets/*.png

- a heat map of the mean objective over every pair of axes (averaged over the other axes);
- per axis, the mean objective and mean match at each value, with the spread over seeds
  (each seed's mean as a faint line, the min-max band shaded);
- a contact sheet per configuration: every image with its seed, match and objective.
"""

from __future__ import annotations

import html
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from likeness.report.card import ImagePath, thumbnail

THUMB = 160


def write_sweep_report(
    sweep: Mapping[str, Any], folder: str | Path, *, image_path: ImagePath
) -> Path:
    """Write the report folder; returns the path of its index.html."""
    folder = Path(folder)
    assets = folder / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    configs = list(sweep["configs"])
    axes = [a for a in sweep["axes"] if len({_key(c["config"].get(a)) for c in configs}) > 1]
    # 1. Heat maps over each pair of axes.
    heatmaps = []
    for i, a in enumerate(axes):
        for b in axes[i + 1 :]:
            name = f"heat_{_slug(a)}__{_slug(b)}.png"
            heat_map(configs, a, b, assets / name)
            heatmaps.append((a, b, name))
    # 2. Line plots per axis.
    lines = []
    for axis in axes:
        name = f"axis_{_slug(axis)}.png"
        axis_plot(configs, axis, assets / name)
        lines.append((axis, name))
    # 3. Contact sheets.
    sheets = {}
    for config in configs:
        name = f"sheet_{config['config_key']}.png"
        contact_sheet(config, image_path, assets / name)
        sheets[config["config_key"]] = name
    index = folder / "index.html"
    index.write_text(_page(sweep, configs, heatmaps, lines, sheets), encoding="utf-8")
    return index


# -- plots ----------------------------------------------------------------------------------
def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _key(value: Any) -> str:
    return repr(value)


def _values(configs: Sequence[Mapping[str, Any]], axis: str) -> list[Any]:
    """Distinct values of an axis in first-seen order (numbers sorted)."""
    seen: dict[str, Any] = {}
    for c in configs:
        value = c["config"].get(axis)
        seen.setdefault(_key(value), value)
    values = list(seen.values())
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        values.sort()
    return values


def _label(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value)
    return Path(text).name if "/" in text else text


def heat_map(configs: Sequence[Mapping[str, Any]], a: str, b: str, out: Path) -> None:
    """Mean objective for each (a, b) pair, averaged over the other axes."""
    import numpy as np

    plt = _pyplot()
    xs, ys = _values(configs, a), _values(configs, b)
    grid = np.full((len(ys), len(xs)), np.nan)
    for yi, yv in enumerate(ys):
        for xi, xv in enumerate(xs):
            found = [
                c["objective"]
                for c in configs
                if _key(c["config"].get(a)) == _key(xv) and _key(c["config"].get(b)) == _key(yv)
            ]
            if found:
                grid[yi, xi] = statistics.fmean(found)
    fig, ax = plt.subplots(figsize=(1.2 * len(xs) + 2.5, 0.8 * len(ys) + 2))
    image = ax.imshow(grid, cmap="viridis", aspect="auto", origin="lower")
    ax.set_xticks(range(len(xs)), [_label(v) for v in xs], rotation=30, ha="right")
    ax.set_yticks(range(len(ys)), [_label(v) for v in ys])
    ax.set_xlabel(a)
    ax.set_ylabel(b)
    middle = float(np.nanmean(grid)) if not np.isnan(grid).all() else 0.0
    for yi in range(len(ys)):
        for xi in range(len(xs)):
            if not np.isnan(grid[yi, xi]):
                colour = "black" if grid[yi, xi] > middle else "white"  # readable on viridis
                ax.text(xi, yi, f"{grid[yi, xi]:.2f}", ha="center", va="center", color=colour)
    fig.colorbar(image, ax=ax, label="objective")
    ax.set_title(f"objective: {a} x {b}")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def axis_plot(configs: Sequence[Mapping[str, Any]], axis: str, out: Path) -> None:
    """Objective and match against one axis, with the spread over seeds."""
    plt = _pyplot()
    values = _values(configs, axis)
    seeds = sorted({cell["seed"] for c in configs for cell in c["cells"]})
    x = list(range(len(values)))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, metric, title in ((axes[0], "objective", "objective"), (axes[1], "match", "match")):
        per_seed = {
            seed: [_mean_at(configs, axis, v, metric, seed) for v in values] for seed in seeds
        }
        for ys in per_seed.values():
            ax.plot(x, _nan(ys), color="grey", alpha=0.35, linewidth=1, label=None)
        means, lows, highs = [], [], []
        for i in range(len(values)):
            column = [per_seed[s][i] for s in seeds if per_seed[s][i] is not None]
            means.append(statistics.fmean(column) if column else float("nan"))
            lows.append(min(column) if column else float("nan"))
            highs.append(max(column) if column else float("nan"))
        ax.fill_between(x, lows, highs, alpha=0.25, color="tab:blue", label="min-max over seeds")
        ax.plot(x, means, marker="o", color="tab:blue", label="mean")
        ax.set_xticks(x, [_label(v) for v in values], rotation=30, ha="right")
        ax.set_xlabel(axis)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def _mean_at(
    configs: Sequence[Mapping[str, Any]], axis: str, value: Any, metric: str, seed: int
) -> float | None:
    found = [
        float(cell.get(metric) or 0.0)
        for c in configs
        if _key(c["config"].get(axis)) == _key(value)
        for cell in c["cells"]
        if cell["seed"] == seed and (cell.get("error") is None or metric == "objective")
    ]
    return statistics.fmean(found) if found else None


def _nan(values: Sequence[float | None]) -> list[float]:
    return [float("nan") if v is None else v for v in values]


def contact_sheet(config: Mapping[str, Any], image_path: ImagePath, out: Path) -> None:
    """Every image of one configuration, captioned with seed, match and objective."""
    from PIL import Image, ImageDraw

    cells = list(config["cells"])
    columns = min(len(cells), 6) or 1
    rows = (len(cells) + columns - 1) // columns or 1
    caption = 30
    sheet = Image.new("RGB", (columns * THUMB, rows * (THUMB + caption)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, cell in enumerate(cells):
        x, y = (i % columns) * THUMB, (i // columns) * (THUMB + caption)
        thumb = thumbnail(cell.get("image_sha"), image_path, THUMB)
        if thumb is not None:
            sheet.paste(thumb, (x + (THUMB - thumb.width) // 2, y + (THUMB - thumb.height) // 2))
        else:
            draw.rectangle([x + 4, y + 4, x + THUMB - 4, y + THUMB - 4], outline="red", width=2)
            draw.text((x + 12, y + THUMB // 2), "no image", fill="red")
        match = cell.get("match")
        draw.text((x + 4, y + THUMB + 2), f"seed {cell['seed']}", fill="black")
        draw.text(
            (x + 4, y + THUMB + 15),
            f"match {'-' if match is None else f'{match:.1f}'}  obj {cell['objective']:.2f}",
            fill="black",
        )
    sheet.save(out, format="PNG")


# -- page -----------------------------------------------------------------------------------
def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: right; }
th { background: #f2f2f2; }
td.label { text-align: left; font-family: monospace; }
tr.best td { background: #e8f6e8; }
figure { display: inline-block; margin: 0.5rem; vertical-align: top; }
figcaption { font-size: 0.9rem; color: #555; }
.note { color: #555; }
"""


def _page(
    sweep: Mapping[str, Any],
    configs: Sequence[Mapping[str, Any]],
    heatmaps: Sequence[tuple[str, str, str]],
    lines: Sequence[tuple[str, str]],
    sheets: Mapping[str, str],
) -> str:
    e = html.escape
    objective = sweep["objective"]
    rows = []
    for c in configs:
        rows.append(
            f"<tr class='{'best' if c['rank'] == 1 else ''}'><td>{c['rank']}</td>"
            f"<td class='label'>{e(c['label'])}</td><td>{_fmt(c['objective'])}</td>"
            f"<td>{_fmt(c['objective_std'])}</td><td>{_fmt(c['mean_match'])}</td>"
            f"<td>{_fmt(c['pass_rate'])}</td><td>{_fmt(c['mean_grain'])}</td>"
            f"<td>{_fmt(c['mean_plastic'])}</td><td>{c['images']}</td><td>{c['failed']}</td></tr>"
        )
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Sweep: {e(sweep['name'])}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Sweep: {e(sweep['name'])}</h1>",
        f"<p class='note'>{sweep['finished']} of {sweep['total']} images finished; "
        f"seeds {e(', '.join(str(s) for s in sweep['seeds']))}; "
        f"{len(sweep['prompts'])} prompt(s). Objective (higher is better, mean over seeds and "
        f"prompts): <code>{e(objective['formula'])}</code>.</p>",
        "<h2>Ranking</h2><table><tr><th>rank</th><th>configuration</th><th>objective</th>"
        "<th>± std</th><th>mean match</th><th>pass rate</th><th>grain</th><th>plastic</th>"
        "<th>images</th><th>failed</th></tr>",
        *rows,
        "</table>",
    ]
    if heatmaps:
        parts.append("<h2>Heat maps</h2>")
        for a, b, name in heatmaps:
            parts.append(
                f"<figure><img src='assets/{name}' alt='objective over {e(a)} and {e(b)}'>"
                f"<figcaption>{e(a)} x {e(b)} (mean over other axes)</figcaption></figure>"
            )
    if lines:
        parts.append("<h2>Axes</h2>")
        for axis, name in lines:
            parts.append(
                f"<figure><img src='assets/{name}' alt='objective and match by {e(axis)}'>"
                f"<figcaption>{e(axis)}: mean, and min-max over seeds</figcaption></figure>"
            )
    parts.append("<h2>Contact sheets</h2>")
    for c in configs:
        parts.append(
            f"<figure><figcaption>#{c['rank']} {e(c['label'])}</figcaption>"
            f"<img src='assets/{sheets[c['config_key']]}' alt='images of {e(c['label'])}'>"
            "</figure>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)
