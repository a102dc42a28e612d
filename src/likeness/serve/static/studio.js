// Likeness studio: upload, dataset, generate and follow jobs. Every change is a fetch with
// the session's CSRF token; job progress arrives over a WebSocket per running job.
(() => {
  "use strict";
  const holder = document.querySelector("[data-csrf]");
  const csrf = holder ? holder.dataset.csrf : "";
  const toastEl = document.getElementById("toast");
  let toastTimer = null;
  function toast(message, error = false) {
    toastEl.textContent = message;
    toastEl.className = "show" + (error ? " error" : "");
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { toastEl.className = ""; }, error ? 5000 : 2000);
  }

  async function send(url, body) {
    const headers = { "X-CSRF-Token": csrf };
    let payload = body;
    if (!(body instanceof FormData)) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body || {});
    }
    const res = await fetch(url, { method: "POST", credentials: "same-origin", headers, body: payload });
    let data = null;
    try { data = await res.json(); } catch (_) { data = null; }
    if (!res.ok) {
      const detail = data && (data.error || data.detail);
      throw new Error(typeof detail === "string" ? detail : `${res.status} ${res.statusText}`);
    }
    return data;
  }
  async function getJson(url) {
    const res = await fetch(url, { credentials: "same-origin" });
    if (!res.ok) throw new Error(`${res.status} ${res.statusText}`);
    return res.json();
  }
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") node.className = v; else node.setAttribute(k, v);
    }
    for (const child of children) node.append(child);
    return node;
  }
  function guard(action) {
    return (event) => {
      if (event) event.preventDefault();
      action().catch((err) => toast(err.message, true));
    };
  }

  // ---- photos ------------------------------------------------------------------------------
  const upload = document.getElementById("upload");
  if (upload) {
    upload.addEventListener("submit", guard(async () => {
      const files = document.getElementById("files").files;
      if (!files.length) { toast("choose photos first", true); return; }
      const form = new FormData();
      for (const f of files) form.append("files", f, f.name);
      toast(`uploading ${files.length} file${files.length > 1 ? "s" : ""}...`);
      const data = await send("/api/studio/photos", form);
      const list = document.getElementById("upload-results");
      list.replaceChildren(...data.results.map((r) => {
        const text = r.status === "stored" ? "stored"
          : r.status === "near_duplicate" ? `stored, near duplicate: ${r.reason}`
          : r.status === "duplicate" ? "already stored" : `rejected: ${r.reason}`;
        return el("li", { class: "s-" + r.status, "data-status": r.status }, el("code", {}, r.path), " " + text);
      }));
      toast(Object.entries(data.counts).map(([k, v]) => `${v} ${k.replace("_", " ")}`).join(", "));
      await refreshPhotos();
      upload.reset();
    }));
  }
  async function refreshPhotos() {
    const data = await getJson("/api/studio/photos");
    const grid = document.getElementById("photo-grid");
    grid.replaceChildren(...data.images.map((p) => el("figure", { class: p.excluded ? "excluded" : "", "data-sha": p.sha256 },
      el("img", { src: `/thumb/${p.sha256}?size=256`, alt: p.name }),
      el("figcaption", {}, p.name + (p.excluded ? " · set aside" : "")))));
    const open = data.groups.filter((g) => g.exclude.some((member) => !member.excluded));
    if (open.length && !document.getElementById("dedup")) window.location.reload();
  }
  const dedup = document.getElementById("dedup");
  if (dedup) {
    dedup.addEventListener("click", guard(async () => {
      const data = await send("/api/studio/dedup", {});
      toast(`${data.changed} photo${data.changed === 1 ? "" : "s"} set aside`);
      window.location.reload();
    }));
  }

  // ---- dataset -----------------------------------------------------------------------------
  const makeDataset = document.getElementById("make-dataset");
  if (makeDataset) {
    makeDataset.addEventListener("submit", guard(async () => {
      const name = document.getElementById("dataset-name").value.trim();
      const made = await send("/api/studio/datasets", { name, origins: ["source"] });
      toast(`made ${made.ref}: ${made.count} images`);
      const table = document.getElementById("versions");
      table.querySelectorAll("tr.empty").forEach((r) => r.remove());
      table.prepend(el("tr", {}, el("td", {}, el("a", { href: `/studio/datasets/${made.name}` }, made.ref)),
        el("td", {}, `${made.count} images`), el("td", { class: "muted" }, "just now")));
      document.querySelectorAll("#lora-form [name=dataset], #train-form [name=dataset]").forEach((select) => {
        select.append(el("option", {}, made.ref));
      });
    }));
  }

  // ---- generate, card, train --------------------------------------------------------------
  const genForm = document.getElementById("generate-form");
  function recipeFields() {
    const f = new FormData(genForm);
    const num = (k) => Number(f.get(k));
    const body = {
      engine: f.get("engine"), model: f.get("model"), prompt: f.get("prompt"),
      steps: num("steps"), cfg: num("cfg"), width: num("width"), height: num("height"), seed: num("seed"),
      loras: f.get("lora") ? [{ sha256: f.get("lora"), strength: num("strength") }] : [],
    };
    return { f, body };
  }
  if (genForm) {
    genForm.addEventListener("submit", guard(async () => {
      const { f, body } = recipeFields();
      const data = await send("/api/studio/generate", { ...body, n: Number(f.get("n")) });
      queued(data.job);
    }));
    document.getElementById("card-button").addEventListener("click", guard(async () => {
      const { f, body } = recipeFields();
      const shots = String(f.get("shots") || "").split(/[\s,]+/).filter(Boolean);
      const data = await send("/api/studio/card", { ...body, label: String(f.get("label") || "").trim(), shots });
      queued(data.job);
    }));
  }
  const loraForm = document.getElementById("lora-form");
  if (loraForm) {
    loraForm.addEventListener("submit", guard(async () => {
      const form = new FormData(loraForm);
      if (!document.getElementById("lora-file").files.length) { toast("choose a LoRA file", true); return; }
      for (const key of ["dataset", "family"]) if (!form.get(key)) form.delete(key);
      const lora = await send("/api/studio/loras", form);
      toast(`${lora.name}: ${lora.new ? "added" : "already in your list"}`);
      const select = genForm.querySelector("[name=lora]");
      if (!select.querySelector(`option[value="${lora.sha256}"]`)) {
        select.append(el("option", { value: lora.sha256 }, `${lora.name} (${lora.dataset || "no dataset"})`));
      }
      select.value = lora.sha256;
      loraForm.reset();
    }));
  }
  const trainForm = document.getElementById("train-form");
  if (trainForm) {
    trainForm.addEventListener("submit", guard(async () => {
      const f = new FormData(trainForm);
      const data = await send("/api/studio/train", {
        dataset: f.get("dataset"), model: f.get("model"), steps: Number(f.get("steps")), name: f.get("name") || "",
      });
      queued(data.job);
    }));
  }

  // ---- jobs --------------------------------------------------------------------------------
  function progressNode(job) {
    const bar = el("progress", { max: String(job.total || 1), value: String(job.total ? job.done : (job.state === "done" ? 1 : 0)) });
    return el("div", { class: "progress", "data-job": String(job.id), "data-state": job.state }, bar,
      el("span", { class: "label" }, el("span", { class: "state" }, job.state), " ",
        el("span", { class: "count" }, job.total ? `${job.done}/${job.total}` : String(job.done)), " ",
        el("span", { class: "message muted" }, job.error || job.message || "")));
  }
  function queued(job) {
    toast(`job #${job.id} queued`);
    const table = document.getElementById("job-list");
    if (!table) return;
    table.querySelectorAll("tr.empty").forEach((r) => r.remove());
    const row = el("tr", { "data-job": String(job.id) },
      el("td", {}, el("a", { href: `/studio/jobs/${job.id}` }, `#${job.id} ${job.kind}`)),
      el("td", { class: "wide" }, progressNode(job)), el("td", { class: "muted" }, "just now"));
    table.prepend(row);
    watch(job.id);
  }
  function showJob(job) {
    document.querySelectorAll(`.progress[data-job="${job.id}"]`).forEach((node) => node.replaceWith(progressNode(job)));
  }
  function addResults(job) {
    const grid = document.getElementById("result-grid");
    if (!grid || !job.result || !job.result.images) return;
    grid.querySelectorAll(".empty").forEach((n) => n.remove());
    for (const image of job.result.images.slice().reverse()) {
      if (!image.sha256 || grid.querySelector(`[data-sha="${image.sha256}"]`)) continue;
      const badge = image.match === null || image.match === undefined
        ? el("span", { class: "match none" }, "–")
        : el("span", { class: "match " + (image.pass ? "pass" : "fail") }, Number(image.match).toFixed(1));
      const flags = (image.flags || []).map((f) => el("span", { class: "flag" }, f.replace(/_/g, " ")));
      grid.prepend(el("a", { class: "result", href: `/focus/${image.sha256}?origin=synthetic`, "data-sha": image.sha256 },
        el("img", { src: `/thumb/${image.sha256}?size=256`, alt: `seed ${image.seed}` }),
        el("span", { class: "score" }, badge, ...flags)));
    }
  }
  const watching = new Set();
  function watch(id) {
    if (watching.has(id)) return;
    watching.add(id);
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${window.location.host}/ws/jobs/${id}`);
    socket.addEventListener("message", (event) => {
      const job = JSON.parse(event.data);
      showJob(job);
      if (job.state === "done") {
        addResults(job);
        if (document.body.dataset.page === "job") window.location.reload();
      } else if (job.state === "failed") {
        toast(`job #${job.id} failed: ${job.error}`, true);
      }
    });
    socket.addEventListener("close", () => watching.delete(id));
  }
  document.querySelectorAll('.progress[data-state="queued"], .progress[data-state="running"]').forEach((node) => watch(Number(node.dataset.job)));

  const cancel = document.getElementById("cancel");
  if (cancel) {
    cancel.addEventListener("click", guard(async () => {
      const job = await send(`/api/studio/jobs/${cancel.dataset.job}/cancel`, {});
      showJob(job);
      toast(job.state === "cancelled" ? "cancelled" : "stopping after the current image");
    }));
  }
})();
