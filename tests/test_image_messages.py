"""ImagePredictor's checks and bookkeeping, pinned whole (issue 15 mutation gate).

Every bad argument gets its whole message (they reach HTTP clients in the error envelope), the
boundary values are accepted, and the state kept between calls (one image or several, embeddings
handed in, the per-image decoder caches) behaves as documented. A small random model: no parity
here, only what the predictor itself decides.
"""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from masklet import ImageEmbeddings, ImagePredictor, InvalidInputError, PredictorStateError
from masklet.checkpoints import config_from_official
from masklet.fast_decoder import DecoderImageCache
from masklet.model import Sam2Model
from reference.official import SMALL, official_model_dict, randomize_parameters_
from reference.pairs import test_image

POINT = dict(point_coords=[[40.0, 50.0]], point_labels=[1])


@pytest.fixture(scope="module")
def model() -> Sam2Model:
    config = config_from_official(official_model_dict("sam2.1-hiera-tiny", **SMALL))
    return randomize_parameters_(Sam2Model(config), seed=1).eval()


@pytest.fixture(scope="module")
def two_images() -> list[np.ndarray]:
    return [test_image(60, 80, seed=4), test_image(72, 50, seed=5)]


def whole(message: str) -> str:
    return "^" + re.escape(message) + "$"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(max_hole_area=-1), "max_hole_area: expected a number >= 0, got -1"),
        (dict(max_hole_area="3"), "max_hole_area: expected a number >= 0, got '3'"),
        (dict(max_sprinkle_area=-0.5), "max_sprinkle_area: expected a number >= 0, got -0.5"),
        (dict(max_sprinkle_area=True), "max_sprinkle_area: expected a number >= 0, got True"),
        (dict(mask_threshold=float("nan")), "mask_threshold: expected a finite number, got nan"),
        (dict(mask_threshold=float("-inf")), "mask_threshold: expected a finite number, got -inf"),
        (dict(mask_threshold="0"), "mask_threshold: expected a finite number, got '0'"),
        (
            dict(decoder_dtype=torch.float64),
            "decoder_dtype: expected torch.float32, torch.bfloat16 or torch.float16, got torch.float64",
        ),
    ],
)
def test_bad_options_get_their_whole_message(model, kwargs, message):
    with pytest.raises(InvalidInputError, match=whole(message)):
        ImagePredictor(model, **kwargs)


def test_boundary_options_are_accepted_and_stored(model):
    default = ImagePredictor(model)
    assert (default.mask_threshold, default.max_hole_area, default.max_sprinkle_area) == (0.0, 0.0, 0.0)
    assert default.decoder_dtype == torch.float32
    p = ImagePredictor(model, mask_threshold=-2, max_hole_area=0, max_sprinkle_area=0, decoder_dtype=torch.float16)
    assert (p.mask_threshold, p.max_hole_area, p.max_sprinkle_area) == (-2.0, 0.0, 0.0)
    assert all(type(v) is float for v in (p.mask_threshold, p.max_hole_area, p.max_sprinkle_area))
    assert p.decoder_dtype == torch.float16
    assert ImagePredictor(model, decoder_dtype=torch.bfloat16).decoder_dtype == torch.bfloat16
    assert p.device == torch.device("cpu")


def test_bad_images_get_their_whole_message(model):
    p = ImagePredictor(model)
    for images, kind in (
        ("a.png", "str"),
        (b"\x89PNG", "bytes"),
        (np.zeros((2, 8, 8, 3), np.uint8), "ndarray"),
        (torch.zeros(2, 3, 8, 8), "Tensor"),
        (7, "int"),
        ({"a": 1}, "dict"),
    ):
        with pytest.raises(InvalidInputError, match=whole(f"images: expected a list of images, got {kind}")):
            p.set_images(images)
    with pytest.raises(InvalidInputError, match=whole("images: expected at least one image, got an empty list")):
        p.set_images(())


