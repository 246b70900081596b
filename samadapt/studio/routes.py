"""The studio's HTTP API and page (see docs/studio.md for the list).

Slices travel as raw little-endian arrays (image: float32, labels: uint8) in the displayed
orientation, with their size in the `X-Rows`/`X-Cols` headers; the browser draws them on canvases.
Requests name cases by the ids of the listing, never by path.
"""

import json
import time

import numpy as np
from fastapi import HTTPException, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from samadapt.errors import UserError
from samadapt.studio.paths import confined
from samadapt.studio.config import ASSETS, TOKEN_COOKIE

LAYERS = ("edits", "prediction", "reference")
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}


class Prompt(BaseModel):
    index: int
    points: list[tuple[float, float, int]] = Field(default_factory=list, max_length=64)  # row, col, 1/0
    box: tuple[float, float, float, float] | None = None  # row0, col0, row1, col1


class TrainRequest(BaseModel):
    epochs: int | None = Field(default=None, ge=1, le=10000)


def _array_response(array: np.ndarray, **headers):
    rows, cols = array.shape
    return Response(np.ascontiguousarray(array).tobytes(), media_type="application/octet-stream",
                    headers={"X-Rows": str(rows), "X-Cols": str(cols), "Cache-Control": "no-store", **headers})


async def read_body(request, limit: int) -> bytes:
    """The request body, refused with 413 beyond `limit` bytes (declared or actually sent)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise HTTPException(413, f"request body larger than the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body larger than the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def add_routes(app) -> None:
    studio = app.state.studio
    limit = studio.config.max_upload_mb * 1024 * 1024

    @app.get("/")
    def page(request: Request):
        response = Response((ASSETS / "index.html").read_bytes(), media_type=CONTENT_TYPES[".html"])
        response.set_cookie(TOKEN_COOKIE, app.state.token, httponly=True, samesite="strict")
        return response

    @app.get("/assets/{name:path}")
    def asset(name: str):
        path = confined(ASSETS, name)
        if not path.is_file() or path.suffix not in CONTENT_TYPES:
            raise LookupError(f"no asset {name!r}")
        return Response(path.read_bytes(), media_type=CONTENT_TYPES[path.suffix])

    @app.get("/api/cases")
    def cases():
        return {"cases": [c.summary() for c in studio.cases], "classes": studio.classes,
                "model": {"name": studio.config.model, "image_size": studio.config.image_size,
                          "random_weights": studio.weights is None}}

    @app.get("/api/cases/{case_id}")
    def case_info(case_id: str):
        return studio.info(case_id)

    @app.get("/api/cases/{case_id}/image")
    def image(case_id: str, plane: str = "axial", index: int = 0):
        shown = studio.image(case_id)
        return _array_response(shown.plane(shown.stack, plane, index).astype("<f4"))

    @app.get("/api/cases/{case_id}/labels/{layer}")
    def labels(case_id: str, layer: str, plane: str = "axial", index: int = 0):
        if layer not in LAYERS:
            raise LookupError(f"no label layer {layer!r}; layers: {', '.join(LAYERS)}")
        shown, item = studio.image(case_id), studio.case(case_id)
        stack = {"edits": lambda: studio.edits(case_id).labels, "prediction": lambda: studio.predictions.get(item.key),
                 "reference": lambda: studio.reference(case_id)}[layer]()
        if stack is None:
            raise LookupError(f"case {case_id!r} has no {layer} labels yet")
        return _array_response(shown.plane(stack, plane, index).astype(np.uint8),
                               **({"X-Version": str(studio.edits(case_id).version)} if layer == "edits" else {}))

    @app.put("/api/cases/{case_id}/edits")
    async def save_edits(case_id: str, request: Request, index: int, version: int):
        body = await read_body(request, limit)

        def save():
            shown = studio.image(case_id)
            rows, cols = shown.display_hw()
            if len(body) != rows * cols:
                raise UserError(f"label slice must be {rows}x{cols} = {rows * cols} bytes, got {len(body)}")
            labels = np.frombuffer(body, dtype=np.uint8).reshape(rows, cols)
            if labels.max(initial=0) > len(studio.classes):
                raise UserError(f"label value {int(labels.max())} is not a class (1..{len(studio.classes)})")
            return studio.edits(case_id).save_slice(index, shown.from_display(labels), version)

        return {"version": await run_in_threadpool(save)}

    @app.post("/api/cases/{case_id}/prompt")
    def prompt(case_id: str, body: Prompt):
        shown, item = studio.image(case_id), studio.case(case_id)
        if not 0 <= body.index < shown.slices:
            raise UserError(f"slice {body.index} is outside 0..{shown.slices - 1}")
        points = []
        for row, col, label in body.points:
            r, c = shown.display_to_item(row, col)
            points.append((c, r, 1 if label else 0))  # the model takes (x, y)
        box = None
        if body.box is not None:
            (r0, c0), (r1, c1) = (shown.display_to_item(*body.box[:2]), shown.display_to_item(*body.box[2:]))
            box = (min(c0, c1), min(r0, r1), max(c0, c1), max(r0, r1))
        studio.wait_until_warm()
        started = time.perf_counter()
        mask = studio.prompter.segment((item.key, body.index), shown.unit(body.index), points, box)
        seconds = time.perf_counter() - started
        return _array_response(shown.to_display(mask.astype(np.uint8)), **{"X-Seconds": f"{seconds:.4f}"})

    @app.post("/api/train", status_code=202)
    def train(body: TrainRequest):
        studio.trainer.start(body.epochs or studio.config.epochs)
        return studio.trainer.state.snapshot()[1]

    @app.post("/api/cases/{case_id}/propagate", status_code=202)
    def propagate(case_id: str):
        studio.trainer.start_propagation(case_id)
        return studio.trainer.state.snapshot()[1]

    @app.get("/api/train")
    def train_state():
        return studio.trainer.state.snapshot()[1]

    @app.get("/api/train/events")
    def train_events():
        def stream():
            serial, value = studio.trainer.state.snapshot()
            yield f"data: {json.dumps(value)}\n\n"
            while value["status"] == "running":
                new_serial, value = studio.trainer.state.wait_change(serial, timeout=10)
                yield f"data: {json.dumps(value)}\n\n" if new_serial != serial else ": still running\n\n"
                serial = new_serial

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    @app.post("/api/export")
    def export():
        from samadapt.studio.exporting import export as write_export

        return write_export(studio)

    @app.post("/api/upload")
    async def upload(request: Request, name: str):
        from samadapt.data.io import SUPPORTED_SUFFIXES, file_suffix

        target = confined(studio.root, name)
        if "/" in name or file_suffix(target) not in SUPPORTED_SUFFIXES:
            raise UserError(f"upload name {name!r}: a plain file name ending in {', '.join(SUPPORTED_SUFFIXES)}")
        if target.exists() or target.is_symlink():
            raise UserError(f"upload name {name!r}: a file of that name exists already")
        body = await read_body(request, limit)
        return await run_in_threadpool(studio.add_file, target, body)
