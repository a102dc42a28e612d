"""The hosted engine: a recipe runs on Replicate or fal, images come back with provenance.

``generate`` follows numbered steps: check the recipe against the model, resolve the LoRAs
(upload local files where the provider allows), then per image: count it against the budget,
submit one prediction with that image's seed, poll its status with growing pauses, cancel it
on Ctrl-C (or a timeout) so it is not left running and billed, download the output, and write
the provenance into the PNG (A1111 ``parameters`` + the ``likeness`` JSON chunk) like every
engine. Provenance carries ``hosted``: provider, model, version, prediction id, predict time,
the input sent and the estimated cost (marked estimated; see :mod:`.budget`).

Example::

    engine = HostedEngine("replicate", HostedSettings())  # token from $REPLICATE_API_TOKEN
    engine.check(recipe)
    images = engine.generate(recipe, 4)
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from likeness.config import HostedSettings
from likeness.engines.base import (
    EngineCannotHonour,
    GeneratedImage,
    ProgressCallback,
    ProgressUpdate,
    build_provenance,
    image_seeds,
    resolve_seed,
    sha256_file,
)
from likeness.engines.comfyui.pngtext import PNG_SIGNATURE, add_text_chunks
from likeness.engines.hosted import fal, replicate
from likeness.engines.hosted.budget import Budget, Price, find_price
from likeness.engines.hosted.errors import HostedError
from likeness.engines.hosted.http import HostedHttp, PollPolicy, RetryPolicy, poll
from likeness.engines.hosted.models import (
    HostedModel,
    ModelRef,
    build_inputs,
    check_recipe,
    is_remote,
    model_for,
)
from likeness.engines.hosted.secrets import ApiToken, find_token
from likeness.pnginfo import PARAMETERS_KEY, PROVENANCE_KEY, a1111_parameters, encode_png
from likeness.recipes import Recipe

if TYPE_CHECKING:
    from PIL import Image

PROVIDERS = ("replicate", "fal")


@dataclass
class Run:
    """One prediction (Replicate) or queued request (fal) as last seen."""

    id: str
    state: str
    """queued, running, succeeded, failed or canceled."""
    raw: dict[str, Any]
    handle: dict[str, Any] = field(default_factory=dict)
    output: dict[str, Any] | None = None
    submitted_at: float = 0.0


def connect(provider: str, settings: HostedSettings, token: ApiToken, **kwargs: Any) -> HostedHttp:
    """The HTTP client of ``provider`` with its auth scheme and API origins."""
    if provider == "replicate":
        return HostedHttp("replicate", settings.replicate_url, token, scheme="Bearer", **kwargs)
    if provider == "fal":
        return HostedHttp(
            "fal",
            settings.fal_queue_url,
            token,
            scheme="Key",
            also_authorise=(settings.fal_rest_url,),
            **kwargs,
        )
    raise ValueError(f"engine: {provider!r} is not one of {', '.join(PROVIDERS)}")


class HostedEngine:
    """Runs recipes on Replicate (``provider="replicate"``) or fal (``"fal"``).

    Args:
        provider (`str`): "replicate" or "fal".
        settings (`HostedSettings`): API URLs, polling, prices and budget limits.
        token (`ApiToken`, *optional*): defaults to the environment or the OS keyring.
        http (`httpx.Client`, *optional*): passed in by tests or shared pools.
        max_images / max_cost: the budget of this engine (default: the settings').
    """

    def __init__(
        self,
        provider: str,
        settings: HostedSettings | None = None,
        *,
        token: ApiToken | None = None,
        http: httpx.Client | None = None,
        max_images: int | None = None,
        max_cost: float | None = None,
        retry: RetryPolicy = RetryPolicy(),
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if provider not in PROVIDERS:
            raise ValueError(f"engine: {provider!r} is not one of {', '.join(PROVIDERS)}")
        self.name = provider
        self.settings = settings or HostedSettings()
        self.api = connect(
            provider,
            self.settings,
            token or find_token(provider),
            http=http,
            policy=retry,
            sleep=sleep,
        )
        self.budget = Budget(
            self.settings.max_images if max_images is None else max_images,
            self.settings.max_cost if max_cost is None else max_cost,
        )
        self.poll_policy = PollPolicy(
            self.settings.poll_interval, self.settings.poll_max_interval, self.settings.timeout
        )
        self.sleep = sleep
        self.clock = clock
        self._uploads: dict[str, str] = {}

    # ---- checks --------------------------------------------------------------------------
    def price(self, recipe: Recipe) -> Price | None:
        spec, _ = model_for(self.name, recipe)
        return find_price(self.settings.prices, self.name, spec.name)

    def check(self, recipe: Recipe) -> None:
        """Raise EngineCannotHonour for a field the model cannot run, before any request."""
        check_recipe(self.name, recipe)
        if self.budget.max_cost and self.price(recipe) is None:
            raise EngineCannotHonour(
                "model",
                recipe.model,
                "has no price in [hosted] prices, so max_cost cannot be kept; add one",
            )

    # ---- generation ----------------------------------------------------------------------
    def generate(
        self, recipe: Recipe, n: int, progress: ProgressCallback | None = None
    ) -> list[GeneratedImage]:
        """``n`` images with seeds ``seed, seed + 1, ...``, one prediction each."""
        if n < 1:
            raise ValueError(f"n: {n} must be at least 1")
        # 1. Check everything before any request.
        recipe = resolve_seed(recipe)
        self.check(recipe)
        spec, ref = model_for(self.name, recipe)
        price = find_price(self.settings.prices, self.name, spec.name)
        # 2. LoRAs: remote paths as they are; local files uploaded once (fal).
        lora_urls, lora_shas = self._resolve_loras(recipe)
        # 3. One prediction per image.
        return [
            self._one(spec, ref, recipe, seed, index, n, lora_urls, lora_shas, price, progress)
            for index, seed in enumerate(image_seeds(recipe, n))
        ]

    def _resolve_loras(self, recipe: Recipe) -> tuple[list[str], list[str | None]]:
        urls: list[str] = []
        shas: list[str | None] = []
        for lora in recipe.loras:
            if is_remote(lora.path):
                urls.append(lora.path.strip())
                shas.append(None)
                continue
            sha = sha256_file(lora.path)
            if sha not in self._uploads:
                data = Path(lora.path).expanduser().read_bytes()
                self._uploads[sha] = fal.upload(
                    self.api,
                    self.settings.fal_rest_url,
                    data,
                    f"{sha[:16]}.safetensors",
                    "application/octet-stream",
                )
            urls.append(self._uploads[sha])
            shas.append(sha)
        return urls, shas

    def _one(
        self,
        spec: HostedModel,
        ref: ModelRef,
        recipe: Recipe,
        seed: int,
        index: int,
        total: int,
        lora_urls: list[str],
        lora_shas: list[str | None],
        price: Price | None,
        progress: ProgressCallback | None,
    ) -> GeneratedImage:
        what = f"{ref}, seed {seed}"
        inputs = build_inputs(spec, recipe, seed, lora_urls)
        megapixels = recipe.width * recipe.height / 1e6
        reserved = price.estimate(images=1, megapixels=megapixels) if price else None
        # 1. Count it before it is sent.
        self.budget.admit(reserved, f"image {index + 1} of {total} ({what})")
        started = self.clock()
        run = self._submit(spec, ref, inputs)
        # 2. Follow it; a Ctrl-C or a timeout cancels it on the server.
        try:
            run = poll(
                lambda: self._refresh(run, what),
                lambda r: r.state in ("succeeded", "failed", "canceled"),
                policy=self.poll_policy,
                sleep=self.sleep,
                clock=self.clock,
                on_update=self._progress(recipe, index, total, progress),
                first=run,
            )
        except KeyboardInterrupt:
            self._cancel_quietly(run)
            raise
        except TimeoutError:
            self._cancel_quietly(run)
            self.budget.settle(reserved, reserved)
            raise HostedError(
                f"{self.name}: {run.id} ({what}) was not done after "
                f"{self.poll_policy.timeout:g} s and was cancelled"
            ) from None
        except BaseException:
            self._cancel_quietly(run)
            raise
        if run.state != "succeeded":
            self.budget.settle(reserved, self._cost(price, run, megapixels, failed=True))
            raise HostedError(self._failure(run, what))
        # 3. Download and label the output.
        waited = self.clock() - started
        fetched = self.clock()
        url = self._output_url(run, what)
        data = self.api.download(url)
        download_s = self.clock() - fetched
        width, height = _image_size(data, f"{self.name} output {url}")
        cost = self._cost(price, run, width * height / 1e6, failed=False)
        self.budget.settle(reserved, cost)
        provenance = build_provenance(
            recipe=recipe,
            seed=seed,
            engine={
                "name": self.name,
                "version": self._version(run, ref),
                "api": self.api.base_url,
                "model": spec.name,
            },
            model_sha256=None,
            lora_sha256s=lora_shas,
            timings=self._timings(run, waited, download_s),
            width=width,
            height=height,
            extra={"hosted": self._facts(run, ref, inputs, url, cost, price)},
        )
        return GeneratedImage(png=_labelled_png(data, provenance), seed=seed, provenance=provenance)

    # ---- provider steps ------------------------------------------------------------------
    def _submit(self, spec: HostedModel, ref: ModelRef, inputs: dict[str, Any]) -> Run:
        now = self.clock()
        if self.name == "replicate":
            body = replicate.submit_prediction(
                self.api, ref, inputs, wait=self.settings.wait, sleep=self.sleep
            )
            return Run(str(body["id"]), _replicate_state(body), body, submitted_at=now)
        body = fal.submit(self.api, spec.name, inputs)
        state = "queued"
        return Run(str(body["request_id"]), state, body, handle=body, submitted_at=now)

    def _refresh(self, run: Run, what: str) -> Run:
        if self.name == "replicate":
            body = replicate.get_prediction(self.api, run.id)
            return Run(run.id, _replicate_state(body), body, submitted_at=run.submitted_at)
        body = fal.status(self.api, run.handle)
        state = {"IN_QUEUE": "queued", "IN_PROGRESS": "running"}.get(body["status"], "")
        output = None
        if body["status"] == "COMPLETED":
            if body.get("error"):
                state = "failed"
            else:
                output = fal.result(self.api, run.handle, what)
                state = "succeeded"
        return Run(run.id, state, body, run.handle, output, run.submitted_at)

    def _cancel_quietly(self, run: Run) -> None:
        """Ask the server to stop ``run``; a failure to ask is not worth hiding the cause."""
        try:
            if self.name == "replicate":
                replicate.cancel_prediction(self.api, run.id)
            else:
                fal.cancel(self.api, run.handle)
        except (HostedError, httpx.HTTPError):
            pass

    def _failure(self, run: Run, what: str) -> str:
        if self.name == "replicate":
            return replicate.failure_line("prediction", run.raw, what)
        return fal.failure_line(run.handle, run.raw, what)

    def _output_url(self, run: Run, what: str) -> str:
        if self.name == "replicate":
            output = run.raw.get("output")
            urls = output if isinstance(output, list) else [output]
        else:
            output = run.output or {}
            flagged = output.get("has_nsfw_concepts") or []
            if any(flagged):
                raise HostedError(
                    f"fal request {run.id} ({what}): the safety checker blanked the image; "
                    "set engine_inputs.fal.enable_safety_checker = false to keep it"
                )
            urls = [i.get("url") for i in output.get("images") or [] if isinstance(i, dict)]
        urls = [u for u in urls if isinstance(u, str) and u]
        if len(urls) != 1:
            raise HostedError(f"{self.name}: {run.id} ({what}) gave {len(urls)} outputs, not 1")
        return urls[0]

    def _version(self, run: Run, ref: ModelRef) -> str:
        if self.name == "replicate":
            return str(run.raw.get("version") or ref.version or "unknown")
        return "queue"

    def _predict_time(self, run: Run) -> float | None:
        if self.name == "replicate":
            value = (run.raw.get("metrics") or {}).get("predict_time")
        else:
            value = (run.raw.get("metrics") or {}).get("inference_time")
        return float(value) if isinstance(value, int | float) else None

    def _cost(
        self, price: Price | None, run: Run, megapixels: float, *, failed: bool
    ) -> float | None:
        if price is None:
            return None
        seconds = self._predict_time(run) or 0.0
        if failed and price.unit != "second":
            return 0.0  # per-image prices are not charged for outputs never made
        return price.estimate(images=1, megapixels=megapixels, seconds=seconds)

    def _timings(self, run: Run, waited: float, download_s: float) -> dict[str, float]:
        timings = {"wait_s": waited, "download_s": download_s, "total_s": waited + download_s}
        predict = self._predict_time(run)
        if predict is not None:
            timings["predict_s"] = predict
        return timings

    def _facts(
        self,
        run: Run,
        ref: ModelRef,
        inputs: Mapping[str, Any],
        url: str,
        cost: float | None,
        price: Price | None,
    ) -> dict[str, Any]:
        facts: dict[str, Any] = {
            "provider": self.name,
            "model": ref.name,
            "version": self._version(run, ref),
            "id_field": "prediction_id" if self.name == "replicate" else "request_id",
            "predict_time": self._predict_time(run),
            "input": dict(inputs),
            "output_url": url,
            "cost_usd": cost,
            "cost_source": "estimated" if cost is not None else None,
            "price": str(price) if price else None,
        }
        facts["prediction_id" if self.name == "replicate" else "request_id"] = run.id
        return facts

    def _progress(
        self, recipe: Recipe, index: int, total: int, progress: ProgressCallback | None
    ) -> Callable[[Run], None] | None:
        if progress is None:
            return None

        def on_update(run: Run) -> None:
            if run.state == "queued":
                progress(ProgressUpdate(index, total, 0, recipe.steps, "queued"))
                return
            logs = run.raw.get("logs") if self.name == "replicate" else fal.log_messages(run.raw)
            step = replicate.progress_of(logs)
            done, of = step if step else (0, recipe.steps)
            if run.state == "succeeded":
                done = of
            progress(ProgressUpdate(index, total, done, of, "sample"))

        return on_update

    # ---- the rest of the protocol ----------------------------------------------------------
    def edit(self, image: Image.Image, instruction: str) -> GeneratedImage:
        raise NotImplementedError(
            f"edit: the {self.name} engine has no instruction-edit model; use the diffusers engine"
        )

    def release(self) -> None:
        """Nothing is held between calls (the models run on the provider's machines)."""

    def close(self) -> None:
        self.api.close()


def _replicate_state(body: Mapping[str, Any]) -> str:
    status = body.get("status")
    return {"starting": "queued", "processing": "running"}.get(str(status), str(status))


def _image_size(data: bytes, what: str) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except (UnidentifiedImageError, OSError):
        raise HostedError(f"{what} is not an image ({len(data)} bytes)") from None


def _labelled_png(data: bytes, provenance: dict[str, Any]) -> bytes:
    """The output as PNG with the provenance chunks: PNG bytes gain text chunks untouched;
    another format (webp, jpg) is decoded and written as PNG."""
    texts = {
        PARAMETERS_KEY: a1111_parameters(provenance),
        PROVENANCE_KEY: json.dumps(provenance, sort_keys=True),
    }
    if data.startswith(PNG_SIGNATURE):
        return add_text_chunks(data, texts)
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        rgb = img.convert("RGB")
    return encode_png(rgb, provenance)
