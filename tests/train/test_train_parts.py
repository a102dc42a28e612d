"""Small parts of the trainer: the LR schedule, the FLUX timestep sampling, the optimizer choice,
the resume state file, per-step seeds."""

from __future__ import annotations

import math
import sys
from types import SimpleNamespace

import pytest

from likeness.recipes import RecipeError
from likeness.train.loop import step_seed
from likeness.train.optim import build_optimizer, lr_factor
from likeness.train.recipe import TrainRecipe


def test_warmup_then_the_schedule():
    constant = lr_factor("constant", 4, 20)
    assert [round(constant(s), 3) for s in range(6)] == [0.2, 0.4, 0.6, 0.8, 1.0, 1.0]
    cosine, linear = lr_factor("cosine", 0, 10), lr_factor("linear", 0, 10)
    assert cosine(0) == 1.0 and math.isclose(cosine(5), 0.5) and cosine(10) == 0.0
    assert linear(0) == 1.0 and math.isclose(linear(5), 0.5) and linear(10) == 0.0


def test_flux_timestep_sampling_stays_in_the_unit_interval_and_shift_moves_it_up():
    import torch

    from likeness.train.objectives import FluxObjective

    means = {}
    for method in ("uniform", "sigmoid", "shift", "flux_shift"):
        recipe = TrainRecipe(family="flux", timestep_sampling=method)
        sigmas = FluxObjective.sigmas(
            SimpleNamespace(recipe=recipe), 4096, (128, 128), torch.Generator().manual_seed(0)
        )
        assert sigmas.shape == (4096,) and float(sigmas.min()) > 0 and float(sigmas.max()) < 1
        means[method] = float(sigmas.mean())
    assert abs(means["uniform"] - 0.5) < 0.02 and abs(means["sigmoid"] - 0.5) < 0.02
    assert means["shift"] > 0.65 and means["flux_shift"] > 0.65  # more noise, as kohya's


def test_adamw8bit_without_bitsandbytes_names_the_package(monkeypatch):
    import torch

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails as when missing
    param = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(RecipeError) as caught:
        build_optimizer(TrainRecipe(optimizer="adamw8bit"), [("unet", [param])])
    assert caught.value.field == "optimizer" and "bitsandbytes" in str(caught.value)
    groups = build_optimizer(
        TrainRecipe(learning_rate=1e-4, text_encoder_lr=1e-5),
        [("unet", [param]), ("text_encoder", [torch.nn.Parameter(torch.zeros(1))])],
    ).param_groups
    assert [g["lr"] for g in groups] == [1e-4, 1e-5]


def test_the_resume_state_reads_back_bit_for_bit(tmp_path):
    import random

    import numpy as np
    import torch

    from likeness.train import state

    param = torch.nn.Parameter(torch.randn(3, 2))
    optimizer = torch.optim.AdamW([param], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor("cosine", 2, 10))
    param.grad = torch.randn(3, 2)
    optimizer.step()
    scheduler.step()
    random.random(), np.random.random(), torch.rand(1)
    saved = state.ResumeState(
        step=5,
        recipe_hash="h",
        epoch=1,
        epoch_index=2,
        epoch_seed=[42, 1],
        weights={"unet.a": param.detach().clone()},
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
        scaler=None,
        rng=state.capture_rng(),
        pending_losses=[[5, 0.5, 0.1]],
        checkpoint={"step": 5, "path": "x", "sha256": "y", "loss": 0.5},
    )
    path = tmp_path / "state" / "resume.safetensors"
    state.save_state(path, saved)
    expected = (random.random(), float(np.random.random()), float(torch.rand(1)))
    back = state.load_state(path)
    assert back is not None and back.step == 5 and back.epoch_seed == [42, 1]
    assert torch.equal(back.weights["unet.a"], param.detach())
    fresh = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(3, 2))], lr=0.1)
    fresh.load_state_dict(back.optimizer)
    for key in ("exp_avg", "exp_avg_sq", "step"):
        assert torch.equal(
            fresh.state_dict()["state"][0][key], optimizer.state_dict()["state"][0][key]
        )
    assert back.scheduler == scheduler.state_dict()
    state.restore_rng(back.rng)
    assert (random.random(), float(np.random.random()), float(torch.rand(1))) == expected
    assert back.pending_losses == [[5, 0.5, 0.1]] and back.checkpoint["sha256"] == "y"
    assert not list(path.parent.glob(".*.tmp")), "no temporary file is left behind"


def test_step_seeds_differ_by_stream_and_step_and_fit_in_63_bits():
    seeds = {step_seed(42, kind, step) for kind in ("batch", "global") for step in range(50)}
    assert len(seeds) == 100 and all(0 <= s < 2**63 for s in seeds)
    assert step_seed(42, "batch", 3) == step_seed(42, "batch", 3) != step_seed(43, "batch", 3)


def test_the_gpu_check_runs_the_trainer_step_and_says_when_there_is_no_gpu(capsys):
    import torch
    from bench import gpu_train_check

    assert gpu_train_check.main(["--tiny-cpu", "--steps", "2", "--rank", "4"]) == 0
    assert "it/s" in capsys.readouterr().out
    if not torch.cuda.is_available():
        assert gpu_train_check.main([]) == 0
        assert "no CUDA device" in capsys.readouterr().out
