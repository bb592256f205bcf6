"""masklet on Ray Serve (local 2-CPU cluster on loopback, 2 CPU replicas, masklet-nano): affinity, replica
death + replay, live streams over WebSocket, autoscaling config."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict

import pytest

pytest.importorskip("ray.serve")
pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
import ray
from ray import serve

import masklet
from masklet.client import Client
from masklet.server.ray_app import REPLICA_HEADER, STREAM_LOST, build_app, parse_autoscale, request_key
from masklet.server.settings import Settings
from masklet.synthetic import make_clip, make_scene
from reference.server import free_port


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(Settings(), replicas=2, num_cpus=1), name="masklet", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # both replicas up (each loads the model before it is ready)
        if live(url) == 2:
            break
        time.sleep(0.5)
    yield url
    serve.shutdown()
    ray.shutdown()


def live(url: str) -> int:
    """How many replicas answer (0 while none is up)."""
    r = httpx.get(f"{url}/v1/ray/replicas", timeout=30)
    return len(r.json()["replicas"]) if r.status_code == 200 else 0


def recording_client(url: str, seen: list, **kw) -> Client:
    """A client that records (method, path, replica, status) of every response."""
    c = Client(url, **kw)
    c.http.event_hooks["response"].append(
        lambda r: seen.append((r.request.method, r.request.url.path, r.headers.get(REPLICA_HEADER, ""), r.status_code))
    )
    return c


def by_id(seen: list) -> dict[str, set[str]]:
    """The replicas that answered successful calls about each id (a miss before the upload does not hold it)."""
    out: dict[str, set[str]] = defaultdict(set)
    for _, path, rid, status in seen:
        key = request_key(path)
        if key and status < 400:
            out[key].add(rid)
    return out


def test_request_keys_and_autoscale_parse():
    assert request_key("/v1/images/abc/predict") == "abc" and request_key("/v1/images/predict_batch") is None
    assert request_key("/v1/videos/s1/propagate") == "s1" and request_key("/v1/jobs/j9") == "j9"
    assert request_key("/v1/images") is None and request_key("/v1/videos") is None
    assert parse_autoscale("1:3") == (1, 3)
    with pytest.raises(Exception, match="MIN:MAX"):
        parse_autoscale("3")
    with pytest.raises(Exception, match="MIN <= MAX"):
        parse_autoscale("3:1")


def test_concurrent_image_and_video_clients_stick_to_their_replica(cluster):
    model = masklet.load_model("masklet-nano")
    scenes = [make_scene(s, size=(64, 80)) for s in range(4)]
    clip = make_clip(3, num_frames=4, size=(48, 64), num_objects=(1, 1))
    seen: list = []
    errors: list = []
    results: dict = {}

    def image_user(i: int) -> None:
        try:
            with recording_client(cluster, seen) as c:
                p = c.image_predictor()
                p.set_image(scenes[i].image)
                results[("img", i)] = [p.predict([[10 + 5 * k, 20]], [1])[0] for k in range(3)]
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    def video_user(i: int) -> None:
        try:
            with recording_client(cluster, seen) as c:
                v = c.video_predictor()
                st = v.init_state(list(clip.frames))
                v.add_new_points_or_box(st, 0, 1, points=[[20 + i, 20]], labels=[1])
                results[("vid", i)] = [f.masks for f in v.propagate_in_video(st)]
                v.close_state(st)
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=image_user, args=(i,)) for i in range(4)]
    threads += [threading.Thread(target=video_user, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:2]
    held = by_id(seen)
    assert len(held) >= 6 and all(len(r) == 1 and "" not in r for r in held.values()), held
    assert len({rid for _, _, rid, _ in seen if rid}) == 2  # the stateless calls spread over both replicas
    local = masklet.ImagePredictor(model)
    for i in range(4):  # the same masks as in process
        local.set_image(scenes[i].image)
        for k, got in enumerate(results[("img", i)]):
            assert (local.predict([[10 + 5 * k, 20]], [1])[0] == got).all()
    vp = masklet.VideoPredictor(model)
    for i in range(2):
        st = vp.init_state(list(clip.frames))
        vp.add_new_points_or_box(st, 0, 1, points=[[20 + i, 20]], labels=[1])
        assert all((f.masks == g).all() for f, g in zip(vp.propagate_in_video(st), results[("vid", i)], strict=True))


def test_metrics_are_per_replica(cluster):
    text = httpx.get(f"{cluster}/metrics", timeout=30).text
    labelled = {
        line.split('replica="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("masklet_requests_total{") and 'replica="' in line
    }
    assert len(labelled) == 2
    assert "masklet_ray_routed_total{" in text
    r = httpx.get(f"{cluster}/v1/models", headers={"X-Request-ID": "abc123"}, timeout=30)
    assert r.headers.get_list("x-request-id") == ["abc123"] and r.headers[REPLICA_HEADER]
    bad = httpx.get(f"{cluster}/v1/images/nope", timeout=30)  # an unknown id: a 4xx envelope
    assert bad.status_code == 404 and bad.json()["error"]["code"] == "unknown_image"


def test_ingress_restart_finds_each_session_on_its_replica(cluster):
    """The ingress dies and loses its id map: its successor asks the replicas who holds an unknown session, so
    sessions go on where they are (same ids, no replay, pinned routing) and give the in-process masks."""
    model = masklet.load_model("masklet-nano")
    clip = make_clip(5, num_frames=4, size=(48, 64), num_objects=(1, 1))
    seen: list = []
    with recording_client(cluster, seen, retries=60, backoff=0.2) as c:
        v = c.video_predictor()
        states = [v.init_state(list(clip.frames)) for _ in range(3)]
        for i, st in enumerate(states):
            v.add_new_points_or_box(st, 0, 1, points=[[20 + i, 20]], labels=[1])
        ids = [st.session_id for st in states]
        _kill_replica("", deployment="MaskletIngress")
        got = [[f.masks for f in v.propagate_in_video(st)] for st in states]
        text = c.request("GET", "/metrics").decode()
    assert [st.session_id for st in states] == ids  # not replayed: found on their replicas
    held = by_id(seen)
    assert all(len(held[sid]) == 1 for sid in ids), held
    assert 'routing="pinned"' in text and 'routing="spread"' not in text, text[-400:]  # the new ingress's counts
    vp = masklet.VideoPredictor(model)
    for i in range(3):
        st = vp.init_state(list(clip.frames))
        vp.add_new_points_or_box(st, 0, 1, points=[[20 + i, 20]], labels=[1])
        assert all((f.masks == g).all() for f, g in zip(vp.propagate_in_video(st), got[i], strict=True))


def _kill_replica(unique_id: str, deployment: str = "MaskletReplica") -> None:
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if unique_id in actor["name"] and deployment in actor["name"]:
            ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)
            return
    raise AssertionError(f"no actor for replica {unique_id}")


def test_replica_killed_mid_session_client_replays_with_the_same_masks(cluster):
    model = masklet.load_model("masklet-nano")
    clip = make_clip(12, num_frames=5, size=(64, 80), num_objects=(2, 2))
    local = masklet.VideoPredictor(model)
    ls = local.init_state(list(clip.frames))
    seen: list = []
    with recording_client(cluster, seen, retries=60, backoff=0.2) as c:
        remote = c.video_predictor()
        rs = remote.init_state(list(clip.frames))
        for pred, st in ((local, ls), (remote, rs)):
            pred.add_new_points_or_box(st, 1, 1, points=[[30, 25]], labels=[1])
            pred.add_new_points_or_box(st, 1, 2, box=[5, 5, 40, 45])
        old = rs.session_id
        (holder,) = by_id(seen)[old]
        image_pred, scene = None, None
        for seed in range(8):  # an image held by the same replica (uploads spread; bounded tries)
            p, sc = c.image_predictor(), make_scene(40 + seed, size=(64, 80))
            p.set_image(sc.image)
            p.predict([[30, 30]], [1])
            if by_id(seen)[p._images[0][0]] == {holder}:
                image_pred, scene = p, sc
                break
        _kill_replica(holder)
        if image_pred is not None:  # the image is re-uploaded to a live replica and answers the same
            ref = masklet.ImagePredictor(model)
            ref.set_image(scene.image)
            assert (image_pred.predict([[20, 40]], [1])[0] == ref.predict([[20, 40]], [1])[0]).all()
        a = [local.add_new_points_or_box(ls, 3, 1, points=[[35, 30]], labels=[0], clear_old_points=False)]
        b = [remote.add_new_points_or_box(rs, 3, 1, points=[[35, 30]], labels=[0], clear_old_points=False)]
        a += list(local.propagate_in_video(ls))
        b += list(remote.propagate_in_video(rs))
    assert rs.session_id != old  # replayed on another replica
    (new_holder,) = by_id(seen)[rs.session_id]
    assert new_holder != holder
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.frame_idx == y.frame_idx and bool((x.masks == y.masks).all())


def _stream_script(tracker, frames, log: list | None = None) -> list:
    """The same frames and prompts for a local and a remote stream tracker: every result, in order."""
    out = []
    for i, frame in enumerate(frames):
        out.append(tracker.track(frame))
        if i == 1:
            out.append(tracker.add_points(1, [[30, 25]], [1]))
        if i == 2:
            out.append(tracker.add_box(2, [5, 5, 40, 45]))
        if log is not None:
            log.append(i)
    return out


def _same_frames(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        x.frame_idx == y.frame_idx and list(x.obj_ids) == list(y.obj_ids) and bool((x.masks == y.masks).all())
        for x, y in zip(a, b)
    )


def test_streams_through_serve_match_local_and_stay_on_one_replica(cluster):
    """Two concurrent WebSocket streams through the ingress: each is answered by one replica for its whole life
    (the replica's own count of the stream's messages), and gives the in-process StreamTracker's masks."""
    model = masklet.load_model("masklet-nano")
    clips = [make_clip(20 + k, num_frames=5, size=(64, 80), num_objects=(2, 2)) for k in range(2)]
    got: dict = {}
    errors: list = []

    def user(k: int) -> None:
        try:
            with Client(cluster) as c:
                remote = c.stream_tracker()
                results = _stream_script(remote, clips[k].frames)
                held = {
                    r["replica"]: r["streams"]
                    for r in httpx.get(f"{cluster}/v1/ray/replicas", timeout=30).json()["replicas"]
                }
                got[k] = (remote._ready, results, held)
                remote.close()
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=user, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:2]
    for k in range(2):
        ready, results, held = got[k]
        sid, rid = ready["streamId"], ready["replica"]
        assert rid in held and held[rid].get(sid) == 1 + 5 + 2  # connect + 5 frames + 2 prompts, all on rid
        assert all(sid not in streams for other, streams in held.items() if other != rid)
        assert _same_frames(_stream_script(masklet.StreamTracker(model), clips[k].frames), results)
    print(f"\nstreams on replicas {[got[k][0]['replica'] for k in range(2)]}")


