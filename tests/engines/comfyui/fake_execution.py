"""How the ComfyUI test double "executes" a queued prompt.

Nodes run in dependency order; a node whose inputs match the previous prompt's is cached (as
ComfyUI's classic cache does, output nodes included). Samplers send one ``progress`` frame per
step; SaveImage writes a solid-colour PNG (colour from the seeds) of the size the graph
implies, with the ``prompt`` chunk and one chunk per ``extra_pnginfo`` key, like the real one.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
from typing import TYPE_CHECKING, Any

from fake_validation import is_link
from PIL import Image, PngImagePlugin

if TYPE_CHECKING:
    from fake_server import Runtime


def now_ms() -> int:
    return int(time.time() * 1000)


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
