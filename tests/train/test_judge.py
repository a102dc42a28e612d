"""Checkpoints judged by likeness: probes rendered with each checkpoint (the trainer's own
pipeline, or a test engine serving real face photos), scored against the dataset's source
photos, memorisation flagged, the best checkpoint marked, judging resumed after a kill."""

from __future__ import annotations

import re

import numpy as np
import pytest

from likeness.engines.base import GeneratedImage
from likeness.train import store
from likeness.train.loop import TrainHooks
from likeness.train.run import train_lora
from tests.evaluate.photo_engine import PhotoEngine
from tests.train.conftest import TINY_JUDGE, fast_recipe

METRIC_KEYS = {"match", "pass_rate", "grain", "plastic", "objective", "memorised", "judge_hash",
               "probes", "faces", "via"}  # fmt: skip


def step_of(recipe) -> int:
    """The checkpoint step a probe recipe's LoRA file names (…-step000008.safetensors)."""
    found = re.search(r"step(\d+)\.safetensors$", recipe.loras[0].path)
    assert found, recipe.loras[0].path
    return int(found.group(1))


def test_in_memory_probes_are_the_files_probes_and_every_checkpoint_is_judged(
    judge_ws, train_models, instruments
):
    recipe = fast_recipe(train_models.sdxl, "sdxl", "obama@v1", steps=6, checkpoint_every=3,
                         learning_rate=5e-3, judge=TINY_JUDGE)  # fmt: skip
    result = train_lora(judge_ws, recipe, device="cpu", instruments=instruments)

    checkpoints = store.list_checkpoints(judge_ws.db, result.run_id)
    assert [c.step for c in checkpoints] == [3, 6]
    for checkpoint in checkpoints:
        assert set(checkpoint.metrics) >= METRIC_KEYS
        assert checkpoint.metrics["via"] == "in-memory"
        assert checkpoint.metrics["probes"] == 2 and checkpoint.metrics["failed"] == 0
        probes = store.list_probes(judge_ws.db, checkpoint.id)
        assert [(p.shot, p.seed) for p in probes] == [("front_neutral", 1), ("standing", 1)]
        assert all(p.score is not None for p in probes)
        # Probes are blobs, never images: not in the review queue, a dataset or the references.
        for probe in probes:
            assert judge_ws.blobs.exists(probe.image_sha)
            assert (
                judge_ws.db.execute(
                    "SELECT 1 FROM images WHERE sha256 = ?", (probe.image_sha,)
                ).fetchone()
                is None
            )
            assert probe.prompt.startswith("vrexoq123, studio portrait") or probe.shot != (
                "front_neutral"
            )
            assert probe.generation["loras"][0]["sha256"] == checkpoint.sha256
    run = store.get_run(judge_ws.db, result.run_id)
    assert run.best_checkpoint in {c.id for c in checkpoints}
    assert result.best is not None and result.best["id"] == run.best_checkpoint
    assert [c["best"] for c in result.checkpoints].count(True) == 1

    # The probe rendered with the trainer's pipeline is the probe the checkpoint file renders
    # in a fresh engine (same seed and recipe): LoRA files are fp32 here, so to 1 level of 255.
    from likeness.engines.diffusers import DiffusersEngine
    from likeness.train.judge import CheckpointJudge

    judge = CheckpointJudge(judge_ws, recipe, judge_ws_version(judge_ws, "obama@v1"))
    last = checkpoints[-1]
    plan = judge.plans(last.path)[0]
    engine = DiffusersEngine(device="cpu")
    try:
        from_file = np.asarray(engine.generate(plan.recipe, 1)[0].image(), dtype=np.float64)
    finally:
        engine.release()
    probe = store.list_probes(judge_ws.db, last.id)[0]
    from PIL import Image

    in_memory = np.asarray(Image.open(judge_ws.blobs.path(probe.image_sha)).convert("RGB"),
                           dtype=np.float64)  # fmt: skip
    assert np.abs(from_file - in_memory).max() <= 1.0
    base = np.asarray(render_base(plan.recipe), dtype=np.float64)
    assert np.abs(base - in_memory).mean() > 1.0, "the LoRA must change the probe"

    # Other judge settings on the finished recipe: each checkpoint is judged again from its
    # file (a diffusers engine on the base model), nothing is trained.
    wider = recipe.with_overrides({"judge": {**TINY_JUDGE, "seeds": [1, 3]}})
    again = train_lora(judge_ws, wider, device="cpu", instruments=instruments)
    assert again.already_trained and again.run_id == result.run_id
    for checkpoint in again.checkpoints:
        assert checkpoint["metrics"]["via"] == "file" and checkpoint["metrics"]["probes"] == 4
    # Seed 1 rendered from the file is the seed-1 probe rendered in memory, to 1 level.
    old_hash = last.metrics["judge_hash"]
    assert again.checkpoints[-1]["metrics"]["judge_hash"] != old_hash
    before = {
        (q.shot, q.seed): q.image_sha for q in store.list_probes(judge_ws.db, last.id, old_hash)
    }
    for probe in (p for p in again.checkpoints[-1]["probes"] if p["seed"] == 1):
        old = pixels(judge_ws, before[(probe["shot"], 1)])
        assert np.abs(pixels(judge_ws, probe["image_sha"]) - old).max() <= 1.0


