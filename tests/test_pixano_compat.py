"""The unmodified pixano-inference 0.7.1 client (sync and async) against a real masklet server.

Every response goes through the client's own response models (a mismatch would raise
``invalid_response``); masks are compared with masklet's in-process ImagePredictor / VideoPredictor.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("pixano_inference")
from PIL import Image
from pixano_inference.client import PixanoInferenceClient, PixanoInferenceError, SyncPixanoInferenceClient
from pixano_inference.schemas import CompressedRLE, NDArrayFloat, SegmentationRequest
from pixano_inference.schemas.tracking import TrackingBoxPrompt, TrackingInterval, TrackingPointPrompt
from pixano_inference.schemas.v1 import (
    TrackingKeyframeV1,
    TrackingPrompts,
    TrackingRequestV1,
)

import masklet
from masklet.client import Client
from masklet.masks import decode_rle, encode_rle
from masklet.synthetic import make_clip, make_scene
from reference.server import ServerProcess

KEY = "pixano-key-1"
MODEL = "masklet-nano"


def png_uri(pixels: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def rle_masks(rles) -> np.ndarray:
    """Decode the client's CompressedRLE objects with masklet's own decoder."""
    return np.stack([decode_rle({"size": r.size, "counts": r.counts.decode()})[0].numpy() for r in rles])


@pytest.fixture(scope="module")
def server():
    proc = ServerProcess(env={"MASKLET_API_KEYS": KEY, "MASKLET_MAX_FRAMES": "40"}, args=["--model", MODEL]).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(server):
    with SyncPixanoInferenceClient(server.url, api_key=KEY, timeout=120, max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def model():
    return masklet.load_model(MODEL)


@pytest.fixture(scope="module")
def scene():
    return make_scene(3, size=(96, 128))


@pytest.fixture(scope="module")
def local(model, scene):
    predictor = masklet.ImagePredictor(model)
    predictor.set_image(scene.image)
    return predictor


@pytest.fixture(scope="module")
def clip():
    return make_clip(5, num_frames=4, size=(64, 80), num_objects=(2, 2))


def seg(scene, **kw) -> SegmentationRequest:
    return SegmentationRequest(model=MODEL, image=png_uri(scene.image), **kw)


# ----------------------------------------------------------------------------- service


def test_health_ready_info_models(server, client):
    assert client.health() == {"status": "healthy"}
    ready = client.ready()
    assert ready["ready"] is True and ready["models"] == {MODEL: "RUNNING"} and ready["models_loaded"] == 1
    assert ready["modelsLoaded"] == 1  # masklet's own field stays
    info = client.info()
    assert info["appName"] == "masklet" and info["models"] == [MODEL] and info["modelsStatus"] == {MODEL: "RUNNING"}
    assert {"appVersion", "numCpus", "numGpus", "numNodes", "gpusUsed"} <= set(info)
    listed = client.list_models()  # validated as list[ModelStatusInfo] by the client
    assert [(m.name, m.capability, m.status) for m in listed] == [
        (MODEL, "segmentation", "RUNNING"),
        (MODEL, "tracking", "RUNNING"),
    ]
    assert listed[0].interface.multimask and listed[0].interface.embeddings and listed[1].interface.interval
    # masklet's own client reads the same /v1/models and /v1/ready bodies
    with Client(server.url, api_key=KEY) as mc:
        assert mc.model_info(MODEL)["imageSize"] == 256 and mc.model_info(None)["name"] == MODEL
    # open routes need no key; the rest do, with pixano's codes
    with SyncPixanoInferenceClient(server.url, max_retries=0) as anon:
        assert anon.health()["status"] == "healthy" and anon.ready()["ready"]
        with pytest.raises(PixanoInferenceError) as err:
            anon.list_models()
        assert (err.value.status_code, err.value.code) == (401, "unauthorized") and err.value.request_id
    with SyncPixanoInferenceClient(server.url, api_key="wrong", max_retries=0) as bad:
        with pytest.raises(PixanoInferenceError) as err:
            bad.list_models()
        assert (err.value.status_code, err.value.code) == (403, "forbidden")
    # Bearer works as well as X-API-Key; X-Request-ID is echoed
    r = httpx.get(f"{server.url}/v1/models", headers={"Authorization": f"Bearer {KEY}", "X-Request-ID": "px-1"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "px-1"


def test_ready_503_while_loading_in_process():
    """An app whose models are not loaded yet (no lifespan ran): /v1/ready is 503 with the same body,
    inference is 503 ``unavailable``; the client's ASGI transport drives it in-process."""
    from masklet.server.app import create_app
    from masklet.server.settings import Settings

    app = create_app(Settings(models=[MODEL]))

    async def go():
        async with PixanoInferenceClient(
            "http://masklet.test", transport=httpx.ASGITransport(app=app), max_retries=0
        ) as ac:
            ready = await ac.ready()
            with pytest.raises(PixanoInferenceError) as err:
                await ac.segmentation(SegmentationRequest(model=MODEL, image="data:,", boxes=[[1, 1, 5, 5]]))
            raw = await ac._client.get("http://masklet.test/v1/ready")
            return ready, err.value, raw

    ready, err, raw = asyncio.run(go())
    assert raw.status_code == 503 and raw.json() == ready
    assert ready["ready"] is False and ready["models"] == {MODEL: "LOADING"} and ready["models_loaded"] == 0
    assert (err.status_code, err.code) == (503, "unavailable")


