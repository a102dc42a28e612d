"""The resume state of a run: everything a killed run needs to go on as if never stopped.

One safetensors file (no pickle) holds the trainable LoRA weights, the optimizer's tensors and
the RNG states; its metadata holds the rest as JSON: step, data position (epoch, index and the
epoch's permutation seed), optimizer hyper-parameters, LR-scheduler and grad-scaler state, the
losses not yet in the database. It is written to a temporary file, flushed and renamed over
the previous one, so a kill at any moment leaves the last complete state. Example::

    save_state(run_dir / "state" / "resume.safetensors", state)
    state = load_state(run_dir / "state" / "resume.safetensors")
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

STATE_FORMAT = "likeness-train-state-1"
_META_KEY = "likeness_state"


@dataclass
class ResumeState:
    """What :func:`save_state` writes; tensors stay on the CPU."""

    step: int
    recipe_hash: str
    epoch: int
    epoch_index: int
    epoch_seed: list[int]
    weights: dict[str, Any]
    """Trainable parameter name -> tensor."""
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any] | None
    rng: dict[str, Any]
    pending_losses: list[list[float]] = field(default_factory=list)
    """(step, loss, lr) since the last checkpoint the database has recorded."""
    checkpoint: dict[str, Any] | None = None
    """The LoRA file of this step: {"path", "sha256", "loss"}, recorded on resume if the
    kill came before the database heard of it."""


def capture_rng() -> dict[str, Any]:
    """The torch (CPU and CUDA), numpy and python RNG states."""
    import torch

    np_state = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": _jsonable(random.getstate()),
    }
    if torch.cuda.is_available():
        states["cuda"] = list(torch.cuda.get_rng_state_all())
    return states


def restore_rng(states: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(states["torch"])
    numpy_state = states["numpy"]
    np.random.set_state(
        (
            numpy_state["name"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    random.setstate(_tupled(states["python"]))
    if states.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_state(path: Path, state: ResumeState) -> None:
    """Write ``state`` atomically (temporary file, fsync, rename)."""
    tensors: dict[str, Any] = {}
    meta: dict[str, Any] = {
        "format": STATE_FORMAT,
        "step": state.step,
        "recipe_hash": state.recipe_hash,
        "epoch": state.epoch,
        "epoch_index": state.epoch_index,
        "epoch_seed": state.epoch_seed,
        "weights": sorted(state.weights),
        "scheduler": state.scheduler,
        "scaler": state.scaler,
        "pending_losses": state.pending_losses,
        "checkpoint": state.checkpoint,
    }
    for name, value in state.weights.items():
        tensors[f"weights/{name}"] = value
    meta["optimizer"] = _split(state.optimizer, "optimizer", tensors)
    meta["rng"] = _split(state.rng, "rng", tensors)
    save_safetensors_atomic(path, tensors, {_META_KEY: json.dumps(meta)})


def load_state(path: Path) -> ResumeState | None:
    """The state in ``path``, or None when there is none yet."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads((handle.metadata() or {})[_META_KEY])
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    if meta.get("format") != STATE_FORMAT:
        raise ValueError(f"{path}: not a resume state of this Likeness ({meta.get('format')})")
    return ResumeState(
        step=meta["step"],
        recipe_hash=meta["recipe_hash"],
        epoch=meta["epoch"],
        epoch_index=meta["epoch_index"],
        epoch_seed=meta["epoch_seed"],
        weights={name: tensors[f"weights/{name}"] for name in meta["weights"]},
        optimizer=_join(meta["optimizer"], tensors),
        scheduler=meta["scheduler"],
        scaler=meta["scaler"],
        rng=_join(meta["rng"], tensors),
        pending_losses=meta["pending_losses"],
        checkpoint=meta["checkpoint"],
    )


def save_safetensors_atomic(
    path: Path, tensors: dict[str, Any], metadata: dict[str, str] | None = None
) -> None:
    """``safetensors.torch.save_file`` to a temporary file beside ``path``, flushed to disk,
    then renamed over ``path``: readers see the old file or the new one, never a torn one."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- nested data with tensors <-> JSON + flat tensor dict ---------------------------------
def _split(value: Any, prefix: str, tensors: dict[str, Any]) -> Any:
    """Replace every tensor in a nested structure by {"__tensor__": key}, storing it."""
    import torch

    if isinstance(value, torch.Tensor):
        key = f"{prefix}"
        tensors[key] = value.detach().cpu()
        return {"__tensor__": key}
    if isinstance(value, dict):
        return {
            "__dict__": [[_key(k), _split(v, f"{prefix}/{k}", tensors)] for k, v in value.items()]
        }
    if isinstance(value, list | tuple):
        return [_split(v, f"{prefix}/{i}", tensors) for i, v in enumerate(value)]
    return value


def _join(value: Any, tensors: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        if "__tensor__" in value:
            return tensors[value["__tensor__"]]
        if "__dict__" in value:
            return {_unkey(k): _join(v, tensors) for k, v in value["__dict__"]}
        return {k: _join(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_join(v, tensors) for v in value]
    return value


def _key(key: Any) -> Any:
    """Dict keys keep their type (optimizer state is keyed by int)."""
    return {"int": key} if isinstance(key, int) else key


def _unkey(key: Any) -> Any:
    return key["int"] if isinstance(key, dict) else key


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value


def _tupled(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tupled(v) for v in value)
    return value
