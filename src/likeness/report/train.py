"""The HTML report of a training run: loss curve, likeness per checkpoint, probe sheets.

Rendering only: it takes the run as plain data (the `likeness train report --json` shape) and
a function that finds an image file by sha256, and writes a self-contained folder::

    write_train_report(data, "train-report/", image_path=ws.blobs.path)
    # train-report/index.html, train-report/assets/*.png

- the loss curve: the training loss at every step (and its running mean), the fixed-batch
  loss at each checkpoint, the learning rate on a second axis;
- likeness per checkpoint: match, identity pass rate, grain and plastic against the step, the
  best checkpoint marked, checkpoints with a memorised probe crossed out;
- a contact sheet per checkpoint: every probe with its shot, seed and match (a memorised one
  framed in red).
"""

from __future__ import annotations

import html
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from likeness.report.card import ImagePath, thumbnail

THUMB = 160
CAPTION = 34
METRICS = (
    ("match", "match (0-10)", "higher is better"),
    ("pass_rate", "identity pass rate", "higher is better"),
    ("grain", "grain (noise sigma, grey levels)", "lower is better"),
    ("plastic", "plastic index (1 = as textured as the photos)", "lower is better"),
)


def write_train_report(
    data: Mapping[str, Any], folder: str | Path, *, image_path: ImagePath
) -> Path:
    """Write the report folder; returns the path of its index.html."""
    folder = Path(folder)
    assets = folder / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    checkpoints = list(data["checkpoints"])
    # 1. Loss curve.
    loss_plot(data["losses"], checkpoints, assets / "loss.png")
    # 2. Likeness per checkpoint.
    judged = [c for c in checkpoints if c.get("metrics")]
    if judged:
        likeness_plot(judged, assets / "likeness.png")
    # 3. Probe sheets.
    sheets = {}
    for checkpoint in checkpoints:
        if checkpoint.get("probes"):
            name = f"probes_step{checkpoint['step']:06d}.png"
            probe_sheet(checkpoint, image_path, assets / name)
            sheets[checkpoint["id"]] = name
    index = folder / "index.html"
    index.write_text(_page(data, checkpoints, bool(judged), sheets), encoding="utf-8")
    return index


