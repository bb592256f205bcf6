"""Exemplar sessions and track health over masklet serve: the remote twins against the local
predictors (same masks, scores, presence and events), the bank as safetensors both ways, replay of a
lost exemplar session, server-side events on the NDJSON / SSE propagation streams and on WebSockets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
import masklet
from masklet.client import Client
from masklet.client_video import server_events
from masklet.errors import InvalidInputError, PredictorStateError
from masklet.synthetic import make_event_clip, make_example_set
from masklet.video import HealthMonitor
from reference.server import ServerProcess


@pytest.fixture(scope="module")
def server():
    proc = ServerProcess(env={"MASKLET_MAX_SESSIONS": "6"}).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(server):
    with Client(server.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def nano():
    return masklet.load_model("masklet-nano")


def _box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]


def _same(a, b) -> None:
    assert a.obj_ids == b.obj_ids
    assert torch.equal(a.masks, b.masks)
    for name in ("low_res_logits", "mask_logits", "scores", "object_score_logits", "presence"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape and x.dtype == y.dtype, name
        assert torch.equal(x.float(), y.float()), name


def test_exemplar_session_matches_local(client, nano, tmp_path):
    scenes = make_example_set(5, num_objects=2, num_support=2, num_query=3, size=(96, 128))
    local, remote = masklet.ExemplarPredictor(nano, max_memory=3), client.exemplar_predictor(max_memory=3)
    pairs = []
    for k in range(2):
        for n in range(2):
            box = _box(scenes.masks[k, n])
            pairs.append(
                (
                    local.add_example(scenes.images[k], n + 1, box=box),
                    remote.add_example(scenes.images[k], n + 1, box=box),
                )
            )
    ys, xs = np.nonzero(scenes.masks[0, 0])
    point = [[float(xs.mean()), float(ys.mean())]]
    pairs.append(
        (
            local.add_example(scenes.images[0], 7, points=point, labels=[1]),
            remote.add_example(scenes.images[0], 7, points=point, labels=[1]),
        )
    )
    pairs.append(
        (
            local.add_example(scenes.images[1], 9, mask=scenes.masks[1, 1]),
            remote.add_example(scenes.images[1], 9, mask=scenes.masks[1, 1]),
        )
    )
    for k in range(2, 5):
        pairs.append(
            (local.segment(scenes.images[k], update_memory=True), remote.segment(scenes.images[k], update_memory=True))
        )
    for a, b in pairs:
        _same(a, b)
    assert local.obj_ids == remote.obj_ids == [1, 2, 7, 9]
    assert all(local.memory_kinds(i) == remote.memory_kinds(i) for i in local.obj_ids)
    assert local.remove_object(7) == remote.remove_object(7) == [1, 2, 9]
    _same(local.segment(scenes.images[3]), remote.segment(scenes.images[3]))
    # the bank: downloaded, loaded locally; a local bank uploaded; the same results everywhere
    remote.save(tmp_path / "remote.safetensors")
    local.save(tmp_path / "local.safetensors")
    other = masklet.ExemplarPredictor(nano, max_memory=3)
    other.load(tmp_path / "remote.safetensors")
    _same(local.segment(scenes.images[4]), other.segment(scenes.images[4]))
    fresh = client.exemplar_predictor(max_memory=3)
    fresh.load(tmp_path / "local.safetensors")
    assert fresh.obj_ids == [1, 2, 9]
    _same(local.segment(scenes.images[2]), fresh.segment(scenes.images[2]))
    # the same errors, checked before sending or mapped from the server's answer
    for kwargs in (
        {"obj_id": 1},
        {"obj_id": "a", "box": [1, 1, 5, 5]},
        {"obj_id": 1, "box": [9, 9, 1, 1]},
        {"obj_id": 1, "points": [[1, 1]], "labels": [5]},
        {"obj_id": 1, "mask": np.ones((3, 3), bool)},
        {"obj_id": 1, "mask": scenes.masks[0, 0], "box": [1, 1, 5, 5]},
    ):
        with pytest.raises(InvalidInputError):
            local.add_example(scenes.images[0], **kwargs)
        with pytest.raises(InvalidInputError):
            remote.add_example(scenes.images[0], **kwargs)
    with pytest.raises(InvalidInputError):
        remote.remove_object(42)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"12345678 not a bank")
    with pytest.raises(InvalidInputError):
        remote.load(bad)
    local.reset(), remote.reset()
    assert remote.obj_ids == [] and client.request("GET", f"/v1/exemplars/{remote.session_id}")["objIds"] == []
    with pytest.raises(PredictorStateError):
        remote.segment(scenes.images[2])
    with pytest.raises(PredictorStateError):
        remote.save(tmp_path / "empty.safetensors")
    # a video endpoint does not take an exemplar session, and the other way round
    r = httpx.get(f"{client.url}/v1/videos/{remote.session_id}")
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_session"
    for p in (remote, fresh):
        p.close()


def test_lost_exemplar_session_replays(client, nano):
    scenes = make_example_set(7, num_objects=1, num_support=1, num_query=2, size=(96, 128))
    local, remote = masklet.ExemplarPredictor(nano), client.exemplar_predictor()
    box = _box(scenes.masks[0, 0])
    local.add_example(scenes.images[0], 3, box=box)
    remote.add_example(scenes.images[0], 3, box=box)
    _same(local.segment(scenes.images[1], update_memory=True), remote.segment(scenes.images[1], update_memory=True))
    old = remote.session_id
    client.request("DELETE", f"/v1/exemplars/{old}")  # the server forgets it (as after a restart or eviction)
    _same(local.segment(scenes.images[2]), remote.segment(scenes.images[2]))
    assert remote.session_id != old and remote.memory_kinds(3) == local.memory_kinds(3) == ["example", "query"]
    remote.close()


def _first_box(clip) -> list[float]:
    return _box(clip.masks[0, 0])


def _recording(obj, name: str, docs: list) -> None:
    """Wrap a twin's transport method so the test also sees the server's raw documents."""
    inner = getattr(obj, name)

    def wrapped(*args, **kwargs):
        out = inner(*args, **kwargs)
        if isinstance(out, dict):
            docs.append(out)
            return out

        def lines():
            for doc in out:
                docs.append(doc)
                yield doc

        return lines()

    setattr(obj, name, wrapped)


def test_propagation_streams_carry_presence_and_events(client, nano, server):
    clip = make_event_clip(0, "exit", num_frames=16, size=64)
    local, remote = masklet.VideoPredictor(nano), client.video_predictor()
    ls, rs = local.init_state(list(clip.frames)), remote.init_state(list(clip.frames))
    local.add_new_points_or_box(ls, 0, 1, box=_first_box(clip))
    remote.add_new_points_or_box(rs, 0, 1, box=_first_box(clip))
    docs: list[dict] = []
    _recording(remote, "_lines", docs)
    a = list(local.propagate_in_video(ls))
    b = list(remote.propagate_in_video(rs, health=HealthMonitor(lost_frames=2)))
    kinds = [e.kind for f in a for e in f.events]
    assert "lost" in kinds and "reappeared" in kinds
    for x, y in zip(a, b):
        assert torch.equal(x.masks, y.masks) and torch.allclose(x.presence, y.presence)
        assert x.events == y.events
    # the NDJSON documents themselves carry presence and the server's own events
    assert [d["frameIdx"] for d in docs] == [f.frame_idx for f in a]
    for d, f in zip(docs, a):
        np.testing.assert_allclose(d["presence"], f.presence.tolist(), atol=1e-5)
    assert [server_events(d) for d in docs] == [f.events for f in a]
    # server-sent events, with thresholds that reach the server's monitor (no "lost" needs 50 frames)
    url = f"{server.url}/v1/videos/{rs.session_id}/propagate"
    body = {"startFrameIdx": 0, "health": {"lostFrames": 50}}
    with httpx.stream("POST", url, json=body, timeout=60, headers={"Accept": "text/event-stream"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        text = r.read().decode()
    blocks = [blk for blk in text.split("\n\n") if blk.strip()]
    sse = [json.loads(blk.split("data: ", 1)[1]) for blk in blocks]
    assert [blk.split("\n")[0] for blk in blocks] == [f"event: {d['type']}" for d in sse]
    assert sse[-1] == {"type": "end", "reason": "completed", "frames": len(a), "total": len(a)}
    assert [d["frameIdx"] for d in sse[:-1]] == [f.frame_idx for f in a]
    np.testing.assert_allclose([d["presence"][0] for d in sse[:-1]], [float(f.presence[0]) for f in a], atol=1e-5)
    assert not any(e["kind"] == "lost" for d in sse[:-1] for e in d["events"])
    r = httpx.post(url, json={"health": {"lostThreshold": 3}})
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"
    remote.close_state(rs)


def test_websocket_stream_carries_presence_and_events(client, nano, server):
    from urllib.parse import quote

    from websockets.sync.client import connect

    clip = make_event_clip(0, "exit", num_frames=16, size=64)
    local = masklet.StreamTracker(nano, health=HealthMonitor(lost_frames=3))
    remote = client.stream_tracker(health=HealthMonitor(lost_frames=3))  # the server's monitor gets these thresholds
    docs: list[dict] = []
    _recording(remote, "_exchange", docs)
    local.track(clip.frames[0]), remote.track(clip.frames[0])
    local.add_box(1, _first_box(clip)), remote.add_box(1, _first_box(clip))
    a = [local.track(f) for f in clip.frames[1:]]
    b = [remote.track(f) for f in clip.frames[1:]]
    assert {e.kind for e in local.health.events} >= {"lost", "reappeared"}
    assert local.health.events == remote.health.events
    for x, y in zip(a, b):
        assert torch.equal(x.masks, y.masks) and x.events == y.events
    frames = docs[2:]  # after the first frame and the box
    assert [e for d in frames for e in server_events(d)] == local.health.events
    np.testing.assert_allclose([d["presence"][0] for d in frames], [float(f.presence[0]) for f in a], atol=1e-5)
    remote.close()
    with connect(
        server.url.replace("http", "ws") + "/v1/streams?options=" + quote(json.dumps({"health": {"lost_frames": 0}}))
    ) as ws:
        doc = json.loads(ws.recv())
        assert doc["type"] == "error" and doc["error"]["code"] == "invalid_input"


def test_bad_exemplar_requests_answer_4xx_envelopes(server, client):
    from masklet.server.codec import npy_bytes

    scenes = make_example_set(11, num_objects=1, num_support=1, num_query=1, size=(48, 64))
    sid = client.request("POST", "/v1/exemplars", json={})["sessionId"]
    image = [("image", ("a.npy", npy_bytes(scenes.images[0]), "application/x-npy"))]

    def args(doc) -> dict:
        return {"files": image, "data": {"args": json.dumps(doc) if not isinstance(doc, str) else doc}}

    cases = [
        ("POST", "/v1/exemplars", {"json": {"maxMemory": 0}}, 422, "validation_error"),
        ("POST", "/v1/exemplars", {"json": {"model": "nope"}}, 404, "unknown_model"),
        ("POST", "/v1/exemplars", {"json": {"turbo": 1}}, 422, "validation_error"),
        ("POST", f"/v1/exemplars/{sid}/segment", args({}), 409, "predictor_state"),
        ("POST", f"/v1/exemplars/{sid}/examples", args({"objId": 1}), 400, "invalid_input"),
        ("POST", f"/v1/exemplars/{sid}/examples", args({"objId": "x", "box": [1, 1, 9, 9]}), 400, "invalid_input"),
        ("POST", f"/v1/exemplars/{sid}/examples", args({"objId": 1, "box": [9, 9, 1, 1]}), 400, "invalid_input"),
        (
            "POST",
            f"/v1/exemplars/{sid}/examples",
            args({"objId": 1, "points": [[1, 1]], "labels": [9]}),
            400,
            "invalid_input",
        ),
        (
            "POST",
            f"/v1/exemplars/{sid}/examples",
            args({"objId": 1, "mask": {"size": [2, 2], "counts": [9]}}),
            400,
            "invalid_input",
        ),
        ("POST", f"/v1/exemplars/{sid}/examples", args({"objId": 1, "colour": 3}), 400, "invalid_input"),
        ("POST", f"/v1/exemplars/{sid}/examples", args("{oops"), 400, "malformed_json"),
        (
            "POST",
            f"/v1/exemplars/{sid}/examples",
            {"files": [("image", ("a.png", b"junk", "image/png"))], "data": {"args": "{}"}},
            400,
            "image_decode_error",
        ),
        ("POST", f"/v1/exemplars/{sid}/examples", {"json": {"objId": 1}}, 400, "invalid_input"),
        ("POST", f"/v1/exemplars/{sid}/segment", args({"updateMemory": "yes"}), 400, "invalid_input"),
        ("DELETE", f"/v1/exemplars/{sid}/objects/5", {}, 400, "invalid_input"),
        ("GET", f"/v1/exemplars/{sid}/bank", {}, 409, "predictor_state"),
        ("PUT", f"/v1/exemplars/{sid}/bank", {"content": b"12345678junk"}, 400, "invalid_input"),
        ("GET", "/v1/exemplars/nope", {}, 404, "unknown_session"),
        ("POST", "/v1/exemplars/nope/segment", args({}), 404, "unknown_session"),
    ]
    with httpx.Client(base_url=server.url, timeout=60) as http:
        for method, path, kwargs, status, code in cases:
            r = http.request(method, path, headers={"X-Request-ID": "ex"}, **kwargs)
            assert (r.status_code, r.json()["error"]["code"]) == (status, code), (
                path,
                kwargs.get("data"),
                r.text[:300],
            )
            assert r.json()["error"]["requestId"] == "ex"
        # still answering correct masks on the same session
        box = _box(scenes.masks[0, 0])
        r = http.post(f"/v1/exemplars/{sid}/examples", **args({"objId": 1, "box": box}))
        assert r.status_code == 200 and r.json()["objIds"] == [1]
        http.delete(f"/v1/exemplars/{sid}")
