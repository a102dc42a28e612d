"""Ingest stores each content once, refuses bad files with reasons and keeps going."""

from __future__ import annotations

from likeness.curate.ingest import Ingester, expand_inputs
from likeness.store.images import get_image, list_images
from tests.conftest import random_png


def test_real_photos_are_stored_with_metadata(workspace, faces_dir):
    ingester = Ingester(workspace, origin="source")
    result = ingester.ingest_file(faces_dir / "obama.jpg")
    assert result.status == "stored"
    record = get_image(workspace.db, result.sha256)
    assert record.original_name == "obama.jpg"
    assert record.format == "JPEG"
    assert record.origin == "source"
    assert record.size_bytes == (faces_dir / "obama.jpg").stat().st_size
    assert record.width > 0 and record.height > 0
    assert record.ingested_at
    assert workspace.blobs.verify(result.sha256)


def test_exact_duplicate_is_not_stored_twice(workspace, faces_dir, tmp_path):
    copy = tmp_path / "copy_of_obama.jpg"
    copy.write_bytes((faces_dir / "obama.jpg").read_bytes())
    ingester = Ingester(workspace)
    first = ingester.ingest_file(faces_dir / "obama.jpg")
    second = ingester.ingest_file(copy)
    assert second.status == "duplicate" and second.sha256 == first.sha256
    assert len(list_images(workspace.db)) == 1
    paths = workspace.db.execute("SELECT COUNT(*) FROM image_paths").fetchone()[0]
    assert paths == 2  # both places it came from are remembered


def test_bad_inputs_are_rejected_and_the_batch_goes_on(workspace, faces_dir, tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("not a picture")
    data = (faces_dir / "biden.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 3])
    good = random_png(tmp_path / "good.png", seed=1)
    ingester = Ingester(workspace)
    results = {
        p.name: ingester.ingest_file(p)
        for p in [tmp_path / "empty.jpg", tmp_path / "notes.jpg", tmp_path / "truncated.jpg", good]
    }
    results["missing.jpg"] = ingester.ingest_file(tmp_path / "missing.jpg")
    assert results["good.png"].status == "stored"
    for name in ("empty.jpg", "notes.jpg", "truncated.jpg", "missing.jpg"):
        assert results[name].status == "rejected", name
        assert results[name].reason and "\n" not in results[name].reason
    assert len(list_images(workspace.db)) == 1


def test_expand_inputs_filters_folders_by_suffix(tmp_path):
    (tmp_path / "sub").mkdir()
    random_png(tmp_path / "a.png", 1)
    random_png(tmp_path / "sub" / "b.png", 2)
    (tmp_path / "readme.txt").write_text("x")
    assert [p.name for p in expand_inputs([tmp_path])] == ["a.png"]
    assert [p.name for p in expand_inputs([tmp_path], recursive=True)] == ["a.png", "b.png"]


def test_ingest_bytes_runs_the_callback_in_the_same_transaction(workspace, tmp_path):
    data = random_png(tmp_path / "x.png", 3).read_bytes()
    seen = []
    result = Ingester(workspace, origin="synthetic").ingest_bytes(
        data, name="gen.png", on_stored=seen.append
    )
    assert result.status == "stored" and seen == [result.sha256]
    assert get_image(workspace.db, result.sha256).origin == "synthetic"