def test_deploy_and_undeploy_refused(client):
    from pixano_inference.schemas.v1 import DeployModelRequest

    with pytest.raises(PixanoInferenceError) as err:
        client.deploy_model(DeployModelRequest(name="x", model_class="Sam2ImageModel"))
    assert (err.value.status_code, err.value.code) == (403, "forbidden") and "startup" in err.value.message
    with pytest.raises(PixanoInferenceError) as err:
        client.undeploy_model(MODEL)
    assert (err.value.status_code, err.value.code) == (403, "forbidden")
    with pytest.raises(PixanoInferenceError) as err:
        client.undeploy_model("nope")
    assert (err.value.status_code, err.value.code) == (404, "not_found")


# ----------------------------------------------------------------------------- segmentation


def check_same(resp, local, *, points=None, labels=None, box=None, mask_input=None, multimask=True):
    masks, scores, _low = local.predict(points, labels, box, mask_input, multimask)
    if masks.ndim == 3:
        masks, scores = masks[None], scores[None]
    got = np.stack([rle_masks(per) for per in resp.data.masks])
    assert got.shape == masks.shape
    np.testing.assert_array_equal(got, masks)
    np.testing.assert_array_equal(resp.data.scores.to_numpy(), scores.astype(np.float32))


def test_segmentation_prompts_match_local(client, local, scene):
    cases = [
        ({"points": [[[40, 30]]], "labels": [[1]]}, {"points": [[[40, 30]]], "labels": [[1]]}),
        ({"boxes": [[10, 12, 80, 70]]}, {"box": [[10, 12, 80, 70]]}),
        (
            {"points": [[[40, 30], [70, 60]]], "labels": [[1, 0]], "boxes": [[10, 12, 80, 70]]},
            {"points": [[[40, 30], [70, 60]]], "labels": [[1, 0]], "box": [[10, 12, 80, 70]]},
        ),
        ({"boxes": [[10, 12, 60, 70], [50, 20, 120, 90]]}, {"box": [[10, 12, 60, 70], [50, 20, 120, 90]]}),
        (
            {"points": [[[40, 30]], [[90, 60]]], "labels": [[1], [1]]},
            {"points": [[[40, 30]], [[90, 60]]], "labels": [[1], [1]]},
        ),
    ]
    for multimask, subset in ((True, cases), (False, cases[2:4])):
        for px, lk in subset:
            resp = client.segmentation(seg(scene, multimask_output=multimask, **px))
            assert resp.status == "SUCCESS" and resp.metadata["model_name"] == MODEL
            assert resp.data.image_embedding is None and resp.data.mask_logits is None
            n = len(px.get("points") or px.get("boxes"))
            assert len(resp.data.masks) == n and all(len(m) == (3 if multimask else 1) for m in resp.data.masks)
            check_same(resp, local, multimask=multimask, **lk)
    # ragged point sets are padded with SAM's not-a-point (label -1), as the model expects
    resp = client.segmentation(seg(scene, points=[[[40, 30], [70, 60]], [[90, 60]]], labels=[[1, 0], [1]]))
    check_same(resp, local, points=[[[40, 30], [70, 60]], [[90, 60], [0, 0]]], labels=[[1, 0], [1, -1]])


