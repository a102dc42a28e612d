-- Generated images: how each one was made (recipe, seed, model and LoRA hashes, engine, timings).
-- One row per stored image of origin 'synthetic'; the same provenance is inside the PNG itself.
CREATE TABLE generations (
    image_sha      TEXT PRIMARY KEY REFERENCES images(sha256),
    job_id         INTEGER REFERENCES jobs(id),
    engine         TEXT NOT NULL,
    engine_version TEXT NOT NULL,
    recipe_hash    TEXT NOT NULL,
    seed           TEXT NOT NULL,  -- up to 2**64-1, beyond SQLite's signed integers
    model          TEXT NOT NULL,
    model_sha256   TEXT,
    prompt         TEXT NOT NULL,
    provenance     TEXT NOT NULL,  -- the full JSON provenance (likeness.engines.base)
    created_at     TEXT NOT NULL
);
CREATE INDEX generations_recipe ON generations(recipe_hash);
CREATE INDEX generations_job ON generations(job_id);

-- The LoRAs of each generation, in recipe order: "every image made with LoRA x at 0.7".
CREATE TABLE generation_loras (
    image_sha TEXT NOT NULL REFERENCES generations(image_sha),
    position  INTEGER NOT NULL,
    path      TEXT NOT NULL,
    sha256    TEXT,
    strength  REAL NOT NULL,
    PRIMARY KEY (image_sha, position)
);
CREATE INDEX generation_loras_sha ON generation_loras(sha256);
