"""``masklet serve --ray``: the HTTP API on Ray Serve, with strict per-image / per-session affinity.

Layout: one light ingress deployment (the only router) forwards each HTTP request to a
``MaskletReplica`` (each holds the models and a full ``create_app`` server). Calls that name an
image id, video session or job go to the replica recorded for that id, through a request router
that never falls back to another live replica; stateless calls (uploads, new sessions) spread by
power of two choices. A replica that died leaves its ids to any other replica, which answers
``unknown_image`` / ``unknown_session``: the client then re-uploads / replays (client.py).

Live streams (WebSocket ``/v1/streams``): the ingress holds the client's socket; the replica picked at
connect runs the app's stream route on a socket fed by per-message calls pinned to it, so a stream
never changes replica. The ``ready`` event names the replica (``replica``, also the accept header);
when that replica goes away the stream ends with an error event of code ``stream_lost`` (close
1012) and the client opens a new stream and replays what it sent (client_video.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, MutableMapping
from contextlib import AsyncExitStack
from typing import Any

from ray import serve
from ray.serve._private.request_router.pow_2_router import PowerOfTwoChoicesRequestRouter
from ray.serve.config import RequestRouterConfig

from .settings import Settings

PIN = "masklet-replica:"  # handle session_id prefix naming the replica a request must run on
REPLICA_HEADER = "x-masklet-replica"
_ID_PATHS = (
    (re.compile(r"^/v1/images/(?!embeddings$|predict_batch$)([^/]+)"), "image"),
    (re.compile(r"^/v1/videos/([^/]+)"), "video"),
    (re.compile(r"^/v1/jobs/([^/]+)"), "job"),
)
_ID_FIELDS = ("imageId", "sessionId", "jobId")
_MAX_IDS = 200_000
STREAM_LOST = "stream_lost"  # code of a stream's final error event when its replica went away
log = logging.getLogger("masklet.server.ray")


class ReplicaMapRouter(PowerOfTwoChoicesRequestRouter):
    """Power of two choices, except that a request pinned to a live replica runs there and only there
    (it waits for a free slot rather than falling back); a pin to a gone replica routes anywhere."""

    async def choose_replicas(self, candidate_replicas: list, pending_request: Any = None) -> list[list]:
        target = pending_request.metadata.session_id if pending_request is not None else ""
        if target and target.startswith(PIN):
            uid = target[len(PIN) :]
            for replica in candidate_replicas:
                if replica.replica_id.unique_id == uid:
                    pending_request.routing_context.should_backoff = True
                    return [[replica]]
        return await super().choose_replicas(candidate_replicas, pending_request)


def request_key(path: str) -> str | None:
    """The id (image, video session or job) a request path is about; None for stateless calls."""
    for pattern, _kind in _ID_PATHS:
        m = pattern.match(path)
        if m:
            return m.group(1)
    return None


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


def label_metrics(texts: list[tuple[str, str]]) -> str:
    """Merge per-replica Prometheus texts into one, each sample labelled ``replica="<id>"``."""
    seen_meta: set[str] = set()
    out: list[str] = []
    for rid, text in texts:
        for line in text.splitlines():
            if not line:
                continue
            if line.startswith("#"):
                if line not in seen_meta:
                    seen_meta.add(line)
                    out.append(line)
                continue
            name, _, rest = line.partition(" ")
            label = f'replica="{rid}"'
            name = name.replace("{", "{" + label + ",", 1) if "{" in name else f"{name}{{{label}}}"
            out.append(f"{name} {rest}")
    return "\n".join(out) + "\n"


class MaskletIngress:
    """The HTTP and WebSocket entry: forwards every request to a replica, keeping the id -> replica map."""

    def __init__(self, replica: Any) -> None:
        self.replica = replica
        self.owner: OrderedDict[str, str] = OrderedDict()
        self.routed: dict[tuple[str, str], int] = {}

    def __serve_build_asgi_app__(self) -> Any:
        """The ingress's ASGI app (Serve runs it at replica start): HTTP and WebSocket, nothing else."""
        from starlette.requests import Request

        async def asgi(scope: dict, receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                while (await receive())["type"] != "lifespan.shutdown":
                    await send({"type": "lifespan.startup.complete"})
                await send({"type": "lifespan.shutdown.complete"})
            elif scope["type"] == "websocket":
                await self._stream(scope, receive, send)
            else:
                response = await self._http(Request(scope, receive))
                await response(scope, receive, send)

        return asgi

    def _count(self, rid: str, how: str) -> None:
        self.routed[(rid, how)] = self.routed.get((rid, how), 0) + 1

    async def _stream(self, scope: dict, receive: Any, send: Any) -> None:
        """One WebSocket: opened on any replica, then every message goes to that replica and only there."""
        if (await receive())["type"] != "websocket.connect":
            return
        sid = uuid.uuid4().hex
        headers = [(bytes(k), bytes(v)) for k, v in scope.get("headers", [])]
        request_id = dict(headers).get(b"x-request-id", b"").decode("latin-1")
        state = {"accepted": False, "ready": False}
        try:
            rid, out = await self.replica.options(method_name="stream_open").remote(
                sid, scope["path"], scope.get("query_string", b""), headers
            )
        except Exception as err:  # noqa: BLE001 (no replica could take it)
            return await _stream_lost(send, state, err, request_id)
        self._count(rid, "spread")
        pinned = self.replica.options(method_name="stream_send", session_id=PIN + rid)
        while True:
            if out is None:  # the pin fell through to a replica that never had this stream
                return await _stream_lost(send, state, LookupError(f"stream {sid} is not on replica {rid}"), request_id)
            for message in out:
                await send(_tag(message, rid, sid, state))
                if message["type"] == "websocket.close":
                    return
            message = await receive()
            try:
                got, out = await pinned.remote(sid, message)
            except Exception as err:  # noqa: BLE001 (the replica died or is gone)
                if message["type"] == "websocket.disconnect":
                    return
                return await _stream_lost(send, state, err, request_id)
            if message["type"] == "websocket.disconnect":
                return
            self._count(got, "pinned")
            if got != rid:
                out = None

    def _remember(self, key: str, rid: str) -> None:
        self.owner[key] = rid
        self.owner.move_to_end(key)
        while len(self.owner) > _MAX_IDS:
            self.owner.popitem(last=False)

    async def _call(self, method: str, path: str, query: bytes, headers: list, body: bytes, key: str | None) -> tuple:
        """Send to the replica holding ``key`` (any replica when None or unknown): (status, headers, chunks)."""
        rid = self.owner.get(key) if key else None
        if key and rid is None and not (method == "GET" and path == f"/v1/images/{key}"):
            rid = await self._find(key)  # e.g. after an ingress restart: ask the replicas, pin, remember
        handle = self.replica.options(stream=True, method_name="handle", session_id=PIN + rid if rid else "")
        gen = handle.remote(method, path, query, headers, body)
        status, out = await gen.__anext__()
        return status, out, gen

    async def _find(self, key: str) -> str | None:
        """The replica holding an id the map does not know (None: no replica has it)."""
        found = await self.replica.broadcast("holds", key).results_async(return_exceptions=True)
        rid = next((r for r in found if isinstance(r, str)), None)
        if rid:
            self._remember(key, rid)
        return rid

    async def _http(self, request: Any) -> Any:
        """Forward one HTTP request (pinned when it names a known id) and learn the ids it creates."""
        from starlette.responses import JSONResponse, Response, StreamingResponse

        path = request.url.path
        try:
            if path == "/metrics":
                return Response(await self.metrics(), media_type="text/plain; version=0.0.4")
            if path == "/v1/ray/replicas":
                return JSONResponse(await self.replicas())
        except Exception as err:  # noqa: BLE001 (no replica up yet, or one going away)
            return _unavailable(err, request.headers.get("x-request-id", ""))
        body = await request.body()
        headers = [(k, v) for k, v in request.headers.raw if k.lower() not in (b"content-length", b"host")]
        headers.append((b"content-length", str(len(body)).encode()))
        query = request.url.query.encode()
        rid_header = request.headers.get("x-request-id", "")
        try:
            if path == "/v1/images/predict_batch" and request.method == "POST":
                return await self._batch(request.method, path, query, headers, body)
            status, out, gen = await self._call(request.method, path, query, headers, body, request_key(path))
        except Exception as err:  # noqa: BLE001 (a replica died under the call: retryable)
            return _unavailable(err, rid_header)
        rid = dict(out).get(REPLICA_HEADER.encode(), b"").decode()
        key = request_key(path)
        self._count(rid, "pinned" if key and key in self.owner else "spread")
        ctype = dict(out).get(b"content-type", b"").decode()
        if ctype.startswith("application/json"):
            try:
                data = b"".join([chunk async for chunk in gen])
            except Exception as err:  # noqa: BLE001
                return _unavailable(err, rid_header)
            self._learn(data, rid, status)
            kept = [(k, v) for k, v in out if k.lower() != b"content-length"]
            resp = Response(data, status_code=status)
            resp.raw_headers = [*kept, (b"content-length", str(len(data)).encode())]
            return resp
        resp = StreamingResponse(_chunks(gen), status_code=status)
        resp.raw_headers = [(k, v) for k, v in out if k.lower() not in (b"content-length", b"transfer-encoding")]
        return resp

    def _learn(self, data: bytes, rid: str, status: int) -> None:
        if status >= 300 or not rid:
            return
        try:
            doc = json.loads(data)
        except ValueError:
            return
        if isinstance(doc, dict):
            for name in _ID_FIELDS:
                if isinstance(doc.get(name), str):
                    self._remember(doc[name], rid)

    async def _batch(self, method: str, path: str, query: bytes, headers: list, body: bytes) -> Any:
        """predict_batch across replicas: one sub-batch per holding replica, results merged in order."""
        from starlette.responses import Response

        try:
            doc = json.loads(body)
            items = doc["items"]
            groups: dict[str | None, list[int]] = {}
            for i, item in enumerate(items):
                iid = item.get("imageId", item.get("image_id"))
                groups.setdefault(self.owner.get(iid) if isinstance(iid, str) else None, []).append(i)
        except (ValueError, KeyError, TypeError, AttributeError):
            groups = {None: []}
        if len(groups) == 1:  # one holder (or a malformed body the replica will reject): as is
            key = next((items[0].get("imageId") for _ in [0]), None) if groups != {None: []} else None
            status, out, gen = await self._call(method, path, query, headers, body, key)
            data = b"".join([chunk async for chunk in gen])
            resp = Response(data, status_code=status)
            resp.raw_headers = [(k, v) for k, v in out if k.lower() != b"content-length"] + [
                (b"content-length", str(len(data)).encode())
            ]
            return resp

        async def part(indices: list[int]) -> tuple[int, bytes, list]:
            sub = dict(doc, items=[items[i] for i in indices])
            data_in = json.dumps(sub).encode()
            hdrs = [(k, v) for k, v in headers if k != b"content-length"] + [
                (b"content-length", str(len(data_in)).encode())
            ]
            key = items[indices[0]].get("imageId", items[indices[0]].get("image_id"))
            status, out, gen = await self._call(method, path, query, hdrs, data_in, key)
            return status, b"".join([chunk async for chunk in gen]), out

        parts = await asyncio.gather(*(part(ix) for ix in groups.values()))
        for status, data, out in parts:
            if status >= 300:  # the first failing part answers for the whole batch
                resp = Response(data, status_code=status)
                resp.raw_headers = [(k, v) for k, v in out if k.lower() != b"content-length"] + [
                    (b"content-length", str(len(data)).encode())
                ]
                return resp
        results: list[Any] = [None] * len(items)
        for (_, data, _), indices in zip(parts, groups.values()):
            for i, res in zip(indices, json.loads(data)["results"]):
                results[i] = res
        merged = json.dumps({"results": results}).encode()
        replicas = ",".join(sorted({dict(out).get(REPLICA_HEADER.encode(), b"").decode() for _, _, out in parts}))
        return Response(merged, media_type="application/json", headers={REPLICA_HEADER: replicas})

    async def metrics(self) -> str:
        """Every replica's metrics (labelled by replica) plus the ingress's routing counts."""
        texts = await self.replica.broadcast("metrics_text").results_async(return_exceptions=True)
        merged = label_metrics([t for t in texts if isinstance(t, tuple)])
        lines = [
            "# HELP masklet_ray_routed_total requests forwarded by the Ray ingress",
            "# TYPE masklet_ray_routed_total counter",
        ]
        for (rid, how), n in sorted(self.routed.items()):
            lines.append(f'masklet_ray_routed_total{{replica="{rid}",routing="{how}"}} {n}')
        lines.append(f"masklet_ray_pinned_ids {len(self.owner)}")
        return merged + "\n".join(lines) + "\n"

    async def replicas(self) -> dict:
        """The live replicas (id, held images and sessions) and how many ids are pinned."""
        found = await self.replica.broadcast("describe").results_async(return_exceptions=True)
        live = sorted((d for d in found if isinstance(d, dict)), key=lambda d: d["replica"])
        return {"replicas": live, "pinnedIds": len(self.owner)}


def _tag(message: dict, rid: str, sid: str, state: dict) -> dict:
    """Name the replica on the accept (a header) and in the stream's ``ready`` event."""
    if message["type"] == "websocket.accept":
        state["accepted"] = True
        return {**message, "headers": [*message.get("headers", []), (REPLICA_HEADER.encode(), rid.encode())]}
    if message["type"] == "websocket.send" and not state["ready"] and message.get("text"):
        state["ready"] = True
        try:
            doc = json.loads(message["text"])
        except ValueError:
            return message
        if isinstance(doc, dict) and doc.get("type") == "ready":
            return {**message, "text": json.dumps({**doc, "replica": rid, "streamId": sid})}
    return message


async def _stream_lost(send: Any, state: dict, err: Exception, request_id: str) -> None:
    """End a stream whose replica went away: an error event of code ``stream_lost``, then close 1012."""
    log.warning("stream lost: %s: %s", type(err).__name__, err)
    if not state["accepted"]:
        await send({"type": "websocket.accept"})
    event = {
        "type": "error",
        "status": 503,
        "error": {
            "code": STREAM_LOST,
            "message": f"the replica holding this stream went away ({type(err).__name__}); "
            "open a new stream and replay it",
            "requestId": request_id,
        },
    }
    await send({"type": "websocket.send", "text": json.dumps(event)})
    await send({"type": "websocket.close", "code": 1012})


async def _chunks(gen: Any) -> AsyncIterator[bytes]:
    async for chunk in gen:
        yield chunk


def _unavailable(err: Exception, rid: str) -> Any:
    from starlette.responses import JSONResponse

    log.warning("replica call failed: %s: %s", type(err).__name__, err)
    return JSONResponse(
        {
            "error": {
                "code": "replica_unavailable",
                "message": f"the replica holding this call went away ({type(err).__name__}); retry",
                "requestId": rid,
            }
        },
        status_code=503,
        headers={"Retry-After": "1"},
    )


def parse_autoscale(text: str) -> tuple[int, int]:
    """``MIN:MAX`` -> (min, max), both positive with min <= max."""
    try:
        lo, hi = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--autoscale: expected MIN:MAX, got {text!r}") from None
    if lo < 1 or hi < lo:
        raise argparse.ArgumentTypeError(f"--autoscale: expected 1 <= MIN <= MAX, got {text!r}")
    return lo, hi


def build_app(
    settings: Settings,
    replicas: int = 1,
    autoscale: tuple[int, int] | None = None,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    max_ongoing_requests: int = 8,
    autoscale_options: dict | None = None,
) -> Any:
    """The Serve application: ingress + ``MaskletReplica`` (fixed count or autoscaling MIN:MAX)."""
    opts: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": num_cpus, "num_gpus": num_gpus},
        "max_ongoing_requests": max_ongoing_requests,
        "request_router_config": RequestRouterConfig(
            request_router_class=ReplicaMapRouter  # type: ignore[arg-type]  # ray's pydantic-v1 compat model hides the field type
        ),
        "health_check_period_s": 5,
        "graceful_shutdown_timeout_s": 5,
    }
    if autoscale:
        opts["autoscaling_config"] = {
            "min_replicas": autoscale[0],
            "max_replicas": autoscale[1],
            "target_ongoing_requests": 2,
            "upscale_delay_s": 5,
            "downscale_delay_s": 60,
            **(autoscale_options or {}),
        }
    else:
        opts["num_replicas"] = replicas
    threads = max(1, int(num_cpus))
    replica = serve.deployment(name="MaskletReplica", **opts)(MaskletReplica).bind(settings, threads)
    ingress = serve.deployment(
        name="MaskletIngress",
        num_replicas=1,
        max_ongoing_requests=1000,
        ray_actor_options={"num_cpus": 0},
    )(serve.ingress()(MaskletIngress))
    return ingress.bind(replica)


