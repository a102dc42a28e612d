"""Write a dataset version in the layouts trainers read.

- `kohya`: `OUT/<repeats>_<trigger> <class>/<name>.<ext>` with a `.txt` caption beside each image
  (kohya sd-scripts' DreamBooth-style folders, also read by ai-toolkit and OneTrainer).
- `imagefolder`: images plus `metadata.jsonl` with `file_name` and `text` (Hugging Face
  `datasets` ImageFolder, read by the diffusers training scripts with `--caption_column text`).

Images are copied byte for byte when a trainer reads them as they are (JPEG/PNG/WebP without an
EXIF rotation); anything else (rotated, CMYK, 16-bit, alpha, TIFF...) is written as the upright
8-bit RGB PNG that Likeness measured. A `likeness_dataset.json` manifest records the version.
"""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from PIL import Image

from likeness.imaging import decode_image, encode_png
from likeness.store.datasets import DatasetVersion
from likeness.store.images import ImageRecord, get_image
from likeness.workspace import Workspace

ExportFormat = Literal["kohya", "imagefolder"]
_AS_IS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}
_SAFE_MODES = {"RGB", "L"}
MANIFEST = "likeness_dataset.json"
_ORIENTATION = 0x0112


class ExportError(RuntimeError):
    pass


@dataclass(frozen=True)
class ExportResult:
    folder: Path
    image_folder: Path
    count: int
    reencoded: int

    def to_dict(self) -> dict[str, object]:
        return {
            "folder": str(self.folder),
            "image_folder": str(self.image_folder),
            "count": self.count,
            "reencoded": self.reencoded,
        }


def kohya_folder_name(repeats: int, trigger: str, class_word: str) -> str:
    return f"{repeats}_{trigger} {class_word}".strip()


def export_version(
    ws: Workspace,
    version: DatasetVersion,
    out: Path,
    fmt: ExportFormat,
    *,
    repeats: int | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Write `version` under `out` in `fmt`; refuses a non-empty folder unless `overwrite`."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ExportError(f"{out} is not empty; choose an empty folder or pass --overwrite")
        shutil.rmtree(out)
    if fmt == "kohya":
        reps = repeats if repeats is not None else ws.settings.export.repeats
        image_dir = out / kohya_folder_name(reps, version.trigger, version.class_word)
    elif fmt == "imagefolder":
        image_dir = out
    else:
        raise ExportError(f"unknown export format {fmt!r}; use kohya or imagefolder")
    image_dir.mkdir(parents=True, exist_ok=True)
    reencoded = 0
    metadata = []
    for item in version.items:
        record = get_image(ws.db, item.image_sha)
        if record is None:
            raise ExportError(f"image {item.image_sha} of {version.ref} is missing from the store")
        file_name, rewritten = write_image(ws, record, image_dir)
        reencoded += rewritten
        if fmt == "kohya":
            (image_dir / Path(file_name).with_suffix(".txt")).write_text(
                item.caption + "\n", encoding="utf-8"
            )
        else:
            metadata.append({"file_name": file_name, "text": item.caption})
    if fmt == "imagefolder":
        with (out / "metadata.jsonl").open("w", encoding="utf-8") as handle:
            for row in metadata:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    manifest = {**version.to_dict(), "format": fmt, "image_folder": image_dir.name}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return ExportResult(out, image_dir, len(version.items), reencoded)


def write_image(
    ws: Workspace, record: ImageRecord, folder: Path, stem: str | None = None
) -> tuple[str, bool]:
    """Write one image as `<stem>.<ext>` (default stem: the first 16 hex of its sha256),
    returning its file name and whether it had to be re-encoded."""
    data = ws.blobs.read(record.sha256)
    stem = stem or record.sha256[:16]
    suffix = _AS_IS.get(record.format)
    if suffix and record.mode in _SAFE_MODES and not _rotated(data):
        (folder / f"{stem}{suffix}").write_bytes(data)
        return f"{stem}{suffix}", False
    png = encode_png(decode_image(data, max_pixels=ws.settings.ingest.max_pixels).image)
    (folder / f"{stem}.png").write_bytes(png)
    return f"{stem}.png", True


def _rotated(data: bytes) -> bool:
    """True when the file asks to be rotated or flipped (EXIF orientation), read from the
    header alone: the pixels were checked at ingest."""
    with Image.open(io.BytesIO(data)) as img:
        return img.getexif().get(_ORIENTATION, 1) not in (None, 1)
