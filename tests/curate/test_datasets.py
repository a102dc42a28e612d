"""Dataset versions from the workspace, captions with the trigger, export for trainers."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from likeness.curate.captions import CaptionError, CaptionTemplate, dedupe_trigger
from likeness.curate.datasets import create_dataset_version
from likeness.curate.dedup import apply_groups, find_workspace_duplicates
from likeness.curate.export import ExportError, export_version, kohya_folder_name
from likeness.curate.ingest import Ingester
from likeness.curate.selection import Selection
from likeness.curate.variants import near_duplicate_variants
from likeness.imaging import open_image
from tests.conftest import jpeg_bytes, random_png


def test_caption_placement_and_duplicate_triggers():
    base = dict(trigger="zqv", class_word="woman")
    assert CaptionTemplate("photo of {class_word}", **base).render() == "zqv, photo of woman"
    assert (
        CaptionTemplate("photo of {class_word}", placement="end", **base).render()
        == "photo of woman, zqv"
    )
    assert CaptionTemplate("photo of {class_word}", placement="none", **base).render() == (
        "photo of woman"
    )
    assert CaptionTemplate("{trigger} {class_word}, {trigger}", **base).render() == "zqv woman"
    assert dedupe_trigger("zqv, zqv portrait, zqvx", "zqv") == "zqv, portrait, zqvx"
    with pytest.raises(CaptionError, match="unknown"):
        CaptionTemplate("{nope}", **base).render()


def _fill(workspace, faces_dir, tmp_path):
    ingester = Ingester(workspace, origin="source")
    for name in ["obama.jpg", "obama2.jpg", "biden.jpg"]:
        ingester.ingest_file(faces_dir / name)
    variant = tmp_path / "obama_copy.jpg"
    variant.write_bytes(
        near_duplicate_variants(open_image(faces_dir / "obama.jpg").image)["reencode_q60.jpg"]
    )
    ingester.ingest_file(variant)
    synthetic = Ingester(workspace, origin="synthetic")
    synthetic.ingest_file(faces_dir / "obama3.jpg")
    groups = find_workspace_duplicates(workspace.db, 10, 12)
    apply_groups(workspace.db, groups)


def test_versions_skip_excluded_and_filter(workspace, faces_dir, tmp_path):
    _fill(workspace, faces_dir, tmp_path)
    v1 = create_dataset_version(workspace, "mara", Selection(origins=("source",)))
    names = {
        workspace.db.execute(
            "SELECT original_name FROM images WHERE sha256 = ?", (i.image_sha,)
        ).fetchone()[0]
        for i in v1.items
    }
    assert names == {"obama.jpg", "obama2.jpg", "biden.jpg"}  # the excluded copy never enters
    trigger = workspace.settings.character.trigger
    assert all(i.caption == f"{trigger}, photo of man" for i in v1.items)
    v2 = create_dataset_version(workspace, "mara", Selection(exclude=("biden*",)))
    assert v2.version == 2 and v2.parent_version == 1
    assert v2.count == 3  # obama, obama2 and the synthetic obama3
    only = create_dataset_version(workspace, "one", Selection(include=(v1.items[0].image_sha[:8],)))
    assert only.count == 1


def test_kohya_export_layout(workspace, faces_dir, tmp_path):
    _fill(workspace, faces_dir, tmp_path)
    version = create_dataset_version(workspace, "mara", Selection(origins=("source",)))
    result = export_version(workspace, version, tmp_path / "out", "kohya", repeats=5)
    trigger = workspace.settings.character.trigger
    folder = tmp_path / "out" / kohya_folder_name(5, trigger, "man")
    assert result.image_folder == folder and folder.name == f"5_{trigger} man"
    images = sorted(p for p in folder.iterdir() if p.suffix == ".jpg")
    assert len(images) == 3
    for image in images:
        caption = image.with_suffix(".txt").read_text().strip()
        assert caption == f"{trigger}, photo of man"
        Image.open(image).verify()
    manifest = json.loads((tmp_path / "out" / "likeness_dataset.json").read_text())
    assert manifest["ref"] == "mara@v1" and manifest["count"] == 3
    with pytest.raises(ExportError, match="not empty"):
        export_version(workspace, version, tmp_path / "out", "kohya")


def test_imagefolder_export_and_reencoding_of_odd_files(workspace, tmp_path):
    cmyk = tmp_path / "cmyk.jpg"
    cmyk.write_bytes(jpeg_bytes(Image.open(random_png(tmp_path / "a.png", 1, 32)).convert("CMYK")))
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    wide = Image.open(random_png(tmp_path / "b.png", 2, 40)).resize((40, 20))
    rotated.write_bytes(jpeg_bytes(wide, exif=exif.tobytes()))
    ingester = Ingester(workspace)
    for path in (cmyk, rotated):
        assert ingester.ingest_file(path).status == "stored"
    version = create_dataset_version(workspace, "odd", Selection())
    result = export_version(workspace, version, tmp_path / "hf", "imagefolder")
    assert result.reencoded == 2
    rows = [
        json.loads(line) for line in (tmp_path / "hf" / "metadata.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 2
    for row in rows:
        with Image.open(tmp_path / "hf" / row["file_name"]) as img:
            assert img.mode == "RGB"
            assert img.size in {(32, 32), (20, 40)}  # the rotated one is written upright
        assert row["text"].endswith("photo of man")
