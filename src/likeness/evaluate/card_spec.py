"""The model card spec: which shots a character must get right, and what each one expects.

The default spec ships as data (`likeness/data/card/card.toml`: 20 portraits over 5 head
angles x 4 expressions, plus T-pose, standing and sitting). `likeness card spec FILE` writes
an editable copy; `likeness card --spec FILE` runs it.

Example::

    spec = load_card_spec()             # the shipped 23 shots
    prompt = spec.shots[0].render(class_word="woman", name="Mara", style=spec.style)
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

# What an expected expression may be: the labels `likeness.metrics.expression` gives (its
# `unsure` never matches, so a shot whose reading is unsure is not reached).
EXPRESSIONS = ("neutral", "smiling", "angry", "sad", "other")
CARD_POSES = ("t_pose", "standing", "sitting")
KINDS = ("portrait", "body")
SPEC_KEYS = ("name", "style", "negative", "allow_flags", "shots")
SHOT_KEYS = ("id", "kind", "prompt", "angle", "expression", "body_pose", "allow_flags")


class CardSpecError(ValueError):
    """A card spec that cannot be used; the message names the file, the shot and the fix."""


@dataclass(frozen=True)
class Shot:
    """One card shot: its prompt template and what the measured image must show."""

    id: str
    kind: str
    prompt: str
    angle: str | None = None
    expression: str | None = None
    body_pose: str | None = None
    allow_flags: tuple[str, ...] = ()

    def render(self, *, class_word: str, name: str, style: str = "") -> str:
        """The prompt for this shot (the trigger is placed later, per the recipe)."""
        text = self.prompt.replace("{class_word}", class_word).replace("{name}", name)
        return f"{text}, {style}" if style.strip() else text

    def expects(self) -> dict[str, str | None]:
        return {"angle": self.angle, "expression": self.expression, "body_pose": self.body_pose}

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "kind": self.kind, "prompt": self.prompt}
        data.update({k: v for k, v in self.expects().items() if v is not None})
        if self.allow_flags:
            data["allow_flags"] = list(self.allow_flags)
        return data


@dataclass(frozen=True)
class CardSpec:
    name: str
    shots: tuple[Shot, ...]
    style: str = ""
    negative: str = ""
    allow_flags: tuple[str, ...] = ()
    source: str = "card spec"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "style": self.style,
            "negative": self.negative,
            "allow_flags": list(self.allow_flags),
            "shots": [s.to_dict() for s in self.shots],
        }

    def spec_hash(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    def shot(self, shot_id: str) -> Shot:
        for shot in self.shots:
            if shot.id == shot_id:
                return shot
        raise KeyError(shot_id)


def default_spec_text() -> str:
    """The shipped spec, comments included (what `likeness card spec` writes)."""
    return resources.files("likeness.data").joinpath("card/card.toml").read_text(encoding="utf-8")


def load_card_spec(path: str | Path | None = None) -> CardSpec:
    """The spec in ``path``, or the shipped 23-shot spec when None."""
    if path is None:
        return card_spec_from_text(default_spec_text(), source="likeness/data/card/card.toml")
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CardSpecError(
            f"{path}: no such file; write an editable copy with `likeness card spec {path}`"
        ) from None
    except UnicodeDecodeError:
        raise CardSpecError(f"{path}: not UTF-8 text; pass a TOML file") from None
    except OSError as exc:
        raise CardSpecError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return card_spec_from_text(text, source=str(path))


def card_spec_from_text(text: str, source: str = "card spec") -> CardSpec:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CardSpecError(f"{source}: not valid TOML ({exc}); fix the syntax") from exc
    return card_spec_from_dict(data, source)


def card_spec_from_dict(data: Mapping[str, Any], source: str = "card spec") -> CardSpec:
    """Validate parsed TOML; errors name the source, the shot and the key."""
    unknown = [k for k in data if k not in SPEC_KEYS]
    if unknown:
        raise CardSpecError(
            f"{source}: unknown key {unknown[0]!r}; known keys: {', '.join(SPEC_KEYS)}"
        )
    shots_data = data.get("shots")
    if not isinstance(shots_data, list) or not shots_data:
        raise CardSpecError(f"{source}: no shots; add [[shots]] tables")
    shots = tuple(_shot(s, i, source) for i, s in enumerate(shots_data))
    ids = [s.id for s in shots]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise CardSpecError(f"{source}: shot id {repeated[0]!r} is used twice; ids must be unique")
    return CardSpec(
        name=str(data.get("name") or "card"),
        shots=shots,
        style=_text(data.get("style", ""), f"{source}: style"),
        negative=_text(data.get("negative", ""), f"{source}: negative"),
        allow_flags=_flags(data.get("allow_flags", []), f"{source}: allow_flags"),
        source=source,
    )


def _shot(data: Any, index: int, source: str) -> Shot:
    # Imported here: the metrics package loads its instruments, and `likeness --help` need not.
    from likeness.metrics.angle import ANGLES

    where = f"{source}: shots.{index}"
    if not isinstance(data, Mapping):
        raise CardSpecError(f"{where} must be a table ([[shots]])")
    unknown = [k for k in data if k not in SHOT_KEYS]
    if unknown:
        raise CardSpecError(f"{where}: unknown key {unknown[0]!r}; known: {', '.join(SHOT_KEYS)}")
    shot_id = data.get("id")
    if not isinstance(shot_id, str) or not shot_id.strip():
        raise CardSpecError(f"{where}: id is missing; give each shot a short unique id")
    where = f"{source}: shot {shot_id!r}"
    kind = data.get("kind", "portrait")
    if kind not in KINDS:
        raise CardSpecError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise CardSpecError(f"{where}: prompt is missing")
    angle = _choice(data.get("angle"), ANGLES, f"{where}: angle")
    expression = _choice(data.get("expression"), EXPRESSIONS, f"{where}: expression")
    pose = _choice(data.get("body_pose"), CARD_POSES, f"{where}: body_pose")
    if kind == "portrait" and pose is not None:
        raise CardSpecError(
            f'{where}: a portrait is not judged on body pose; remove body_pose or set kind = "body"'
        )
    return Shot(
        id=shot_id,
        kind=kind,
        prompt=prompt,
        angle=angle,
        expression=expression,
        body_pose=pose,
        allow_flags=_flags(data.get("allow_flags", []), f"{where}: allow_flags"),
    )


def _choice(value: Any, allowed: tuple[str, ...], where: str) -> str | None:
    if value is None or value == "":
        return None
    if value not in allowed:
        raise CardSpecError(f"{where}: {value!r} is not one of {', '.join(allowed)}")
    return str(value)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise CardSpecError(f"{where}: {value!r} must be a string")
    return value


def _flags(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CardSpecError(f'{where}: must be a list of flag names, e.g. ["face_too_small"]')
    return tuple(value)
