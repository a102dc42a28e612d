"""The default face backend: dlib's HOG detector, 68-point shape predictor and ResNet
descriptor, with the model files that the `face_recognition_models` package ships.

Detection runs on a copy downscaled to at most `detect_max_side` pixels (HOG costs grow with
pixels; descriptors move by only ~0.06 when computed this way); landmarks and descriptors are
computed on the full-resolution image. The copy is scanned once as is, which finds faces of
73 px and more there. Faces less than half as wide as the widest face count for no flag, so
when that pass found a face W px wide (73 <= W < 146) the image is scanned again at the scale
that makes faces W / 2 wide 73 px there, and no larger; when it found none, the copy is
scanned again upsampled `upsample` times, which finds faces down to ~37 px there. So a close-up costs one
cheap pass, a portrait a second pass only as large as it needs, and a group photo the full
search.

The HOG score alone does not separate real faces from face-like textures well (a mission patch
on an astronaut's suit scores 0.12, a real but turned face 0.26 at 640 px). Each candidate
below `confident` (1.0) is therefore re-scored: its neighbourhood is resampled so the face is
90, 110, 130 and 160 px wide and detected again, and the mean of those four scores is the
face's `score`; a candidate at or above `confident` keeps its HOG score. On the sample photos
real faces score >= 0.77 and the patch below 0; `threshold` (0.3) sits between.

The shape predictor is not mirror-symmetric: on a mirrored photo it places the landmarks a
little differently, enough to move a near-frontal yaw by several degrees. Landmarks are
therefore the mean of the prediction on the face and the mirrored prediction on the mirrored
face, so a mirrored image gives (up to the detector's box) mirrored landmarks and yaw.

The descriptor is dlib's ResNet on dlib's aligned 150 px face chip, run with numpy
(`likeness.faces.dlib_resnet`: the same weights and numbers, about 6x less CPU than the dlib
wheel's own network code).
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from likeness.faces.dlib_resnet import CHIP_PADDING, CHIP_SIZE, ResNet, load_resnet
from likeness.faces.headpose import HEADPOSE_VERSION, head_pose
from likeness.faces.protocol import FaceModelMissing
from likeness.faces.types import Box, Face
from likeness.imaging import downscale, resample

DETECTOR_FILE = (
    Path(__file__).resolve().parent.parent / "data" / "models" / "dlib_frontal_face_detector.svm"
)
"""`dlib.get_frontal_face_detector()` saved as is: loads in 1 ms instead of 0.5 s."""
SHAPE_MODEL = "shape_predictor_68_face_landmarks.dat"
DESCRIPTOR_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
VERIFY_WIDTHS = (90, 110, 130, 160)
HOG_MIN_FACE = 73
"""The narrowest box dlib's HOG detector reports without upsampling (its pyramid levels report
boxes of 73, 88, 105, 126, 151, ... px)."""
# Index of each 68-point landmark's mirror twin (left eye corner <-> right eye corner, ...).
MIRROR_68 = (
    list(range(16, -1, -1))  # jaw
    + list(range(26, 21, -1))  # brows
    + list(range(21, 16, -1))
    + [27, 28, 29, 30]  # nose bridge
    + [35, 34, 33, 32, 31]  # nostrils
    + [45, 44, 43, 42, 47, 46]  # eyes
    + [39, 38, 37, 36, 41, 40]
    + list(range(54, 47, -1))  # outer lips
    + list(range(59, 54, -1))
    + list(range(64, 59, -1))  # inner lips
    + [67, 66, 65]
)


def dlib_model_dir() -> Path:
    """The `models` folder of the installed `face_recognition_models` package.

    The package is located, not imported: importing it needs `pkg_resources`, which recent
    setuptools no longer ship.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FaceModelMissing(
            "face_recognition_models is not installed; run `pip install face_recognition_models`"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    for name in (SHAPE_MODEL, DESCRIPTOR_MODEL):
        if not (folder / name).is_file():
            raise FaceModelMissing(f"{folder / name} is missing; reinstall face_recognition_models")
    return folder


@dataclass
class _Models:
    detector: Any
    shape: Any
    resnet: ResNet


@dataclass
class DlibAnalyzer:
    """dlib HOG + 68 landmarks + 128-D descriptor.

    Args:
        model_dir (`Path`, *optional*): folder holding the two `.dat` files; defaults to the one
            in `face_recognition_models`.
        detect_max_side (`int`, defaults to 640): long side of the detection copy.
        upsample (`int`, defaults to 1): HOG upsampling for the second pass on the detection
            copy when the first found no face (1 finds faces down to ~37 px there); 0 never
            scans a second time.
        threshold (`float`, defaults to 0.3): minimum verified detection score.
        confident (`float`, defaults to 1.0): HOG score above which no verification is needed.

    Example:
        >>> faces = DlibAnalyzer().analyze(np.asarray(img))  # doctest: +SKIP
    """

    model_dir: Path | None = None
    detect_max_side: int = 640
    upsample: int = 1
    threshold: float = 0.3
    candidate_threshold: float = -0.3
    confident: float = 1.0
    name: str = field(default="dlib", init=False)
    match_threshold: float = field(default=0.6, init=False)
    _models: _Models | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def version(self) -> str:
        return (
            f"hog2pass-fit-verify4-sym68-resnet1np-pose{HEADPOSE_VERSION}:{self.detect_max_side}:{self.upsample}:"
            f"{self.threshold}:{self.confident}"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_models"] = None  # dlib objects do not pickle; each process loads its own
        return state

    def check(self) -> Path:
        """The model folder; raises FaceModelMissing when dlib or a model file is missing,
        without loading anything (a cheap check before a batch starts)."""
        if importlib.util.find_spec("dlib") is None:
            raise FaceModelMissing("dlib is not installed; run `pip install dlib-bin`")
        if self.model_dir is None:
            return dlib_model_dir()
        folder = Path(self.model_dir)
        for name in (SHAPE_MODEL, DESCRIPTOR_MODEL):
            if not (folder / name).is_file():
                raise FaceModelMissing(f"{folder / name} is missing; pass a folder holding it")
        return folder

    def load(self) -> _Models:
        if self._models is None:
            self._models = load_models(self.check())
        return self._models

    def analyze(self, rgb: np.ndarray, small: np.ndarray | None = None) -> list[Face]:
        """Faces of an HxWx3 uint8 RGB image, strongest first.

        `small` is the detection copy when the caller already has it (`rgb` downscaled to a
        `detect_max_side` long side, e.g. by `likeness.imaging.downscale`); it is made here
        otherwise.
        """
        models = self.load()
        full = np.ascontiguousarray(_check_rgb(rgb))
        # 1. Candidates on a downscaled copy, with a permissive threshold; a second pass when
        #    faces half as wide as the widest one may have been too small for the first.
        small = self.detection_copy(full) if small is None else np.ascontiguousarray(small)
        scale = small.shape[1] / full.shape[1]
        rects, raw, _ = models.detector.run(small, 0, self.candidate_threshold)
        widest = max(
            (r.width() for r, s in zip(rects, raw, strict=True) if s >= self.threshold), default=0
        )
        if self.upsample and not widest:
            rects, raw, _ = models.detector.run(small, self.upsample, self.candidate_threshold)
        elif self.upsample and widest < 2 * HOG_MIN_FACE:
            # Reach faces half as wide as the widest one, and no smaller.
            larger = resample(full, max(small.shape[:2]) * 2 * HOG_MIN_FACE / widest)
            scale = larger.shape[1] / full.shape[1]
            rects, raw, _ = models.detector.run(larger, 0, self.candidate_threshold)
        candidates = [
            (float(s), Box(r.left(), r.top(), r.right() + 1, r.bottom() + 1).scaled(1.0 / scale))
            for r, s in zip(rects, raw, strict=True)
        ]
        # 2. Verify the weak candidates at normalised face sizes; keep the confident ones.
        scored = [
            (s if s >= self.confident else self.verify(full, box), box) for s, box in candidates
        ]
        kept = sorted(
            ((s, b) for s, b in scored if s >= self.threshold), key=lambda sb: sb[0], reverse=True
        )
        # 3. Landmarks, descriptor and head pose at full resolution.
        return self._describe(full, kept)

    def detection_copy(self, rgb: np.ndarray) -> np.ndarray:
        """`rgb` downscaled to a `detect_max_side` long side (itself when already smaller)."""
        return downscale(rgb, self.detect_max_side)

    def verify(self, full: np.ndarray, box: Box) -> float:
        """Mean HOG score of `box` re-detected at the `VERIFY_WIDTHS` face sizes."""
        detector = self.load().detector
        height, width = full.shape[:2]
        margin = 0.6 * box.width
        cx0, cy0 = max(0, int(box.x0 - margin)), max(0, int(box.y0 - margin))
        cx1, cy1 = min(width, int(box.x1 + margin)), min(height, int(box.y1 + margin))
        if cx1 - cx0 < 8 or cy1 - cy0 < 8:
            return -1.0
        crop = full[cy0:cy1, cx0:cx1]
        local = Box(box.x0 - cx0, box.y0 - cy0, box.x1 - cx0, box.y1 - cy0)
        scores = []
        # Largest first: each smaller size is resampled from the one before (cheaper than
        # from the full-resolution crop, and as free of aliasing).
        source, source_factor = crop, 1.0
        for target in sorted(VERIFY_WIDTHS, reverse=True):
            factor = target / max(1.0, box.width)
            resized = np.ascontiguousarray(_resize(source, factor / source_factor))
            if factor < 1:
                source, source_factor = resized, factor
            rects, found, _ = detector.run(resized, 0, -1.0)
            want = local.scaled(factor)
            best = -1.0
            for r, s in zip(rects, found, strict=True):
                hit = Box(r.left(), r.top(), r.right() + 1, r.bottom() + 1)
                if hit.iou(want) > 0.3:
                    best = max(best, float(s))
            scores.append(best)
        return float(np.mean(scores))

    def _describe(self, full: np.ndarray, kept: list[tuple[float, Box]]) -> list[Face]:
        import dlib

        models = self.load()
        height, width = full.shape[:2]
        faces, chips = [], []
        for score, box in kept:
            rect = dlib.rectangle(
                int(round(box.x0)), int(round(box.y0)), int(round(box.x1)) - 1,
                int(round(box.y1)) - 1,
            )  # fmt: skip
            points = self._landmarks(full, box)
            shape = dlib.full_object_detection(
                rect, [dlib.point(int(round(x)), int(round(y))) for x, y in points]
            )
            chips.append(np.asarray(dlib.get_face_chip(full, shape, CHIP_SIZE, CHIP_PADDING)))
            faces.append((box, score, points))
        descriptors = models.resnet.describe(chips) if chips else []
        return [
            Face(
                box=box,
                score=score,
                landmarks=tuple((float(x), float(y)) for x, y in points),
                descriptor=tuple(float(v) for v in descriptor),
                pose=head_pose(points, width, height),
            )
            for (box, score, points), descriptor in zip(faces, descriptors, strict=True)
        ]

    def _landmarks(self, full: np.ndarray, box: Box) -> np.ndarray:
        """68 landmarks, averaged with the mirrored prediction on the mirrored face."""
        predictor = self.load().shape
        height, width = full.shape[:2]
        direct = _predict(predictor, full, box)
        # Mirror only the face's neighbourhood: x -> (cx0 + cx1 - 1) - x inside the window.
        margin = int(0.5 * box.width) + 1
        cx0, cx1 = max(0, int(box.x0) - margin), min(width, int(box.x1) + margin)
        cy0, cy1 = max(0, int(box.y0) - margin), min(height, int(box.y1) + margin)
        window = np.ascontiguousarray(full[cy0:cy1, cx0:cx1][:, ::-1])
        span = cx1 - cx0
        mirrored_box = Box(span - (box.x1 - cx0), box.y0 - cy0, span - (box.x0 - cx0), box.y1 - cy0)
        mirrored = _predict(predictor, window, mirrored_box)[MIRROR_68]
        mirrored[:, 0] = (span - 1 - mirrored[:, 0]) + cx0
        mirrored[:, 1] += cy0
        return (direct + mirrored) / 2


@functools.lru_cache(maxsize=4)
def load_models(folder: Path) -> _Models:
    """The three dlib models of `folder`, loaded once per process (about 0.6 s)."""
    import dlib

    return _Models(
        detector=frontal_face_detector(),
        shape=dlib.shape_predictor(str(folder / SHAPE_MODEL)),
        resnet=load_resnet(folder / DESCRIPTOR_MODEL),
    )


def frontal_face_detector() -> Any:
    """dlib's frontal face detector, from the saved copy when this dlib reads it."""
    import dlib

    try:
        return dlib.fhog_object_detector(str(DETECTOR_FILE))
    except RuntimeError:  # missing, or saved in a format this dlib does not read
        return dlib.get_frontal_face_detector()


def _predict(predictor: object, image: np.ndarray, box: Box) -> np.ndarray:
    import dlib

    rect = dlib.rectangle(
        int(round(box.x0)), int(round(box.y0)), int(round(box.x1)) - 1, int(round(box.y1)) - 1
    )
    shape = predictor(image, rect)
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(
            f"expected an HxWx3 uint8 RGB array, got shape {arr.shape} dtype {arr.dtype}; "
            "convert with np.asarray(image.convert('RGB'))"
        )
    return arr


def _resize(arr: np.ndarray, factor: float) -> np.ndarray:
    import cv2

    h, w = arr.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return cv2.resize(arr, size, interpolation=interpolation)
