"""Generation records: the order of a job's images survives seeds that wrap past 2**64."""

from __future__ import annotations

import pytest

from likeness.engines.records import first_seed_of_run


@pytest.mark.parametrize(
    ("seeds", "first"),
    [
        ([5, 6, 7], 5),
        ([7, 5, 6, 6], 5),
        ([2**64 - 2, 2**64 - 1, 0, 1], 2**64 - 2),
        ([1, 2**64 - 1, 0], 2**64 - 1),
        ([42], 42),
        ([], 0),
    ],
)
def test_a_run_starts_after_the_largest_gap(seeds, first):
    assert first_seed_of_run(seeds) == first


def test_a_job_lists_its_images_in_run_order_across_the_wrap(workspace):
    from likeness.engines.records import generations_of_job, record_generation
    from likeness.jobs import start_job

    job = start_job(workspace.db, "generate", "wrap")
    seeds = [2**64 - 2, 2**64 - 1, 0, 1]
    for i, seed in reversed(list(enumerate(seeds))):
        provenance = {
            "engine": {"name": "test", "version": "1"},
            "recipe_hash": "r",
            "seed": seed,
            "model": {"name": "m"},
        }
        workspace.db.execute(
            "INSERT INTO images (sha256, origin, original_name, size_bytes, format, width, "
            "height, mode, ingested_at, phash, dhash, sharpness) "
            "VALUES (?, 'synthetic', ?, 1, 'PNG', 1, 1, 'RGB', '', '0', '0', 0)",
            (f"sha{i}", f"{i}.png"),
        )
        record_generation(workspace.db, f"sha{i}", provenance, job.id)
    assert generations_of_job(workspace.db, job.id) == ["sha0", "sha1", "sha2", "sha3"]
