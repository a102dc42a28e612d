"""Joining Ray: a local instance started for one run, or a cluster started with `ray start`.

Example::

    disconnect = connect("local")       # or "auto", or "10.0.0.5:6379"
    try:
        ...                             # build a pool, run tasks
    finally:
        disconnect()                    # stops the local instance this call started
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path


class ScaleError(RuntimeError):
    """Ray cannot be used as asked (not installed, no cluster there, no room for a worker);
    the message names the setting or flag and the fix."""


def source_root() -> str:
    """The folder the running ``likeness`` package is imported from (workers started on
    this machine get it first on their path, so they run the same code as the driver)."""
    import likeness

    return str(Path(likeness.__file__).resolve().parents[1])


def connect(address: str) -> Callable[[], None]:
    """Connect this process to Ray at ``address``; returns the call that undoes it.

    ``local`` starts Ray on this machine (its workers import this process's ``likeness``);
    ``auto`` joins the cluster this machine is part of; ``HOST:PORT`` joins that head. A
    process already connected (a test session, a notebook) keeps its connection.
    """
    try:
        import ray
    except ImportError:
        raise ScaleError(
            "Ray is not installed; pip install 'likeness[scale]' (or pass --workers 0 to run here)"
        ) from None
    if ray.is_initialized():
        return lambda: None
    quiet = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.ERROR,
    }
    try:
        if address == "local":
            path = os.pathsep.join(p for p in (source_root(), os.environ.get("PYTHONPATH")) if p)
            ray.init(runtime_env={"env_vars": {"PYTHONPATH": path}}, **quiet)
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ScaleError(
            f"--ray {address}: cannot join Ray there ({first}); start a cluster with "
            "`ray start --head` or pass --ray local"
        ) from None
    quiet_driver(True)

    def disconnect() -> None:
        ray.shutdown()
        quiet_driver(False)

    return disconnect


def quiet_driver(quiet: bool) -> None:
    """Keep Ray's own notes about dead workers off this process's stdout (where they would
    break ``--json`` output): the pool reports a lost worker itself, in one line on stderr.
    This is the switch ``ray.util.rpdb`` uses to silence worker output while debugging."""
    import ray._private.worker

    ray._private.worker._worker_logs_enabled = not quiet