def test_replica_killed_mid_stream_ends_it_and_the_client_replays(cluster):
    """Kill the replica holding a stream: a raw socket on it gets the final ``stream_lost`` event (close 1012);
    the client's tracker opens a new stream on another replica, replays, and ends with the in-process masks."""
    from contextlib import ExitStack

    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and live(cluster) != 2:  # the replica an earlier test killed is back
        time.sleep(0.5)
    model = masklet.load_model("masklet-nano")
    clip = make_clip(31, num_frames=7, size=(64, 80), num_objects=(2, 2))
    with Client(cluster, retries=60, backoff=0.2) as c, ExitStack() as sockets:
        remote = c.stream_tracker()
        before: list = []
        results = _stream_script(remote, clip.frames[:4], before)
        holder = remote._ready["replica"]
        raw = None
        for _ in range(16):  # a second, raw stream on the same replica (streams spread; bounded tries)
            ws = sockets.enter_context(connect(cluster.replace("http", "ws") + "/v1/streams"))
            ready = json.loads(ws.recv(timeout=30))
            if ready["replica"] == holder:
                raw = ws
                break
            ws.close()
        assert raw is not None
        _kill_replica(holder)
        if raw is not None:
            raw.send(b"not an image")  # any message: the ingress finds its replica gone
            event = json.loads(raw.recv(timeout=60))
            assert event["type"] == "error" and event["error"]["code"] == STREAM_LOST and event["status"] == 503
            with pytest.raises(ConnectionClosed):
                raw.recv(timeout=10)
            assert raw.close_code == 1012
        rest = clip.frames[4:]
        for frame in rest:
            results.append(remote.track(frame))
        assert remote._ready["replica"] != holder  # resumed on another replica
        remote.close()
    local = masklet.StreamTracker(model)
    want = _stream_script(local, clip.frames[:4]) + [local.track(f) for f in rest]
    assert _same_frames(want, results)
    print(f"\nstream resumed from {holder} on {remote._ready['replica']}; raw socket on it: {raw is not None}")


