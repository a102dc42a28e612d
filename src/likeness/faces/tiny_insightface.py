"""Tiny InsightFace-layout ONNX models, built offline with the `onnx` package.

They have the real inputs and outputs of a buffalo_l pack, so the InsightFace backend and the
identity adapters run every code path on them in milliseconds (tests, benchmarks):

- `det_10g.onnx`: an SCRFD-shaped detector, 1x3x640x640 in, nine outputs (scores (N, 1), box
  distances (N, 4), keypoint offsets (N, 10) for strides 8/16/32, two anchors per cell). Its
  weights are constructed, not trained: a small random convolution over the image plus a fixed
  logit map, so exactly one anchor (stride 32, the cell at the canvas centre) scores about 0.99
  on any photo. The box around it covers `face_fraction` of the canvas and the five keypoints
  sit where ArcFace's template puts them inside that box: a square reference crop (the face
  centred, as `refs crop` writes it) reads as one frontal face.
- `w600k_r50.onnx`: an ArcFace-shaped recogniser, Nx3x112x112 in, Nx512 out, random
  (seeded) convolution + linear weights: different faces give different embeddings.

Example::

    folder = save_tiny_insightface(tmp_path / "buffalo_tiny")
    faces = InsightFaceAnalyzer(folder).analyze(rgb)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from likeness.faces.insightface_backend import ANCHORS, ARCFACE_TEMPLATE, STRIDES

DET_SIZE = 640
ARCFACE_SIZE_HALF = 56.0  # the template's centre and half-side, in its 112 px square


def _onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:  # a development dependency
        raise ImportError("building tiny ONNX models needs the onnx package") from exc
    return onnx


def _tensor(name: str, array: np.ndarray) -> Any:
    from onnx import numpy_helper

    return numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name)


def _shape(name: str, values: list[int]) -> Any:
    from onnx import numpy_helper

    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def _head(
    nodes: list[Any], inits: list[Any], rng: np.random.Generator, stride: int, width: int,
    name: str, bias: np.ndarray, sigmoid: bool,
) -> None:  # fmt: skip
    """One output: a stride-`stride` convolution of the image with `ANCHORS * width` channels,
    plus the fixed map `bias` (channels, cells, cells), reshaped to (cells * cells * 2, width)."""
    from onnx import helper

    channels = ANCHORS * width
    tag = f"{name}_conv"
    inits.append(_tensor(f"{tag}_w", rng.normal(0, 1e-4, (channels, 3, stride, stride))))
    inits.append(_tensor(f"{tag}_map", bias[None]))
    nodes.append(
        helper.make_node(
            "Conv", ["input.1", f"{tag}_w"], [f"{tag}_out"],
            kernel_shape=[stride, stride], strides=[stride, stride],
        )
    )  # fmt: skip
    nodes.append(helper.make_node("Add", [f"{tag}_out", f"{tag}_map"], [f"{tag}_sum"]))
    last = f"{tag}_sum"
    if sigmoid:
        nodes.append(helper.make_node("Sigmoid", [last], [f"{tag}_sig"]))
        last = f"{tag}_sig"
    nodes.append(helper.make_node("Transpose", [last], [f"{tag}_t"], perm=[0, 2, 3, 1]))
    inits.append(_shape(f"{tag}_shape", [-1, width]))
    nodes.append(helper.make_node("Reshape", [f"{tag}_t", f"{tag}_shape"], [name]))


def tiny_detector(path: Path, *, face_fraction: float = 0.55, seed: int = 0) -> Path:
    """Write the SCRFD-shaped detector to `path` (see the module docstring)."""
    onnx = _onnx()
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    nodes: list[Any] = []
    inits: list[Any] = []
    outputs: list[Any] = []
    half = face_fraction * DET_SIZE / 2  # half the face box side, in pixels
    # Keypoints: ArcFace's template mapped from its 112 px square onto the face box.
    template = (ARCFACE_TEMPLATE - ARCFACE_SIZE_HALF) / ARCFACE_SIZE_HALF * half
    heads: list[tuple[str, int, bool, Any]] = []
    for kind, width, sigmoid in (("score", 1, True), ("bbox", 4, False), ("kps", 10, False)):
        for stride in STRIDES:
            cells = DET_SIZE // stride
            bias = np.zeros((ANCHORS * width, cells, cells), np.float32)
            centre = cells // 2
            if kind == "score":
                bias[:] = -12.0  # sigmoid(-12) = 6e-6: no face
                if stride == STRIDES[-1]:
                    bias[0, centre, centre] = 5.0  # anchor 0 of the centre cell: 0.993
            elif kind == "bbox":
                bias[:] = 1.0
                if stride == STRIDES[-1]:
                    bias[0:4, centre, centre] = half / stride
            elif stride == STRIDES[-1]:
                bias[0:10, centre, centre] = (template / stride).reshape(-1)
            heads.append((f"{kind}_{stride}", width, sigmoid, bias))
    for name, width, sigmoid, bias in heads:
        _head(nodes, inits, rng, int(name.rsplit("_", 1)[1]), width, name, bias, sigmoid)
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, width]))
    graph = helper.make_graph(
        nodes,
        "tiny_scrfd",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, DET_SIZE, DET_SIZE])],
        outputs,
        initializer=inits,
    )
    _save(onnx, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def tiny_recogniser(path: Path, *, seed: int = 1) -> Path:
    """Write the ArcFace-shaped recogniser (Nx3x112x112 -> Nx512) to `path`."""
    onnx = _onnx()
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    inits = [
        _tensor("conv_w", rng.normal(0, 0.2, (8, 3, 4, 4))),
        _tensor("conv_b", np.zeros(8)),
        _tensor("fc_w", rng.normal(0, 0.02, (8 * 28 * 28, 512))),
        _tensor("fc_b", rng.normal(0, 0.01, 512)),
    ]
    nodes = [
        helper.make_node(
            "Conv", ["input.1", "conv_w", "conv_b"], ["conv"], kernel_shape=[4, 4], strides=[4, 4]
        ),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("Flatten", ["relu"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["683"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_arcface",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["N", 512])],
        initializer=inits,
    )
    _save(onnx, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def _save(onnx: Any, model: Any, path: Path) -> None:
    model.ir_version = 8  # readable by every onnxruntime of the last few years
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def save_tiny_insightface(folder: str | Path, *, face_fraction: float = 0.55) -> Path:
    """A buffalo_l-layout folder (`det_10g.onnx`, `w600k_r50.onnx`) of tiny models."""
    folder = Path(folder)
    tiny_detector(folder / "det_10g.onnx", face_fraction=face_fraction)
    tiny_recogniser(folder / "w600k_r50.onnx")
    return folder
