-- LoRA training: runs, their checkpoints and loss curve, and a cache of model file hashes.

-- One run per training job: the recipe, what it trained on, where its files are, how it ended.
-- `state` is running until the last step (done), a NaN/inf stop (diverged) or an error (failed).
CREATE TABLE train_runs (
    id                 INTEGER PRIMARY KEY,
    job_id             INTEGER NOT NULL REFERENCES jobs(id),
    recipe_hash        TEXT NOT NULL,
    recipe             TEXT NOT NULL,  -- JSON of the train recipe
    name               TEXT NOT NULL,
    family             TEXT NOT NULL,
    base_model         TEXT NOT NULL,
    base_model_sha256  TEXT,
    dataset            TEXT NOT NULL,  -- NAME@vN
    dataset_version_id INTEGER NOT NULL REFERENCES dataset_versions(id),
    dataset_sha256     TEXT NOT NULL,
    skipped            TEXT NOT NULL DEFAULT '[]',  -- excluded images left out (sha256s)
    output_dir         TEXT NOT NULL,
    total_steps        INTEGER NOT NULL,
    step               INTEGER NOT NULL DEFAULT 0,  -- last checkpointed step
    state              TEXT NOT NULL CHECK (state IN ('running', 'done', 'diverged', 'failed')),
    error              TEXT,
    final_lora         TEXT,
    cache_stats        TEXT NOT NULL DEFAULT '{}',  -- latents/texts encoded and cached
    created_at         TEXT NOT NULL,
    finished_at        TEXT
);
CREATE UNIQUE INDEX train_runs_job ON train_runs(job_id);
CREATE INDEX train_runs_dataset ON train_runs(dataset_version_id);

-- Every checkpoint: a kohya LoRA file. `metrics` is filled in by whoever judges it (probes
-- scored against the source photos); `lora_id` is its row in the LoRA registry.
CREATE TABLE train_checkpoints (
    id         INTEGER PRIMARY KEY,
    run_id     INTEGER NOT NULL REFERENCES train_runs(id),
    step       INTEGER NOT NULL,
    path       TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    loss       REAL,  -- mean training loss since the previous checkpoint
    fixed_loss REAL,  -- loss on a fixed batch (fixed images, noise and levels): falls as it fits
    lora_id    INTEGER,
    metrics    TEXT,  -- JSON, NULL until judged
    created_at TEXT NOT NULL,
    UNIQUE (run_id, step)
);

-- The loss curve: one row per optimizer step, written with each checkpoint.
CREATE TABLE train_losses (
    run_id INTEGER NOT NULL REFERENCES train_runs(id),
    step   INTEGER NOT NULL,
    loss   REAL NOT NULL,
    lr     REAL NOT NULL,
    PRIMARY KEY (run_id, step)
);

-- sha256 of model files, reused while (path, size, mtime) is unchanged: a 6.5 GB checkpoint
-- is hashed once, not at every run.
CREATE TABLE file_hashes (
    path      TEXT PRIMARY KEY,
    size      INTEGER NOT NULL,
    mtime_ns  INTEGER NOT NULL,
    sha256    TEXT NOT NULL,
    hashed_at TEXT NOT NULL
);
