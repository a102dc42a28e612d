"""Tiny random-weight models and a real workspace with dataset versions, for training tests.

`train_models`: tiny SDXL (diffusers folder and original-layout single file), SD1.5 with a
v-prediction scheduler, FLUX with the guidance embedding (as FLUX.1 dev has). `train_ws`: a
copy of one workspace built per session from the sample face photos:

- ``faces@v1``: obama.jpg (4:5, square bucket), obama2.jpg (tall), t1.jpg (wide), Tom Hanks (square) and a
  near-duplicate copy of obama.jpg (JPEG q60, half size) that dedup excluded after the version
  was cut; each image has its own stored caption (:data:`CAPTIONS`, keyed by file name);
- ``one@v1``: obama.jpg alone, for overfitting a single image.

At 64 px with bucket_step 16 the buckets are 48x80, 64x64 and 80x48: every one is used.

``edits@v1`` holds two kept edits (enriched images with their edit rows), so its edit pairs
are (obama.jpg -> obama3.jpg, "make him smile") and (Tom Hanks -> Tom Hanks mirrored, "turn
the head to the other side"): the data of a ``qwen_image_edit`` run. `qwen_edit_model` is a
tiny random-weight Qwen-Image-Edit folder.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from likeness.data import FACES
from likeness.workspace import Workspace

os.environ["HF_HUB_OFFLINE"] = "1"

SIZE = 64
CAPTIONS = {
    "obama.jpg": "vrexoq123 photo of man, dark suit, flags behind",
    "obama2.jpg": "vrexoq123 photo of man, white shirt, smiling",
    "t1.jpg": "vrexoq123 group photo, several people outdoors",
    "Tom_Hanks_54745.png": "vrexoq123 close-up face photo",
    "obama-copy.jpg": "vrexoq123 photo of man, copy",
}
FAST = {
    "rank": 4,
    "alpha": 8.0,
    "resolution": SIZE,
    "bucket_step": 16,
    "mixed_precision": "no",
    "warmup_steps": 0,
    "learning_rate": 1e-3,
    "max_sequence_length": 16,
    "gradient_checkpointing": False,
    "save_precision": "fp32",
    "caption_dropout": 0.0,
    "judge": {"enabled": False},  # judging has its own tests (test_judge.py)
}
TINY_JUDGE = {
    "enabled": True,
    "probes": ["front_neutral", "standing"],
    "seeds": [1],
    "steps": 2,
    "width": SIZE,
    "height": SIZE,
}
"""Probes a tiny model renders in a blink: two card shots at one seed, 64 px, 2 steps."""


@dataclass(frozen=True)
class TrainModels:
    sdxl: Path
    sdxl_single: Path
    sd15_vpred: Path
    flux: Path


@dataclass(frozen=True)
class TemplateWorkspace:
    root: Path
    names: dict[str, str]
    """sha256 -> file name of every stored image."""
    excluded: str
    """sha256 of the near-duplicate copy, excluded after faces@v1 was made."""


@pytest.fixture(scope="session")
def train_models(tmp_path_factory: pytest.TempPathFactory) -> TrainModels:
    import torch
    from diffusers import FluxTransformer2DModel

    from likeness.engines.diffusers.checkpoint import save_single_file
    from likeness.engines.diffusers.tiny import tiny_flux, tiny_sd15, tiny_sdxl

    root = tmp_path_factory.mktemp("train-models")
    sdxl = tiny_sdxl(seed=0)
    sdxl.save_pretrained(root / "sdxl")
    save_single_file(sdxl, root / "sdxl.safetensors")
    sd15 = tiny_sd15(seed=0)
    sd15.save_pretrained(root / "sd15")
    config_file = root / "sd15" / "scheduler" / "scheduler_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "prediction_type": "v_prediction"}))
    flux = tiny_flux(seed=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        guided = FluxTransformer2DModel(**{**flux.transformer.config, "guidance_embeds": True})
    flux.register_modules(transformer=guided.eval())
    flux.save_pretrained(root / "flux")
    return TrainModels(root / "sdxl", root / "sdxl.safetensors", root / "sd15", root / "flux")


@pytest.fixture(scope="session")
def template_ws(tmp_path_factory: pytest.TempPathFactory) -> TemplateWorkspace:
    from likeness.curate.dedup import apply_groups, find_workspace_duplicates
    from likeness.curate.ingest import Ingester
    from likeness.store.datasets import DatasetItem, create_version

    root = tmp_path_factory.mktemp("train-ws") / "ws"
    with Workspace.create(root, name="Train Test", trigger="vrexoq123", class_word="man") as ws:
        ingester = Ingester(ws, origin="source")
        names: dict[str, str] = {}
        for name in ("obama.jpg", "obama2.jpg", "t1.jpg", "Tom_Hanks_54745.png"):
            names[ingester.ingest_bytes((FACES / name).read_bytes(), name=name).sha256] = name
        original = Image.open(FACES / "obama.jpg")
        buffer = io.BytesIO()
        original.resize((original.width // 2, original.height // 2)).save(
            buffer, format="JPEG", quality=60
        )
        copy = ingester.ingest_bytes(buffer.getvalue(), name="obama-copy.jpg").sha256
        names[copy] = "obama-copy.jpg"
        version_fields = {
            "trigger": "vrexoq123",
            "class_word": "man",
            "caption_template": "custom",
            "trigger_placement": "start",
            "selection": {},
        }
        items = [DatasetItem(sha, CAPTIONS[name]) for sha, name in names.items()]
        create_version(ws.db, "faces", items, **version_fields)
        obama = next(sha for sha, name in names.items() if name == "obama.jpg")
        create_version(ws.db, "one", [DatasetItem(obama, CAPTIONS["obama.jpg"])], **version_fields)
        _add_edit_pairs(ws, names, version_fields)
        dedup = ws.settings.dedup
        groups = find_workspace_duplicates(
            ws.db, dedup.phash_max_distance, dedup.dhash_max_distance
        )
        apply_groups(ws.db, groups)
        excluded = {r[0] for r in ws.db.execute("SELECT sha256 FROM images WHERE excluded = 1")}
        assert excluded == {copy}, "dedup must set the copy aside, and only it"
    return TemplateWorkspace(root, names, copy)


EDIT_PAIRS = (
    ("obama.jpg", "obama3.jpg", "make him smile, same person"),
    ("Tom_Hanks_54745.png", "mirror", "turn the head to the other side, same person"),
)


def _add_edit_pairs(ws: Workspace, names: dict[str, str], version_fields: dict) -> None:
    """Store each target as an enriched image with the kept edit that made it, and cut
    ``edits@v1`` from the targets."""
    from likeness.curate.ingest import Ingester
    from likeness.evaluate.enrich_store import EditRow, put_edit
    from likeness.store.datasets import DatasetItem, create_version

    by_name = {name: sha for sha, name in names.items()}
    enriched = Ingester(ws, origin="enriched")
    items = []
    for index, (control, target, instruction) in enumerate(EDIT_PAIRS):
        if target == "mirror":
            buffer = io.BytesIO()
            Image.open(FACES / control).convert("RGB").transpose(
                Image.Transpose.FLIP_LEFT_RIGHT
            ).save(buffer, format="PNG")
            data, name = buffer.getvalue(), "mirrored.png"
        else:
            data, name = (FACES / target).read_bytes(), target
        sha = enriched.ingest_bytes(data, name=name).sha256
        put_edit(ws.db, EditRow(
            key=f"edit-{index}", job_id=None, source_sha=by_name[control], angle=None,
            expression=None, instruction=instruction, engine="test", model="photos", seed=1,
            verdict="kept", reasons=(), result_sha=sha, image_sha=sha, score=None,
            provenance={},
        ))  # fmt: skip
        items.append(DatasetItem(sha, instruction))
    ws.db.commit()
    create_version(ws.db, "edits", items, **version_fields)


@pytest.fixture(scope="session")
def qwen_edit_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from likeness.engines.diffusers.tiny import save_tiny_pipeline

    return save_tiny_pipeline("qwen_image_edit", tmp_path_factory.mktemp("qwen") / "qwen-edit")


@pytest.fixture
def train_ws(template_ws: TemplateWorkspace, tmp_path: Path) -> Iterator[Workspace]:
    """A fresh copy of the template workspace."""
    root = tmp_path / "ws"
    shutil.copytree(template_ws.root, root)
    with Workspace.open(root) as ws:
        yield ws


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models train faster on one thread; the subprocess runs set the same."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def fast_recipe(model: Path, family: str, dataset: str, **fields: object):
    from likeness.train.recipe import TrainRecipe

    return TrainRecipe.from_dict(
        {**FAST, "model": str(model), "family": family, "dataset": dataset, **fields}
    )


# -- judging -------------------------------------------------------------------------------
PROBE_PHOTOS = ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")
"""Photos a test engine serves as probes: obama.jpg and obama2.jpg are training images of
``obama@v1``, obama3.jpg is the same man in a photo the LoRA never saw, biden.jpg another man."""


@pytest.fixture(scope="session")
def instruments():
    from likeness.metrics import Instruments

    return Instruments()


@pytest.fixture(scope="session")
def judge_template(
    template_ws: TemplateWorkspace, tmp_path_factory: pytest.TempPathFactory, instruments
) -> Path:
    """The training workspace plus ``obama@v1`` (obama.jpg and obama2.jpg, source photos),
    with those two photos and every :data:`PROBE_PHOTOS` PNG analysed into its cache once, so
    a test pays no dlib time for them."""
    from likeness.metrics import analyze_paths
    from likeness.store.datasets import DatasetItem, create_version
    from tests.evaluate.photo_engine import photo_png

    root = tmp_path_factory.mktemp("judge-ws") / "ws"
    shutil.copytree(template_ws.root, root)
    served = tmp_path_factory.mktemp("served")
    paths = []
    for name in PROBE_PHOTOS:
        path = served / f"{Path(name).stem}.png"
        path.write_bytes(photo_png(name))
        paths.append(path)
    with Workspace.open(root) as ws:
        names = {name: sha for sha, name in template_ws.names.items()}
        items = [DatasetItem(names[n], CAPTIONS[n]) for n in ("obama.jpg", "obama2.jpg")]
        create_version(ws.db, "obama", items, trigger="vrexoq123", class_word="man",
                       caption_template="custom", trigger_placement="start",
                       selection={})  # fmt: skip
        sources = [ws.blobs.path(item.image_sha) for item in items]
        analyze_paths([*sources, *paths], instruments=instruments, conn=ws.db, workers=2)
    return root


@pytest.fixture
def judge_ws(judge_template: Path, tmp_path: Path) -> Iterator[Workspace]:
    root = tmp_path / "ws"
    shutil.copytree(judge_template, root)
    with Workspace.open(root) as ws:
        yield ws
