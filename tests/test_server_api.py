"""masklet serve + masklet.client against the local predictors, on a real uvicorn server (loopback).

Every remote twin must give exactly the local masks and scores; every bad request a 4xx envelope.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zipfile
import zlib

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
from PIL import Image

import masklet
from masklet.client import Client, RemoteError
from masklet.errors import ImageDecodeError, InvalidInputError, PredictorStateError
from masklet.synthetic import make_clip, make_scene
from reference.server import ServerProcess

KEY = "test-key-123"


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    clip = make_clip(4, num_frames=6, size=(64, 80), num_objects=(1, 1))
    folder = root / "clip"
    folder.mkdir()
    for i, frame in enumerate(clip.frames):
        Image.fromarray(frame).save(folder / f"{i:05d}.png")
    return root


@pytest.fixture(scope="module")
def server(media):
    env = {
        "MASKLET_API_KEYS": KEY,
        "MASKLET_MEDIA_ROOTS": str(media),
        "MASKLET_MAX_BODY_BYTES": str(4 * 2**20),
        "MASKLET_MAX_PIXELS": "4000000",
        "MASKLET_MAX_FRAMES": "40",
    }
    proc = ServerProcess(env=env, args=["--model", "masklet-nano"]).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(server):
    with Client(server.url, api_key=KEY, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def model():
    return masklet.load_model("masklet-nano")


@pytest.fixture(scope="module")
def scene():
    return make_scene(3, size=(96, 128))


def test_health_ready_metrics_open(server):
    assert httpx.get(f"{server.url}/health").json() == {"status": "healthy"}
    ready = httpx.get(f"{server.url}/ready").json()
    assert ready["ready"] and ready["models"] == {"masklet-nano": "RUNNING"}
    assert "masklet_requests_total" in httpx.get(f"{server.url}/metrics").text
    assert httpx.get(f"{server.url}/openapi.json").status_code == 200
    rid = "my-request-7"
    r = httpx.get(f"{server.url}/v1/models", headers={"X-Request-ID": rid})
    assert r.status_code == 401 and r.headers["x-request-id"] == rid and r.json()["error"]["requestId"] == rid


def assert_same_output(local: np.ndarray, remote: np.ndarray) -> None:
    """Binary masks equal; scores and logits within 1e-4: the local predictor decodes a lone click through
    its cached-click decoder, the server through the prompt batcher's decoder call (same maths, float
    rounding apart)."""
    if local.dtype == bool:
        np.testing.assert_array_equal(local, remote)
    else:
        np.testing.assert_allclose(local, remote, rtol=0, atol=1e-4)


def test_image_prompts_match_local(client, model, scene):
    local, remote = masklet.ImagePredictor(model), client.image_predictor()
    local.set_image(scene.image)
    remote.set_image(scene.image)
    cases = [
        {"point_coords": [[40.5, 30.25]], "point_labels": [1]},
        {"point_coords": [[40, 30], [70, 60]], "point_labels": [1, 0], "multimask_output": False},
        {"box": [10, 12, 80.5, 70]},
        {"box": [[10, 12, 60, 70], [50, 20, 120, 90]], "multimask_output": True},  # two objects in one call
        {"point_coords": [[0.3, 0.4]], "point_labels": [1], "normalize_coords": False},
        {"point_coords": [[40, 30]], "point_labels": [1], "return_logits": True},
    ]
    for kwargs in cases:
        a, b = local.predict(**kwargs), remote.predict(**kwargs)
        for x, y in zip(a, b):
            assert x.dtype == y.dtype and x.shape == y.shape
            assert_same_output(x, y)
    # refinement from the returned logits round-trips exactly
    _masks, scores, low = remote.predict(point_coords=[[40, 30]], point_labels=[1])
    prior = low[None, int(np.argmax(scores))]
    a = local.predict([[40, 30], [60, 50]], [1, 0], mask_input=prior, multimask_output=False)
    b = remote.predict([[40, 30], [60, 50]], [1, 0], mask_input=prior, multimask_output=False)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    # same error types, raised before sending
    for bad, err in (
        ({"point_coords": [[1, 2]], "point_labels": [4]}, InvalidInputError),
        ({"point_coords": [[1, np.nan]], "point_labels": [1]}, InvalidInputError),
        ({"box": [5, 5, 1, 1]}, InvalidInputError),
    ):
        with pytest.raises(err) as local_err:
            local.predict(**bad)
        with pytest.raises(err) as remote_err:
            remote.predict(**bad)
        assert str(local_err.value) == str(remote_err.value)
    with pytest.raises(PredictorStateError):
        client.image_predictor().predict([[1, 1]], [1])
    with pytest.raises(ImageDecodeError):
        remote.set_image(b"not an image")


def test_embeddings_round_trip_and_batch(client, model, scene):
    remote = client.image_predictor()
    remote.set_image(scene.image)
    emb = remote.get_embeddings()
    local = masklet.ImagePredictor(model)
    local.set_image(scene.image)
    for x, y in zip(local.get_embeddings().levels, emb.levels):
        assert torch_equal(x, y)
    other = client.image_predictor()
    other.set_embeddings(emb)  # no encoder: registered from safetensors
    a, b = remote.predict([[50, 40]], [1]), other.predict([[50, 40]], [1])
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    # a batch of two images with different numbers of objects
    second = make_scene(9, size=(80, 100)).image
    local.set_images([scene.image, second])
    remote.set_images([scene.image, second])
    args = {
        "point_coords_batch": [[[40, 30]], None],
        "point_labels_batch": [[1], None],
        "box_batch": [None, [[5, 5, 50, 40], [30, 20, 90, 70]]],
    }
    a, b = local.predict_batch(**args), remote.predict_batch(**args)
    for xs, ys in zip(a, b):
        for x, y in zip(xs, ys):
            assert x.shape == y.shape
            np.testing.assert_allclose(x, y, atol=1e-4)  # the local batch shares one encoder pass
    assert all(np.mean(x != y) < 1e-3 for x, y in zip(a[0], b[0]))


def torch_equal(a, b) -> bool:
    return a.shape == b.shape and bool((a.cpu() == b.cpu()).all())


def test_automatic_masks_match_local(client, model, scene):
    opts = {"points_per_side": 8, "pred_iou_thresh": 0.5, "stability_score_thresh": 0.6, "min_mask_region_area": 10}
    for mode in ("binary_mask", "coco_rle", "uncompressed_rle"):
        local = masklet.MaskGenerator(model, output_mode=mode, **opts).generate(scene.image)
        remote = client.mask_generator(output_mode=mode, **opts).generate(scene.image)
        assert len(local) == len(remote) > 0
        for x, y in zip(local, remote):
            assert set(x) == set(y)
            if mode == "binary_mask":
                np.testing.assert_array_equal(x["segmentation"], y["segmentation"])
            else:
                assert x["segmentation"] == y["segmentation"]
            for k in ("area", "bbox", "predicted_iou", "stability_score", "point_coords", "crop_box"):
                assert x[k] == y[k], k
    with pytest.raises(InvalidInputError):
        client.mask_generator(points_per_side=0)
    with pytest.raises(InvalidInputError):
        client.mask_generator(pred_iou_thresh=3.0)


def _run_video(pred, state):
    """The video parity scenario: clicks, a box, a refinement, a mask, both directions, removal."""
    out = []
    out.append(pred.add_new_points_or_box(state, 2, 1, points=[[30, 25]], labels=[1]))
    out.append(pred.add_new_points_or_box(state, 2, 2, box=[5, 5, 40, 45]))
    out.extend(pred.propagate_in_video(state))
    out.append(pred.add_new_points_or_box(state, 4, 1, points=[[35, 30]], labels=[0], clear_old_points=False))
    out.extend(pred.propagate_in_video(state, start_frame_idx=4, reverse=True))
    mask = np.zeros((64, 80), bool)
    mask[10:30, 40:70] = True
    out.append(pred.add_new_mask(state, 5, 3, mask))
    out.extend(pred.propagate_in_video(state, start_frame_idx=0, max_frame_num_to_track=3))
    ids, updated = pred.remove_object(state, 2)
    out.extend(updated)
    out.append(pred.clear_all_prompts_in_frame(state, 4, 1))
    out.extend(pred.propagate_in_video(state))
    return out, ids


def test_video_session_matches_local(client, model):
    clip = make_clip(4, num_frames=6, size=(64, 80), num_objects=(2, 2))
    local, remote = masklet.VideoPredictor(model), client.video_predictor()
    a, ids_a = _run_video(local, local.init_state(list(clip.frames)))
    state = remote.init_state(list(clip.frames))
    b, ids_b = _run_video(remote, state)
    assert ids_a == ids_b and len(a) == len(b) > 20
    for x, y in zip(a, b):
        assert x.frame_idx == y.frame_idx and list(x.obj_ids) == list(y.obj_ids)
        assert torch_equal(x.masks, y.masks)
    with pytest.raises(InvalidInputError):
        remote.add_new_points_or_box(state, 99, 1, points=[[1, 1]], labels=[1])
    with pytest.raises(InvalidInputError):
        remote.add_new_points_or_box(state, 0, 1)
    # exact logits on request; results downloadable as COCO JSON and DAVIS PNGs
    exact = client.video_predictor(exact_logits=True)
    s2 = exact.init_state(list(clip.frames))
    ls = local.init_state(list(clip.frames))
    tl = local.add_new_points_or_box(ls, 1, 1, points=[[30, 25]], labels=[1])
    tr = exact.add_new_points_or_box(s2, 1, 1, points=[[30, 25]], labels=[1])
    assert torch_equal(tl.mask_logits, tr.mask_logits)
    list(exact.propagate_in_video(s2))
    coco = client.request("GET", f"/v1/videos/{s2.session_id}/results", params={"format": "coco"})
    assert [f["frame_index"] for f in coco["frames"]] == list(range(1, 6))
    davis = client.request("GET", f"/v1/videos/{s2.session_id}/results", params={"format": "davis"})
    assert len(zipfile.ZipFile(io.BytesIO(davis)).namelist()) == 5
    exact.close_state(s2)


def test_propagation_job_and_cancel(client, model, server):
    clip = make_clip(6, num_frames=30, size=(64, 80), num_objects=(1, 1))
    remote = client.video_predictor()
    state = remote.init_state(list(clip.frames))
    remote.add_new_points_or_box(state, 0, 1, points=[[30, 25]], labels=[1])
    frames = remote.propagate_in_video(state)
    next(frames), next(frames)
    frames.close()  # the client goes away: the server must stop soon after
    base = f"/v1/videos/{state.session_id}"
    import time

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        log = client.request("GET", f"{base}/log")
        if log[-1]["op"] == "propagate":
            break
        time.sleep(0.1)
    assert log[-1]["op"] == "propagate" and sum(log[-1]["args"]["framesDone"]) < 30
    job = client.request("POST", f"{base}/jobs", json={"direction": "both", "startFrameIdx": 10})
    while job["status"] == "running":
        time.sleep(0.1)
        job = client.request("GET", f"/v1/jobs/{job['jobId']}")
    assert job["status"] == "completed" and job["done"] == job["total"] == 31
    job = client.request("POST", f"{base}/jobs", json={})
    cancelled = client.request("DELETE", f"/v1/jobs/{job['jobId']}")
    assert cancelled["status"] in ("canceled", "completed") and cancelled["done"] <= 30
    assert httpx.get(f"{server.url}/health", timeout=2).status_code == 200


def test_stream_matches_local(client, model):
    clip = make_clip(8, num_frames=8, size=(64, 80), num_objects=(2, 2))
    local, remote = masklet.StreamTracker(model), client.stream_tracker()
    with pytest.raises(PredictorStateError):
        remote.add_points(1, [[1, 1]], [1])
    for i, frame in enumerate(clip.frames):
        pairs = [(local.track(frame), remote.track(frame))]
        if i == 1:
            pairs.append((local.add_points(1, [[30, 25]], [1]), remote.add_points(1, [[30, 25]], [1])))
        if i == 3:
            pairs.append((local.add_box(2, [5, 5, 40, 45]), remote.add_box(2, [5, 5, 40, 45])))
        if i == 6:
            assert local.remove_object(1) == remote.remove_object(1)
        for x, y in pairs:
            assert x.frame_idx == y.frame_idx and list(x.obj_ids) == list(y.obj_ids)
            assert torch_equal(x.masks, y.masks)
    with pytest.raises(InvalidInputError):
        remote.track(np.zeros((10, 10, 3), np.uint8))  # wrong size: checked locally
    with pytest.raises(InvalidInputError):
        remote.add_points(1, [[1, 1]], [9])
    remote.close()
    with pytest.raises(InvalidInputError):
        client.stream_tracker(fill_hole_area=-1)
    with pytest.raises(InvalidInputError):
        client.stream_tracker(turbo=True)
    local, remote = masklet.StreamTracker(model, non_overlap_masks=True), client.stream_tracker(non_overlap_masks=True)
    for i, frame in enumerate(clip.frames[:4]):
        x, y = local.track(frame), remote.track(frame)
        if i == 0:
            x, y = local.add_box(1, [5, 5, 60, 50]), remote.add_box(1, [5, 5, 60, 50])
            x, y = local.add_points(2, [[30, 25]], [1]), remote.add_points(2, [[30, 25]], [1])
        assert torch_equal(x.masks, y.masks)
    remote.close()


# ----------------------------------------------------------------------------- bad requests


def _png(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h (a decompression bomb when large) with a tiny body."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = struct.pack(">II", w, h) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def _npy_header(shape) -> bytes:
    header = f"{{'descr': '|u1', 'fortran_order': False, 'shape': {tuple(shape)}, }}".encode()
    header += b" " * (63 - len(header) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


@pytest.fixture(scope="module")
def ids(client, scene):
    p = client.image_predictor()
    p.set_image(scene.image)
    v = client.video_predictor()
    state = v.init_state(list(make_clip(4, num_frames=3, size=(64, 80), num_objects=(1, 1)).frames))
    v.add_new_points_or_box(state, 0, 1, points=[[30, 25]], labels=[1])
    return {"image": p._images[0][0], "session": state.session_id}


J = {"content-type": "application/json"}
BAD = [
    # (name, method, path, kwargs, status, code)
    (
        "malformed json",
        "POST",
        "/v1/images/{image}/predict",
        {"content": b"{bad", "headers": J},
        422,
        "validation_error",
    ),
    (
        "not an object",
        "POST",
        "/v1/images/{image}/predict",
        {"content": b"[1,2]", "headers": J},
        422,
        "validation_error",
    ),
    (
        "coords not numbers",
        "POST",
        "/v1/images/{image}/predict",
        {"json": {"pointCoords": "abc", "pointLabels": [1]}},
        400,
        "invalid_input",
    ),
    (
        "NaN coords",
        "POST",
        "/v1/images/{image}/predict",
        {"content": b'{"pointCoords": [[1, NaN]], "pointLabels": [1]}', "headers": J},
        400,
        "invalid_input",
    ),
    (
        "label out of range",
        "POST",
        "/v1/images/{image}/predict",
        {"json": {"pointCoords": [[1, 2]], "pointLabels": [7]}},
        400,
        "invalid_input",
    ),
    (
        "labels shape",
        "POST",
        "/v1/images/{image}/predict",
        {"json": {"pointCoords": [[1, 2], [3, 4]], "pointLabels": [1]}},
        400,
        "invalid_input",
    ),
    (
        "coords without labels",
        "POST",
        "/v1/images/{image}/predict",
        {"json": {"pointCoords": [[1, 2]]}},
        400,
        "invalid_input",
    ),
    ("inverted box", "POST", "/v1/images/{image}/predict", {"json": {"box": [50, 50, 10, 10]}}, 400, "invalid_input"),
    ("box of 3", "POST", "/v1/images/{image}/predict", {"json": {"box": [1, 2, 3]}}, 400, "invalid_input"),
    (
        "mask input shape",
        "POST",
        "/v1/images/{image}/predict",
        {
            "json": {
                "box": [1, 2, 30, 40],
                "maskInput": {"shape": [1, 8, 8], "data": base64.b64encode(b"\0" * 256).decode()},
            }
        },
        400,
        "invalid_input",
    ),
    (
        "mask input base64",
        "POST",
        "/v1/images/{image}/predict",
        {"json": {"maskInput": {"shape": [1, 64, 64], "data": "!!"}}},
        400,
        "invalid_input",
    ),
    (
        "bool as list",
        "POST",
        "/v1/images/{image}/predict",
        {"json": {"box": [1, 2, 30, 40], "multimaskOutput": [1]}},
        422,
        "validation_error",
    ),
    (
        "unknown field",
        "POST",
        "/v1/images/{image}/predict",
        {"json": {"box": [1, 2, 30, 40], "colour": 1}},
        422,
        "validation_error",
    ),
    (
        "negative hole area",
        "POST",
        "/v1/images/{image}/predict",
        {"json": {"box": [1, 2, 30, 40], "maxHoleArea": -1}},
        422,
        "validation_error",
    ),
    ("unknown image", "POST", "/v1/images/0123/predict", {"json": {"box": [1, 2, 3, 4]}}, 404, "unknown_image"),
    ("unknown image info", "GET", "/v1/images/nope", {}, 404, "unknown_image"),
    ("empty batch", "POST", "/v1/images/predict_batch", {"json": {"items": []}}, 422, "validation_error"),
    (
        "undecodable image",
        "POST",
        "/v1/images",
        {"content": b"GIF89a-garbage", "headers": {"content-type": "image/gif"}},
        400,
        "image_decode_error",
    ),
    (
        "empty upload",
        "POST",
        "/v1/images",
        {"content": b"", "headers": {"content-type": "image/png"}},
        400,
        "image_decode_error",
    ),
    (
        "decompression bomb",
        "POST",
        "/v1/images",
        {"content": _png(30000, 30000), "headers": {"content-type": "image/png"}},
        400,
        "invalid_input",
    ),
    (
        "huge npy dims",
        "POST",
        "/v1/images",
        {"content": _npy_header((100000, 100000, 3)), "headers": {"content-type": "application/x-npy"}},
        400,
        "invalid_input",
    ),
    (
        "oversized body",
        "POST",
        "/v1/images",
        {"content": b"\0" * (4 * 2**20 + 1), "headers": {"content-type": "image/png"}},
        413,
        "payload_too_large",
    ),
    ("bad data uri", "POST", "/v1/images", {"json": {"image": "data:image/png;base64,@@@"}}, 400, "image_decode_error"),
    ("private url", "POST", "/v1/images", {"json": {"url": "http://10.0.0.1/a.png"}}, 403, "url_fetch_disabled"),
    (
        "unknown model",
        "POST",
        "/v1/images?model=nope",
        {"content": _png(4, 4), "headers": {"content-type": "image/png"}},
        404,
        "unknown_model",
    ),
    ("amg zero grid", "POST", "/v1/images/{image}/automatic", {"json": {"pointsPerSide": 0}}, 400, "invalid_input"),
    ("amg threshold", "POST", "/v1/images/{image}/automatic", {"json": {"predIouThresh": 2}}, 400, "invalid_input"),
    (
        "amg unknown option",
        "POST",
        "/v1/images/{image}/automatic",
        {"json": {"pointsPerSide": 4, "turbo": True}},
        422,
        "validation_error",
    ),
    ("embeddings garbage", "POST", "/v1/images/embeddings", {"content": b"12345678garbage"}, 400, "invalid_input"),
    ("path traversal", "POST", "/v1/videos", {"json": {"path": "../../../etc"}}, 403, "path_not_allowed"),
    ("absolute path outside", "POST", "/v1/videos", {"json": {"path": "/etc"}}, 403, "path_not_allowed"),
    ("missing media path", "POST", "/v1/videos", {"json": {"path": "nothing-here"}}, 404, "not_found"),
    ("video body", "POST", "/v1/videos", {"json": {"frames": 3}}, 400, "invalid_input"),
    (
        "too many frames",
        "POST",
        "/v1/videos",
        {"files": [("frames", ("f.png", _png(2, 2)))] * 41},
        400,
        "invalid_input",
    ),
    (
        "frame out of range",
        "POST",
        "/v1/videos/{session}/points",
        {"json": {"frameIdx": 9, "objId": 1, "points": [[1, 1]], "labels": [1]}},
        400,
        "invalid_input",
    ),
    ("no prompt", "POST", "/v1/videos/{session}/points", {"json": {"frameIdx": 0, "objId": 1}}, 400, "invalid_input"),
    (
        "frame idx string",
        "POST",
        "/v1/videos/{session}/points",
        {"json": {"frameIdx": "a", "objId": 1}},
        422,
        "validation_error",
    ),
    (
        "bad mask rle",
        "POST",
        "/v1/videos/{session}/mask",
        {"json": {"frameIdx": 0, "objId": 1, "mask": {"size": [2, 2], "counts": [9]}}},
        400,
        "invalid_input",
    ),
    ("remove unknown object", "DELETE", "/v1/videos/{session}/objects/77", {}, 400, "invalid_input"),
    (
        "propagate start out of range",
        "POST",
        "/v1/videos/{session}/propagate",
        {"json": {"startFrameIdx": 50}},
        400,
        "invalid_input",
    ),
    (
        "propagate direction",
        "POST",
        "/v1/videos/{session}/propagate",
        {"json": {"direction": "sideways"}},
        422,
        "validation_error",
    ),
    (
        "unknown session",
        "POST",
        "/v1/videos/abc/points",
        {"json": {"frameIdx": 0, "objId": 1, "box": [1, 1, 5, 5]}},
        404,
        "unknown_session",
    ),
    ("unknown job", "GET", "/v1/jobs/abc", {}, 404, "unknown_job"),
    ("unknown route", "GET", "/v1/nothing", {}, 404, "not_found"),
    ("wrong method", "PUT", "/v1/images", {}, 405, "method_not_allowed"),
    ("missing key", "GET", "/v1/models", {"headers": {"X-API-Key": ""}}, 401, "unauthorized"),
    ("wrong key", "GET", "/v1/models", {"headers": {"X-API-Key": "wrong"}}, 403, "forbidden"),
    ("wrong bearer", "GET", "/v1/models", {"headers": {"Authorization": "Bearer wrong"}}, 403, "forbidden"),
]


def test_bad_requests_answer_4xx_envelopes(server, ids, client, scene, model):
    assert len(BAD) >= 30
    with httpx.Client(base_url=server.url, headers={"X-API-Key": KEY}, timeout=30) as http:
        for name, method, path, kwargs, status, code in BAD:
            kwargs = dict(kwargs)
            headers = {"X-Request-ID": f"bad-{len(name)}", **kwargs.pop("headers", {})}
            if headers.get("X-API-Key") == "" or "Authorization" in headers:
                http.headers.pop("X-API-Key")
                headers.pop("X-API-Key", None)
            r = http.request(method, path.format(**ids), headers=headers, **kwargs)
            http.headers["X-API-Key"] = KEY
            assert r.status_code == status, (name, r.status_code, r.text[:300])
            err = r.json()["error"]
            assert err["code"] == code, (name, err)
            assert err["message"] and err["requestId"] == headers["X-Request-ID"] == r.headers["x-request-id"], name
    # the server still answers correct masks
    remote = client.image_predictor()
    remote.set_image(scene.image)
    local = masklet.ImagePredictor(model)
    local.set_image(scene.image)
    for x, y in zip(local.predict([[40, 30]], [1]), remote.predict([[40, 30]], [1])):
        assert_same_output(x, y)
    media = httpx.post(f"{server.url}/v1/videos", json={"path": "clip"}, headers={"X-API-Key": KEY})
    assert media.status_code == 201 and media.json()["numFrames"] == 6


def test_stream_auth_and_bad_messages(server):
    from websockets.sync.client import connect

    url = server.url.replace("http", "ws") + "/v1/streams"
    with connect(url, additional_headers={"X-API-Key": "wrong"}) as ws:
        doc = json.loads(ws.recv())
        assert doc["type"] == "error" and doc["error"]["code"] == "forbidden"
    with connect(url, additional_headers={"X-API-Key": KEY}) as ws:
        assert json.loads(ws.recv())["type"] == "ready"
        for msg, code in (
            ("{oops", "malformed_json"),
            ('{"op": "fly"}', "invalid_input"),
            ('{"op": "add_points", "objId": 1, "points": [[1, 1]], "labels": [1]}', "predictor_state"),
            (b"not an image", "image_decode_error"),
        ):
            ws.send(msg)
            doc = json.loads(ws.recv())
            assert doc["type"] == "error" and doc["error"]["code"] == code, (msg, doc)
        ws.send(json.dumps({"op": "close"}))
        assert json.loads(ws.recv())["type"] == "end"


def test_remote_errors_map_to_types(client):
    with pytest.raises(RemoteError) as err:
        client.request("GET", "/v1/videos/nope")
    assert err.value.code == "unknown_session" and err.value.status == 404


def assert_same_json(a, b, where: str, atol: float = 1e-5) -> None:
    """Equal JSON except floats, which may differ by ``atol`` (the local click runs the cached-click
    decoder, the server's the prompt batcher: scores agree to float32 rounding, masks exactly)."""
    if isinstance(a, float) or isinstance(b, float):
        assert abs(a - b) <= atol, (where, a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_json(a[key], b[key], f"{where}.{key}", atol)
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_json(x, y, f"{where}[{i}]", atol)
    else:
        assert a == b, (where, a, b)


def test_cli_server_flag_matches_local(server, media, tmp_path, monkeypatch, scene):
    from masklet.cli import main

    monkeypatch.setenv("MASKLET_API_KEY", KEY)
    image = tmp_path / "scene.png"
    Image.fromarray(scene.image).save(image)
    runs = {
        "segment": [str(image), "--point", "40,30", "--box", "10,10,90,80"],
        "amg": [str(image), "--points-per-side", "8", "--pred-iou-thresh", "0.5", "--stability-score-thresh", "0.6"],
        "track": [str(media / "clip"), "--prompt", "1:1:point=30,25", "--both-directions", "--no-video"],
    }
    for command, argv in runs.items():
        local, remote = tmp_path / f"{command}-local", tmp_path / f"{command}-remote"
        assert main([command, *argv, "--model", "masklet-nano", "--out", str(local)]) == 0
        assert main([command, *argv, "--model", "masklet-nano", "--server", server.url, "--out", str(remote)]) == 0
        for path in sorted(local.glob("*.json")):
            a, b = json.loads(path.read_text()), json.loads((remote / path.name).read_text())
            a.pop("seconds_per_frame", None), b.pop("seconds_per_frame", None)
            assert_same_json(a, b, where=f"{command} {path.name}")
        assert sorted(p.name for p in local.iterdir()) == sorted(p.name for p in remote.iterdir())
