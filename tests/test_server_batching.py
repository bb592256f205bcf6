"""The prompt batcher: concurrent prompt requests decoded in one mask-decoder call, each with the local answer.

In-process: ``decode_sets`` decodes a mix of prompts (different images, point counts, boxes,
mask inputs, multimask on and off) in one decoder call and matches ``ImagePredictor.predict``;
the batcher isolates failures and cancellations. Then real uvicorn servers on a free loopback
port: a burst of mixed requests for two served models is decoded in one decoder call per model
(counted on ``/metrics``) and every answer equals the in-process ``ImagePredictor``'s (masks
equal, scores and logits within 1e-4); a bad prompt in the burst gets its own 4xx envelope; a
client that disconnects while queued does not break its batch; a lone request waits at most the
window (and not at all with the default window 0); ``--batch-max 1`` decodes one request per call.
"""

from __future__ import annotations

import asyncio
import io
import re
import threading
import time
from typing import Any

import numpy as np
import pytest
import torch

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
from PIL import Image

import masklet
from masklet.checkpoints.loading import packaged_checkpoint
from masklet.decode import PromptSet, decode_sets, plan_calls
from masklet.prompts import image_prompts
from masklet.server.codec import masks_to_rles, pack_array, unpack_array
from masklet.synthetic import make_scene
from reference.server import ServerProcess

SIZES = ((96, 128), (80, 100), (112, 90))
TOL = 1e-4  # scores and logits, batched over HTTP against the in-process predictor
WINDOW_MS = 2000  # the burst server's window: long enough for a whole burst to queue on a busy machine


# ----------------------------------------------------------------------------- prompts and references


def _specs(refine: dict[int, np.ndarray]) -> list[tuple[int, dict[str, Any]]]:
    """The burst: (image index, predict kwargs) covering every kind of prompt and option."""
    return [
        (0, {"point_coords": [[30.5, 20.25]], "point_labels": [1]}),
        (0, {"point_coords": [[40, 30], [70, 55], [12, 80]], "point_labels": [1, 0, 1], "multimask_output": False}),
        (1, {"box": [10, 12, 60, 50.5], "multimask_output": False}),
        (1, {"box": [[10, 10, 60, 50], [30, 20, 90, 70]]}),  # two objects
        (2, {"mask_input": refine[2], "multimask_output": False}),  # a mask input alone
        (0, {"point_coords": [[50, 40], [70, 55]], "point_labels": [1, 1], "mask_input": refine[0]}),
        (
            2,
            {
                "point_coords": [[[20, 30]], [[60, 70]]],
                "point_labels": [[1], [1]],
                "box": [[5, 10, 50, 60], [40, 50, 85, 100]],
                "multimask_output": False,
                "mask_threshold": 0.5,
                "max_hole_area": 10.0,
                "max_sprinkle_area": 10.0,
            },
        ),
        (1, {"point_coords": [[0.4, 0.6]], "point_labels": [1], "normalize_coords": False, "return_logits": True}),
        (2, {"point_coords": [[44.75, 61.5]], "point_labels": [1], "low_res_logits": False}),
    ]


_OPTIONS = ("mask_threshold", "max_hole_area", "max_sprinkle_area")


