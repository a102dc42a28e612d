"""Checkpoints judged by likeness: each checkpoint renders a fixed set of probes, the
measuring instruments score them, and the checkpoint the sweep objective ranks first is marked.

A probe is one shot of the model card (``[judge] probes``: front neutral, a half angle,
smiling, a body shot) at one fixed seed (``[judge] seeds``), with the trigger placed as the
card places it, rendered through the diffusers engine with the checkpoint's LoRA. For each
checkpoint (see :meth:`CheckpointJudge.judge`):

1. render the probes not rendered yet (a killed judge resumes probe by probe); each image is
   a blob with its provenance, recorded in ``train_probes`` and deliberately *not* a row of
   ``images``: probes never reach the review queue, a dataset or the references;
2. score them against the dataset's source photos (match, identity pass, grain, plastic);
3. flag memorisation: a probe that nearly duplicates a training image, by perceptual hashes
   (pHash and dHash within the workspace's dedup distances) or by the same face shot (ORB
   keypoints on the face, :mod:`likeness.metrics.same_shot`);
4. record the checkpoint's metrics; rank the run's judged checkpoints by the sweep objective
   (:class:`~likeness.evaluate.objective.Objective`, mean over the probes) and mark the best.
   A checkpoint with a memorised probe is ranked after every checkpoint without one; ties go
   to the earlier step (fewer steps, less fitted).

Where the probes are rendered: the checkpoint just written is judged with the trainer's own
pipeline (:func:`trainer_pipeline`: its LoRA layers hold the checkpoint's weights), so no
second copy of the base model is loaded; a checkpoint judged later (after a kill, with new
judge settings, or a LoRA trained elsewhere) is judged from its file, loaded into a diffusers
engine on the base model. bench/judge.py measures both.

Example::

    judge = CheckpointJudge(ws, recipe, version)
    metrics = judge.judge(checkpoint, engine, via="file")
    metrics["match"], metrics["pass_rate"], metrics["memorised"]
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from likeness.engines.base import Engine, EngineCannotHonour, EngineError
from likeness.evaluate.card_spec import CardSpec, CardSpecError, Shot, load_card_spec
from likeness.evaluate.objective import Objective
from likeness.recipes import LoraSpec, Recipe
from likeness.train import store
from likeness.train.edit_probes import (
    EditProbe,
    check_edit_probes,
    edit_probe_plans,
    edit_probes_hash,
    edit_settings,
    probe_sources,
)
from likeness.train.recipe import QWEN_EDIT

if TYPE_CHECKING:
    from likeness.evaluate.scorer import WorkspaceScorer
    from likeness.metrics import Instruments
    from likeness.store.datasets import DatasetVersion
    from likeness.train.recipe import TrainRecipe
    from likeness.train.setup import TrainModel
    from likeness.workspace import Workspace

Notify = Callable[[str], None]
TRAINER_ADAPTER = "default"
"""The adapter name the trainer's LoRA layers have (peft's default)."""
SAMPLERS = {"flux": ("euler", "simple")}
"""Sampler and scheduler of the probes by family (others: the recipe defaults, dpmpp_2m +
karras, the working SDXL recipe)."""


class JudgeError(ValueError):
    """Judging cannot run as set up; one line naming the field or file and the fix."""


@dataclass(frozen=True)
class ProbePlan:
    shot: Shot
    seed: int
    recipe: Recipe


@dataclass(frozen=True)
class TrainingImage:
    """A training image as memorisation is checked against it."""

    sha256: str
    path: Path
    phash: int
    dhash: int


def reference_paths(ws: Workspace, version: DatasetVersion) -> list[Path]:
    """The dataset version's source photos (not excluded): the person the LoRA must look like.
    A version made only of generated images falls back to the workspace's source photos."""
    from likeness.evaluate.scorer import reference_paths as workspace_sources

    shas = [item.image_sha for item in version.items]
    rows = ws.db.execute(
        f"SELECT sha256 FROM images WHERE origin = 'source' AND excluded = 0 AND sha256 IN "
        f"({', '.join('?' * len(shas))})",
        shas,
    ).fetchall()
    found = {r[0] for r in rows}
    paths = [ws.blobs.path(sha) for sha in shas if sha in found]
    return paths or workspace_sources(ws)


