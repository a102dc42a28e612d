"""Head-angle buckets for the model card's five portrait angles.

Bands on |yaw| (degrees, sign as in `likeness.faces.headpose`: positive = turned toward the
image's left):

| bucket | yaw |
|---|---|
| `front` | -20 < yaw < 20 |
| `half_left` | 20 <= yaw < 60 |
| `profile_left` | yaw >= 60 |
| `half_right` | -60 < yaw <= -20 |
| `profile_right` | yaw <= -60 |

The card's angles are 0, 45 and 90 degrees; the boundaries sit below the midpoints (22.5 and
67.5) because a landmark fit underestimates large turns, and the HOG detector stops finding
faces turned much past 70 degrees. "Left" and "right" are the viewer's: `half_left` is a face
whose nose points toward the left edge of the picture.
"""

from __future__ import annotations

import math
from typing import Literal

Angle = Literal["front", "half_left", "profile_left", "half_right", "profile_right"]
ANGLES: tuple[Angle, ...] = ("front", "half_left", "profile_left", "half_right", "profile_right")
FRONT_LIMIT = 20.0
PROFILE_LIMIT = 60.0


def yaw_bucket(yaw: float) -> Angle | None:
    """The bucket for a yaw in degrees (None for NaN, i.e. no pose).

    Example:
        >>> yaw_bucket(34.0)
        'half_left'
    """
    if not math.isfinite(yaw):
        return None
    side = "left" if yaw > 0 else "right"
    turn = abs(yaw)
    if turn < FRONT_LIMIT:
        return "front"
    if turn < PROFILE_LIMIT:
        return f"half_{side}"  # type: ignore[return-value]
    return f"profile_{side}"  # type: ignore[return-value]
