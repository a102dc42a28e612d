-- Checkpoints judged by likeness: the probe images each checkpoint rendered, and the best one.

-- A probe: one card shot at one fixed seed, rendered with one checkpoint. The image is a blob
-- (blobs/<sha256>), deliberately not a row of `images`: probes never enter the review queue,
-- a dataset or the references. `judge_hash` names the judge settings it was made under, so
-- changed settings make new probes instead of mixing old and new ones.
CREATE TABLE train_probes (
    checkpoint_id INTEGER NOT NULL REFERENCES train_checkpoints(id),
    judge_hash    TEXT NOT NULL,
    shot          TEXT NOT NULL,
    seed          INTEGER NOT NULL,
    prompt        TEXT NOT NULL,
    image_sha     TEXT,            -- NULL when the engine failed (error says why)
    score         TEXT,            -- ImageScore JSON against the dataset's source photos
    memorised     TEXT,            -- JSON: the training image it nearly duplicates, or NULL
    generation    TEXT NOT NULL DEFAULT '{}',  -- the engine's provenance of the image
    error         TEXT,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (checkpoint_id, judge_hash, shot, seed)
);

-- The checkpoint of a run that judging ranks first (NULL until one is judged).
ALTER TABLE train_runs ADD COLUMN best_checkpoint INTEGER REFERENCES train_checkpoints(id);
