"""Compiled mode (masklet.compiled): compiled encoder output equals eager, artefacts are cached."""

from __future__ import annotations

import copy

import pytest
import torch
from torch._dynamo.utils import counters

from masklet.compiled import compile_model
from masklet.errors import ConfigError
from masklet.precision import inference
from reference.official import SMALL
from reference.pairs import make_pair


def test_compiled_encoder_equals_eager_and_caches_artefacts(tmp_path):
    _, eager = make_pair("sam2.1-hiera-tiny", seed=2, **SMALL)
    compiled = copy.deepcopy(eager)
    report = compile_model(compiled, cache_dir=tmp_path)
    assert report.artefacts.is_file()
    assert report.artefacts.parent == tmp_path
    assert not report.loaded
    assert report.seconds > 0
    graphs = counters["stats"]["unique_graphs"]
    with inference():  # made as set_image makes its pixels (an inference tensor, as the warm-up's)
        images = torch.randn(1, 3, eager.image_size, eager.image_size, generator=torch.Generator().manual_seed(0))
        ours = compiled.image_embeddings(compiled.encode_image(images))
    # the warm-up captured everything: the first real call compiles nothing more (cached positions
    # once made it capture a graph again, a second cold start outside compile_model)
    assert counters["stats"]["unique_graphs"] == graphs > 0
    with inference():
        ref = eager.image_embeddings(eager.encode_image(images))
    for a, b in zip(ours, ref):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() <= 1e-4 * max(1.0, b.abs().max().item())
    assert set(compiled.state_dict()) == set(eager.state_dict())  # compiled in place: same keys
    # a second model of the same config finds the artefacts written by the first
    again = compile_model(copy.deepcopy(eager), cache_dir=tmp_path, warm_up=False)
    assert again.loaded
    assert again.artefacts == report.artefacts


def test_compile_model_rejects_other_modules():
    with pytest.raises(ConfigError, match="Sam2Model"):
        compile_model(torch.nn.Linear(2, 2))  # type: ignore[arg-type]
