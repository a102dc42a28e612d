// Likeness review: keyboard-driven decisions. Every key is sent to the server at once; the
// undo stack of this tab lives in sessionStorage so it survives moving between pages.
(() => {
  "use strict";
  const body = document.body;
  const page = body.dataset.page;
  const qs = body.dataset.qs || "";
  const UNDO_KEY = "likeness.undo";
  const LAST_KEY = "likeness.last";
  let reviewer = localStorage.getItem("likeness.reviewer") || null;
  document.querySelectorAll("[data-action=reviewer]").forEach((button) => {
    if (reviewer) button.textContent = reviewer;
    button.addEventListener("click", () => {
      const name = (window.prompt("Your name, stored with each decision:", reviewer || button.textContent) || "").trim();
      if (!name) return;
      reviewer = name.slice(0, 100);
      localStorage.setItem("likeness.reviewer", reviewer);
      button.textContent = reviewer;
    });
  });

  // ---- small helpers -------------------------------------------------------------------
  const toastEl = document.getElementById("toast");
  let toastTimer = null;
  function toast(message, error = false) {
    toastEl.textContent = message;
    toastEl.className = "show" + (error ? " error" : "");
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { toastEl.className = ""; }, error ? 4000 : 1600);
  }

  // A page served with a CSRF token (likeness serve) sends it back with every change.
  const csrfHolder = document.querySelector("[data-csrf]");
  const csrfHeaders = csrfHolder ? { "X-CSRF-Token": csrfHolder.dataset.csrf } : {};

  async function post(url, data) {
    const res = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", ...csrfHeaders },
      body: JSON.stringify(data),
    });
    let payload = null;
    try { payload = await res.json(); } catch (_) { payload = null; }
    if (!res.ok) {
      const err = new Error((payload && (payload.error || payload.detail)) || `${res.status} ${res.statusText}`);
      err.status = res.status;
      err.payload = payload;
      throw err;
    }
    return payload;
  }

  function undoStack() {
    try { return JSON.parse(sessionStorage.getItem(UNDO_KEY) || "[]"); } catch (_) { return []; }
  }
  function pushUndo(review) {
    const stack = undoStack();
    stack.push({ sha: review.sha256, revision: review.revision });
    sessionStorage.setItem(UNDO_KEY, JSON.stringify(stack.slice(-500)));
  }
  // Undo one of this tab's decisions; null (and a toast) when someone decided since.
  async function postUndo(entry) {
    let review;
    try {
      review = await post("/api/undo", { sha256: entry.sha, expected_revision: entry.revision, reviewer });
    } catch (err) {
      if (err.status === 409) { toast("changed by someone else since; not undone", true); return null; }
      throw err;
    }
    retarget(entry.sha, review.revision);
    return review;
  }
  // After an undo, this tab's earlier decisions on the same image are undone from the new
  // revision on (the server walks the chain back), so they must not look stale.
  function retarget(sha, revision) {
    const stack = undoStack().map((e) => (e.sha === sha ? { sha, revision } : e));
    sessionStorage.setItem(UNDO_KEY, JSON.stringify(stack));
  }
  function popUndo() {
    const stack = undoStack();
    const entry = stack.pop();
    sessionStorage.setItem(UNDO_KEY, JSON.stringify(stack));
    return entry;
  }

  // Actions run one after another, in key order, even when keys come faster than replies.
  let chain = Promise.resolve();
  function run(action) {
    chain = chain.then(action).catch((err) => toast(err.message, true));
    return chain;
  }

  function typing(event) {
    const t = event.target;
    return t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable);
  }

  const help = document.getElementById("help");
  function toggleHelp(show) { help.hidden = show === undefined ? !help.hidden : !show; }
  document.querySelectorAll("[data-action=help]").forEach((b) => b.addEventListener("click", () => toggleHelp()));
  help.addEventListener("click", () => toggleHelp(false));

  const DECISION_KEYS = { a: "accepted", r: "rejected", x: "undecided" };

  // ---- queue -----------------------------------------------------------------------------
  if (page === "queue") {
    const cards = Array.from(document.querySelectorAll(".card"));
    const counts = {
      accepted: document.getElementById("n-accepted"),
      rejected: document.getElementById("n-rejected"),
      undecided: document.getElementById("left"),
    };
    let cursor = 0;

    function setCursor(index, scroll = true) {
      if (!cards.length) return;
      cursor = Math.max(0, Math.min(cards.length - 1, index));
      cards.forEach((c, i) => c.classList.toggle("cursor", i === cursor));
      if (scroll) cards[cursor].scrollIntoView({ block: "nearest" });
      sessionStorage.setItem(LAST_KEY, cards[cursor].dataset.sha);
    }
    function columns() {
      if (cards.length < 2) return 1;
      const top = cards[0].offsetTop;
      let n = 0;
      for (const c of cards) { if (c.offsetTop !== top) break; n += 1; }
      return Math.max(1, n);
    }
    function applyReview(card, review) {
      const old = card.dataset.decision;
      if (old !== review.decision) {
        counts[old].textContent = Number(counts[old].textContent) - 1;
        counts[review.decision].textContent = Number(counts[review.decision].textContent) + 1;
      }
      card.classList.remove("d-" + old);
      card.classList.add("d-" + review.decision);
      card.dataset.decision = review.decision;
      card.dataset.revision = review.revision;
    }
    async function decide(decision) {
      const card = cards[cursor];
      if (!card) return;
      const index = cursor;
      const review = await post("/api/decide", { sha256: card.dataset.sha, decision, reviewer });
      applyReview(card, review);
      pushUndo(review);
      if (cursor === index) setCursor(index + 1);
    }
    async function undo() {
      let entry = popUndo();
      if (!entry) {
        const card = cards[cursor];
        if (!card || card.dataset.decision === "undecided") { toast("nothing to undo"); return; }
        entry = { sha: card.dataset.sha, revision: Number(card.dataset.revision) };
      }
      const review = await postUndo(entry);
      if (!review) return;
      const index = cards.findIndex((c) => c.dataset.sha === entry.sha);
      if (index >= 0) { applyReview(cards[index], review); setCursor(index); }
      toast("undone: " + review.decision);
    }

    const last = sessionStorage.getItem(LAST_KEY);
    const start = cards.findIndex((c) => c.dataset.sha === last);
    setCursor(start >= 0 ? start : 0, start >= 0);
    cards.forEach((c, i) => c.addEventListener("mouseenter", () => setCursor(i, false)));

    document.addEventListener("keydown", (event) => {
      if (typing(event) || event.ctrlKey || event.metaKey || event.altKey) return;
      const key = event.key;
      if (key === "?") { toggleHelp(); return; }
      if (key === "Escape") { toggleHelp(false); return; }
      if (DECISION_KEYS[key]) { run(() => decide(DECISION_KEYS[key])); }
      else if (key === "u") { run(undo); }
      else if (key === "ArrowRight" || key === "j") { run(() => setCursor(cursor + 1)); }
      else if (key === "ArrowLeft" || key === "k") { run(() => setCursor(cursor - 1)); }
      else if (key === "ArrowDown") { run(() => setCursor(cursor + columns())); }
      else if (key === "ArrowUp") { run(() => setCursor(cursor - columns())); }
      else if ((key === "Enter" || key === "f") && cards[cursor]) { window.location.href = cards[cursor].href; }
      else return;
      event.preventDefault();
    });

    const filters = document.getElementById("filters");
    filters.querySelectorAll("select").forEach((s) => s.addEventListener("change", () => {
      const params = new URLSearchParams(new FormData(filters));
      for (const [k, v] of Array.from(params.entries())) if (!v) params.delete(k);
      const q = params.toString();
      window.location.href = "/" + (q ? "?" + q : "");
    }));

    const form = document.getElementById("to-dataset");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const name = document.getElementById("dataset-name").value.trim();
      run(async () => {
        const made = await post("/api/to-dataset", { name });
        toast(`made ${made.ref}: ${made.count} images from ${made.reviews.length} reviews`);
      });
    });
  }

  // ---- focus -----------------------------------------------------------------------------
  if (page === "focus") {
    const sha = body.dataset.sha;
    let revision = Number(body.dataset.revision);
    const note = document.getElementById("note");
    const pill = document.getElementById("decision-pill");
    const by = document.getElementById("decision-by");
    const stage = document.getElementById("stage");
    const tagBoxes = Array.from(document.querySelectorAll("#tags input"));
    sessionStorage.setItem(LAST_KEY, sha);

    if (body.dataset.next) {
      const nextSha = body.dataset.next.split("/")[2].split("?")[0];
      const preload = new Image();
      preload.src = `/thumb/${nextSha}?size=1280`;
    }

    function show(review) {
      revision = review.revision;
      pill.textContent = review.decision;
      pill.className = "pill d-" + review.decision;
      stage.className = "stage d-" + review.decision;
      by.textContent = review.reviewer ? `by ${review.reviewer}, just now` : "";
    }
    async function decide(decision) {
      const tags = tagBoxes.filter((b) => b.checked).map((b) => b.value);
      const review = await post("/api/decide", {
        sha256: sha, decision, reviewer, note: note.value.trim() || null, tags,
      });
      show(review);
      pushUndo(review);
      if (body.dataset.next && decision !== "undecided") go(body.dataset.next);
      else if (decision !== "undecided") toast("last image of this queue");
    }
    async function undo() {
      const entry = popUndo() || { sha, revision };
      const review = await postUndo(entry);
      if (!review) return;
      if (entry.sha !== sha) { go(`/focus/${entry.sha}${qs}`); return; }
      show(review);
      toast("undone: " + review.decision);
    }
    // Once the page is leaving, further keys would act on this image again: drop them.
    let leaving = false;
    function go(url) {
      if (!url) return;
      leaving = true;
      window.location.href = url;
    }
    window.addEventListener("pageshow", () => { leaving = false; });

    note.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === "Escape") { note.blur(); event.preventDefault(); }
    });
    document.addEventListener("keydown", (event) => {
      if (typing(event) || event.ctrlKey || event.metaKey || event.altKey) return;
      if (leaving) { event.preventDefault(); return; }
      const key = event.key;
      if (key === "?") { toggleHelp(); }
      else if (DECISION_KEYS[key]) { run(() => decide(DECISION_KEYS[key])); }
      else if (key === "u") { run(undo); }
      else if (key === "ArrowRight" || key === "j") { run(() => go(body.dataset.next)); }
      else if (key === "ArrowLeft" || key === "k") { run(() => go(body.dataset.prev)); }
      else if (key === "Escape" || key === "g") { if (!help.hidden) toggleHelp(false); else go(body.dataset.queue); }
      else if (key === "n") { note.focus(); }
      else if (/^[1-9]$/.test(key) && tagBoxes[Number(key) - 1]) {
        const box = tagBoxes[Number(key) - 1];
        box.checked = !box.checked;
      }
      else return;
      event.preventDefault();
    });
    document.querySelectorAll("[data-action=accept]").forEach((b) => b.addEventListener("click", () => run(() => decide("accepted"))));
    document.querySelectorAll("[data-action=reject]").forEach((b) => b.addEventListener("click", () => run(() => decide("rejected"))));
    document.querySelectorAll("[data-action=undo]").forEach((b) => b.addEventListener("click", () => run(undo)));
  }
})();