def test_state_errors_get_their_whole_message(model, two_images):
    p = ImagePredictor(model)
    no_image = "no image is set: call set_image(...) or set_images(...) before predicting"
    for call in (p.get_embeddings, p.get_image_embedding, lambda: p.predict(**POINT), p.predict_batch):
        with pytest.raises(PredictorStateError, match=whole(no_image)):
            call()
    p.set_images(two_images)
    several = "several images are set: use predict_batch(...), or set_image(...) for one image"
    with pytest.raises(PredictorStateError, match=whole(several)):
        p.predict(**POINT)
    for name in ("point_coords_batch", "point_labels_batch", "box_batch", "mask_input_batch"):
        with pytest.raises(InvalidInputError, match=whole(f"{name}: expected one entry per image (2), got 3")):
            p.predict_batch(**{name: [None, None, None]})
    p.reset_predictor()
    with pytest.raises(PredictorStateError, match=whole(no_image)):
        p.predict(**POINT)


def test_a_batch_of_one_image_and_a_single_image_after_a_batch(model, two_images):
    single = ImagePredictor(model)
    single.set_image(two_images[0])
    expected = single.predict(**POINT, return_logits=True)
    p = ImagePredictor(model)
    p.set_images([two_images[0]])  # a batch of one: predict() still works
    for a, b in zip(p.predict(**POINT, return_logits=True), expected):
        np.testing.assert_array_equal(a, b)
    p.set_images(two_images)
    p.set_image(two_images[0])  # back to one image: the batch flag is cleared
    for a, b in zip(p.predict(**POINT, return_logits=True), expected):
        np.testing.assert_array_equal(a, b)


def test_embeddings_checks_get_their_whole_message(model, two_images):
    p = ImagePredictor(model)
    with pytest.raises(InvalidInputError, match=whole("embeddings: expected ImageEmbeddings, got dict")):
        p.set_embeddings({"levels": []})
    p.set_images(two_images)
    good = p.get_embeddings()
    expected = "[(32, 64, 64), (64, 32, 32), (256, 16, 16)]"
    shapes = [tuple(t.shape) for t in good.levels]
    mixed = [good.levels[0][:1], *good.levels[1:]]
    cases = [  # (levels, orig_hw, their shapes, image count)
        (good.levels[-1:], good.orig_hw, shapes[-1:], 2),  # a level missing
        (good.levels, good.orig_hw[:1], shapes, 1),  # sizes of one image for a batch of two
        (mixed, good.orig_hw, [(1, 32, 64, 64), *shapes[1:]], 2),  # levels of different batch sizes
    ]
    for levels, orig_hw, got, n in cases:
        message = (
            f"embeddings: levels of shapes {got} for {n} image(s) do not fit this model, "
            f"which expects (B, C, h, w) levels with (C, h, w) = {expected}"
        )
        with pytest.raises(InvalidInputError, match=whole(message)):
            p.set_embeddings(ImageEmbeddings(levels=levels, orig_hw=orig_hw))
    assert p.get_embeddings() is good  # a refused set_embeddings leaves the current images alone


def test_handed_in_embeddings_are_cast_and_counted(model, two_images):
    """float64 levels and numpy-int sizes are cast to the model's; one image or two decides predict's use."""
    p = ImagePredictor(model)
    p.set_images(two_images)
    batch = p.get_embeddings()
    expected = p.predict_batch(point_coords_batch=[POINT["point_coords"]] * 2, point_labels_batch=[[1]] * 2)
    fresh = ImagePredictor(model)
    wide = [t.double() for t in batch.levels]
    fresh.set_embeddings(ImageEmbeddings(levels=wide, orig_hw=[(np.int64(h), np.int64(w)) for h, w in batch.orig_hw]))
    got = fresh.get_embeddings()
    assert [t.dtype for t in got.levels] == [torch.float32] * 3
    assert got.orig_hw == [(60, 80), (72, 50)]
    assert all(type(v) is int for hw in got.orig_hw for v in hw)
    with pytest.raises(PredictorStateError, match="several images are set"):
        fresh.predict(**POINT)
    out = fresh.predict_batch(point_coords_batch=[POINT["point_coords"]] * 2, point_labels_batch=[[1]] * 2)
    for a, b in zip(out, expected):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    one = ImagePredictor(model)
    one.set_embeddings(ImageEmbeddings(levels=[t[1:] for t in batch.levels], orig_hw=batch.orig_hw[1:]))
    masks, _, _ = one.predict(**POINT)  # a single image: predict() works
    np.testing.assert_array_equal(masks, expected[0][1])
    assert one.get_image_embedding() is one.get_embeddings().levels[-1]


