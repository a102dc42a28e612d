"""Captions with the trigger token.

The caption template holds what describes every image of the character (`photo of {class_word}`);
the trigger is placed at the start (the kohya/ai-toolkit habit), at the end, or not at all, unless
the template places it itself with `{trigger}`. A trigger that appears twice is collapsed to one.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

from likeness.config import TriggerPlacement

_FIELDS = {"trigger", "class_word", "name"}


class CaptionError(ValueError):
    pass


@dataclass(frozen=True)
class CaptionTemplate:
    template: str
    trigger: str
    class_word: str
    placement: TriggerPlacement = "start"
    name: str = ""

    def check(self) -> None:
        """Refuse unknown `{fields}` up front, naming them."""
        for _, field_name, _, _ in string.Formatter().parse(self.template):
            if field_name is not None and field_name not in _FIELDS:
                raise CaptionError(
                    f"caption template field {{{field_name}}} is unknown; "
                    f"use {', '.join('{' + f + '}' for f in sorted(_FIELDS))}"
                )
        if self.placement != "none" and not self.trigger:
            raise CaptionError("captions need a trigger: set character.trigger in likeness.toml")

    def render(self) -> str:
        self.check()
        body = self.template.format(
            trigger=self.trigger, class_word=self.class_word, name=self.name
        )
        body = _tidy(body)
        if self.trigger and "{trigger}" not in self.template:
            if self.placement == "start":
                body = f"{self.trigger}, {body}" if body else self.trigger
            elif self.placement == "end":
                body = f"{body}, {self.trigger}" if body else self.trigger
        return dedupe_trigger(body, self.trigger)


def dedupe_trigger(text: str, trigger: str) -> str:
    """Keep the first occurrence of the trigger token, drop repeats."""
    if not trigger:
        return text
    pattern = re.compile(rf"(?<![\w]){re.escape(trigger)}(?![\w])")
    seen = False

    def keep_first(match: re.Match[str]) -> str:
        nonlocal seen
        if seen:
            return ""
        seen = True
        return match.group(0)

    return _tidy(pattern.sub(keep_first, text))


def _tidy(text: str) -> str:
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+,", ",", text)
    text = re.sub(r",(\s*,)+", ",", text)
    return text.strip(" ,")