def pixels(ws, sha):
    from PIL import Image

    return np.asarray(Image.open(ws.blobs.path(sha)).convert("RGB"), dtype=np.float64)


def judge_ws_version(ws, ref):
    from likeness.store.datasets import resolve

    return resolve(ws.db, ref)


def render_base(recipe):
    from likeness.engines.diffusers import DiffusersEngine

    engine = DiffusersEngine(device="cpu")
    try:
        return engine.generate(recipe.with_overrides({"loras": []}), 1)[0].image()
    finally:
        engine.release()


def test_real_faces_rank_the_checkpoints_and_a_memorised_probe_is_flagged(
    judge_ws, train_models, instruments
):
    # Step 2: another man; step 4: the man in a photo the LoRA never saw; step 6: a training
    # photo given back as it is (best match of all, and memorised).
    photos = {2: "biden.jpg", 4: "obama3.jpg", 6: "obama.jpg"}
    engine = PhotoEngine(lambda recipe, seed: photos[step_of(recipe)])
    recipe = fast_recipe(train_models.flux, "flux", "obama@v1", steps=6, checkpoint_every=2,
                         judge=TINY_JUDGE)  # fmt: skip
    mine = TrainHooks(on_checkpoint=lambda event: {"mine": event.step})  # a caller's own hook
    result = train_lora(judge_ws, recipe, device="cpu", probe_engine=engine, hooks=mine,
                        instruments=instruments)  # fmt: skip

    by_step = {c["step"]: c for c in result.checkpoints}
    assert all(c["metrics"]["mine"] == c["step"] and "match" in c["metrics"]
               for c in result.checkpoints)  # fmt: skip
    stranger, fresh, copy = (by_step[s]["metrics"] for s in (2, 4, 6))
    assert stranger["pass_rate"] == 0.0 and fresh["pass_rate"] == 1.0
    assert fresh["match"] > stranger["match"] + 3
    assert copy["match"] > fresh["match"]  # a copy of a reference matches best...
    assert copy["memorised"] == 2 and fresh["memorised"] == 0 and stranger["memorised"] == 0
    obama = judge_ws.db.execute(
        "SELECT sha256 FROM images WHERE original_name = 'obama.jpg'"
    ).fetchone()[0]
    flagged = copy["memorised_probes"][0]
    assert flagged["of"] == obama and flagged["by"] == "perceptual_hash"
    assert all(p["memorised"] for p in by_step[6]["probes"])
    # ...so the best checkpoint is the one that learned the face without copying a photo.
    assert result.best["step"] == 4 and by_step[4]["best"]
    for metrics in (stranger, fresh, copy):
        assert metrics["grain"] is not None and metrics["plastic"] is not None
        assert metrics["via"] == "photos"
    assert len(engine.calls) == 3 * 2  # 3 checkpoints x 2 probes


