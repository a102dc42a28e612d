"""The thumbnail cache: made once, by hash only, face crops from a stored box."""

from __future__ import annotations

import pytest
from PIL import Image

from likeness.review.thumbs import SIZES, ThumbnailCache, square_with_margin, warm
from likeness.store.blobs import BlobNotFound
from likeness.workspace import Workspace


@pytest.fixture
def cache(review_ws, tmp_path):
    with Workspace.open(review_ws.root) as ws:
        yield ThumbnailCache(tmp_path / "thumbs", ws.blobs)


def test_thumbnail_is_made_once_and_fits_the_size(cache, review_ws):
    sha = review_ws.sources[0]
    path = cache.get(sha, 256)
    assert path.name == f"{sha}_256.webp"
    with Image.open(path) as img:
        assert img.format == "WEBP" and max(img.size) == 256
    stamp = path.stat().st_mtime_ns
    assert cache.get(sha, 256).stat().st_mtime_ns == stamp


def test_face_crop_is_square_around_the_box(cache, review_ws):
    with Image.open(cache.get(review_ws.sources[0], 384, box=(357, 144, 634, 421))) as img:
        assert img.size[0] == img.size[1] <= 384
    assert square_with_margin((10, 10, 30, 30), 100, 50) == (2, 2, 38, 38)
    assert square_with_margin((0, 0, 20, 20), 100, 50) == (0, 0, 36, 36)  # kept inside
    left, top, right, bottom = square_with_margin((900, 100, 1000, 200), 1000, 1000)
    assert right <= 1000 and right - left == bottom - top == 180


def test_only_hashes_and_known_sizes_name_files(cache):
    with pytest.raises(BlobNotFound):
        cache.path("../likeness.db", 256)
    with pytest.raises(ValueError, match="size"):
        cache.path("a" * 64, 100)
    with pytest.raises(BlobNotFound):
        cache.get("b" * 64, SIZES[0])


def test_warm_makes_the_missing_ones_in_order(cache, review_ws):
    shas = review_ws.candidates[:4]
    cache.get(shas[0], 256)
    assert warm(cache, shas + ["c" * 64]) == 3
    assert all(cache.path(s, 256).is_file() for s in shas)
    assert warm(cache, shas) == 0
