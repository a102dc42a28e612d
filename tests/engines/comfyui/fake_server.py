"""An in-process ComfyUI 0.3.64 test double that speaks real HTTP and WebSocket.

It reproduces the behaviour recorded in tests/data/comfyui (response bodies, status codes,
validation error bodies, the WebSocket frame sequence and its `executing: null` end marker) and
"executes" a graph by writing solid-colour PNGs of the requested size with a `prompt` text chunk,
as the real SaveImage does. Faults can be injected: a restart mid-run (connections dropped, queue
forgotten, history kept or lost), a slow `/prompt` answer (the response is lost to a client
timeout after the prompt was queued) and a runtime error in a chosen node class.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import io
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from PIL import Image, PngImagePlugin
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

DATA = Path(__file__).resolve().parents[2] / "data" / "comfyui"

DEFAULT_MODELS = {
    "checkpoints": ["tiny_sd15_micro_UNLOADABLE.safetensors", "tiny_sd15_slim.safetensors"],
    "loras": ["tiny_sd15_slim_lora.safetensors"],
    "upscale_models": [],
    "controlnet": [],
}
# Which object_info input lists which model folder.
MODEL_INPUTS = {
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
    ("LoraLoader", "lora_name"): "loras",
    ("UpscaleModelLoader", "model_name"): "upscale_models",
    ("ControlNetLoader", "control_net_name"): "controlnet",
    ("InstantIDModelLoader", "instantid_file"): "instantid",
    ("UltralyticsDetectorProvider", "model_name"): "ultralytics",
    ("SAMLoader", "model_name"): "sams",
}
MODEL_FOLDERS = [
    "checkpoints", "configs", "loras", "vae", "text_encoders", "diffusion_models", "clip_vision",
    "style_models", "embeddings", "diffusers", "vae_approx", "controlnet", "gligen",
    "upscale_models", "custom_nodes", "hypernetworks", "photomaker", "classifiers",
    "model_patches", "audio_encoders",
]  # fmt: skip
JSON_TYPE = "application/json; charset=utf-8"


def transcript(name: str) -> Any:
    """A recorded exchange or frame log from tests/data/comfyui (by file name prefix)."""
    matches = sorted(DATA.glob(f"{name}*.json"))
    if not matches:
        raise FileNotFoundError(f"no transcript {name} in {DATA}")
    return json.loads(matches[0].read_text())


def custom_nodes() -> dict[str, Any]:
    """Object-info entries of the custom node packs the graphs use (see the data README)."""
    return json.loads((DATA / "object_info_custom_nodes.json").read_text())


def json_response(body: Any, status: int = 200) -> Response:
    """aiohttp's json_response: default json.dumps separators, utf-8 charset."""
    return Response(json.dumps(body), status_code=status, headers={"Content-Type": JSON_TYPE})


def empty(status: int = 200) -> Response:
    return Response(b"", status_code=status)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class State:
    """Everything that outlives one server process: history (optionally), files, counters."""

    object_info: dict[str, Any]
    models: dict[str, list[str]]
    history: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[tuple[str, str, str], bytes] = field(default_factory=dict)
    queue: list[list[Any]] = field(default_factory=list)
    running: list[Any] | None = None
    number: int = 0
    submissions: list[str] = field(default_factory=list)
    executions: list[str] = field(default_factory=list)
    free_requests: list[dict[str, Any]] = field(default_factory=list)
    last_node_id: str | None = None
    running_client: str | None = None
    cache: dict[str, dict[str, Any] | None] = field(default_factory=dict)


@dataclass
class Faults:
    """Fault injection switches; each is consumed when it fires."""

    restart_at_step: int | None = None  # restart when the first sampler reaches this step
    restart_keep_history: bool = True
    restart_downtime: float = 0.2
    restart_after_success: bool = False  # restart after execution_success, before the end marker
    drop_sockets_at_step: int | None = None  # close every WebSocket; the server keeps running
    prompt_response_delay: float = 0.0  # queue the prompt, then answer this late (once)
    fail_class: tuple[str, str, str] | None = None  # (class_type, exception_type, message)
    ignore_prompt_id: bool = False  # behave like servers that always choose the id


