"""The enrichment plan: which source photo is edited toward which cell of the card's grid,
with which instruction.

The automatic plan comes from coverage (:mod:`likeness.evaluate.coverage`): each empty or thin
cell asks for as many edits as it lacks to reach ``thin_below`` images. The asks are dealt in
rounds: every empty cell gets its first edit before any cell gets a second, and thin cells
come after empty ones in each round (ties in card order). Each edit takes the source best
suited to it:

1. usable at all: a face, identity passing, an angle bucket, not `multiple_faces` or
   `face_too_small`, and not already in the cell (an edit that changes nothing adds nothing);
2. fewest changes: 45-degree steps of head turn plus one if the expression changes (a frontal
   neutral photo is one step from every half turn and every expression);
3. then no quality flag, then sharper, then better identity match.

A source gives at most ``per_source`` edits per plan (``-n``): an edit of an edit compounds
drift, so enriched images are never sources.

Instructions are written per cell from :data:`ANGLE_INSTRUCTIONS` and
:data:`EXPRESSION_INSTRUCTIONS` plus :data:`KEEP_IDENTITY`; `likeness enrich plan --out
plan.toml` writes the plan as TOML to edit (see :meth:`Plan.to_toml`) and `likeness enrich
--plan plan.toml` runs it.

Example::

    plan = auto_plan(coverage, source_scores, per_source=5)
    Path("plan.toml").write_text(plan.to_toml())
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import tomllib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from likeness.evaluate.coverage import ANGLE_ORDER, Coverage, CoverageCell, angle_steps

PLAN_SCHEMA = 1
PER_SOURCE = 5
UNUSABLE_FLAGS = ("multiple_faces", "face_too_small")
"""A source with one of these flags is never edited: the edit model would not know which face
to turn, or has too few pixels of it."""

ANGLE_INSTRUCTIONS = {
    "front": "turn the head to face the camera, looking straight into the lens",
    "half_left": "turn the head about 45 degrees toward the left side of the picture, a "
    "three-quarter view with the nose pointing to the left edge of the frame",
    "profile_left": "turn the head 90 degrees toward the left side of the picture, a full side "
    "profile with the nose pointing to the left edge of the frame",
    "half_right": "turn the head about 45 degrees toward the right side of the picture, a "
    "three-quarter view with the nose pointing to the right edge of the frame",
    "profile_right": "turn the head 90 degrees toward the right side of the picture, a full side "
    "profile with the nose pointing to the right edge of the frame",
}
EXPRESSION_INSTRUCTIONS = {
    "neutral": "give the face a neutral expression, relaxed, mouth closed",
    "smiling": "make the person smile warmly",
    "angry": "give the face an angry expression, furrowed brows, frowning",
    "sad": "give the face a sad expression, downcast eyes, corners of the mouth turned down",
}
KEEP_IDENTITY = (
    "keep the face identical: the same person, features, hair, clothes, light and background"
)
FIX_INSTRUCTIONS = {
    "plastic_skin": "restore natural skin texture with visible pores, unretouched",
    "grain": "remove the grain and noise, keep the fine detail",
    "blurry": "make the image sharp and in focus",
    "artifacts": "remove the artifacts and distortions",
    "bad_hands": "fix the hands: natural hands with five fingers each",
    "bad_body": "fix the body: natural proportions and anatomy",
}
"""Instructions for the review tags an edit can fix; `wrong_identity`, `wrong_angle` and
`wrong_expression` have none (the reviewer's note has to say what the image should show)."""
_SHA = re.compile(r"^[0-9a-f]{6,64}$")
PLAN_KEYS = ("schema", "selection", "thin_below", "per_source", "edits")
EDIT_KEYS = ("source", "angle", "expression", "instruction", "note")


class PlanError(ValueError):
    """A plan file that cannot be run; the message names the file, the edit and the fix."""


def default_instruction(
    angle: str | None,
    expression: str | None,
    from_angle: str | None = None,
    from_expression: str | None = None,
) -> str:
    """The instruction asking for (angle, expression) from a source at (from_angle,
    from_expression); what already matches is not asked for.

    Example:
        >>> default_instruction("half_left", "neutral", "front", "neutral").split(",")[0]
        'turn the head about 45 degrees toward the left side of the picture'
    """
    parts = []
    if angle and angle != from_angle and angle in ANGLE_INSTRUCTIONS:
        parts.append(ANGLE_INSTRUCTIONS[angle])
    if expression and expression != from_expression and expression in EXPRESSION_INSTRUCTIONS:
        parts.append(EXPRESSION_INSTRUCTIONS[expression])
    return "; ".join([*parts, KEEP_IDENTITY])


def fix_instruction(note: str | None, tags: Sequence[str]) -> str | None:
    """The instruction fixing an image a reviewer rejected: the note, then what its tags ask
    for (:data:`FIX_INSTRUCTIONS`), then :data:`KEEP_IDENTITY`; None when neither says what
    to change.

    Example:
        >>> fix_instruction(None, ["grain"]).split(";")[0]
        'remove the grain and noise, keep the fine detail'
    """
    parts = [" ".join(note.split())] if note and note.strip() else []
    parts += [FIX_INSTRUCTIONS[t] for t in tags if t in FIX_INSTRUCTIONS]
    if not parts:
        return None
    return "; ".join([*parts, KEEP_IDENTITY])


@dataclass(frozen=True)
class PlanEdit:
    """One edit: make ``source`` (sha256) show ``angle`` and ``expression``.

    ``angle`` or ``expression`` None: not judged (an edit that only fixes something)."""

    source: str
    angle: str | None
    expression: str | None
    instruction: str
    note: str = ""

    @property
    def cell(self) -> str:
        return f"{self.angle or 'any'}/{self.expression or 'any'}"

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "angle": self.angle,
            "expression": self.expression,
            "instruction": self.instruction,
            "note": self.note,
        }


