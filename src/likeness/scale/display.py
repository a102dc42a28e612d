"""The workers of a pool as a rich table: where each works, its current task, how many images
it made and at what rate. Rendering only; the commands show it under their progress bar."""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.markup import escape
from rich.table import Table

from likeness.scale.pool import WorkerStats

STATE_STYLE = {
    "starting": "dim",
    "idle": "yellow",
    "busy": "cyan",
    "left out": "red",
    "lost": "red",
    "closed": "dim",
}


def worker_table(stats: Sequence[WorkerStats], now: float | None = None) -> Table:
    """One row per worker: name, where, state, current task, images done, images/minute."""
    now = time.monotonic() if now is None else now
    table = Table(box=None, pad_edge=False, show_edge=False)
    for name, justify in (("worker", "left"), ("where", "left"), ("state", "left"),
                          ("task", "left"), ("images", "right"), ("/min", "right")):  # fmt: skip
        table.add_column(name, justify=justify, style="dim" if name == "where" else None)  # type: ignore[arg-type]
    for s in stats:
        rate = s.per_minute(now)
        task = s.current if s.state == "busy" else s.note
        table.add_row(
            s.name,
            escape(s.where),
            f"[{STATE_STYLE.get(s.state, '')}]{s.state}[/]",
            escape(task[:60]),
            str(s.done),
            "-" if rate is None else f"{rate:.1f}",
        )
    return table
