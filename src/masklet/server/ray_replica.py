"""The Ray Serve replica: one full masklet server (``create_app``) driven by forwarded HTTP calls and
WebSocket messages (see :mod:`masklet.server.ray_app`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, MutableMapping
from contextlib import AsyncExitStack
from typing import Any

from ray import serve

from .ray_routing import REPLICA_HEADER
from .settings import Settings

log = logging.getLogger("masklet.server.ray")


class MaskletReplica:
    """One full masklet server (models, image cache, sessions) inside a Serve replica."""

    async def __init__(self, settings: Settings, threads: int = 1) -> None:  # type: ignore[misc]  # Serve awaits an async constructor
        import torch

        from .app import create_app

        torch.set_num_threads(max(1, threads))
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        self.app = create_app(settings)
        self.idle_ttl_s = settings.session_ttl_s
        self.streams: dict[str, _Socket] = {}
        self._stack = AsyncExitStack()
        await self._stack.enter_async_context(self.app.router.lifespan_context(self.app))
        pool = self.app.state.ctx.pool
        while not pool.ready and not pool.load_error:  # ready only once the models are loaded
            await asyncio.sleep(0.05)
        if pool.load_error:
            raise RuntimeError(pool.load_error)

    async def handle(self, method: str, path: str, query: bytes, headers: list, body: bytes) -> AsyncIterator[Any]:
        """Run one HTTP request through the app: yields ``(status, headers)``, then body chunks."""
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query,
            "root_path": "",
            "headers": [(bytes(k), bytes(v)) for k, v in headers],
            "client": ("127.0.0.1", 0),
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        queue: asyncio.Queue = asyncio.Queue()
        sent = False

        async def receive() -> dict:
            nonlocal sent
            if sent:
                await asyncio.Event().wait()  # no disconnect: the ingress owns the client connection
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            await queue.put(message)

        async def run() -> None:
            try:
                await self.app(scope, receive, send)
            finally:
                await queue.put(None)

        task = asyncio.create_task(run())
        try:
            while True:
                message = await queue.get()
                if message is None:
                    break
                if message["type"] == "http.response.start":  # Serve's proxy sets x-request-id itself
                    out = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                    out.append((REPLICA_HEADER.encode(), self.replica_id.encode()))
                    yield (message["status"], out)
                elif message["type"] == "http.response.body" and message.get("body"):
                    yield message["body"]
            await task
        finally:
            task.cancel()

    async def stream_open(self, sid: str, path: str, query: bytes, headers: list) -> tuple[str, list[dict]]:
        """Start one WebSocket connection through the app; returns (replica id, what the app sent)."""
        now = time.monotonic()
        for old, sock in list(self.streams.items()):  # the ingress that fed these went away
            if now - sock.used > self.idle_ttl_s:
                await self.stream_send(old, {"type": "websocket.disconnect", "code": 1001})
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "scheme": "ws",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query,
            "root_path": "",
            "headers": [(bytes(k), bytes(v)) for k, v in headers],
            "subprotocols": [],
            "client": ("127.0.0.1", 0),
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        sock = self.streams[sid] = _Socket()
        sock.task = asyncio.create_task(sock.run(self.app, scope))
        return self.replica_id, await sock.exchange({"type": "websocket.connect"})

    async def stream_send(self, sid: str, message: dict) -> tuple[str, list[dict] | None]:
        """Feed one client message to a stream; returns what the app sent back (None: no such stream here)."""
        sock = self.streams.get(sid)
        if sock is None:
            return self.replica_id, None
        out = await sock.exchange(message)
        if sock.task is not None and sock.task.done():
            self.streams.pop(sid, None)
        return self.replica_id, out

    def holds(self, key: str) -> str | None:
        """This replica's id if it holds that image, session or job (the ingress asks on a map miss)."""
        ctx = self.app.state.ctx
        found = key in ctx.images or key in ctx.jobs or key in ctx.sessions
        return self.replica_id if found else None

    def describe(self) -> dict:
        """This replica's id and what it holds (for /v1/ray/replicas and the tests)."""
        ctx = self.app.state.ctx
        return {
            "replica": self.replica_id,
            "images": len(ctx.images),
            "sessions": len(ctx.sessions),
            "streams": {sid: s.messages for sid, s in self.streams.items()},
        }

    def metrics_text(self) -> tuple[str, str]:
        """This replica's id and its Prometheus exposition."""
        ctx = self.app.state.ctx
        ctx.metrics.cache_bytes.set(ctx.images.nbytes)
        ctx.metrics.sessions.set(len(ctx.sessions))
        return self.replica_id, ctx.metrics.render().decode()

    def check_health(self) -> None:
        """Serve's health probe: a replica whose models failed is restarted."""
        if self.app.state.ctx.pool.load_error:
            raise RuntimeError(self.app.state.ctx.pool.load_error)


class _Socket:
    """A WebSocket connection run through the app inside a replica, fed one client message per call."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.outbox: list[dict] = []
        self.idle = asyncio.Event()  # set while the app waits for a message it has not got, or has ended
        self.task: asyncio.Task | None = None
        self.used, self.messages = time.monotonic(), 0

    async def run(self, app: Any, scope: dict) -> None:
        async def receive() -> dict:
            if self.inbox.empty():
                self.idle.set()
            return await self.inbox.get()

        async def send(message: dict) -> None:
            self.outbox.append(message)

        try:
            await app(scope, receive, send)
        except Exception as err:  # noqa: BLE001 (the route failed: the client sees a close)
            log.warning("stream failed: %s: %s", type(err).__name__, err)
        finally:
            if not any(m["type"] == "websocket.close" for m in self.outbox):
                self.outbox.append({"type": "websocket.close", "code": 1011})
            self.idle.set()

    async def exchange(self, message: dict) -> list[dict]:
        """Hand the app one message and collect what it sends until it waits for the next one."""
        if self.task is None or self.task.done():  # the app already ended this socket
            return [{"type": "websocket.close", "code": 1000}]
        self.idle.clear()
        self.inbox.put_nowait(message)  # no await between clear and put: the app cannot see it empty
        await self.idle.wait()
        out, self.outbox = self.outbox, []
        self.used, self.messages = time.monotonic(), self.messages + 1
        return out
