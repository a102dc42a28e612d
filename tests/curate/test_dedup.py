"""Near duplicates on real photos: copies group together, different photos of one person do not."""

from __future__ import annotations

import numpy as np
import pytest

from likeness.curate.dedup import apply_groups, find_workspace_duplicates, group_near_duplicates
from likeness.curate.hashes import HammingIndex, hamming
from likeness.curate.ingest import Ingester
from likeness.curate.variants import near_duplicate_variants
from likeness.imaging import open_image
from likeness.store.images import list_images

OBAMA_PHOTOS = [
    "obama.jpg",
    "obama2.jpg",
    "obama3.jpg",
    "obama_partial_face.jpg",
    "obama_partial_face2.jpg",
]


def _ingest_with_variants(workspace, faces_dir, tmp_path):
    ingester = Ingester(workspace)
    for name in OBAMA_PHOTOS + ["biden.jpg", "t1.jpg", "Tom_Hanks_54745.png"]:
        assert ingester.ingest_file(faces_dir / name).status == "stored"
    variants = near_duplicate_variants(open_image(faces_dir / "obama.jpg").image)
    statuses = {}
    for name, data in variants.items():
        path = tmp_path / name
        path.write_bytes(data)
        statuses[name] = ingester.ingest_file(path)
    return statuses


def test_copies_of_a_photo_form_one_group(workspace, faces_dir, tmp_path):
    statuses = _ingest_with_variants(workspace, faces_dir, tmp_path)
    for name in ("reencode_q60.jpg", "resize_50.jpg", "crop_5.jpg"):
        assert statuses[name].status == "near_duplicate", name
    dedup = workspace.settings.dedup
    groups = find_workspace_duplicates(
        workspace.db, dedup.phash_max_distance, dedup.dhash_max_distance
    )
    assert len(groups) == 1
    names = {r.original_name for r in groups[0].members}
    assert names == {"obama.jpg", *statuses}
    # the keeper is the full-resolution original (most pixels, then sharpest)
    assert groups[0].keeper.original_name == "obama.jpg"


def test_different_photos_of_one_person_are_not_grouped(workspace, faces_dir):
    ingester = Ingester(workspace)
    results = [ingester.ingest_file(faces_dir / name) for name in OBAMA_PHOTOS]
    assert all(r.status == "stored" for r in results)
    records = list_images(workspace.db)
    assert group_near_duplicates(records, 10, 12) == []


def test_apply_excludes_never_deletes(workspace, faces_dir, tmp_path):
    _ingest_with_variants(workspace, faces_dir, tmp_path)
    dedup = workspace.settings.dedup
    groups = find_workspace_duplicates(
        workspace.db, dedup.phash_max_distance, dedup.dhash_max_distance
    )
    changed = apply_groups(workspace.db, groups)
    assert changed == len(groups[0].others) == 4
    everything = list_images(workspace.db, include_excluded=True)
    assert len(everything) == 12
    excluded = [r for r in everything if r.excluded]
    assert {r.duplicate_of for r in excluded} == {groups[0].keeper.sha256}
    for record in excluded:
        assert workspace.blobs.verify(record.sha256)
    # applying again changes nothing
    again = find_workspace_duplicates(
        workspace.db, dedup.phash_max_distance, dedup.dhash_max_distance
    )
    assert apply_groups(workspace.db, again) == 0


@pytest.mark.parametrize("max_distance", [0, 3, 10, 16])
def test_hamming_index_finds_exactly_what_brute_force_finds(max_distance):
    rng = np.random.default_rng(max_distance)
    base = [int(x) for x in rng.integers(0, 2**63, size=300, dtype=np.int64)]
    hashes = []
    for value in base:  # clusters: each base hash plus flipped-bit neighbours
        hashes.append(value)
        for flips in (1, 4, 9, 15):
            bits = rng.choice(64, size=flips, replace=False)
            hashes.append(value ^ sum(1 << int(b) for b in bits))
    index = HammingIndex(max_distance)
    for i, h in enumerate(hashes):
        index.add(i, h)
    for q in range(0, len(hashes), 7):
        expected = {i for i, h in enumerate(hashes) if hamming(h, hashes[q]) <= max_distance}
        assert {k for k, _ in index.query(hashes[q])} == expected
