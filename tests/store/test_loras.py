"""LoRA rows (migration 0006): recorded once per file, tied to a dataset version, found by id,
sha256 or name, and their lineage read from the provenance of sweeps, cards and generations."""

from __future__ import annotations

import pytest

from likeness.curate.datasets import create_dataset_version
from likeness.curate.ingest import Ingester
from likeness.curate.selection import Selection
from likeness.engines.base import build_provenance
from likeness.engines.records import record_generation
from likeness.evaluate import store as evaluate_store
from likeness.recipes import Recipe
from likeness.store import db
from likeness.store.datasets import DatasetError, get_version, list_versions, version_sha256
from likeness.store.loras import (
    LoraError,
    find_lora,
    get_lora,
    list_loras,
    lora_by_sha256,
    lora_lineage,
    record_lora,
)
from tests.conftest import random_png

SHA_A, SHA_B, SHA_C = "a" * 64, "a" * 8 + "b" * 56, "d" * 64


def record(conn, sha=SHA_A, dataset="mara", version=1, **over):
    fields = dict(path=f"/loras/{sha[:4]}.safetensors", sha256=sha, name="mara-v1",
                  family="sdxl", base_model="big.safetensors", base_model_sha256=None, rank=64,
                  alpha=32.0, steps=1500, dataset=dataset, dataset_version=version,
                  source="trained", train_run=3, metadata={"ss_network_dim": "64"})  # fmt: skip
    fields.update(over)
    return record_lora(conn, **fields)


@pytest.fixture
def ws(workspace, tmp_path):
    ingester = Ingester(workspace, origin="source")
    for seed in range(3):
        assert ingester.ingest_file(random_png(tmp_path / f"s{seed}.png", seed)).status == "stored"
    create_dataset_version(workspace, "mara", Selection())
    create_dataset_version(workspace, "mara", Selection(exclude=("s2*",)))
    return workspace


def test_migration_creates_the_table(tmp_path):
    conn = db.connect(tmp_path / "x.db")
    names = [n for _, n, _ in db.migrations()]
    assert "0006_loras.sql" in names
    columns = {r[1] for r in conn.execute("PRAGMA table_info(loras)")}
    assert {"sha256", "dataset_version_id", "train_run", "alpha", "rank", "source"} <= columns


def test_record_get_find_and_list(ws):
    first = record(ws.db)
    second = record(ws.db, sha=SHA_B, version=2, name="mara-v2", source="added", train_run=None,
                    steps=None)  # fmt: skip
    row = get_lora(ws.db, first)
    assert (row.dataset, row.rank, row.alpha, row.steps, row.train_run) == ("mara@v1", 64, 32.0,
                                                                          1500, 3)  # fmt: skip
    assert row.metadata == {"ss_network_dim": "64"} and row.source == "trained"
    assert lora_by_sha256(ws.db, SHA_B).id == second and lora_by_sha256(ws.db, SHA_C) is None
    assert find_lora(ws.db, str(second)).name == "mara-v2"
    assert find_lora(ws.db, SHA_B[:10]).id == second
    assert find_lora(ws.db, "mara-v1").id == first
    with pytest.raises(LoraError, match="matches 2 LoRAs"):
        find_lora(ws.db, "a" * 8)
    with pytest.raises(LoraError, match="no LoRA 'nope'"):
        find_lora(ws.db, "nope")
    assert [r.id for r in list_loras(ws.db)] == [first, second]
    assert [r.id for r in list_loras(ws.db, dataset="mara", dataset_version=2)] == [second]
    assert [r.id for r in list_loras(ws.db, train_run=3)] == [first]
    assert list_loras(ws.db, dataset="other") == []


def test_the_same_file_has_one_lineage(ws):
    first = record(ws.db)
    assert record(ws.db, name="again") == first  # the same file, the same version: same row
    with pytest.raises(LoraError, match="another dataset version"):
        record(ws.db, version=2)
    no_dataset = record(ws.db, sha=SHA_C, dataset=None, version=None, source="added")
    assert get_lora(ws.db, no_dataset).dataset is None


@pytest.mark.parametrize(
    "over,message",
    [
        ({"sha256": "ABC"}, "sha256"),
        ({"source": "downloaded"}, "source: 'downloaded'"),
        ({"family": "sd3"}, "family: 'sd3'"),
        ({"rank": 0}, "rank: 0"),
        ({"name": " "}, "name: is empty"),
        ({"dataset_version": None}, "give both"),
    ],
)
def test_bad_records_are_refused(ws, over, message):
    with pytest.raises(ValueError, match=message):
        record(ws.db, **over)


