-- Accounts: a name, the sha256 of its token (never the token), whether it may sign in, and
-- its own quotas (NULL: the server's [quota] default).
CREATE TABLE users (
    id                INTEGER PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    token_sha256      TEXT NOT NULL,
    folder            TEXT NOT NULL UNIQUE,   -- the workspace, relative to the server root
    disabled          INTEGER NOT NULL DEFAULT 0,
    quota_images      INTEGER,
    quota_train_runs  INTEGER,
    quota_disk_bytes  INTEGER,
    quota_queued_jobs INTEGER,
    created_at        TEXT NOT NULL,
    token_set_at      TEXT NOT NULL
);

-- Sessions: the sha256 of the cookie value (the value itself is only in the browser), the
-- CSRF token the pages send back in a header, and when it ends.
CREATE TABLE sessions (
    id_sha256   TEXT PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    revoked_at  TEXT,
    client      TEXT
);
CREATE INDEX sessions_user ON sessions(user_id);

-- The job queue: long work of every user, in order; `running` rows found at start-up were
-- cut short by a restart and go back to `queued` (the work itself resumes: see jobs.py).
CREATE TABLE queue (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind          TEXT NOT NULL,
    params        TEXT NOT NULL DEFAULT '{}',
    state         TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    done          INTEGER NOT NULL DEFAULT 0,
    total         INTEGER,
    message       TEXT,
    error         TEXT,
    result        TEXT NOT NULL DEFAULT '{}',
    cancel        INTEGER NOT NULL DEFAULT 0,
    attempts      INTEGER NOT NULL DEFAULT 0,
    worker        TEXT,
    created_at    TEXT NOT NULL,
    started_at    TEXT,
    heartbeat_at  TEXT,
    finished_at   TEXT
);
CREATE INDEX queue_user ON queue(user_id, id);
CREATE INDEX queue_state ON queue(state, id);
