"""The database: WAL mode, forward migrations, immutable dataset versions."""

from __future__ import annotations

import sqlite3

import pytest

from likeness.store import db
from likeness.store.blobs import BlobNotFound, BlobStore
from likeness.store.datasets import DatasetItem, create_version, diff_versions, get_version


def test_new_database_is_wal_and_fully_migrated(tmp_path):
    conn = db.connect(tmp_path / "x.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.schema_version(conn) == db.migrations()[-1][0]
    assert db.apply_migrations(conn) == []  # idempotent
    assert db.integrity_check(conn) == "ok"


def test_migrations_are_numbered_uniquely_and_start_at_one():
    numbers = [n for n, _, _ in db.migrations()]
    assert numbers[0] == 1 and numbers == sorted(set(numbers))


def test_a_newer_schema_is_refused(tmp_path):
    conn = db.connect(tmp_path / "x.db")
    conn.execute("PRAGMA user_version = 9999")
    conn.close()
    with pytest.raises(db.SchemaTooNew, match="upgrade likeness"):
        db.connect(tmp_path / "x.db")


def test_a_migration_numbered_below_an_applied_one_is_still_applied(tmp_path):
    first = [(1, "0001_a.sql", "CREATE TABLE a (x);"), (3, "0003_c.sql", "CREATE TABLE c (x);")]
    conn = db.connect(tmp_path / "x.db", migrate=False)
    assert db.apply_migrations(conn, first) == ["0001_a.sql", "0003_c.sql"]
    later = sorted([*first, (2, "0002_b.sql", "CREATE TABLE b (x);")])
    assert db.apply_migrations(conn, later) == ["0002_b.sql"]
    assert db.apply_migrations(conn, later) == []
    assert db.schema_version(conn) == 3
    with pytest.raises(db.SchemaTooNew):
        db.apply_migrations(conn, first[:1])


def test_failed_transaction_rolls_back(tmp_path):
    conn = db.connect(tmp_path / "x.db")
    with pytest.raises(RuntimeError), db.transaction(conn):
        conn.execute("INSERT INTO datasets (name, created_at) VALUES ('a', 'now')")
        raise RuntimeError("boom")
    assert conn.execute("SELECT COUNT(*) FROM datasets").fetchone()[0] == 0


def _version(conn, name, shas, caption="c"):
    return create_version(
        conn,
        name,
        [DatasetItem(s, caption) for s in shas],
        trigger="zqx",
        class_word="man",
        caption_template="{class_word}",
        trigger_placement="start",
        selection={},
    )


def _images(conn, shas):
    for sha in shas:
        conn.execute(
            "INSERT INTO images (sha256, origin, original_name, size_bytes, format, width, height,"
            " mode, ingested_at, phash, dhash, sharpness) VALUES (?, 'source', ?, 1, 'PNG', 1, 1,"
            " 'RGB', 'now', '0', '0', 0)",
            (sha, sha),
        )


def test_dataset_versions_are_immutable_and_chained(tmp_path):
    conn = db.connect(tmp_path / "x.db")
    _images(conn, ["a" * 64, "b" * 64, "c" * 64])
    v1 = _version(conn, "ds", ["a" * 64, "b" * 64])
    v2 = _version(conn, "ds", ["b" * 64, "c" * 64], caption="d")
    assert (v1.version, v2.version, v2.parent_version) == (1, 2, 1)
    with pytest.raises(sqlite3.IntegrityError, match="immutable"):
        conn.execute("UPDATE dataset_items SET caption = 'x'")
    with pytest.raises(sqlite3.IntegrityError, match="immutable"):
        conn.execute("DELETE FROM dataset_versions")
    assert get_version(conn, "ds", 1).items == v1.items
    diff = diff_versions(v1, v2)
    assert diff.added == ("c" * 64,) and diff.removed == ("a" * 64,)
    assert diff.recaptioned == (("b" * 64, "c", "d"),)


def test_blob_store_refuses_anything_but_a_sha256(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    sha = store.put_bytes(b"hello")
    assert store.read(sha) == b"hello" and store.verify(sha)
    assert store.put_bytes(b"hello") == sha  # idempotent
    for bad in ["../../etc/passwd", sha[:-1], sha.upper(), sha + "/..", "", "%2e%2e"]:
        with pytest.raises(BlobNotFound):
            store.path(bad)


def test_a_damaged_cache_row_reads_as_missing(tmp_path):
    from likeness.store.analyses import get_analyses, get_analysis, put_analysis

    conn = db.connect(tmp_path / "x.db")
    put_analysis(conn, "a" * 64, "faces", "1", {"ok": 1})
    put_analysis(conn, "b" * 64, "faces", "1", {"ok": 2})
    conn.execute("UPDATE analyses SET result = '{not json' WHERE image_sha = ?", ("b" * 64,))
    assert get_analysis(conn, "b" * 64, "faces", "1") is None
    assert get_analyses(conn, ["a" * 64, "b" * 64], "faces", "1") == {"a" * 64: {"ok": 1}}