def _body(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The JSON body of ``POST /v1/images/{id}/predict`` for predict kwargs."""
    names = {
        "point_coords": "pointCoords",
        "point_labels": "pointLabels",
        "box": "box",
        "multimask_output": "multimaskOutput",
        "return_logits": "returnLogits",
        "normalize_coords": "normalizeCoords",
        "low_res_logits": "lowResLogits",
        "mask_threshold": "maskThreshold",
        "max_hole_area": "maxHoleArea",
        "max_sprinkle_area": "maxSprinkleArea",
    }
    body = {names[k]: v for k, v in kwargs.items() if k in names}
    if "mask_input" in kwargs:
        body["maskInput"] = pack_array(np.asarray(kwargs["mask_input"], np.float32))
    return body


def _local(model, predictors, img: int, kwargs: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The in-process ImagePredictor's answer (the parity reference), with the request's options."""
    p = masklet.ImagePredictor(model, **{k: kwargs[k] for k in _OPTIONS if k in kwargs})
    p.set_embeddings(predictors[img].get_embeddings())
    args = {k: v for k, v in kwargs.items() if k not in (*_OPTIONS, "low_res_logits")}
    return p.predict(**args)


def _compare(doc: dict, want: tuple[np.ndarray, np.ndarray, np.ndarray], kwargs: dict[str, Any]) -> list[str]:
    """What differs between a predict response and the local answer (empty: equal)."""
    masks, scores, low = want
    bad = []
    if doc["lead"] != list(masks.shape[:-2]):
        bad.append(f"lead {doc['lead']} vs {list(masks.shape[:-2])}")
    if kwargs.get("return_logits"):
        got = unpack_array(doc["maskLogits"], "maskLogits")
        if got.shape != masks.shape or np.abs(got - masks).max() > TOL:
            bad.append("mask logits differ")
    elif doc["masks"] != masks_to_rles(masks):
        bad.append("masks differ")
    got_scores = np.asarray(doc["scores"], np.float32).reshape(doc["scoresShape"])
    if got_scores.shape != scores.shape or np.abs(got_scores - scores).max() > TOL:
        bad.append(f"scores {got_scores} vs {scores}")
    if kwargs.get("low_res_logits", True):
        got_low = unpack_array(doc["lowResLogits"], "lowResLogits")
        if got_low.shape != low.shape or np.abs(got_low - low).max() > TOL:
            bad.append("low-res logits differ")
    elif doc.get("lowResLogits") is not None:
        bad.append("low-res logits sent though not asked for")
    return bad


@pytest.fixture(scope="module")
def model():
    return masklet.load_model("masklet-nano")


@pytest.fixture(scope="module")
def images():
    return [make_scene(60 + i, size=hw).image for i, hw in enumerate(SIZES)]


@pytest.fixture(scope="module")
def predictors(model, images):
    out = []
    for img in images:
        p = masklet.ImagePredictor(model)
        p.set_image(img)
        out.append(p)
    return out


@pytest.fixture(scope="module")
def specs(predictors):
    """The burst's prompts; the mask inputs are the best low-res logits of a first click."""
    refine = {}
    for i in (0, 2):
        _, scores, low = predictors[i].predict(point_coords=[[50, 40]], point_labels=[1])
        refine[i] = low[None, int(np.argmax(scores))]  # (1, 64, 64)
    return _specs(refine)


# ----------------------------------------------------------------------------- in-process


def _prompt_set(model, predictors, img: int, kwargs: dict[str, Any]) -> PromptSet:
    emb = predictors[img].get_embeddings()
    prompts = image_prompts(
        kwargs.get("point_coords"),
        kwargs.get("point_labels"),
        kwargs.get("box"),
        kwargs.get("mask_input"),
        emb.orig_hw[0],
        model.image_size,
        4 * model.config.embedding_size,
        kwargs.get("normalize_coords", True),
    )
    return PromptSet(emb.levels, prompts.points, prompts.mask, kwargs.get("multimask_output", True))


def _count_decoder_calls(monkeypatch, model) -> list[int]:
    """Rows of every mask-decoder call from now on (batched or not, both go through predict_masks)."""
    rows: list[int] = []
    decoder = model.sam_mask_decoder
    inner = decoder.predict_masks

    def counted(*args, **kwargs):
        out = inner(*args, **kwargs)
        rows.append(int(out[0].shape[0]))
        return out

    monkeypatch.setattr(decoder, "predict_masks", counted)
    return rows


def test_decode_sets_mixes_every_prompt_kind_in_one_call(model, predictors, specs, monkeypatch):
    sets = [_prompt_set(model, predictors, img, kw) for img, kw in specs]
    assert len({None if s.points is None else s.points[0].shape[1] for s in sets}) >= 4  # point counts differ
    assert len({s.multimask_output for s in sets}) == 2
    wants = [_local(model, predictors, img, {**kw, "return_logits": True}) for img, kw in specs]
    rows = _count_decoder_calls(monkeypatch, model)
    decoded = decode_sets(model, sets)
    assert rows == [sum(s.objects for s in sets)]  # one decoder call for all of them
    worst = 0.0
    for (img, kw), d, want in zip(specs, decoded, wants):
        p = masklet.ImagePredictor(model, **{k: kw[k] for k in _OPTIONS if k in kw})
        got = p.postprocess(d.low_res, d.ious, predictors[img].get_embeddings().orig_hw[0], True)
        got = tuple(x[0] if x.shape[0] == 1 else x for x in got)
        for a, b in zip(got, want):
            assert a.shape == b.shape
            worst = max(worst, float(np.abs(a - b).max()))
        assert np.array_equal(got[0] > p.mask_threshold, want[0] > p.mask_threshold)
    assert worst < TOL
    print(f"\ndecode_sets: {len(sets)} prompt sets, {rows[0]} rows, 1 decoder call; max |diff| vs predict {worst:.1e}")


def test_row_cap_splits_calls_and_keeps_the_answers(model, predictors, specs, monkeypatch):
    sets = [_prompt_set(model, predictors, img, kw) for img, kw in specs]
    whole = decode_sets(model, sets)
    calls = plan_calls(sets, max_objects=3)
    assert all(sum(sets[i].objects for i in c) <= 3 for c in calls)
    assert [i for c in calls for i in c] == list(range(len(sets)))  # in order, each set once
    rows = _count_decoder_calls(monkeypatch, model)
    split = decode_sets(model, sets, max_objects=3)
    assert len(rows) == len(calls)
    assert len(calls) > 1
    for a, b in zip(whole, split):
        assert torch.allclose(a.low_res, b.low_res, atol=TOL, rtol=0)
        assert torch.allclose(a.ious, b.ious, atol=TOL, rtol=0)
    assert plan_calls([sets[3]], max_objects=1) == [[0]]  # a set above the cap gets a call of its own
    with pytest.raises(ValueError, match="max_objects"):
        plan_calls(sets, max_objects=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_masked_keys_are_as_if_absent(dtype):
    from masklet.model.attention import Attention

    torch.manual_seed(0)
    attn = Attention(32, 4, downsample_rate=2).to(dtype)
    q, k = torch.randn(2, 5, 32, dtype=dtype), torch.randn(2, 7, 32, dtype=dtype)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[0, 4:] = False  # row 0 has 4 real keys, 3 padding ones
    k[0, 4:] = 1e3  # whatever the padding holds
    with torch.inference_mode():
        both = attn(q, k, k, key_mask=mask)
        alone = attn(q[:1], k[:1, :4], k[:1, :4])
        full = attn(q[1:], k[1:], k[1:])
    tol = 1e-6 if dtype == torch.float32 else 2e-2
    assert torch.allclose(both[:1].float(), alone.float(), atol=tol, rtol=0)
    assert torch.allclose(both[1:].float(), full.float(), atol=tol, rtol=0)


def test_single_set_is_the_unbatched_call(model, predictors):
    emb = predictors[0].get_embeddings()
    pts = (torch.tensor([[[40.0, 30.0], [0.0, 0.0]]]), torch.tensor([[1, -1]], dtype=torch.int32))
    (d,) = decode_sets(model, [PromptSet(emb.levels, pts, None, True)])
    with torch.inference_mode():
        low, ious, _ = model.decode_masks(emb.levels[-1], emb.levels[:-1], pts, None, True)
    assert torch.equal(d.low_res, low)
    assert torch.equal(d.ious, ious)


def test_prompt_decoder_isolates_a_failing_job(model, predictors, specs):
    from masklet.image import ImageEmbeddings
    from masklet.server.image_batch import PromptDecoder, prepare_job
    from masklet.server.metrics import Metrics
    from masklet.server.pool import Loaded
    from masklet.server.schemas import PredictRequest

    loaded = Loaded("masklet-nano", model, masklet.ImagePredictor(model))
    jobs, wants = [], []
    for img, kw in specs[:4]:
        body = PredictRequest.model_validate(_body(kw))
        jobs.append(prepare_job(loaded, f"img{img}", predictors[img].get_embeddings(), body, body))
        wants.append(_local(model, predictors, img, kw))
    good = predictors[1].get_embeddings()
    broken = ImageEmbeddings([t[:, :-1] for t in good.levels], good.orig_hw)  # channels the model lacks
    body = PredictRequest.model_validate({"pointCoords": [[10, 10]], "pointLabels": [1]})
    jobs.insert(2, prepare_job(loaded, "broken", broken, body, body))
    metrics = Metrics()
    results = PromptDecoder(metrics, max_objects=64)(loaded, jobs)
    assert isinstance(results[2], Exception)
    others = results[:2] + results[3:]
    for (_img, kw), result, want in zip(specs[:4], others, wants):
        assert not isinstance(result, Exception), result
        assert _compare(result.model_dump(by_alias=True), want, kw) == []
    with pytest.raises(ValueError, match="batch_max_objects"):
        PromptDecoder(metrics, max_objects=0)


def test_batcher_cancellation_and_per_job_errors(model):
    from masklet.server.batcher import PromptBatcher
    from masklet.server.metrics import Metrics
    from masklet.server.pool import Loaded, ModelPool

    metrics = Metrics()
    pool = ModelPool(["m"], "cpu", "float32", metrics)
    loaded = Loaded("m", model, masklet.ImagePredictor(model))
    batches: list[list[int]] = []

    def run_batch(_loaded: Loaded, payloads: list[int]) -> list[Any]:
        batches.append(list(payloads))
        return [ValueError(f"bad {p}") if p < 0 else p * 10 for p in payloads]

    async def scenario() -> list[Any]:
        batcher = PromptBatcher(pool, metrics, max_batch=8, window_ms=400)  # the drain waits: jobs queue up
        tasks = [asyncio.create_task(batcher.submit(loaded, p, run_batch)) for p in (1, 2, -3, 4)]
        await asyncio.sleep(0.1)  # all queued, the first drain waiting for more
        tasks[1].cancel()  # a client gone before its batch ran
        return await asyncio.gather(*tasks, return_exceptions=True)

    try:
        results = asyncio.run(asyncio.wait_for(scenario(), 30))
    finally:
        pool.close()
    assert batches == [[1, -3, 4]]  # one batch, without the cancelled job
    assert results[0] == 10
    assert isinstance(results[1], asyncio.CancelledError)
    assert isinstance(results[2], ValueError)
    assert results[3] == 40


def test_bad_batch_settings_are_refused():
    from masklet.server.batcher import PromptBatcher

    with pytest.raises(ValueError, match="batch_max"):
        PromptBatcher(None, None, max_batch=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_window_ms"):
        PromptBatcher(None, None, max_batch=4, window_ms=-1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_window_ms"):
        PromptBatcher(None, None, max_batch=4, window_ms=float("nan"))  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- over HTTP


def _upload(url: str, images, model: str | None = None) -> list[str]:
    ids = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        r = httpx.post(
            f"{url}/v1/images",
            params={} if model is None else {"model": model},
            content=buf.getvalue(),
            headers={"content-type": "image/png"},
            timeout=60,
        )
        assert r.status_code == 201, r.text
        ids.append(r.json()["imageId"])
    return ids


def _metrics(url: str) -> dict[str, float]:
    """Every masklet_* sample of /metrics: 'name{labels}' -> value."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return {k: float(v) for k, v in re.findall(r"^(masklet_\S+) (\S+)$", text, re.MULTILINE)}


def _sample(samples: dict[str, float], name: str, model: str, **labels: str) -> float:
    """The value of one sample of ``name`` for ``model`` (0 when absent)."""
    want = {"model": model, **labels}
    total = 0.0
    for key, value in samples.items():
        base, _, rest = key.partition("{")
        found = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if base == name and all(found.get(k) == v for k, v in want.items()):
            total += value
    return total


def _server_errors(samples: dict[str, float]) -> float:
    """HTTP 5xx answers counted so far (but /ready's 503 while the models load)."""
    return sum(
        v
        for k, v in samples.items()
        if k.startswith("masklet_requests_total") and 'status="5' in k and 'route="/ready"' not in k
    )


def _burst(url: str, requests: list[tuple[str, dict, float]]) -> list[httpx.Response | Exception]:
    """POST every (path, body, timeout) at once (one thread each, released together)."""
    out: list[httpx.Response | Exception] = [RuntimeError("no answer")] * len(requests)
    barrier = threading.Barrier(len(requests))

    def one(i: int, path: str, body: dict, timeout: float) -> None:
        with httpx.Client(base_url=url, timeout=timeout) as http:
            barrier.wait(60)
            try:
                out[i] = http.post(path, json=body)
            except httpx.HTTPError as err:
                out[i] = err

    threads = [threading.Thread(target=one, args=(i, *r)) for i, r in enumerate(requests)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a client did not finish"
    return out


def _envelope(r: httpx.Response | Exception, status: int) -> bool:
    return (
        isinstance(r, httpx.Response)
        and r.status_code == status
        and set(r.json().get("error", {})) == {"code", "message", "requestId"}
    )


@pytest.fixture(scope="module")
def burst_server(images):
    """Two served models (the packaged name and the same weights by path), window 2 s, batch max 9."""
    second = str(packaged_checkpoint("masklet-nano"))
    args = ["--model", "masklet-nano", "--model", second, "--batch-max", "9", "--batch-window-ms", str(WINDOW_MS)]
    server = ServerProcess(args=args).start()
    try:
        ids = {"masklet-nano": _upload(server.url, images), second: _upload(server.url, images, second)}
        yield server, ids
    finally:
        server.stop()


def test_burst_is_one_decoder_call_per_model_with_the_local_answers(burst_server, model, predictors, specs):
    server, ids = burst_server
    names = list(ids)
    assert len(specs) == 9  # = --batch-max: each model's first drain takes its whole burst at once
    before = _metrics(server.url)
    requests = [(f"/v1/images/{ids[name][img]}/predict", _body(kw), 60.0) for name in names for img, kw in specs]
    bad = {"pointCoords": [[1, 2]], "pointLabels": [7]}  # a bad prompt inside the burst
    requests.append((f"/v1/images/{ids[names[0]][1]}/predict", bad, 60.0))
    answers = _burst(server.url, requests)
    after = _metrics(server.url)

    assert _envelope(answers[-1], 400), answers[-1]
    failures = []
    for i, r in enumerate(answers[:-1]):
        img, kw = specs[i % len(specs)]
        if not isinstance(r, httpx.Response) or r.status_code != 200:
            failures.append(f"request {i}: {r if isinstance(r, Exception) else (r.status_code, r.text[:300])}")
            continue
        failures += [f"request {i}: {d}" for d in _compare(r.json(), _local(model, predictors, img, kw), kw)]
    assert failures == []
    rows = sum(_prompt_set(model, predictors, img, kw).objects for img, kw in specs)
    for name in names:  # split by model, one call each; the bad prompt never reached a batch
        delta = {
            metric: _sample(after, metric, name) - _sample(before, metric, name)
            for metric in (
                "masklet_prompt_decoder_calls_total",
                "masklet_prompt_batch_size_count",
                "masklet_prompt_batch_size_sum",
                "masklet_prompt_batched_calls_total",
                "masklet_prompt_decoder_rows_sum",
            )
        }
        waited = _sample(after, "masklet_prompt_batch_wait_seconds_sum", name) - _sample(
            before, "masklet_prompt_batch_wait_seconds_sum", name
        )
        assert waited < WINDOW_MS / 1000  # the drain stopped waiting once its batch was full
        assert delta == {
            "masklet_prompt_decoder_calls_total": 1,
            "masklet_prompt_batch_size_count": 1,
            "masklet_prompt_batch_size_sum": len(specs),
            "masklet_prompt_batched_calls_total": 1,
            "masklet_prompt_decoder_rows_sum": rows,
        }, name
    assert _server_errors(after) == 0
    print(f"\nburst: {len(specs)} requests ({rows} objects) per model, each model decoded in one call")


def test_lone_request_waits_at_most_the_window(burst_server):
    server, ids = burst_server
    name = next(iter(ids))
    before = _metrics(server.url)
    t = time.perf_counter()
    r = httpx.post(f"{server.url}/v1/images/{ids[name][0]}/predict", json={"box": [5, 5, 60, 60]}, timeout=60)
    seconds = time.perf_counter() - t
    after = _metrics(server.url)
    assert r.status_code == 200, r.text

    def delta(metric: str) -> float:
        return _sample(after, metric, name) - _sample(before, metric, name)

    assert delta("masklet_prompt_batch_size_sum") == 1
    assert delta("masklet_prompt_batch_wait_seconds_count") == 1
    waited = delta("masklet_prompt_batch_wait_seconds_sum")
    assert waited >= 0.99 * WINDOW_MS / 1000  # it waited for company that never came ...
    assert waited < WINDOW_MS / 1000 + 1.0  # ... for the window, not longer (1 s: thread wake-up on a busy machine)
    assert seconds >= waited
    print(
        f"\nlone request with a {WINDOW_MS} ms window: waited {waited * 1000:.0f} ms, answered in {seconds * 1000:.0f} ms"
    )


def test_a_client_gone_while_queued_does_not_break_its_batch(burst_server, model, predictors, specs):
    server, ids = burst_server
    name = next(iter(ids))
    before = _metrics(server.url)
    good = [specs[0], specs[3], specs[4]]
    requests = [(f"/v1/images/{ids[name][img]}/predict", _body(kw), 60.0) for img, kw in good]
    requests.insert(1, (f"/v1/images/{ids[name][0]}/predict", _body(specs[1][1]), 0.3))  # gives up mid-window
    answers = _burst(server.url, requests)
    assert isinstance(answers[1], httpx.TimeoutException)
    for (img, kw), r in zip(good, answers[:1] + answers[2:]):
        assert isinstance(r, httpx.Response), r
        assert r.status_code == 200, r.text
        assert _compare(r.json(), _local(model, predictors, img, kw), kw) == []
    time.sleep(0.5)  # the abandoned request's handler finishes
    after = _metrics(server.url)
    calls = _sample(after, "masklet_prompt_decoder_calls_total", name)
    assert calls - _sample(before, "masklet_prompt_decoder_calls_total", name) == 1
    assert _server_errors(after) == 0
    img, kw = specs[2]
    r = httpx.post(f"{server.url}/v1/images/{ids[name][img]}/predict", json=_body(kw), timeout=60)
    assert r.status_code == 200
    assert _compare(r.json(), _local(model, predictors, img, kw), kw) == []


def _clicks(url: str, ids: list[str], specs, clients: int, rounds: int) -> list[httpx.Response | Exception]:
    """``clients`` concurrent requests per round (spec k + round, cycling), ``rounds`` rounds."""
    out = []
    for j in range(rounds):
        picks = [specs[(k + j) % len(specs)] for k in range(clients)]
        out += _burst(url, [(f"/v1/images/{ids[img]}/predict", _body(kw), 60.0) for img, kw in picks])
    return out


def _check_clicks(answers, specs, clients: int, model, predictors) -> None:
    for n, r in enumerate(answers):
        j, k = divmod(n, clients)
        img, kw = specs[(k + j) % len(specs)]
        assert isinstance(r, httpx.Response), r
        assert r.status_code == 200, r.text
        assert _compare(r.json(), _local(model, predictors, img, kw), kw) == [], (j, k)


def test_default_server_batches_what_queues_and_never_waits(images, model, predictors, specs):
    server = ServerProcess(args=["--model", "masklet-nano"]).start()  # batch max 8, window 0
    try:
        ids = _upload(server.url, images)
        for img, kw in specs[:3]:  # lone requests
            r = httpx.post(f"{server.url}/v1/images/{ids[img]}/predict", json=_body(kw), timeout=60)
            assert r.status_code == 200
        lone = _metrics(server.url)
        answers = _clicks(server.url, ids, specs, clients=6, rounds=2)
        after = _metrics(server.url)
    finally:
        server.stop()
    _check_clicks(answers, specs, 6, model, predictors)
    name = "masklet-nano"
    assert _sample(lone, "masklet_prompt_batch_size_count", name) == 3  # one batch of one each
    assert _sample(lone, "masklet_prompt_batch_size_sum", name) == 3
    calls = _sample(after, "masklet_prompt_decoder_calls_total", name) - _sample(
        lone, "masklet_prompt_decoder_calls_total", name
    )
    batched = _sample(after, "masklet_prompt_batched_calls_total", name)
    assert batched > 0  # requests that queued behind a busy model shared its next call
    assert calls < len(answers)
    assert _sample(after, "masklet_prompt_batch_wait_seconds_count", name) == 0  # window 0: nobody waited
    assert _server_errors(after) == 0
    print(f"\nwindow 0: {len(answers)} concurrent requests in {calls:.0f} decoder calls, no waiting")


def test_batch_max_one_decodes_one_request_per_call(images, model, predictors, specs):
    server = ServerProcess(args=["--model", "masklet-nano", "--batch-max", "1", "--batch-window-ms", "50"]).start()
    try:
        ids = _upload(server.url, images)
        answers = _clicks(server.url, ids, specs, clients=4, rounds=2)
        after = _metrics(server.url)
    finally:
        server.stop()
    _check_clicks(answers, specs, 4, model, predictors)
    name = "masklet-nano"
    assert _sample(after, "masklet_prompt_batch_size_count", name) == len(answers)
    assert _sample(after, "masklet_prompt_batch_size_sum", name) == len(answers)
    assert _sample(after, "masklet_prompt_batched_calls_total", name) == 0
    assert _sample(after, "masklet_prompt_decoder_calls_total", name) == len(answers)
    assert _server_errors(after) == 0
