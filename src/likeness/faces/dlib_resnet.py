"""dlib's face-recognition ResNet (`dlib_face_recognition_resnet_model_v1.dat`), run with numpy.

Why: the dlib wheel is built without a BLAS library, so its own network code takes about
85 ms of CPU per face, more than everything else the analysis does for a one-face photo. The
same weights run as im2col + matrix products through numpy's OpenBLAS (one thread) take about
13 ms, and give dlib's descriptors to float rounding (|difference| < 1e-5 per component, so
distances move by less than 1e-4; `tests/faces/test_dlib_resnet.py` compares them).

The weights are read from dlib's own file: tensors are stored as raw little-endian float32,
everything else as dlib's variable-length integers, so the file is read in well under a
second. Tag and skip layers leave no trace in the stream, so the graph is rebuilt from the
known architecture of `dnn_face_recognition_ex.cpp` and the file is checked against it:

    input 150x150 RGB, (pixel - mean) / 256
    conv 7x7/2 32, affine, relu, max pool 3x3/2
    residual units: [conv 3x3/s N, affine, relu, conv 3x3 N, affine] + skip, relu
      32 x3, 64 (down) + 64 x3, 128 (down) + 128 x2, 256 (down) + 256 x2, 256 (down)
      a down unit's skip is a 2x2/2 average pool of its input; where the two branches differ
      in channels or size, dlib zero-pads the smaller one (it does at 8 -> 3 px vs 4 px)
    global average pool, fully connected 256 -> 128 without bias
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

CHIP_SIZE = 150
CHIP_PADDING = 0.25


class ModelFormatError(ValueError):
    """The file is not dlib's face-recognition ResNet v1 as this module knows it."""


@dataclass(frozen=True)
class Conv:
    """A convolution with dlib's affine (frozen batch norm) folded into it."""

    weight: np.ndarray  # (kh * kw * c_in, c_out), rows in (y, x, channel) order
    bias: np.ndarray  # (c_out,)
    size: int
    stride: int
    padding: int


@dataclass(frozen=True)
class Unit:
    """One residual unit: relu(conv_b(relu(conv_a(x))) + skip(x))."""

    a: Conv
    b: Conv
    down: bool


