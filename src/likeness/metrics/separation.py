"""How far apart photos of the character are, how near other people come, and where the
identity pass bar should sit between them: the library behind `likeness calibrate`.

Pure functions over embeddings and labels; distances are the backend's own (Euclidean between
embeddings), the bar is given in distance and in the workspace's `match` units (see
`likeness.metrics.identity`).

1. **Same person**: every pair of distinct source photos' subject faces. Pairs of one shot
   (a resized, cropped or mirrored copy: `same_shot` pairs, grouped transitively) are left
   out, since they would understate the spread; so are pairs with an outlier source.
2. **Different person**: each face of another person (every face of a negative photo, every
   non-subject face of a source photo) to its *nearest* source face, as identity is scored.
3. **Outliers**: a source whose median distance to the other shots exceeds the backend's
   threshold is probably someone else (left out of step 1); with four or more other shots, one
   whose median stands out from the others' (by more than three scaled MADs and 10% of the
   threshold) is named as unusual (a poor photo or a very different look) but kept.
4. **The bar** (`propose_bar`): when the farthest same-person pair is nearer than the nearest
   other face, the midpoint of that gap; when they overlap, the cut with the fewest errors
   (false-reject share + false-accept share), ties going to the stricter cut. Without at least
   `MIN_NEGATIVE_FACES` other faces, the different-person side is the backend's published
   threshold. The bar never exceeds that threshold (identity also requires it), and needs
   `MIN_SHOTS` distinct shots of the character.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Literal

import numpy as np

from likeness.metrics.identity import calibrate, distance_for_match, match_score

MIN_SHOTS = 3
"""Distinct shots of the character (3 give 3 pairs) below which no bar is proposed."""
MIN_NEGATIVE_FACES = 3
"""Other people's faces below which the different-person side is the published threshold."""
NARROW_GAP = 0.1
"""A gap between the distributions narrower than this share of the threshold is warned of."""
OUTLIER_MADS = 3.0

Rule = Literal["midpoint", "fewest_errors", "threshold"]


@dataclass(frozen=True)
class SourcePhoto:
    """A source photo of the character: the embeddings of its faces, one of them the subject
    (the character); the others are other people."""

    key: str
    name: str
    faces: tuple[np.ndarray, ...]
    subject: int | None
    """Index of the subject in `faces`; None when the photo has no usable face."""

    @property
    def embedding(self) -> np.ndarray | None:
        return self.faces[self.subject] if self.subject is not None else None


@dataclass(frozen=True)
class OtherPhoto:
    """A photo of other people (a negative): every face in it is a different-person sample."""

    key: str
    name: str
    embeddings: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class PairDistance:
    a: str
    b: str
    distance: float


@dataclass(frozen=True)
class OtherFace:
    """One different-person sample: face number `face` (in detection order) of photo `key`,
    and the source photo whose subject face is nearest to it."""

    key: str
    name: str
    face: int
    origin: Literal["negative", "source"]
    distance: float
    nearest: str


@dataclass(frozen=True)
class Outlier:
    key: str
    name: str
    median_distance: float
    kind: Literal["someone_else", "unusual"]


@dataclass(frozen=True)
class Bar:
    """A pass bar in both units, with its error rates on the samples (None: no samples)."""

    distance: float
    match: float
    false_reject: float | None
    false_accept: float | None


@dataclass(frozen=True)
class Proposal:
    bar: Bar
    rule: Rule
    same_high: float
    different_low: float
    different_side: Literal["samples", "published"]
    capped: bool
    """The rule's bar lay beyond the backend's threshold and was brought back to it."""

    @property
    def explanation(self) -> str:
        """One sentence: which rule placed the bar, and on what."""
        other = (
            f"the nearest face of another person ({round(self.different_low, 4):.3f})"
            if self.different_side == "samples"
            else f"the backend's published threshold ({self.different_low:g}), as no photos of "
            "other people were given"
        )
        if self.rule == "midpoint":
            text = (
                f"midway between the farthest pair of the character's photos "
                f"({round(self.same_high, 4):.3f}) and {other}"
            )
        elif self.rule == "fewest_errors":
            text = (
                "where the fewest samples fall on the wrong side (false-reject share plus "
                "false-accept share), as the distributions overlap"
            )
        else:
            text = (
                f"at the backend's threshold, as the character's photos spread up to it "
                f"({round(self.same_high, 4):.3f})"
            )
        if self.capped:
            text += "; held at the backend's threshold, which identity also requires"
        return text


@dataclass(frozen=True)
class Alert:
    code: str
    message: str


