"""Hosted LoRA training: a dataset version goes to a FLUX LoRA trainer on Replicate or fal,
and the trained LoRA comes back into the workspace with its lineage.

1. Check the request against the trainer (refuse inputs it does not take) and the budget.
2. Start (or resume) the job ``hosted-train``: the same request follows the training it
   already started instead of paying for a second one; a finished one is returned as it is.
3. Export the dataset version (images + one ``.txt`` caption each, Likeness's captions, so
   the trainer's autocaption stays off) into a zip and upload it (Replicate files API, fal
   storage).
4. Create the training (Replicate: ``ostris/flux-dev-lora-trainer`` into a ``destination``
   model; fal: ``fal-ai/flux-lora-fast-training``) and record its id in the job at once.
5. Follow it with growing pauses (logs tail and step count as progress); Ctrl-C cancels it.
6. Download the weights (Replicate hands a ``.tar`` holding ``lora.safetensors``), check
   they are safetensors, store them in the blob store and under ``models/loras/`` with a
   ``.lineage.json`` beside: dataset name@version and zip sha256, trainer and its version,
   training id, the hosted model and version it made, cost (estimated) and the request.

Neither trainer hands back intermediate checkpoints as configured by default (the ostris
trainer on Replicate saves only the final step; fal returns one file): ``checkpoints`` lists
any extra ``.safetensors`` found in the weights archive, and is empty otherwise.

Example::

    request = HostedTrainingRequest(dataset="elena@v3", destination="me/elena-flux", rank=64)
    result = train_hosted(ws, request)       # token from $REPLICATE_API_TOKEN
    result.lora_path, result.sha256, result.lineage["hosted_version"]
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import struct
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from likeness.config import HostedSettings
from likeness.engines.base import EngineCannotHonour
from likeness.engines.hosted import fal, replicate
from likeness.engines.hosted.budget import Budget, find_price
from likeness.engines.hosted.engine import connect
from likeness.engines.hosted.errors import HostedError
from likeness.engines.hosted.http import HostedHttp, PollPolicy, RetryPolicy, poll
from likeness.engines.hosted.models import ModelRef, parse_model
from likeness.engines.hosted.secrets import ApiToken, find_token
from likeness.jobs import job_key, start_job
from likeness.store.db import transaction, utc_now

if TYPE_CHECKING:
    from likeness.store.datasets import DatasetVersion
    from likeness.workspace import Workspace

TRAINERS = {"replicate": "ostris/flux-dev-lora-trainer", "fal": "fal-ai/flux-lora-fast-training"}
JOB_KIND = "hosted-train"
MODELS_DIR = Path("models") / "loras"
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)
# Inputs each trainer gets from a request field; trainer_inputs may not set them.
_RESERVED = {
    "replicate": {"input_images", "trigger_word", "steps", "lora_rank", "learning_rate",
                  "batch_size", "resolution", "autocaption"},
    "fal": {"images_data_url", "trigger_word", "steps", "is_style", "create_masks"},
}  # fmt: skip
TrainingProgress = Callable[[int, int, str], None]
"""Called as progress(step, steps, last_log_line)."""


@dataclass(frozen=True)
class HostedTrainingRequest:
    """A hosted LoRA training, in the field names of the local train recipe (``rank``,
    ``learning_rate``, ``steps``, ``trigger``, ``resolution``, ``batch``); None leaves the
    trainer's own default. Plain data (TOML/JSON-serialisable).
    """

    dataset: str
    """A dataset version, ``name@vN`` (``name`` alone: its latest version)."""
    provider: str = "replicate"
    trainer: str = ""
    """Default: ostris/flux-dev-lora-trainer (replicate), fal-ai/flux-lora-fast-training."""
    destination: str = ""
    """Replicate: the ``owner/model`` that receives the trained version (required)."""
    create_destination: bool = False
    """Replicate: create the destination model (private) when it does not exist."""
    trigger: str = ""
    """Default: the dataset version's trigger."""
    steps: int = 1000
    rank: int | None = None
    learning_rate: float | None = None
    resolution: tuple[int, ...] | None = None
    batch: int | None = None
    trainer_inputs: Mapping[str, Any] = field(default_factory=dict)
    """Further trainer inputs sent as they are (e.g. ``{"optimizer": "adamw8bit"}``)."""

    def __post_init__(self) -> None:
        if isinstance(self.resolution, int):
            object.__setattr__(self, "resolution", (self.resolution,))
        elif self.resolution is not None:
            object.__setattr__(self, "resolution", tuple(self.resolution))
        object.__setattr__(self, "trainer_inputs", dict(self.trainer_inputs))

    @property
    def trainer_name(self) -> str:
        return self.trainer or TRAINERS.get(self.provider, "")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["resolution"] = list(self.resolution) if self.resolution else None
        return data


