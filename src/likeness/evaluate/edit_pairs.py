"""Edit pairs: (control image, target image, instruction) for training an instruction-edit model
(a Qwen-Image-Edit or FLUX Kontext LoRA) on what enrichment and review produced.

A dataset version's pairs are its images that an edit made and enrichment kept: the control
is the edit's source image, the target the kept edit, the caption its instruction.

- `enrichment` pairs start from a photo (a new angle or expression of it);
- `correction` pairs start from an image a reviewer rejected (a fix planned from the review
  corrections with `likeness enrich plan --corrections`); the rejection's tags and note
  travel with the pair in the manifest;
- a pair whose target a reviewer rejected is left out: a person overruled the automatic
  verdict, and the pair would teach the model that mistake.

Layout written, the paired dataset ai-toolkit reads (ostris/ai-toolkit at 27a03a9):
`toolkit/dataloader_mixins.py` `ControlFileItemDTOMixin` matches a control image to a target
by file name without extension in each `control_path` folder (.jpg .jpeg .png .webp), and
`CaptionProcessingDTOMixin.load_caption` reads the target's path with its extension replaced
by `caption_ext`; `config/examples/train_lora_qwen_image_edit_2509_32gb.yaml` and
`train_lora_flux_kontext_24gb.yaml` show `folder_path`, `control_path` and `caption_ext`::

    OUT/target/0001_<sha12>.png   the kept edit (or .jpg/.webp as stored)
    OUT/target/0001_<sha12>.txt   its instruction, one line
    OUT/control/0001_<sha12>.jpg  the image it was made from (same stem)
    OUT/ai-toolkit-datasets.yaml  the `datasets:` entry pointing at both folders
    OUT/likeness_edit_pairs.json  the manifest: version, pairs (shas, kind, cell, review)

The control folder sits beside the target folder, not inside it: ai-toolkit walks
`folder_path` recursively and would train on the controls as targets.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from likeness.curate.export import ExportError, write_image
from likeness.evaluate.enrich_store import edits_making
from likeness.review.decisions import get_reviews
from likeness.store.datasets import DatasetVersion
from likeness.store.images import get_image
from likeness.workspace import Workspace

TARGET_DIR = "target"
CONTROL_DIR = "control"
CONFIG_FILE = "ai-toolkit-datasets.yaml"
MANIFEST = "likeness_edit_pairs.json"


@dataclass(frozen=True)
class EditPair:
    stem: str
    kind: str
    """`enrichment` or `correction`."""
    control_sha: str
    target_sha: str
    instruction: str
    cell: dict[str, str | None]
    edit_key: str
    review: dict[str, Any] | None
    """The review that rejected the control (correction pairs), else None."""

    def to_json(self) -> dict[str, Any]:
        return {
            "stem": self.stem,
            "kind": self.kind,
            "control_sha256": self.control_sha,
            "target_sha256": self.target_sha,
            "instruction": self.instruction,
            "cell": self.cell,
            "edit_key": self.edit_key,
            "review": self.review,
        }


@dataclass(frozen=True)
class EditPairsResult:
    folder: Path
    pairs: tuple[EditPair, ...]
    left_out: tuple[dict[str, str], ...]
    """Images of the version that give no pair, each with the reason."""
    reencoded: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder),
            "target_folder": str(self.folder / TARGET_DIR),
            "control_folder": str(self.folder / CONTROL_DIR),
            "config": str(self.folder / CONFIG_FILE),
            "count": len(self.pairs),
            "corrections": sum(p.kind == "correction" for p in self.pairs),
            "left_out": list(self.left_out),
            "reencoded": self.reencoded,
        }


def edit_pairs(ws: Workspace, version: DatasetVersion) -> tuple[list[EditPair], list[dict]]:
    """The pairs of ``version`` (in version order) and the images left out, with reasons."""
    shas = [item.image_sha for item in version.items]
    made = edits_making(ws.db, shas)
    reviews = get_reviews(ws.db, list({*shas, *(e.source_sha for e in made.values())}))
    pairs: list[EditPair] = []
    left_out: list[dict[str, str]] = []
    for sha in shas:
        edit = made.get(sha)
        if edit is None:
            left_out.append({"sha256": sha, "reason": "not made by an edit"})
            continue
        if reviews.get(sha) and reviews[sha].decision == "rejected":
            left_out.append({"sha256": sha, "reason": "rejected in review"})
            continue
        control = reviews.get(edit.source_sha)
        correction = control is not None and control.decision == "rejected"
        pairs.append(
            EditPair(
                stem=f"{len(pairs) + 1:04d}_{sha[:12]}",
                kind="correction" if correction else "enrichment",
                control_sha=edit.source_sha,
                target_sha=sha,
                instruction=" ".join(edit.instruction.split()),
                cell={"angle": edit.angle, "expression": edit.expression},
                edit_key=edit.key,
                review=control.to_dict() if correction and control is not None else None,
            )
        )
    return pairs, left_out


def export_edit_pairs(
    ws: Workspace, version: DatasetVersion, out: Path, *, overwrite: bool = False
) -> EditPairsResult:
    """Write the pairs of ``version`` under ``out`` (layout in the module docstring).

    Example: export_edit_pairs(ws, resolve(ws.db, "mara-edits@v1"), Path("pairs"))
    """
    out = Path(out)
    pairs, left_out = edit_pairs(ws, version)
    if not pairs:
        raise ExportError(
            f"{version.ref} holds no kept edits to pair; run `likeness enrich`, then make a "
            "version of the enriched images (`likeness dataset create NAME --origin enriched`)"
        )
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ExportError(f"{out} is not empty; choose an empty folder or pass --overwrite")
        shutil.rmtree(out)
    targets, controls = out / TARGET_DIR, out / CONTROL_DIR
    targets.mkdir(parents=True, exist_ok=True)
    controls.mkdir(parents=True, exist_ok=True)
    reencoded = 0
    files = []
    for pair in pairs:
        names = []
        for sha, folder in ((pair.target_sha, targets), (pair.control_sha, controls)):
            record = get_image(ws.db, sha)
            if record is None:
                raise ExportError(f"image {sha} of {version.ref} is missing from the store")
            name, rewritten = write_image(ws, record, folder, stem=pair.stem)
            reencoded += rewritten
            names.append(name)
        (targets / f"{pair.stem}.txt").write_text(pair.instruction + "\n", encoding="utf-8")
        files.append({**pair.to_json(), "target": names[0], "control": names[1]})
    (out / CONFIG_FILE).write_text(ai_toolkit_datasets(out.resolve()), encoding="utf-8")
    manifest = {
        "format": "edit-pairs",
        "version": version.to_dict(with_items=False),
        "pairs": files,
        "left_out": left_out,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return EditPairsResult(out, tuple(pairs), tuple(left_out), reencoded)


def ai_toolkit_datasets(folder: Path) -> str:
    """The `datasets:` entry of an ai-toolkit training config for an export in ``folder``."""
    return (
        "# ai-toolkit: paste this under config.process[0] of an edit-model LoRA config\n"
        "# (config/examples/train_lora_qwen_image_edit_2509_32gb.yaml, arch qwen_image_edit_plus,\n"
        "# or train_lora_flux_kontext_24gb.yaml, arch flux_kontext).\n"
        "datasets:\n"
        f"  - folder_path: {json.dumps(str(folder / TARGET_DIR))}\n"
        f"    control_path: {json.dumps(str(folder / CONTROL_DIR))}\n"
        '    caption_ext: "txt"\n'
        "    caption_dropout_rate: 0.05\n"
        "    resolution: [512, 768, 1024]\n"
    )
