"""The second flywheel's data: kept enrichments and fixes of images rejected in review become
(control, target, instruction) pairs, exported in the layout ai-toolkit's edit-model LoRA
training reads: target/ and control/ folders whose files pair up by name, captions beside the
targets."""

from __future__ import annotations

import json
import tomllib

from typer.testing import CliRunner

from likeness.cli.main import app
from likeness.curate.ingest import Ingester
from likeness.data import FACES
from likeness.evaluate.edit_pairs import edit_pairs
from likeness.evaluate.edit_recipe import EditRecipe
from likeness.evaluate.enrich import corrections_plan, run_enrich
from likeness.evaluate.enrich_plan import KEEP_IDENTITY, Plan, PlanEdit, default_instruction
from likeness.jobs import job_key
from likeness.review.decisions import decide
from likeness.store.datasets import resolve
from likeness.store.images import list_images

from .edit_engine import EditPhotoEngine
from .photo_engine import photo_png

RECIPE = EditRecipe(model="photos", steps=1)
AI_TOOLKIT_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")  # toolkit/dataloader_mixins.py


def enrich(ws, scorer, edits, engine):
    plan = Plan(edits=tuple(edits), origin="test")
    key = job_key("enrich", plan.plan_hash(), RECIPE.recipe_hash())
    return run_enrich(ws, plan, engine, RECIPE, scorer, key=key)


