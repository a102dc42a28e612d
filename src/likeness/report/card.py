"""The model card rendered: the grid image with pass/fail marks, an HTML page, comparisons.

Rendering only: it takes a card as plain data (the `likeness card --json` shape) and a
function that finds an image file by sha256::

    write_card_grid(card, "card.png", image_path=ws.blobs.path)
    write_card_report(card, "card-report/", image_path=ws.blobs.path)
    write_compare_report(comparison, "compare/")   # `likeness card compare --json` shape

In the grid, portraits sit at (row = expression, column = head angle) and body shots on the
last row. Each tile shows the first-try image (the card's headline number is first-try
success) with a green tick when it passed first time, an amber tick when a later attempt
passed, a red cross when none did, and the first failing reasons.
"""

from __future__ import annotations

import html
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

ImagePath = Callable[[str], Path]
TILE = 200
CAPTION = 64
GREEN, AMBER, RED = (34, 139, 34), (230, 145, 0), (200, 30, 30)
ANGLE_ORDER = ("front", "half_left", "profile_left", "half_right", "profile_right")


def grid_layout(shots: Sequence[Mapping[str, Any]]) -> tuple[int, int, list[tuple[int, int]]]:
    """(columns, rows, [(column, row) per shot]): angle x expression for portraits that name
    both, everything else in order on the rows below."""
    portraits = [
        s for s in shots if s["kind"] == "portrait" and s["expects"].get("angle")
        and s["expects"].get("expression")
    ]  # fmt: skip
    angles = [a for a in ANGLE_ORDER if any(s["expects"]["angle"] == a for s in portraits)]
    expressions: list[str] = []
    for s in portraits:
        if s["expects"]["expression"] not in expressions:
            expressions.append(s["expects"]["expression"])
    columns = max(len(angles), 3)
    taken: set[tuple[int, int]] = set()
    places: list[tuple[int, int] | None] = []
    for s in shots:
        if s in portraits:
            place = (
                angles.index(s["expects"]["angle"]),
                expressions.index(s["expects"]["expression"]),
            )
            if place not in taken:
                taken.add(place)
                places.append(place)
                continue
        places.append(None)
    row, column = len(expressions), 0
    final: list[tuple[int, int]] = []
    for place in places:
        if place is None:
            place = (column, row)
            column += 1
            if column == columns:
                column, row = 0, row + 1
        final.append(place)
    rows = max((p[1] for p in final), default=0) + 1
    return columns, rows, final