def app_builder(args: dict) -> Any:
    """Entry for ``serve deploy`` configs (``import_path: masklet.server.ray_app:app_builder``): ``args`` takes
    ``models``, ``device``, ``dtype``, ``replicas``, ``autoscale`` ("MIN:MAX"), ``num_cpus``, ``num_gpus``."""
    args = dict(args or {})
    models = args.pop("models", None)
    settings = Settings.from_env(
        models=[models] if isinstance(models, str) else models,
        device=args.pop("device", None),
        dtype=args.pop("dtype", None),
    )
    auto = args.pop("autoscale", None)
    return build_app(
        settings,
        replicas=int(args.pop("replicas", 1)),
        autoscale=parse_autoscale(auto) if auto else None,
        num_cpus=float(args.pop("num_cpus", 1)),
        num_gpus=float(args.pop("num_gpus", 0)),
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """``masklet serve --ray``: start (or join) a Ray cluster, deploy, serve until Ctrl-C."""
    import ray

    ray.init(address=args.address, ignore_reinit_error=True, include_dashboard=False)
    serve.start(http_options={"host": args.host, "port": args.port})
    num_gpus = 1.0 if settings.device.startswith("cuda") else 0.0
    app = build_app(
        settings, replicas=args.replicas, autoscale=args.autoscale, num_cpus=args.ray_num_cpus, num_gpus=num_gpus
    )
    serve.run(app, name="masklet", route_prefix="/")
    log.info("masklet on Ray Serve at http://%s:%d", args.host, args.port)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
    return 0