def test_enrichments_and_corrections_export_as_edit_pairs(face_ws, scorer, tmp_path):
    src = {r.original_name: r.sha256 for r in list_images(face_ws.db, origins=["source"])}
    turn = PlanEdit(src["obama.jpg"], "half_right", "smiling",
                    default_instruction("half_right", None, "front", "smiling"))  # fmt: skip
    smile = PlanEdit(src["obama3.jpg"], "front", "smiling", default_instruction(None, "smiling"))
    made = enrich(face_ws, scorer, [turn, smile], EditPhotoEngine())
    kept_turn, kept_smile = (o.image_sha for o in made.outcomes)
    assert kept_turn and kept_smile

    # Review: a generated image is rejected with a note and a tag; the kept smile too.
    generated = Ingester(face_ws, origin="synthetic").ingest_bytes(
        photo_png("obama2.jpg"), name="gen-7.png"
    )
    decide(face_ws.db, generated.sha256, "rejected", reviewer="ana",
           note="make the skin look real", tags=["plastic_skin", "wrong_angle"])  # fmt: skip
    decide(face_ws.db, kept_smile, "rejected", reviewer="ana", tags=["wrong_expression"])
    # The corrections plan fixes the rejected generated image (the rejected enrichment has no
    # note and no tag an edit can fix: it is named, not planned).
    fixes = corrections_plan(face_ws)
    (fix,) = fixes.edits
    assert fix.source == generated.sha256 and (fix.angle, fix.expression) == (None, None)
    assert fix.instruction == (
        f"make the skin look real; restore natural skin texture with visible pores, "
        f"unretouched; {KEEP_IDENTITY}"
    )
    assert fixes.unfilled == (f"{kept_smile[:12]} (no note, no fixable tag)",)
    (fixed,) = enrich(face_ws, scorer, fixes.edits, EditPhotoEngine(lambda t: "obama.jpg")).outcomes
    assert fixed.verdict == "kept", fixed.reasons

    # A version with every enriched image and one photo that no edit made.
    photo = Ingester(face_ws, origin="synthetic").ingest_file(FACES / "obama_partial_face2.jpg")
    version_cli = CliRunner().invoke(
        app,
        ["-w", str(face_ws.root), "dataset", "create", "edits", "--origin", "enriched",
         "--origin", "synthetic"],
    )  # fmt: skip
    assert version_cli.exit_code == 0, version_cli.output
    version = resolve(face_ws.db, "edits@v1")
    pairs, left_out = edit_pairs(face_ws, version)
    assert {(p.kind, p.control_sha, p.target_sha) for p in pairs} == {
        ("enrichment", src["obama.jpg"], kept_turn),
        ("correction", generated.sha256, fixed.image_sha),
    }
    assert sorted(left_out, key=lambda x: x["sha256"]) == sorted(
        [
            {"sha256": kept_smile, "reason": "rejected in review"},
            {"sha256": generated.sha256, "reason": "not made by an edit"},
            {"sha256": photo.sha256, "reason": "not made by an edit"},
        ],
        key=lambda x: x["sha256"],
    )
    correction = next(p for p in pairs if p.kind == "correction")
    assert correction.review["tags"] == ["plastic_skin", "wrong_angle"]

    # The export, through the command line.
    out = tmp_path / "pairs"
    result = CliRunner().invoke(
        app,
        ["-w", str(face_ws.root), "dataset", "export", "edits@v1", str(out), "--format",
         "edit-pairs", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ref"] == "edits@v1" and data["format"] == "edit-pairs"
    assert (data["count"], data["corrections"]) == (2, 1) and len(data["left_out"]) == 3
    assert data["target_folder"] == str(out / "target")

    # Files pair up the way ai-toolkit looks them up: same name without extension.
    targets = sorted(p for p in (out / "target").iterdir() if p.suffix != ".txt")
    controls = sorted((out / "control").iterdir())
    assert [p.stem for p in targets] == [p.stem for p in controls] and len(targets) == 2
    assert all(p.suffix in AI_TOOLKIT_IMAGE_EXTS for p in [*targets, *controls])
    manifest = json.loads((out / "likeness_edit_pairs.json").read_text())
    by_stem = {p["stem"]: p for p in manifest["pairs"]}
    for target in targets:
        pair = by_stem[target.stem]
        caption = target.with_suffix(".txt").read_text(encoding="utf-8")
        assert caption == pair["instruction"] + "\n"
        assert target.read_bytes() == face_ws.blobs.read(pair["target_sha256"])
        control = out / "control" / pair["control"]
        assert control.read_bytes() == face_ws.blobs.read(pair["control_sha256"])
    assert by_stem[targets[0].stem]["instruction"] == turn.instruction
    assert manifest["version"]["ref"] == "edits@v1" and len(manifest["left_out"]) == 3
    # The datasets entry points ai-toolkit at both folders, controls outside the targets.
    config = (out / "ai-toolkit-datasets.yaml").read_text()
    assert f'folder_path: "{(out / "target").resolve()}"' in config
    assert f'control_path: "{(out / "control").resolve()}"' in config
    assert 'caption_ext: "txt"' in config
    assert not any(p.is_dir() for p in (out / "target").iterdir())


def test_a_version_without_edits_is_refused(face_ws, tmp_path):
    runner = CliRunner()
    w = ["-w", str(face_ws.root)]
    assert (
        runner.invoke(app, [*w, "dataset", "create", "photos", "--origin", "source"]).exit_code == 0
    )
    result = runner.invoke(
        app, [*w, "dataset", "export", "photos", str(tmp_path / "x"), "--format", "edit-pairs"]
    )
    assert result.exit_code == 2 and "holds no kept edits to pair" in result.stderr
    assert not (tmp_path / "x").exists()


def test_the_corrections_plan_is_written_for_editing(face_ws, tmp_path):
    generated = Ingester(face_ws, origin="synthetic").ingest_bytes(
        photo_png("obama2.jpg"), name="gen.png"
    )
    decide(face_ws.db, generated.sha256, "rejected", reviewer="ana", tags=["grain"])
    out = tmp_path / "fixes.toml"
    result = CliRunner().invoke(
        app, ["-w", str(face_ws.root), "enrich", "plan", "--corrections", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    (edit,) = tomllib.loads(out.read_text())["edits"]
    assert edit["source"] == generated.sha256 and "angle" not in edit
    assert edit["instruction"].startswith("remove the grain and noise")
