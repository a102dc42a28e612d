"""Measuring instruments: identity against a reference set, head-angle buckets, expression,
body pose and image quality, and the scoring pipeline that runs them in parallel with a cache.

Every metric's unit, direction and default threshold is documented in docs/metrics.md.
"""

from likeness.metrics.analysis import ANALYZER_NAME, ImageAnalysis, Instruments, analyze_image
from likeness.metrics.angle import ANGLES, yaw_bucket
from likeness.metrics.identity import IdentityCalibration, calibrate, identify, match_score
from likeness.metrics.scoring import (
    ImageScore,
    ReferenceSet,
    ScoreRun,
    Thresholds,
    analyze_paths,
    score_images,
)
from likeness.metrics.workers import shutdown_workers

__all__ = [
    "ANALYZER_NAME",
    "ANGLES",
    "IdentityCalibration",
    "ImageAnalysis",
    "ImageScore",
    "Instruments",
    "ReferenceSet",
    "ScoreRun",
    "Thresholds",
    "analyze_image",
    "analyze_paths",
    "calibrate",
    "identify",
    "match_score",
    "score_images",
    "shutdown_workers",
    "yaw_bucket",
]
