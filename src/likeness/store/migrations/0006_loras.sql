-- LoRA files the workspace knows, trained here or added from elsewhere, with their lineage:
-- dataset version -> LoRA -> the sweeps, cards and generations that used it (those refer to
-- a LoRA by the sha256 of its file, in their provenance).
CREATE TABLE loras (
    id                 INTEGER PRIMARY KEY,
    sha256             TEXT NOT NULL UNIQUE,
    path               TEXT NOT NULL,
    name               TEXT NOT NULL,
    family             TEXT NOT NULL,
    base_model         TEXT NOT NULL,
    base_model_sha256  TEXT,
    rank               INTEGER NOT NULL,
    alpha              REAL NOT NULL,
    steps              INTEGER,            -- NULL when a file from elsewhere does not say
    dataset_version_id INTEGER REFERENCES dataset_versions(id),
    source             TEXT NOT NULL CHECK (source IN ('trained', 'added')),
    train_run          INTEGER,            -- the training run that wrote it (train runs table)
    metadata           TEXT NOT NULL DEFAULT '{}',  -- the file's safetensors metadata
    created_at         TEXT NOT NULL
);
CREATE INDEX loras_dataset_version ON loras(dataset_version_id);
CREATE INDEX loras_train_run ON loras(train_run);
CREATE INDEX loras_name ON loras(name);
