"""Coverage: how many images of a selection fall in each cell of the model card's angle x
expression grid, and which cells are empty or thin.

The grid is the card's portrait shots (the shipped card: 5 head angles x 4 expressions). An
image lands in a cell by its measured head-angle bucket and expression (the `angle` and
`expression` of its score, docs/metrics.md). An image with no face, or with an expression the
card does not ask for (`other`, `unsure`, ...), is counted off the grid, with the reason.

A cell holding fewer than :data:`THIN_BELOW` images is *thin*; one holding none is *empty*.
Three is the smallest count at which one bad image in a cell (a borderline angle, a blink)
still leaves the LoRA two clean examples of that view.

Example::

    chosen = choose_images(ws, dataset="mara@v2")
    coverage = count_coverage(score_chosen(ws, chosen.shas), card_grid())
    coverage.cell("half_left", "neutral").state     # "empty", "thin" or "ok"
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from likeness.evaluate.card_spec import CardSpec, load_card_spec

if TYPE_CHECKING:
    from likeness.metrics import Instruments
    from likeness.workspace import Workspace

THIN_BELOW = 3
"""A cell with fewer images than this is thin (documented in docs/enrich.md)."""

CARD_ANGLES = ("front", "half_left", "profile_left", "half_right", "profile_right")
"""The angle buckets in the card's order (likeness.metrics.angle.ANGLES)."""
ANGLE_ORDER = ("profile_right", "half_right", "front", "half_left", "profile_left")
"""The five buckets in order of yaw, so that the distance between two angles is a number of
45-degree steps."""


class CoverageError(ValueError):
    """The images to count could not be chosen (unknown dataset, unknown origin, nothing)."""


@dataclass(frozen=True)
class Grid:
    """The cells of the card's portraits: (angle, expression) pairs in card order."""

    angles: tuple[str, ...]
    expressions: tuple[str, ...]
    cells: tuple[tuple[str, str], ...]

    def __contains__(self, cell: object) -> bool:
        return cell in self.cells


def card_grid(spec: CardSpec | None = None) -> Grid:
    """The angle x expression grid of a card spec (default: the shipped 23-shot card)."""
    spec = spec or load_card_spec()
    cells: list[tuple[str, str]] = []
    for shot in spec.shots:
        cell = (shot.angle, shot.expression)
        if shot.kind == "portrait" and shot.angle and shot.expression and cell not in cells:
            cells.append(cell)  # type: ignore[arg-type]
    angles = tuple(a for a in CARD_ANGLES if any(c[0] == a for c in cells))
    expressions = tuple(dict.fromkeys(c[1] for c in cells))
    return Grid(angles, expressions, tuple(cells))


def angle_steps(a: str, b: str) -> int:
    """How many 45-degree steps apart two angle buckets are (front -> profile_left: 2)."""
    return abs(ANGLE_ORDER.index(a) - ANGLE_ORDER.index(b))


@dataclass(frozen=True)
class CoverageCell:
    angle: str
    expression: str
    images: tuple[str, ...]
    state: str
    """`empty` (no image), `thin` (fewer than thin_below) or `ok`."""

    @property
    def count(self) -> int:
        return len(self.images)

    def to_json(self) -> dict[str, Any]:
        return {
            "angle": self.angle,
            "expression": self.expression,
            "count": self.count,
            "state": self.state,
            "images": list(self.images),
        }


@dataclass(frozen=True)
class Placement:
    """Where one image was counted: its cell, or None with the reason it is off the grid."""

    sha256: str
    angle: str | None
    expression: str | None
    cell: tuple[str, str] | None
    reason: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "angle": self.angle,
            "expression": self.expression,
            "cell": list(self.cell) if self.cell else None,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Coverage:
    grid: Grid
    thin_below: int
    cells: tuple[CoverageCell, ...]
    placements: tuple[Placement, ...]

    def cell(self, angle: str, expression: str) -> CoverageCell:
        for cell in self.cells:
            if (cell.angle, cell.expression) == (angle, expression):
                return cell
        raise KeyError((angle, expression))

    @property
    def empty(self) -> tuple[CoverageCell, ...]:
        return tuple(c for c in self.cells if c.state == "empty")

    @property
    def thin(self) -> tuple[CoverageCell, ...]:
        return tuple(c for c in self.cells if c.state == "thin")

    @property
    def off_grid(self) -> dict[str, int]:
        """Reason -> how many images are off the grid for it."""
        counts: dict[str, int] = {}
        for p in self.placements:
            if p.reason:
                counts[p.reason] = counts.get(p.reason, 0) + 1
        return counts

    def to_json(self) -> dict[str, Any]:
        """The `likeness dataset coverage --json` shape (without the selection keys)."""
        return {
            "thin_below": self.thin_below,
            "angles": list(self.grid.angles),
            "expressions": list(self.grid.expressions),
            "images": len(self.placements),
            "counted": sum(p.cell is not None for p in self.placements),
            "empty": len(self.empty),
            "thin": len(self.thin),
            "cells": [c.to_json() for c in self.cells],
            "off_grid": self.off_grid,
            "placements": [p.to_json() for p in self.placements],
        }


