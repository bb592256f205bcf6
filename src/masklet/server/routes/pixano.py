"""The pixano-inference 0.7 API (``/v1/inference/...``, ``/v1/info``, tracking jobs) on masklet.

Included before masklet's own routers: ``/v1/ready``, ``/v1/models`` and ``/v1/jobs/{id}`` answer one
body that both masklet's and pixano's clients accept (masklet's fields plus pixano's).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import torch
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from ... import __version__
from ..deps import Context, Ctx, require_key
from ..errors import ApiError
from ..pixano_ops import (
    PixanoJob,
    bad,
    envelope,
    pixano_error,
    prepare_segment,
    run_job,
    segment,
    track,
)
from ..pixano_schemas import DeployModelRequest, SegmentationRequest, TrackingRequest
from ..store import CachedImage
from ..video_ops import Progress
from . import health as masklet_health
from . import jobs as masklet_jobs

router = APIRouter()
keyed = APIRouter(dependencies=[Depends(require_key)])
T = TypeVar("T")
R = TypeVar("R", bound=BaseModel)
_MAX_JOBS = 500
_METADATA_PART_BYTES = 32 * 2**20


async def _pixano(fn: Callable[[], Awaitable[T]]) -> T:
    """Run a handler body, answering masklet errors with pixano's code names (same statuses)."""
    try:
        return await fn()
    except Exception as err:
        api = pixano_error(err)
        if api is None:
            raise
        raise api from None


# ----------------------------------------------------------------------------- service


@router.get("/ready")
@router.get("/v1/ready")
async def ready(ctx: Ctx) -> JSONResponse:
    """masklet's readiness body plus pixano's ``models_loaded``; 503 with the same body while loading."""
    resp = await masklet_health.ready(ctx)
    body = json.loads(bytes(resp.body))
    body["models_loaded"] = body.get("modelsLoaded", len(ctx.pool.models))
    return JSONResponse(body, status_code=resp.status_code)


@router.get("/info")
@router.get("/v1/info")
async def info(ctx: Ctx) -> dict:
    """Server information, in pixano's ``/v1/info`` shape."""
    gpus = [m for m in ctx.pool.models.values() if m.model.device.type == "cuda"]
    return {
        "appName": "masklet",
        "appVersion": __version__,
        "numCpus": os.cpu_count() or 1,
        "numGpus": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "numNodes": 1,
        "gpusUsed": float(len({str(m.model.device) for m in gpus})),
        "models": list(ctx.pool.names),
        "modelsStatus": dict(ctx.pool.status),
    }


def _interfaces() -> list[tuple[str, dict]]:
    return [
        (
            "segmentation",
            {
                "capability": "segmentation",
                "prompts": ["points", "box", "mask"],
                "multimask": True,
                "embeddings": True,
                "outputs": ["mask", "score", "logits"],
            },
        ),
        (
            "tracking",
            {
                "capability": "tracking",
                "prompts": ["points", "box", "mask"],
                "promptFree": False,
                "classes": "none",
                "classNames": None,
                "thresholds": [],
                "interval": True,
                "outputs": ["mask"],
            },
        ),
    ]


@keyed.get("/v1/models")
async def models(ctx: Ctx) -> list[dict]:
    """masklet's model list, each model twice: as pixano's segmentation and tracking model (one masklet
    model serves both; name it in either request)."""
    out = []
    for _pass, (capability, interface) in enumerate(_interfaces()):
        for info in await masklet_health.models(ctx):
            entry = info.model_dump(mode="json", by_alias=True)
            entry.update(
                capability=capability, modelClass="masklet.Sam2Model", modelPath=info.name, interface=interface
            )
            out.append(entry)
    return out


@keyed.post("/v1/models")
async def deploy(body: DeployModelRequest) -> dict:
    raise ApiError(
        403,
        "forbidden",
        "masklet serves the models named at startup (masklet serve --models ...); "
        "deploying at runtime is not supported",
    )


@keyed.delete("/v1/models/{name}")
async def undeploy(name: str, ctx: Ctx) -> dict:
    if name not in ctx.pool.names:
        raise ApiError(404, "not_found", f"model {name!r} is not served; served models: {ctx.pool.names}")
    raise ApiError(
        403, "forbidden", "masklet serves the models named at startup; undeploying at runtime is not supported"
    )


# ----------------------------------------------------------------------------- inference


async def _form_request(request: Request, kind: type[R], field: str) -> R:
    """A multipart request: part ``metadata`` (the JSON body without the media) plus file part(s) ``field``."""
    form = await request.form(max_part_size=_METADATA_PART_BYTES)
    meta = form.get("metadata")
    if meta is None:
        raise bad("multipart: missing the 'metadata' part (the JSON request without the media)")
    text = meta if isinstance(meta, str) else (await meta.read()).decode("utf-8", "replace")
    try:
        payload = json.loads(text)
    except ValueError as err:
        raise bad(f"metadata: not valid JSON ({err})") from None
    if not isinstance(payload, dict):
        raise bad("metadata: expected a JSON object")
    files = [f for f in form.getlist(field) if not isinstance(f, str)]
    if not files:
        raise bad(f"multipart: missing the {field!r} file part")
    media = [await f.read() for f in files]
    payload["image" if field == "image" else "video"] = media[0] if field == "image" else media
    try:
        return kind.model_validate(payload)
    except ValidationError as err:
        msg = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in err.errors()[:5])
        raise ApiError(422, "validation_error", msg) from None