def test_autoscaling_config_is_applied(cluster):
    """Redeploy with --autoscale 1:2 (fast delays): starts at 1 replica, scales up under load."""
    serve.run(
        build_app(
            Settings(),
            autoscale=(1, 2),
            num_cpus=1,
            autoscale_options={
                "target_ongoing_requests": 1,
                "upscale_delay_s": 0.5,
                "downscale_delay_s": 600,
                "initial_replicas": 1,
            },
        ),
        name="masklet",
        route_prefix="/",
    )
    dep = serve.status().applications["masklet"].deployments["MaskletReplica"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and live(cluster) != 1:
        time.sleep(0.5)
    assert dep.status is not None
    scene = make_scene(1, size=(96, 128))
    stop = time.monotonic() + 60
    counts: list[int] = []

    def load() -> None:
        with Client(cluster, retries=20, backoff=0.2) as c:
            g = c.mask_generator(points_per_side=8)
            while time.monotonic() < stop and (not counts or counts[-1] < 2):
                g.generate(scene.image)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    while time.monotonic() < stop:
        counts.append(live(cluster))
        if counts[-1] >= 2:
            break
        time.sleep(0.5)
    for t in threads:
        t.join(90)
    assert counts and counts[0] == 1 and max(counts) == 2, counts


def test_documented_serve_config_validates_and_builds():
    """docs/ray-serve.yaml is a valid Serve deploy config whose import path builds the application."""
    from pathlib import Path

    import yaml
    from ray.serve.schema import ServeDeploySchema

    from masklet.server.ray_app import app_builder

    doc = yaml.safe_load((Path(__file__).resolve().parents[1] / "docs" / "ray-serve.yaml").read_text())
    schema = (
        ServeDeploySchema.model_validate(doc)
        if hasattr(ServeDeploySchema, "model_validate")
        else ServeDeploySchema.parse_obj(doc)
    )
    (app,) = schema.applications
    assert app.import_path == "masklet.server.ray_app:app_builder"
    built = app_builder(app.args)
    assert type(built).__name__ == "Application"


def test_predict_batch_over_images_on_both_replicas(cluster):
    """A batch whose images live on different replicas is split per holder and merged in order."""
    scenes = [make_scene(70 + s, size=(48, 64)) for s in range(6)]
    seen: list = []
    with recording_client(cluster, seen) as c:
        p = c.image_predictor()
        p.set_images([s.image for s in scenes])
        got = p.predict_batch([[[10.0 + 4 * i, 20.0]] for i in range(6)], [[1]] * 6)
        for iid, _, _ in p._images:  # who holds each image (a pinned lookup)
            c.request("GET", f"/v1/images/{iid}")
    holders = set().union(*(by_id(seen)[iid] for iid, _, _ in p._images))
    ref = masklet.ImagePredictor(masklet.load_model("masklet-nano"))
    ref.set_images([s.image for s in scenes])
    want = ref.predict_batch([[[10.0 + 4 * i, 20.0]] for i in range(6)], [[1]] * 6)
    assert len(got[0]) == 6 and all((a == b).all() for a, b in zip(got[0], want[0], strict=True))
    batch_replicas = [rid for m, path, rid, _ in seen if path.endswith("predict_batch")]
    print(f"\npredict_batch over {len(holders)} replica(s)")
    assert set(batch_replicas[-1].split(",")) == holders