def probe_plans(
    recipe: TrainRecipe,
    spec: CardSpec,
    *,
    lora: str,
    trigger: str,
    class_word: str,
    name: str = "",
    overrides: Mapping[str, Any] | None = None,
) -> list[ProbePlan]:
    """The probe recipes of one checkpoint: every probe shot x every seed, the LoRA at the
    judge's strength, the trigger placed as the card places it (start and middle).
    ``overrides`` change the generation recipe (a hosted engine's ``engine`` and ``model``)."""
    judge = recipe.judge
    sampler, scheduler = SAMPLERS.get(recipe.family, ("dpmpp_2m", "karras"))
    base = Recipe(
        model=recipe.model,
        family=recipe.family,
        loras=(LoraSpec(lora, judge.strength),),
        negative="" if recipe.family == "flux" else spec.negative,
        trigger=trigger,
        width=judge.width,
        height=judge.height,
        sampler=sampler,
        scheduler=scheduler,
        steps=judge.steps,
        cfg=judge.cfg,
        seed=0,
    ).with_overrides({"refiner.enabled": False, **(overrides or {})})
    plans = []
    for shot_id in judge.probes:
        shot = spec.shot(shot_id)
        prompt = shot.render(class_word=class_word, name=name, style=spec.style)
        for seed in judge.seeds:
            plans.append(
                ProbePlan(shot, seed, base.with_overrides({"prompt": prompt, "seed": seed}))
            )
    return plans


def load_probe_spec(recipe: TrainRecipe) -> CardSpec:
    """The card spec the probes come from, with every probe id checked."""
    try:
        spec = load_card_spec(recipe.judge.spec or None)
    except CardSpecError as exc:
        raise JudgeError(f"judge.spec: {exc}") from None
    ids = [s.id for s in spec.shots]
    for index, probe in enumerate(recipe.judge.probes):
        if probe not in ids:
            raise JudgeError(
                f"judge.probes.{index}: {probe!r} is not a shot of {spec.source}; "
                f"use one of {', '.join(ids)}"
            )
    return spec


def judge_hash(recipe: TrainRecipe, spec: CardSpec) -> str:
    """What the probes are: the judge settings and the spec's content (model and trigger
    come with the run)."""
    blob = f"{recipe.judge.settings_hash()}:{spec.spec_hash()}".encode()
    return hashlib.sha256(blob).hexdigest()


