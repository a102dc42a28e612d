"""The task pool on a local Ray: workers run this checkout's code, a killed worker's tasks
finish on the others exactly once, retries are bounded, a task's own failure is not retried,
and no command that was not asked for workers imports Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray import cloudpickle

from likeness.scale.cluster import source_root
from likeness.scale.pool import TaskFailed, TaskPool, WorkerInfo, WorkerPlan

# The setups and tasks below live in this test module, which workers cannot import: send them
# by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def setup_counter(info: WorkerInfo) -> dict:
    return {"name": info.name, "ran": 0}


def slow_square(state: dict, x: int) -> tuple[int, str]:
    time.sleep(0.05)
    state["ran"] += 1
    return x * x, state["name"]


def refuse_odd(state: dict, x: int):
    if x % 2:
        return TaskFailed(f"{x} is odd")
    if x == 4:
        raise ValueError("four\nis not welcome")
    return x


def die(state: dict, x: int) -> int:
    os._exit(3)


def pool_of(n: int, **kwargs) -> TaskPool:
    plans = [
        WorkerPlan(f"w{i}", f"test {i}", setup_counter, {"num_cpus": 0}) for i in range(1, n + 1)
    ]
    pool = TaskPool(plans, **kwargs)
    pool.start()
    return pool


def test_workers_run_this_checkout_and_share_the_work(ray_address):
    pool = pool_of(2)
    try:
        assert pool.live == ["w1", "w2"]
        for name in pool.live:
            info = pool.info(name)
            assert info is not None and info.source == source_root()
            assert info.pid != os.getpid()
        for x in range(12):
            pool.submit(x, slow_square, x, label=f"x={x}")
        outcomes = list(pool.completed())
    finally:
        pool.close()
    assert sorted(o.tag for o in outcomes) == list(range(12))
    assert all(o.error is None and o.value[0] == o.tag**2 for o in outcomes)
    assert {o.value[1] for o in outcomes} == {"w1", "w2"}
    stats = {s.name: s for s in pool.stats()}
    assert stats["w1"].done + stats["w2"].done == 12 and stats["w1"].done and stats["w2"].done
    assert all(s.state == "closed" for s in stats.values())


def test_a_killed_worker_leaves_its_tasks_to_the_others_exactly_once(ray_address):
    import ray

    notices: list[str] = []
    pool = pool_of(2, on_notice=notices.append)
    outcomes = []
    try:
        for x in range(10):
            pool.submit(x, slow_square, x)
        for outcome in pool.completed():
            outcomes.append(outcome)
            if len(outcomes) == 1:
                ray.kill(pool.actor("w1"))
    finally:
        pool.close()
    assert sorted(o.tag for o in outcomes) == list(range(10))
    assert all(o.error is None and o.value[0] == o.tag**2 for o in outcomes)
    assert [s.state for s in pool.stats()] == ["lost", "closed"]
    assert sum(o.worker == "w2" for o in outcomes) >= 5
    assert len(notices) == 1 and notices[0].startswith("worker w1 (test 1) lost: ")
    assert "\n" not in notices[0]


def test_task_failures_are_reported_once_and_not_retried(ray_address):
    pool = pool_of(2)
    try:
        for x in range(6):
            pool.submit(x, refuse_odd, x)
        outcomes = {o.tag: o for o in pool.completed()}
    finally:
        pool.close()
    assert [outcomes[x].value for x in (0, 2)] == [0, 2]
    assert outcomes[1].error == "1 is odd" and outcomes[1].value is None
    assert outcomes[4].error == "ValueError: four is not welcome"
    assert pool.live == [] and all(s.state == "closed" for s in pool.stats())


def test_retries_are_bounded_and_with_no_worker_left_tasks_fail_naming_why(ray_address):
    pool = pool_of(2, max_retries=1, in_flight=1)
    try:
        pool.submit("doomed", die, 0)  # kills w1, then (retried) w2
        pool.submit("first", slow_square, 1)
        pool.submit("last", slow_square, 2)
        outcomes = {o.tag: o for o in pool.completed()}
    finally:
        pool.close()
    doomed = outcomes["doomed"].error
    assert doomed.startswith("gave up after 2 workers were lost under it (w1: ")
    assert "; w2: " in doomed and "\n" not in doomed
    assert outcomes["first"].value == (1, "w2")
    assert outcomes["last"].error.startswith("no worker left (w1: ")
    assert [s.state for s in pool.stats()] == ["lost", "lost"]


NO_RAY = """
import json, sys
from typer.testing import CliRunner
from likeness.cli.main import app
runner = CliRunner()
codes = [runner.invoke(app, args).exit_code for args in (
    ["--help"], ["sweep", "--help"], ["card", "--help"], ["generate", "--help"],
    ["score", "--help"], ["init", sys.argv[1], "--name", "Nobody"],
    ["-w", sys.argv[1], "jobs"], ["-w", sys.argv[1], "sweep", "new", sys.argv[2]],
)]
print(json.dumps({"codes": codes, "ray": sorted(m for m in sys.modules
                  if m == "ray" or m.startswith(("ray.", "likeness.scale")))}))
"""


def test_commands_without_scale_settings_import_no_ray(tmp_path: Path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([source_root(), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", NO_RAY, str(tmp_path / "ws"), str(tmp_path / "sweep.toml")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(done.stdout.strip().splitlines()[-1])
    assert data["codes"] == [0] * 8
    assert data["ray"] == []


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--engine", "replicate", "--workers", "2"], "--engine replicate: runs on its provider"),
        (
            ["--workers", "0", "--comfy-url", "http://a:1", "--comfy-url", "http://b:1"],
            "several servers",
        ),
    ],
)
def test_workers_for_what_cannot_fan_out_is_one_line(tmp_path: Path, flags, message):
    from typer.testing import CliRunner

    from likeness.cli.main import app

    runner = CliRunner()
    assert runner.invoke(app, ["init", str(tmp_path / "ws"), "--name", "Nobody"]).exit_code == 0
    spec = tmp_path / "sweep.toml"
    assert (
        runner.invoke(app, ["-w", str(tmp_path / "ws"), "sweep", "new", str(spec)]).exit_code == 0
    )
    result = runner.invoke(app, ["-w", str(tmp_path / "ws"), "sweep", str(spec), *flags])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
