"""A server folder for tests: accounts, a shared model folder, workspaces filled through the
library (photos, a dataset version, a LoRA file, a card, queued and finished jobs), and
clients signed in the way a browser signs in."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from likeness.curate.datasets import create_dataset_version
from likeness.curate.ingest import Ingester
from likeness.curate.selection import Selection
from likeness.data import FACES
from likeness.evaluate import store as evaluate_store
from likeness.evaluate.card_spec import load_card_spec
from likeness.review import decisions
from likeness.serve import accounts, queue
from likeness.serve.serverdb import open_server_db
from likeness.serve.settings import ServeSettings, serve_settings_from_dict
from likeness.serve.work import card_spec
from likeness.train.lora_files import add_lora
from likeness.workspace import Workspace

HOST = "studio.test"
BASE = f"https://{HOST}"
ORIGIN = {"origin": BASE}
SHARED_MODEL = "tiny-sdxl"


def settings_for(root: Path, **serve: Any) -> ServeSettings:
    """Test settings: the shared folder under `root`, Host studio.test, thread workers."""
    values: dict[str, Any] = {
        "shared_models": [str(root / "shared")],
        "hosts": [HOST],
        "worker_mode": "thread",
        **serve,
    }
    return serve_settings_from_dict({"serve": values})


def make_server(root: Path, names: list[str]) -> dict[str, str]:
    """A server folder with a shared model (a diffusers folder) and accounts; name -> token."""
    (root / "shared" / SHARED_MODEL).mkdir(parents=True)
    (root / "shared" / SHARED_MODEL / "model_index.json").write_text("{}")
    conn = open_server_db(root)
    try:
        return {name: accounts.add_user(conn, root, name)[1] for name in names}
    finally:
        conn.close()


def face_bytes(name: str, width: int = 360, fmt: str = "JPEG") -> bytes:
    """A sample face photo, downscaled (scoring stays fast), as file bytes."""
    with Image.open(FACES / name) as img:
        img.draft("RGB", (width, width))
        rgb = img.convert("RGB")
    rgb.thumbnail((width, width * 2))
    buf = io.BytesIO()
    rgb.save(buf, format=fmt, quality=92)
    return buf.getvalue()


def blob_png(seed: int, size: int = 96) -> bytes:
    """A distinct small image (smooth random blobs: no two are near duplicates)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def lora_file(path: Path, seed: int) -> Path:
    """A small kohya-format SDXL LoRA file (random weights; distinct per seed)."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    key = "lora_unet_input_blocks_4_1_proj_in"
    save_file(
        {
            f"{key}.lora_down.weight": rng.standard_normal((4, 8)).astype(np.float32),
            f"{key}.lora_up.weight": rng.standard_normal((8, 4)).astype(np.float32),
            f"{key}.alpha": np.array(4.0, dtype=np.float32),
        },
        str(path),
    )
    return path


@dataclass
class Holdings:
    """What one user holds: the identifiers another user will try."""

    images: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    loras: list[str] = field(default_factory=list)
    cards: list[str] = field(default_factory=list)
    jobs: list[int] = field(default_factory=list)
    lora_paths: list[str] = field(default_factory=list)


def fill_workspace(root: Path, user: str, seed: int) -> Holdings:
    """Photos, a reviewed image, a dataset version, a LoRA and a card, made as the CLI would."""
    conn = open_server_db(root)
    account = accounts.get_user(conn, user)
    assert account is not None
    held = Holdings()
    with Workspace.open(root / account.folder) as ws:
        ingester = Ingester(ws, "source")
        for i in range(3):
            result = ingester.ingest_bytes(blob_png(seed * 10 + i), name=f"{user}-{i}.png")
            assert result.status == "stored", result
            held.images.append(result.sha256 or "")
        decisions.decide(ws.db, held.images[0], "accepted", reviewer=user)
        version = create_dataset_version(ws, f"{user}-set", Selection(origins=("source",)))
        held.datasets.append(version.name)
        added = add_lora(
            ws, lora_file(root / f"{user}-upload.safetensors", seed), dataset=None, family="sdxl"
        )
        held.loras.append(added.row.sha256)
        held.lora_paths.append(added.row.path)
        spec = card_spec(load_card_spec(), ["front_neutral"])
        evaluate_store.create_card(
            ws.db,
            label=f"{user}-card",
            run_key=f"run-{user}",
            recipe={},
            recipe_hash="0" * 64,
            spec=spec.to_dict(),
            spec_hash=spec.spec_hash(),
            tries=1,
        )
        held.cards.append(f"{user}-card")
    done = queue.enqueue(conn, account.id, "generate", {"n": 1}, total=1)
    queue.finish(conn, done.id, "done", result={"images": [{"sha256": held.images[1]}]})
    waiting = queue.enqueue(conn, account.id, "generate", {"n": 1}, total=1)
    held.jobs += [done.id, waiting.id]
    conn.close()
    return held


def sign_in(client: TestClient, name: str, token: str) -> dict[str, str]:
    """Sign in through the form, as a browser does; the headers of later changes (Origin and
    the page's CSRF token)."""
    page = client.get("/login")
    login_csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert login_csrf, page.text
    answer = client.post(
        "/login",
        data={"name": name, "token": token, "csrf": login_csrf.group(1), "next": "/studio"},
        headers=ORIGIN,
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    studio = client.get("/studio")
    assert studio.status_code == 200, studio.text
    csrf = re.search(r'data-csrf="([^"]+)"', studio.text)
    assert csrf
    return {**ORIGIN, "X-CSRF-Token": csrf.group(1)}
