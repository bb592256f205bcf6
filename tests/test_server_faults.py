"""Bounded load and fault tests of masklet serve on loopback: concurrency, restart + replay, cache budget."""

from __future__ import annotations

import json
import re
import threading
import time

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
import masklet
from masklet.client import Client
from masklet.synthetic import make_clip, make_scene
from reference.server import ServerProcess, free_port

BUDGET = 3_000_000


@pytest.fixture(scope="module")
def server():
    proc = ServerProcess(env={"MASKLET_CACHE_BYTES": str(BUDGET), "MASKLET_MAX_SESSIONS": "3"}).start()
    yield proc
    proc.stop()


@pytest.mark.load
def test_concurrent_clients_click_without_errors(server):
    """8 clients clicking on one cached image for 30 s: no error, health answers, p50 / p99 printed."""
    scene = make_scene(5, size=(96, 128))
    errors: list[BaseException] = []
    latencies: list[float] = []
    stop = time.monotonic() + 30.0

    def clicker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            with Client(server.url) as c:
                p = c.image_predictor()
                p.set_image(scene.image)
                for i in range(2000):  # bounded in count and in time (at least 3 clicks each, even on a loaded host)
                    if i >= 3 and time.monotonic() > stop:
                        break
                    t = time.perf_counter()
                    masks, scores, _ = p.predict(rng.uniform(0, [128, 96], (1, 2)), [1])
                    latencies.append(time.perf_counter() - t)
                    assert masks.shape == (3, 96, 128) and scores.shape == (3,)
        except BaseException as err:  # noqa: BLE001 (reported below)
            errors.append(err)

    threads = [threading.Thread(target=clicker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    health = []
    while any(t.is_alive() for t in threads):
        t0 = time.perf_counter()
        assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
        health.append(time.perf_counter() - t0)
        time.sleep(0.2)
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    lat = np.array(latencies) * 1000
    print(
        f"\n8 clients for 30 s: {len(lat)} clicks, p50 {np.percentile(lat, 50):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms, "
        f"health max {max(health) * 1000:.1f} ms"
    )
    assert len(lat) >= 8 * 3


def test_cache_stays_within_budget_and_client_reuploads(server):
    with Client(server.url) as c:
        p = c.image_predictor()
        first = make_scene(100, size=(96, 128)).image
        p.set_image(first)
        kept = p.predict([[30, 30]], [1])
        for seed in range(101, 131):  # 30 distinct images through a cache holding a few
            c.image_predictor().set_image(make_scene(seed, size=(96, 128)).image)
        text = httpx.get(f"{server.url}/metrics").text
        cached = float(re.search(r"^masklet_image_cache_bytes (\S+)", text, re.MULTILINE).group(1))
        assert 0 < cached <= BUDGET
        assert httpx.get(f"{server.url}/v1/images/{p._images[0][0]}").status_code == 404  # evicted
        again = p.predict([[30, 30]], [1])  # re-uploaded transparently
        for x, y in zip(kept, again):
            np.testing.assert_array_equal(x, y)


def _metric(url: str, name: str) -> float:
    return float(re.search(rf"^{re.escape(name)} (\S+)", httpx.get(f"{url}/metrics").text, re.MULTILINE).group(1))


def test_disconnects_and_cancels_leave_no_work_and_no_memory(server):
    """Clients leaving mid-stream and cancelled jobs: the worker goes idle, jobs end "canceled", the
    sessions' tensor bytes go back to zero and resident memory to its baseline (within a bound)."""
    clip = make_clip(16, num_frames=30, size=(48, 64), num_objects=(1, 1))

    def idle() -> bool:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if _metric(server.url, 'masklet_model_calls_pending{device="cpu"}') == 0:
                return True
            time.sleep(0.05)
        return False

    def session(c):
        v = c.video_predictor()
        s = v.init_state(list(clip.frames))
        v.add_new_points_or_box(s, 0, 1, points=[[30, 25]], labels=[1])
        return v, s

    with Client(server.url) as c:
        v, s = session(c)
        list(v.propagate_in_video(s, max_frame_num_to_track=4))  # warm-up: every code path once
        v.close_state(s)
        assert idle() and _metric(server.url, "masklet_session_bytes") == 0
        baseline = _metric(server.url, "process_resident_memory_bytes")
        for _ in range(3):
            v, s = session(c)
            frames = v.propagate_in_video(s)
            next(frames), next(frames)
            frames.close()  # the client leaves mid-stream
            job = c.request("POST", f"/v1/videos/{s.session_id}/jobs", json={"startFrameIdx": 0})
            time.sleep(0.2)
            job = c.request("DELETE", f"/v1/jobs/{job['jobId']}")
            assert job["status"] == "canceled" and job["done"] < 30, job
            assert idle(), "model work still running after the client left and the job was cancelled"
            log = [e for e in c.request("GET", f"/v1/videos/{s.session_id}/log") if e["op"] == "propagate"]
            assert log and all(sum(e["args"]["framesDone"]) < 30 for e in log), log
            v.close_state(s)
        assert _metric(server.url, "masklet_session_bytes") == 0
        after = _metric(server.url, "process_resident_memory_bytes")
    print(
        f"\nresident memory {baseline / 2**20:.1f} -> {after / 2**20:.1f} MiB after 3 left streams and 3 cancelled jobs"
    )
    assert after - baseline < 64 * 2**20


def test_memory_stays_flat_over_many_images(server):
    with Client(server.url) as c:
        for seed in range(200, 240):
            c.image_predictor().set_image(make_scene(seed, size=(96, 128)).image)
        before = _metric(server.url, "process_resident_memory_bytes")
        for seed in range(240, 700):  # 460 more (500 distinct images in all) through a 3 MB cache
            c.image_predictor().set_image(make_scene(seed % 60, size=(96, 128)).image + (seed // 60))
        after = _metric(server.url, "process_resident_memory_bytes")
    print(
        f"\nresident memory {before / 2**20:.1f} -> {after / 2**20:.1f} MiB over 460 more images, 500 in all (cache budget 3 MB)"
    )
    assert _metric(server.url, "masklet_image_cache_bytes") <= BUDGET
    assert after - before < 48 * 2**20


def test_session_limit_answers_429_and_close_frees(server):
    frames = list(make_clip(3, num_frames=2, size=(32, 48), num_objects=(1, 1)).frames)
    with Client(server.url, retries=0) as c:
        v = c.video_predictor()
        states = [v.init_state(frames) for _ in range(3)]
        r = httpx.post(f"{server.url}/v1/videos", files=[("frames", ("a.npy", b"x"))])
        assert r.status_code in (400, 429)
        from masklet.server.codec import npy_bytes

        r = httpx.post(f"{server.url}/v1/videos", files=[("frames", ("a.npy", npy_bytes(frames[0])))])
        assert (
            r.status_code == 429
            and r.json()["error"]["code"] == "too_many_sessions"
            and int(r.headers["retry-after"]) > 0
        )
        v.close_state(states[0])
        v.close_state(states[1])
        states.append(v.init_state(frames))
        for s in states[2:]:
            v.close_state(s)


def test_server_restart_mid_session_replays_the_log():
    port = free_port()
    proc = ServerProcess(port=port).start()
    clip = make_clip(12, num_frames=6, size=(64, 80), num_objects=(2, 2))
    model = masklet.load_model("masklet-nano")
    local = masklet.VideoPredictor(model)
    ls = local.init_state(list(clip.frames))
    try:
        with Client(proc.url, retries=40, backoff=0.1) as c:
            remote = c.video_predictor()
            rs = remote.init_state(list(clip.frames))
            for pred, st in ((local, ls), (remote, rs)):
                pred.add_new_points_or_box(st, 1, 1, points=[[30, 25]], labels=[1])
                pred.add_new_points_or_box(st, 1, 2, box=[5, 5, 40, 45])
                list(pred.propagate_in_video(st))
            old = rs.session_id
            proc.kill()  # the server dies, and comes back empty
            proc = ServerProcess(port=port).start()
            a = [local.add_new_points_or_box(ls, 3, 1, points=[[35, 30]], labels=[0], clear_old_points=False)]
            b = [remote.add_new_points_or_box(rs, 3, 1, points=[[35, 30]], labels=[0], clear_old_points=False)]
            a += list(local.propagate_in_video(ls, reverse=True))
            b += list(remote.propagate_in_video(rs, reverse=True))
            assert rs.session_id != old and len(a) == len(b) == 3
            for x, y in zip(a, b):
                assert x.frame_idx == y.frame_idx and bool((x.masks == y.masks).all())
    finally:
        proc.stop()


def test_evicted_sessions_replay_with_the_same_masks():
    """A session byte budget of 1 byte: each operation evicts the other session, which replays."""
    proc = ServerProcess(env={"MASKLET_SESSION_BYTES": "1"}).start()
    clip = make_clip(14, num_frames=4, size=(48, 64), num_objects=(2, 2))
    model = masklet.load_model("masklet-nano")
    try:
        with Client(proc.url) as c:
            local, remote = masklet.VideoPredictor(model), c.video_predictor()
            pairs = [(local.init_state(list(clip.frames)), remote.init_state(list(clip.frames))) for _ in range(2)]
            ids = [rs.session_id for _, rs in pairs]
            for step, (x, y, label) in enumerate([(20, 20, 1), (30, 25, 1), (25, 30, 0)]):
                for ls, rs in pairs:
                    a = local.add_new_points_or_box(
                        ls, 1, 1, points=[[x, y]], labels=[label], clear_old_points=step == 0
                    )
                    b = remote.add_new_points_or_box(
                        rs, 1, 1, points=[[x, y]], labels=[label], clear_old_points=step == 0
                    )
                    assert bool((a.masks == b.masks).all())
            for ls, rs in pairs:
                a, b = list(local.propagate_in_video(ls)), list(remote.propagate_in_video(rs))
                assert len(a) == len(b) == 3 and all(bool((x.masks == y.masks).all()) for x, y in zip(a, b))
            assert [rs.session_id for _, rs in pairs] != ids  # they were evicted and replayed
    finally:
        proc.stop()


def test_graceful_shutdown_ends_open_streams():
    from websockets.sync.client import connect

    proc = ServerProcess().start()
    try:
        with connect(proc.url.replace("http", "ws") + "/v1/streams") as ws:
            from masklet.server.codec import npy_bytes

            assert json.loads(ws.recv())["type"] == "ready"
            ws.send(npy_bytes(make_scene(1, size=(48, 64)).image))
            assert json.loads(ws.recv())["type"] == "frame"
            proc.proc.terminate()  # SIGTERM: graceful
            end = json.loads(ws.recv(timeout=15))
            assert end == {"type": "end", "reason": "shutdown", "frames": 1}
        assert proc.proc.wait(30) in (0, -15)  # uvicorn re-raises SIGTERM once it has shut down
    finally:
        proc.stop()


def test_graceful_shutdown_finishes_in_flight_requests_and_ends_propagation():
    """SIGTERM: /ready turns 503, an open propagation stream ends with a "shutdown" final event (the
    client raises ``server_shutdown``, the frames so far logged), an in-flight request still gets its answer."""
    from masklet.client import RemoteError
    from masklet.server.codec import npy_bytes

    proc = ServerProcess().start()
    clip = make_clip(17, num_frames=30, size=(48, 64), num_objects=(1, 1))
    scene = make_scene(18, size=(64, 80)).image
    try:
        with Client(proc.url, retries=0) as c:
            iid = httpx.post(f"{proc.url}/v1/images", content=npy_bytes(scene), timeout=60).json()["imageId"]
            v = c.video_predictor()
            s = v.init_state(list(clip.frames))
            v.add_new_points_or_box(s, 0, 1, points=[[30, 25]], labels=[1])
            frames = v.propagate_in_video(s)
            got = [next(frames), next(frames)]
            answer: dict = {}

            def in_flight() -> None:
                r = httpx.post(
                    f"{proc.url}/v1/images/{iid}/automatic",
                    timeout=120,
                    json={"pointsPerSide": 8, "predIouThresh": 0.5, "stabilityScoreThresh": 0.6},
                )
                answer["status"], answer["records"] = r.status_code, r.json().get("records")

            thread = threading.Thread(target=in_flight)
            thread.start()
            time.sleep(0.3)
            proc.proc.terminate()  # SIGTERM: graceful
            try:
                assert httpx.get(f"{proc.url}/ready", timeout=2).status_code == 503
            except httpx.ConnectError:
                pass  # already past the grace second on a slow host
            with pytest.raises(RemoteError) as err:
                for frame in frames:
                    got.append(frame)
            assert err.value.code == "server_shutdown" and 2 <= len(got) < 30
            assert s.log[-1] == ("propagate", {"start": 0, "legs": [(False, len(got))]})
            thread.join(120)
            assert answer["status"] == 200 and len(answer["records"]) > 0
        assert proc.proc.wait(60) in (0, -15)
    finally:
        proc.stop()
