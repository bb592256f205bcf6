"""ASGI middleware: X-Request-ID echoed or generated, request body size limit, metrics."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from .errors import ApiError
from .metrics import Metrics

_MAX_ID = 128
log = logging.getLogger("masklet.server.access")


class RequestMiddleware:
    """Give each HTTP request an id (echoed from X-Request-ID), cap its body, time it."""

    def __init__(self, app: Any, max_body_bytes: int, metrics: Metrics) -> None:
        self.app, self.max_body_bytes, self.metrics = app, max_body_bytes, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = given if given and len(given) <= _MAX_ID and given.isprintable() else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        if scope["type"] == "websocket":
            return await self.app(scope, receive, send)
        limit = self.max_body_bytes
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await _reject(
                send,
                rid,
                413,
                "payload_too_large",
                f"request body of {int(length)} bytes exceeds the limit of {limit} bytes",
            )
        seen = 0

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise ApiError(413, "payload_too_large", f"request body exceeds the limit of {limit} bytes")
            return message

        status = {"code": 500}

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", [])
                if not any(k.lower() == b"x-request-id" for k, _ in message["headers"]):
                    message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        start = time.perf_counter()
        try:
            await self.app(scope, limited_receive, send_with_id)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            seconds = time.perf_counter() - start
            self.metrics.observe(scope.get("method", "GET"), path, status["code"], seconds)
            log.info("%s %s %s %d %.1f ms", rid, scope.get("method"), scope.get("path"), status["code"], seconds * 1000)


async def _reject(send: Any, rid: str, status: int, code: str, message: str) -> None:
    import json

    body = json.dumps({"error": {"code": code, "message": message, "requestId": rid}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", rid.encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