def test_embeddings_files(tmp_path, model):
    """save() writes plain CPU tensors with the sizes; load() refuses a file without them."""
    bare = tmp_path / "bare.safetensors"
    save_file({"level_0": torch.zeros(1, 2)}, str(bare))
    other = tmp_path / "other.safetensors"
    save_file({"level_0": torch.zeros(1, 2)}, str(other), metadata={"format": "pt"})
    for path in (bare, other):
        with pytest.raises(
            InvalidInputError, match=whole(f"{path} is not a masklet embeddings file (no orig_hw metadata)")
        ):
            ImageEmbeddings.load(path)
    # a transposed (non-contiguous) level that requires grad still saves, and comes back equal
    level = torch.arange(24.0).reshape(1, 2, 3, 4).transpose(2, 3).requires_grad_()
    path = tmp_path / "emb.safetensors"
    ImageEmbeddings(levels=[torch.ones(1, 1, 2, 2), level], orig_hw=[(7, 9)]).save(str(path))
    back = ImageEmbeddings.load(str(path), device=torch.device("cpu"))
    assert back.orig_hw == [(7, 9)]
    assert len(back.levels) == 2
    torch.testing.assert_close(back.levels[0], torch.ones(1, 1, 2, 2), rtol=0, atol=0)
    torch.testing.assert_close(back.levels[1], level.detach(), rtol=0, atol=0)


def test_clicks_reuse_one_decoder_cache_per_image(model, two_images):
    """Point prompts without a mask go through the cached-click decoder: one cache per image,
    built at the first click and reused by the next ones; a new image starts afresh."""
    p = ImagePredictor(model)
    p.set_images(two_images)
    points = dict(point_coords_batch=[POINT["point_coords"]] * 2, point_labels_batch=[[1]] * 2)
    p.predict_batch(**points)
    caches = dict(p._decoder_caches)
    assert sorted(caches) == [0, 1]
    assert all(isinstance(c, DecoderImageCache) for c in caches.values())
    assert caches[0] is not caches[1]
    p.predict_batch(**points, multimask_output=False)
    assert all(p._decoder_caches[i] is caches[i] for i in (0, 1))
    p.set_image(two_images[0])
    assert p._decoder_caches == {}
    p.predict(box=[5, 5, 40, 30])  # a box is two corner points: the cached path too
    assert list(p._decoder_caches) == [0]
    p.predict(**POINT, mask_input=np.zeros((1, 64, 64), np.float32))  # a mask prompt: the full decoder
    assert list(p._decoder_caches) == [0]


class _RecordingModel(Sam2Model):
    """A Sam2Model whose decode_masks is its own (as the ONNX Runtime model's is)."""

    calls = 0

    def decode_masks(self, *args, **kwargs):
        type(self).calls += 1
        return super().decode_masks(*args, **kwargs)


def test_models_with_their_own_decoding_never_take_the_cached_path(model):
    own = copy.deepcopy(model)
    own.__class__ = _RecordingModel
    plain, other = ImagePredictor(model), ImagePredictor(own)
    image = test_image(60, 80, seed=4)
    for p in (plain, other):
        p.set_image(image)
    before = _RecordingModel.calls
    expected = plain.predict(**POINT, return_logits=True)
    got = other.predict(**POINT, return_logits=True)
    assert _RecordingModel.calls == before + 1
    assert other._decoder_caches == {}
    assert len(plain._decoder_caches) == 1
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_decoder_dtype_reaches_the_cached_decoder(model):
    image = test_image(60, 80, seed=4)
    fp32, bf16 = ImagePredictor(model), ImagePredictor(model, decoder_dtype=torch.bfloat16)
    for p in (fp32, bf16):
        p.set_image(image)
    a = fp32.predict(**POINT, return_logits=True)[2]
    b = bf16.predict(**POINT, return_logits=True)[2]
    assert b.dtype == np.float32
    assert float(np.abs(a - b).max()) > 1e-4, "bfloat16 decoding gave the float32 numbers"
    assert float(np.abs(a - b).max()) < 0.2 * float(np.abs(a).max())