def test_judging_resumes_after_a_kill_without_judging_a_checkpoint_twice(
    judge_ws, train_models, instruments
):
    class Killed(BaseException):
        """What a kill looks like from inside the process: nothing catches it."""

    photos = {2: "obama3.jpg", 4: "obama2.jpg", 6: "obama3.jpg"}
    kill_at = {"calls": 3}  # the second probe of the second checkpoint

    class KillingEngine(PhotoEngine):
        steps: list[int] = []

        def generate(self, recipe, n, progress=None) -> list[GeneratedImage]:
            if kill_at["calls"] is not None and len(self.calls) == kill_at["calls"]:
                raise Killed
            self.steps.append(step_of(recipe))
            return super().generate(recipe, n, progress)

    engine = KillingEngine(lambda recipe, seed: photos[step_of(recipe)])
    recipe = fast_recipe(train_models.sdxl, "sdxl", "obama@v1", steps=6, checkpoint_every=2,
                         judge=TINY_JUDGE)  # fmt: skip
    with pytest.raises(Killed):
        train_lora(judge_ws, recipe, device="cpu", probe_engine=engine, instruments=instruments)
    (run,) = store.list_runs(judge_ws.db)
    first, second = store.list_checkpoints(judge_ws.db, run.id)
    assert first.metrics is not None and second.metrics is None
    assert len(store.list_probes(judge_ws.db, second.id)) == 1  # one of its probes was made

    kill_at["calls"] = None
    made = len(engine.calls)
    result = train_lora(judge_ws, recipe, device="cpu", probe_engine=engine,
                        instruments=instruments)  # fmt: skip
    assert result.resumed_from == 4
    # Only the missing probe of step 4 and the two of step 6 were rendered.
    assert engine.steps[made:] == [4, 6, 6]
    checkpoints = store.list_checkpoints(judge_ws.db, result.run_id)
    assert all(c.metrics is not None for c in checkpoints)
    assert checkpoints[0].metrics == first.metrics  # judged once, before the kill
    assert result.best is not None

    # New judge settings on the same recipe: nothing is trained, every checkpoint is judged
    # again from its file under the new settings.
    made = len(engine.calls)
    more = recipe.with_overrides({"judge": {**TINY_JUDGE, "seeds": [1, 5]}})
    again = train_lora(judge_ws, more, device="cpu", probe_engine=engine, instruments=instruments)
    assert again.already_trained and again.run_id == result.run_id
    assert len(engine.calls) - made == 3 * 2 * 2
    assert all(c["metrics"]["probes"] == 4 for c in again.checkpoints)


def test_judging_in_memory_leaves_the_training_as_it_was(judge_ws, train_models, instruments):
    """Probes rendered with the trainer's pipeline between steps (at a strength other than 1,
    text-encoder LoRA included) do not change what is trained: the LoRA equals, bit for bit,
    the one a run without judging trains."""
    from safetensors.torch import load_file

    judged = fast_recipe(train_models.sdxl, "sdxl", "obama@v1", steps=4, checkpoint_every=1,
                         learning_rate=5e-3, train_text_encoder=True, lora_dropout=0.1,
                         judge={**TINY_JUDGE, "strength": 0.5})  # fmt: skip
    with_judge = train_lora(judge_ws, judged, device="cpu", instruments=instruments)
    assert all(c["metrics"]["via"] == "in-memory" for c in with_judge.checkpoints)
    plain = judged.with_overrides({"judge": {"enabled": False}})
    without = train_lora(judge_ws, plain, device="cpu", again=True)
    assert without.run_id != with_judge.run_id and without.best is None
    a, b = load_file(with_judge.final_lora), load_file(without.final_lora)
    assert a.keys() == b.keys() and any(k.startswith("lora_te1_") for k in a)
    assert all(torch_equal(a[k], b[k]) for k in a)


def torch_equal(x, y) -> bool:
    import torch

    return bool(torch.equal(x, y))
