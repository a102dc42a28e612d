"""The objective a sweep ranks by: identity first, minus penalties for grain and plastic skin.

For one image::

    objective = match_weight * match
              - grain_weight * max(0, grain - grain_ok)
              - plastic_weight * max(0, plastic - plastic_ok)
              - flag_weight * number_of_flags

`match` is the 0-10 identity score against the source photos (0 when no face is found);
`grain` is the noise sigma in grey levels (clean photos read 0.5-1.5, the `grainy` flag fires
above 3); `plastic` is the absolute plastic-skin index (0 = the skin texture of typical
unretouched photos, +1 = half as much; real photos read -0.3 to +0.4, the `plastic_skin` flag
fires above 0.6). A configuration's objective is the mean over its seeds and prompts; its
spread (standard deviation, min, max) is reported beside it. Higher is better.

The default weights make one grey level of grain above 1.5, or skin 0.5 log2 steps smoother
than the top of real photos' range (0.3), cost one point of match. Every weight is
configurable in the sweep spec's ``[objective]`` table.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class ObjectiveError(ValueError):
    """An `[objective]` entry that cannot be used; names the key and the fix."""


@dataclass(frozen=True)
class Objective:
    match_weight: float = 1.0
    grain_weight: float = 1.0
    grain_ok: float = 1.5
    plastic_weight: float = 2.0
    plastic_ok: float = 0.3
    flag_weight: float = 0.0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "objective") -> Objective:
        names = [f.name for f in dataclasses.fields(cls)]
        values: dict[str, float] = {}
        for key, value in data.items():
            if key not in names:
                raise ObjectiveError(f"{where}.{key}: unknown; known keys: {', '.join(names)}")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ObjectiveError(f"{where}.{key}: {value!r} must be a number")
            if not math.isfinite(value):
                raise ObjectiveError(f"{where}.{key}: {value!r} must be finite")
            values[key] = float(value)
        return cls(**values)

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    def image(self, score: Mapping[str, Any] | None) -> float:
        """The objective of one scored image (a failed generation scores 0)."""
        if score is None:
            return 0.0
        value = self.match_weight * float(score.get("match") or 0.0)
        grain = score.get("grain")
        if grain is not None:
            value -= self.grain_weight * max(0.0, float(grain) - self.grain_ok)
        plastic = score.get("plastic")
        if plastic is not None:
            value -= self.plastic_weight * max(0.0, float(plastic) - self.plastic_ok)
        value -= self.flag_weight * len(score.get("flags") or ())
        return value

    def describe(self) -> str:
        """One line for tables and reports."""
        return (
            f"{self.match_weight:g} x match - {self.grain_weight:g} x max(0, grain - "
            f"{self.grain_ok:g}) - {self.plastic_weight:g} x max(0, plastic - {self.plastic_ok:g})"
            + (f" - {self.flag_weight:g} x flags" if self.flag_weight else "")
        )
