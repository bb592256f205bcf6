"""Health, readiness, metrics and model info (open: no API key)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from ... import __version__
from ..deps import Ctx, require_key
from ..schemas import ModelInfo

router = APIRouter()


@router.get("/health")
@router.get("/v1/health")
async def health() -> dict:
    """Liveness: answers while the models load and during long model calls."""
    return {"status": "healthy"}


@router.get("/ready")
@router.get("/v1/ready")
async def ready(ctx: Ctx) -> JSONResponse:
    """Readiness: 200 once every model is loaded, else 503 with the same body."""
    pool = ctx.pool
    body = {
        "ready": pool.ready and not ctx.shutting_down,
        "models": dict(pool.status),
        "modelsLoaded": len(pool.models),
        "version": __version__,
    }
    if pool.load_error:
        body["error"] = pool.load_error
    return JSONResponse(body, status_code=200 if body["ready"] else 503)


@router.get("/metrics")
async def metrics(ctx: Ctx) -> Response:
    """Prometheus metrics."""
    ctx.metrics.cache_bytes.set(ctx.images.nbytes)
    ctx.metrics.sessions.set(len(ctx.sessions))
    ctx.metrics.session_bytes.set(ctx.sessions.nbytes())
    return Response(ctx.metrics.render(), media_type="text/plain; version=0.0.4")


@router.get("/v1/models", dependencies=[Depends(require_key)])
async def models(ctx: Ctx) -> list[ModelInfo]:
    """The served models and what a client needs to check prompts before sending them."""
    out = []
    for name in ctx.pool.names:
        loaded = ctx.pool.models.get(name)
        info = ModelInfo(name=name, status=ctx.pool.status[name])
        if loaded is not None:
            info.image_size = loaded.model.image_size
            info.embedding_size = loaded.model.config.embedding_size
            info.device = str(loaded.model.device)
        out.append(info)
    return out