async def _segmentation(ctx: Context, req: SegmentationRequest) -> dict:
    start = time.perf_counter()
    loaded = ctx.pool.get(req.model)
    iid, pixels, emb = prepare_segment(ctx, loaded, req)
    data, computed = await ctx.pool.run(loaded, segment, loaded, req, pixels, emb)
    if computed is not None and pixels is not None:
        ctx.images.put(CachedImage(iid, loaded.name, pixels, computed))
    return envelope(loaded, "segmentation", data, start, imageId=iid)


@keyed.post("/v1/inference/segmentation")
async def segmentation(body: SegmentationRequest, ctx: Ctx) -> dict:
    """Masks for P prompts on one image (pixano's SAM2 image semantics; see README "Serving Pixano")."""
    return await _pixano(lambda: _segmentation(ctx, body))


@keyed.post("/v1/inference/segmentation/binary")
async def segmentation_binary(request: Request, ctx: Ctx) -> dict:
    """The multipart twin: ``metadata`` JSON part plus the ``image`` file part."""

    async def run() -> dict:
        return await _segmentation(ctx, await _form_request(request, SegmentationRequest, "image"))

    return await _pixano(run)


async def _tracking(ctx: Context, req: TrackingRequest) -> dict:
    start = time.perf_counter()
    loaded = ctx.pool.get(req.model)
    data = await track(ctx, loaded, req, Progress())
    return envelope(loaded, "tracking", data, start)


@keyed.post("/v1/inference/tracking")
async def tracking(body: TrackingRequest, ctx: Ctx) -> dict:
    """Track the keyframed objects through the frames (one bounded masklet session per request)."""
    return await _pixano(lambda: _tracking(ctx, body))


@keyed.post("/v1/inference/tracking/binary")
async def tracking_binary(request: Request, ctx: Ctx) -> dict:
    """The multipart twin: ``metadata`` JSON part plus repeated ``frames`` file parts."""

    async def run() -> dict:
        return await _tracking(ctx, await _form_request(request, TrackingRequest, "frames"))

    return await _pixano(run)


# ----------------------------------------------------------------------------- jobs


async def _submit(ctx: Context, req: TrackingRequest) -> JSONResponse:
    from ..pixano_ops import check_tracking

    loaded = ctx.pool.get(req.model)
    check_tracking(req)  # a bad request is a 4xx now, not a failed job later
    finished = [j for j, job in ctx.jobs.items() if job.status != "running"]
    for jid in finished[: max(0, len(ctx.jobs) - _MAX_JOBS + 1)]:
        del ctx.jobs[jid]
    job = PixanoJob(uuid.uuid4().hex, loaded.name)
    job.task = asyncio.create_task(run_job(ctx, loaded, req, job))
    ctx.jobs[job.job_id] = job
    return JSONResponse(job.status_body(), status_code=202)


@keyed.post("/v1/inference/tracking/jobs")
async def submit_job(body: TrackingRequest, ctx: Ctx) -> JSONResponse:
    """Track in the background: 202 with the job; poll ``GET /v1/jobs/{id}`` (``done`` of ``total`` frames)."""
    return await _pixano(lambda: _submit(ctx, body))


@keyed.post("/v1/inference/tracking/jobs/binary")
async def submit_job_binary(request: Request, ctx: Ctx) -> JSONResponse:
    async def run() -> JSONResponse:
        return await _submit(ctx, await _form_request(request, TrackingRequest, "frames"))

    return await _pixano(run)


@keyed.get("/v1/jobs/{jid}")
async def job_status(jid: str, ctx: Ctx) -> Any:
    """A pixano tracking job's status, or a masklet propagation job's (answered by masklet's route, which
    also answers an unknown id: 404 ``unknown_job``, the code both APIs share on this path)."""
    job = ctx.jobs.get(jid)
    if isinstance(job, PixanoJob):
        return job.status_body()
    return await masklet_jobs.job_status(jid, ctx)  # masklet's job, or its 404 unknown_job


@keyed.delete("/v1/jobs/{jid}")
async def cancel_job(jid: str, ctx: Ctx) -> Any:
    """Cancel a running job (it stops after the frame in progress); a finished job is left as it is."""
    job = ctx.jobs.get(jid)
    if isinstance(job, PixanoJob):
        job.cancel()
        if job.task is not None:
            await asyncio.wait([job.task], timeout=30)
        return job.status_body()
    return await masklet_jobs.cancel_job(jid, ctx)


router.include_router(keyed)
