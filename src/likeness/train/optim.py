"""The optimizer and the learning-rate schedule of a run.

AdamW from torch, or bitsandbytes' 8-bit AdamW (imported only when asked; CUDA only). The
schedule is a linear warmup from 0 over ``warmup_steps``, then constant, cosine or linear decay
to 0 at the last step: a ``LambdaLR`` whose state is plain numbers, so it resumes exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from likeness.recipes import RecipeError
from likeness.train.recipe import TrainRecipe


def build_optimizer(recipe: TrainRecipe, groups: Sequence[tuple[str, list[Any]]]) -> Any:
    """AdamW over parameter groups (``("unet", params)``, ``("text_encoder", params)``);
    text encoders get ``text_encoder_lr``."""
    param_groups = [
        {
            "params": params,
            "lr": recipe.learning_rate
            if component in ("unet", "transformer")
            else recipe.te_learning_rate,
        }
        for component, params in groups
        if params
    ]
    if recipe.optimizer == "adamw8bit":
        try:
            import bitsandbytes as bnb  # noqa: PLC0415 - optional, CUDA only
        except ImportError:
            raise RecipeError(
                "optimizer",
                "adamw8bit",
                "needs bitsandbytes (CUDA only): pip install bitsandbytes==0.50.2, or use 'adamw'",
            ) from None
        return bnb.optim.AdamW8bit(param_groups, weight_decay=recipe.weight_decay)
    import torch

    return torch.optim.AdamW(param_groups, weight_decay=recipe.weight_decay)


def lr_factor(schedule: str, warmup: int, total: int) -> Callable[[int], float]:
    """Multiplier of the base learning rate after ``step`` optimizer steps."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def build_scheduler(optimizer: Any, recipe: TrainRecipe, total_steps: int) -> Any:
    import torch

    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor(recipe.lr_schedule, recipe.warmup_steps, total_steps)
    )
