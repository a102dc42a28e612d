from __future__ import annotations

import json
import shutil

from likeness.metrics import ImageAnalysis, Instruments, analyze_image, score_images


def test_json_shape_has_every_documented_field(run):
    required = {
        "path", "sha256", "faces", "match", "distance", "yaw", "pitch", "roll", "angle",
        "expression", "body_pose", "sharpness", "grain", "plastic", "plastic_relative",
        "flags", "pass",
    }  # fmt: skip
    for score in run.scores:
        data = score.to_json()
        assert required <= set(data)
        json.dumps(data)  # serialisable as is
        assert len(data["sha256"]) == 64


def test_group_photo_and_small_face_flags(by_name):
    assert by_name["t1.jpg"].faces == 6
    assert "multiple_faces" in by_name["t1.jpg"].flags
    assert "face_too_small" in by_name["Tom_Hanks_54745.png"].flags
    assert "face_cut_off" in by_name["obama_partial_face.jpg"].flags
    assert by_name["obama.jpg"].flags == ()


def test_analysis_round_trips_through_json(quick, run, by_name):
    analysis = run.analyses[by_name["obama2.jpg"].sha256]
    again = ImageAnalysis.from_dict(json.loads(json.dumps(analysis.to_dict())))
    assert again == ImageAnalysis.from_dict(analysis.to_dict())
    assert again.face.descriptor == analysis.face.descriptor


def test_cache_makes_rescoring_compute_nothing(photo_dir, tmp_path, quick):
    from likeness.store.db import connect

    conn = connect(":memory:")
    paths = [photo_dir / n for n in ("obama2.jpg", "biden.jpg")]
    refs = [photo_dir / "obama.jpg"]
    first = score_images(paths, refs, instruments=quick, conn=conn, workers=1)
    assert (first.analyzed, first.cached) == (3, 0)
    # Same content under another name is the same image.
    copy = tmp_path / "renamed.jpg"
    shutil.copy(photo_dir / "biden.jpg", copy)
    second = score_images([*paths, copy], refs, instruments=quick, conn=conn, workers=1)
    assert (second.analyzed, second.cached) == (0, 3)
    assert [s.to_json() for s in second.scores[:2]] == [s.to_json() for s in first.scores]
    assert second.scores[2].match == first.scores[1].match
    # A different analyzer version is a different cache entry.
    brisque = Instruments(pose=None, brisque=True)
    third = score_images(paths, refs, instruments=brisque, conn=conn, workers=1)
    assert third.analyzed == 3
    assert third.scores[0].brisque is not None


def test_bad_files_fail_alone(photo_dir, tmp_path, quick):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    missing = tmp_path / "missing.png"
    run = score_images([bad, missing, photo_dir / "obama2.jpg"], [photo_dir / "obama.jpg"],
                       instruments=quick, workers=1)  # fmt: skip
    broken, gone, good = run.scores
    assert broken.error and "broken.jpg" in broken.error and not broken.passed
    assert gone.error and "missing.png" in gone.error
    assert good.passed and good.error is None


def test_references_without_faces_leave_identity_empty(photo_dir, tmp_path, quick):
    import numpy as np
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((200, 200, 3), 90, np.uint8)).save(blank)
    run = score_images([photo_dir / "obama2.jpg"], [blank], instruments=quick, workers=1)
    assert run.references.calibration is None
    assert run.references.skipped == (str(blank),)
    assert run.scores[0].match is None and not run.scores[0].passed
    assert run.references.scores[0].flags[0] == "no_face"


def test_parallel_and_inline_runs_agree(photo_dir, quick):
    paths = [photo_dir / n for n in ("obama2.jpg", "biden.jpg")]
    inline = score_images(paths, [photo_dir / "obama2.jpg"], instruments=quick, workers=1)
    parallel = score_images(paths, [photo_dir / "obama2.jpg"], instruments=quick, workers=None)
    assert [s.to_json() for s in inline.scores] == [s.to_json() for s in parallel.scores]


def test_analyze_image_on_an_array(quick):
    import numpy as np

    analysis = analyze_image(np.full((64, 64, 3), 200, np.uint8), quick)
    assert analysis.faces == () and analysis.flags == ("no_face",)
    assert analysis.quality.skin_texture is None


def test_tiny_and_flat_images_measure_without_crashing(tmp_path):
    import numpy as np

    instruments = Instruments(pose=None, expression=None, brisque=True)
    for shape in [(1, 1, 3), (1, 700, 3), (9, 9, 3), (64, 64, 3)]:
        analysis = analyze_image(np.full(shape, 90, np.uint8), instruments)
        assert analysis.flags == ("no_face",)
        assert analysis.quality.brisque is None  # nothing to measure, not NaN or a crash
    paths = []
    for name, mode, size in [("grey.png", "L", (40, 30)), ("dot.png", "RGB", (1, 1))]:
        path = tmp_path / name
        from PIL import Image

        Image.new(mode, size, 128).save(path)
        paths.append(path)
    run = score_images(paths, paths, instruments=instruments, workers=1)
    assert [s.error for s in run.scores] == [None, None]
    assert all(s.flags[0] == "no_face" and s.match is None for s in run.scores)


class _Broken:
    """A face backend that fails on one image size, as a third-party model might."""

    name, version, match_threshold = "broken", "1", 0.6

    def analyze(self, rgb):
        if rgb.shape[0] == 33:
            raise RuntimeError("model exploded\n  at layer 3")
        return []


def test_an_instrument_failure_fails_its_image_only(tmp_path):
    from PIL import Image

    bad, good = tmp_path / "bad.png", tmp_path / "good.png"
    Image.new("RGB", (40, 33)).save(bad)
    Image.new("RGB", (40, 40)).save(good)
    instruments = Instruments(faces=_Broken(), expression=None, pose=None)
    run = score_images([bad, good], [good], instruments=instruments, workers=1)
    failed, fine = run.scores
    assert failed.error and "bad.png" in failed.error and "model exploded" in failed.error
    assert "\n" not in failed.error and fine.error is None


def test_damaged_cache_rows_are_recomputed(photo_dir, quick):
    from likeness.metrics.analysis import ANALYZER_NAME
    from likeness.store.db import connect

    conn = connect(":memory:")
    paths = [photo_dir / n for n in ("obama2.jpg", "biden.jpg")]
    refs = [photo_dir / "obama.jpg"]
    first = score_images(paths, refs, instruments=quick, conn=conn, workers=1)
    damage = [("{not json", first.scores[0].sha256), ('{"sha256": "x"}', first.scores[1].sha256)]
    conn.executemany("UPDATE analyses SET result = ? WHERE image_sha = ?", damage)
    again = score_images(paths, refs, instruments=quick, conn=conn, workers=1)
    assert (again.analyzed, again.cached) == (2, 1)
    assert [s.to_json() for s in again.scores] == [s.to_json() for s in first.scores]
    rows = conn.execute("SELECT result FROM analyses WHERE analyzer = ?", (ANALYZER_NAME,))
    assert all(json.loads(r[0])["faces"] for r in rows)  # repaired in place