@dataclass(frozen=True)
class Plan:
    edits: tuple[PlanEdit, ...]
    selection: str = ""
    thin_below: int | None = None
    per_source: int | None = None
    origin: str = "auto"
    """`auto`, or the plan file it was read from."""
    unfilled: tuple[str, ...] = field(default=())
    """What asked for edits the plan could not give: cells with fewer edits planned than they
    lack, for want of usable sources or of -n budget (automatic plans, e.g.
    "profile_left/sad (0 of 3 edits)"); rejected images without a note or a fixable tag
    (corrections)."""

    def plan_hash(self) -> str:
        """Hash of what the plan asks for (edits in order), not of where it came from."""
        blob = json.dumps([e.to_json() for e in self.edits], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "selection": self.selection,
            "thin_below": self.thin_below,
            "per_source": self.per_source,
            "unfilled": list(self.unfilled),
            "edits": [e.to_json() for e in self.edits],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Plan:
        return cls(
            edits=tuple(
                PlanEdit(
                    e["source"],
                    e.get("angle"),
                    e.get("expression"),
                    e["instruction"],
                    e.get("note", ""),
                )
                for e in data["edits"]
            ),
            selection=data.get("selection", ""),
            thin_below=data.get("thin_below"),
            per_source=data.get("per_source"),
            origin=data.get("origin", "auto"),
            unfilled=tuple(data.get("unfilled", ())),
        )

    def to_toml(self) -> str:
        """The plan as an editable TOML file with comments (read back by :func:`load_plan`)."""
        lines = [
            "# Likeness enrichment plan: each [[edits]] asks the edit model to turn one source",
            "# photo into one cell (head angle x expression) of the model card's grid.",
            "# Edit the instructions, delete edits you do not want, add your own, then run",
            "#   likeness enrich --plan THIS_FILE --recipe edit.toml",
            "# An edit is kept (stored as origin `enriched`) only when identity passes and the",
            "# measured angle bucket and expression are the asked ones; leave angle or",
            "# expression out to not judge it. source: sha256 (or a unique prefix of 6+ hex).",
            "# angle: front, half_left, profile_left, half_right, profile_right (the viewer's",
            "#   left: half_left is a face whose nose points toward the left edge of the picture)",
            "# expression: neutral, smiling, angry, sad",
            "",
            f"schema = {PLAN_SCHEMA}",
            f"selection = {_q(self.selection)}",
        ]
        if self.thin_below is not None:
            lines.append(f"thin_below = {self.thin_below}")
        if self.per_source is not None:
            lines.append(f"per_source = {self.per_source}")
        for what in self.unfilled:
            lines.append(f"# short: {what}")
        for edit in self.edits:
            lines += ["", "[[edits]]"]
            lines.append(f"source = {_q(edit.source)}")
            if edit.angle:
                lines.append(f"angle = {_q(edit.angle)}")
            if edit.expression:
                lines.append(f"expression = {_q(edit.expression)}")
            lines.append(f"instruction = {_q(edit.instruction)}")
            if edit.note:
                lines.append(f"note = {_q(edit.note)}")
        if not self.edits:
            lines += ["", "edits = []  # nothing to ask for: no empty or thin cell, or no source"]
        return "\n".join(lines) + "\n"


def _q(text: str) -> str:
    """A TOML basic string (JSON's escapes are a subset of TOML's)."""
    return json.dumps(text, ensure_ascii=False)


# -- the automatic plan ---------------------------------------------------------------------
def source_rank(
    score: Mapping[str, Any], angle: str, expression: str
) -> tuple[int, int, float, float] | None:
    """Sort key of a source for one cell (smaller is better), or None when unusable."""
    here, mood = score.get("angle"), score.get("expression")
    if score.get("error") or not score.get("faces") or here not in ANGLE_ORDER:
        return None
    if not score.get("pass"):
        return None
    flags = set(score.get("flags") or ())
    if flags & set(UNUSABLE_FLAGS):
        return None
    changes = angle_steps(here, angle) + int(mood != expression)
    if changes == 0:
        return None
    return (
        changes,
        int(bool(flags)),
        -float(score.get("sharpness") or 0.0),
        -float(score.get("match") or 0.0),
    )


def auto_plan(
    coverage: Coverage,
    sources: Sequence[Mapping[str, Any]],
    *,
    per_source: int = PER_SOURCE,
    selection: str = "",
    tried: Callable[[PlanEdit], bool] | None = None,
) -> Plan:
    """Edits for the empty and thin cells of ``coverage`` from ``sources`` (score dicts of
    the candidate source photos), as the module docstring says. ``tried(edit)`` True leaves
    an edit out (made before with the same recipe), so the next best source is asked."""
    if per_source < 1:
        raise PlanError(f"per_source: {per_source} must be at least 1")
    need = {(c.angle, c.expression): coverage.thin_below - c.count for c in coverage.cells}
    order: list[CoverageCell] = sorted(
        (c for c in coverage.cells if need[(c.angle, c.expression)] > 0),
        key=lambda c: c.count,
    )  # stable: card order among equal counts
    used: Counter[str] = Counter()
    taken: set[tuple[str, str, str]] = set()
    edits: list[PlanEdit] = []
    planned: Counter[tuple[str, str]] = Counter()
    for round_ in range(coverage.thin_below):
        for cell in order:
            if need[(cell.angle, cell.expression)] <= round_:
                continue
            edit = _best_source(cell, sources, used, taken, per_source, tried)
            if edit is None:
                continue
            used[edit.source] += 1
            taken.add((edit.source, cell.angle, cell.expression))
            planned[(cell.angle, cell.expression)] += 1
            edits.append(edit)
    unfilled = [
        f"{c.angle}/{c.expression} ({planned[(c.angle, c.expression)]} of "
        f"{need[(c.angle, c.expression)]} edits)"
        for c in order
        if planned[(c.angle, c.expression)] < need[(c.angle, c.expression)]
    ]
    return Plan(
        edits=tuple(edits),
        selection=selection,
        thin_below=coverage.thin_below,
        per_source=per_source,
        unfilled=tuple(unfilled),
    )


def _best_source(
    cell: CoverageCell,
    sources: Sequence[Mapping[str, Any]],
    used: Counter[str],
    taken: set[tuple[str, str, str]],
    per_source: int,
    tried: Callable[[PlanEdit], bool] | None,
) -> PlanEdit | None:
    ranked = []
    for score in sources:
        sha = str(score.get("sha256") or "")
        if used[sha] >= per_source or (sha, cell.angle, cell.expression) in taken:
            continue
        rank = source_rank(score, cell.angle, cell.expression)
        if rank is not None:
            ranked.append((rank, sha, score))
    ranked.sort(key=lambda r: (r[0], r[1]))
    for _, sha, score in ranked:
        edit = PlanEdit(
            source=sha,
            angle=cell.angle,
            expression=cell.expression,
            instruction=default_instruction(
                cell.angle, cell.expression, score.get("angle"), score.get("expression")
            ),
            note=(
                f"{cell.angle}/{cell.expression} has {cell.count} image(s) ({cell.state}); "
                f"source is {score.get('angle')}/{score.get('expression')}"
            ),
        )
        if tried is None or not tried(edit):
            return edit
    return None


# -- plan files -----------------------------------------------------------------------------
def load_plan(path: str | Path, conn: sqlite3.Connection) -> Plan:
    """Read a plan file; sources are resolved against the workspace's stored images."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanError(
            f"{path}: no such file; write one with `likeness enrich plan --out {path}`"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"{path}: cannot be read ({exc}); pass a TOML plan file") from None
    return plan_from_text(text, conn, source=str(path))


def plan_from_text(text: str, conn: sqlite3.Connection, source: str = "plan") -> Plan:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"{source}: not valid TOML ({exc}); fix the syntax") from None
    unknown = [k for k in data if k not in PLAN_KEYS]
    if unknown:
        raise PlanError(f"{source}: unknown key {unknown[0]!r}; known: {', '.join(PLAN_KEYS)}")
    if data.get("schema", PLAN_SCHEMA) != PLAN_SCHEMA:
        raise PlanError(f"{source}: schema {data['schema']!r} is not {PLAN_SCHEMA}")
    raw = data.get("edits", [])
    if not isinstance(raw, list):
        raise PlanError(f"{source}: edits must be [[edits]] tables")
    edits = tuple(_edit(e, i, conn, source) for i, e in enumerate(raw))
    return Plan(
        edits=edits,
        selection=str(data.get("selection", "")),
        thin_below=_int(data.get("thin_below"), f"{source}: thin_below"),
        per_source=_int(data.get("per_source"), f"{source}: per_source"),
        origin=source,
    )


def _edit(data: Any, index: int, conn: sqlite3.Connection, source: str) -> PlanEdit:
    from likeness.store.images import find_by_prefix

    where = f"{source}: edits.{index}"
    if not isinstance(data, Mapping):
        raise PlanError(f"{where} must be a table ([[edits]])")
    unknown = [k for k in data if k not in EDIT_KEYS]
    if unknown:
        raise PlanError(f"{where}: unknown key {unknown[0]!r}; known: {', '.join(EDIT_KEYS)}")
    sha = data.get("source")
    if not isinstance(sha, str) or not _SHA.match(sha.lower()):
        raise PlanError(f"{where}: source {sha!r} must be a sha256 or a prefix of 6+ hex digits")
    found = find_by_prefix(conn, sha.lower())
    if len(found) != 1:
        why = "no stored image" if not found else f"{len(found)} stored images"
        raise PlanError(f"{where}: source {sha!r} matches {why}; give more of its sha256")
    angle = _choice(data.get("angle"), ANGLE_ORDER, f"{where}: angle")
    expression = _choice(
        data.get("expression"), tuple(EXPRESSION_INSTRUCTIONS), f"{where}: expression"
    )
    instruction = data.get("instruction")
    if instruction is None:
        instruction = default_instruction(angle, expression)
    if not isinstance(instruction, str) or not instruction.strip():
        raise PlanError(f"{where}: instruction must be a non-empty string")
    note = data.get("note", "")
    return PlanEdit(found[0].sha256, angle, expression, instruction.strip(), str(note))


def _choice(value: Any, allowed: tuple[str, ...], where: str) -> str | None:
    if value is None or value == "":
        return None
    if value not in allowed:
        raise PlanError(f"{where}: {value!r} is not one of {', '.join(allowed)}")
    return str(value)


def _int(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PlanError(f"{where}: {value!r} must be a whole number of at least 1")
    return value