def test_postprocess_thresholds_strictly_and_clamps(model):
    """The public post-processing the server's prompt batcher uses: bool masks by default, a
    strict threshold, ±32 clamped low-res logits, float32 scores."""
    p = ImagePredictor(model, mask_threshold=1.5)
    low = torch.full((2, 3, 8, 8), 1.5)
    low[0, 0, :4] = 50.0
    low[1, 2, 4:] = -70.0
    ious = torch.tensor([[0.5, 0.25, 0.125], [1.0, 0.0, 0.75]], dtype=torch.float64)
    masks, scores, clamped = p.postprocess(low, ious, (16, 12))
    assert masks.dtype == bool
    assert masks.shape == (2, 3, 16, 12)
    assert not masks[1].any()  # logits equal to the threshold are background
    assert masks[0, 0, :2].all()
    assert scores.dtype == np.float32
    np.testing.assert_array_equal(scores, ious.numpy().astype(np.float32))
    assert clamped.shape == (2, 3, 8, 8)
    assert float(clamped.max()) == 32.0
    assert float(clamped.min()) == -32.0
    np.testing.assert_array_equal(clamped[0, 1], np.full((8, 8), 1.5, np.float32))
    logits, _, _ = p.postprocess(low.to(torch.bfloat16), ious, (16, 12), return_logits=True)
    assert logits.dtype == np.float32
    assert float(logits.max()) == 50.0  # the returned full-size logits are not clamped


def test_the_model_device_is_honoured(model):
    """The meta device stands in for a GPU on CPU-only CI: encoding, handed-in embeddings and
    prompts all land on the model's device."""
    meta = ImagePredictor(copy.deepcopy(model).to("meta"))
    assert meta.device.type == "meta"
    meta.set_image(test_image(60, 80, seed=4))
    assert [t.device.type for t in meta.get_embeddings().levels] == ["meta"] * 3
    cpu = ImagePredictor(model)
    cpu.set_image(test_image(60, 80, seed=4))
    meta.set_embeddings(cpu.get_embeddings())
    assert [t.device.type for t in meta.get_embeddings().levels] == ["meta"] * 3
    prompts = meta.prepare_prompts(POINT["point_coords"], POINT["point_labels"], None, None, (60, 80), True)
    assert prompts.points is not None
    assert prompts.points[0].device.type == "meta"
    assert prompts.points[1].device.type == "meta"


def test_predict_batch_passes_each_image_its_own_mask_input(model, two_images):
    """predict_batch(mask_input_batch=...) gives each image what predict(mask_input=...) gives it alone."""
    p = ImagePredictor(model)
    p.set_images(two_images)
    boxes = [np.array([5.0, 5.0, 50.0, 40.0]), np.array([10.0, 8.0, 45.0, 60.0])]
    _, _, lows = p.predict_batch(box_batch=boxes, multimask_output=False)
    masks_in = [low * 3.0 for low in lows]
    batch = p.predict_batch(box_batch=boxes, mask_input_batch=masks_in, multimask_output=False, return_logits=True)
    plain = p.predict_batch(box_batch=boxes, multimask_output=False, return_logits=True)
    for i, image in enumerate(two_images):
        alone = ImagePredictor(model)
        alone.set_image(image)
        expected = alone.predict(box=boxes[i], mask_input=masks_in[i], multimask_output=False, return_logits=True)
        for got, want in zip((part[i] for part in batch), expected):
            np.testing.assert_allclose(got, want, atol=1e-5)
        assert float(np.abs(batch[0][i] - plain[0][i]).max()) > 1e-3, "the mask input changed nothing"
