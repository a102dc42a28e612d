"""Review decisions in the database: history, undo, conflicts, concurrency, dataset links."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from likeness.review import decisions as dec
from likeness.review.export import corrections, dataset_from_accepted, write_corrections
from likeness.store.datasets import DatasetError, get_version
from likeness.store.db import connect
from likeness.workspace import DB_FILE, Workspace


@pytest.fixture
def ws(review_ws):
    with Workspace.open(review_ws.root) as workspace:
        yield workspace


def test_every_decision_is_kept_with_the_one_before(ws, review_ws):
    sha = review_ws.candidates[0]
    assert dec.get_review(ws.db, sha).revision == 0
    dec.decide(ws.db, sha, "accepted", reviewer="ana")
    dec.decide(ws.db, sha, "rejected", reviewer="ben", note="hands", tags=["bad_hands"])
    current = dec.get_review(ws.db, sha)
    assert (current.decision, current.revision, current.reviewer) == ("rejected", 2, "ben")
    assert current.tags == ("bad_hands",) and current.note == "hands"
    entries = dec.history(ws.db, sha)
    assert [(e.decision, e.previous, e.reviewer) for e in entries] == [
        ("accepted", None, "ana"),
        ("rejected", "accepted", "ben"),
    ]
    assert entries[1].previous_id == entries[0].id
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        ws.db.execute("DELETE FROM review_history")


def test_undo_walks_back_and_stops(ws, review_ws):
    sha = review_ws.candidates[1]
    dec.decide(ws.db, sha, "accepted", reviewer="ana", tags=["grain"])
    dec.decide(ws.db, sha, "rejected", reviewer="ana", tags=["bad_hands"])
    back = dec.undo(ws.db, sha, reviewer="ana")
    assert (back.decision, back.tags) == ("accepted", ("grain",))
    assert dec.undo(ws.db, sha, reviewer="ana").decision == "undecided"
    with pytest.raises(dec.ReviewError, match="no decision to undo"):
        dec.undo(ws.db, sha, reviewer="ana")
    actions = [e.action for e in dec.history(ws.db, sha)]
    assert actions == ["decide", "decide", "undo", "undo"]


def test_stale_revision_is_refused_not_overwritten(ws, review_ws):
    sha = review_ws.candidates[2]
    mine = dec.decide(ws.db, sha, "accepted", reviewer="ana")
    dec.decide(ws.db, sha, "rejected", reviewer="ben")
    with pytest.raises(dec.ReviewConflict) as caught:
        dec.undo(ws.db, sha, reviewer="ana", expected_revision=mine.revision)
    assert caught.value.current.decision == "rejected"
    assert dec.get_review(ws.db, sha).decision == "rejected"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"decision": "maybe"}, "decision"),
        ({"tags": ["Bad Hands"]}, "tags"),
        ({"reviewer": ""}, "reviewer"),
        ({"note": "x" * 3000}, "note"),
    ],
)
def test_bad_input_names_the_field(ws, review_ws, kwargs, message):
    args = {"decision": "accepted", "reviewer": "ana", **kwargs}
    with pytest.raises(dec.ReviewError, match=message):
        dec.decide(ws.db, review_ws.candidates[0], args.pop("decision"), **args)
    assert dec.history(ws.db) == []


def test_unknown_image_is_refused(ws):
    with pytest.raises(dec.UnknownImage):
        dec.decide(ws.db, "0" * 64, "accepted", reviewer="ana")


def test_two_writers_at_once_lose_nothing(review_ws):
    shas = review_ws.candidates
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def worker(reviewer: str, decision: str) -> None:
        conn = connect(review_ws.root / DB_FILE, migrate=False)
        try:
            start.wait()
            for sha in shas:
                dec.decide(conn, sha, decision, reviewer=reviewer)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            conn.close()

    threads = [
        threading.Thread(target=worker, args=("ana", "accepted")),
        threading.Thread(target=worker, args=("ben", "rejected")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    conn = connect(review_ws.root / DB_FILE)
    try:
        entries = dec.history(conn)
        assert len(entries) == 2 * len(shas)
        for sha in shas:
            mine = [e for e in entries if e.image_sha == sha]
            assert sorted(e.reviewer for e in mine) == ["ana", "ben"]
            assert [e.revision for e in mine] == [1, 2]
            assert mine[1].previous == mine[0].decision
            current = dec.get_review(conn, sha)
            assert (current.revision, current.decision) == (2, mine[1].decision)
    finally:
        conn.close()


def test_accepted_images_become_a_version_with_lineage(ws, review_ws):
    with pytest.raises(DatasetError, match="no accepted images"):
        dataset_from_accepted(ws, "mara")
    accepted = review_ws.candidates[:3]
    for sha in accepted:
        dec.decide(ws.db, sha, "accepted", reviewer="ana")
    dec.decide(ws.db, review_ws.candidates[3], "rejected", reviewer="ana")
    made = dataset_from_accepted(ws, "mara")
    assert made.version.ref == "mara@v1"
    assert {i.image_sha for i in made.version.items} == set(accepted)
    linked = dec.version_reviews(ws.db, made.version.id)
    assert {e.image_sha for e in linked} == set(accepted)
    assert all(e.decision == "accepted" for e in linked)

    dec.decide(ws.db, accepted[0], "rejected", reviewer="ben")
    again = dataset_from_accepted(ws, "mara")
    assert again.version.ref == "mara@v2" and again.version.parent_version == 1
    assert {i.image_sha for i in get_version(ws.db, "mara", 2).items} == set(accepted[1:])
    # The first version and its lineage are untouched by later decisions.
    assert {e.image_sha for e in dec.version_reviews(ws.db, made.version.id)} == set(accepted)


def test_corrections_list_the_rejected_with_tags(ws, review_ws, tmp_path):
    a, b = review_ws.candidates[4], review_ws.candidates[5]
    dec.decide(ws.db, a, "rejected", reviewer="ana", tags=["bad_hands", "grain"], note="fingers")
    dec.decide(ws.db, b, "rejected", reviewer="ana")
    dec.decide(ws.db, b, "accepted", reviewer="ana")
    records = list(corrections(ws))
    assert [r["sha256"] for r in records] == [a]
    assert records[0]["tags"] == ["bad_hands", "grain"] and records[0]["note"] == "fingers"
    assert records[0]["path"] == str(ws.blobs.path(a))
    out = tmp_path / "corrections.jsonl"
    assert write_corrections(ws, out) == 1
    assert out.read_text().count("\n") == 1


def test_damaged_tags_read_as_none_and_the_queue_still_loads(ws, review_ws):
    from likeness.review.metrics import MetricsIndex
    from likeness.review.queue import QueueFilter, build_queue

    sha = review_ws.candidates[3]
    dec.decide(ws.db, sha, "rejected", reviewer="ana", tags=["grain"])
    ws.db.execute("UPDATE reviews SET tags = '{not json' WHERE image_sha = ?", (sha,))
    assert dec.get_review(ws.db, sha).tags == ()
    index = MetricsIndex()
    index.refresh(ws.db)
    queue = build_queue(ws.db, index, {}, QueueFilter())
    entry = queue.entries[queue.index_of(sha)]
    assert entry.tags == () and entry.decision == "rejected"
    dec.decide(ws.db, sha, "accepted", reviewer="ana", tags=["ok"])
    assert dec.get_review(ws.db, sha).tags == ("ok",)
