"""Hosted engines: Replicate and fal run FLUX LoRA models (and train them) over HTTP.

The code the two providers share (auth, retry rules, polling, downloads, budget) lives in
:mod:`.http` and :mod:`.budget`; each provider's calls in :mod:`.replicate` and :mod:`.fal`;
the recipe mapping in :mod:`.models`; generation in :mod:`.engine`; LoRA training in
:mod:`.training`. See docs/hosted.md.
"""

from likeness.engines.hosted.budget import Budget, Price
from likeness.engines.hosted.engine import PROVIDERS, HostedEngine
from likeness.engines.hosted.errors import HostedBudgetExceeded, HostedError
from likeness.engines.hosted.secrets import ApiToken, find_token

__all__ = [
    "PROVIDERS",
    "ApiToken",
    "Budget",
    "HostedBudgetExceeded",
    "HostedEngine",
    "HostedError",
    "Price",
    "find_token",
]
