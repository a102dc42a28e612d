-- Enrichment: instruction edits of source photos toward the empty cells of the card's grid.
-- One row per edit asked for, keyed by the hash of (source, cell, instruction, edit recipe):
-- the same edit is never made twice, whichever run asks for it. A kept edit is stored as an
-- image of origin 'enriched' in the same transaction as its row (image_sha); a rejected one
-- stays a blob (result_sha) with the reasons; a failed one (the engine raised) is tried again.
CREATE TABLE enrich_edits (
    edit_key     TEXT PRIMARY KEY,
    job_id       INTEGER REFERENCES jobs(id),
    source_sha   TEXT NOT NULL REFERENCES images(sha256),
    angle        TEXT,
    expression   TEXT,
    instruction  TEXT NOT NULL,
    engine       TEXT NOT NULL,
    model        TEXT NOT NULL,
    seed         TEXT,
    verdict      TEXT NOT NULL CHECK (verdict IN ('kept', 'rejected', 'failed')),
    reasons      TEXT NOT NULL DEFAULT '[]',
    result_sha   TEXT,
    image_sha    TEXT REFERENCES images(sha256),
    score        TEXT,
    provenance   TEXT NOT NULL DEFAULT '{}',
    created_at   TEXT NOT NULL
);
CREATE INDEX enrich_edits_source ON enrich_edits(source_sha);
CREATE UNIQUE INDEX enrich_edits_image ON enrich_edits(image_sha) WHERE image_sha IS NOT NULL;
