"""Enrichment rendered: a before/after contact sheet with each edit's verdict, and an HTML page.

Rendering only: it takes a run as plain data (the `likeness enrich --json` shape) and a
function that finds an image file by sha256 (rejected edits are blobs without an image row,
and are shown too)::

    write_enrich_report(data, "enrich-report/", image_path=ws.blobs.path)
"""

from __future__ import annotations

import html
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from likeness.report.card import GREEN, RED, ImagePath, thumbnail

GREY = (120, 120, 120)
THUMB = 160
PAIRS_PER_ROW = 3
CAPTION = 58


def write_enrich_sheet(data: Mapping[str, Any], out: str | Path, *, image_path: ImagePath) -> Path:
    """One tile per edit: the source (before) beside the edit (after), framed green when kept,
    red when rejected, grey when the engine failed, with the cell and the first reasons."""
    from PIL import Image, ImageDraw, ImageFont

    edits = list(data["edits"])
    tile_w, tile_h = 2 * THUMB + 12, THUMB + CAPTION
    columns = max(1, min(PAIRS_PER_ROW, len(edits)))
    rows = max(1, (len(edits) + columns - 1) // columns)
    header = 36
    sheet = Image.new("RGB", (columns * tile_w, header + rows * tile_h), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=12)
    draw.text(
        (8, 10),
        f"enrichment (job {data['job']}): {data['kept']} kept, {data['rejected']} rejected, "
        f"{data['failed']} failed of {len(edits)}",
        fill="black",
        font=ImageFont.load_default(size=16),
    )
    for i, edit in enumerate(edits):
        x, y = (i % columns) * tile_w, header + (i // columns) * tile_h
        colour = {"kept": GREEN, "rejected": RED}.get(edit["verdict"], GREY)
        for j, sha in enumerate((edit["source"], edit.get("result_sha"))):
            left = x + 4 + j * (THUMB + 4)
            thumb = thumbnail(sha, image_path, THUMB - 8)
            if thumb is not None:
                sheet.paste(
                    thumb, (left + (THUMB - thumb.width) // 2, y + (THUMB - thumb.height) // 2)
                )
            else:
                draw.text((left + 12, y + THUMB // 2), "no image", fill=GREY, font=font)
        draw.rectangle([x + 2, y + 1, x + tile_w - 3, y + THUMB - 1], outline=colour, width=3)
        draw.text((x + 6, y + THUMB + 2), f"before | after  {edit['verdict'].upper()}",
                  fill=colour, font=font)  # fmt: skip
        lines = [f"asked {_cell(edit)}", *textwrap.wrap("; ".join(edit["reasons"]), 50)]
        for k, line in enumerate(lines[:3]):
            draw.text((x + 6, y + THUMB + 16 + 13 * k), line, fill="black", font=font)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, format="PNG")
    return out


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
.kept { color: #228b22; font-weight: bold; }
.rejected { color: #c81e1e; font-weight: bold; }
.failed { color: #777; font-weight: bold; }
img.thumb { width: 128px; height: 128px; object-fit: contain; background: #eee; }
"""


def write_enrich_report(
    data: Mapping[str, Any], folder: str | Path, *, image_path: ImagePath
) -> Path:
    """index.html + sheet.png + a before and an after thumbnail per edit; returns the index."""
    folder = Path(folder)
    thumbs = folder / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    write_enrich_sheet(data, folder / "sheet.png", image_path=image_path)
    e = html.escape
    rows = []
    for i, edit in enumerate(data["edits"]):
        cells = []
        for side, sha in (("before", edit["source"]), ("after", edit.get("result_sha"))):
            thumb = thumbnail(sha, image_path, 256)
            if thumb is None:
                cells.append("<td>no image</td>")
                continue
            name = f"edit{i:03d}_{side}.png"
            thumb.save(thumbs / name, format="PNG")
            cells.append(f"<td><img class='thumb' src='thumbs/{name}' alt='{side}'></td>")
        verdict = edit["verdict"]
        measured = (
            f"{edit.get('measured_angle') or '-'} (yaw {_num(edit.get('yaw'), 0)}), "
            f"{edit.get('measured_expression') or '-'}, match {_num(edit.get('match'), 1)}"
        )
        rows.append(
            f"<tr>{''.join(cells)}<td>{e(_cell(edit))}<br><small>{e(edit['instruction'])}"
            f"</small></td><td class='{e(verdict)}'>{e(verdict)}</td>"
            f"<td>{e('; '.join(edit['reasons']) or 'passes')}<br><small>{e(measured)}</small>"
            "</td></tr>"
        )
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Enrichment, job {data["job"]}</title><style>{_STYLE}</style></head><body>
<h1>Enrichment, job {data["job"]}</h1>
<p>{data["kept"]} kept, {data["rejected"]} rejected, {data["failed"]} failed of
{data["edits_planned"]} planned edits; model {e(str(data["recipe"]["model"]))},
seed {data["recipe"]["seed"]}.</p>
<img src="sheet.png" alt="before and after of every edit, with its verdict" style="max-width:100%">
<table><tr><th>before</th><th>after</th><th>asked</th><th>verdict</th><th>reasons</th></tr>
{"".join(rows)}
</table></body></html>"""
    index = folder / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def _cell(edit: Mapping[str, Any]) -> str:
    return f"{edit.get('angle') or 'any angle'} / {edit.get('expression') or 'any expression'}"


def _num(value: Any, digits: int) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"
