"""Client calls and whole runs against the test server: success, errors, restarts, retries."""

from __future__ import annotations

import io
import json
import threading
import uuid

import httpx
import pytest
from fake_server import FakeComfyUI, transcript
from PIL import Image

from likeness.engines.comfyui import client
from likeness.engines.comfyui.errors import ComfyError
from likeness.engines.comfyui.graph import build_graph
from likeness.engines.comfyui.protocol import ImageRef
from likeness.engines.comfyui.run import NodeProgress, RetryPolicy, run_prompt
from likeness.recipes import Recipe

FAST = RetryPolicy(reconnect_attempts=10, backoff=0.05, max_backoff=0.3, idle_poll=2.0, timeout=30)


def graph_of(recipe: Recipe, **kw) -> dict:  # noqa: ANN003
    return build_graph(recipe, **kw).api()


def test_system_info_free_models(http: httpx.Client, fake: FakeComfyUI) -> None:
    assert client.system_info(http).comfyui_version == "0.3.64"
    client.free(http)
    client.free(fake.url, unload_models=True, free_memory=False)
    recorded = transcript("62_free")["request"]["body"]
    assert fake.state.free_requests == [recorded, {"unload_models": True, "free_memory": False}]
    assert client.list_models(http, "loras") == ["tiny_sd15_slim_lora.safetensors"]
    with pytest.raises(ComfyError, match="no model folder 'nosuch'"):
        client.list_models(http, "nosuch")
    assert client.object_info(http, "NoSuchNode") == {}


def test_upload_rename_and_view(http: httpx.Client) -> None:
    a = client.upload_image(http, b"first", "ref.png")
    b = client.upload_image(http, b"second", "ref.png")
    c = client.upload_image(http, b"first", "ref.png")
    assert (a.name, b.name, c.name) == ("ref.png", "ref (1).png", "ref.png")
    d = client.upload_image(http, b"third", "ref.png", overwrite=True)
    assert d.name == "ref.png"
    assert client.view(http, ImageRef("ref.png", "", "input")) == b"third"
    with pytest.raises(ComfyError, match="refused the file name '../main.py'"):
        client.view(http, ImageRef("../main.py", "", "output"))
    with pytest.raises(ComfyError, match="has no output file"):
        client.view(http, ImageRef("does_not_exist.png", "", "output"))


def test_success_with_progress(http: httpx.Client, fake: FakeComfyUI, recipe: Recipe) -> None:
    events: list[NodeProgress] = []
    graph = build_graph(recipe)
    result = run_prompt(http, graph.api(), on_progress=events.append, policy=FAST)
    steps = [(graph.slot_of(e.node), e.value, e.max) for e in events if e.max]
    assert steps == [("sampler", 1, 3), ("sampler", 2, 3), ("sampler", 3, 3), ("refiner", 1, 2), ("refiner", 2, 2)]  # fmt: skip
    started = [graph.slot_of(e.node) for e in events if not e.max]
    assert started[-1] == "save" and "sampler" in started
    (ref,) = result.entry.outputs[graph.id("save")]
    assert (ref.subfolder, ref.filename) == ("likeness", "img_00001_.png")
    with Image.open(io.BytesIO(client.view(http, ref))) as img:
        assert img.size == (64, 96)
        assert json.loads(img.text["prompt"]) == graph.api()
    assert (result.reconnects, result.resubmits) == (0, 0)
    assert fake.state.submissions == [result.submitted.prompt_id]


def test_refused_graph_raises_one_line_per_error(http: httpx.Client, fake: FakeComfyUI, recipe: Recipe) -> None:  # fmt: skip
    graph = graph_of(recipe)
    graph["1"]["inputs"]["ckpt_name"] = "nope.safetensors"
    graph["6"]["inputs"]["steps"] = 0
    with pytest.raises(ComfyError) as info:
        run_prompt(http, graph, policy=FAST)
    assert info.value.lines == [
        "node 1 (CheckpointLoaderSimple): ckpt_name 'nope.safetensors' is not available on the "
        "server; the server has: tiny_sd15_micro_UNLOADABLE.safetensors, tiny_sd15_slim.safetensors",
        "node 6 (KSampler): steps: Value 0 smaller than min of 1",
    ]
    assert fake.state.submissions == []


def test_execution_error_is_one_readable_line(http: httpx.Client, recipe: Recipe) -> None:
    graph = graph_of(recipe.with_overrides({"model": "tiny_sd15_micro_UNLOADABLE.safetensors"}))
    with pytest.raises(ComfyError) as info:
        run_prompt(http, graph, policy=FAST)
    assert info.value.lines == [
        "node 1 (CheckpointLoaderSimple) failed while running: RuntimeError: ERROR: Could not "
        "detect model type of: /srv/ComfyUI/models/checkpoints/tiny_sd15_micro_UNLOADABLE.safetensors"
    ]