class FakeComfyUI:
    """Start with `with FakeComfyUI() as fake: ...`; `fake.url` is `http://127.0.0.1:PORT`."""

    def __init__(
        self,
        *,
        step_delay: float = 0.002,
        models: dict[str, list[str]] | None = None,
        extra_nodes: dict[str, Any] | None = None,
        send_previews: bool = False,
        websocket: bool = True,
    ) -> None:
        info = json.loads((DATA / "object_info_core.json").read_text())
        info.update(copy.deepcopy(extra_nodes or {}))
        self.state = State(object_info=info, models={**DEFAULT_MODELS, **(models or {})})
        self.faults = Faults()
        self.step_delay = step_delay
        self.send_previews = send_previews
        self.websocket = websocket  # False: refuse upgrades, like some proxies in front of it
        self.system_stats = json.loads((DATA / "01_system_stats.json").read_text())["response"][
            "body"
        ]
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._restarts: list[threading.Thread] = []
        self.restart_count = 0
        self.on_frame: Callable[[str, dict[str, Any]], None] | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeComfyUI:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for t in self._restarts:
            t.join(timeout=5)
        self.stop()

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted sockets inherit this; without it every answer waits ~40 ms (Nagle + delayed ACK).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        runtime = Runtime(self)
        config = uvicorn.Config(
            runtime.app,
            log_level="warning",
            ws="websockets-sansio",
            lifespan="on",
            timeout_graceful_shutdown=0.2,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("fake ComfyUI did not start")
            time.sleep(0.005)
        self._server, self._thread = server, thread
        self._sock = sock

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            assert self._thread is not None
            self._thread.join(timeout=10)
            self._sock.close()
            self._server = None

    def restart(self, *, keep_history: bool = True, downtime: float = 0.2) -> None:
        """Stop (dropping every connection, forgetting the queue), wait, start on the same port."""
        self.stop()
        st = self.state
        st.queue.clear()
        st.running = None
        st.last_node_id = None
        st.running_client = None
        st.number = 0
        st.cache.clear()
        if not keep_history:
            st.history.clear()
        time.sleep(downtime)
        self.restart_count += 1
        self.start()

    def restart_in_background(self, *, keep_history: bool, downtime: float) -> None:
        t = threading.Thread(
            target=self.restart, kwargs={"keep_history": keep_history, "downtime": downtime}
        )
        self._restarts.append(t)
        t.start()

    # ---- helpers for tests -----------------------------------------------------------------
    def add_file(self, kind: str, subfolder: str, name: str, data: bytes) -> None:
        self.state.files[(kind, subfolder, name)] = data


class Runtime:
    """One server process: the Starlette app, its sockets and its worker task."""

    def __init__(self, fake: FakeComfyUI) -> None:
        self.fake = fake
        self.st = fake.state
        self.sockets: dict[str, list[WebSocket]] = {}
        self.wake: asyncio.Event | None = None
        self.interrupt = False
        self.worker: asyncio.Task[None] | None = None
        routes: list[Any] = []
        for prefix in ("", "/api"):
            routes += [
                Route(prefix + "/system_stats", self.system_stats),
                Route(prefix + "/object_info", self.object_info),
                Route(prefix + "/object_info/{node_class}", self.object_info_one),
                Route(prefix + "/models", self.models),
                Route(prefix + "/models/{folder}", self.models_folder),
                Route(prefix + "/prompt", self.prompt_get, methods=["GET"]),
                Route(prefix + "/prompt", self.prompt_post, methods=["POST"]),
                Route(prefix + "/queue", self.queue_get, methods=["GET"]),
                Route(prefix + "/queue", self.queue_post, methods=["POST"]),
                Route(prefix + "/history", self.history_get, methods=["GET"]),
                Route(prefix + "/history", self.history_post, methods=["POST"]),
                Route(prefix + "/history/{prompt_id}", self.history_one),
                Route(prefix + "/view", self.view),
                Route(prefix + "/upload/image", self.upload_image, methods=["POST"]),
                Route(prefix + "/interrupt", self.interrupt_post, methods=["POST"]),
                Route(prefix + "/free", self.free, methods=["POST"]),
                WebSocketRoute(prefix + "/ws", self.ws),
            ]
        self.app = OriginCheck(Starlette(routes=routes, lifespan=self.lifespan))

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette):  # noqa: ANN201
        self.wake = asyncio.Event()
        self.worker = asyncio.create_task(self.work())
        try:
            yield
        finally:
            self.worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.worker

    # ---- object info and models ------------------------------------------------------------
    def current_object_info(self) -> dict[str, Any]:
        info = copy.deepcopy(self.st.object_info)
        for (cls, name), folder in MODEL_INPUTS.items():
            if cls not in info:
                continue
            files = sorted(self.st.models.get(folder, []))
            spec = info[cls]["input"]["required"][name]
            if spec[0] == "COMBO":
                spec[1]["options"] = files
            else:
                spec[0] = files
        if "LoadImage" in info:
            # Like LoadImage.INPUT_TYPES: only the top level of the input folder is listed.
            names = sorted(n for (k, sub, n) in self.st.files if k == "input" and not sub)
            info["LoadImage"]["input"]["required"]["image"][0] = names or ["example.png"]
        return info

    async def system_stats(self, request: Request) -> Response:
        return json_response(self.fake.system_stats)

    async def object_info(self, request: Request) -> Response:
        return json_response(self.current_object_info())

    async def object_info_one(self, request: Request) -> Response:
        cls = request.path_params["node_class"]
        info = self.current_object_info()
        return json_response({cls: info[cls]} if cls in info else {})

    async def models(self, request: Request) -> Response:
        return json_response(MODEL_FOLDERS)

    async def models_folder(self, request: Request) -> Response:
        folder = request.path_params["folder"]
        if folder not in MODEL_FOLDERS:
            return empty(404)
        return json_response(sorted(self.st.models.get(folder, [])))

    # ---- queue and prompts -----------------------------------------------------------------
    def queue_remaining(self) -> int:
        return len(self.st.queue) + (1 if self.st.running is not None else 0)

    def input_exists(self, name: str) -> bool:
        sub, _, base = name.rpartition("/")
        return ("input", sub, base) in self.st.files

    async def prompt_get(self, request: Request) -> Response:
        return json_response({"exec_info": {"queue_remaining": self.queue_remaining()}})

    async def prompt_post(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return Response(
                "500 Internal Server Error\n\nServer got itself in trouble",
                status_code=500,
                media_type="text/plain",
            )
        if "prompt" not in body:
            return json_response(
                error_body("no_prompt", "No prompt provided", "No prompt provided"), 400
            )
        prompt = body["prompt"]
        ok, error, outputs, node_errors = validate_prompt(
            prompt, self.current_object_info(), input_exists=self.input_exists
        )
        if not ok:
            return json_response({"error": error, "node_errors": node_errors}, 400)
        chosen = None if self.fake.faults.ignore_prompt_id else body.get("prompt_id")
        prompt_id = str(chosen or uuid.uuid4())
        number = self.st.number
        self.st.number += 1
        extra_data = dict(body.get("extra_data") or {})
        if body.get("client_id") is not None:
            extra_data["client_id"] = body["client_id"]
        self.st.queue.append([number, prompt_id, prompt, extra_data, outputs])
        self.st.submissions.append(prompt_id)
        await self.broadcast_status()
        assert self.wake is not None
        self.wake.set()
        delay, self.fake.faults.prompt_response_delay = self.fake.faults.prompt_response_delay, 0.0
        if delay:
            await asyncio.sleep(delay)
        return json_response({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})

    async def queue_get(self, request: Request) -> Response:
        running = [self.st.running] if self.st.running is not None else []
        return json_response({"queue_running": running, "queue_pending": list(self.st.queue)})

    async def queue_post(self, request: Request) -> Response:
        body = await read_json(request)
        if body.get("clear"):
            self.st.queue.clear()
        for pid in body.get("delete", []):
            self.st.queue[:] = [q for q in self.st.queue if q[1] != pid]
        return empty()

    async def interrupt_post(self, request: Request) -> Response:
        body = await read_json(request)
        target = body.get("prompt_id")
        if self.st.running is not None and (target is None or target == self.st.running[1]):
            self.interrupt = True
        return empty()

    async def free(self, request: Request) -> Response:
        self.st.free_requests.append(await read_json(request))
        return empty()

    # ---- history ---------------------------------------------------------------------------
    async def history_get(self, request: Request) -> Response:
        items = list(self.st.history.items())
        max_items = request.query_params.get("max_items")
        if max_items is not None:
            items = items[-int(max_items) :]
        return json_response(dict(items))

    async def history_one(self, request: Request) -> Response:
        pid = request.path_params["prompt_id"]
        entry = self.st.history.get(pid)
        return json_response({pid: entry} if entry is not None else {})

    async def history_post(self, request: Request) -> Response:
        body = await read_json(request)
        if body.get("clear"):
            self.st.history.clear()
        for pid in body.get("delete", []):
            self.st.history.pop(pid, None)
        return empty()

    # ---- files -----------------------------------------------------------------------------
    async def view(self, request: Request) -> Response:
        q = request.query_params
        filename = q.get("filename")
        if filename is None:
            return empty(404)
        if not filename or filename[0] == "/" or ".." in filename:
            return empty(400)
        kind = q.get("type", "output")
        subfolder = q.get("subfolder", "")
        if subfolder.startswith("/") or ".." in Path(subfolder).parts:
            return empty(403)
        data = self.st.files.get((kind, subfolder, filename))
        if data is None:
            return empty(404)
        media = "image/png" if filename.endswith(".png") else "application/octet-stream"
        return Response(
            data,
            media_type=media,
            headers={"Content-Disposition": f'filename="{filename}"'},
        )

    async def upload_image(self, request: Request) -> Response:
        form = await request.form()
        image = form.get("image")
        if image is None or isinstance(image, str):
            return empty(400)
        data = await image.read()
        kind = str(form.get("type") or "input")
        subfolder = str(form.get("subfolder") or "")
        overwrite = str(form.get("overwrite") or "") in ("true", "1")
        name = image.filename or "image.png"
        if "/" in name or ".." in name or ".." in Path(subfolder).parts:
            return empty(400)
        stem, dot, ext = name.rpartition(".")
        if not dot:
            stem, ext = name, ""
        suffix = f".{ext}" if dot else ""
        if not overwrite:
            i = 1
            while (kind, subfolder, name) in self.st.files:
                if self.st.files[(kind, subfolder, name)] == data:
                    break
                name = f"{stem} ({i}){suffix}"
                i += 1
        self.st.files[(kind, subfolder, name)] = data
        return json_response({"name": name, "subfolder": subfolder, "type": kind})

    # ---- websocket -------------------------------------------------------------------------
    async def ws(self, websocket: WebSocket) -> None:
        if not self.fake.websocket:
            await websocket.close(code=1008)  # before accept: the handshake gets HTTP 403
            return
        await websocket.accept()
        sid = websocket.query_params.get("clientId") or uuid.uuid4().hex
        self.sockets.setdefault(sid, []).append(websocket)
        try:
            await websocket.send_text(
                json.dumps(
                    {
                        "type": "status",
                        "data": {
                            "status": {"exec_info": {"queue_remaining": self.queue_remaining()}},
                            "sid": sid,
                        },
                    }
                )
            )
            if self.st.running_client == sid and self.st.last_node_id is not None:
                await self.send(sid, "executing", {"node": self.st.last_node_id})
            while True:
                text = await websocket.receive_text()
                with contextlib.suppress(ValueError):
                    msg = json.loads(text)
                    if msg.get("type") == "feature_flags":
                        await self.send(
                            sid,
                            "feature_flags",
                            {"supports_preview_metadata": True, "max_upload_size": 104857600},
                        )
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            with contextlib.suppress(ValueError):
                self.sockets[sid].remove(websocket)

    async def send(self, sid: str | None, kind: str, data: dict[str, Any]) -> None:
        """Send to one client id, or to everybody when `sid` is None (ComfyUI's send_json)."""
        text = json.dumps({"type": kind, "data": data})
        targets = (
            [w for ws in self.sockets.values() for w in ws]
            if sid is None
            else list(self.sockets.get(sid, []))
        )
        for w in targets:
            with contextlib.suppress(Exception):
                await w.send_text(text)
        if self.fake.on_frame is not None:
            self.fake.on_frame(kind, data)

    async def send_bytes(self, sid: str | None, payload: bytes) -> None:
        targets = (
            [w for ws in self.sockets.values() for w in ws]
            if sid is None
            else list(self.sockets.get(sid, []))
        )
        for w in targets:
            with contextlib.suppress(Exception):
                await w.send_bytes(payload)

    async def close_sockets(self) -> None:
        for w in [w for ws in self.sockets.values() for w in ws]:
            with contextlib.suppress(Exception):
                await w.close(code=1011)

    async def broadcast_status(self) -> None:
        await self.send(
            None, "status", {"status": {"exec_info": {"queue_remaining": self.queue_remaining()}}}
        )

    # ---- execution -------------------------------------------------------------------------
    async def work(self) -> None:
        assert self.wake is not None
        while True:
            if not self.st.queue:
                self.wake.clear()
                await self.wake.wait()
                continue
            item = self.st.queue.pop(0)
            self.st.running = item
            await self.broadcast_status()
            await Execution(self, item).run()
            self.st.running = None
            self.st.last_node_id = None
            self.st.running_client = None
            self.interrupt = False


class NodeFailure(Exception):
    def __init__(self, exception_type: str, message: str) -> None:
        super().__init__(message)
        self.exception_type = exception_type
        self.message = message


class Interrupted(Exception):
    pass


class Execution:
    """Runs one queued prompt: frames, fake outputs, a history entry."""

    def __init__(self, rt: Runtime, item: list[Any]) -> None:
        self.rt = rt
        self.st = rt.st
        self.fake = rt.fake
        self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs_to_run = item
        self.client_id: str | None = self.extra_data.get("client_id")
        self.messages: list[list[Any]] = []
        self.values: dict[str, dict[str, Any]] = {}
        self.ui: dict[str, dict[str, Any]] = {}
        self.executed: list[str] = []
        self.first_sampler_done = False

    async def send(self, kind: str, data: dict[str, Any], *, record: bool = False) -> None:
        if record:
            self.messages.append([kind, data])
        if self.client_id is not None or kind == "progress":
            await self.rt.send(self.client_id, kind, data)

    def signature(self, node_id: str, memo: dict[str, str]) -> str:
        if node_id in memo:
            return memo[node_id]
        node = self.prompt[node_id]
        parts: list[Any] = [node["class_type"]]
        for name, value in sorted(node["inputs"].items()):
            if is_link(value):
                parts.append((name, self.signature(str(value[0]), memo), value[1]))
            else:
                parts.append((name, value))
        memo[node_id] = hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()
        return memo[node_id]

    def order(self) -> list[str]:
        seen: list[str] = []

        def visit(nid: str) -> None:
            if nid in seen:
                return
            for value in self.prompt[nid]["inputs"].values():
                if is_link(value):
                    visit(str(value[0]))
            seen.append(nid)

        for out in self.outputs_to_run:
            visit(out)
        return seen

    async def run(self) -> None:
        self.fake.state.executions.append(self.prompt_id)
        self.st.running_client = self.client_id
        await self.send(
            "execution_start", {"prompt_id": self.prompt_id, "timestamp": now_ms()}, record=True
        )
        order = self.order()
        memo: dict[str, str] = {}
        sigs = {nid: self.signature(nid, memo) for nid in order}
        cached = [nid for nid in order if sigs[nid] in self.st.cache]
        await self.send(
            "execution_cached",
            {"nodes": cached, "prompt_id": self.prompt_id, "timestamp": now_ms()},
            record=True,
        )
        new_cache: dict[str, dict[str, Any] | None] = {}
        status = "success"
        try:
            for nid in order:
                cls = self.prompt[nid]["class_type"]
                if nid in cached:
                    entry = self.st.cache[sigs[nid]]
                    self.values[nid] = entry["value"] if entry else {}
                    if entry and entry.get("ui") is not None:
                        self.ui[nid] = entry["ui"]
                        await self.send("executed", self.executed_frame(nid))
                    new_cache[sigs[nid]] = entry
                    continue
                self.st.last_node_id = nid
                await self.progress_state(nid, "running")
                await self.send(
                    "executing",
                    {"node": nid, "display_node": nid, "prompt_id": self.prompt_id},
                )
                await self.execute_node(nid, cls)
                self.executed.append(nid)
                await self.progress_state(nid, "finished")
                new_cache[sigs[nid]] = {"value": self.values[nid], "ui": self.ui.get(nid)}
                if nid in self.ui:
                    await self.send("executed", self.executed_frame(nid))
        except NodeFailure as failure:
            status = "error"
            nid = self.st.last_node_id or ""
            node = self.prompt.get(nid, {"class_type": "", "inputs": {}})
            await self.send(
                "execution_error",
                {
                    "prompt_id": self.prompt_id,
                    "node_id": nid,
                    "node_type": node["class_type"],
                    "executed": list(self.executed),
                    "exception_message": failure.message,
                    "exception_type": failure.exception_type,
                    "traceback": [
                        '  File "/srv/ComfyUI/execution.py", line 496, in execute\n'
                        "    output_data, output_ui, has_subgraph, has_pending_tasks = ...\n"
                    ],
                    "current_inputs": {k: [v] for k, v in node["inputs"].items() if not is_link(v)},
                    "current_outputs": list(order),
                    "timestamp": now_ms(),
                },
                record=True,
            )
        except Interrupted:
            status = "error"
            nid = self.st.last_node_id or ""
            await self.send(
                "execution_interrupted",
                {
                    "prompt_id": self.prompt_id,
                    "node_id": nid,
                    "node_type": self.prompt[nid]["class_type"],
                    "executed": list(self.executed),
                    "timestamp": now_ms(),
                },
                record=True,
            )
        else:
            self.st.cache = new_cache
            await self.send(
                "execution_success",
                {"prompt_id": self.prompt_id, "timestamp": now_ms()},
                record=True,
            )
        self.st.history[self.prompt_id] = {
            "prompt": [
                self.number,
                self.prompt_id,
                self.prompt,
                self.extra_data,
                self.outputs_to_run,
            ],
            "outputs": self.ui if status == "success" else {},
            "status": {
                "status_str": status,
                "completed": status == "success",
                "messages": self.messages,
            },
            "meta": {
                nid: {
                    "node_id": nid,
                    "display_node": nid,
                    "parent_node": None,
                    "real_node_id": nid,
                }
                for nid in self.ui
            },
        }
        if status == "success" and self.fake.faults.restart_after_success:
            self.fake.faults.restart_after_success = False
            await self.restart_now()
        self.st.running = None
        await self.rt.broadcast_status()
        await self.send("executing", {"node": None, "prompt_id": self.prompt_id})

    async def restart_now(self) -> None:
        f = self.fake.faults
        self.fake.restart_in_background(
            keep_history=f.restart_keep_history, downtime=f.restart_downtime
        )
        await asyncio.sleep(3600)  # cancelled by the shutdown

    def executed_frame(self, nid: str) -> dict[str, Any]:
        return {
            "node": nid,
            "display_node": nid,
            "output": self.ui[nid],
            "prompt_id": self.prompt_id,
        }

    async def progress_state(self, nid: str, state: str) -> None:
        value = 1.0 if state == "finished" else 0.0
        nodes = {
            n: {
                "value": 1.0,
                "max": 1.0,
                "state": "finished",
                "node_id": n,
                "prompt_id": self.prompt_id,
                "display_node_id": n,
                "parent_node_id": None,
                "real_node_id": n,
            }
            for n in self.executed
        }
        nodes[nid] = {**nodes.get(nid, {}), "value": value, "max": 1.0, "state": state,
                      "node_id": nid, "prompt_id": self.prompt_id, "display_node_id": nid,
                      "parent_node_id": None, "real_node_id": nid}  # fmt: skip
        await self.send("progress_state", {"prompt_id": self.prompt_id, "nodes": nodes})

    def linked(self, nid: str, name: str) -> dict[str, Any]:
        value = self.prompt[nid]["inputs"].get(name)
        if not is_link(value):
            return {}
        return self.values.get(str(value[0]), {})

    async def execute_node(self, nid: str, cls: str) -> None:
        inputs = self.prompt[nid]["inputs"]
        fail = self.fake.faults.fail_class
        if fail is not None and fail[0] == cls:
            self.fake.faults.fail_class = None
            raise NodeFailure(fail[1], fail[2])
        value: dict[str, Any] = {}
        if cls == "CheckpointLoaderSimple":
            if "UNLOADABLE" in inputs["ckpt_name"]:
                raise NodeFailure(
                    "RuntimeError",
                    "ERROR: Could not detect model type of: "
                    f"/srv/ComfyUI/models/checkpoints/{inputs['ckpt_name']}\n\n",
                )
        elif cls == "EmptyLatentImage":
            value = {
                "w": inputs["width"],
                "h": inputs["height"],
                "batch": inputs["batch_size"],
                "seeds": [],
            }
        elif cls in ("KSampler", "FaceDetailer"):
            src = self.linked(nid, "latent_image" if cls == "KSampler" else "image")
            value = {**src, "seeds": [*src.get("seeds", []), inputs.get("seed", 0)]}
            if cls == "KSampler":
                await self.sample(nid, int(inputs["steps"]))
        elif cls == "LoadImage":
            sub, _, base = str(inputs["image"]).rpartition("/")
            data = self.st.files.get(("input", sub, base))
            if data is None:
                raise NodeFailure("FileNotFoundError", f"Invalid image file: {inputs['image']}")
            with Image.open(io.BytesIO(data)) as im:
                value = {"w": im.width, "h": im.height, "batch": 1, "seeds": []}
        elif cls == "ImageUpscaleWithModel":
            src = self.linked(nid, "image")
            model = self.prompt[str(inputs["upscale_model"][0])]["inputs"].get("model_name", "")
            scale = int(model[0]) if model[:1].isdigit() else 4
            value = {**src, "w": src["w"] * scale, "h": src["h"] * scale}
        elif cls == "ImageScale":
            src = self.linked(nid, "image")
            value = {**src, "w": int(inputs["width"]), "h": int(inputs["height"])}
        elif cls == "ImageScaleBy":
            src = self.linked(nid, "image")
            f = float(inputs["scale_by"])
            value = {**src, "w": round(src["w"] * f), "h": round(src["h"] * f)}
        elif cls in ("SaveImage", "PreviewImage"):
            self.ui[nid] = {
                "images": self.save(nid, self.linked(nid, "images"), cls == "SaveImage")
            }
        else:
            # Pass the first linked image/latent description through (VAEDecode, ApplyInstantID...).
            for v in inputs.values():
                if is_link(v) and self.values.get(str(v[0]), {}).get("w"):
                    value = dict(self.values[str(v[0])])
                    break
        self.values[nid] = value

    async def sample(self, nid: str, steps: int) -> None:
        for step in range(1, steps + 1):
            await asyncio.sleep(self.fake.step_delay)
            if self.rt.interrupt:
                raise Interrupted
            await self.send(
                "progress",
                {"value": step, "max": steps, "prompt_id": self.prompt_id, "node": nid},
            )
            if self.fake.send_previews:
                await self.rt.send_bytes(self.client_id, PREVIEW_FRAME)
            f = self.fake.faults
            if not self.first_sampler_done and f.drop_sockets_at_step == step:
                f.drop_sockets_at_step = None
                await self.rt.close_sockets()
            if not self.first_sampler_done and f.restart_at_step == step:
                f.restart_at_step = None
                await self.restart_now()
        self.first_sampler_done = True

    def save(self, nid: str, image: dict[str, Any], permanent: bool) -> list[dict[str, str]]:
        if permanent:
            prefix = str(self.prompt[nid]["inputs"].get("filename_prefix", "ComfyUI"))
            kind = "output"
        else:
            prefix, kind = "ComfyUI_temp_fake", "temp"
        subfolder, _, base = prefix.rpartition("/")
        taken = [
            int(name[len(base) + 1 : len(base) + 6])
            for (k, sub, name) in self.st.files
            if k == kind
            and sub == subfolder
            and name.startswith(base + "_")
            and name.endswith("_.png")
        ]
        counter = max(taken, default=0) + 1
        out = []
        for i in range(image.get("batch", 1)):
            name = f"{base}_{counter:05}_.png"
            counter += 1
            seed_key = json.dumps([image.get("seeds", []), i]).encode()
            colour = tuple(hashlib.sha256(seed_key).digest()[:3])
            self.st.files[(kind, subfolder, name)] = png_bytes(
                image.get("w", 64), image.get("h", 64), colour, self.prompt, self.extra_data
            )
            out.append({"filename": name, "subfolder": subfolder, "type": kind})
        return out


def png_bytes(
    w: int, h: int, colour: tuple[int, ...], prompt: dict[str, Any], extra: dict[str, Any]
) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", json.dumps(prompt))
    for key, value in (extra.get("extra_pnginfo") or {}).items():
        info.add_text(key, json.dumps(value))
    buf = io.BytesIO()
    Image.new("RGB", (w, h), colour).save(buf, format="PNG", pnginfo=info, compress_level=4)
    return buf.getvalue()


def _preview_frame() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (128, 64, 32)).save(buf, format="JPEG")
    return (1).to_bytes(4, "big") + (1).to_bytes(4, "big") + buf.getvalue()


