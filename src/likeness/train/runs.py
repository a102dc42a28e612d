"""Training runs as plain data: their checkpoints (judged, with probes), the best one, and
everything the run report draws (:mod:`likeness.report.train`).

Example::

    data = report_data(ws, find_run(ws, "7"))
    write_train_report(data, "train-report/", image_path=ws.blobs.path)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from likeness.train import store

if TYPE_CHECKING:
    from likeness.workspace import Workspace


class RunNotFound(LookupError):
    """No training run answers to the reference; the message lists what exists."""


def checkpoint_dicts(ws: Workspace, run: store.TrainRun) -> list[dict[str, Any]]:
    """The run's checkpoints as ``--json`` shows them: each with ``best`` and, when judged,
    its probes (shot, seed, image, scores, memorisation)."""
    rows = []
    for checkpoint in store.list_checkpoints(ws.db, run.id):
        data = checkpoint.to_dict()
        data["best"] = checkpoint.id == run.best_checkpoint
        hash_ = (checkpoint.metrics or {}).get("judge_hash")
        data["probes"] = (
            [p.to_dict() for p in store.list_probes(ws.db, checkpoint.id, hash_)] if hash_ else []
        )
        rows.append(data)
    return rows


def best_dict(ws: Workspace, run: store.TrainRun) -> dict[str, Any] | None:
    if run.best_checkpoint is None:
        return None
    best = store.get_checkpoint(ws.db, run.best_checkpoint)
    return None if best is None else {**best.to_dict(), "best": True}


def find_run(ws: Workspace, ref: str) -> store.TrainRun:
    """A run by id, or the latest run of that name (the recipe's output name)."""
    ref = ref.strip()
    if ref.isdigit():
        run = store.get_run(ws.db, int(ref))
        if run is not None:
            return run
    for run in store.list_runs(ws.db):
        if run.name == ref:
            return run
    known = ", ".join(f"{r.id} ({r.name})" for r in store.list_runs(ws.db)[:10]) or "none yet"
    raise RunNotFound(f"no training run {ref!r} (runs: {known}); see `likeness train RECIPE`")


def report_data(ws: Workspace, run: store.TrainRun) -> dict[str, Any]:
    """The `likeness train report --json` shape: the run, its loss curve, its checkpoints
    (metrics, probes, best) and the objective that ranked them."""
    from likeness.evaluate.objective import Objective

    return {
        "run": run.to_dict(),
        "losses": [list(row) for row in store.losses(ws.db, run.id)],
        "checkpoints": checkpoint_dicts(ws, run),
        "best": best_dict(ws, run),
        "objective": Objective().describe(),
    }