def test_embedding_roundtrip_and_mask_input(client, local, scene):
    first = client.segmentation(
        seg(scene, points=[[[40, 30]]], labels=[[1]], return_image_embedding=True, return_logits=True)
    )
    emb = first.data.image_embedding
    hr = first.data.high_resolution_features
    levels = local.get_embeddings().levels
    np.testing.assert_array_equal(emb.to_numpy(), levels[-1][0].float().numpy())
    assert [h.shape for h in hr] == [list(t.shape[1:]) for t in levels[:-1]]
    logits = first.data.mask_logits.to_numpy()
    side = 4 * masklet.load_model(MODEL).config.embedding_size
    assert logits.shape == (3, side, side)  # one prompt: SAM2's (C, h, w), as pixano returns it
    # the embeddings sent back (with a blank image of the same size) give the same masks
    blank = np.zeros_like(scene.image)
    again = client.segmentation(
        SegmentationRequest(
            model=MODEL,
            image=png_uri(blank),
            image_embedding=emb,
            high_resolution_features=hr,
            points=[[[40, 30]]],
            labels=[[1]],
        )
    )
    check_same(again, local, points=[[[40, 30]]], labels=[[1]])
    # mask input: the best low-res logits of the first call, as pixano's [1, h, w]
    best = logits[int(np.argmax(first.data.scores.to_numpy()[0]))][None]
    refined = client.segmentation(
        seg(
            scene,
            points=[[[40, 30], [60, 50]]],
            labels=[[1, 0]],
            mask_input=NDArrayFloat.from_numpy(best),
            multimask_output=False,
        )
    )
    check_same(refined, local, points=[[[40, 30], [60, 50]]], labels=[[1, 0]], mask_input=best, multimask=False)
    # resetPredictor false is tied to the request's own image (its content id), never another one
    other = make_scene(11, size=(96, 128))
    client.segmentation(SegmentationRequest(model=MODEL, image=png_uri(other.image), points=[[[10, 10]]], labels=[[1]]))
    kept = client.segmentation(seg(scene, reset_predictor=False, points=[[[40, 30]]], labels=[[1]]))
    check_same(kept, local, points=[[[40, 30]]], labels=[[1]])
    # the image id in the metadata names the cached image without sending it again
    ref = client.segmentation(
        SegmentationRequest(
            model=MODEL,
            image="masklet:" + kept.metadata["imageId"],
            reset_predictor=False,
            points=[[[40, 30]]],
            labels=[[1]],
        )
    )
    check_same(ref, local, points=[[[40, 30]]], labels=[[1]])


