"""The test server answers like the recorded ComfyUI 0.3.64: same status, headers, bodies."""

from __future__ import annotations

import io
import json
import time

import httpx
import pytest
from fake_server import FakeComfyUI, transcript
from PIL import Image
from websockets.sync.client import connect

INVALID = [
    "32_post_prompt_invalid_missing_input",
    "33_post_prompt_invalid_unknown_class",
    "34_post_prompt_invalid_bad_enum",
    "35_post_prompt_invalid_unknown_ckpt",
    "36_post_prompt_invalid_out_of_range",
    "37_post_prompt_invalid_wrong_value_type",
    "38_post_prompt_invalid_link_type_mismatch",
    "39_post_prompt_invalid_link_to_missing_node",
    "40_post_prompt_invalid_no_output_node",
    "41_post_prompt_invalid_bad_link_format",
    "42_post_prompt_invalid_missing_class_type",
    "43_invalid_no_prompt_key",
]


def replay(http: httpx.Client, name: str) -> tuple[httpx.Response, dict]:
    t = transcript(name)
    req = t["request"]
    body = req["body"]
    kwargs = {"json": body} if isinstance(body, dict) else {}
    response = http.request(req["method"], req["path"], params=req.get("query"), **kwargs)
    return response, t["response"]


@pytest.mark.parametrize("name", INVALID)
def test_validation_errors_are_byte_for_byte(http: httpx.Client, name: str) -> None:
    response, recorded = replay(http, name)
    assert response.status_code == recorded["status"] == 400
    assert response.headers["content-type"] == recorded["headers"]["Content-Type"]
    assert response.json() == recorded["body"]
    if "/srv/" not in response.text:  # the recorder shortened server paths to /srv/...
        assert response.headers["content-length"] == recorded["headers"]["Content-Length"]


@pytest.mark.parametrize(
    "name",
    ["01_system_stats", "06_object_info_unknown_node", "07_queue_idle", "11_models_checkpoints",
     "28_history_unknown_id"],
)  # fmt: skip
def test_simple_get_bodies(http: httpx.Client, name: str) -> None:
    response, recorded = replay(http, name)
    assert response.status_code == recorded["status"]
    assert response.json() == recorded["body"]
    assert response.headers["content-length"] == recorded["headers"]["Content-Length"]


def test_unknown_model_folder_is_404(http: httpx.Client) -> None:
    response, recorded = replay(http, "13_models_unknown_folder")
    assert response.status_code == recorded["status"] == 404
    assert response.content == b""


def test_view_missing_404_and_traversal_400(http: httpx.Client) -> None:
    for name in ("26_view_missing_file", "27_view_path_traversal"):
        response, recorded = replay(http, name)
        assert response.status_code == recorded["status"]
        assert response.content == b""
    assert http.get("/view", params={"filename": "x.png", "subfolder": "../..", "type": "output"}).status_code == 403  # fmt: skip


def test_upload_renames_on_clash_and_keeps_identical_bytes(http: httpx.Client) -> None:
    first = http.post("/upload/image", files={"image": ("api_upload.png", b"one")},
                      data={"type": "input", "overwrite": "true"})  # fmt: skip
    assert first.json() == transcript("15_upload_image")["response"]["body"]
    clash = http.post("/upload/image", files={"image": ("api_upload.png", b"two")}, data={"type": "input"})  # fmt: skip
    assert clash.json() == transcript("16_upload_image_same_name")["response"]["body"]
    same = http.post("/upload/image", files={"image": ("api_upload.png", b"one")}, data={"type": "input"})  # fmt: skip
    assert same.json() == transcript("17_upload_image_same_name_same")["response"]["body"]
    missing = http.post("/upload/image", files={"notimage": ("x.png", b"x")}, data={"type": "input"})  # fmt: skip
    assert missing.status_code == transcript("19_upload")["response"]["status"] == 400
    names = http.get("/object_info/LoadImage").json()["LoadImage"]["input"]["required"]["image"][0]
    assert names == ["api_upload (1).png", "api_upload.png"]


def test_foreign_origin_is_refused(http: httpx.Client, fake: FakeComfyUI) -> None:
    t = transcript("X208_post_prompt_cross_origin")
    response = http.post("/prompt", json=t["request"]["body"], headers={"Origin": "http://evil.example"})  # fmt: skip
    assert response.status_code == t["response"]["status"] == 403
    assert fake.state.submissions == []
    same = http.post("/prompt", json=t["request"]["body"], headers={"Origin": fake.url})
    assert same.status_code == 200


