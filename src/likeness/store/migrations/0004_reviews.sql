-- Human review: one current decision per image, every decision kept in the history.

-- Every decision ever made, in order. `revision` counts decisions per image (1, 2, ...), so a
-- client can say "I decided on revision N" and learn that someone else decided since.
-- `previous_id` is the entry that was current before this one (the full audit trail);
-- `undo_to` is the entry whose state an undo of this one restores (NULL: undecided).
CREATE TABLE review_history (
    id          INTEGER PRIMARY KEY,
    image_sha   TEXT NOT NULL REFERENCES images(sha256),
    revision    INTEGER NOT NULL,
    action      TEXT NOT NULL CHECK (action IN ('decide', 'undo')),
    decision    TEXT NOT NULL CHECK (decision IN ('accepted', 'rejected', 'undecided')),
    previous    TEXT CHECK (previous IN ('accepted', 'rejected', 'undecided')),
    previous_id INTEGER REFERENCES review_history(id),
    undo_to     INTEGER REFERENCES review_history(id),
    reviewer    TEXT NOT NULL,
    note        TEXT,
    tags        TEXT NOT NULL DEFAULT '[]',
    decided_at  TEXT NOT NULL,
    UNIQUE (image_sha, revision)
);
CREATE INDEX review_history_image ON review_history(image_sha, id);

-- The current decision of each reviewed image (images never reviewed have no row).
CREATE TABLE reviews (
    image_sha  TEXT PRIMARY KEY REFERENCES images(sha256),
    decision   TEXT NOT NULL CHECK (decision IN ('accepted', 'rejected', 'undecided')),
    revision   INTEGER NOT NULL,
    history_id INTEGER NOT NULL REFERENCES review_history(id),
    reviewer   TEXT NOT NULL,
    note       TEXT,
    tags       TEXT NOT NULL DEFAULT '[]',
    decided_at TEXT NOT NULL
);
CREATE INDEX reviews_decision ON reviews(decision);

-- Which review decisions produced which dataset version (versions themselves are immutable).
CREATE TABLE dataset_version_reviews (
    version_id INTEGER NOT NULL REFERENCES dataset_versions(id),
    image_sha  TEXT NOT NULL REFERENCES images(sha256),
    history_id INTEGER NOT NULL REFERENCES review_history(id),
    PRIMARY KEY (version_id, image_sha)
);

CREATE TRIGGER review_history_append_only_update BEFORE UPDATE ON review_history
BEGIN SELECT RAISE(ABORT, 'review history is append-only'); END;
CREATE TRIGGER review_history_append_only_delete BEFORE DELETE ON review_history
BEGIN SELECT RAISE(ABORT, 'review history is append-only'); END;
CREATE TRIGGER dataset_version_reviews_immutable_update BEFORE UPDATE ON dataset_version_reviews
BEGIN SELECT RAISE(ABORT, 'dataset versions are immutable: create a new version'); END;
CREATE TRIGGER dataset_version_reviews_immutable_delete BEFORE DELETE ON dataset_version_reviews
BEGIN SELECT RAISE(ABORT, 'dataset versions are immutable: create a new version'); END;