@dataclass(frozen=True)
class Separation:
    """Everything `likeness calibrate` reports."""

    threshold: float
    typical: float
    sources: int
    shots: int
    same: tuple[PairDistance, ...]
    near_duplicates: tuple[PairDistance, ...]
    different: tuple[OtherFace, ...]
    outliers: tuple[Outlier, ...]
    current: Bar
    proposal: Proposal | None
    warnings: tuple[Alert, ...] = field(default=())
    names: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The `likeness calibrate --json` shape (docs/cli.md), without the run's context."""
        name = self.names.get
        proposal = None
        if self.proposal is not None:
            p = self.proposal
            proposal = {
                **_bar_json(p.bar),
                "rule": p.rule,
                "explanation": p.explanation,
                "same_high": round(p.same_high, 4),
                "different_low": round(p.different_low, 4),
                "different_side": p.different_side,
                "capped": p.capped,
            }
        return {
            "threshold": self.threshold,
            "typical": round(self.typical, 4),
            "sources": {"with_face": self.sources, "shots": self.shots},
            "same_person": {
                **_summary(self.same_distances),
                "pairs": [
                    {
                        "a": name(p.a, p.a),
                        "b": name(p.b, p.b),
                        "a_sha256": p.a,
                        "b_sha256": p.b,
                        "distance": round(p.distance, 4),
                    }
                    for p in self.same
                ],  # fmt: skip
            },
            "near_duplicates": [
                {
                    "a": name(p.a, p.a),
                    "b": name(p.b, p.b),
                    "a_sha256": p.a,
                    "b_sha256": p.b,
                    "distance": round(p.distance, 4),
                }
                for p in self.near_duplicates
            ],  # fmt: skip
            "different_person": {
                **_summary(self.different_distances),
                "photos": len({f.key for f in self.different}),
                "faces": [
                    {
                        "name": f.name,
                        "sha256": f.key,
                        "face": f.face,
                        "origin": f.origin,
                        "distance": round(f.distance, 4),
                        "nearest": name(f.nearest, f.nearest),
                        "nearest_sha256": f.nearest,
                    }
                    for f in sorted(self.different, key=lambda f: f.distance)
                ],  # fmt: skip
            },
            "outliers": [
                {
                    "name": o.name,
                    "sha256": o.key,
                    "median_distance": round(o.median_distance, 4),
                    "kind": o.kind,
                }
                for o in self.outliers
            ],  # fmt: skip
            "current": _bar_json(self.current),
            "proposal": proposal,
            "warnings": [{"code": w.code, "message": w.message} for w in self.warnings],
        }

    @property
    def same_distances(self) -> list[float]:
        return [p.distance for p in self.same]

    @property
    def different_distances(self) -> list[float]:
        return [f.distance for f in self.different]


def measure_separation(
    sources: Sequence[SourcePhoto],
    negatives: Sequence[OtherPhoto] = (),
    *,
    threshold: float,
    pass_match: float,
    same_shot: Collection[tuple[str, str]] = (),
) -> Separation:
    """Distributions, outliers and a proposed bar (see the module doc).

    Args:
        sources: the character's photos (one per image; those without a face are counted).
        negatives (*optional*): photos of other people.
        threshold (`float`): the backend's same-person distance (`FaceAnalyzer.match_threshold`).
        pass_match (`float`): the workspace's current `identity.pass_match`.
        same_shot (*optional*): key pairs that are one photograph (`same_shot_pairs`).

    Example:
        >>> sep = measure_separation(sources, negatives, threshold=0.6, pass_match=5.0)  # doctest: +SKIP
        >>> sep.proposal.bar.distance, sep.proposal.bar.match  # doctest: +SKIP
    """
    names = {s.key: s.name for s in sources} | {n.key: n.name for n in negatives}
    usable = [s for s in sources if s.embedding is not None]
    keys = [s.key for s in usable]
    refs = np.asarray([np.asarray(s.embedding, dtype=np.float64) for s in usable])
    typical = calibrate(list(refs), keys, threshold).typical if usable else threshold
    # 1. Shots, and the distance of every pair of sources.
    group = shot_groups(keys, same_shot)
    pairs = [
        PairDistance(keys[i], keys[j], float(np.linalg.norm(refs[i] - refs[j])))
        for i, j in combinations(range(len(keys)), 2)
    ]
    near_duplicates = tuple(p for p in pairs if group[p.a] == group[p.b])
    distinct = [p for p in pairs if group[p.a] != group[p.b]]
    # 2. Outliers, then the same-person pairs without them.
    outliers = find_outliers(distinct, group, names, threshold)
    gone = {o.key for o in outliers if o.kind == "someone_else"}
    same = tuple(p for p in distinct if p.a not in gone and p.b not in gone)
    shots = len({group[k] for k in keys if k not in gone})
    # 3. Other people's faces to their nearest source face.
    different = tuple(_other_faces(usable, negatives, refs))
    # 4. The current bar and the proposal.
    same_values = [p.distance for p in same]
    different_values = [f.distance for f in different]
    current_distance = min(distance_for_match(pass_match, typical, threshold), threshold)
    current = _bar(current_distance, pass_match, same_values, different_values)
    proposal = None
    if shots >= MIN_SHOTS and same_values:
        distance, rule, side, capped = propose_bar(same_values, different_values, threshold)
        match = round(match_score(distance, typical, threshold), 2)
        effective = min(distance_for_match(match, typical, threshold), threshold)
        proposal = Proposal(
            bar=_bar(effective, match, same_values, different_values),
            rule=rule,
            same_high=max(same_values),
            different_low=min(different_values) if side == "samples" else threshold,
            different_side=side,
            capped=capped,
        )
    warnings = _warnings(
        sources, negatives, outliers, same, different, shots, proposal, threshold, names
    )
    return Separation(
        threshold=threshold,
        typical=typical,
        sources=len(usable),
        shots=shots,
        same=same,
        near_duplicates=near_duplicates,
        different=different,
        outliers=outliers,
        current=current,
        proposal=proposal,
        warnings=tuple(warnings),
        names=names,
    )


