from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

import likeness

SAMPLES = Path(likeness.__file__).parent / "data" / "samples" / "faces"
OBAMAS = [
    "obama.jpg",
    "obama2.jpg",
    "obama3.jpg",
    "obama_partial_face.jpg",
    "obama_partial_face2.jpg",
]
OTHERS = ["biden.jpg", "Tom_Hanks_54745.png", "astronaut.png"]


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory) -> Path:
    """The sample photos plus scikit-image's astronaut, as files."""
    from skimage import data

    folder = tmp_path_factory.mktemp("faces")
    for path in SAMPLES.iterdir():
        if path.suffix in (".jpg", ".png"):
            shutil.copy(path, folder / path.name)
    Image.fromarray(data.astronaut()).save(folder / "astronaut.png")
    return folder


@pytest.fixture(scope="session")
def run(photo_dir):
    """One parallel scoring run of every photo against obama.jpg (computed once)."""
    from likeness.metrics import score_images

    paths = sorted(photo_dir.iterdir())
    return score_images(paths, [photo_dir / "obama.jpg"], workers=2)


@pytest.fixture(scope="session")
def by_name(run):
    return {Path(s.path).name: s for s in run.scores}


@pytest.fixture(scope="session")
def quick():
    """Instruments without body pose: what the degradation tests need."""
    from likeness.metrics import Instruments

    return Instruments(pose=None)
