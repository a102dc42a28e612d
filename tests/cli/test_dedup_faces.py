"""`likeness dedup --faces`: the same shot slightly rotated is caught by face + pHash, where the
pixel hashes alone miss it; different photos of one person stay apart."""

from __future__ import annotations

import json

from PIL import Image
from typer.testing import CliRunner

from likeness.cli.main import app
from likeness.curate.hashes import hamming, perceptual_hashes
from likeness.imaging import open_image

runner = CliRunner()


def test_same_face_same_shot_is_grouped_different_photos_are_not(tmp_path, faces_dir):
    biden = open_image(faces_dir / "biden.jpg").image
    rotated = biden.rotate(3, resample=Image.Resampling.BICUBIC, fillcolor=(128, 128, 128))
    rotated.save(tmp_path / "biden_rotated.png")
    a, b = perceptual_hashes(biden), perceptual_hashes(rotated)
    assert hamming(a.dhash, b.dhash) > 12  # the pixel test alone does not see it
    ws = tmp_path / "ws"
    assert runner.invoke(app, ["init", str(ws), "--name", "T"]).exit_code == 0
    names = ["biden.jpg", "obama.jpg", "obama2.jpg", "obama3.jpg", "obama_partial_face.jpg"]
    inputs = [str(faces_dir / n) for n in names] + [str(tmp_path / "biden_rotated.png")]
    assert runner.invoke(app, ["-w", str(ws), "add", *inputs]).exit_code == 0

    plain = json.loads(runner.invoke(app, ["-w", str(ws), "dedup", "--json"]).stdout)
    assert plain["groups"] == []
    result = runner.invoke(app, ["-w", str(ws), "dedup", "--faces", "--apply", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert len(report["groups"]) == 1 and report["changed"] == 1
    group = report["groups"][0]
    assert {group["keep"]["name"], group["exclude"][0]["name"]} == {
        "biden.jpg",
        "biden_rotated.png",
    }
