"""The JSON endpoints the keys and buttons call, and the corrections download."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from likeness.review import decisions as dec
from likeness.review.deps import MAX_PAGE_SIZE, PAGE_SIZE, Db, Filter, State, load_queue
from likeness.review.export import corrections, dataset_from_accepted
from likeness.store.blobs import is_sha256
from likeness.store.datasets import DatasetError
from likeness.store.images import get_image
from likeness.workspace import Workspace

router = APIRouter()


class DecideBody(BaseModel):
    sha256: str
    decision: str = Field(description="accepted, rejected or undecided")
    note: str | None = None
    tags: list[str] = Field(default_factory=list)
    reviewer: str | None = None
    expected_revision: int | None = None


class UndoBody(BaseModel):
    sha256: str
    reviewer: str | None = None
    expected_revision: int | None = None


class DatasetBody(BaseModel):
    name: str
    note: str | None = None


@router.get("/api/queue")
def api_queue(
    db: Db,
    st: State,
    flt: Filter,
    page: Annotated[int, Query(ge=1)] = 1,
    size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = PAGE_SIZE,
) -> dict[str, Any]:
    queue = load_queue(db, st, flt)
    shown = queue.entries[(page - 1) * size : page * size]
    return {
        "total": len(queue.entries),
        "page": page,
        "size": size,
        "left": queue.tally.undecided,
        "tally": {
            "accepted": queue.tally.accepted,
            "rejected": queue.tally.rejected,
            "undecided": queue.tally.undecided,
        },
        "items": [
            {
                "sha256": e.sha256,
                "origin": e.origin,
                "name": e.original_name,
                "decision": e.decision,
                "revision": e.revision,
                "tags": list(e.tags),
                "run": e.run,
                "flags": list(e.metrics.flags),
                "metrics": e.metrics.values,
            }
            for e in shown
        ],
    }


@router.get("/api/review/{sha}")
def api_review(sha: str, db: Db) -> dict[str, Any]:
    if not is_sha256(sha) or get_image(db, sha) is None:
        raise HTTPException(404, "no such image")
    return {
        "review": dec.get_review(db, sha).to_dict(),
        "history": [h.to_dict() for h in dec.history(db, sha)],
    }


@router.get("/api/counts")
def api_counts(db: Db) -> dict[str, int]:
    return dec.count_decisions(db).to_dict()


@router.post("/api/decide")
def api_decide(body: DecideBody, db: Db, st: State) -> JSONResponse:
    try:
        review = dec.decide(
            db,
            body.sha256,
            body.decision,  # type: ignore[arg-type]
            reviewer=st.reviewer_for(body.reviewer),
            note=body.note,
            tags=body.tags,
            expected_revision=body.expected_revision,
        )
    except dec.ReviewError as exc:
        return _review_error(exc)
    return JSONResponse(review.to_dict())


@router.post("/api/undo")
def api_undo(body: UndoBody, db: Db, st: State) -> JSONResponse:
    try:
        review = dec.undo(
            db,
            body.sha256,
            reviewer=st.reviewer_for(body.reviewer),
            expected_revision=body.expected_revision,
        )
    except dec.ReviewError as exc:
        return _review_error(exc)
    return JSONResponse(review.to_dict())


@router.post("/api/to-dataset")
def api_to_dataset(body: DatasetBody, db: Db, st: State) -> JSONResponse:
    ws = Workspace(root=st.root, settings=st.settings, db=db, blobs=st.blobs)
    try:
        made = dataset_from_accepted(ws, body.name, note=body.note)
    except DatasetError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse(made.to_dict())


@router.get("/export/corrections.jsonl")
def export_corrections(db: Db, st: State) -> StreamingResponse:
    ws = Workspace(root=st.root, settings=st.settings, db=db, blobs=st.blobs)
    lines = [json.dumps(r, sort_keys=True, default=str) + "\n" for r in corrections(ws)]
    return StreamingResponse(
        iter(lines),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": 'attachment; filename="corrections.jsonl"'},
    )


def _review_error(exc: dec.ReviewError) -> JSONResponse:
    if isinstance(exc, dec.ReviewConflict):
        return JSONResponse({"error": str(exc), "current": exc.current.to_dict()}, status_code=409)
    if isinstance(exc, dec.UnknownImage):
        return JSONResponse({"error": str(exc)}, status_code=404)
    return JSONResponse({"error": str(exc)}, status_code=422)