@dataclass(frozen=True)
class Checkpoint:
    step: int | None
    sha256: str
    path: Path


@dataclass(frozen=True)
class HostedTrainingResult:
    """The trained LoRA in the workspace and where it came from."""

    lora_path: Path
    sha256: str
    lineage: dict[str, Any]
    checkpoints: tuple[Checkpoint, ...] = ()
    job_id: int | None = None
    reused: bool = False
    """True when an earlier run of the same request had already finished it."""


def check_request(request: HostedTrainingRequest) -> ModelRef:
    """Raise EngineCannotHonour for the first field the trainer cannot take."""
    provider = request.provider
    if provider not in TRAINERS:
        raise EngineCannotHonour("provider", provider, f"is not one of {', '.join(TRAINERS)}")
    ref = parse_model(provider, request.trainer_name)
    if ref.name != TRAINERS[provider]:
        raise EngineCannotHonour(
            "trainer", request.trainer, f"is not a trainer Likeness maps; use {TRAINERS[provider]}"
        )
    if not request.dataset.strip():
        raise EngineCannotHonour("dataset", request.dataset, "is empty; name a dataset version")
    if not 1 <= request.steps <= 20000:
        raise EngineCannotHonour("steps", request.steps, "must be between 1 and 20000")
    if provider == "replicate":
        if not re.match(r"^[\w.-]+/[\w.-]+$", request.destination):
            raise EngineCannotHonour(
                "destination", request.destination, "must be the owner/model that receives "
                "the trained version on Replicate"
            )  # fmt: skip
    else:
        for name in ("rank", "learning_rate", "resolution", "batch"):
            if getattr(request, name) is not None:
                raise EngineCannotHonour(
                    name, getattr(request, name), f"is not an input of {ref.name}; leave it unset"
                )
        if request.destination:
            raise EngineCannotHonour(
                "destination", request.destination, "is a Replicate field; fal keeps no model"
            )
    clash = sorted(set(request.trainer_inputs) & _RESERVED[provider])
    if clash:
        raise EngineCannotHonour(
            f"trainer_inputs.{clash[0]}", request.trainer_inputs[clash[0]],
            "is set by a request field (steps, rank, trigger...); set that field instead",
        )  # fmt: skip
    return ref


def trainer_inputs(request: HostedTrainingRequest, images_url: str, trigger: str) -> dict[str, Any]:
    """The trainer's input for ``request`` (the dataset zip already uploaded)."""
    inputs: dict[str, Any] = dict(request.trainer_inputs)
    if request.provider == "replicate":
        inputs.update(input_images=images_url, trigger_word=trigger, steps=request.steps,
                      autocaption=False)  # fmt: skip
        optional = {
            "lora_rank": request.rank,
            "learning_rate": request.learning_rate,
            "batch_size": request.batch,
            "resolution": ",".join(str(r) for r in request.resolution)
            if request.resolution
            else None,
        }
        inputs.update({k: v for k, v in optional.items() if v is not None})
    else:
        inputs.update(images_data_url=images_url, trigger_word=trigger, steps=request.steps,
                      is_style=False, create_masks=True)  # fmt: skip
    return inputs


def dataset_zip(ws: Workspace, version: DatasetVersion) -> bytes:
    """The version's images and ``.txt`` captions, flat in a zip with fixed timestamps (the
    same version always makes the same bytes)."""
    from likeness.curate.export import export_version

    with tempfile.TemporaryDirectory(prefix="likeness-train-") as tmp:
        exported = export_version(ws, version, Path(tmp) / "export", "kohya", repeats=1)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(exported.image_folder.iterdir()):
                info = zipfile.ZipInfo(path.name, date_time=_ZIP_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, path.read_bytes())
        return buffer.getvalue()


def check_safetensors(data: bytes, what: str) -> dict[str, Any]:
    """The header of a safetensors file, or HostedError (a pickle is never accepted)."""
    if len(data) < 8:
        raise HostedError(f"{what} is not a safetensors file ({len(data)} bytes)")
    (size,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8 : 8 + size])
    except (ValueError, UnicodeDecodeError):
        header = None
    if size > len(data) - 8 or not isinstance(header, dict):
        raise HostedError(f"{what} is not a safetensors file (no valid header)")
    return header


