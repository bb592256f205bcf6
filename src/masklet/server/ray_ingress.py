"""The Ray Serve ingress: the only router, forwarding HTTP calls and WebSocket streams to the replica
that holds their id, and merging the replicas' metrics (see :mod:`masklet.server.ray_app`)."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from .ray_routing import PIN, REPLICA_HEADER, STREAM_LOST, request_key

_ID_FIELDS = ("imageId", "sessionId", "jobId")
_MAX_IDS = 200_000
log = logging.getLogger("masklet.server.ray")


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
