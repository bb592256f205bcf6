"""The video parity tests' scenario (``reference.video_compare.scenario``) through the remote twin.

``tests/test_video_parity.py`` runs ``scenario`` against the official predictor; here the same
story runs through ``Client.video_predictor(exact_logits=True)`` on ``masklet serve`` (uvicorn on a
free loopback port, the JPEG frame folder uploaded by the client) and through the local
``VideoPredictor``, and must give the same frames, objects and logits. (``later_objects``' operations
are covered by ``test_server_api.py::test_video_session_matches_local``.)
"""

from __future__ import annotations

import pytest

pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
from PIL import Image

import masklet
from masklet.client import Client
from masklet.synthetic import make_clip
from reference.server import ServerProcess
from reference.video_compare import NUM_FRAMES, assert_same, scenario


@pytest.fixture(scope="module")
def server():
    proc = ServerProcess(args=["--model", "masklet-nano"]).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """The video parity clip as JPEG frames (00000.jpg ...) and its masks (T, N, H, W)."""
    folder = tmp_path_factory.mktemp("clip")
    clip = make_clip(11, num_frames=NUM_FRAMES, size=(96, 128), num_objects=(3, 3))
    for t, frame in enumerate(clip.frames):
        Image.fromarray(frame).save(folder / f"{t:05d}.jpg", quality=95)
    return folder, clip.masks


def test_video_parity_scenario_matches_local(server, clip):
    folder, masks = clip
    local = masklet.VideoPredictor(masklet.load_model("masklet-nano"))
    ref = scenario(local, local.init_state(folder), masks)
    with Client(server.url, timeout=120) as c:
        remote = c.video_predictor(exact_logits=True)
        state = remote.init_state(folder)
        try:
            mine = scenario(remote, state, masks)
        finally:
            remote.close_state(state)
    assert len(mine) > 10
    assert_same(mine, ref)
