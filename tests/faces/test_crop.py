from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from likeness.faces import crop_box, reference_crop


def test_reference_crop_is_square_and_centred_on_the_face(analyzer, images, analyses):
    img = Image.fromarray(images["obama.jpg"])
    face = analyses["obama.jpg"][0]
    crop = reference_crop(img, face, size=256, margin=0.4)
    assert crop.size == (256, 256)
    # The crop holds the same person, and the face fills its middle.
    again = analyzer.analyze(np.asarray(crop))
    assert len(again) == 1
    assert np.linalg.norm(again[0].embedding - face.embedding) < 0.2
    cx, cy = again[0].box.center
    assert abs(cx - 128) < 30 and abs(cy - 128) < 40
    assert 0.35 < again[0].box.width / 256 < 0.8


def test_margin_widens_the_crop(analyses):
    face = analyses["obama.jpg"][0]
    tight, loose = crop_box(face, 0.1), crop_box(face, 0.8)
    assert loose[2] - loose[0] > tight[2] - tight[0]
    with pytest.raises(ValueError, match="margin"):
        crop_box(face, -0.1)


def test_crop_of_a_cut_off_face_is_padded_with_edge_pixels(images, analyses):
    img = Image.fromarray(images["obama_partial_face.jpg"])
    face = analyses["obama_partial_face.jpg"][0]
    left = crop_box(face, 0.4)[0]
    assert left < 0
    crop = np.asarray(reference_crop(img, face, size=128))
    assert crop.shape == (128, 128, 3)
    assert crop[:, 0].std() > 0  # repeated border pixels, not a black bar
