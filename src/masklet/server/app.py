"""The app factory: ``create_app(settings)`` wires settings, model pool, stores, routers and errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .. import __version__
from .batcher import PromptBatcher
from .deps import Context
from .errors import install_handlers
from .image_batch import PromptDecoder
from .metrics import Metrics
from .middleware import RequestMiddleware
from .pool import ModelPool
from .settings import Settings
from .store import ImageCache, SessionStore


def create_app(settings: Settings | None = None) -> FastAPI:
    """A FastAPI app serving ``settings.models`` (loaded in the background; ready when loaded)."""
    from .routes import exemplars, health, images, jobs, streams, videos

    settings = settings or Settings.from_env()
    metrics = Metrics()
    pool = ModelPool(settings.models, settings.device, settings.dtype, metrics)
    ctx = Context(
        settings,
        pool,
        ImageCache(settings.cache_bytes),
        SessionStore(settings.max_sessions, settings.session_ttl_s, settings.session_bytes),
        metrics,
        PromptBatcher(pool, metrics, settings.batch_max, settings.batch_window_ms),
        PromptDecoder(metrics, settings.batch_max_objects),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool.start_loading()
        yield
        ctx.shutting_down = True
        for job in list(ctx.jobs.values()):
            job.cancel()
        pool.close()

    app = FastAPI(
        title="masklet",
        version=__version__,
        lifespan=lifespan,
        description="Segment Anything 2 over HTTP: images by id, video sessions, jobs, live streams.",
    )
    app.state.ctx = ctx
    install_handlers(app)
    from .routes import pixano  # first: its /v1/ready, /v1/models, /v1/jobs/{id} bodies satisfy both clients

    app.include_router(pixano.router)
    for module in (health, images, videos, jobs, streams, exemplars):
        app.include_router(module.router)
    from .routes import web  # the web page at / and its /static assets

    app.include_router(web.router)
    from .routes import web_decoder  # the page's in-browser decoding: the exported decoder (issue 25)

    app.include_router(web_decoder.router)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID"],
        )
    app.add_middleware(RequestMiddleware, max_body_bytes=settings.max_body_bytes, metrics=metrics)
    return app
