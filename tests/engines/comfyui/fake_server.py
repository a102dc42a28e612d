"""An in-process ComfyUI 0.3.64 test double that speaks real HTTP and WebSocket.

It reproduces the behaviour recorded in tests/data/comfyui (response bodies, status codes,
validation error bodies, the WebSocket frame sequence and its `executing: null` end marker) and
"executes" a graph by writing solid-colour PNGs of the requested size with a `prompt` text chunk,
as the real SaveImage does (see fake_execution.py; validation is in fake_validation.py).

Faults can be injected (`Faults`): a restart mid-run (connections dropped, queue forgotten,
history kept or lost), dropped WebSockets on a running server, a slow `/prompt` answer (lost to
a client timeout after the prompt was queued), a runtime error in a chosen node class, a server
that picks its own prompt ids, and refused WebSocket upgrades (`websocket=False`).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
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
from fake_execution import Execution
from fake_validation import error_body, validate_prompt
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
    ("IPAdapterModelLoader", "ipadapter_file"): "ipadapter",
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
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
        self.ws_headers: list[dict[str, str]] = []  # the headers of each WebSocket handshake
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
        self.fake.ws_headers.append(dict(websocket.headers))
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
