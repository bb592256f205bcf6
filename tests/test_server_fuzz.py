"""Property-based fuzz of masklet serve's OpenAPI schema: random bodies for every JSON route, no 5xx.

Bounded: a fixed number of examples per route, on a real server on loopback.
"""

from __future__ import annotations

import json

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
from masklet.synthetic import make_clip, make_scene
from reference.server import ServerProcess

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from masklet.client import Client

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)
#: Realistic values per field name, so the fuzz also reaches the model code, not only the schema.
NEAR = {
    "pointCoords": st.lists(st.lists(st.floats(-50, 300), min_size=2, max_size=3), max_size=3),
    "pointLabels": st.lists(st.integers(-2, 4), max_size=3),
    "points": st.lists(st.lists(st.floats(-50, 300), min_size=2, max_size=2), max_size=3),
    "labels": st.lists(st.integers(-2, 4), max_size=3),
    "box": st.lists(st.floats(-10, 200), min_size=3, max_size=5),
    "frameIdx": st.integers(-2, 5),
    "objId": st.integers(-2, 300),
    "startFrameIdx": st.integers(-2, 5),
    "maxFrameNumToTrack": st.integers(-2, 5),
    "pointsPerSide": st.integers(-1, 6),
    "predIouThresh": st.floats(-1, 2),
    "cropNLayers": st.integers(-1, 2),
}


@pytest.fixture(scope="module")
def live():
    proc = ServerProcess().start()
    with Client(proc.url) as c:
        p = c.image_predictor()
        p.set_image(make_scene(2, size=(64, 80)).image)
        v = c.video_predictor()
        state = v.init_state(list(make_clip(3, num_frames=4, size=(48, 64), num_objects=(1, 1)).frames))
        v.add_new_points_or_box(state, 0, 1, points=[[20, 20]], labels=[1])
        spec = httpx.get(f"{proc.url}/openapi.json").json()
        yield proc, spec, {"iid": p._images[0][0], "sid": state.session_id, "name": "masklet-nano", "jid": "x"}
    proc.stop()


def _json_routes(spec: dict) -> list[tuple[str, dict]]:
    routes = []
    for path, ops in spec["paths"].items():
        op = ops.get("post")
        if op and "application/json" in op.get("requestBody", {}).get("content", {}):
            ref = op["requestBody"]["content"]["application/json"]["schema"].get("$ref", "")
            schema = spec["components"]["schemas"].get(ref.rsplit("/", 1)[-1], {})
            routes.append((path, schema))
    return routes


def _fuzz(http: httpx.Client, url: str, body: st.SearchStrategy, seen: dict) -> None:
    """Post bounded random bodies to one route; every answer is < 500, errors in the envelope."""

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(body)
    def check(doc: object) -> None:
        r = http.post(url, content=json.dumps(doc), headers={"content-type": "application/json"})
        key = (url.rsplit("/", 1)[-1], r.status_code)
        seen[key] = seen.get(key, 0) + 1
        assert r.status_code < 500, (url, doc, r.text[:300])
        if r.status_code >= 400:
            assert set(r.json()["error"]) == {"code", "message", "requestId"}

    check()


def test_fuzz_json_routes_answer_no_5xx(live):
    proc, spec, ids = live
    routes = _json_routes(spec)
    seen: dict = {}
    assert len(routes) >= 8
    with httpx.Client(base_url=proc.url, timeout=300) as http:  # a default-option AMG on a loaded host
        for path, schema in routes:
            fields = sorted(schema.get("properties", {}))
            values = st.fixed_dictionaries({}, optional={f: NEAR.get(f, JSON) | JSON for f in fields})
            body = st.one_of(values, JSON)

            _fuzz(http, path.format(**ids), body, seen)
        assert http.get("/health").status_code == 200
    print(sorted(seen.items()))
    assert sum(n for (_, code), n in seen.items() if code < 300) > 5  # the fuzz reaches the model too