@dataclass(frozen=True)
class ResNet:
    mean: np.ndarray  # (3,) RGB
    stem: Conv
    pool: tuple[int, int, int]  # max pool size, stride, padding
    units: tuple[Unit, ...]
    fc: np.ndarray  # (256, 128)

    def describe(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """(n, 128) descriptors of n aligned 150x150x3 uint8 RGB face chips (as made by
        `dlib.get_face_chip(image, shape, 150, 0.25)`)."""
        with single_threaded_blas():
            return np.stack([self._forward(chip) for chip in chips])

    def _forward(self, chip: np.ndarray) -> np.ndarray:
        if chip.shape != (CHIP_SIZE, CHIP_SIZE, 3):
            raise ValueError(f"expected a {CHIP_SIZE}x{CHIP_SIZE}x3 chip, got {chip.shape}")
        x = (chip.astype(np.float32) - self.mean) / np.float32(256.0)
        x = np.maximum(_conv(x, self.stem), 0)
        size, stride, padding = self.pool
        x = _max_pool(x, size, stride, padding)
        for unit in self.units:
            branch = _conv(np.maximum(_conv(x, unit.a), 0), unit.b)
            skip = _avg_pool(x, 2, 2) if unit.down else x
            x = np.maximum(_add_padded(branch, skip), 0)
        return x.mean(axis=(0, 1), dtype=np.float32) @ self.fc


def _conv(x: np.ndarray, conv: Conv) -> np.ndarray:
    """x: (h, w, c) float32 -> (h', w', c_out); zero padding, cross-correlation (as dlib)."""
    if conv.padding:
        p = conv.padding
        x = np.pad(x, ((p, p), (p, p), (0, 0)))
    k, s = conv.size, conv.stride
    windows = sliding_window_view(x, (k, k), axis=(0, 1))[::s, ::s]  # (h', w', c, k, k)
    h, w = windows.shape[:2]
    cols = windows.transpose(0, 1, 3, 4, 2).reshape(h * w, -1)
    return (cols @ conv.weight + conv.bias).reshape(h, w, -1)


def _max_pool(x: np.ndarray, size: int, stride: int, padding: int) -> np.ndarray:
    if padding:
        x = np.pad(x, ((padding, padding), (padding, padding), (0, 0)), constant_values=-np.inf)
    return sliding_window_view(x, (size, size), axis=(0, 1))[::stride, ::stride].max(axis=(3, 4))


def _avg_pool(x: np.ndarray, size: int, stride: int) -> np.ndarray:
    windows = sliding_window_view(x, (size, size), axis=(0, 1))[::stride, ::stride]
    return windows.mean(axis=(3, 4), dtype=np.float32)


def _add_padded(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a + b, the smaller one zero-padded at the end of each axis (dlib's add_prev)."""
    if a.shape == b.shape:
        return a + b
    out = np.zeros(np.maximum(a.shape, b.shape), dtype=np.float32)
    out[: a.shape[0], : a.shape[1], : a.shape[2]] += a
    out[: b.shape[0], : b.shape[1], : b.shape[2]] += b
    return out


# --- reading dlib's file -----------------------------------------------------------------


class _Reader:
    """dlib's serialisation primitives (dlib/serialize.h, dlib/cuda/tensor.h)."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def int(self) -> int:
        head = self.data[self.pos]
        size = head & 0x0F
        value = int.from_bytes(self.data[self.pos + 1 : self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -value if head & 0x80 else value

    def float(self) -> float:
        mantissa = self.int()
        return math.ldexp(mantissa, self.int())

    def string(self) -> str:
        size = self.int()
        text = self.data[self.pos : self.pos + size].decode("latin-1")
        self.pos += size
        return text

    def bool(self) -> bool:
        value = self.data[self.pos : self.pos + 1]
        self.pos += 1
        if value not in (b"0", b"1"):
            raise ModelFormatError(f"expected a bool at byte {self.pos - 1}")
        return value == b"1"

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise ModelFormatError(f"tensor version {version} at byte {self.pos}")
        shape = tuple(self.int() for _ in range(4))
        count = math.prod(shape)
        values = np.frombuffer(self.data, "<f4", count, self.pos).astype(np.float32)
        self.pos += 4 * count
        return values.reshape(shape)

    def alias(self) -> tuple[int, ...]:
        self.int()  # version
        return tuple(self.int() for _ in range(4))


def _layer(reader: _Reader) -> tuple[str, dict]:
    """One layer's own record (its `details`), by its version string."""
    name = reader.string()
    kind = name.rstrip("_0123456789")
    if kind == "con":
        params = reader.tensor().reshape(-1)
        filters, nr, nc = reader.int(), reader.int(), reader.int()
        stride_y, stride_x = reader.int(), reader.int()
        pad_y, pad_x = reader.int(), reader.int()
        shape, _ = reader.alias(), reader.alias()
        for _ in range(4):
            reader.float()  # learning-rate and weight-decay multipliers
        if name in ("con_5", "con_6"):
            reader.bool()
        if name == "con_6":
            reader.bool()
        if (nr, nc, stride_y, pad_y) != (nc, nr, stride_x, pad_x):
            raise ModelFormatError(f"non-square convolution in {name}")
        count = math.prod(shape)
        weights = params[:count].reshape(shape)  # (filters, c_in, nr, nc)
        biases = params[count : count + filters]
        return "con", {"w": weights, "b": biases, "size": nr, "stride": stride_y, "pad": pad_y}
    if kind == "affine":
        params = reader.tensor().reshape(-1)
        reader.alias(), reader.alias()
        reader.int()  # mode
        if name == "affine_2":
            reader.bool()
        half = params.size // 2
        return "affine", {"gamma": params[:half], "beta": params[half:]}
    if kind == "relu":
        if name == "relu_2":
            reader.bool()
        return "relu", {}
    if kind in ("max_pool", "avg_pool"):
        nr, nc, stride_y, stride_x, pad_y, pad_x = (reader.int() for _ in range(6))
        if (nr, stride_y, pad_y) != (nc, stride_x, pad_x):
            raise ModelFormatError(f"non-square pooling in {name}")
        return kind, {"size": nr, "stride": stride_y, "pad": pad_y}
    if kind == "add_prev":
        return "add_prev", {}
    if kind == "fc":
        outputs, inputs = reader.int(), reader.int()
        params = reader.tensor().reshape(-1)
        reader.alias(), reader.alias()
        if reader.int() != 1:  # fc_bias_mode: FC_NO_BIAS
            raise ModelFormatError("expected a fully connected layer without bias")
        for _ in range(4):
            reader.float()
        if name == "fc_3":
            reader.bool()
        return "fc", {"w": params[: inputs * outputs].reshape(inputs, outputs)}
    raise ModelFormatError(f"unexpected layer {name!r}")


def _layers(data: bytes) -> tuple[np.ndarray, list[tuple[str, dict]]]:
    """The input's mean colour and every layer's record, input side first."""
    reader = _Reader(data)
    reader.int()  # add_loss_layer version
    if reader.string() != "loss_metric_2":
        raise ModelFormatError("not a metric-learning network (loss_metric_2)")
    reader.float(), reader.float()  # margin, distance threshold
    # Wrappers write their versions first and their own records after their sub-network's.
    start = data.find(b"input_rgb_image_sized")
    if start < 0:
        raise ModelFormatError("no input_rgb_image_sized layer")
    versions = []
    while reader.pos < start - 2:  # the name's length is 2 bytes
        versions.append(reader.int())
    if reader.string() != "input_rgb_image_sized":
        raise ModelFormatError("unexpected bytes before the input layer")
    mean = np.array([reader.float() for _ in range(3)], dtype=np.float32)
    if (reader.int(), reader.int()) != (CHIP_SIZE, CHIP_SIZE):
        raise ModelFormatError(f"input is not {CHIP_SIZE}x{CHIP_SIZE}")
    layers = []
    first = True
    while reader.pos < len(data):
        layers.append(_layer(reader))
        for _ in range(3):  # setup called, gradient stale, output disabled
            reader.bool()
        for _ in range(3):  # x_grad, cached_output, params_grad / grad_final
            reader.tensor()
        if first and versions[-1] >= 3:
            reader.int()  # sample expansion factor
        first = False
    return mean, layers


def _fold(con: dict, affine: dict) -> Conv:
    gamma, beta = affine["gamma"], affine["beta"]
    weight = con["w"] * gamma[:, None, None, None]  # (c_out, c_in, k, k)
    bias = con["b"] * gamma + beta
    matrix = np.ascontiguousarray(weight.transpose(2, 3, 1, 0).reshape(-1, weight.shape[0]))
    return Conv(
        matrix.astype(np.float32), bias.astype(np.float32), con["size"], con["stride"], con["pad"]
    )


def _build(mean: np.ndarray, layers: list[tuple[str, dict]]) -> ResNet:
    kinds = [k for k, _ in layers]
    if kinds[:4] != ["con", "affine", "relu", "max_pool"] or kinds[-2:] != ["avg_pool", "fc"]:
        raise ModelFormatError("unexpected stem or head; not dlib's face-recognition ResNet v1")
    stem = _fold(layers[0][1], layers[1][1])
    pool = layers[3][1]
    units, i = [], 4
    plain = ["con", "affine", "relu", "con", "affine", "add_prev", "relu"]
    down = ["con", "affine", "relu", "con", "affine", "avg_pool", "add_prev", "relu"]
    while i < len(layers) - 2:
        is_down = kinds[i : i + 8] == down and layers[i + 5][1]["size"] == 2
        if not is_down and kinds[i : i + 7] != plain:
            raise ModelFormatError(f"unexpected layers at {i}: {kinds[i : i + 8]}")
        a = _fold(layers[i][1], layers[i + 1][1])
        b = _fold(layers[i + 3][1], layers[i + 4][1])
        units.append(Unit(a, b, down=is_down))
        i += 8 if is_down else 7
    if layers[-2][1]["size"] != 0:
        raise ModelFormatError("expected a global average pool before the last layer")
    fc = np.ascontiguousarray(layers[-1][1]["w"], dtype=np.float32)
    return ResNet(mean, stem, (pool["size"], pool["stride"], pool["pad"]), tuple(units), fc)


@functools.lru_cache(maxsize=2)
def load_resnet(path: Path) -> ResNet:
    """The network in dlib's `.dat` file at `path`, read once per process (about 0.2 s)."""
    try:
        return _build(*_layers(Path(path).read_bytes()))
    except ModelFormatError as exc:
        raise ModelFormatError(f"{path}: {exc}") from exc
    except (IndexError, KeyError, ValueError) as exc:  # the stream ended or went astray
        raise ModelFormatError(f"{path}: truncated or not dlib's face ResNet ({exc})") from exc


# --- one BLAS thread ---------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _openblas() -> ctypes.CDLL | None:
    """numpy's bundled OpenBLAS, when that is what numpy uses (its thread count can then be
    set while running, which no numpy API offers)."""
    folder = Path(np.__file__).parent.parent / "numpy.libs"
    for path in sorted(glob.glob(str(folder / "libscipy_openblas*.so*"))):
        with contextlib.suppress(OSError):
            lib = ctypes.CDLL(path)
            if hasattr(lib, "scipy_openblas_set_num_threads64_"):
                return lib
    return None


def blas_threads(count: int) -> int | None:
    """Set the number of threads of numpy's bundled OpenBLAS; returns the number before
    (None, and nothing changed, when numpy uses another BLAS)."""
    lib = _openblas()
    if lib is None:
        return None
    before = int(lib.scipy_openblas_get_num_threads64_())
    if before != count:
        lib.scipy_openblas_set_num_threads64_(count)
    return before


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run numpy's matrix products on one thread for the duration.

    The scoring pipeline already runs one process per core; OpenBLAS's own threads would
    then fight over the same cores, and they spin while they wait: on a busy 2-core machine
    a product took 10x the CPU time with two threads than with one.
    """
    before = blas_threads(1)
    try:
        yield
    finally:
        if before is not None and before != 1:
            blas_threads(before)
