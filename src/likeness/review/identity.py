"""Numbers derived for display when an analyzer stored raw measurements but not the verdicts.

The face analysis caches each image's subject embedding and head pose; the match against the
character depends on the reference set, so it is not in the cache. For the queue, match,
distance, pass and the nearest reference are computed here with `likeness.metrics.identity`
(the same calibration `likeness score` uses) against the workspace's reference set (its
`source` photos), the head-angle bucket with `likeness.metrics.angle`, the plastic-skin index
(absolute, and relative to the references' skin texture), and the score-time flags (`blurry`, `grainy`,
`plastic_skin`, `clipped`, `low_brisque_quality`) at `likeness score`'s thresholds.
A value an analyzer did store always wins over a derived one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from likeness.review.metrics import ImageMetrics


def derive(
    metrics: Mapping[str, ImageMetrics],
    reference_shas: list[str],
    threshold: float,
    pass_match: float = 5.0,
) -> dict[str, dict[str, Any]]:
    """sha -> derived values (match, distance, centroid_distance, pass, nearest_reference,
    angle, plastic, plastic_relative, and `flags` as a list) for every image with measurements to derive from;
    empty without `likeness.metrics`. `pass` needs both the backend's same-person distance
    (`threshold`) and a match of at least `pass_match` (the workspace's identity.pass_match),
    as `likeness score` in a workspace decides."""
    try:
        import numpy as np

        from likeness.metrics.angle import yaw_bucket
        from likeness.metrics.identity import calibrate, match_score
        from likeness.metrics.scoring import Thresholds
        from likeness.metrics.skin import plastic_index, plastic_relative
    except ImportError:
        return {}
    derived: dict[str, dict[str, Any]] = {}
    textures = [
        t
        for sha in reference_shas
        if sha in metrics and (t := metrics[sha].number("skin_texture")) is not None
    ]
    reference_skin = float(np.median(textures)) if textures else None
    limits = Thresholds(pass_match=pass_match)
    for sha, m in metrics.items():
        values: dict[str, Any] = {}
        yaw = m.number("yaw")
        if yaw is not None and "angle" not in m.values:
            bucket = yaw_bucket(yaw)
            if bucket:
                values["angle"] = bucket
        texture = m.number("skin_texture")
        if texture is not None and "plastic" not in m.values:
            values["plastic"] = round(plastic_index(texture), 3)
        if texture is not None and reference_skin and "plastic_relative" not in m.values:
            values["plastic_relative"] = round(plastic_relative(texture, reference_skin), 3)
        # Copied from likeness.metrics.scoring.score_one (its flags at default thresholds).
        flags = []
        sharpness, grain = m.number("sharpness"), m.number("grain")
        plastic = m.number("plastic") if "plastic" in m.values else values.get("plastic")
        clip, brisque = m.number("clipping"), m.number("brisque")
        if m.embedding and sharpness is not None and sharpness < limits.min_sharpness:
            flags.append("blurry")
        if grain is not None and grain > limits.max_grain:
            flags.append("grainy")
        if plastic is not None and plastic > limits.max_plastic:
            flags.append("plastic_skin")
        if clip is not None and clip > limits.max_clipping:
            flags.append("clipped")
        if brisque is not None and brisque > limits.max_brisque:
            flags.append("low_brisque_quality")
        flags = [f for f in flags if f not in m.flags]
        if flags:
            values["flags"] = flags
        if values:
            derived[sha] = values

    refs = [(sha, metrics[sha].embedding) for sha in reference_shas if sha in metrics]
    refs = [(sha, e) for sha, e in refs if e]
    candidates = [
        (sha, m.embedding) for sha, m in metrics.items() if m.embedding and "match" not in m.values
    ]
    if not refs or not candidates:
        return derived
    keys = [sha for sha, _ in refs]
    try:
        ref_matrix = np.asarray([e for _, e in refs], dtype=np.float64)
        embeddings = np.asarray([e for _, e in candidates], dtype=np.float64)
    except ValueError:  # embeddings of different sizes (two backends): nothing comparable
        return derived
    if ref_matrix.shape[1] != embeddings.shape[1]:
        return derived
    calibration = calibrate(list(ref_matrix), keys, threshold=threshold)
    distances = np.linalg.norm(embeddings[:, None, :] - ref_matrix[None, :, :], axis=-1)
    key_index = {k: i for i, k in enumerate(keys)}
    for row, (sha, _) in enumerate(candidates):
        own = key_index.get(sha)
        if own is not None and len(keys) > 1:
            distances[row, own] = np.inf  # a reference is scored against the others
        nearest = int(np.argmin(distances[row]))
        distance = float(distances[row, nearest])
        others = [i for i in range(len(keys)) if i != own] if own is not None else None
        centroid = ref_matrix[others].mean(axis=0) if others else ref_matrix.mean(axis=0)
        values = derived.setdefault(sha, {})
        match = match_score(distance, calibration.typical, threshold)
        values["match"] = round(match, 2)
        values["distance"] = round(distance, 4)
        values["centroid_distance"] = round(float(np.linalg.norm(centroid - embeddings[row])), 4)
        values["pass"] = distance <= threshold and match >= limits.pass_match
        values["nearest_reference"] = keys[nearest]
    return derived
