"""Likeness: build a consistent AI character, and measure every step of the loop."""

__version__ = "0.1.0"