# -- plots ------------------------------------------------------------------------------------
# Copied from likeness.report.sweep._pyplot
def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def loss_plot(
    losses: Sequence[Sequence[float]], checkpoints: Sequence[Mapping[str, Any]], out: Path
) -> None:
    """Training loss per step with a running mean, fixed-batch loss per checkpoint, lr."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.6))
    if losses:
        steps = [row[0] for row in losses]
        values = [row[1] for row in losses]
        ax.plot(steps, values, color="tab:blue", alpha=0.3, linewidth=1, label="loss (step)")
        window = max(1, len(values) // 20)
        mean = [
            statistics.fmean(values[max(0, i - window + 1) : i + 1]) for i in range(len(values))
        ]
        ax.plot(steps, mean, color="tab:blue", linewidth=2, label=f"running mean ({window})")
        lr = ax.twinx()
        lr.plot(steps, [row[2] for row in losses], color="tab:grey", linestyle=":", label="lr")
        lr.set_ylabel("learning rate", color="tab:grey")
        lr.tick_params(labelsize=7, colors="tab:grey")
    fixed = [(c["step"], c["fixed_loss"]) for c in checkpoints if c.get("fixed_loss") is not None]
    if fixed:
        ax.plot(*zip(*fixed, strict=True), "o-", color="tab:orange", label="fixed-batch loss")
    for c in checkpoints:
        if c.get("best"):
            ax.axvline(c["step"], color="tab:green", linestyle="--", label="best checkpoint")
    if not losses and not fixed:
        ax.text(0.5, 0.5, "no losses recorded", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title("loss")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def likeness_plot(checkpoints: Sequence[Mapping[str, Any]], out: Path) -> None:
    """Match, pass rate, grain and plastic against the step; best marked, memorised crossed."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 3.4))
    steps = [c["step"] for c in checkpoints]
    for ax, (key, title, direction) in zip(axes, METRICS, strict=True):
        values = [c["metrics"].get(key) for c in checkpoints]
        ax.plot(steps, [float("nan") if v is None else v for v in values], "o-",
                color="tab:blue")  # fmt: skip
        for c, value in zip(checkpoints, values, strict=True):
            if value is None:
                continue
            if c["metrics"].get("memorised"):
                ax.plot([c["step"]], [value], "x", color="tab:red", markersize=12, mew=2,
                        label="memorised probe")  # fmt: skip
            if c.get("best"):
                ax.plot([c["step"]], [value], "*", color="tab:green", markersize=16,
                        label="best")  # fmt: skip
        if all(v is None for v in values):
            ax.text(0.5, 0.5, "not measured\n(no face in the probes)", ha="center",
                    va="center", transform=ax.transAxes)  # fmt: skip
        ax.set_title(f"{title}\n({direction})", fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            unique = dict(zip(labels, handles, strict=True))
            ax.legend(unique.values(), unique.keys(), fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def probe_sheet(checkpoint: Mapping[str, Any], image_path: ImagePath, out: Path) -> None:
    """The probes of one checkpoint, captioned with shot, seed and match."""
    from PIL import Image, ImageDraw

    probes = list(checkpoint["probes"])
    columns = min(len(probes), 8) or 1
    rows = (len(probes) + columns - 1) // columns or 1
    sheet = Image.new("RGB", (columns * THUMB, rows * (THUMB + CAPTION)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, probe in enumerate(probes):
        x, y = (i % columns) * THUMB, (i // columns) * (THUMB + CAPTION)
        thumb = thumbnail(probe.get("image_sha"), image_path, THUMB - 4)
        if thumb is not None and max(thumb.size) < THUMB // 2:  # a tiny probe, drawn larger
            scale = (THUMB - 4) // max(thumb.size)
            thumb = thumb.resize((thumb.width * scale, thumb.height * scale), Image.NEAREST)
        if thumb is not None:
            sheet.paste(thumb, (x + (THUMB - thumb.width) // 2, y + (THUMB - thumb.height) // 2))
        else:
            draw.rectangle([x + 4, y + 4, x + THUMB - 4, y + THUMB - 4], outline="red", width=2)
            draw.text((x + 12, y + THUMB // 2), "no image", fill="red")
        if probe.get("memorised"):
            draw.rectangle([x + 1, y + 1, x + THUMB - 2, y + THUMB - 2], outline="red", width=4)
        match = probe.get("match")
        verdict = "pass" if probe.get("pass") else "fail"
        draw.text((x + 4, y + THUMB + 2), f"{probe['shot']} seed {probe['seed']}", fill="black")
        draw.text(
            (x + 4, y + THUMB + 17),
            f"match {'-' if match is None else f'{match:.1f}'} {verdict}"
            + ("  MEMORISED" if probe.get("memorised") else ""),
            fill="red" if probe.get("memorised") else "black",
        )
    sheet.save(out, format="PNG")


# -- page -------------------------------------------------------------------------------------
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: right; }
th { background: #f2f2f2; }
td.label { text-align: left; font-family: monospace; }
tr.best td { background: #e8f6e8; }
td.memorised { color: #c81e1e; font-weight: bold; }
figure { margin: 0.5rem 0; }
figcaption { font-size: 0.9rem; color: #555; }
.note { color: #555; }
"""


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _page(
    data: Mapping[str, Any],
    checkpoints: Sequence[Mapping[str, Any]],
    judged: bool,
    sheets: Mapping[int, str],
) -> str:
    e = html.escape
    run = data["run"]
    best = data.get("best")
    rows = []
    for c in checkpoints:
        m = c.get("metrics") or {}
        memo = m.get("memorised")
        rows.append(
            f"<tr class='{'best' if c.get('best') else ''}'><td>{c['step']}</td>"
            f"<td>{_fmt(c.get('loss'), 4)}</td><td>{_fmt(c.get('fixed_loss'), 4)}</td>"
            f"<td>{_fmt(m.get('match'))}</td><td>{_fmt(m.get('pass_rate'))}</td>"
            f"<td>{_fmt(m.get('grain'))}</td><td>{_fmt(m.get('plastic'))}</td>"
            f"<td>{_fmt(m.get('objective'))}</td>"
            f"<td class='{'memorised' if memo else ''}'>{_fmt(memo)}</td>"
            f"<td>{'best' if c.get('best') else ''}</td>"
            f"<td class='label'>{e(Path(c['path']).name)}</td></tr>"
        )
    if best:
        m = best.get("metrics") or {}
        headline = (
            f"<p><b>Best checkpoint: step {best['step']}</b> ({e(Path(best['path']).name)}): "
            f"match {_fmt(m.get('match'))}, pass rate {_fmt(m.get('pass_rate'))}, grain "
            f"{_fmt(m.get('grain'))}, plastic {_fmt(m.get('plastic'))}.</p>"
        )
    else:
        headline = "<p class='note'>No checkpoint is judged: [judge] is off or found nothing.</p>"
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Training run {run['id']}: {e(run['name'])}</title><style>{_STYLE}</style>",
        "</head><body>",
        f"<h1>Training run {run['id']}: {e(run['name'])}</h1>",
        f"<p class='note'>{e(run['family'])} on {e(str(run['base_model']))}, dataset "
        f"{e(run['dataset'])}; {run['step']} of {run['total_steps']} steps, {e(run['state'])}."
        "</p>",
        headline,
        "<h2>Loss</h2><figure><img src='assets/loss.png' alt='loss curve'>"
        "<figcaption>training loss per step, fixed-batch loss per checkpoint, learning rate"
        "</figcaption></figure>",
    ]
    if judged:
        parts.append(
            "<h2>Likeness per checkpoint</h2><figure><img src='assets/likeness.png' "
            "alt='match, pass rate, grain and plastic per checkpoint'><figcaption>probes scored "
            "against the dataset's source photos; star: best by the objective "
            f"<code>{e(data.get('objective') or '')}</code>; cross: a memorised probe"
            "</figcaption></figure>"
        )
    parts += [
        "<h2>Checkpoints</h2><table><tr><th>step</th><th>loss</th><th>fixed loss</th>"
        "<th>match</th><th>pass rate</th><th>grain</th><th>plastic</th><th>objective</th>"
        "<th>memorised</th><th></th><th>file</th></tr>",
        *rows,
        "</table>",
    ]
    if sheets:
        parts.append("<h2>Probes</h2>")
        for c in checkpoints:
            if c["id"] in sheets:
                parts.append(
                    f"<figure><figcaption>step {c['step']}{' (best)' if c.get('best') else ''}"
                    f"</figcaption><img src='assets/{sheets[c['id']]}' "
                    f"alt='probes of step {c['step']}'></figure>"
                )
    parts.append("</body></html>")
    return "\n".join(parts)