def place(score: Mapping[str, Any], grid: Grid) -> Placement:
    """The cell of one scored image (a score dict as `likeness score --json` prints it)."""
    sha = str(score.get("sha256") or "")
    angle, expression = score.get("angle"), score.get("expression")
    if score.get("error"):
        reason = "unreadable"
    elif not score.get("faces") or angle is None:
        reason = "no face"
    elif angle not in grid.angles:
        reason = f"angle {angle}"
    elif expression not in grid.expressions:
        reason = f"expression {expression or 'none'}"
    elif (angle, expression) not in grid:
        reason = f"{angle}/{expression} is not a card shot"
    else:
        return Placement(sha, angle, expression, (angle, expression), None)
    return Placement(sha, angle, expression, None, reason)


def count_coverage(
    scores: Iterable[Mapping[str, Any]], grid: Grid, thin_below: int = THIN_BELOW
) -> Coverage:
    """Count scored images into the grid; an image counted twice (same sha256) counts once."""
    if thin_below < 1:
        raise CoverageError(f"thin_below: {thin_below} must be at least 1")
    seen: set[str] = set()
    placements: list[Placement] = []
    for score in scores:
        sha = str(score.get("sha256") or "")
        if sha in seen:
            continue
        seen.add(sha)
        placements.append(place(score, grid))
    cells = []
    for angle, expression in grid.cells:
        images = tuple(p.sha256 for p in placements if p.cell == (angle, expression))
        state = "empty" if not images else "thin" if len(images) < thin_below else "ok"
        cells.append(CoverageCell(angle, expression, images, state))
    return Coverage(grid, thin_below, tuple(cells), tuple(placements))


# -- choosing and scoring the images ------------------------------------------------------
@dataclass(frozen=True)
class ImageChoice:
    """The images a command counts: a dataset version's, or those of some origins."""

    label: str
    """`mara@v2`, or `origin source` (what the user asked for, for display)."""
    dataset: str | None
    origins: tuple[str, ...]
    shas: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "dataset": self.dataset, "origins": list(self.origins)}


def choose_images(
    ws: Workspace, *, dataset: str | None = None, origins: Sequence[str] = ()
) -> ImageChoice:
    """A dataset version's images (`NAME` or `NAME@vN`), or the stored images of ``origins``
    (excluded duplicates left out); with neither, every stored image."""
    from likeness.store.datasets import DatasetError, resolve
    from likeness.store.images import ORIGINS, list_images

    if dataset and origins:
        raise CoverageError("pass a dataset or --origin, not both")
    if dataset:
        try:
            version = resolve(ws.db, dataset)
        except DatasetError as exc:
            raise CoverageError(str(exc)) from None
        shas = tuple(item.image_sha for item in version.items)
        return ImageChoice(version.ref, version.ref, (), shas)
    for origin in origins:
        if origin not in ORIGINS:
            raise CoverageError(f"origin {origin!r} is not one of {', '.join(ORIGINS)}")
    records = list_images(ws.db, origins=list(origins) or None)
    label = f"origin {', '.join(origins)}" if origins else "all images"
    return ImageChoice(label, None, tuple(origins), tuple(r.sha256 for r in records))


def score_chosen(
    ws: Workspace,
    shas: Sequence[str],
    *,
    instruments: Instruments | None = None,
    workers: int | None = None,
) -> list[dict[str, Any]]:
    """Score dicts of stored images against the workspace's source photos (identity is left
    out when there are none), through the workspace's analysis cache."""
    from likeness.evaluate.scorer import reference_paths
    from likeness.metrics import score_images

    if not shas:
        return []
    run = score_images(
        [ws.blobs.path(sha) for sha in shas],
        reference_paths(ws),
        instruments=instruments,
        conn=ws.db,
        workers=workers,
    )
    return [s.to_json() for s in run.scores]
