"""An in-process test double of Replicate's and fal's HTTP APIs, on 127.0.0.1.

It answers the request and response shapes of Replicate's HTTP API (predictions, trainings,
files, models; problem-details errors ``{"title", "detail", "status"}``) and of fal's queue and
storage APIs (``request_id`` + ``status_url``/``response_url``/``cancel_url``, ``IN_QUEUE`` /
``IN_PROGRESS`` / ``COMPLETED``, ``{"detail": ...}`` errors) as their documentation and their
client libraries (replicate 1.0.7, fal-client 1.0.3) show them. Work advances one state per
status poll. Outputs are real face photos (chosen from the input by a function the test gives),
served by a second server standing in for the CDN, which records whether a token reached it.

Faults (each consumed when it fires): ``drop_next_create`` creates the work and then closes the
connection without an answer; ``rate_limit`` answers 429 with ``Retry-After`` to the next N
API requests; ``fail_next`` makes the next prediction fail with that error; ``hang`` keeps
predictions running until cancelled.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import functools
import hashlib
import io
import json
import secrets
import socket
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from PIL import Image
from safetensors.numpy import save as save_safetensors

from likeness.data import FACES

ASPECT_RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")
FLUX_DEV_LORA_INPUTS = {
    "prompt", "aspect_ratio", "image", "prompt_strength", "num_outputs", "num_inference_steps",
    "guidance", "seed", "output_format", "output_quality", "disable_safety_checker", "go_fast",
    "megapixels", "lora_weights", "lora_scale",
}  # fmt: skip
FAL_FLUX_LORA_INPUTS = {
    "prompt", "image_size", "num_inference_steps", "seed", "loras", "guidance_scale",
    "sync_mode", "num_images", "enable_safety_checker", "output_format", "acceleration",
}  # fmt: skip
TRAINER = "ostris/flux-dev-lora-trainer"
TRAINER_VERSION = "e440909d3512c31646ee2e0c7d6f6f4923224863a6a10c494606e79fb5844497"
MODEL_VERSION = "a" * 64

Chooser = Callable[[dict[str, Any]], str]


# Copied from tests/evaluate/photo_engine.py (photo_png), cached: the test server serves the
# same photos again and again.
@functools.lru_cache(maxsize=16)
def photo_png(name: str) -> bytes:
    """A sample face photo as a plain PNG (like tests/evaluate/photo_engine.py)."""
    with Image.open(FACES / name) as img:
        rgb = img.convert("RGB")
    buf = io.BytesIO()
    rgb.save(buf, format="PNG")
    return buf.getvalue()


def tiny_lora(rank: int = 4, tag: float = 0.0) -> bytes:
    """A small FLUX-shaped LoRA in safetensors (what a trainer would hand back)."""
    rng = np.random.default_rng(int(tag * 1000) + rank)
    tensors = {
        "transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": rng.standard_normal(
            (rank, 16)
        ).astype(np.float32),
        "transformer.single_transformer_blocks.0.attn.to_q.lora_B.weight": np.zeros(
            (16, rank), dtype=np.float32
        ),
    }
    return save_safetensors(tensors, metadata={"format": "pt", "tag": str(tag)})


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"


@dataclass
class Work:
    """A prediction, training or fal request, and how far it has come."""

    kind: str
    id: str
    body: dict[str, Any]
    polls: int = 0
    cancelled: bool = False


@dataclass
class Faults:
    drop_next_create: int = 0
    rate_limit: int = 0
    retry_after: str = "1"
    fail_next: str | None = None
    hang: bool = False
    fal_fail_next: str | None = None


@dataclass
class Log:
    """Every request the servers saw: (method, path, authorization header)."""

    api: list[tuple[str, str, str | None]] = field(default_factory=list)
    cdn: list[tuple[str, str, str | None]] = field(default_factory=list)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class FakeHosted:
    """``with FakeHosted(token="t") as fake:``; ``fake.url`` serves both APIs, ``fake.cdn_url``
    the output files. ``choose(input) -> face file name`` picks each output photo."""

    def __init__(
        self,
        *,
        token: str = "test-token",
        choose: Chooser | None = None,
        polls_to_finish: int = 2,
        training_polls: int = 3,
        checkpoints: int = 0,
    ) -> None:
        self.token = token
        self.choose = choose or (lambda _input: "obama.jpg")
        self.polls_to_finish = polls_to_finish
        self.training_polls = training_polls
        self.checkpoints = checkpoints
        self.faults = Faults()
        self.log = Log()
        self.works: dict[str, Work] = {}
        self.order: list[str] = []
        self.files: dict[str, bytes] = {}
        self.cdn_files: dict[str, tuple[bytes, str]] = {}
        self.models: dict[str, dict[str, Any]] = {
            TRAINER: self._model_obj(TRAINER, TRAINER_VERSION),
            "black-forest-labs/flux-dev-lora": self._model_obj(
                "black-forest-labs/flux-dev-lora", MODEL_VERSION
            ),
        }
        self.lock = threading.RLock()
        self._servers: list[tuple[_Server, threading.Thread]] = []

    # ---- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> FakeHosted:
        api = self._start(self._api_handler())
        cdn = self._start(self._cdn_handler())
        self.url = f"http://127.0.0.1:{api.server_address[1]}"
        self.cdn_url = f"http://127.0.0.1:{cdn.server_address[1]}"
        return self

    def __exit__(self, *exc: object) -> None:
        for server, thread in self._servers:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

    def _start(self, handler: type[BaseHTTPRequestHandler]) -> _Server:
        server = _Server(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
        thread.start()
        self._servers.append((server, thread))
        return server

    # ---- helpers ---------------------------------------------------------------------------
    def _model_obj(self, name: str, version: str) -> dict[str, Any]:
        owner, model = name.split("/")
        return {
            "url": f"https://replicate.com/{name}",
            "owner": owner,
            "name": model,
            "description": "",
            "visibility": "public",
            "latest_version": {"id": version, "created_at": now_iso(), "openapi_schema": {}},
        }

    def _cdn(self, data: bytes, name: str, content_type: str) -> str:
        key = f"{secrets.token_hex(8)}/{name}"
        self.cdn_files[key] = (data, content_type)
        return f"{self.cdn_url}/{key}"

    def _new_id(self) -> str:
        return "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(26))

    def works_of(self, kind: str) -> list[Work]:
        return [self.works[i] for i in self.order if self.works[i].kind == kind]

    # ---- replicate predictions -------------------------------------------------------------
    def _prediction(self, model: str, version: str, inputs: dict[str, Any]) -> Work:
        pid = self._new_id()
        body = {
            "id": pid,
            "model": model,
            "version": version,
            "input": inputs,
            "logs": "",
            "output": None,
            "data_removed": False,
            "error": None,
            "source": "api",
            "status": "starting",
            "created_at": now_iso(),
            "urls": {
                "cancel": f"{self.url}/v1/predictions/{pid}/cancel",
                "get": f"{self.url}/v1/predictions/{pid}",
                "web": f"https://replicate.com/p/{pid}",
            },
        }
        work = Work("prediction", pid, body)
        if self.faults.fail_next is not None:
            work.body["_fail"] = self.faults.fail_next
            self.faults.fail_next = None
        self.works[pid] = work
        self.order.append(pid)
        return work

    def _advance_prediction(self, work: Work) -> None:
        body = work.body
        if body["status"] in ("succeeded", "failed", "canceled"):
            return
        work.polls += 1
        steps = int(body["input"].get("num_inference_steps", 28))
        if work.polls < self.polls_to_finish or self.faults.hang:
            body["status"] = "processing"
            body["started_at"] = body.get("started_at") or now_iso()
            done = min(steps, steps * work.polls // max(self.polls_to_finish, 1))
            body["logs"] = (
                f"Using seed: {body['input'].get('seed')}\n"
                f"{100 * done // steps:3d}%|####      | {done}/{steps} [00:01<00:02, 9.1it/s]"
            )
            return
        body["completed_at"] = now_iso()
        body["metrics"] = {"predict_time": 2.5, "total_time": 3.1}
        fail = body.pop("_fail", None)
        if fail:
            body["status"] = "failed"
            body["error"] = fail
            body["logs"] += "\nTraceback (most recent call last):\n  File predict.py\nRuntimeError"
            return
        name = self.choose(body["input"])
        url = self._cdn(photo_png(name), "out-0.png", "image/png")
        body["status"] = "succeeded"
        body["logs"] += f"\n100%|##########| {steps}/{steps} [00:03<00:00, 9.1it/s]"
        body["output"] = [url]

    # ---- handlers --------------------------------------------------------------------------
    def _api_handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def _problem(self, status: int, title: str, detail: str, **extra: Any) -> None:
                self._send(status, {"title": title, "detail": detail, "status": status, **extra})

            def _drop(self) -> None:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)

            def _handle(self, method: str) -> None:
                parts = urlsplit(self.path)
                path, query = parts.path, parse_qs(parts.query)
                raw = self._body()
                auth = self.headers.get("Authorization")
                with fake.lock:
                    fake.log.api.append((method, path, auth))
                    if fake.faults.rate_limit > 0 and not path.startswith("/upload/"):
                        fake.faults.rate_limit -= 1
                        self._send(
                            429,
                            {"title": "Too Many Requests", "status": 429,
                             "detail": "Request was throttled. Expected available in 1 second."},
                            {"Retry-After": fake.faults.retry_after},
                        )  # fmt: skip
                        return
                    if path.startswith("/v1/"):
                        if auth != f"Bearer {fake.token}":
                            self._problem(
                                401, "Unauthenticated",
                                "You did not pass a valid authentication token",
                            )  # fmt: skip
                            return
                        self._replicate(method, path, query, raw)
                    elif path.startswith("/upload/"):
                        fake.files[path] = raw
                        self._send(200, {})
                    else:
                        if auth != f"Key {fake.token}":
                            self._send(401, {"detail": "Authentication is required"})
                            return
                        self._fal(method, path, query, raw)

            def do_GET(self) -> None:  # noqa: N802
                self._handle("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._handle("POST")

            def do_PUT(self) -> None:  # noqa: N802
                self._handle("PUT")

            # ---- replicate routes ---------------------------------------------------------
            def _replicate(self, method: str, path: str, query: dict, raw: bytes) -> None:
                seg = path.strip("/").split("/")[1:]
                if method == "POST" and seg[0] == "models" and seg[-1] == "predictions":
                    name = "/".join(seg[1:3])
                    if name not in fake.models:
                        self._problem(
                            404, "Not found", "The requested resource could not be found."
                        )
                        return
                    self._create_prediction(name, MODEL_VERSION, json.loads(raw or b"{}"))
                elif method == "POST" and seg == ["predictions"]:
                    body = json.loads(raw or b"{}")
                    self._create_prediction(
                        "black-forest-labs/flux-dev-lora", body.get("version"), body
                    )
                elif method == "GET" and seg == ["predictions"]:
                    self._list("prediction")
                elif method == "GET" and seg[0] == "predictions" and len(seg) == 2:
                    work = fake.works.get(seg[1])
                    if work is None:
                        self._problem(
                            404, "Not found", "The requested resource could not be found."
                        )
                        return
                    fake._advance_prediction(work)
                    self._send(200, _public(work.body))
                elif (
                    method == "POST"
                    and seg[0] in ("predictions", "trainings")
                    and seg[-1] == "cancel"
                ):
                    work = fake.works.get(seg[1])
                    if work is None:
                        self._problem(
                            404, "Not found", "The requested resource could not be found."
                        )
                        return
                    if work.body["status"] not in ("succeeded", "failed"):
                        work.body["status"] = "canceled"
                        work.body["completed_at"] = now_iso()
                        work.cancelled = True
                    self._send(200, _public(work.body))
                elif method == "POST" and seg == ["files"]:
                    self._upload(raw)
                elif method == "GET" and seg[0] == "models" and len(seg) == 3:
                    model = fake.models.get("/".join(seg[1:3]))
                    if model is None:
                        self._problem(
                            404, "Not found", "The requested resource could not be found."
                        )
                        return
                    self._send(200, model)
                elif method == "POST" and seg == ["models"]:
                    body = json.loads(raw)
                    name = f"{body['owner']}/{body['name']}"
                    if name in fake.models:
                        self._problem(409, "Conflict", "A model with that name already exists.")
                        return
                    fake.models[name] = {**fake._model_obj(name, ""), "latest_version": None,
                                         "visibility": body.get("visibility")}  # fmt: skip
                    self._send(201, fake.models[name])
                elif method == "POST" and seg[0] == "models" and seg[-1] == "trainings":
                    self._create_training("/".join(seg[1:3]), seg[4], json.loads(raw))
                elif method == "GET" and seg == ["trainings"]:
                    self._list("training")
                elif method == "GET" and seg[0] == "trainings" and len(seg) == 2:
                    work = fake.works.get(seg[1])
                    if work is None:
                        self._problem(
                            404, "Not found", "The requested resource could not be found."
                        )
                        return
                    fake._advance_training(work)
                    self._send(200, _public(work.body))
                else:
                    self._problem(404, "Not found", "The requested resource could not be found.")

            def _create_prediction(self, model: str, version: Any, body: dict) -> None:
                inputs = body.get("input") or {}
                unknown = sorted(set(inputs) - FLUX_DEV_LORA_INPUTS)
                invalid = [
                    {"type": "additional_property_not_allowed", "field": "input",
                     "description": f"Additional property {k} is not allowed"}
                    for k in unknown
                ]  # fmt: skip
                if "prompt" not in inputs:
                    invalid.append({"type": "required", "field": "input",
                                    "description": "prompt is required"})  # fmt: skip
                if inputs.get("aspect_ratio", "1:1") not in ASPECT_RATIOS:
                    invalid.append({"type": "enum", "field": "input.aspect_ratio",
                                    "description": "aspect_ratio must be one of the following"})  # fmt: skip
                steps = inputs.get("num_inference_steps", 28)
                if not isinstance(steps, int) or not 1 <= steps <= 50:
                    invalid.append({"type": "number_one_of", "field": "input.num_inference_steps",
                                    "description": "Must be less than or equal to 50"})  # fmt: skip
                if invalid:
                    self._problem(
                        422, "Input validation failed",
                        "\n".join(f"- {i['field']}: {i['description']}" for i in invalid),
                        invalid_fields=invalid,
                    )  # fmt: skip
                    return
                work = fake._prediction(model, version or MODEL_VERSION, inputs)
                if fake.faults.drop_next_create > 0:
                    fake.faults.drop_next_create -= 1
                    self._drop()
                    return
                wait = self.headers.get("Prefer", "")
                if wait.startswith("wait"):
                    for _ in range(fake.polls_to_finish + 1):
                        fake._advance_prediction(work)
                self._send(201, _public(work.body))

            def _list(self, kind: str) -> None:
                results = [_public(w.body) for w in reversed(fake.works_of(kind))]
                self._send(200, {"previous": None, "next": None, "results": results})

            def _upload(self, raw: bytes) -> None:
                message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                    b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + raw
                )
                part = next(
                    p
                    for p in message.iter_parts()
                    if p.get_param("name", header="content-disposition") == "content"
                )
                data = part.get_payload(decode=True)
                fid = fake._new_id()
                fake.files[fid] = data
                self._send(201, {
                    "id": fid, "name": part.get_filename(), "content_type": part.get_content_type(),
                    "size": len(data), "etag": hashlib.md5(data).hexdigest(),
                    "checksums": {"sha256": hashlib.sha256(data).hexdigest()},
                    "metadata": {}, "created_at": now_iso(), "expires_at": None,
                    "urls": {"get": f"{fake.url}/v1/files/{fid}"},
                })  # fmt: skip

            def _create_training(self, trainer: str, version: str, body: dict) -> None:
                destination = body.get("destination")
                if destination not in fake.models:
                    self._problem(
                        404, "Not found", "The specified training destination does not exist"
                    )
                    return
                inputs = body.get("input") or {}
                url = inputs.get("input_images", "")
                if not str(url).startswith(f"{fake.url}/v1/files/"):
                    self._problem(422, "Input validation failed", "input_images must be a URL",
                                  invalid_fields=[])  # fmt: skip
                    return
                tid = fake._new_id()
                work = Work("training", tid, {
                    "id": tid, "model": trainer, "version": version, "destination": destination,
                    "input": inputs, "logs": "", "output": None, "error": None,
                    "status": "starting", "created_at": now_iso(),
                    "urls": {"get": f"{fake.url}/v1/trainings/{tid}",
                             "cancel": f"{fake.url}/v1/trainings/{tid}/cancel"},
                })  # fmt: skip
                fake.works[tid] = work
                fake.order.append(tid)
                if fake.faults.drop_next_create > 0:
                    fake.faults.drop_next_create -= 1
                    self._drop()
                    return
                self._send(201, _public(work.body))

            # ---- fal routes ----------------------------------------------------------------
            def _fal(self, method: str, path: str, query: dict, raw: bytes) -> None:
                if method == "POST" and path == "/storage/upload/initiate":
                    body = json.loads(raw)
                    key = f"{secrets.token_hex(6)}/{body['file_name']}"
                    self._send(200, {"upload_url": f"{fake.url}/upload/{key}",
                                     "file_url": f"{fake.cdn_url}/files/{key}"})  # fmt: skip
                    return
                seg = path.strip("/").split("/")
                app = "/".join(seg[:2])
                if method == "POST" and len(seg) == 2:
                    self._fal_submit(app, json.loads(raw or b"{}"))
                    return
                if len(seg) < 4 or seg[2] != "requests":
                    self._send(404, {"detail": "Not Found"})
                    return
                work = fake.works.get(seg[3])
                if work is None:
                    self._send(404, {"detail": "Request not found"})
                    return
                tail = seg[4] if len(seg) > 4 else ""
                if method == "GET" and tail == "status":
                    self._send(200, fake._fal_status(work, "logs" in query))
                elif method == "GET" and tail == "":
                    if work.body["status"] != "COMPLETED":
                        self._send(400, {"detail": "Request is still in progress"})
                    elif work.body.get("_error"):
                        self._send(422, {"detail": [{"loc": ["body", "loras", 0, "path"],
                                                     "msg": work.body["_error"],
                                                     "type": "value_error"}]})  # fmt: skip
                    else:
                        self._send(200, work.body["_result"])
                elif method == "PUT" and tail == "cancel":
                    if work.body["status"] == "COMPLETED":
                        self._send(400, {"status": "ALREADY_COMPLETED"})
                    else:
                        work.cancelled = True
                        work.body["status"] = "COMPLETED"
                        work.body["_error"] = "Request was cancelled"
                        self._send(202, {"status": "CANCELLATION_REQUESTED"})
                else:
                    self._send(405, {"detail": "Method Not Allowed"})

            def _fal_submit(self, app: str, inputs: dict) -> None:
                if app == "fal-ai/flux-lora":
                    unknown = sorted(set(inputs) - FAL_FLUX_LORA_INPUTS)
                    if unknown or "prompt" not in inputs:
                        self._send(422, {"detail": [{"loc": ["body", unknown[0] if unknown else "prompt"],
                                                     "msg": "extra fields not permitted" if unknown else "field required",
                                                     "type": "value_error"}]})  # fmt: skip
                        return
                elif app != "fal-ai/flux-lora-fast-training":
                    self._send(404, {"detail": f"Application '{app}' not found"})
                    return
                rid = secrets.token_hex(16)
                base = f"{fake.url}/{app}/requests/{rid}"
                work = Work("fal:" + app, rid, {"status": "IN_QUEUE", "input": inputs})
                if fake.faults.fal_fail_next is not None:
                    work.body["_fail"] = fake.faults.fal_fail_next
                    fake.faults.fal_fail_next = None
                fake.works[rid] = work
                fake.order.append(rid)
                if fake.faults.drop_next_create > 0:
                    fake.faults.drop_next_create -= 1
                    self._drop()
                    return
                self._send(200, {
                    "request_id": rid, "response_url": base, "status_url": f"{base}/status",
                    "cancel_url": f"{base}/cancel", "queue_position": 0,
                })  # fmt: skip

            def log_request(self, *args: Any) -> None:
                pass

        return Handler

    def _fal_status(self, work: Work, with_logs: bool) -> dict[str, Any]:
        body = work.body
        training = work.kind.endswith("training")
        if body["status"] != "COMPLETED":
            work.polls += 1
            finish = self.training_polls if training else self.polls_to_finish
            if work.polls == 1:
                body["status"] = "IN_QUEUE"
            elif work.polls < finish + 1 or (self.faults.hang and not training):
                body["status"] = "IN_PROGRESS"
            else:
                body["status"] = "COMPLETED"
                if body.pop("_fail", None):
                    body["_error"] = "Could not download the LoRA weights"
                elif training:
                    body["_result"] = {
                        "diffusers_lora_file": {
                            "url": self._cdn(tiny_lora(), "pytorch_lora_weights.safetensors",
                                             "application/octet-stream"),
                            "content_type": "application/octet-stream",
                            "file_name": "pytorch_lora_weights.safetensors",
                            "file_size": len(tiny_lora()),
                        },
                        "config_file": {"url": self._cdn(b"{}", "config.json", "application/json"),
                                        "content_type": "application/json",
                                        "file_name": "config.json", "file_size": 2},
                    }  # fmt: skip
                else:
                    name = self.choose(body["input"])
                    png = photo_png(name)
                    with Image.open(io.BytesIO(png)) as img:
                        width, height = img.size
                    body["_result"] = {
                        "images": [{"url": self._cdn(png, "image.png", "image/png"),
                                    "width": width, "height": height,
                                    "content_type": "image/png"}],
                        "timings": {"inference": 1.7},
                        "seed": body["input"].get("seed"),
                        "has_nsfw_concepts": [False],
                        "prompt": body["input"].get("prompt"),
                    }  # fmt: skip
        out: dict[str, Any] = {"status": body["status"], "request_id": work.id}
        if body["status"] == "IN_QUEUE":
            out["queue_position"] = 0
        if with_logs:
            steps = int(body["input"].get("num_inference_steps", body["input"].get("steps", 28)))
            out["logs"] = [{"message": f" 50%|#####     | {steps // 2}/{steps}", "level": "INFO",
                            "source": "user", "timestamp": now_iso()}]  # fmt: skip
        if body["status"] == "COMPLETED":
            out["metrics"] = {"inference_time": 1.7}
        return out

    # ---- replicate trainings ---------------------------------------------------------------
    def _advance_training(self, work: Work) -> None:
        body = work.body
        if body["status"] in ("succeeded", "failed", "canceled"):
            return
        work.polls += 1
        steps = int(body["input"].get("steps", 1000))
        if work.polls < self.training_polls:
            body["status"] = "processing"
            done = steps * work.polls // self.training_polls
            body["logs"] = (
                "Preparing dataset\n"
                f"flux_train_replicate: {100 * done // steps:3d}%|###  | {done}/{steps} "
                "[00:10<00:20, 1.5it/s, lr: 4.0e-04 loss: 3.1e-01]"
            )
            return
        tar = io.BytesIO()
        with tarfile.open(fileobj=tar, mode="w") as archive:
            files = {"output/flux_train_replicate/lora.safetensors": tiny_lora(tag=1.0)}
            for i in range(self.checkpoints):
                files[f"output/flux_train_replicate/lora_{(i + 1) * 250:09d}.safetensors"] = (
                    tiny_lora(tag=0.1 * (i + 1))
                )
            files["output/flux_train_replicate/config.yaml"] = b"job: extension\n"
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        new_version = secrets.token_hex(32)
        body["status"] = "succeeded"
        body["completed_at"] = now_iso()
        body["metrics"] = {"predict_time": 600.0}
        body["output"] = {
            "version": f"{body['destination']}:{new_version}",
            "weights": self._cdn(tar.getvalue(), "trained_model.tar", "application/x-tar"),
        }
        self.models[body["destination"]]["latest_version"] = {"id": new_version}

    def _cdn_handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                key = self.path.lstrip("/")
                with fake.lock:
                    fake.log.cdn.append(("GET", self.path, self.headers.get("Authorization")))
                    found = fake.cdn_files.get(key) or fake.cdn_files.get(
                        key.removeprefix("files/")
                    )
                if found is None:
                    data, kind, status = b"not found", "text/plain", 404
                else:
                    (data, kind), status = found, 200
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


def _public(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if not k.startswith("_")}