class CheckpointJudge:
    """Judges the checkpoints of one run (see the module docstring).

    Args:
        ws (`Workspace`): probes are stored and scored here.
        recipe (`TrainRecipe`): the run's recipe; its ``[judge]`` table says what to render.
        version (`DatasetVersion`): the trained version (trigger, class word, images).
        instruments (`Instruments`, *optional*): the measuring models, loaded once.
        objective (`Objective`, *optional*): how checkpoints rank (the sweep's default).
        notify (*optional*): receives one-line notices.
    """

    def __init__(
        self,
        ws: Workspace,
        recipe: TrainRecipe,
        version: DatasetVersion,
        *,
        instruments: Instruments | None = None,
        objective: Objective | None = None,
        notify: Notify | None = None,
    ) -> None:
        self.ws = ws
        self.recipe = recipe
        self.version = version
        self.edit = recipe.family == QWEN_EDIT
        """An edit model's checkpoints: probes are edits of source photos (edit_probes)."""
        self.objective = objective or Objective()
        self.references = reference_paths(ws, version)
        if self.edit:
            try:
                check_edit_probes(recipe.judge.probes)
            except ValueError as exc:
                raise JudgeError(str(exc)) from None
            self.spec = None
            self.hash = edit_probes_hash(recipe)
            self.sources = probe_sources(ws, version, self.references)
        else:
            self.spec = load_probe_spec(recipe)
            self.hash = judge_hash(recipe, self.spec)
        """The photos probes are scored against; empty: nothing can be judged (a warning)."""
        self.say = notify or (lambda _line: None)
        self._instruments = instruments
        self._scorer: WorkspaceScorer | None = None
        self._training: list[TrainingImage] | None = None
        self._training_prints: dict[str, Any] | None = None

    # -- what to judge ------------------------------------------------------------------------
    def plans(self, lora: str, overrides: Mapping[str, Any] | None = None) -> list[ProbePlan]:
        return probe_plans(
            self.recipe,
            self.spec,
            lora=lora,
            trigger=self.version.trigger,
            class_word=self.version.class_word,
            name=self.ws.settings.character.name,
            overrides=overrides,
        )

    def is_judged(self, checkpoint: store.Checkpoint) -> bool:
        metrics = checkpoint.metrics or {}
        return metrics.get("judge_hash") == self.hash

    def pending(self, run_id: int) -> list[store.Checkpoint]:
        """Checkpoints of the run not judged under the current settings (a kill before their
        hook ran, or settings changed since)."""
        return [c for c in store.list_checkpoints(self.ws.db, run_id) if not self.is_judged(c)]

    # -- judging ------------------------------------------------------------------------------
    def judge(
        self,
        checkpoint: store.Checkpoint,
        engine: Engine,
        *,
        via: str,
        lora: str | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Render, score and check one checkpoint's probes; store and return its metrics, and
        mark the run's best checkpoint. ``lora`` names the checkpoint as the engine reaches
        it (default: its file); ``overrides`` change the probe recipe (a hosted model)."""
        began = time.perf_counter()
        made = {
            (p.shot, p.seed): p
            for p in store.list_probes(self.ws.db, checkpoint.id, self.hash)
            if p.image_sha is not None
        }
        # 1. Render what is missing.
        try:
            if self.edit:
                for probe in edit_probe_plans(self.recipe, self.sources):
                    if (probe.id, probe.seed) not in made:
                        self._render_edit(checkpoint, probe, engine, lora or checkpoint.path)
            else:
                plans = self.plans(lora or checkpoint.path, overrides)
                engine.check(plans[0].recipe)
                for plan in plans:
                    if (plan.shot.id, plan.seed) in made:
                        continue
                    self._render(checkpoint, plan, engine)
        finally:
            drop = getattr(engine, "drop_loras", None)
            if drop is not None:  # a checkpoint loaded from its file: unload it
                drop()
        probes = store.list_probes(self.ws.db, checkpoint.id, self.hash)
        # 2-3. Scores and memorisation.
        self._score(checkpoint, probes)
        probes = store.list_probes(self.ws.db, checkpoint.id, self.hash)
        # 4. Metrics, then the run's best.
        metrics = summarise(probes, self.objective)
        metrics.update(
            judge_hash=self.hash, via=via, seconds=round(time.perf_counter() - began, 2),
            references=len(self.references),
        )  # fmt: skip
        store.set_checkpoint_metrics(self.ws.db, checkpoint.id, metrics)
        mark_best(self.ws.db, checkpoint.run_id, self.hash)
        memo = f", {metrics['memorised']} memorised" if metrics["memorised"] else ""
        self.say(
            f"judged step {checkpoint.step}: match {_fmt(metrics['match'])}, pass "
            f"{metrics['pass_rate']:.0%}, grain {_fmt(metrics['grain'])}, plastic "
            f"{_fmt(metrics['plastic'])}{memo}"
        )
        return metrics

    def judge_in_memory(
        self, checkpoint: store.Checkpoint, model: TrainModel, engine: Any
    ) -> dict[str, Any]:
        """Judge the checkpoint the trainer's in-memory LoRA holds, with its own pipeline
        (``engine``: a :class:`~likeness.engines.diffusers.DiffusersEngine` to lend it to)."""
        if self.edit:
            engine.use_edit_pipeline(
                model.pipe, self.recipe.model, loras={checkpoint.sha256: TRAINER_ADAPTER}
            )
        else:
            engine.use_pipeline(
                model.pipe,
                self.recipe.model,
                self.recipe.family,
                loras={checkpoint.sha256: TRAINER_ADAPTER},
            )
        with trainer_pipeline(model):
            return self.judge(checkpoint, engine, via="in-memory")

    def judge_live(
        self, checkpoint: store.Checkpoint, model: TrainModel, engine: Engine
    ) -> dict[str, Any]:
        """The checkpoint the trainer holds in memory: with its pipeline when ``engine`` is a
        diffusers engine to lend it to, else (a hosted or test engine) through ``engine``."""
        if hasattr(engine, "use_edit_pipeline" if self.edit else "use_pipeline"):
            return self.judge_in_memory(checkpoint, model, engine)
        return self.judge(checkpoint, engine, via=engine.name)

    def _render(self, checkpoint: store.Checkpoint, plan: ProbePlan, engine: Engine) -> None:
        from likeness.recipes import build_prompt

        prompt = build_prompt(plan.recipe)
        try:
            image = engine.generate(plan.recipe, 1)[0]
        except (EngineError, EngineCannotHonour) as exc:
            store.put_probe(
                self.ws.db, checkpoint_id=checkpoint.id, judge_hash=self.hash,
                shot=plan.shot.id, seed=plan.seed, prompt=prompt, image_sha=None,
                generation={}, error=f"{type(exc).__name__}: {exc}",
            )  # fmt: skip
            self.say(f"warning: probe {plan.shot.id} seed {plan.seed} failed: {exc}")
            return
        sha = self.ws.blobs.put_bytes(image.png)
        store.put_probe(
            self.ws.db, checkpoint_id=checkpoint.id, judge_hash=self.hash, shot=plan.shot.id,
            seed=plan.seed, prompt=prompt, image_sha=sha, generation=image.provenance,
        )  # fmt: skip

    def _render_edit(
        self, checkpoint: store.Checkpoint, probe: EditProbe, engine: Any, lora: str
    ) -> None:
        """One edit probe: the source photo, the instruction, the checkpoint's LoRA (set on
        a diffusers engine; another engine edits as it is configured)."""
        from likeness.imaging import open_image

        set_edit = getattr(engine, "set_edit", None)
        if set_edit is not None:
            set_edit(self.recipe.model, edit_settings(self.recipe, lora, probe.seed))
        try:
            photo = open_image(probe.source).image
            image = engine.edit(photo, probe.instruction)
        except (EngineError, EngineCannotHonour, NotImplementedError) as exc:
            store.put_probe(
                self.ws.db, checkpoint_id=checkpoint.id, judge_hash=self.hash, shot=probe.id,
                seed=probe.seed, prompt=probe.instruction, image_sha=None, generation={},
                error=f"{type(exc).__name__}: {exc}",
            )  # fmt: skip
            self.say(f"warning: probe {probe.id} seed {probe.seed} failed: {exc}")
            return
        sha = self.ws.blobs.put_bytes(image.png)
        store.put_probe(
            self.ws.db, checkpoint_id=checkpoint.id, judge_hash=self.hash, shot=probe.id,
            seed=probe.seed, prompt=probe.instruction, image_sha=sha,
            generation={**image.provenance, "source": probe.source.name},
        )  # fmt: skip

    def _score(self, checkpoint: store.Checkpoint, probes: Sequence[store.Probe]) -> None:
        rendered = [p for p in probes if p.image_sha is not None]
        if not rendered:
            return
        scores = self.scorer().score([p.image_sha for p in rendered])  # type: ignore[misc]
        found = {}
        for probe, score in zip(rendered, scores, strict=True):
            memo = self.memorised(probe.image_sha, score)  # type: ignore[arg-type]
            found[(probe.shot, probe.seed)] = (score.to_json(), memo)
        store.set_probe_scores(self.ws.db, checkpoint.id, self.hash, found)

    # -- instruments --------------------------------------------------------------------------
    def scorer(self) -> WorkspaceScorer:
        if self._scorer is None:
            from likeness.evaluate.scorer import WorkspaceScorer

            self._scorer = WorkspaceScorer(
                self.ws, instruments=self._instruments, references=self.references
            )
        return self._scorer

    def training_images(self) -> list[TrainingImage]:
        """The version's images (excluded ones included: they are copies of trained ones)."""
        if self._training is None:
            shas = [item.image_sha for item in self.version.items]
            rows = self.ws.db.execute(
                f"SELECT sha256, phash, dhash FROM images WHERE sha256 IN "
                f"({', '.join('?' * len(shas))})",
                shas,
            ).fetchall()
            self._training = [
                TrainingImage(r[0], self.ws.blobs.path(r[0]), int(r[1], 16), int(r[2], 16))
                for r in rows
            ]
        return self._training

    def memorised(self, sha: str, score: Any) -> dict[str, Any] | None:
        """The training image ``sha`` nearly duplicates, and how, or None."""
        from likeness.curate.hashes import hamming, perceptual_hashes
        from likeness.imaging import ImageRejected, open_image

        path = self.ws.blobs.path(sha)
        try:
            hashes = perceptual_hashes(open_image(path).image)
        except (ImageRejected, OSError):
            return None
        dedup = self.ws.settings.dedup
        best: dict[str, Any] | None = None
        for image in self.training_images():
            p, d = hamming(hashes.phash, image.phash), hamming(hashes.dhash, image.dhash)
            near = p <= dedup.phash_max_distance and d <= dedup.dhash_max_distance
            if near and (best is None or p < best["phash"]):
                best = {"of": image.sha256, "by": "perceptual_hash", "phash": p, "dhash": d}
        if best is not None:
            return best
        return self._same_face_shot(sha, path, score)

    def _same_face_shot(self, sha: str, path: Path, score: Any) -> dict[str, Any] | None:
        """A training image whose face is the same photograph as the probe's face."""
        from likeness.metrics import analyze_paths
        from likeness.metrics.same_shot import MIN_INLIERS, face_prints, shot_inliers

        scorer = self.scorer()
        if not score.faces:
            return None
        faces = scorer.instruments.faces
        backend = f"{faces.name}={faces.version}"
        mine = analyze_paths([path], instruments=scorer.instruments, conn=self.ws.db, workers=1)
        analysis = mine.get(sha)
        if analysis is None or analysis.face is None:
            return None
        if self._training_prints is None:
            images = self.training_images()
            analyses = analyze_paths(
                [i.path for i in images], instruments=scorer.instruments, conn=self.ws.db,
                workers=1,
            )  # fmt: skip
            boxes = {
                i.sha256: (i.path, analyses[i.sha256].face.box)  # type: ignore[union-attr]
                for i in images
                if i.sha256 in analyses and analyses[i.sha256].face is not None
            }
            self._training_prints = face_prints(boxes, backend=backend, conn=self.ws.db)
        own = face_prints({sha: (path, analysis.face.box)}, backend=backend, conn=self.ws.db)
        if sha not in own:
            return None
        found = None
        for other, other_print in self._training_prints.items():
            inliers = shot_inliers(own[sha], other_print)
            if inliers >= MIN_INLIERS and (found is None or inliers > found["inliers"]):
                found = {"of": other, "by": "same_face_shot", "inliers": inliers}
        return found