def weights_files(data: bytes, url: str) -> list[tuple[str, bytes]]:
    """The ``.safetensors`` files in a download: the file itself, or those inside a tar."""
    if tarfile.is_tarfile(io.BytesIO(data)):
        found = []
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            for member in archive.getmembers():
                if member.isfile() and member.name.endswith(".safetensors"):
                    handle = archive.extractfile(member)
                    if handle is not None:
                        found.append((Path(member.name).name, handle.read()))
        if not found:
            raise HostedError(f"the weights archive {url} holds no .safetensors file")
        return found
    return [(Path(httpx.URL(url).path).name or "lora.safetensors", data)]


def _step_of(name: str) -> int | None:
    match = re.search(r"_(\d{3,})\.safetensors$", name)
    return int(match.group(1)) if match else None


class HostedTrainer:
    """Runs :class:`HostedTrainingRequest` s for one workspace on one provider."""

    def __init__(
        self,
        ws: Workspace,
        provider: str = "replicate",
        settings: HostedSettings | None = None,
        *,
        token: ApiToken | None = None,
        http: httpx.Client | None = None,
        max_cost: float | None = None,
        poll_policy: PollPolicy = PollPolicy(interval=5.0, max_interval=30.0, timeout=6 * 3600),
        retry: RetryPolicy = RetryPolicy(),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.ws = ws
        self.provider = provider
        self.settings = settings or ws.settings.hosted
        self.api: HostedHttp = connect(
            provider, self.settings, token or find_token(provider), http=http, policy=retry,
            sleep=sleep,
        )  # fmt: skip
        self.budget = Budget(0, self.settings.max_cost if max_cost is None else max_cost)
        self.poll_policy = poll_policy
        self.sleep = sleep

    def close(self) -> None:
        self.api.close()

    def __enter__(self) -> HostedTrainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the run ---------------------------------------------------------------------------
    def train(
        self, request: HostedTrainingRequest, progress: TrainingProgress | None = None
    ) -> HostedTrainingResult:
        from likeness.store.datasets import resolve

        # 1. Check before any request.
        if request.provider != self.provider:
            raise EngineCannotHonour(
                "provider", request.provider, f"this trainer runs {self.provider}"
            )
        ref = check_request(request)
        version = resolve(self.ws.db, request.dataset)
        trigger = request.trigger or version.trigger
        if not trigger:
            raise EngineCannotHonour("trigger", trigger, "is empty; the dataset has no trigger")
        price = find_price(self.settings.prices, self.provider, ref.name)
        estimate = price.estimate(steps=request.steps) if price and price.unit != "second" else None
        # 2. The job: a finished run is returned, an unfinished one followed.
        key = job_key(JOB_KIND, self.provider, version.ref, request.to_dict())
        done = self._finished(key)
        if done is not None:
            return done
        if self.budget.max_cost and estimate is None:
            raise EngineCannotHonour(
                "trainer", ref.name, f"is billed by time ({price}), so max_cost cannot be kept "
                "before it runs; unset max_cost to train",
            )  # fmt: skip
        job = start_job(self.ws.db, JOB_KIND, key, total=request.steps,
                        params={"provider": self.provider, "dataset": version.ref,
                                "request": request.to_dict()})  # fmt: skip
        try:
            run = self._resume(job.id)
            if run is None:
                self.budget.admit(estimate, f"training {ref.name} on {version.ref}")
                # 3. Dataset zip, uploaded.
                data = dataset_zip(self.ws, version)
                zip_sha = _sha(data)
                url = self._upload(data, f"{version.name}-v{version.version}.zip")
                # 4. Create the training; its id goes into the job at once.
                inputs = trainer_inputs(request, url, trigger)
                run = self._create(ref, request, inputs)
                run["dataset_zip_sha256"] = zip_sha
                self._record(job.id, {"run": run})
            # 5. Follow it.
            final = self._follow(run, request, progress)
            # 6. Weights into the workspace.
            result = self._store(final, run, request, version, ref, price, job.id)
        except BaseException as exc:
            job.fail(f"{type(exc).__name__}: {exc}")
            raise
        job.set_progress(request.steps)
        self._record(job.id, {"result": _result_json(result)})
        job.finish(message=f"{result.lora_path.name} ({result.sha256[:12]})")
        return result

    def _finished(self, key: str) -> HostedTrainingResult | None:
        row = self.ws.db.execute(
            "SELECT id, params FROM jobs WHERE kind = ? AND key = ? AND state = 'done' "
            "ORDER BY id DESC LIMIT 1",
            (JOB_KIND, key),
        ).fetchone()
        if row is None:
            return None
        saved = json.loads(row["params"]).get("result")
        if not saved or not (self.ws.root / saved["lora_path"]).is_file():
            return None
        return HostedTrainingResult(
            lora_path=self.ws.root / saved["lora_path"],
            sha256=saved["sha256"],
            lineage=saved["lineage"],
            checkpoints=tuple(
                Checkpoint(c["step"], c["sha256"], self.ws.root / c["path"])
                for c in saved["checkpoints"]
            ),
            job_id=row["id"],
            reused=True,
        )

    def _resume(self, job_id: int) -> dict[str, Any] | None:
        """The training an earlier attempt started, unless it failed or was cancelled."""
        params = self._params(job_id)
        run = params.get("run")
        if not run:
            return None
        state = self._fetch(run)
        if _state(self.provider, state) in ("failed", "canceled"):
            return None
        return run

    def _upload(self, data: bytes, name: str) -> str:
        if self.provider == "replicate":
            return replicate.upload_file(self.api, data, name, "application/zip")
        return fal.upload(self.api, self.settings.fal_rest_url, data, name, "application/zip")

    def _create(
        self, ref: ModelRef, request: HostedTrainingRequest, inputs: dict[str, Any]
    ) -> dict[str, Any]:
        if self.provider == "fal":
            handle = fal.submit(self.api, ref.name, inputs)
            return {"id": handle["request_id"], "handle": handle, "trainer": ref.name}
        version = ref.version or replicate.latest_version(self.api, ref.name)
        if replicate.get_model(self.api, request.destination) is None:
            if not request.create_destination:
                raise HostedError(
                    f"replicate: the destination model {request.destination} does not exist; "
                    "create it on replicate.com or set create_destination"
                )
            replicate.create_model(self.api, request.destination)
        trainer = ModelRef(ref.name, version)
        body = replicate.submit_training(
            self.api, trainer, request.destination, inputs, sleep=self.sleep
        )
        return {"id": body["id"], "trainer": ref.name, "trainer_version": version}

    def _fetch(self, run: Mapping[str, Any]) -> dict[str, Any]:
        if self.provider == "replicate":
            return replicate.get_training(self.api, run["id"])
        return fal.status(self.api, run["handle"])

    def _follow(
        self,
        run: dict[str, Any],
        request: HostedTrainingRequest,
        progress: TrainingProgress | None,
    ) -> dict[str, Any]:
        def report(state: dict[str, Any]) -> None:
            if progress is None:
                return
            logs = state.get("logs") if self.provider == "replicate" else fal.log_messages(state)
            step = replicate.progress_of(logs)
            done, total = step if step else (0, request.steps)
            if _state(self.provider, state) == "succeeded":
                done = total
            progress(done, total, replicate.last_log_line(logs))

        try:
            final = poll(
                lambda: self._fetch(run),
                lambda s: _state(self.provider, s) in ("succeeded", "failed", "canceled"),
                policy=self.poll_policy,
                sleep=self.sleep,
                on_update=report,
            )
        except (KeyboardInterrupt, TimeoutError) as exc:
            self._cancel(run)
            if isinstance(exc, TimeoutError):
                raise HostedError(
                    f"{self.provider} training {run['id']} was not done after "
                    f"{self.poll_policy.timeout:g} s and was cancelled"
                ) from None
            raise
        what = f"{run['trainer']} on {request.dataset}"
        if self.provider == "replicate":
            if final.get("status") != "succeeded":
                raise HostedError(replicate.failure_line("training", final, what))
            return final
        if final.get("error"):
            raise HostedError(fal.failure_line(run["handle"], final, what))
        output = fal.result(self.api, run["handle"], what)
        return {**final, "output": output}

    def _cancel(self, run: Mapping[str, Any]) -> None:
        try:
            if self.provider == "replicate":
                replicate.cancel_training(self.api, run["id"])
            else:
                fal.cancel(self.api, run["handle"])
        except (HostedError, httpx.HTTPError):
            pass

    def _store(
        self,
        final: dict[str, Any],
        run: dict[str, Any],
        request: HostedTrainingRequest,
        version: DatasetVersion,
        ref: ModelRef,
        price: Any,
        job_id: int,
    ) -> HostedTrainingResult:
        output = final.get("output") or {}
        if self.provider == "replicate":
            url = output.get("weights")
            hosted_model, _, hosted_version = str(output.get("version") or "").partition(":")
            seconds = (final.get("metrics") or {}).get("predict_time")
        else:
            url = (output.get("diffusers_lora_file") or {}).get("url")
            hosted_model, hosted_version = "", ""
            seconds = (final.get("metrics") or {}).get("inference_time")
        if not isinstance(url, str) or not url:
            raise HostedError(f"{self.provider} training {run['id']} finished without weights")
        files = weights_files(self.api.download(url), url)
        folder = self.ws.root / MODELS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{version.name}-v{version.version}-{self.provider}-{str(run['id'])[:8]}"
        stored: list[Checkpoint] = []
        final_file: Checkpoint | None = None
        for name, data in files:
            check_safetensors(data, f"{name} from {url}")
            sha = self.ws.blobs.put_bytes(data)
            step = _step_of(name)
            path = folder / (
                f"{stem}.safetensors" if step is None else f"{stem}-{step:06d}.safetensors"
            )
            path.write_bytes(data)
            entry = Checkpoint(step, sha, path)
            if step is None and final_file is None:
                final_file = entry
            else:
                stored.append(entry)
        if final_file is None:  # only stepped files: the last step is the result
            stored.sort(key=lambda c: c.step or 0)
            final_file = stored.pop()
        cost = None
        if price is not None:
            cost = price.estimate(seconds=float(seconds or 0.0), steps=request.steps)
        lineage = {
            "dataset": version.ref,
            "dataset_zip_sha256": run.get("dataset_zip_sha256"),
            "trigger": request.trigger or version.trigger,
            "provider": self.provider,
            "trainer": run["trainer"],
            "trainer_version": run.get("trainer_version"),
            "training_id": run["id"],
            "hosted_model": hosted_model or None,
            "hosted_version": hosted_version or None,
            "weights_url": url,
            "sha256": final_file.sha256,
            "predict_time": seconds,
            "cost_usd": cost,
            "cost_source": "estimated" if cost is not None else None,
            "request": request.to_dict(),
            "checkpoints": [
                {"step": c.step, "sha256": c.sha256, "path": c.path.name} for c in stored
            ],
            "created_at": utc_now(),
            "job_id": job_id,
        }
        sidecar = final_file.path.with_suffix(".lineage.json")
        sidecar.write_text(json.dumps(lineage, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return HostedTrainingResult(final_file.path, final_file.sha256, lineage, tuple(stored),
                                    job_id)  # fmt: skip

    # ---- job params --------------------------------------------------------------------------
    def _params(self, job_id: int) -> dict[str, Any]:
        row = self.ws.db.execute("SELECT params FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return json.loads(row[0]) if row else {}

    def _record(self, job_id: int, values: Mapping[str, Any]) -> None:
        params = {**self._params(job_id), **values}
        with transaction(self.ws.db):
            self.ws.db.execute(
                "UPDATE jobs SET params = ? WHERE id = ?",
                (json.dumps(params, sort_keys=True, default=str), job_id),
            )


def _state(provider: str, state: Mapping[str, Any]) -> str:
    if provider == "replicate":
        return str(state.get("status"))
    if state.get("status") != "COMPLETED":
        return "running"
    return "failed" if state.get("error") else "succeeded"


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _result_json(result: HostedTrainingResult) -> dict[str, Any]:
    root = result.lora_path.parents[2]
    return {
        "lora_path": str(result.lora_path.relative_to(root)),
        "sha256": result.sha256,
        "lineage": result.lineage,
        "checkpoints": [
            {"step": c.step, "sha256": c.sha256, "path": str(c.path.relative_to(root))}
            for c in result.checkpoints
        ],
    }


def train_hosted(
    ws: Workspace,
    request: HostedTrainingRequest,
    *,
    progress: TrainingProgress | None = None,
    **options: Any,
) -> HostedTrainingResult:
    """Run ``request`` once (see the module docstring); options go to HostedTrainer."""
    with HostedTrainer(ws, request.provider, **options) as trainer:
        return trainer.train(request, progress)
