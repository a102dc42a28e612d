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


def test_square_moves_and_shrinks_inside_the_photo_before_any_padding(images, analyses):
    from likeness.faces.crop import fit_square

    img = images["Tom_Hanks_54745.png"]  # 112 x 112, the face fills most of it
    face = analyses["Tom_Hanks_54745.png"][0]
    left, top, right, bottom = fit_square(crop_box(face, 0.4), face, img.shape[1], img.shape[0])
    assert right - left == bottom - top >= face.box.width
    assert left >= 0 and top >= 0 and right <= img.shape[1] + 6 and bottom <= img.shape[0] + 6
    # A square that leaves the top of the photo moves down, keeping its size and the face.
    big = analyses["obama.jpg"][0]
    wanted = crop_box(big, 0.4)
    assert wanted[1] < 0
    moved = fit_square(wanted, big, 910, 1137)
    assert moved[1] == 0 and moved[2] - moved[0] == wanted[2] - wanted[0]
    assert moved[1] <= big.box.y0 and moved[3] >= big.box.y1
    # A square already inside is left alone.
    inside = (wanted[0], 10, wanted[2], 10 + wanted[2] - wanted[0])
    assert fit_square(inside, big, 910, 1137) == inside
