"""Compiled mode (masklet.compiled): compiled encoder and grid decoder outputs equal eager, artefacts are cached."""

from __future__ import annotations

import copy

import pytest
import torch
from torch._dynamo.utils import counters

import masklet
from masklet.amg.decoder import POINTS_PER_BATCH, GridDecoder
from masklet.compiled import CompiledGridDecode, compile_model
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


@pytest.mark.parametrize("model_name", ["masklet-nano", "small tiny (factored second block)"])
def test_compiled_grid_decoder_equals_eager_for_every_image_and_prompt_count(tmp_path, model_name):
    if model_name == "masklet-nano":
        eager = masklet.load_model("masklet-nano")
    else:
        _, eager = make_pair("sam2.1-hiera-tiny", seed=3, **SMALL)
    compiled = copy.deepcopy(eager)
    report = compile_model(compiled, cache_dir=tmp_path, automatic_masks=True)
    assert report.artefacts.name.startswith("encoder-amg-")
    inner = compiled.compiled_grid_decode
    assert isinstance(inner, CompiledGridDecode)
    size = eager.image_size
    with inference():  # the fixed graph is for the generator's default chunk of this model
        blank = eager.image_embeddings(eager.encode_image(torch.zeros(1, 3, size, size)))
    assert inner.batch == GridDecoder(eager, blank).chunk(POINTS_PER_BATCH, upscale=False)
    calls: list[tuple[str, int]] = []

    def counting(name, graph):
        def call(decoder, coords, labels, mask_input):
            calls.append((name, coords.shape[0]))
            return graph(decoder, coords, labels, mask_input)

        return call

    inner.fixed = counting("fixed", inner.fixed)
    inner.symbolic = counting("symbolic", inner.symbolic)
    graphs = counters["stats"]["unique_graphs"]
    gen = torch.Generator().manual_seed(1)
    with inference():
        for prompts in (inner.batch, 5, 2, 1):  # new images and prompt counts: the warm-up's graphs serve them
            image = torch.randn(1, 3, size, size, generator=gen)
            points = torch.rand(prompts, 1, 2, generator=gen) * size
            labels = torch.ones(prompts, 1, dtype=torch.int32)
            ours = GridDecoder(compiled, compiled.image_embeddings(compiled.encode_image(image)))
            ref = GridDecoder(eager, eager.image_embeddings(eager.encode_image(image)))
            (iou, state), (ref_iou, ref_state) = ours.decode(points, labels, None), ref.decode(points, labels, None)
            for a, b in ((iou, ref_iou), (state.keys, ref_state.keys), (state.queries, ref_state.queries)):
                assert a.shape == b.shape
                assert (a - b).abs().max().item() <= 1e-4 * max(1.0, b.abs().max().item())
            # a mask prompt (the refinement pass) runs eagerly
            mask = torch.randn(prompts, 1, 4 * ours.hw[0], 4 * ours.hw[1], generator=gen)
            assert torch.equal(ours.decode(points, labels, mask)[0], ours.decode_eager(points, labels, mask)[0])
    # the default chunk in the fixed graph, others in the symbolic one; one prompt would specialise
    # a graph: it runs eagerly
    assert calls == [("fixed", inner.batch), ("symbolic", 5), ("symbolic", 2)]
    assert counters["stats"]["unique_graphs"] == graphs
    assert copy.deepcopy(compiled).compiled_grid_decode is None  # copies run eagerly