def test_failure_in_a_sampler(http: httpx.Client, fake: FakeComfyUI, recipe: Recipe) -> None:
    fake.faults.fail_class = ("KSampler", "OutOfMemoryError", "Allocation on device\nwould exceed")
    with pytest.raises(ComfyError, match=r"^node 6 \(KSampler\) failed while running: OutOfMemoryError: Allocation on device would exceed$"):  # fmt: skip
        run_prompt(http, graph_of(recipe), policy=FAST)


def test_binary_previews_are_ignored(recipe: Recipe) -> None:
    with FakeComfyUI(send_previews=True) as fake, httpx.Client(base_url=fake.url) as http:
        events: list[NodeProgress] = []
        result = run_prompt(http, graph_of(recipe), on_progress=events.append, policy=FAST)
        assert result.entry.status == "success"
        assert sum(1 for e in events if e.max) == 5


@pytest.mark.parametrize("keep_history", [False, True])
def test_restart_mid_run_resubmits_once(recipe: Recipe, keep_history: bool) -> None:
    """The server restarts during the first sampler and forgets the queue: the client
    reconnects, does not find the prompt, submits it again once and gets the image."""
    with FakeComfyUI(step_delay=0.01) as fake, httpx.Client(base_url=fake.url, timeout=5) as http:
        fake.faults.restart_at_step = 2
        fake.faults.restart_keep_history = keep_history
        graph = build_graph(recipe)
        result = run_prompt(http, graph.api(), prompt_id="job-1", policy=FAST)
        assert fake.restart_count == 1
        assert (result.reconnects, result.resubmits) == (1, 1)
        assert fake.state.submissions == ["job-1", "job-1"]
        assert fake.state.executions == ["job-1", "job-1"]
        assert result.entry.status == "success"
        (ref,) = result.entry.outputs[graph.id("save")]
        assert client.view(http, ref).startswith(b"\x89PNG")


def test_restart_after_success_reads_history_without_resubmitting(recipe: Recipe) -> None:
    with FakeComfyUI() as fake, httpx.Client(base_url=fake.url, timeout=5) as http:
        fake.faults.restart_after_success = True
        fake.faults.restart_keep_history = True
        result = run_prompt(http, graph_of(recipe), prompt_id="job-2", policy=FAST)
        assert fake.restart_count == 1
        assert (result.reconnects, result.resubmits) == (1, 0)
        assert fake.state.submissions == ["job-2"]
        assert result.entry.status == "success"


def test_second_loss_gives_up_with_a_clear_line(recipe: Recipe) -> None:
    with FakeComfyUI(step_delay=0.01) as fake, httpx.Client(base_url=fake.url, timeout=5) as http:
        fake.faults.restart_at_step = 2
        fake.faults.restart_keep_history = False
        fired = []

        def again(kind: str, data: dict) -> None:
            if kind == "execution_start" and fake.restart_count == 1 and not fired:
                fired.append(1)
                fake.faults.restart_at_step = 2

        fake.on_frame = again
        with pytest.raises(
            ComfyError, match="vanished from the server .* again after 1 resubmission"
        ):
            run_prompt(http, graph_of(recipe), prompt_id="job-3", policy=FAST)
        assert fake.state.submissions == ["job-3", "job-3"]


def test_lost_answer_never_queues_twice(http: httpx.Client, fake: FakeComfyUI, recipe: Recipe) -> None:  # fmt: skip
    """The POST reaches the server but its answer is lost (client timeout): the retry finds
    the prompt id in /queue or /history and does not post again."""
    fake.faults.prompt_response_delay = 1.0
    policy = RetryPolicy(**{**FAST.__dict__, "submit_timeout": 0.2})
    result = run_prompt(http, graph_of(recipe), prompt_id="job-4", policy=policy)
    assert fake.state.submissions == ["job-4"]
    assert result.submitted.number is None  # recovered, not answered
    assert result.entry.status == "success"


def test_submit_waits_for_a_server_that_is_down(recipe: Recipe) -> None:
    with FakeComfyUI() as fake, httpx.Client(base_url=fake.url, timeout=2) as http:
        fake.stop()
        pauses: list[float] = []
        with pytest.raises(ComfyError, match="could not queue prompt job-5 .* after 4 tries"):
            client.submit(http, graph_of(recipe), client_id="c", prompt_id="job-5", attempts=4,
                          backoff=0.01, sleep=pauses.append)  # fmt: skip
        assert pauses == [0.01, 0.02, 0.04, 0.08]
        fake.start()
        sub = client.submit(http, graph_of(recipe), client_id="c", prompt_id="job-5", backoff=0.01)
        assert sub.prompt_id == "job-5" and fake.state.submissions == ["job-5"]


def test_unreachable_server_is_one_line() -> None:
    with FakeComfyUI() as fake:
        url = fake.url
    with httpx.Client(base_url=url, timeout=1) as http:
        policy = RetryPolicy(reconnect_attempts=2, backoff=0.01)
        with pytest.raises(ComfyError, match=r"could not reach ComfyUI at .* after 2 tries .* is the server running\?"):  # fmt: skip
            run_prompt(http, {"1": {}}, policy=policy)