def write_card_grid(card: Mapping[str, Any], out: str | Path, *, image_path: ImagePath) -> Path:
    """The grid PNG of a card (see the module doc)."""
    from PIL import Image, ImageDraw, ImageFont

    shots = list(card["per_shot"])
    columns, rows, places = grid_layout(shots)
    header = 40
    width, height = columns * TILE, header + rows * (TILE + CAPTION)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=12)
    big = ImageFont.load_default(size=16)
    draw.text(
        (8, 10),
        f"{card['label']}: first try {card['first_try_passed']}/{card['shots']} "
        f"({card['first_try_rate']:.0%}, goal {card['goal']:.0%}), within {card['tries']} "
        f"tries {card['within_tries_passed']}/{card['shots']}",
        fill="black",
        font=big,
    )
    for shot, (column, row) in zip(shots, places, strict=True):
        x, y = column * TILE, header + row * (TILE + CAPTION)
        first = shot["attempts"][0] if shot["attempts"] else None
        thumb = thumbnail(first.get("image_sha") if first else None, image_path, TILE - 8)
        if thumb is not None:
            sheet.paste(thumb, (x + (TILE - thumb.width) // 2, y + (TILE - thumb.height) // 2))
        if shot["first_try"]:
            colour, status = GREEN, "PASS"
        elif shot["passed"]:
            colour, status = AMBER, f"PASS on try {shot['passed_on']}"
        else:
            colour, status = RED, "FAIL" if shot["attempts"] else "NOT RUN"
        draw.rectangle([x + 1, y + 1, x + TILE - 2, y + TILE - 2], outline=colour, width=4)
        _mark(draw, x + TILE - 30, y + 6, colour, passed=shot["passed"])
        draw.text((x + 6, y + TILE + 2), f"{shot['id']}  {status}", fill=colour, font=font)
        reasons = first["reasons"] if first else []
        text = "; ".join(reasons) if reasons else ""
        lines = textwrap.wrap(text, width=32)
        if len(lines) > 3:
            lines = [*lines[:2], lines[2][:28] + " ..."]
        for i, line in enumerate(lines):
            draw.text((x + 6, y + TILE + 17 + 14 * i), line, fill="black", font=font)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, format="PNG")
    return out


def _mark(draw: Any, x: int, y: int, colour: tuple[int, int, int], *, passed: bool) -> None:
    """A tick or a cross in a white disc, 24 px."""
    draw.ellipse([x, y, x + 24, y + 24], fill="white", outline=colour, width=2)
    if passed:
        draw.line([(x + 6, y + 13), (x + 10, y + 18), (x + 18, y + 7)], fill=colour, width=3)
    else:
        draw.line([(x + 7, y + 7), (x + 17, y + 17)], fill=colour, width=3)
        draw.line([(x + 17, y + 7), (x + 7, y + 17)], fill=colour, width=3)


def thumbnail(sha: str | None, image_path: ImagePath, size: int) -> Image.Image | None:
    """The stored image ``sha`` shrunk to fit ``size`` px, or None when absent or unreadable
    (a report still renders when a blob went missing)."""
    if not sha:
        return None
    from likeness.imaging import ImageRejected, open_image

    try:
        img = open_image(image_path(sha)).image
    except (ImageRejected, OSError, KeyError):
        return None
    img.thumbnail((size, size))
    return img


# -- HTML -----------------------------------------------------------------------------------
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
.pass { color: #228b22; font-weight: bold; }
.retry { color: #e69100; font-weight: bold; }
.fail { color: #c81e1e; font-weight: bold; }
img.thumb { width: 96px; height: 96px; object-fit: contain; background: #eee; }
.headline { font-size: 1.3rem; }
"""


def write_card_report(
    card: Mapping[str, Any], folder: str | Path, *, image_path: ImagePath
) -> Path:
    """index.html + grid.png + one thumbnail per attempt; returns the index path."""
    folder = Path(folder)
    thumbs = folder / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    write_card_grid(card, folder / "grid.png", image_path=image_path)
    e = html.escape
    rows = []
    for index, shot in enumerate(card["per_shot"]):
        cls, status = _status(shot)
        attempts = []
        for a in shot["attempts"]:
            src = ""
            thumb = thumbnail(a.get("image_sha"), image_path, 192)
            if thumb is not None:
                # Shot ids come from the spec: numbered names stay inside thumbs/.
                name = f"shot{index:02d}_try{a['attempt']}.png"
                thumb.save(thumbs / name, format="PNG")
                src = f"<img class='thumb' src='thumbs/{name}' alt='{e(shot['id'])} try {a['attempt']}'>"
            verdict = "pass" if a["passed"] else "; ".join(a["reasons"])
            attempts.append(
                f"<div>{src}<br>try {a['attempt']}: match {_fmt(a.get('match'))}, "
                f"{e(str(a.get('angle')))}, {e(str(a.get('expression')))}, "
                f"{e(str(a.get('body_pose')))}<br>{e(verdict)}</div>"
            )
        expects = ", ".join(f"{k} {v}" for k, v in shot["expects"].items() if v)
        rows.append(
            f"<tr><td>{e(shot['id'])}</td><td>{e(expects)}</td><td class='{cls}'>{e(status)}</td>"
            f"<td>{''.join(attempts)}</td></tr>"
        )
    verdict = "meets" if card["meets_goal"] else "misses"
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Model card {e(card["label"])}</title><style>{_STYLE}</style></head><body>
<h1>Model card {e(card["label"])}</h1>
<p class="headline">First try: <b>{card["first_try_passed"]}/{card["shots"]}
({card["first_try_rate"]:.0%})</b>, {verdict} the goal of {card["goal"]:.0%}.
Within {card["tries"]} tries: {card["within_tries_passed"]}/{card["shots"]}
({card["within_tries_rate"]:.0%}). Mean match (first tries): {_fmt(card.get("mean_match"))}.</p>
<p>Recipe {e(card["recipe_hash"][:16])}, model {e(str(card.get("model_sha256") or "unknown")[:16])},
spec {e(card["spec"])}; identity passes at match &ge; {card["pass_match"]:g}.</p>
<img src="grid.png" alt="card grid: pass and fail per shot" style="max-width:100%">
<h2>Shots</h2>
<table><tr><th>shot</th><th>expects</th><th>result</th><th>attempts</th></tr>
{"".join(rows)}
</table></body></html>"""
    index = folder / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def write_compare_plot(comparison: Mapping[str, Any], out: str | Path) -> Path:
    """Bars of first-try success (with the goal line) and mean match per label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cards = comparison["cards"]
    labels = [c["label"] for c in cards]
    x = list(range(len(labels)))
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(6, 1.4 * len(labels) + 4), 3.6))
    left.bar(x, [100 * c["first_try_rate"] for c in cards], color="tab:green", label="first try")
    left.plot(x, [100 * c["within_tries_rate"] for c in cards], "o--", color="tab:orange",
              label="within tries")  # fmt: skip
    if cards:
        left.axhline(100 * cards[0]["goal"], color="red", linestyle=":", label="goal")
    left.set_ylim(0, 105)
    left.set_ylabel("% of shots passed")
    left.set_xticks(x, labels)
    left.legend(fontsize=8, loc="upper left")
    left.set_title("success")
    right.bar(x, [c["mean_match"] or 0.0 for c in cards], color="tab:blue")
    right.set_ylim(0, 10)
    right.set_ylabel("mean match (0-10)")
    right.set_xticks(x, labels)
    right.set_title("identity")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def write_compare_report(comparison: Mapping[str, Any], folder: str | Path) -> Path:
    """index.html with the comparison plot and a shot-by-label table."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_compare_plot(comparison, folder / "compare.png")
    e = html.escape
    cards = comparison["cards"]
    head = "".join(f"<th>{e(c['label'])}</th>" for c in cards)
    summary = [
        "<tr><td>first try</td>"
        + "".join(
            f"<td>{c['first_try_passed']}/{c['shots']} ({c['first_try_rate']:.0%})</td>"
            for c in cards
        )
        + "</tr>",
        "<tr><td>within tries</td>"
        + "".join(f"<td>{c['within_tries_passed']}/{c['shots']}</td>" for c in cards)
        + "</tr>",
        "<tr><td>mean match</td>"
        + "".join(f"<td>{_fmt(c['mean_match'])}</td>" for c in cards)
        + "</tr>",
        "<tr><td>recipe</td>"
        + "".join(f"<td>{e(c['recipe_hash'][:12])}</td>" for c in cards)
        + "</tr>",
    ]
    marks = {"first_try": ("pass", "pass"), "retry": ("retry", "retry"),
             "failed": ("fail", "fail"), "missing": ("", "-")}  # fmt: skip
    shots = [
        f"<tr><td>{e(s['id'])}</td>"
        + "".join(
            f"<td class='{marks[s['results'][c['label']]][0]}'>{marks[s['results'][c['label']]][1]}</td>"
            for c in cards
        )
        + "</tr>"
        for s in comparison["shots"]
    ]
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Model cards compared</title><style>{_STYLE}</style></head><body>
<h1>Model cards compared</h1>
<img src="compare.png" alt="first-try success and mean match per card" style="max-width:100%">
<table><tr><th></th>{head}</tr>{"".join(summary)}</table>
<h2>Shots</h2><table><tr><th>shot</th>{head}</tr>{"".join(shots)}</table>
</body></html>"""
    index = folder / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def _status(shot: Mapping[str, Any]) -> tuple[str, str]:
    if shot["first_try"]:
        return "pass", "pass (first try)"
    if shot["passed"]:
        return "retry", f"pass on try {shot['passed_on']}"
    return "fail", "fail" if shot["attempts"] else "not run"


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{float(value):.2f}"
