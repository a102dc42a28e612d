"""API tokens: read from the environment or the OS keyring, held so they never leak.

A token is looked up when an engine is built: ``REPLICATE_API_TOKEN`` / ``FAL_KEY`` first, then
the OS keyring (service ``likeness``, user name = the variable's name) when the optional
``keyring`` package is installed. :class:`ApiToken` hides its value from ``repr`` and ``str``,
so it cannot end up in provenance, job records, logs or error lines by accident; only the
HTTP layer reads ``.value`` to build the ``Authorization`` header.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from likeness.engines.hosted.errors import HostedError

KEYRING_SERVICE = "likeness"
TOKEN_VARIABLES = {"replicate": "REPLICATE_API_TOKEN", "fal": "FAL_KEY"}


class ApiToken:
    """A secret string; ``str()`` and ``repr()`` show only where it came from."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str) -> None:
        self._value = value
        self.source = source

    @property
    def value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"ApiToken(<hidden>, from {self.source})"

    __str__ = __repr__


def _keyring_lookup(service: str, name: str) -> str | None:
    try:
        import keyring
    except ImportError:
        return None
    try:
        return keyring.get_password(service, name)
    except Exception:  # no usable keyring backend on this machine
        return None


def find_token(
    provider: str,
    *,
    environ: Mapping[str, str] | None = None,
    keyring_get: Callable[[str, str], str | None] = _keyring_lookup,
) -> ApiToken:
    """The token for ``provider`` ("replicate" or "fal"), or one line saying how to set it."""
    variable = TOKEN_VARIABLES[provider]
    env = os.environ if environ is None else environ
    value = (env.get(variable) or "").strip()
    if value:
        return ApiToken(value, f"${variable}")
    stored = (keyring_get(KEYRING_SERVICE, variable) or "").strip()
    if stored:
        return ApiToken(stored, f"keyring {KEYRING_SERVICE}/{variable}")
    raise HostedError(
        f"{provider}: no API token; set {variable} in the environment or store it in the OS "
        f"keyring (`keyring set {KEYRING_SERVICE} {variable}`, with the keyring package)"
    )
