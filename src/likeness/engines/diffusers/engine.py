"""The diffusers engine: runs a recipe on a local model (SDXL, SD1.5, FLUX).

Example::

    engine = DiffusersEngine()
    engine.check(recipe)                 # raises EngineCannotHonour before any work
    images = engine.generate(recipe, n=4)
    engine.release()                     # drop models, free (V)RAM

The loaded pipeline (and its img2img/inpaint views, LoRAs and upscaler) stays cached between
calls until another model is asked for or :meth:`release` is called. A pipeline loaded by the
caller (the trainer's, with its LoRA layers in place) can be used instead of a second copy:
:meth:`DiffusersEngine.use_pipeline`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from likeness.engines.base import (
    EngineCannotHonour,
    EngineError,
    GeneratedImage,
    ProgressCallback,
    ProgressUpdate,
    build_provenance,
    image_seeds,
    resolve_seed,
    sha256_file,
)
from likeness.engines.diffusers import adapters, identity, passes
from likeness.engines.diffusers.device import (
    check_names,
    choose_device,
    choose_dtype,
    release_device_memory,
)
from likeness.engines.diffusers.edit import (
    EditSettings,
    check_edit_model,
    edit_lora_info,
    edit_model_info,
    pipeline_overrides,
    run_edit,
)
from likeness.engines.diffusers.loading import (
    PICKLE_SUFFIXES,
    load_pipeline,
    quiet_loading,
    resolve_model,
)
from likeness.engines.diffusers.loras import LoraSet, check_lora
from likeness.pnginfo import encode_png
from likeness.recipes import Recipe, RecipeError, build_prompt, diffusers_scheduler

if TYPE_CHECKING:
    from PIL import Image


class DiffusersEngine:
    """Runs recipes with diffusers on this machine.

    Args:
        allow_pickle (`bool`, defaults to False): accept ``.ckpt/.pt/.bin`` model and LoRA files.
        device (`str`, *optional*): "cuda", "mps" or "cpu"; the best available by default.
        dtype (`str`, *optional*): "bf16", "fp16" or "fp32"; by device by default.
        config (`str`, *optional*): config folder for single-file checkpoints whose
            architecture differs from the shipped real configs.
        find_face (*optional*): face finder for the detailer (image -> box or None).
        edit_model (`str`, *optional*): diffusers folder of an instruction-edit model
            (Qwen-Image-Edit, FLUX Kontext, InstructPix2Pix) used by :meth:`edit`.
        edit (`EditSettings`, *optional*): steps and seed of edits.
    """

    name = "diffusers"

    def __init__(
        self,
        *,
        allow_pickle: bool = False,
        device: str | None = None,
        dtype: str | None = None,
        config: str | Path | None = None,
        find_face: passes.FaceFinder | None = None,
        edit_model: str | None = None,
        edit: EditSettings | None = None,
    ) -> None:
        check_names(device, dtype)
        self.allow_pickle = allow_pickle
        self._device_pref = device
        self._dtype_pref = dtype
        self._config = config
        self._find_face = find_face or passes.find_subject_face
        self._key: tuple[Any, ...] | None = None
        self._pipe: Any = None
        self._views: dict[str, Any] = {}
        self._loras = LoraSet()
        self._base_scheduler: dict[str, Any] = {}
        self._upscalers: dict[str, Any] = {}
        self._edit_model = edit_model
        self._edit_settings = edit or EditSettings()
        self._edit_pipe: Any = None
        self._adapter = identity.AdapterSlot()
        self._controlnets: dict[str, Any] = {}
        self._insightface: dict[str, Any] = {}
        self._references: dict[tuple[Any, ...], identity.ReferenceEmbedding] = {}
        self._adopted = False

    def use_pipeline(
        self, pipe: Any, model: str, family: str, *, loras: Mapping[str, str] | None = None
    ) -> None:
        """Run recipes of ``model`` on ``pipe``, a pipeline the caller loaded, instead of
        loading a second copy (the trainer judging a checkpoint with its own pipeline).

        ``loras`` maps the sha256 of a LoRA file to the adapter already in ``pipe`` that
        holds the same weights: a recipe naming that file activates the adapter instead of
        loading the file. The caller keeps the pipeline: :meth:`release` forgets it, and the
        engine switches off no adapter it did not load.
        """
        source = resolve_model(model, family, allow_pickle=self.allow_pickle)
        if self._pipe is not pipe:
            self.release()
            self._pipe = pipe
            self._base_scheduler = dict(pipe.scheduler.config)
            denoiser = getattr(pipe, "unet", None) or pipe.transformer
            self._key = (source, str(pipe.device), str(denoiser.dtype), str(self._config))
            self._adopted = True
        for sha, adapter in (loras or {}).items():
            self._loras.adopt(sha, adapter)

    def drop_loras(self) -> None:
        """Unload the LoRA files loaded so far, keeping the base model (and any adapters of a
        pipeline lent by :meth:`use_pipeline` or :meth:`use_edit_pipeline`)."""
        self._loras.drop(self._edit_pipe if self._edit_pipe is not None else self._pipe)

    def set_edit(self, model: str, settings: EditSettings) -> None:
        """Edit with ``model`` (a diffusers folder) and ``settings`` from the next
        :meth:`edit` on: a checkpoint judge switches the LoRA and its strength per probe. The
        loaded edit pipeline is kept when the model stays the same."""
        if self._edit_model != model and not self._adopted:
            self._edit_pipe = None  # its LoRAs go with it
            self._loras.clear()
        self._edit_model = model
        self._edit_settings = settings

    def use_edit_pipeline(
        self, pipe: Any, model: str, *, loras: Mapping[str, str] | None = None
    ) -> None:
        """Edit with ``pipe``, an edit pipeline the caller loaded (the trainer's, its LoRA
        layers holding a checkpoint), as the edit model ``model``; ``loras`` maps a LoRA
        file's sha256 to the adapter in ``pipe`` with the same weights (see
        :meth:`use_pipeline`)."""
        check_edit_model(model, allow_pickle=self.allow_pickle)
        if self._edit_pipe is not pipe:
            self.release()
            self._edit_pipe = pipe
            self._edit_model = model
            denoiser = getattr(pipe, "unet", None) or pipe.transformer
            self._key = (None, str(pipe.device), str(denoiser.dtype), None)
            self._adopted = True
        for sha, adapter in (loras or {}).items():
            self._loras.adopt(sha, adapter)

    # -- protocol -----------------------------------------------------------------------
    def check(self, recipe: Recipe) -> None:
        """Raise :class:`EngineCannotHonour` for the first field this engine cannot run."""
        if recipe.engine != "diffusers":
            raise EngineCannotHonour("engine", recipe.engine, "is not 'diffusers'")
        resolve_model(recipe.model, recipe.family, allow_pickle=self.allow_pickle)
        try:
            class_name, _ = diffusers_scheduler(recipe.sampler, recipe.scheduler, recipe.family)
        except RecipeError as exc:
            raise EngineCannotHonour(exc.field, exc.value, exc.message) from None
        if class_name == "DPMSolverSDEScheduler" and importlib.util.find_spec("torchsde") is None:
            raise EngineCannotHonour(
                "sampler", recipe.sampler, "needs the torchsde package; pip install torchsde"
            )
        if recipe.family == "flux" and recipe.negative.strip():
            raise EngineCannotHonour(
                "negative",
                recipe.negative,
                "is not used by FLUX (distilled guidance); leave it empty",
            )
        for index, spec in enumerate(recipe.loras):
            check_lora(index, spec, allow_pickle=self.allow_pickle)
        if recipe.upscale.enabled and recipe.upscale.model:
            path = Path(recipe.upscale.model).expanduser()
            if not path.is_file():
                raise EngineCannotHonour(
                    "upscale.model", recipe.upscale.model, "does not exist; pass an upscaler file"
                )
            if path.suffix.lower() in PICKLE_SUFFIXES and not self.allow_pickle:
                raise EngineCannotHonour(
                    "upscale.model",
                    recipe.upscale.model,
                    "is a pickle file (it can run code when loaded); use a .safetensors "
                    "upscaler or pass --allow-pickle",
                )
        if recipe.identity.enabled:
            self._check_identity(recipe)

    def _check_identity(self, recipe: Recipe) -> None:
        method = recipe.identity.method
        families = ("sdxl",) if method == adapters.INSTANTID else ("sdxl", "sd15")
        if recipe.family not in families:
            raise EngineCannotHonour(
                "identity.method",
                method,
                f"runs on {' and '.join(families)} models here, not {recipe.family}",
            )
        problems = adapters.identity_problems(recipe.identity, allow_pickle=self.allow_pickle)
        if problems:
            raise problems[0]

    def generate(
        self, recipe: Recipe, n: int, progress: ProgressCallback | None = None
    ) -> list[GeneratedImage]:
        """Make ``n`` images, ``recipe.batch`` per pipeline call; image i has seed ``seed + i``."""
        if n < 1:
            raise ValueError(f"n: {n} must be at least 1")
        self.check(recipe)
        recipe = resolve_seed(recipe)
        seeds = image_seeds(recipe, n)
        out: list[GeneratedImage] = []
        for start in range(0, n, recipe.batch):
            chunk = seeds[start : start + recipe.batch]
            out += self._generate_chunk(recipe, chunk, start, n, progress)
        return out

    def edit(self, image: Image.Image, instruction: str) -> GeneratedImage:
        """Apply ``instruction`` to ``image`` with the engine's edit model."""
        if not self._edit_model:
            raise NotImplementedError(
                "edit: no edit model set; build DiffusersEngine(edit_model=<diffusers folder of "
                "Qwen-Image-Edit, FLUX Kontext or InstructPix2Pix>)"
            )
        class_name = check_edit_model(self._edit_model, allow_pickle=self.allow_pickle)
        loras = self._edit_settings.loras
        for index, spec in enumerate(loras):
            check_lora(index, spec, allow_pickle=self.allow_pickle)
        pipe = self._edit_pipeline()
        shas = self._loras.apply(pipe, loras)
        result, provenance = run_edit(pipe, image, instruction, self._edit_settings)
        provenance["model"] = edit_model_info(self._edit_model, class_name)
        provenance["loras"] = edit_lora_info(loras, shas)
        provenance["engine"] = self._engine_info()
        provenance["likeness_version"] = _likeness_version()
        return GeneratedImage(
            png=encode_png(result, provenance), seed=self._edit_settings.seed, provenance=provenance
        )

    def _edit_pipeline(self) -> Any:
        """The (cached) edit pipeline; only one model is held at a time."""
        if self._edit_pipe is None:
            from diffusers import DiffusionPipeline

            self.release()
            device = choose_device(self._device_pref)
            dtype = choose_dtype(device, self._dtype_pref)
            folder = str(Path(self._edit_model).expanduser())
            class_name = check_edit_model(folder, allow_pickle=self.allow_pickle)
            with quiet_loading():
                pipe = DiffusionPipeline.from_pretrained(
                    folder, dtype=dtype, local_files_only=True,
                    **pipeline_overrides(folder, class_name),
                )  # fmt: skip
            pipe.to(device)
            pipe.set_progress_bar_config(disable=True)
            self._edit_pipe = pipe
            self._key = (None, device, str(dtype), None)
        return self._edit_pipe

    def release(self) -> None:
        """Drop the cached pipeline, LoRAs and upscalers and free device memory."""
        device = self._key[1] if self._key else "cpu"
        self._pipe = None
        self._edit_pipe = None
        self._views.clear()
        self._loras.clear()
        self._upscalers.clear()
        self._adapter.clear()
        self._controlnets.clear()
        self._key = None
        self._adopted = False
        release_device_memory(device)

    def close(self) -> None:
        """Nothing is open besides the models: the same as :meth:`release`."""
        self.release()

    # -- steps --------------------------------------------------------------------------
    def pipeline(self, recipe: Recipe) -> Any:
        """The (cached) text-to-image pipeline for ``recipe``'s model."""
        source = resolve_model(recipe.model, recipe.family, allow_pickle=self.allow_pickle)
        if self._adopted and self._key is not None and self._key[0] == source:
            return self._pipe  # the caller's pipeline (use_pipeline)
        device = choose_device(self._device_pref)
        dtype = choose_dtype(device, self._dtype_pref)
        key = (source, device, str(dtype), str(self._config))
        if self._key != key or self._pipe is None:
            self.release()
            try:
                self._pipe = load_pipeline(source, device=device, dtype=dtype, config=self._config)
            except Exception as exc:  # diffusers raises many kinds for a broken file
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise EngineError(
                    f"model: {recipe.model} could not be loaded as {recipe.family} "
                    f"({type(exc).__name__}: {first})"
                ) from exc
            self._base_scheduler = dict(self._pipe.scheduler.config)
            self._key = key
        return self._pipe

    def _view(self, kind: str, controlnet: Any = None) -> Any:
        """The pipeline's img2img or inpaint view (sharing its models), with a ControlNet."""
        key = (kind, id(controlnet))
        if key not in self._views:
            from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

            factory = AutoPipelineForImage2Image if kind == "img2img" else AutoPipelineForInpainting
            extra = {} if controlnet is None else {"controlnet": controlnet}
            view = factory.from_pipe(self._pipe, **extra)
            view.set_progress_bar_config(disable=True)
            self._views[key] = view
        view = self._views[key]
        view.scheduler = self._pipe.scheduler
        return view

    def _set_scheduler(self, pipe: Any, recipe: Recipe) -> None:
        import diffusers

        class_name, extra = diffusers_scheduler(recipe.sampler, recipe.scheduler, recipe.family)
        cls = getattr(diffusers, class_name)
        pipe.scheduler = cls.from_config(self._base_scheduler, **extra)

    def _generate_chunk(
        self,
        recipe: Recipe,
        seeds: list[int],
        offset: int,
        total: int,
        progress: ProgressCallback | None,
    ) -> list[GeneratedImage]:
        import torch

        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        # 1. Load (cached) and prepare the pipeline.
        report = _reporter(progress, offset, total)
        report("load", 0, 1)
        pipe = self.pipeline(recipe)
        report("hash", 0, 1)  # the first hash of a multi-GB checkpoint takes a while
        model_sha = sha256_file(recipe.model) if Path(recipe.model).expanduser().is_file() else None
        lora_shas = self._loras.apply(pipe, recipe.loras)
        self._set_scheduler(pipe, recipe)
        timings["load_s"] = time.perf_counter() - t0
        # 2. Prompts and seeds.
        prompt = build_prompt(recipe)
        count = len(seeds)
        prompts = [prompt] * count
        negatives = None if recipe.family == "flux" else [recipe.negative] * count

        def gens() -> list[Any]:
            return [torch.Generator("cpu").manual_seed(s) for s in seeds]

        # 3. First pass.
        t = time.perf_counter()
        refine = recipe.refiner.enabled
        kwargs: dict[str, Any] = {}
        if negatives is not None:
            kwargs["negative_prompt"] = negatives
        result = pipe(
            prompt=prompts,
            width=recipe.width,
            height=recipe.height,
            num_inference_steps=recipe.steps,
            guidance_scale=recipe.cfg,
            generator=gens(),
            output_type="latent" if refine else "pil",
            callback_on_step_end=_step_callback(report, "sample", recipe.steps),
            **kwargs,
        ).images
        timings["sample_s"] = time.perf_counter() - t
        # 4. Refiner on the latents.
        if refine:
            t = time.perf_counter()
            latents = result
            extra: dict[str, Any] = {}
            if recipe.family == "flux":
                latents = pipe._unpack_latents(
                    latents, recipe.height, recipe.width, pipe.vae_scale_factor
                )
                extra = {"width": recipe.width, "height": recipe.height}
            result = passes.refine_latents(
                self._view("img2img"),
                latents,
                prompt=prompts,
                negative=negatives,
                steps=recipe.refiner.steps,
                denoise=recipe.refiner.denoise,
                cfg=recipe.cfg,
                generators=gens(),
                callback=_step_callback(report, "refiner", recipe.refiner.steps),
                extra=extra,
            )
            timings["refiner_s"] = time.perf_counter() - t
        images: list[Image.Image] = list(result)
        notes: list[dict[str, Any]] = [{} for _ in images]
        # 5. Identity fix on the base model (LoRAs off), one face per image.
        if recipe.identity.enabled:
            t = time.perf_counter()
            self._identity(recipe, images, seeds, notes, prompt, negatives, report)
            lora_shas = self._loras.apply(pipe, recipe.loras)
            timings["identity_s"] = time.perf_counter() - t
        # 6. Detailer, one face per image.
        if recipe.detailer.enabled:
            t = time.perf_counter()
            inpaint = self._view("inpaint")
            for i, (image, seed) in enumerate(zip(images, seeds, strict=True)):
                detail = passes.detail_face(
                    inpaint,
                    image,
                    recipe.detailer,
                    prompt=prompt,
                    negative=None if negatives is None else recipe.negative,
                    cfg=recipe.cfg,
                    generator=torch.Generator("cpu").manual_seed(seed),
                    find_face=self._find_face,
                    multiple=pipe.vae_scale_factor * (2 if recipe.family == "flux" else 1),
                    callback=_step_callback(report, "detailer", recipe.detailer.steps),
                )
                images[i] = detail.image
                notes[i]["detailer"] = {
                    "face": None if detail.face is None else [round(v, 1) for v in detail.face],
                    "region": None if detail.region is None else list(detail.region),
                }
            timings["detailer_s"] = time.perf_counter() - t
        # 7. Upscale.
        if recipe.upscale.enabled:
            t = time.perf_counter()
            report("upscale", 0, 1)
            model = self._upscaler(recipe.upscale.model) if recipe.upscale.model else None
            images = [passes.upscale_image(im, recipe.upscale.factor, model) for im in images]
            timings["upscale_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - t0
        # 8. PNG with provenance.
        engine_info = self._engine_info()
        upscaler_sha = (
            sha256_file(recipe.upscale.model)
            if recipe.upscale.enabled and recipe.upscale.model
            else None
        )
        out = []
        for image, seed, note in zip(images, seeds, notes, strict=True):
            extra_prov: dict[str, Any] = {"batch_size": count, **note}
            if upscaler_sha:
                extra_prov["upscaler_sha256"] = upscaler_sha
            prov = build_provenance(
                recipe=recipe,
                seed=seed,
                engine=engine_info,
                model_sha256=model_sha,
                lora_sha256s=list(lora_shas),
                timings=timings,
                width=image.width,
                height=image.height,
                extra=extra_prov,
            )
            out.append(GeneratedImage(png=encode_png(image, prov), seed=seed, provenance=prov))
        return out

    def _identity(
        self,
        recipe: Recipe,
        images: list[Image.Image],
        seeds: list[int],
        notes: list[dict[str, Any]],
        prompt: str,
        negatives: list[str] | None,
        report: Callable[[str, int, int], None],
    ) -> None:
        """Run the identity pass on each image in place; notes get its provenance."""
        import torch

        ident = recipe.identity
        pipe = self._pipe
        report("identity", 0, ident.steps)
        faces = self._insightface_analyzer(ident.insightface)
        reference = self._reference_embedding(ident, faces)
        loaded = self._adapter.attach(
            pipe, ident.adapter, ident.method, allow_pickle=self.allow_pickle
        )
        try:
            self._loras.only(pipe, [loaded.lora] if loaded.lora else [])
            pipe.set_ip_adapter_scale(ident.weight)
            embeds = identity.image_embeds(reference, ident.method, pipe.unet.dtype, pipe.device)
            kind = "inpaint" if ident.region == "face" else "img2img"
            keypoints = None
            if ident.method == adapters.INSTANTID:
                controlnet = self._controlnet(ident.controlnet)
                view = self._view(kind, controlnet)
                keypoints = identity.insightface_keypoints(faces)
                hook = identity.controlnet_face_tokens(
                    controlnet, identity.face_tokens(pipe, embeds), recipe.cfg > 1
                )
            else:
                view = self._view(kind)
                hook = contextlib.nullcontext()
            with hook:
                for i, (image, seed) in enumerate(zip(images, seeds, strict=True)):
                    done = identity.apply_identity(
                        view,
                        image,
                        ident,
                        prompt=prompt,
                        negative=None if negatives is None else recipe.negative,
                        cfg=recipe.cfg,
                        generator=torch.Generator("cpu").manual_seed(seed),
                        embeds=embeds,
                        find_face=self._find_face,
                        keypoints=keypoints,
                        multiple=pipe.vae_scale_factor,
                        callback=_step_callback(report, "identity", ident.steps),
                    )
                    images[i] = done.image
                    notes[i]["identity"] = {
                        "method": ident.method,
                        "weight": ident.weight,
                        "region": ident.region,
                        "denoise": ident.denoise,
                        "steps": ident.steps,
                        "face": None if done.face is None else [round(v, 1) for v in done.face],
                        "region_box": None if done.region is None else list(done.region),
                        "keypoints": done.keypoints,
                        "files": identity.file_records(ident),
                        "references": list(reference.records),
                        "insightface_providers": faces.providers,
                    }
        finally:
            self._adapter.detach(pipe)

    def _insightface_analyzer(self, folder: str) -> Any:
        from likeness.faces.insightface_backend import InsightFaceAnalyzer

        key = str(Path(folder).expanduser().resolve())
        if key not in self._insightface:
            device = choose_device(self._device_pref)
            self._insightface[key] = InsightFaceAnalyzer(
                Path(key), device="cpu" if device == "cpu" else None
            )
        return self._insightface[key]

    def _reference_embedding(self, ident: Any, faces: Any) -> identity.ReferenceEmbedding:
        """The references' embedding, cached by their content and the InsightFace folder."""
        key = (
            tuple(sha256_file(r) for r in ident.references),
            str(Path(ident.insightface).expanduser().resolve()),
        )
        if key not in self._references:
            self._references[key] = identity.embed_references(ident.references, faces)
        return self._references[key]

    def _controlnet(self, value: str) -> Any:
        """InstantID's ControlNet (cached by its weights' sha256), on the pipeline's device."""
        folder = adapters.controlnet_folder(value)
        weights = adapters.controlnet_weights(folder)
        sha = sha256_file(weights) if weights else str(folder)
        if sha not in self._controlnets:
            from diffusers import ControlNetModel

            pipe = self._pipe
            try:
                with quiet_loading():
                    model = ControlNetModel.from_pretrained(
                        str(folder),
                        dtype=pipe.unet.dtype,
                        local_files_only=True,
                        use_safetensors=weights is not None and weights.suffix == ".safetensors",
                    )
            except Exception as exc:  # diffusers raises many types for a broken folder
                raise EngineError(
                    f"identity.controlnet: {value} could not be loaded ({type(exc).__name__})"
                ) from exc
            self._controlnets[sha] = model.to(pipe.device).eval()
        return self._controlnets[sha]

    def _upscaler(self, path: str) -> Any:
        if path not in self._upscalers:
            device = self._key[1] if self._key else choose_device(self._device_pref)
            self._upscalers[path] = passes.load_upscaler(path, device)
        return self._upscalers[path]

    def _engine_info(self) -> dict[str, Any]:
        import diffusers
        import torch

        _, device, dtype, _ = self._key if self._key else (None, "cpu", "", None)
        return {
            "name": self.name,
            "version": diffusers.__version__,
            "torch": torch.__version__,
            "device": device,
            "dtype": dtype.replace("torch.", ""),
        }


def _reporter(
    progress: ProgressCallback | None, offset: int, total: int
) -> Callable[[str, int, int], None]:
    def report(stage: str, step: int, steps: int) -> None:
        if progress is not None:
            progress(ProgressUpdate(offset, total, step, steps, stage))

    return report


def _step_callback(report: Callable[[str, int, int], None], stage: str, steps: int) -> Any:
    def callback(pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        report(stage, step + 1, steps)
        return {}

    return callback


def _likeness_version() -> str:
    from likeness import __version__

    return __version__