def test_two_pass_run_frames_follow_the_recording(http: httpx.Client, fake: FakeComfyUI) -> None:
    """Frame types in order, payload keys and the end marker match ws_txt2img_2ksampler."""
    body = transcript("22_post_prompt_txt2img_2ksampler")["request"]["body"]
    recorded = [f["msg"] for f in transcript("ws_txt2img_2ksampler") if f["kind"] == "text"]
    with connect(fake.url.replace("http", "ws") + f"/ws?clientId={body['client_id']}") as ws:
        hello = json.loads(ws.recv(timeout=5))
        assert hello == transcript("ws_connect_initial")[0]["msg"]
        submitted = http.post("/prompt", json=body).json()
        assert set(submitted) == set(transcript("22_post")["response"]["body"])
        frames = []
        while True:
            msg = json.loads(ws.recv(timeout=5))
            frames.append(msg)
            if msg["type"] == "executing" and msg["data"]["node"] is None:
                break

    def shape(msgs: list[dict]) -> list[tuple]:
        return [
            (m["type"], tuple(sorted(m["data"])), m["data"].get("node"))
            for m in msgs
            if m["type"] not in ("progress_state", "executing")
        ]

    assert shape(frames) == shape(recorded)
    executing = [m["data"]["node"] for m in frames if m["type"] == "executing"]
    assert sorted(executing[:-1]) == sorted(m["data"]["node"] for m in recorded if m["type"] == "executing" and m["data"]["node"])  # fmt: skip
    assert frames[-1]["data"] == {"node": None, "prompt_id": submitted["prompt_id"]}
    entry = http.get(f"/history/{submitted['prompt_id']}").json()[submitted["prompt_id"]]
    rec = transcript("23_history_by_id")["response"]["body"]
    rec_entry = next(iter(rec.values()))
    assert set(entry) == set(rec_entry)
    assert entry["outputs"] == rec_entry["outputs"]
    assert entry["prompt"][2] == rec_entry["prompt"][2]
    assert entry["prompt"][3] == rec_entry["prompt"][3]
    assert [m[0] for m in entry["status"]["messages"]] == [m[0] for m in rec_entry["status"]["messages"]]  # fmt: skip
    png = http.get("/view", params={"filename": "apitest_00001_.png", "subfolder": "", "type": "output"})  # fmt: skip
    view = transcript("24_view_output")["response"]["headers"]
    assert png.headers["content-type"] == view["Content-Type"]
    assert png.headers["content-disposition"] == view["Content-Disposition"]
    with Image.open(io.BytesIO(png.content)) as img:
        assert img.size == (64, 64)
        assert json.loads(img.text["prompt"]) == body["prompt"]
        assert json.loads(img.text["workflow"]) == body["extra_data"]["extra_pnginfo"]["workflow"]


def test_runtime_error_frame_matches_recording(http: httpx.Client, fake: FakeComfyUI) -> None:
    body = transcript("45_post_prompt_runtime_error")["request"]["body"]
    body["client_id"] = "c1"
    recorded = next(
        f["msg"] for f in transcript("ws_runtime_error") if f.get("msg", {}).get("type") == "execution_error"
    )  # fmt: skip
    with connect(fake.url.replace("http", "ws") + "/ws?clientId=c1") as ws:
        http.post("/prompt", json=body)
        frames = []
        while not frames or frames[-1] != "end":
            msg = json.loads(ws.recv(timeout=5))
            if msg["type"] == "execution_error":
                assert set(msg["data"]) == set(recorded["data"])
                assert msg["data"]["exception_message"] == recorded["data"]["exception_message"]
                assert msg["data"]["node_type"] == recorded["data"]["node_type"]
            frames.append("end" if msg["type"] == "executing" and msg["data"]["node"] is None else msg["type"])  # fmt: skip
    assert "execution_error" in frames and "execution_success" not in frames


def test_reconnect_mid_run_replays_the_current_node(fake: FakeComfyUI, http: httpx.Client) -> None:
    recorded = [f["msg"] for f in transcript("ws_reconnect_same_clientId")[:2]]
    fake.step_delay = 0.05
    body = transcript("22_post_prompt_txt2img_2ksampler")["request"]["body"]
    body["client_id"] = "again"
    body["prompt"]["3"]["inputs"]["steps"] = 20
    http.post("/prompt", json=body)
    for _ in range(200):
        if fake.state.last_node_id == "3":
            break
        time.sleep(0.01)
    with connect(fake.url.replace("http", "ws") + "/ws?clientId=again") as ws:
        first = json.loads(ws.recv(timeout=5))
        second = json.loads(ws.recv(timeout=5))
    assert first["data"]["sid"] == "again" and set(first["data"]) == set(recorded[0]["data"])
    assert second == recorded[1] == {"type": "executing", "data": {"node": "3"}}
    http.post("/interrupt")
