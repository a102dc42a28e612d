"""Run recipes with diffusers on local models (SDXL, SD1.5, FLUX); heavy imports stay lazy."""

from likeness.engines.diffusers.edit import EditSettings
from likeness.engines.diffusers.engine import DiffusersEngine

__all__ = ["DiffusersEngine", "EditSettings"]
