"""What a command may spend on a hosted API, counted before each submission.

Neither Replicate nor fal reports a price in its prediction or request answers, so each cost is
an *estimate* from the ``[hosted] prices`` table (USD per image, megapixel, second, step or
run), marked ``"cost_source": "estimated"`` wherever it is recorded. The guard counts images
and estimated dollars for one engine (one command): before a prediction is submitted it must
fit under ``max_images`` and ``max_cost``, or :class:`HostedBudgetExceeded` stops the command.

Example::

    budget = Budget(max_images=20, max_cost=1.0)
    budget.admit(0.032, "image 3 of black-forest-labs/flux-dev-lora")  # raises when over
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from likeness.config import parse_price
from likeness.engines.hosted.errors import HostedBudgetExceeded


@dataclass(frozen=True)
class Price:
    usd: float
    unit: str

    def estimate(
        self,
        *,
        images: int = 1,
        megapixels: float = 0.0,
        seconds: float = 0.0,
        steps: int = 0,
    ) -> float:
        """USD for one run measured in this price's unit."""
        amount = {
            "image": images,
            "megapixel": megapixels,
            "second": seconds,
            "step": steps,
            "run": 1,
        }[self.unit]
        return round(self.usd * amount, 6)

    def __str__(self) -> str:
        return f"${self.usd:g}/{self.unit}"


def find_price(prices: Mapping[str, str], provider: str, model: str) -> Price | None:
    """The price of ``provider:model`` (the model without a ``:version``), if listed."""
    key = f"{provider}:{model.split(':', 1)[0]}"
    text = prices.get(key)
    if text is None:
        return None
    usd, unit = parse_price(text, f"hosted.prices.{key}")
    return Price(usd, unit)


class Budget:
    """Images submitted and estimated USD spent by one engine; ``0`` limits mean none."""

    def __init__(self, max_images: int = 0, max_cost: float = 0.0) -> None:
        self.max_images = max_images
        self.max_cost = max_cost
        self.images = 0
        self.cost = 0.0

    @property
    def limited(self) -> bool:
        return self.max_images > 0 or self.max_cost > 0

    def admit(self, estimate: float | None, what: str) -> None:
        """Count one more submission of ``estimate`` USD, or raise before it is sent."""
        if self.max_images and self.images + 1 > self.max_images:
            raise HostedBudgetExceeded(
                f"budget: {self.images} predictions submitted, max_images = {self.max_images}; "
                f"{what} was not submitted (raise --max-images or [hosted] max_images)"
            )
        if self.max_cost:
            if estimate is None:
                raise HostedBudgetExceeded(
                    f"budget: no price is known for {what}, so max_cost = {self.max_cost:g} USD "
                    "cannot be kept; add it to [hosted] prices"
                )
            if self.cost + estimate > self.max_cost + 1e-9:
                raise HostedBudgetExceeded(
                    f"budget: ${self.cost:.4f} estimated so far + ${estimate:.4f} for {what} "
                    f"would pass max_cost = ${self.max_cost:g}; it was not submitted "
                    "(raise --max-cost or [hosted] max_cost)"
                )
        self.images += 1
        self.cost += estimate or 0.0

    def settle(self, reserved: float | None, final: float | None) -> None:
        """Replace the estimate reserved at submission by the run's final estimate."""
        self.cost += (final or 0.0) - (reserved or 0.0)
