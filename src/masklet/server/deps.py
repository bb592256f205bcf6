"""Injected dependencies: the app context, API-key auth and the media-root path policy."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from .batcher import PromptBatcher
from .errors import ApiError
from .image_batch import PromptDecoder
from .metrics import Metrics
from .pool import ModelPool
from .settings import Settings
from .store import ImageCache, SessionStore


@dataclass
class Context:
    """Everything a request handler may touch, built once per app."""

    settings: Settings
    pool: ModelPool
    images: ImageCache
    sessions: SessionStore
    metrics: Metrics
    batcher: PromptBatcher
    prompt_decoder: PromptDecoder  # the batcher's batch function for image prompts (image_batch.py)
    jobs: dict[str, Any] = field(default_factory=dict)
    shutting_down: bool = False


def get_ctx(request: HTTPConnection) -> Context:
    """The app's context (FastAPI dependency)."""
    return request.app.state.ctx


def check_key(conn: HTTPConnection) -> None:
    """Accept ``X-API-Key: k`` or ``Authorization: Bearer k`` (constant-time compare); off with no keys."""
    keys: list[str] = conn.app.state.ctx.settings.api_keys
    if not keys:
        return
    given = conn.headers.get("x-api-key")
    auth = conn.headers.get("authorization", "")
    if given is None and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    if not given:
        raise ApiError(
            401,
            "unauthorized",
            "missing API key: send X-API-Key or Authorization: Bearer",
            {"WWW-Authenticate": "Bearer"},
        )
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(given.encode(), key.encode())
    if not ok:
        raise ApiError(403, "forbidden", "the API key is not valid")


Ctx = Annotated[Context, Depends(get_ctx)]


async def require_key(request: Request) -> None:
    """FastAPI dependency wrapper of :func:`check_key`."""
    check_key(request)


def media_path(settings: Settings, path: str) -> Path:
    """A server-side path, resolved, that must lie under a configured media root (no traversal)."""
    if not settings.media_roots:
        raise ApiError(403, "path_not_allowed", "server-side paths are disabled (no media roots configured)")
    if "\x00" in path:
        raise ApiError(400, "invalid_input", "path: contains a NUL byte")
    for root in settings.media_roots:
        candidate = (root / path).resolve()
        if candidate.is_relative_to(root):
            if not candidate.exists():
                raise ApiError(404, "not_found", f"path: {path!r} does not exist under the media roots")
            return candidate
    raise ApiError(403, "path_not_allowed", f"path: {path!r} is outside the configured media roots")