# -- metrics and the best checkpoint ----------------------------------------------------------
def summarise(probes: Sequence[store.Probe], objective: Objective) -> dict[str, Any]:
    """A checkpoint's numbers from its probes, as the sweep aggregates a configuration: mean
    match (no face counts as 0), identity pass rate over every probe, mean grain and plastic
    where measured, the mean objective (a failed probe scores 0), memorised probes."""
    scored = [p.score for p in probes if p.score is not None]
    values = [objective.image(p.score) for p in probes]
    memorised = [
        {"shot": p.shot, "seed": p.seed, "image_sha": p.image_sha, **p.memorised}
        for p in probes
        if p.memorised
    ]
    return {
        "probes": len(probes),
        "failed": sum(p.image_sha is None for p in probes),
        "faces": sum(bool(s.get("faces")) for s in scored),
        "match": _round(_mean([s.get("match") or 0.0 for s in scored])),
        "pass_rate": round(sum(bool(s.get("pass")) for s in scored) / len(probes), 4)
        if probes
        else 0.0,
        "grain": _round(_mean([s.get("grain") for s in scored])),
        "plastic": _round(_mean([s.get("plastic") for s in scored])),
        "objective": _round(statistics.fmean(values)) if values else None,
        "objective_std": _round(statistics.pstdev(values)) if len(values) > 1 else 0.0,
        "memorised": len(memorised),
        "memorised_probes": memorised,
    }


