"""Rows of the evaluation tables (migration 0005): cells, sweeps, cards, loop turns.

Plain functions over a `sqlite3.Connection`; every write is one explicit transaction, except
:func:`insert_cell`, which is meant to run inside the ingest transaction of its image.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from likeness.store.db import transaction, utc_now


@dataclass(frozen=True)
class CellRow:
    """One generated image and its scores, keyed by the hash of its resolved recipe."""

    key: str
    recipe: dict[str, Any]
    seed: int
    prompt: str
    image_sha: str | None
    generation: dict[str, Any]
    score: dict[str, Any] | None
    error: str | None

    @property
    def finished(self) -> bool:
        """Generated and scored: nothing left to do for this cell."""
        return self.image_sha is not None and self.score is not None


def _cell(row: sqlite3.Row) -> CellRow:
    return CellRow(
        key=row["cell_key"],
        recipe=json.loads(row["recipe"]),
        seed=row["seed"],
        prompt=row["prompt"],
        image_sha=row["image_sha"],
        generation=json.loads(row["generation"]),
        score=json.loads(row["score"]) if row["score"] else None,
        error=row["error"],
    )


def get_cell(conn: sqlite3.Connection, key: str) -> CellRow | None:
    row = conn.execute("SELECT * FROM sweep_cells WHERE cell_key = ?", (key,)).fetchone()
    return _cell(row) if row else None


def get_cells(conn: sqlite3.Connection, keys: list[str]) -> dict[str, CellRow]:
    found: dict[str, CellRow] = {}
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        rows = conn.execute(
            f"SELECT * FROM sweep_cells WHERE cell_key IN ({', '.join('?' for _ in chunk)})",
            chunk,
        ).fetchall()
        found.update({r["cell_key"]: _cell(r) for r in rows})
    return found


def insert_cell(
    conn: sqlite3.Connection,
    *,
    key: str,
    recipe: dict[str, Any],
    seed: int,
    prompt: str,
    image_sha: str | None,
    generation: dict[str, Any],
    error: str | None = None,
) -> None:
    """Insert or complete a cell row (no transaction of its own: call it inside one).

    A row that already has an image keeps it; a row left by a failed attempt gets the image.
    """
    conn.execute(
        "INSERT INTO sweep_cells (cell_key, recipe, seed, prompt, image_sha, generation, error, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(cell_key) DO UPDATE SET "
        "image_sha = COALESCE(sweep_cells.image_sha, excluded.image_sha), "
        "generation = CASE WHEN sweep_cells.image_sha IS NULL THEN excluded.generation "
        "ELSE sweep_cells.generation END, error = excluded.error",
        (
            key,
            json.dumps(recipe, sort_keys=True),
            seed,
            prompt,
            image_sha,
            json.dumps(generation, sort_keys=True, default=str),
            error,
            utc_now(),
        ),
    )


def set_cell_score(conn: sqlite3.Connection, key: str, score: dict[str, Any]) -> None:
    with transaction(conn):
        conn.execute(
            "UPDATE sweep_cells SET score = ?, error = NULL, scored_at = ? WHERE cell_key = ?",
            (json.dumps(score, sort_keys=True), utc_now(), key),
        )


# -- sweeps -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepRow:
    id: int
    name: str
    spec_hash: str
    spec: dict[str, Any]
    engine: str
    created_at: str
    finished_at: str | None


def _sweep(row: sqlite3.Row) -> SweepRow:
    return SweepRow(
        id=row["id"],
        name=row["name"],
        spec_hash=row["spec_hash"],
        spec=json.loads(row["spec"]),
        engine=row["engine"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
    )


def open_sweep(
    conn: sqlite3.Connection,
    *,
    name: str,
    spec_hash: str,
    spec: dict[str, Any],
    engine: str,
    members: list[tuple[str, str, dict[str, Any]]],
) -> SweepRow:
    """The sweep with this spec hash, created with its members (cell key, config key, config)
    the first time; the same spec run again finds the same row."""
    with transaction(conn):
        row = conn.execute("SELECT * FROM sweeps WHERE spec_hash = ?", (spec_hash,)).fetchone()
        if row is None:
            cur = conn.execute(
                "INSERT INTO sweeps (name, spec_hash, spec, engine, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (name, spec_hash, json.dumps(spec, sort_keys=True), engine, utc_now()),
            )
            sweep_id = cur.lastrowid
            conn.executemany(
                "INSERT OR IGNORE INTO sweep_members (sweep_id, cell_key, position, config_key, "
                "config) VALUES (?, ?, ?, ?, ?)",
                [
                    (sweep_id, key, i, config_key, json.dumps(config, sort_keys=True))
                    for i, (key, config_key, config) in enumerate(members)
                ],
            )
            row = conn.execute("SELECT * FROM sweeps WHERE id = ?", (sweep_id,)).fetchone()
    return _sweep(row)


def finish_sweep(conn: sqlite3.Connection, sweep_id: int) -> None:
    with transaction(conn):
        conn.execute("UPDATE sweeps SET finished_at = ? WHERE id = ?", (utc_now(), sweep_id))


# -- cards --------------------------------------------------------------------------------
@dataclass(frozen=True)
class CardRow:
    id: int
    label: str
    run_key: str
    recipe: dict[str, Any]
    recipe_hash: str
    model_sha256: str | None
    lora_sha256s: list[str | None]
    spec: dict[str, Any]
    spec_hash: str
    tries: int
    created_at: str
    finished_at: str | None
    summary: dict[str, Any] | None


def _card(row: sqlite3.Row) -> CardRow:
    return CardRow(
        id=row["id"],
        label=row["label"],
        run_key=row["run_key"],
        recipe=json.loads(row["recipe"]),
        recipe_hash=row["recipe_hash"],
        model_sha256=row["model_sha256"],
        lora_sha256s=json.loads(row["lora_sha256s"]),
        spec=json.loads(row["spec"]),
        spec_hash=row["spec_hash"],
        tries=row["tries"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
        summary=json.loads(row["summary"]) if row["summary"] else None,
    )


def get_card(conn: sqlite3.Connection, label: str) -> CardRow | None:
    row = conn.execute("SELECT * FROM cards WHERE label = ?", (label,)).fetchone()
    return _card(row) if row else None


def list_cards(conn: sqlite3.Connection) -> list[CardRow]:
    """Every card, oldest first."""
    return [_card(r) for r in conn.execute("SELECT * FROM cards ORDER BY id").fetchall()]


def create_card(
    conn: sqlite3.Connection,
    *,
    label: str,
    run_key: str,
    recipe: dict[str, Any],
    recipe_hash: str,
    spec: dict[str, Any],
    spec_hash: str,
    tries: int,
) -> CardRow:
    with transaction(conn):
        conn.execute(
            "INSERT INTO cards (label, run_key, recipe, recipe_hash, spec, spec_hash, tries, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                label,
                run_key,
                json.dumps(recipe, sort_keys=True),
                recipe_hash,
                json.dumps(spec, sort_keys=True),
                spec_hash,
                tries,
                utc_now(),
            ),
        )
    card = get_card(conn, label)
    assert card is not None
    return card


def set_card_models(
    conn: sqlite3.Connection, card_id: int, model_sha256: str | None, loras: list[str | None]
) -> None:
    with transaction(conn):
        conn.execute(
            "UPDATE cards SET model_sha256 = COALESCE(model_sha256, ?), lora_sha256s = ? "
            "WHERE id = ?",
            (model_sha256, json.dumps(loras), card_id),
        )


def finish_card(conn: sqlite3.Connection, card_id: int, summary: dict[str, Any]) -> None:
    with transaction(conn):
        conn.execute(
            "UPDATE cards SET finished_at = ?, summary = ? WHERE id = ?",
            (utc_now(), json.dumps(summary, sort_keys=True), card_id),
        )


@dataclass(frozen=True)
class AttemptRow:
    shot: str
    attempt: int
    cell_key: str
    passed: bool
    reasons: tuple[str, ...]


def card_attempts(conn: sqlite3.Connection, card_id: int) -> list[AttemptRow]:
    rows = conn.execute(
        "SELECT * FROM card_attempts WHERE card_id = ? ORDER BY shot, attempt", (card_id,)
    ).fetchall()
    return [
        AttemptRow(
            r["shot"],
            r["attempt"],
            r["cell_key"],
            bool(r["passed"]),
            tuple(json.loads(r["reasons"])),
        )
        for r in rows
    ]


def add_attempt(conn: sqlite3.Connection, card_id: int, attempt: AttemptRow) -> None:
    with transaction(conn):
        conn.execute(
            "INSERT OR REPLACE INTO card_attempts (card_id, shot, attempt, cell_key, passed, "
            "reasons, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                card_id,
                attempt.shot,
                attempt.attempt,
                attempt.cell_key,
                int(attempt.passed),
                json.dumps(list(attempt.reasons)),
                utc_now(),
            ),
        )


# -- loop turns -----------------------------------------------------------------------------
@dataclass(frozen=True)
class TurnRow:
    id: int
    recipe: dict[str, Any]
    recipe_hash: str
    n: int
    first_seed: int
    state: str
    created_at: str
    queued_at: str | None


@dataclass(frozen=True)
class CandidateRow:
    position: int
    cell_key: str
    outcome: str | None
    reason: str | None


def _turn(row: sqlite3.Row) -> TurnRow:
    return TurnRow(
        id=row["id"],
        recipe=json.loads(row["recipe"]),
        recipe_hash=row["recipe_hash"],
        n=row["n"],
        first_seed=row["first_seed"],
        state=row["state"],
        created_at=row["created_at"],
        queued_at=row["queued_at"],
    )


def latest_turn(conn: sqlite3.Connection) -> TurnRow | None:
    row = conn.execute("SELECT * FROM loop_turns ORDER BY id DESC LIMIT 1").fetchone()
    return _turn(row) if row else None


def get_turn(conn: sqlite3.Connection, turn_id: int) -> TurnRow | None:
    row = conn.execute("SELECT * FROM loop_turns WHERE id = ?", (turn_id,)).fetchone()
    return _turn(row) if row else None


def loop_images_made(conn: sqlite3.Connection) -> int:
    """How many candidates every turn so far asked for (the next turn's seeds start after)."""
    return conn.execute("SELECT COALESCE(SUM(n), 0) FROM loop_turns").fetchone()[0]


def create_turn(
    conn: sqlite3.Connection,
    recipe: dict[str, Any],
    recipe_hash: str,
    n: int,
    first_seed: int,
    after: int | None = None,
) -> TurnRow:
    """Start a turn, unless another process started one since the caller saw turn `after`
    (None: no turn): then that newer turn is returned, so two `likeness loop` runs at once
    share a turn instead of making two."""
    with transaction(conn):
        latest = conn.execute("SELECT MAX(id) FROM loop_turns").fetchone()[0]
        if latest != after:
            row = conn.execute("SELECT * FROM loop_turns WHERE id = ?", (latest,)).fetchone()
            return _turn(row)
        cur = conn.execute(
            "INSERT INTO loop_turns (recipe, recipe_hash, n, first_seed, state, created_at) "
            "VALUES (?, ?, ?, ?, 'generating', ?)",
            (json.dumps(recipe, sort_keys=True), recipe_hash, n, first_seed, utc_now()),
        )
        row = conn.execute("SELECT * FROM loop_turns WHERE id = ?", (cur.lastrowid,)).fetchone()
    return _turn(row)


def mark_turn_queued(conn: sqlite3.Connection, turn_id: int) -> None:
    with transaction(conn):
        conn.execute(
            "UPDATE loop_turns SET state = 'queued', queued_at = ? WHERE id = ?",
            (utc_now(), turn_id),
        )


def turn_candidates(conn: sqlite3.Connection, turn_id: int) -> list[CandidateRow]:
    rows = conn.execute(
        "SELECT * FROM loop_candidates WHERE turn_id = ? ORDER BY position", (turn_id,)
    ).fetchall()
    return [CandidateRow(r["position"], r["cell_key"], r["outcome"], r["reason"]) for r in rows]


def set_candidate(
    conn: sqlite3.Connection,
    turn_id: int,
    candidate: CandidateRow,
) -> None:
    """Record a candidate's outcome (no transaction of its own: call it inside one)."""
    conn.execute(
        "INSERT OR REPLACE INTO loop_candidates (turn_id, position, cell_key, outcome, reason) "
        "VALUES (?, ?, ?, ?, ?)",
        (turn_id, candidate.position, candidate.cell_key, candidate.outcome, candidate.reason),
    )