def test_an_unknown_dataset_version_is_refused(ws):
    with pytest.raises(DatasetError, match="no dataset mara@v9"):
        record(ws.db, version=9)


def test_version_hash_is_content_only(ws):
    v1, v2 = get_version(ws.db, "mara", 1), get_version(ws.db, "mara", 2)
    assert version_sha256(v1) != version_sha256(v2)
    assert len(version_sha256(v1)) == 64
    with pytest.raises(ValueError, match="with its items"):
        version_sha256(list_versions(ws.db)[0])  # listed without items


def _generate(ws, tmp_path, seed, loras):
    """Store one generated image whose provenance names ``loras`` (path, sha256) as an engine
    writes it; returns the image sha256 and its provenance."""
    recipe = Recipe(model="m.safetensors", seed=seed, loras=tuple())
    recipe = recipe.with_overrides({"loras": [{"path": p, "strength": 0.7} for p, _ in loras]})
    prov = build_provenance(recipe=recipe, seed=seed, engine={"name": "t", "version": "1"},
                            model_sha256=None, lora_sha256s=[s for _, s in loras],
                            timings={}, width=64, height=64)  # fmt: skip
    png = random_png(tmp_path / f"g{seed}.png", 100 + seed).read_bytes()
    ingester = Ingester(ws, origin="synthetic")
    result = ingester.ingest_bytes(
        png, name=f"g{seed}.png", on_stored=lambda sha: record_generation(ws.db, sha, prov, None)
    )
    return result.sha256, prov


def test_lineage_finds_sweeps_cards_and_images_by_sha256(ws, tmp_path):
    record(ws.db)
    used = [("/l/a.safetensors", SHA_A)]
    other = [("/l/c.safetensors", SHA_C)]
    cells = []
    for seed, loras in [(1, used), (2, used), (3, other), (4, used + other)]:
        sha, prov = _generate(ws, tmp_path, seed, loras)
        key = f"cell{seed}"
        with db.transaction(ws.db):
            evaluate_store.insert_cell(ws.db, key=key, recipe=prov["recipe"], seed=seed,
                                       prompt="p", image_sha=sha, generation=prov)  # fmt: skip
        cells.append(key)
    first = evaluate_store.open_sweep(ws.db, name="strength", spec_hash="s1", spec={},
                                      engine="t", members=[(k, "c", {}) for k in cells[:2]])  # fmt: skip
    evaluate_store.open_sweep(ws.db, name="unrelated", spec_hash="s2", spec={}, engine="t",
                              members=[(cells[2], "c", {})])  # fmt: skip
    mixed = evaluate_store.open_sweep(ws.db, name="mixed", spec_hash="s3", spec={}, engine="t",
                                      members=[(k, "c", {}) for k in cells[2:]])  # fmt: skip
    evaluate_store.finish_sweep(ws.db, first.id)
    card = evaluate_store.create_card(ws.db, label="v1", run_key="r", recipe={}, recipe_hash="h",
                                      spec={}, spec_hash="x", tries=1)  # fmt: skip
    evaluate_store.set_card_models(ws.db, card.id, None, [SHA_A])
    evaluate_store.finish_card(ws.db, card.id, {"first_try_rate": 0.5, "mean_match": 6.1})
    other_card = evaluate_store.create_card(ws.db, label="v0", run_key="r0", recipe={},
                                            recipe_hash="h0", spec={}, spec_hash="x", tries=1)  # fmt: skip
    evaluate_store.set_card_models(ws.db, other_card.id, None, [SHA_C, None])

    lineage = lora_lineage(ws.db, SHA_A)
    assert [(s.name, s.images) for s in lineage.sweeps] == [("strength", 2), ("mixed", 1)]
    assert lineage.sweeps[0].finished_at is not None
    assert [(c.name, c.summary["first_try_rate"]) for c in lineage.cards] == [("v1", 0.5)]
    assert lineage.generations == 3
    assert lora_lineage(ws.db, SHA_B).to_dict() == {"sweeps": [], "cards": [], "generations": 0}
    assert [s.id for s in lora_lineage(ws.db, SHA_C).sweeps] == [2, mixed.id]
