"""Histograms of one metric, candidates and references drawn apart (matplotlib, Agg)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes

NUMERIC_BINS = 20


def histogram_png(
    path: Path,
    title: str,
    values: Sequence[object],
    reference_values: Sequence[object] = (),
    threshold: float | None = None,
) -> Path:
    """A histogram (numbers) or bar chart (labels) saved as a PNG; returns `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 2.6), dpi=100)
    try:
        _draw(ax, title, values, reference_values, threshold)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)  # pyplot keeps every open figure alive until closed
    return path


def _draw(
    ax: Axes,
    title: str,
    values: Sequence[object],
    reference_values: Sequence[object],
    threshold: float | None,
) -> None:
    numbers = [v for v in values if _is_number(v)]
    ref_numbers = [v for v in reference_values if _is_number(v)]
    labels = [str(v) for v in values if isinstance(v, str)]
    ref_labels = [str(v) for v in reference_values if isinstance(v, str)]
    if labels or ref_labels:
        counts, ref_counts = Counter(labels), Counter(ref_labels)
        keys = sorted(set(counts) | set(ref_counts))
        xs = range(len(keys))
        ax.bar(xs, [counts[k] for k in keys], color="#4a7bd0", label="candidates")
        ax.bar(xs, [ref_counts[k] for k in keys], bottom=[counts[k] for k in keys],
               color="#e0a030", label="references")  # fmt: skip
        ax.set_xticks(list(xs), keys, rotation=30, ha="right", fontsize=7)
    elif numbers or ref_numbers:
        everything = [float(v) for v in [*numbers, *ref_numbers]]
        low, high = min(everything), max(everything)
        if low == high:
            low, high = low - 0.5, high + 0.5
        ax.hist([[float(v) for v in numbers], [float(v) for v in ref_numbers]],
                bins=NUMERIC_BINS, range=(low, high), stacked=True,
                color=["#4a7bd0", "#e0a030"], label=["candidates", "references"])  # fmt: skip
        if threshold is not None and low <= threshold <= high:
            ax.axvline(threshold, color="#c03030", linestyle="--", linewidth=1, label="threshold")
    else:
        ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    if numbers or labels or ref_numbers or ref_labels:
        ax.legend(fontsize=6, frameon=False)


def _is_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )
