"""The worker pool: kept warm between calls, replaced when the instruments change, and a
crashed worker fails its images, not the next call."""

from __future__ import annotations

import os

from likeness.metrics import Instruments, score_images, shutdown_workers
from likeness.metrics import workers as pool_module


class _Crasher:
    """A face backend that kills its worker process on one image size."""

    name, version, match_threshold = "crasher", "1", 0.6

    def analyze(self, rgb):
        if rgb.shape[0] == 33:
            os._exit(3)
        return []


def _processes():
    shared = pool_module._SHARED
    return set(shared.executor._processes) if shared is not None else set()


def test_workers_are_kept_between_calls_and_replaced_for_other_instruments(photo_dir, quick):
    paths = [photo_dir / n for n in ("obama2.jpg", "biden.jpg")]
    first = score_images(paths, [photo_dir / "obama.jpg"], instruments=quick, workers=2)
    started = _processes()
    assert len(started) == 2
    again = score_images(paths, [photo_dir / "obama.jpg"], instruments=quick, workers=2)
    assert _processes() == started  # the same warm processes did the work
    assert [s.to_json() for s in again.scores] == [s.to_json() for s in first.scores]
    other = Instruments(pose=None, expression=None)
    score_images(paths, [photo_dir / "obama.jpg"], instruments=other, workers=2)
    assert _processes().isdisjoint(started)
    shutdown_workers()
    assert pool_module._SHARED is None


def test_a_worker_that_dies_fails_its_images_and_the_next_call_gets_new_workers(tmp_path):
    from PIL import Image

    bad, good, other = tmp_path / "bad.png", tmp_path / "good.png", tmp_path / "other.png"
    Image.new("RGB", (40, 33)).save(bad)
    Image.new("RGB", (40, 40)).save(good)
    Image.new("RGB", (40, 40), (9, 9, 9)).save(other)
    instruments = Instruments(faces=_Crasher(), expression=None, pose=None)
    run = score_images([bad, good], [other], instruments=instruments, workers=2)
    assert run.scores[0].error and "analysis failed" in run.scores[0].error
    assert pool_module._SHARED.broken
    after = score_images([good], [other], instruments=instruments, workers=2)
    assert after.scores[0].error is None and after.analyzed == 2
    assert not pool_module._SHARED.broken
    shutdown_workers()
