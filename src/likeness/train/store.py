"""Train runs, checkpoints and losses in the workspace database (migrations 0007, 0009).

A judge finds the checkpoints of a run with :func:`list_checkpoints`, keeps each probe it
renders with :func:`put_probe` and records what it measured with
:func:`set_checkpoint_metrics`; :func:`set_best` marks the checkpoint it ranks first. The loss
curve is :func:`losses`.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from likeness.store.db import transaction, utc_now


@dataclass(frozen=True)
class TrainRun:
    id: int
    job_id: int
    recipe_hash: str
    recipe: dict[str, Any]
    name: str
    family: str
    base_model: str
    base_model_sha256: str | None
    dataset: str
    dataset_version_id: int
    dataset_sha256: str
    skipped: tuple[str, ...]
    output_dir: str
    total_steps: int
    step: int
    state: str
    error: str | None
    final_lora: str | None
    cache_stats: dict[str, int]
    created_at: str
    finished_at: str | None
    best_checkpoint: int | None = None
    """Id of the checkpoint judging ranks first (None until one is judged)."""

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["skipped"] = list(self.skipped)
        return data


@dataclass(frozen=True)
class Checkpoint:
    id: int
    run_id: int
    step: int
    path: str
    sha256: str
    loss: float | None
    fixed_loss: float | None
    lora_id: int | None
    metrics: dict[str, Any] | None
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Probe:
    """One probe image of a checkpoint: a card shot at a fixed seed."""

    checkpoint_id: int
    judge_hash: str
    shot: str
    seed: int
    prompt: str
    image_sha: str | None
    score: dict[str, Any] | None
    memorised: dict[str, Any] | None
    generation: dict[str, Any]
    error: str | None
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        """The probe as ``likeness train --json`` and the report show it (no provenance)."""
        score = self.score or {}
        return {
            "shot": self.shot,
            "seed": self.seed,
            "prompt": self.prompt,
            "image_sha": self.image_sha,
            "match": score.get("match"),
            "pass": score.get("pass"),
            "grain": score.get("grain"),
            "plastic": score.get("plastic"),
            "angle": score.get("angle"),
            "expression": score.get("expression"),
            "flags": list(score.get("flags") or []),
            "memorised": self.memorised,
            "error": self.error,
        }


def _probe(row: sqlite3.Row) -> Probe:
    data = dict(row)
    for key in ("score", "memorised"):
        data[key] = json.loads(data[key]) if data[key] is not None else None
    data["generation"] = json.loads(data["generation"])
    return Probe(**data)


def _run(row: sqlite3.Row) -> TrainRun:
    data = dict(row)
    data["recipe"] = json.loads(data["recipe"])
    data["skipped"] = tuple(json.loads(data["skipped"]))
    data["cache_stats"] = json.loads(data["cache_stats"])
    return TrainRun(**data)


def _checkpoint(row: sqlite3.Row) -> Checkpoint:
    data = dict(row)
    data["metrics"] = json.loads(data["metrics"]) if data["metrics"] is not None else None
    return Checkpoint(**data)


def find_run(conn: sqlite3.Connection, job_id: int) -> TrainRun | None:
    row = conn.execute("SELECT * FROM train_runs WHERE job_id = ?", (job_id,)).fetchone()
    return _run(row) if row else None


def get_run(conn: sqlite3.Connection, run_id: int) -> TrainRun | None:
    row = conn.execute("SELECT * FROM train_runs WHERE id = ?", (run_id,)).fetchone()
    return _run(row) if row else None


def finished_run(conn: sqlite3.Connection, recipe_hash: str) -> TrainRun | None:
    """The latest run of this recipe that trained to the end and whose LoRA file is there."""
    for row in conn.execute(
        "SELECT * FROM train_runs WHERE recipe_hash = ? AND state = 'done' ORDER BY id DESC",
        (recipe_hash,),
    ):
        run = _run(row)
        if run.final_lora and Path(run.final_lora).is_file():
            return run
    return None


def list_runs(conn: sqlite3.Connection, *, dataset_version_id: int | None = None) -> list[TrainRun]:
    """Newest first; only the runs on one dataset version when given."""
    sql = "SELECT * FROM train_runs"
    params: list[Any] = []
    if dataset_version_id is not None:
        sql += " WHERE dataset_version_id = ?"
        params.append(dataset_version_id)
    return [_run(r) for r in conn.execute(sql + " ORDER BY id DESC", params)]


def create_run(
    conn: sqlite3.Connection,
    *,
    job_id: int,
    recipe_hash: str,
    recipe: Mapping[str, Any],
    name: str,
    family: str,
    base_model: str,
    base_model_sha256: str | None,
    dataset: str,
    dataset_version_id: int,
    dataset_sha256: str,
    skipped: Sequence[str],
    output_dir: str,
    total_steps: int,
) -> TrainRun:
    with transaction(conn):
        run_id = conn.execute(
            "INSERT INTO train_runs (job_id, recipe_hash, recipe, name, family, base_model, "
            "base_model_sha256, dataset, dataset_version_id, dataset_sha256, skipped, "
            "output_dir, total_steps, state, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', ?)",
            (
                job_id,
                recipe_hash,
                json.dumps(dict(recipe), sort_keys=True),
                name,
                family,
                base_model,
                base_model_sha256,
                dataset,
                dataset_version_id,
                dataset_sha256,
                json.dumps(list(skipped)),
                output_dir,
                total_steps,
                utc_now(),
            ),
        ).lastrowid
    run = get_run(conn, run_id)
    assert run is not None
    return run


def set_output_dir(conn: sqlite3.Connection, run_id: int, output_dir: str) -> None:
    with transaction(conn):
        conn.execute("UPDATE train_runs SET output_dir = ? WHERE id = ?", (output_dir, run_id))


def mark_running(conn: sqlite3.Connection, run_id: int) -> None:
    with transaction(conn):
        conn.execute(
            "UPDATE train_runs SET state = 'running', error = NULL, finished_at = NULL "
            "WHERE id = ?",
            (run_id,),
        )


def record_checkpoint(
    conn: sqlite3.Connection,
    *,
    run_id: int,
    step: int,
    path: str,
    sha256: str,
    loss: float | None,
    losses: Iterable[tuple[int, float, float]],
    fixed_loss: float | None = None,
    lora_id: int | None = None,
) -> int:
    """Record a checkpoint and the losses (step, loss, lr) since the previous one, and move
    the run's step; idempotent (a resumed run records a checkpoint it had written but not
    recorded before the kill). Returns the checkpoint id."""
    with transaction(conn):
        conn.executemany(
            "INSERT OR IGNORE INTO train_losses (run_id, step, loss, lr) VALUES (?, ?, ?, ?)",
            [(run_id, s, loss_value, lr) for s, loss_value, lr in losses],
        )
        conn.execute(
            "INSERT INTO train_checkpoints (run_id, step, path, sha256, loss, fixed_loss, "
            "lora_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, step) "
            "DO UPDATE SET path = excluded.path, sha256 = excluded.sha256, "
            "loss = excluded.loss, fixed_loss = excluded.fixed_loss, "
            "lora_id = COALESCE(excluded.lora_id, lora_id)",
            (run_id, step, path, sha256, loss, fixed_loss, lora_id, utc_now()),
        )
        conn.execute("UPDATE train_runs SET step = MAX(step, ?) WHERE id = ?", (step, run_id))
        row = conn.execute(
            "SELECT id FROM train_checkpoints WHERE run_id = ? AND step = ?", (run_id, step)
        ).fetchone()
    return row[0]


def list_checkpoints(conn: sqlite3.Connection, run_id: int) -> list[Checkpoint]:
    rows = conn.execute(
        "SELECT * FROM train_checkpoints WHERE run_id = ? ORDER BY step", (run_id,)
    ).fetchall()
    return [_checkpoint(r) for r in rows]


def set_checkpoint_metrics(
    conn: sqlite3.Connection, checkpoint_id: int, metrics: Mapping[str, Any]
) -> None:
    """Store what a judge measured for a checkpoint (JSON)."""
    with transaction(conn):
        conn.execute(
            "UPDATE train_checkpoints SET metrics = ? WHERE id = ?",
            (json.dumps(dict(metrics), sort_keys=True), checkpoint_id),
        )


def get_checkpoint(conn: sqlite3.Connection, checkpoint_id: int) -> Checkpoint | None:
    row = conn.execute("SELECT * FROM train_checkpoints WHERE id = ?", (checkpoint_id,)).fetchone()
    return _checkpoint(row) if row else None


def set_best(conn: sqlite3.Connection, run_id: int, checkpoint_id: int | None) -> None:
    """Mark the checkpoint judging ranks first (None: no checkpoint is judged)."""
    with transaction(conn):
        conn.execute(
            "UPDATE train_runs SET best_checkpoint = ? WHERE id = ?", (checkpoint_id, run_id)
        )


def judged_loras(conn: sqlite3.Connection) -> dict[int, tuple[dict[str, Any] | None, bool]]:
    """LoRA id -> (metrics of its checkpoint, whether it is its run's best), for every LoRA
    that is a checkpoint of a training run."""
    rows = conn.execute(
        "SELECT c.lora_id, c.metrics, r.best_checkpoint = c.id AS best FROM train_checkpoints c "
        "JOIN train_runs r ON r.id = c.run_id WHERE c.lora_id IS NOT NULL"
    ).fetchall()
    return {
        r["lora_id"]: (json.loads(r["metrics"]) if r["metrics"] else None, bool(r["best"]))
        for r in rows
    }


# -- probes ------------------------------------------------------------------------------
def list_probes(
    conn: sqlite3.Connection, checkpoint_id: int, judge_hash: str | None = None
) -> list[Probe]:
    """The probes of a checkpoint (made under ``judge_hash`` when given), by shot then seed."""
    sql = "SELECT * FROM train_probes WHERE checkpoint_id = ?"
    params: list[Any] = [checkpoint_id]
    if judge_hash is not None:
        sql += " AND judge_hash = ?"
        params.append(judge_hash)
    return [_probe(r) for r in conn.execute(sql + " ORDER BY rowid", params)]


def put_probe(
    conn: sqlite3.Connection,
    *,
    checkpoint_id: int,
    judge_hash: str,
    shot: str,
    seed: int,
    prompt: str,
    image_sha: str | None,
    generation: Mapping[str, Any],
    error: str | None = None,
) -> None:
    """Record a rendered probe (or the engine's failure); a failed one is replaced when it is
    rendered again, a stored image never is."""
    with transaction(conn):
        conn.execute(
            "INSERT INTO train_probes (checkpoint_id, judge_hash, shot, seed, prompt, image_sha, "
            "generation, error, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (checkpoint_id, judge_hash, shot, seed) DO UPDATE SET "
            "prompt = excluded.prompt, image_sha = excluded.image_sha, "
            "generation = excluded.generation, error = excluded.error, score = NULL, "
            "memorised = NULL WHERE image_sha IS NULL",
            (
                checkpoint_id,
                judge_hash,
                shot,
                seed,
                prompt,
                image_sha,
                json.dumps(dict(generation), sort_keys=True, default=str),
                error,
                utc_now(),
            ),
        )


def set_probe_scores(
    conn: sqlite3.Connection,
    checkpoint_id: int,
    judge_hash: str,
    scores: Mapping[tuple[str, int], tuple[Mapping[str, Any], Mapping[str, Any] | None]],
) -> None:
    """Store (score, memorised) per (shot, seed) of a checkpoint's probes."""
    with transaction(conn):
        conn.executemany(
            "UPDATE train_probes SET score = ?, memorised = ? WHERE checkpoint_id = ? AND "
            "judge_hash = ? AND shot = ? AND seed = ?",
            [
                (
                    json.dumps(dict(score), sort_keys=True),
                    json.dumps(dict(memo), sort_keys=True) if memo is not None else None,
                    checkpoint_id,
                    judge_hash,
                    shot,
                    seed,
                )
                for (shot, seed), (score, memo) in scores.items()
            ],
        )


def losses(conn: sqlite3.Connection, run_id: int) -> list[tuple[int, float, float]]:
    """The loss curve: (step, loss, lr) in step order."""
    return [
        (r[0], r[1], r[2])
        for r in conn.execute(
            "SELECT step, loss, lr FROM train_losses WHERE run_id = ? ORDER BY step", (run_id,)
        )
    ]


def finish_run(
    conn: sqlite3.Connection,
    run_id: int,
    state: str,
    *,
    error: str | None = None,
    final_lora: str | None = None,
    cache_stats: Mapping[str, int] | None = None,
) -> None:
    """End a run as done, diverged or failed."""
    with transaction(conn):
        conn.execute(
            "UPDATE train_runs SET state = ?, error = ?, final_lora = COALESCE(?, final_lora), "
            "cache_stats = COALESCE(?, cache_stats), finished_at = ? WHERE id = ?",
            (
                state,
                error,
                final_lora,
                json.dumps(dict(cache_stats)) if cache_stats is not None else None,
                utc_now(),
                run_id,
            ),
        )


def set_cache_stats(conn: sqlite3.Connection, run_id: int, stats: Mapping[str, int]) -> None:
    with transaction(conn):
        conn.execute(
            "UPDATE train_runs SET cache_stats = ? WHERE id = ?", (json.dumps(dict(stats)), run_id)
        )


# -- file hashes -------------------------------------------------------------------------
def file_sha256(conn: sqlite3.Connection, path: str | Path) -> str:
    """sha256 of a file, remembered in the database while its (path, size, mtime) holds."""
    resolved = Path(path).expanduser().resolve()
    stat = resolved.stat()
    row = conn.execute(
        "SELECT size, mtime_ns, sha256 FROM file_hashes WHERE path = ?", (str(resolved),)
    ).fetchone()
    if row and row["size"] == stat.st_size and row["mtime_ns"] == stat.st_mtime_ns:
        return row["sha256"]
    digest = hashlib.sha256()
    with open(resolved, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    value = digest.hexdigest()
    with transaction(conn):
        conn.execute(
            "INSERT OR REPLACE INTO file_hashes (path, size, mtime_ns, sha256, hashed_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (str(resolved), stat.st_size, stat.st_mtime_ns, value, utc_now()),
        )
    return value


def component_hash(conn: sqlite3.Connection, model: str | Path, parts: Sequence[str]) -> str:
    """Hash of the files that make a model component: the checkpoint itself for a single
    file; for a diffusers folder, every file under the ``parts`` subfolders (weights,
    configs, tokenizers), so two folders sharing a VAE share its latents."""
    path = Path(model).expanduser()
    if path.is_file():
        return file_sha256(conn, path)
    entries = []
    for part in parts:
        folder = path / part
        if folder.is_dir():
            for file in sorted(p for p in folder.rglob("*") if p.is_file()):
                entries.append([str(file.relative_to(path)), file_sha256(conn, file)])
    blob = json.dumps(entries, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()
