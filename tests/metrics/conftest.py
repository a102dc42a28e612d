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


@pytest.fixture(scope="session")
def labelled_faces(run, photo_dir):
    """Every face of every sample photo (t1.jpg's six included), cropped, with the landmarks
    the scoring run found: the base of the labelled quality set (see labelled.py)."""
    import numpy as np
    from labelled import crop_face

    from likeness.imaging import load_rgb

    faces = []
    for score in run.scores:
        analysis = run.analyses[score.sha256]
        rgb = np.asarray(load_rgb(score.path))
        name = Path(score.path).name
        for i, face in enumerate(analysis.faces):
            label = f"{name}#{i}" if len(analysis.faces) > 1 else name
            faces.append(crop_face(label, rgb, face.points, face.box))
    return faces