def shot_groups(keys: Sequence[str], same_shot: Collection[tuple[str, str]]) -> dict[str, str]:
    """key -> a representative key of its shot: the connected components of `same_shot`.

    Example:
        >>> shot_groups(["a", "b", "c"], [("a", "c")])
        {'a': 'a', 'b': 'b', 'c': 'a'}
    """
    parent = {k: k for k in keys}

    def root(k: str) -> str:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for a, b in same_shot:
        if a in parent and b in parent:
            ra, rb = root(a), root(b)
            if ra != rb:
                first, second = sorted((ra, rb), key=keys.index)
                parent[second] = first
    return {k: root(k) for k in keys}


def find_outliers(
    pairs: Sequence[PairDistance],
    group: dict[str, str],
    names: dict[str, str],
    threshold: float,
) -> tuple[Outlier, ...]:
    """Sources far from the other shots (see the module doc, step 3)."""
    medians: dict[str, float] = {}
    for key in group:
        mine = [p.distance for p in pairs if key in (p.a, p.b)]
        if mine:
            medians[key] = float(np.median(mine))
    if not medians:
        return ()
    values = np.asarray(list(medians.values()))
    centre = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - centre)))
    other_shots = len(set(group.values())) - 1
    found = []
    for key, median in medians.items():
        if median > threshold:
            found.append(Outlier(key, names.get(key, key), median, "someone_else"))
        elif other_shots >= 4 and median > centre + max(OUTLIER_MADS * spread, 0.1 * threshold):
            found.append(Outlier(key, names.get(key, key), median, "unusual"))
    return tuple(found)


def propose_bar(
    same: Sequence[float], different: Sequence[float], threshold: float
) -> tuple[float, Rule, Literal["samples", "published"], bool]:
    """(distance, rule, different side, capped) for same-person and different-person distances
    (see the module doc, step 4).

    Example:
        >>> propose_bar([0.34, 0.36, 0.40], [0.71, 0.76, 0.85], threshold=0.6)
        (0.555, 'midpoint', 'samples', False)
        >>> propose_bar([0.34, 0.36, 0.40], [], threshold=0.6)
        (0.5, 'midpoint', 'published', False)
    """
    if not same:
        raise ValueError("no same-person distances: a bar needs pairs of source photos")
    side: Literal["samples", "published"] = (
        "samples" if len(different) >= MIN_NEGATIVE_FACES else "published"
    )
    high = max(same)
    low = min(different) if side == "samples" else threshold
    rule: Rule
    if high < low:
        distance, rule = (high + low) / 2, "midpoint"
    elif side == "published":
        distance, rule = threshold, "threshold"
    else:
        distance, rule = _fewest_errors(same, different), "fewest_errors"
    capped = distance > threshold
    return round(min(distance, threshold), 6), rule, side, capped


def error_rates(
    distance: float, same: Sequence[float], different: Sequence[float]
) -> tuple[float | None, float | None]:
    """(false-reject share of `same`, false-accept share of `different`) at a bar: a face
    passes at `distance <= bar`, as identity decides. None for an empty side.

    Example:
        >>> error_rates(0.5, [0.3, 0.55], [0.45, 0.8])
        (0.5, 0.5)
    """
    rejected = sum(1 for d in same if d > distance) / len(same) if same else None
    accepted = sum(1 for d in different if d <= distance) / len(different) if different else None
    return rejected, accepted


def _fewest_errors(same: Sequence[float], different: Sequence[float]) -> float:
    values = sorted(set(same) | set(different))
    cuts = [values[0] - 1e-6] + [(a + b) / 2 for a, b in zip(values, values[1:], strict=False)]
    cuts.append(values[-1])

    def errors(cut: float) -> float:
        rejected, accepted = error_rates(cut, same, different)
        return (rejected or 0.0) + (accepted or 0.0)

    return min(cuts, key=lambda c: (round(errors(c), 9), c))


