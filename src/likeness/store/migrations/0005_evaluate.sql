-- Sweeps, model cards and loop turns: generated images scored and decided on, resumable.

-- One generated + scored image, identified by the hash of its resolved recipe (seed and
-- prompt included): the same cell is never generated twice, whichever sweep asks for it.
-- The row is written in the same transaction as the image, then `score` is filled in.
CREATE TABLE sweep_cells (
    cell_key    TEXT PRIMARY KEY,
    recipe      TEXT NOT NULL,
    seed        INTEGER NOT NULL,
    prompt      TEXT NOT NULL,
    image_sha   TEXT REFERENCES images(sha256),
    generation  TEXT NOT NULL DEFAULT '{}',
    score       TEXT,
    error       TEXT,
    created_at  TEXT NOT NULL,
    scored_at   TEXT
);

CREATE TABLE sweeps (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    spec_hash   TEXT NOT NULL UNIQUE,
    spec        TEXT NOT NULL,
    engine      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    finished_at TEXT
);

-- Which cells belong to which sweep, and the axis values ("config") that made them.
CREATE TABLE sweep_members (
    sweep_id    INTEGER NOT NULL REFERENCES sweeps(id),
    cell_key    TEXT NOT NULL,
    position    INTEGER NOT NULL,
    config_key  TEXT NOT NULL,
    config      TEXT NOT NULL,
    PRIMARY KEY (sweep_id, cell_key)
);

-- Model cards: one per label, with the recipe and model hashes it was run with.
CREATE TABLE cards (
    id             INTEGER PRIMARY KEY,
    label          TEXT NOT NULL UNIQUE,
    run_key        TEXT NOT NULL,
    recipe         TEXT NOT NULL,
    recipe_hash    TEXT NOT NULL,
    model_sha256   TEXT,
    lora_sha256s   TEXT NOT NULL DEFAULT '[]',
    spec           TEXT NOT NULL,
    spec_hash      TEXT NOT NULL,
    tries          INTEGER NOT NULL,
    created_at     TEXT NOT NULL,
    finished_at    TEXT,
    summary        TEXT
);

-- Every attempt at every shot of a card: its image, scores and verdict.
CREATE TABLE card_attempts (
    card_id    INTEGER NOT NULL REFERENCES cards(id),
    shot       TEXT NOT NULL,
    attempt    INTEGER NOT NULL,
    cell_key   TEXT NOT NULL,
    passed     INTEGER NOT NULL,
    reasons    TEXT NOT NULL DEFAULT '[]',
    created_at TEXT NOT NULL,
    PRIMARY KEY (card_id, shot, attempt)
);

-- Loop turns: generate -> score -> filter -> queue for review, then wait for people/training.
CREATE TABLE loop_turns (
    id           INTEGER PRIMARY KEY,
    recipe       TEXT NOT NULL,
    recipe_hash  TEXT NOT NULL,
    n            INTEGER NOT NULL,
    first_seed   INTEGER NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('generating', 'queued')),
    created_at   TEXT NOT NULL,
    queued_at    TEXT
);

CREATE TABLE loop_candidates (
    turn_id   INTEGER NOT NULL REFERENCES loop_turns(id),
    position  INTEGER NOT NULL,
    cell_key  TEXT NOT NULL,
    outcome   TEXT CHECK (outcome IN ('queued', 'filtered', 'duplicate', 'failed')),
    reason    TEXT,
    PRIMARY KEY (turn_id, position)
);