def test_interrupt_is_reported(http: httpx.Client, fake: FakeComfyUI, recipe: Recipe) -> None:
    fake.step_delay = 0.02

    def stop(kind: str, data: dict) -> None:  # runs in the server's event loop: post from a thread
        if kind == "progress" and data["value"] == 2:
            fake.on_frame = None
            threading.Thread(target=httpx.post, args=(fake.url + "/interrupt",), kwargs={"json": {}}).start()  # fmt: skip

    fake.on_frame = stop
    with pytest.raises(ComfyError, match=r"interrupted on the server at node 6 \(KSampler\)"):
        run_prompt(http, graph_of(recipe.with_overrides({"steps": 10})), prompt_id=str(uuid.uuid4()), policy=FAST)  # fmt: skip


def test_server_that_chooses_its_own_prompt_id(http: httpx.Client, fake: FakeComfyUI, recipe: Recipe) -> None:  # fmt: skip
    fake.faults.ignore_prompt_id = True
    result = run_prompt(http, graph_of(recipe), prompt_id="mine", policy=FAST)
    assert result.submitted.prompt_id != "mine"
    assert result.entry.prompt_id == result.submitted.prompt_id == fake.state.submissions[0]


def test_missing_uploaded_image_is_a_readable_line(http: httpx.Client, recipe: Recipe) -> None:
    client.upload_image(http, b"\x89PNG not really", "a.png", subfolder="likeness")
    graph = graph_of(recipe)
    graph["90"] = {"class_type": "LoadImage", "inputs": {"image": "likeness/b.png"}}
    save = next(n for n in graph.values() if n["class_type"] == "SaveImage")
    save["inputs"]["images"] = ["90", 0]
    with pytest.raises(ComfyError) as info:
        run_prompt(http, graph, policy=FAST)
    assert len(info.value.lines) == 1
    assert "node 90 (LoadImage): Custom validation failed for node: image - Invalid image file: likeness/b.png" in info.value.lines[0]  # fmt: skip


def test_dropped_socket_resumes_without_resubmitting(recipe: Recipe) -> None:
    with FakeComfyUI(step_delay=0.01) as fake, httpx.Client(base_url=fake.url, timeout=5) as http:
        fake.faults.drop_sockets_at_step = 2
        events: list[NodeProgress] = []
        result = run_prompt(http, graph_of(recipe), prompt_id="job-6", on_progress=events.append, policy=FAST)  # fmt: skip
        assert (result.reconnects, result.resubmits, fake.restart_count) == (1, 0, 0)
        assert fake.state.submissions == ["job-6"] and result.entry.status == "success"
        assert [e.value for e in events if e.max][-2:] == [1, 2]  # the refiner's frames still came


def test_reuse_picks_up_a_finished_or_queued_prompt(http: httpx.Client, fake: FakeComfyUI, recipe: Recipe) -> None:  # fmt: skip
    graph = graph_of(recipe)
    first = run_prompt(http, graph, prompt_id="job-7", policy=FAST, reuse=True)
    again = run_prompt(http, graph, prompt_id="job-7", policy=FAST, reuse=True)
    assert (first.reused, again.reused) == (False, True)
    assert again.entry.outputs == first.entry.outputs
    assert fake.state.submissions == ["job-7"]
    fake.step_delay = 0.02
    client.post_prompt(http, graph_of(recipe, seed=5), client_id="someone-else", prompt_id="job-8")
    quick = RetryPolicy(**{**FAST.__dict__, "idle_poll": 0.2})  # its frames go to the other client
    followed = run_prompt(
        http, graph_of(recipe, seed=5), prompt_id="job-8", policy=quick, reuse=True
    )
    assert followed.entry.status == "success" and not followed.reused
    assert fake.state.submissions == ["job-7", "job-8"]


def test_without_websocket_the_client_polls_history(recipe: Recipe) -> None:
    with FakeComfyUI(websocket=False) as fake, httpx.Client(base_url=fake.url) as http:
        policy = RetryPolicy(**{**FAST.__dict__, "poll_interval": 0.05})
        result = run_prompt(http, graph_of(recipe), prompt_id="job-9", policy=policy)
        assert result.entry.status == "success" and fake.state.submissions == ["job-9"]
        fake.faults.restart_at_step = 2
        fake.faults.restart_keep_history = False
        fake.step_delay = 0.01
        again = run_prompt(http, graph_of(recipe, seed=9), prompt_id="job-10", policy=policy)
        assert again.resubmits == 1 and fake.state.submissions == ["job-9", "job-10", "job-10"]


def test_credentials_go_to_the_websocket_too(fake: FakeComfyUI, recipe: Recipe) -> None:
    with httpx.Client(base_url=fake.url, headers={"Authorization": "Bearer t0k"}) as http:
        run_prompt(http, graph_of(recipe), policy=FAST)
    assert fake.ws_headers[0]["authorization"] == "Bearer t0k"
