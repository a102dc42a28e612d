"""Scoring stored images against the workspace's source photos, with the analysis cache.

The references are the workspace's `source` images (not excluded): the photos of the person
the character must look like. Analyses are cached by image hash in the workspace database, so
scoring the same image twice costs a lookup.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from likeness.store.images import list_images

if TYPE_CHECKING:
    from likeness.metrics import ImageScore, Instruments, Thresholds
    from likeness.workspace import Workspace


PARALLEL_FROM = 4
"""Analyse the references over every core only when there are more than this many (starting
worker processes costs more than analysing a handful inline)."""


class NoReferences(RuntimeError):
    """The workspace has no source photos to score identity against."""


def reference_paths(ws: Workspace) -> list[Path]:
    """Blob paths of the workspace's source photos, in ingest order."""
    return [ws.blobs.path(r.sha256) for r in list_images(ws.db, origins=["source"])]


class WorkspaceScorer:
    """Scores images of one workspace against its source photos.

    Args:
        ws (`Workspace`): where the images, references and analysis cache live.
        instruments (`Instruments`, *optional*): the measuring models (default dlib + fer +
            MediaPipe); reused across calls so models load once.
        thresholds (`Thresholds`, *optional*): where numbers become verdicts and flags; by
            default identity passes at the workspace's identity.pass_match.
        references (*optional*): reference image paths instead of the source photos.

    Example::

        scorer = WorkspaceScorer(ws)
        score = scorer.score([sha])[0]
    """

    def __init__(
        self,
        ws: Workspace,
        instruments: Instruments | None = None,
        thresholds: Thresholds | None = None,
        references: Sequence[Path] | None = None,
    ) -> None:
        from likeness.metrics import Instruments, Thresholds

        self.ws = ws
        self.instruments = instruments or Instruments()
        self.thresholds = thresholds or Thresholds(pass_match=ws.settings.identity.pass_match)
        self.references = list(references) if references is not None else reference_paths(ws)
        if not self.references:
            raise NoReferences(
                f"{ws.root}: no source photos to score identity against; "
                "run `likeness add PHOTOS --origin source` first"
            )
        self._warm = False

    def score(self, shas: Sequence[str], workers: int | None = 1) -> list[ImageScore]:
        """Scores of stored images (by sha256), in order. The first call analyses the
        references (over every core when there are many); later calls find them cached."""
        from likeness.metrics import score_images

        paths = [self.ws.blobs.path(sha) for sha in shas]
        run = score_images(
            paths,
            self.references,
            instruments=self.instruments,
            conn=self.ws.db,
            workers=None if not self._warm and len(self.references) > PARALLEL_FROM else workers,
            thresholds=self.thresholds,
        )
        self._warm = True
        if run.references.calibration is None:
            raise NoReferences(
                f"{self.ws.root}: no face found in any source photo; add photos that show the "
                "character's face"
            )
        return list(run.scores)
