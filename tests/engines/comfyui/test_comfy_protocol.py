"""Parsing of the recorded server bytes, and the one-line error messages made from them."""

from __future__ import annotations

import pytest
from fake_server import transcript

from likeness.engines.comfyui.errors import (
    ComfyError,
    execution_error_line,
    node_errors_lines,
    prompt_error_lines,
)
from likeness.engines.comfyui.protocol import (
    ImageRef,
    parse_frame,
    parse_history,
    parse_queue,
    parse_submitted,
    parse_system_stats,
    parse_uploaded,
)


def body(name: str) -> dict:
    return transcript(name)["response"]["body"]


def test_system_stats() -> None:
    info = parse_system_stats(body("01_system_stats"))
    assert info.comfyui_version == "0.3.64"
    assert info.pytorch_version == "2.13.0+cpu"
    assert [d.name for d in info.devices] == ["cpu"]
    assert info.devices[0].vram_total == 25276510208
    assert info.to_dict()["devices"][0]["vram_free"] == 24032251904


def test_history_entry() -> None:
    entry = parse_history(body("23_history_by_id"), "92af87f8-caa8-47ea-b654-7dee81107f7e")
    assert entry is not None
    assert entry.status == "success" and entry.completed
    assert entry.outputs == {"9": (ImageRef("apitest_00001_.png", "", "output"),)}
    assert entry.graph["3"]["class_type"] == "KSampler"
    assert entry.failure_line() is None
    start, end = entry.timestamp("execution_start"), entry.timestamp("execution_success")
    assert start is not None and end is not None and 8.0 < end - start < 10.0
    assert (
        parse_history(body("28_history_unknown_id"), "00000000-0000-0000-0000-000000000000") is None
    )


def test_queue_submitted_upload() -> None:
    queue = parse_queue(body("52_queue_while_running"))
    assert queue.running == ("ba298bac-e378-4b85-a704-09ad04ee3781",)
    assert "ba298bac-e378-4b85-a704-09ad04ee3781" in queue
    assert len(queue.pending) == 2
    assert parse_queue(body("07_queue_idle")).running == ()
    sub = parse_submitted(body("P106_post_prompt_custom_prompt_id"))
    assert (sub.prompt_id, sub.number, dict(sub.node_errors)) == ("my-own-prompt-id-123", 4, {})
    up = parse_uploaded(body("16_upload_image_same_name"))
    assert up.name == "api_upload (1).png" and up.load_name == "api_upload (1).png"
    assert parse_uploaded({"name": "a.png", "subfolder": "s"}).load_name == "s/a.png"


def test_missing_field_names_the_field() -> None:
    with pytest.raises(ComfyError, match="no 'prompt_id'"):
        parse_submitted({"number": 1})


def test_frames_of_a_recorded_run() -> None:
    frames = [parse_frame(__import__("json").dumps(f["msg"])) for f in transcript("ws_txt2img_2ksampler") if f["kind"] == "text"]  # fmt: skip
    assert all(f is not None for f in frames)
    progress = [(f.data["node"], f.data["value"], f.data["max"]) for f in frames if f.type == "progress"]  # fmt: skip
    assert progress == [("3", 1, 2), ("3", 2, 2), ("10", 1, 2), ("10", 2, 2)]
    end = frames[-1]
    assert end.type == "executing" and end.data["node"] is None
    assert end.prompt_id == "92af87f8-caa8-47ea-b654-7dee81107f7e"
    assert parse_frame(b"\x00\x00\x00\x01\x00\x00\x00\x01\xff\xd8") is None
    assert parse_frame("not json") is None


EXPECTED_LINES = {
    "32_post_prompt_invalid_missing_input": ["node 6 (CLIPTextEncode): required input 'text' is missing"],
    "33_post_prompt_invalid_unknown_class": [
        "ComfyUI refused the prompt: Cannot execute because node NoSuchNodeClass does not exist. (Node ID '#11')"
    ],
    "34_post_prompt_invalid_bad_enum": [
        "node 3 (KSampler): sampler_name 'bogus_sampler' is not available on the server"
    ],
    "35_post_prompt_invalid_unknown_ckpt": [
        "node 4 (CheckpointLoaderSimple): ckpt_name 'nope.safetensors' is not available on the server; "
        "the server has: tiny_sd15_micro_UNLOADABLE.safetensors, tiny_sd15_slim.safetensors"
    ],
    "36_post_prompt_invalid_out_of_range": [
        "node 3 (KSampler): steps: Value 0 smaller than min of 1",
        "node 10 (KSampler): denoise: Value 2.0 bigger than max of 1.0",
    ],
    "37_post_prompt_invalid_wrong_value_type": [
        "node 3 (KSampler): steps 'many' has the wrong type (Failed to convert an input value to a INT value)"
    ],
    "38_post_prompt_invalid_link_type_mismatch": [
        "node 3 (KSampler): input 'model' is linked to a CLIP output but needs MODEL"
    ],
    "39_post_prompt_invalid_link_to_missing_node": [
        "node 8 (VAEDecode): input 'images' links to a node that cannot be validated (KeyError: '99')"
    ],
    "40_post_prompt_invalid_no_output_node": ["ComfyUI refused the prompt: Prompt has no outputs"],
    "41_post_prompt_invalid_bad_link_format": [
        "node 6 (CLIPTextEncode): input 'clip' must be a link [node_id, slot_index], not ['4', 1, 2]"
    ],
    "42_post_prompt_invalid_missing_class_type": [
        "ComfyUI refused the prompt: Cannot execute because a node is missing the class_type property. (Node ID '#7')"
    ],
    "43_invalid_no_prompt_key": ["ComfyUI refused the prompt: No prompt provided (No prompt provided)"],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(EXPECTED_LINES))
def test_every_recorded_refusal_becomes_readable_lines(name: str) -> None:
    lines = prompt_error_lines(body(name))
    assert lines == EXPECTED_LINES[name]
    assert all("\n" not in line for line in lines)


def test_node_errors_lines_sort_numerically() -> None:
    errors = body("36_post_prompt_invalid_out_of_range")["node_errors"]
    assert [line.split(" ")[1] for line in node_errors_lines(errors)] == ["3", "10"]


def test_execution_error_is_one_line() -> None:
    frame = next(
        f["msg"]["data"] for f in transcript("ws_runtime_error") if f.get("msg", {}).get("type") == "execution_error"
    )  # fmt: skip
    line = execution_error_line(frame)
    assert line == (
        "node 4 (CheckpointLoaderSimple) failed while running: RuntimeError: ERROR: Could not "
        "detect model type of: /srv/ComfyUI/models/checkpoints/tiny_sd15_micro_UNLOADABLE.safetensors"
    )
    assert str(ComfyError([line])) == line


def test_a_malformed_queue_answer_is_one_comfy_error():
    import pytest

    from likeness.engines.comfyui.errors import ComfyError
    from likeness.engines.comfyui.protocol import parse_queue

    for body in (
        {"queue_running": [[1]], "queue_pending": []},
        {"queue_running": 3, "queue_pending": []},
    ):
        with pytest.raises(ComfyError, match="/queue"):
            parse_queue(body)
    assert "p1" in parse_queue({"queue_running": [[0, "p1", {}, {}, []]], "queue_pending": []})