def rank_key(checkpoint: store.Checkpoint) -> tuple[Any, ...]:
    """Sort key: no memorised probe first, then the higher objective, the higher match, the
    earlier step."""
    m = checkpoint.metrics or {}
    return (
        bool(m.get("memorised")),
        -(m.get("objective") if m.get("objective") is not None else -math.inf),
        -(m.get("match") or 0.0),
        checkpoint.step,
    )


def mark_best(conn: Any, run_id: int, hash_: str) -> store.Checkpoint | None:
    """Mark (and return) the best checkpoint among those judged under ``hash_``."""
    judged = [
        c
        for c in store.list_checkpoints(conn, run_id)
        if (c.metrics or {}).get("judge_hash") == hash_
    ]
    best = min(judged, key=rank_key) if judged else None
    store.set_best(conn, run_id, best.id if best else None)
    return best


# -- the trainer's pipeline, lent for probes --------------------------------------------------
@contextlib.contextmanager
def trainer_pipeline(model: TrainModel) -> Iterator[Any]:
    """The trainer's pipeline ready to render: LoRA layers in eval mode, frozen text encoders
    back on the training device for the prompts, the training precision's autocast, no
    gradients. Afterwards the scheduler, the adapter's scale (a probe strength other than 1
    sets it) and the encoders' device are as they were; the trainer puts its layers back in
    train mode."""
    import torch

    pipe = model.pipe
    scheduler = pipe.scheduler
    device = torch.device(model.device)
    away = [
        encoder
        for encoder in (getattr(pipe, n, None) for n in ("text_encoder", "text_encoder_2"))
        if encoder is not None and encoder.device != device
    ]
    cast: Any = contextlib.nullcontext()
    if model.weight_dtype != torch.float32:
        cast = torch.autocast(device.type, dtype=model.weight_dtype)
    try:
        for encoder in away:  # (a move that runs out of memory is undone below)
            encoder.to(device)
        for module in model.trained.values():
            module.eval()
        with torch.no_grad(), cast:
            yield pipe
    finally:
        pipe.scheduler = scheduler
        with contextlib.suppress(ValueError):
            pipe.set_adapters([TRAINER_ADAPTER], adapter_weights=[1.0])
        for encoder in away:
            encoder.to(model.text_device or "cpu")


def _mean(values: Sequence[Any]) -> float | None:
    numbers = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return statistics.fmean(numbers) if numbers else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


__all__ = [
    "CheckpointJudge",
    "JudgeError",
    "ProbePlan",
    "judge_hash",
    "mark_best",
    "probe_plans",
    "rank_key",
    "reference_paths",
    "summarise",
    "trainer_pipeline",
]