def _bar(distance: float, match: float, same: Sequence[float], different: Sequence[float]) -> Bar:
    rejected, accepted = error_rates(distance, same, different)
    return Bar(round(distance, 4), round(match, 2), rejected, accepted)


def _bar_json(bar: Bar) -> dict[str, Any]:
    return {
        "distance": bar.distance,
        "match": bar.match,
        "false_reject": None if bar.false_reject is None else round(bar.false_reject, 4),
        "false_accept": None if bar.false_accept is None else round(bar.false_accept, 4),
    }


def _summary(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0, "min": None, "median": None, "max": None}
    return {
        "count": len(values),
        "min": round(min(values), 4),
        "median": round(float(np.median(values)), 4),
        "max": round(max(values), 4),
    }


def _other_faces(
    usable: Sequence[SourcePhoto], negatives: Sequence[OtherPhoto], refs: np.ndarray
) -> list[OtherFace]:
    if not len(refs):
        return []
    found = []

    def nearest(embedding: np.ndarray) -> tuple[float, str]:
        distances = np.linalg.norm(refs - np.asarray(embedding, dtype=np.float64), axis=1)
        index = int(distances.argmin())
        return float(distances[index]), usable[index].key

    for photo in negatives:
        for index, embedding in enumerate(photo.embeddings):
            distance, near = nearest(embedding)
            found.append(OtherFace(photo.key, photo.name, index, "negative", distance, near))
    for source in usable:
        for index, embedding in enumerate(source.faces):
            if index == source.subject:
                continue
            distance, near = nearest(embedding)
            found.append(OtherFace(source.key, source.name, index, "source", distance, near))
    return found


def _warnings(
    sources: Sequence[SourcePhoto],
    negatives: Sequence[OtherPhoto],
    outliers: Sequence[Outlier],
    same: Sequence[PairDistance],
    different: Sequence[OtherFace],
    shots: int,
    proposal: Proposal | None,
    threshold: float,
    names: dict[str, str],
) -> list[Alert]:
    found = []
    for s in sources:
        if s.embedding is None:
            found.append(Alert("no_face", f"source photo {s.name}: no usable face, left out"))
    for n in negatives:
        if not n.embeddings:
            found.append(Alert("no_face", f"other photo {n.name}: no face, left out"))
    for o in outliers:
        if o.kind == "someone_else":
            text = (
                f"source photo {o.name} is far from the others (median distance "
                f"{o.median_distance:.3f} > threshold {threshold:g}): probably someone else or "
                "a bad photo; its pairs are left out. Exclude it from the sources if so"
            )
        else:
            text = (
                f"source photo {o.name} is farther from the others than the rest (median "
                f"distance {o.median_distance:.3f}): a poor photo (blur, angle, cover) or a very "
                "different look; it is kept"
            )
        found.append(Alert("outlier", text))
    if shots < MIN_SHOTS:
        found.append(
            Alert(
                "too_few_sources",
                f"{shots} distinct source photo(s) with a face: at least {MIN_SHOTS} are needed "
                "to say how far apart photos of this person are; no bar is proposed",
            )
        )
    if 0 < len(different) < MIN_NEGATIVE_FACES:
        found.append(
            Alert(
                "too_few_others",
                f"{len(different)} face(s) of other people: at least {MIN_NEGATIVE_FACES} are "
                f"needed; the different-person side is the backend's threshold ({threshold:g})",
            )
        )
    if same and len(different) >= MIN_NEGATIVE_FACES:
        far = max(same, key=lambda p: p.distance)
        near = min(different, key=lambda f: f.distance)
        gap = near.distance - far.distance
        if gap <= 0:
            found.append(
                Alert(
                    "overlap",
                    f"the distributions overlap: two photos of the character "
                    f"({names.get(far.a, far.a)}, {names.get(far.b, far.b)}) are "
                    f"{far.distance:.3f} apart, while a face in {near.name} is "
                    f"{near.distance:.3f} from {names.get(near.nearest, near.nearest)}",
                )
            )
        elif gap < NARROW_GAP * threshold:
            found.append(
                Alert(
                    "narrow_gap",
                    f"only {gap:.3f} separates the farthest pair of the character's photos from "
                    f"the nearest other face ({near.name}): the bar is fragile",
                )
            )
    if same and max(p.distance for p in same) > threshold:
        found.append(
            Alert(
                "beyond_threshold",
                f"some photos of the character are farther apart than the backend's threshold "
                f"({max(p.distance for p in same):.3f} > {threshold:g}): the bar cannot accept "
                "all of them",
            )
        )
    if proposal is not None and proposal.capped:
        found.append(
            Alert(
                "capped",
                f"the rule's bar lay beyond the backend's threshold; it is held at {threshold:g}",
            )
        )
    return found