def test_segmentation_binary_and_floats(server, local, scene):
    buf = io.BytesIO()
    Image.fromarray(scene.image).save(buf, format="PNG")
    meta = json.dumps({"model": MODEL, "points": [[[40.5, 30.25]]], "labels": [[1]], "multimask_output": None})
    r = httpx.post(
        f"{server.url}/v1/inference/segmentation/binary",
        headers={"X-API-Key": KEY},
        files={"metadata": (None, meta), "image": ("a.png", buf.getvalue(), "image/png")},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    from pixano_inference.schemas import SegmentationResponse

    resp = SegmentationResponse.model_validate(r.json())
    check_same(resp, local, points=[[[40.5, 30.25]]], labels=[[1]])


def test_segmentation_bad_requests(server, client, scene):
    cases = [
        (seg(scene, points=[[[40, 30]]]), 400, "labels"),  # points without labels
        (seg(scene, points=[[[40, 30]]], labels=[[1]], boxes=[[1, 1, 9, 9], [2, 2, 8, 8]]), 400, "boxes"),
        (seg(scene, points=[[[40, 30]]], labels=[[7]]), 400, "labels"),
        (seg(scene, boxes=[[50, 50, 10, 10]]), 400, "box"),
        (seg(scene, boxes=[[1, 1, 9, 9]], num_multimask_outputs=4), 400, "numMultimaskOutputs"),
        (SegmentationRequest(model="nope", image=png_uri(scene.image), boxes=[[1, 1, 9, 9]]), 404, "nope"),
        (SegmentationRequest(model=MODEL, image="data:image/png;base64,AAAA", boxes=[[1, 1, 9, 9]]), 400, "image"),
        (SegmentationRequest(model=MODEL, image="https://example.invalid/a.png", boxes=[[1, 1, 9, 9]]), 403, "URL"),
        (
            seg(scene, boxes=[[1, 1, 9, 9]], mask_input=NDArrayFloat.from_numpy(np.zeros((1, 5, 5), np.float32))),
            400,
            "mask_input",
        ),
        (
            seg(scene, boxes=[[1, 1, 9, 9]], image_embedding=NDArrayFloat.from_numpy(np.zeros((2, 2), np.float32))),
            400,
            "highResolutionFeatures",
        ),
        (SegmentationRequest(model=MODEL, image="masklet:0123", boxes=[[1, 1, 9, 9]]), 404, "0123"),
    ]
    codes = {400: "bad_request", 403: "forbidden", 404: "not_found"}
    for req, status, word in cases:
        with pytest.raises(PixanoInferenceError) as err:
            client.segmentation(req)
        assert (err.value.status_code, err.value.code) == (status, codes[status]), (req, err.value)
        assert word in str(err.value.message) and err.value.request_id
    r = httpx.post(f"{server.url}/v1/inference/segmentation", headers={"X-API-Key": KEY}, json={"model": MODEL})
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"


# ----------------------------------------------------------------------------- tracking


def tracking_request(clip, direction="forward", propagate=None, kinds=("points", "box")) -> TrackingRequestV1:
    start = 0 if direction == "forward" else len(clip.frames) - 1
    keyframes = []
    for n, kind in enumerate(kinds):
        box = clip.boxes[start, n]
        if kind == "points":
            ys, xs = np.nonzero(clip.masks[start, n])
            prompts = TrackingPrompts(points=[TrackingPointPrompt(x=int(xs.mean()), y=int(ys.mean()), label=1)])
        elif kind == "box":
            x0, y0, x1, y1 = (int(v) for v in box)
            prompts = TrackingPrompts(box=TrackingBoxPrompt(x=x0, y=y0, width=x1 - x0, height=y1 - y0))
        else:
            prompts = TrackingPrompts(mask=CompressedRLE(**encode_rle(clip.masks[start, n][None])[0]))
        keyframes.append(TrackingKeyframeV1(frame_index=start, prompts=prompts))
    end = len(clip.frames) - 1 - start
    return TrackingRequestV1(
        model=MODEL,
        video=[png_uri(f) for f in clip.frames],
        objects_ids=[1, 2],
        frame_indexes=[start, start],
        keyframes=keyframes,
        propagate=propagate,
        interval=TrackingInterval(start_frame=start, end_frame=end, direction=direction),
    )


_LOCAL: dict[str, dict] = {}


def local_tracking(model, clip, req: TrackingRequestV1) -> dict[int, dict[int, np.ndarray]]:
    """masklet's in-process VideoPredictor on the same frames and prompts (memoised per request)."""
    key = req.model_dump_json(exclude={"video"}) + str(clip.seed) + str(len(clip.frames))
    if key not in _LOCAL:
        _LOCAL[key] = _local_tracking(model, clip, req)
    return _LOCAL[key]


def _local_tracking(model, clip, req: TrackingRequestV1) -> dict[int, dict[int, np.ndarray]]:
    predictor = masklet.VideoPredictor(model)
    state = predictor.init_state(list(clip.frames))
    out: dict[int, dict[int, np.ndarray]] = {}
    for obj_id, kf in zip(req.objects_ids, req.keyframes):
        p = kf.prompts
        if p.mask is not None:
            tf = predictor.add_new_mask(state, kf.frame_index, obj_id, p.mask.to_mask().astype(bool))
        else:
            pts = lbl = box = None
            if p.points:
                pts, lbl = [[q.x, q.y] for q in p.points], [q.label for q in p.points]
            if p.box is not None:
                box = [p.box.x, p.box.y, p.box.x + p.box.width, p.box.y + p.box.height]
            tf = predictor.add_new_points_or_box(state, kf.frame_index, obj_id, pts, lbl, box=box)
        out.setdefault(tf.frame_idx, {}).update(dict(zip(tf.obj_ids, tf.masks.numpy())))
    if req.propagate is False:
        return out
    iv = req.interval
    out = {}
    for tf in predictor.propagate_in_video(
        state, iv.start_frame, abs(iv.end_frame - iv.start_frame), iv.direction == "backward"
    ):
        out[tf.frame_idx] = dict(zip(tf.obj_ids, tf.masks.numpy()))
    return out


def assert_tracking_equal(output, expected):
    got = {f.frame_index: {o.track_id: o.mask.to_mask().astype(bool) for o in f.objects} for f in output.frames}
    assert list(got) == list(expected)
    for idx, objs in expected.items():
        assert sorted(got[idx]) == sorted(objs)
        for obj_id, mask in objs.items():
            np.testing.assert_array_equal(got[idx][obj_id], mask)


@pytest.mark.parametrize("direction,kinds", [("forward", ("points", "box")), ("backward", ("mask", "box"))])
def test_tracking_matches_local(client, model, clip, direction, kinds):
    req = tracking_request(clip, direction, kinds=kinds)
    resp = client.tracking(req)
    assert resp.status == "SUCCESS" and resp.metadata["capability"] == "tracking"
    frames = [f.frame_index for f in resp.data.frames]
    assert frames == (list(range(4)) if direction == "forward" else list(range(3, -1, -1)))
    assert_tracking_equal(resp.data, local_tracking(model, clip, req))


def test_tracking_without_propagation_and_async_client(server, model, clip):
    req = tracking_request(clip, "forward", propagate=False, kinds=("box", "mask"))

    async def go():
        async with PixanoInferenceClient(server.url, api_key=KEY, max_retries=0) as ac:
            assert (await ac.health())["status"] == "healthy"
            assert [m.capability for m in await ac.list_models()] == ["segmentation", "tracking"]
            return await ac.tracking(req)

    resp = asyncio.run(go())
    assert [f.frame_index for f in resp.data.frames] == [0]
    assert_tracking_equal(resp.data, local_tracking(model, clip, req))


def test_tracking_binary(server, model, clip):
    req = tracking_request(clip, "forward", kinds=("points", "box"))
    meta = req.model_dump_json(by_alias=True, exclude={"video"})
    files = [("metadata", (None, meta))]
    for i, f in enumerate(clip.frames):
        buf = io.BytesIO()
        Image.fromarray(f).save(buf, format="PNG")
        files.append(("frames", (f"{i}.png", buf.getvalue(), "image/png")))
    r = httpx.post(f"{server.url}/v1/inference/tracking/binary", headers={"X-API-Key": KEY}, files=files, timeout=120)
    assert r.status_code == 200, r.text
    from pixano_inference.schemas import TrackingResponse

    assert_tracking_equal(TrackingResponse.model_validate(r.json()).data, local_tracking(model, clip, req))


def test_tracking_jobs(client, model, clip):
    req = tracking_request(clip, "forward", kinds=("points", "box"))
    job = client.submit_tracking_job(req)
    assert job.status == "running" and job.job_id
    done = client.wait_for_job(job.job_id, poll_interval=0.2, timeout=120)
    assert done.status == "completed" and done.processing_time > 0 and done.metadata["capability"] == "tracking"
    raw = httpx.get(f"{client.url}/v1/jobs/{job.job_id}", headers={"X-API-Key": KEY}).json()
    assert raw["done"] == raw["total"] == 4  # progress, frames of frames
    assert_tracking_equal(done.data, local_tracking(model, clip, req))
    # another one cancelled while it runs, after its progress shows some frames done
    long = make_clip(6, num_frames=40, size=(64, 80), num_objects=(2, 2))
    job = client.submit_tracking_job(tracking_request(long, "forward", kinds=("points", "box")))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        raw = httpx.get(f"{client.url}/v1/jobs/{job.job_id}", headers={"X-API-Key": KEY}).json()
        if raw["done"] >= 1:
            break
        time.sleep(0.02)
    assert raw["status"] == "running" and raw["total"] == 40 and 1 <= raw["done"] < 40
    canceled = client.cancel_job(job.job_id)
    assert canceled.status == "canceled" and canceled.data is None and canceled.detail
    assert client.get_job(job.job_id).status == "canceled"
    assert client.cancel_job(job.job_id).status == "canceled"  # cancelling again changes nothing
    with pytest.raises(PixanoInferenceError) as err:
        client.get_job("nope")
    assert (err.value.status_code, err.value.code) == (404, "unknown_job")  # masklet's code on the shared path


def test_tracking_bad_requests(client, clip):
    good = tracking_request(clip, "forward")
    frames = good.video
    kf = good.keyframes
    cases = [
        (dict(objects_ids=[1, 2], keyframes=[kf[0]]), 400, "keyframe"),  # the client's schema lets this through
        (dict(objects_ids=[1], keyframes=[TrackingKeyframeV1(frame_index=9, prompts=kf[0].prompts)]), 400, "frame"),
        (dict(objects_ids=[1, 2], keyframes=kf, interval=TrackingInterval(start_frame=7, end_frame=9)), 400, "start"),
        (dict(objects_ids=[1, 2], keyframes=kf, video=frames + frames[:1] * 37), 413, "frames"),
        (dict(objects_ids=[1, 2], keyframes=kf, model="nope"), 404, "nope"),
    ]
    codes = {400: "bad_request", 404: "not_found", 413: "payload_too_large"}
    for change, status, word in cases:
        fields = {"model": MODEL, "video": frames, **change}
        req = TrackingRequestV1.model_construct(**{**good.__dict__, **fields})
        with pytest.raises(PixanoInferenceError) as err:
            client.tracking(req)
        assert (err.value.status_code, err.value.code) == (status, codes[status]), (change, err.value)
        assert word in str(err.value.message)
    small = TrackingKeyframeV1(frame_index=0, prompts=TrackingPrompts(mask=CompressedRLE(size=[2, 2], counts="0120")))
    odd = png_uri(np.zeros((10, 12, 3), np.uint8))
    more = [
        (dict(objects_ids=[1], keyframes=[small]), 400, "size"),  # a mask of another size than the frames
        (dict(objects_ids=[1], keyframes=kf[:1], video=frames[:2] + [odd]), 400, "same size"),
        (dict(objects_ids=[1], keyframes=kf[:1], video=frames[0]), 400, "list"),  # one data URI, not a list
    ]
    for change, status, word in more:
        req = TrackingRequestV1.model_construct(**{**good.__dict__, **change})
        with pytest.raises(PixanoInferenceError) as err:
            client.tracking(req)
        assert (err.value.status_code, err.value.code) == (status, "bad_request"), (change, err.value)
        assert word in str(err.value.message)
    body = json.loads(good.model_dump_json(by_alias=True))
    body["keyframes"][0]["prompts"] = {"mask": {"size": [64, 80], "counts": "!!bad"}}
    r = httpx.post(f"{client.url}/v1/inference/tracking", json=body, headers={"X-API-Key": KEY}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request", r.text
    body["keyframes"][0]["prompts"] = {"box": {"x": 1, "y": 1, "width": -3, "height": 4}}
    r = httpx.post(f"{client.url}/v1/inference/tracking", json=body, headers={"X-API-Key": KEY}, timeout=60)
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"
    with pytest.raises(PixanoInferenceError) as err:
        client.submit_tracking_job(
            TrackingRequestV1.model_construct(**{**good.__dict__, "objects_ids": [], "keyframes": []})
        )
    assert err.value.status_code == 400


def test_sessions_closed_after_tracking(server):
    time.sleep(0.2)
    text = httpx.get(f"{server.url}/metrics").text
    line = [ln for ln in text.splitlines() if ln.startswith("masklet_video_sessions") and not ln.startswith("#")]
    assert line and float(line[0].split()[-1]) == 0.0