PREVIEW_FRAME = _preview_frame()


async def read_json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


class OriginCheck:
    """ComfyUI refuses a request whose Origin is not the Host it was sent to (403, empty)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            origin, host = headers.get("origin"), headers.get("host")
            if origin and host and urlsplit(origin).netloc != host:
                await empty(403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


INNER_VALIDATION_TRACEBACK = [
    '  File "/srv/ComfyUI/execution.py", line 808, in validate_inputs\n    r = await validate_inputs(prompt_id, prompt, o_id, validated)\n        ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n',
    "  File \"/srv/ComfyUI/execution.py\", line 788, in validate_inputs\n    o_class_type = prompt[o_id]['class_type']\n                   ~~~~~~^^^^^^\n",
]


# ---- validation (execution.validate_prompt / validate_inputs of 0.3.64) --------------------


def is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


def error_body(kind: str, message: str, details: str = "") -> dict[str, Any]:
    return {
        "error": {"type": kind, "message": message, "details": details, "extra_info": {}},
        "node_errors": {},
    }


def input_specs(cls_info: dict[str, Any]) -> list[tuple[str, str, list[Any]]]:
    out = []
    for category in ("required", "optional"):
        for name, spec in cls_info["input"].get(category, {}).items():
            out.append((category, name, spec))
    return out


def combo_options(spec: list[Any]) -> list[Any] | None:
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO" and len(spec) > 1:
        return spec[1].get("options", [])
    return None


def validate_prompt(
    prompt: dict[str, Any],
    info: dict[str, Any],
    input_exists: Callable[[str], bool] | None = None,
) -> tuple[bool, dict[str, Any] | None, list[str], dict[str, Any]]:
    """``input_exists`` plays LoadImage.VALIDATE_INPUTS: a file in an input subfolder is
    accepted although the ``image`` list shows only the top level."""
    outputs: list[str] = []
    for nid, node in prompt.items():
        if "class_type" not in node:
            return (
                False,
                error_body(
                    "invalid_prompt",
                    "Cannot execute because a node is missing the class_type property.",
                    f"Node ID '#{nid}'",
                )["error"],
                [],
                {},
            )
        cls = node["class_type"]
        if cls not in info:
            return (
                False,
                error_body(
                    "invalid_prompt",
                    f"Cannot execute because node {cls} does not exist.",
                    f"Node ID '#{nid}'",
                )["error"],
                [],
                {},
            )
        if info[cls].get("output_node"):
            outputs.append(nid)
    if not outputs:
        return False, error_body("prompt_no_outputs", "Prompt has no outputs")["error"], [], {}
    validated: dict[str, tuple[bool, list[dict[str, Any]]]] = {}
    good: list[str] = []
    node_errors: dict[str, Any] = {}
    for out in outputs:
        try:
            valid = (
                validate_inputs(prompt, out, validated, info, input_exists)
                if out not in validated
                else validated[out][0]
            )
        except Exception as ex:  # noqa: BLE001 (mirrors ComfyUI's catch-all)
            valid = False
            validated[out] = (False, [{"type": "exception_during_validation", "message": "Exception when validating node", "details": str(ex), "extra_info": {}}])  # fmt: skip
        if valid:
            good.append(out)
            continue
        for nid, (ok, reasons) in validated.items():
            if ok or not reasons:
                continue
            entry = node_errors.setdefault(
                nid,
                {
                    "errors": reasons,
                    "dependent_outputs": [],
                    "class_type": prompt[nid]["class_type"],
                },
            )
            entry["dependent_outputs"].append(out)
    if not good:
        error = {
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
            "details": "",
            "extra_info": {},
        }
        return False, error, [], node_errors
    return True, None, good, node_errors


def validate_inputs(
    prompt: dict[str, Any],
    nid: str,
    validated: dict[str, Any],
    info: dict[str, Any],
    input_exists: Callable[[str], bool] | None = None,
) -> bool:
    node = prompt[nid]
    inputs = node["inputs"]
    cls_info = info[node["class_type"]]
    errors: list[dict[str, Any]] = []
    valid = True
    for category, name, spec in input_specs(cls_info):
        if name not in inputs:
            if category == "required":
                errors.append({"type": "required_input_missing", "message": "Required input is missing",
                               "details": name, "extra_info": {"input_name": name}})  # fmt: skip
            continue
        val = inputs[name]
        type_input = spec[0]
        if isinstance(val, list):
            if len(val) != 2:
                errors.append({"type": "bad_linked_input",
                               "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                               "details": name,
                               "extra_info": {"input_name": name, "input_config": spec, "received_value": val}})  # fmt: skip
                continue
            o_id = str(val[0])
            o_class = prompt[o_id]["class_type"]  # KeyError here propagates to the caller
            received = info[o_class]["output"][val[1]]
            if not isinstance(type_input, list) and type_input not in ("*", received):
                errors.append({"type": "return_type_mismatch",
                               "message": "Return type mismatch between linked nodes",
                               "details": f"{name}, received_type({received}) mismatch input_type({type_input})",
                               "extra_info": {"input_name": name, "input_config": spec,
                                              "received_type": received, "linked_node": val}})  # fmt: skip
                continue
            try:
                if o_id not in validated:
                    ok = validate_inputs(prompt, o_id, validated, info, input_exists)
                    valid = valid and ok
                elif not validated[o_id][0]:
                    valid = False
            except Exception as ex:  # noqa: BLE001
                valid = False
                reasons = [{"type": "exception_during_inner_validation",
                            "message": "Exception when validating inner node",
                            "details": str(ex),
                            "extra_info": {"input_name": name, "input_config": spec,
                                           "exception_message": str(ex),
                                           "exception_type": type(ex).__name__,
                                           "traceback": INNER_VALIDATION_TRACEBACK,
                                           "linked_node": val}}]  # fmt: skip
                validated[o_id] = (False, reasons)
            continue
        options = combo_options(spec)
        opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        try:
            if type_input == "INT":
                val = int(val)
            elif type_input == "FLOAT":
                val = float(val)
            elif type_input == "STRING":
                val = str(val)
        except (TypeError, ValueError) as ex:
            errors.append({"type": "invalid_input_type",
                           "message": f"Failed to convert an input value to a {type_input} value",
                           "details": f"{name}, {val}, {ex}",
                           "extra_info": {"input_name": name, "input_config": spec,
                                          "received_value": val, "exception_message": str(ex)}})  # fmt: skip
            continue
        if "min" in opts and type_input in ("INT", "FLOAT") and val < opts["min"]:
            errors.append({"type": "value_smaller_than_min",
                           "message": f"Value {val} smaller than min of {opts['min']}",
                           "details": name,
                           "extra_info": {"input_name": name, "input_config": spec, "received_value": val}})  # fmt: skip
            continue
        if "max" in opts and type_input in ("INT", "FLOAT") and val > opts["max"]:
            errors.append({"type": "value_bigger_than_max",
                           "message": f"Value {val} bigger than max of {opts['max']}",
                           "details": name,
                           "extra_info": {"input_name": name, "input_config": spec, "received_value": val}})  # fmt: skip
            continue
        if node["class_type"] == "LoadImage" and name == "image" and input_exists is not None:
            if not input_exists(str(val)):
                errors.append({"type": "custom_validation_failed",
                               "message": "Custom validation failed for node",
                               "details": f"image - Invalid image file: {val}",
                               "extra_info": {"input_name": name}})  # fmt: skip
            continue
        if options is not None and val not in options:
            if len(options) > 20:
                list_info, config = f"(list of length {len(options)})", None
            else:
                list_info, config = str(options), spec
            errors.append({"type": "value_not_in_list", "message": "Value not in list",
                           "details": f"{name}: '{val}' not in {list_info}",
                           "extra_info": {"input_name": name, "input_config": config,
                                          "received_value": val}})  # fmt: skip
            continue
    if errors or not valid:
        validated[nid] = (False, errors)
        return False
    validated[nid] = (True, [])
    return True
