"""Model cards side by side: LoRA v1 vs v2 vs v3 in one table.

Example::

    comparison = compare_cards(ws, ["v1", "v2"])
    comparison.to_json()["cards"][1]["first_try_rate"]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from likeness.evaluate import store
from likeness.evaluate.card import CardError, CardResult, load_card

if TYPE_CHECKING:
    from likeness.workspace import Workspace


@dataclass(frozen=True)
class CardComparison:
    cards: tuple[CardResult, ...]

    @property
    def shot_ids(self) -> list[str]:
        """Every shot id of the compared cards, in first-seen order."""
        ids: list[str] = []
        for card in self.cards:
            ids += [s.shot.id for s in card.shots if s.shot.id not in ids]
        return ids

    def outcome(self, card: CardResult, shot_id: str) -> str:
        """`first_try`, `retry` (passed on a later attempt), `failed` or `missing`."""
        for shot in card.shots:
            if shot.shot.id == shot_id:
                if not shot.attempts:
                    return "missing"
                if shot.first_try:
                    return "first_try"
                return "retry" if shot.passed else "failed"
        return "missing"

    def to_json(self) -> dict[str, Any]:
        """The `likeness card compare --json` shape (see :mod:`likeness.cli.card`)."""
        return {
            "cards": [
                {
                    **c.summary(),
                    "recipe_hash": c.recipe_hash,
                    "model_sha256": c.model_sha256,
                    "lora_sha256s": list(c.lora_sha256s),
                    "spec_hash": c.spec_hash,
                    "created_at": c.created_at,
                }
                for c in self.cards
            ],
            "shots": [
                {"id": shot_id, "results": {c.label: self.outcome(c, shot_id) for c in self.cards}}
                for shot_id in self.shot_ids
            ],
        }


def compare_cards(ws: Workspace, labels: Sequence[str] | None = None) -> CardComparison:
    """The cards called ``labels`` (every card, oldest first, when empty)."""
    if not labels:
        labels = [c.label for c in store.list_cards(ws.db)]
        if not labels:
            raise CardError("no model cards yet; run `likeness card --label v1` first")
    return CardComparison(tuple(load_card(ws, label) for label in labels))
