"""Replicate's HTTP API, the calls Likeness makes (``https://api.replicate.com/v1``).

Predictions: ``POST /v1/models/{owner}/{name}/predictions`` (official models, latest version)
or ``POST /v1/predictions`` with ``version`` (a pinned version), optional ``Prefer: wait=N``;
``GET /v1/predictions/{id}``; ``POST /v1/predictions/{id}/cancel``; ``GET /v1/predictions``
(newest first, ``{"next", "previous", "results"}``). A prediction is ``{"id", "model",
"version", "status": starting|processing|succeeded|failed|canceled, "input", "output", "error",
"logs", "metrics": {"predict_time", "total_time"}, "created_at", "urls": {"get", "cancel"}}``.

Trainings: ``POST /v1/models/{owner}/{name}/versions/{id}/trainings`` with ``destination`` and
``input``; ``GET /v1/trainings/{id}``; ``POST /v1/trainings/{id}/cancel``; ``GET /v1/trainings``.
Files: ``POST /v1/files`` (multipart field ``content``) answers ``{"id", "urls": {"get"}}``.
Models: ``GET /v1/models/{owner}/{name}`` (``latest_version.id``), ``POST /v1/models``.

Replicate documents no idempotency key. After a create whose answer was lost,
:func:`find_created` lists the newest predictions (or trainings) and takes the one whose model,
version and input equal what was sent, created after the attempt began; the explicit seed of
every image makes that input unique. Nothing is ever posted a second time blindly.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from likeness.engines.hosted.errors import HostedError, SubmitUncertain, one_line
from likeness.engines.hosted.http import HostedHttp
from likeness.engines.hosted.models import ModelRef

FINAL = ("succeeded", "failed", "canceled")
_PROGRESS = re.compile(r"(\d+)%\s*\|[^|]*\|\s*(\d+)/(\d+)")
_CLOCK_SKEW = timedelta(seconds=120)
LIST_PAGES = 3


def parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    text = text.replace("Z", "+00:00")
    # Replicate writes nanoseconds; Python parses up to microseconds.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def progress_of(logs: str | None) -> tuple[int, int] | None:
    """(current, total) from the last tqdm line in ``logs`` (``45%|####| 9/20 [...]``)."""
    for line in reversed((logs or "").splitlines()):
        match = _PROGRESS.search(line)
        if match:
            return int(match.group(2)), int(match.group(3))
    return None


def last_log_line(logs: str | None) -> str:
    lines = [line.strip() for line in (logs or "").splitlines() if line.strip()]
    return one_line(lines[-1], 200) if lines else ""


def failure_line(kind: str, obj: Mapping[str, Any], what: str) -> str:
    """One line for a failed or canceled prediction/training."""
    status = obj.get("status")
    head = f"replicate {kind} {obj.get('id')} ({what}) {status}"
    if status == "canceled":
        return f"{head} before it finished"
    error = one_line(obj.get("error") or "no error message", 300)
    tail = last_log_line(obj.get("logs"))
    return f"{head}: {error}" + (f" (last log line: {tail})" if tail and tail not in error else "")


# ---- predictions ---------------------------------------------------------------------------


def create_prediction(
    http: HostedHttp, ref: ModelRef, inputs: Mapping[str, Any], *, wait: int = 0
) -> dict[str, Any]:
    """Create a prediction once; a lost answer raises SubmitUncertain (see find_created)."""
    headers = {"Prefer": f"wait={wait}"} if wait > 0 else None
    timeout = float(wait) + 10.0 if wait > 0 else None
    if ref.version:
        path, body = "/v1/predictions", {"version": ref.version, "input": dict(inputs)}
    else:
        path, body = f"/v1/models/{ref.name}/predictions", {"input": dict(inputs)}
    return _object(http.create(path, json=body, headers=headers, timeout=timeout), "prediction")


def get_prediction(http: HostedHttp, prediction_id: str) -> dict[str, Any]:
    return _object(http.get_json(f"/v1/predictions/{prediction_id}"), "prediction")


def cancel_prediction(http: HostedHttp, prediction_id: str) -> None:
    http.request("POST", f"/v1/predictions/{prediction_id}/cancel")


def find_created(
    http: HostedHttp,
    list_path: str,
    matches: Callable[[Mapping[str, Any]], bool],
    since: datetime,
) -> dict[str, Any] | None:
    """The newest object of ``list_path`` (``/v1/predictions`` or ``/v1/trainings``) that
    ``matches`` and was created after ``since`` (less clock skew), reading a few pages."""
    url: str | None = list_path
    for _ in range(LIST_PAGES):
        if not url:
            break
        page = http.get_json(url)
        results = page.get("results") if isinstance(page, dict) else None
        if not isinstance(results, list):
            raise HostedError(f"replicate: GET {list_path} did not answer a page of results")
        older = False
        for obj in results:
            created = parse_time(obj.get("created_at"))
            if created is not None and created < since - _CLOCK_SKEW:
                older = True
                continue
            if matches(obj):
                return obj
        if older:
            break
        url = page.get("next")
    return None


def submit_prediction(
    http: HostedHttp,
    ref: ModelRef,
    inputs: Mapping[str, Any],
    *,
    wait: int = 0,
    settle: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Create the prediction exactly once: after a lost answer, look for it instead of
    posting again; if it cannot be found, stop with one line (nothing is posted twice)."""
    since = datetime.now(UTC)
    try:
        return create_prediction(http, ref, inputs, wait=wait)
    except SubmitUncertain as exc:
        first = str(exc)

    def same(obj: Mapping[str, Any]) -> bool:
        if ref.version and obj.get("version") != ref.version:
            return False
        if not ref.version and obj.get("model") not in (None, ref.name):
            return False
        return obj.get("input") == dict(inputs)

    for _ in range(3):  # the create may still be landing
        found = find_created(http, "/v1/predictions", same, since)
        if found is not None:
            return _object(found, "prediction")
        sleep(settle)
    raise HostedError(
        f"{first}; no prediction with this input appeared in the account's list, so it was "
        "not created or not yet; nothing was sent again (no double billing): check "
        "https://replicate.com/predictions, then run the same command again"
    )


# ---- files, models, trainings --------------------------------------------------------------


def upload_file(http: HostedHttp, data: bytes, filename: str, content_type: str) -> str:
    """Upload a file (``POST /v1/files``) and return the URL models read it from. Files are
    not billed, so a retried upload only leaves a spare copy behind."""
    response = http.request(
        "POST",
        "/v1/files",
        expect=(200, 201),
        files={"content": (filename, data, content_type)},
    )
    body = _object(response.json(), "file")
    url = (body.get("urls") or {}).get("get")
    if not url:
        raise HostedError("replicate: POST /v1/files answered no urls.get for the uploaded file")
    return str(url)


def get_model(http: HostedHttp, name: str) -> dict[str, Any] | None:
    """``GET /v1/models/{owner}/{name}``, or None when the model does not exist (404)."""
    response = http.request("GET", f"/v1/models/{name}", expect=(200, 404))
    if response.status_code == 404:
        return None
    return _object(response.json(), "model")


def create_model(http: HostedHttp, name: str, *, visibility: str = "private") -> dict[str, Any]:
    owner, model = name.split("/", 1)
    body = {"owner": owner, "name": model, "visibility": visibility, "hardware": "cpu"}
    return _object(http.create("/v1/models", json=body), "model")


def latest_version(http: HostedHttp, name: str) -> str:
    model = get_model(http, name)
    version = ((model or {}).get("latest_version") or {}).get("id")
    if not version:
        raise HostedError(f"replicate: model {name} has no published version to run or train")
    return str(version)


def submit_training(
    http: HostedHttp,
    trainer: ModelRef,
    destination: str,
    inputs: Mapping[str, Any],
    *,
    settle: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Create a training once (same lost-answer rule as :func:`submit_prediction`)."""
    assert trainer.version, "resolve the trainer version first"
    since = datetime.now(UTC)
    path = f"/v1/models/{trainer.name}/versions/{trainer.version}/trainings"
    try:
        return _object(
            http.create(path, json={"destination": destination, "input": dict(inputs)}),
            "training",
        )
    except SubmitUncertain as exc:
        first = str(exc)

    def same(obj: Mapping[str, Any]) -> bool:
        return obj.get("destination") in (None, destination) and obj.get("input") == dict(inputs)

    for _ in range(3):
        found = find_created(http, "/v1/trainings", same, since)
        if found is not None:
            return _object(found, "training")
        sleep(settle)
    raise HostedError(
        f"{first}; no training with this input appeared in the account's list; nothing was "
        "sent again (no double billing): check https://replicate.com/trainings, then run again"
    )


def get_training(http: HostedHttp, training_id: str) -> dict[str, Any]:
    return _object(http.get_json(f"/v1/trainings/{training_id}"), "training")


def cancel_training(http: HostedHttp, training_id: str) -> None:
    http.request("POST", f"/v1/trainings/{training_id}/cancel")


def _object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict) or ("id" not in body and what != "model"):
        raise HostedError(f"replicate: the {what} answer is not a {what} object")
    return body
