"""ImagePredictor behaviour beyond parity: inputs, embeddings reuse, errors, dtypes."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from masklet import ImageDecodeError, ImageEmbeddings, ImagePredictor, InvalidInputError, PredictorStateError
from masklet.checkpoints import config_from_official
from masklet.model import Sam2Model
from reference.official import SMALL, official_model_dict, randomize_parameters_
from reference.pairs import test_image


@pytest.fixture(scope="module")
def model() -> Sam2Model:
    config = config_from_official(official_model_dict("sam2.1-hiera-tiny", **SMALL))
    return randomize_parameters_(Sam2Model(config), seed=1).eval()


@pytest.fixture
def predictor(model) -> ImagePredictor:
    p = ImagePredictor(model)
    p.set_image(test_image(120, 160, seed=2))
    return p


POINT = dict(point_coords=[[40.0, 50.0]], point_labels=[1])


def test_image_kinds_give_the_same_result(model, tmp_path):
    rgb = test_image(90, 130, seed=3)
    reference = ImagePredictor(model)
    reference.set_image(rgb)
    expected = reference.predict(**POINT, return_logits=True)[0]
    path = tmp_path / "img.png"
    Image.fromarray(rgb).save(path)
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    sources = [
        path,
        str(path),
        Image.fromarray(rgb),
        rgba,
        torch.from_numpy(rgb).permute(2, 0, 1),
        rgb.astype(np.float32) / 255.0,
        buffer.getvalue(),
    ]
    for source in sources:
        p = ImagePredictor(model)
        p.set_image(source)
        np.testing.assert_allclose(p.predict(**POINT, return_logits=True)[0], expected, atol=1e-4)
    gray = ImagePredictor(model)
    gray.set_image(rgb[..., 0])
    masks, _, _ = gray.predict(**POINT)
    assert masks.shape == (3, 90, 130)


def test_embeddings_out_and_back_in(model, predictor, tmp_path):
    expected = predictor.predict(**POINT, return_logits=True)
    embeddings = predictor.get_embeddings()
    path = tmp_path / "emb.safetensors"
    embeddings.save(path)
    fresh = ImagePredictor(model)
    fresh.set_embeddings(ImageEmbeddings.load(path))  # no encoder run
    for a, b in zip(fresh.predict(**POINT, return_logits=True), expected):
        np.testing.assert_array_equal(a, b)
    assert fresh.get_image_embedding().shape == (1, 256, 16, 16)
    with pytest.raises(InvalidInputError, match="do not fit"):
        fresh.set_embeddings(ImageEmbeddings(levels=[torch.zeros(1, 256, 8, 8)], orig_hw=[(10, 10)]))


@pytest.mark.parametrize("whole_model", [False, True])
def test_bfloat16_agrees_with_float32(model, whole_model):
    """bfloat16 encoder (what load_model(dtype=bfloat16) gives), or the whole model in bfloat16."""
    image = test_image(120, 160, seed=2)
    fp32 = ImagePredictor(model)
    low_precision = Sam2Model(model.config).eval()
    low_precision.load_state_dict(model.state_dict())
    (low_precision if whole_model else low_precision.image_encoder).to(torch.bfloat16)
    bf16 = ImagePredictor(low_precision)
    assert bf16.model.encoder_dtype == torch.bfloat16
    for p in (fp32, bf16):
        p.set_image(image)
    a, _, _ = fp32.predict(**POINT)
    b, _, low = bf16.predict(**POINT)
    assert low.dtype == np.float32 and a.shape == b.shape
    iou = (a & b).sum(axis=(1, 2)) / (a | b).sum(axis=(1, 2))
    assert (iou > 0.9).all()


def test_predict_before_set_image(model):
    p = ImagePredictor(model)
    with pytest.raises(PredictorStateError, match="set_image"):
        p.predict(**POINT)
    with pytest.raises(PredictorStateError):
        p.get_image_embedding()


def test_predict_with_several_images_set_needs_predict_batch(model):
    p = ImagePredictor(model)
    p.set_images([test_image(50, 60), test_image(70, 40)])
    with pytest.raises(PredictorStateError, match="predict_batch"):
        p.predict(**POINT)
    with pytest.raises(InvalidInputError, match="one entry per image"):
        p.predict_batch(point_coords_batch=[[[1.0, 2.0]]], point_labels_batch=[[1]])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(point_coords=[[1.0, 2.0, 3.0]], point_labels=[1]), r"point_coords: expected shape \(N, 2\)"),
        (dict(point_coords=[[1.0, 2.0]], point_labels=[1, 1]), "point_labels: expected shape"),
        (dict(point_coords=[[1.0, 2.0]], point_labels=[7]), r"point_labels: values \[7.0\] are not accepted"),
        (dict(point_coords=[[1.0, 2.0]], point_labels=[0.5]), "not accepted"),
        (dict(point_coords=[[float("nan"), 2.0]], point_labels=[1]), "NaN"),
        (dict(point_coords=[[1.0, 2.0]]), "given together"),
        (dict(point_coords=np.zeros((0, 2)), point_labels=np.zeros(0)), "at least one point"),
        (dict(point_coords="abc", point_labels=[1]), "array of numbers"),
        (dict(box=[50, 10, 20, 40]), r"x1 < x0"),
        (dict(box=[10, 50, 20, 40]), r"y1 < y0"),
        (dict(box=[1, 2, 3]), r"box: expected shape \(4,\)"),
        (
            dict(box=[[0, 0, 5, 5], [0, 0, 6, 6]], point_coords=[[1.0, 1.0]], point_labels=[1]),
            "different numbers of objects",
        ),
        (dict(mask_input=np.zeros((1, 32, 32))), r"mask_input: expected low-resolution logits of shape \(1, 64, 64\)"),
        (dict(box=[[0, 0, 5, 5], [0, 0, 6, 6]], mask_input=np.zeros((3, 1, 64, 64))), "3 masks for 2 objects"),
    ],
)
def test_bad_prompts(predictor, kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        predictor.predict(**kwargs)
    predictor.predict(**POINT)  # still usable afterwards


def test_bad_images_and_arguments(model, tmp_path):
    p = ImagePredictor(model)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageDecodeError):
        p.set_image(broken)
    with pytest.raises(ImageDecodeError, match="no such file"):
        p.set_image(tmp_path / "missing.png")
    with pytest.raises(InvalidInputError):
        p.set_image(np.zeros((10, 10, 2), np.uint8))
    with pytest.raises(InvalidInputError, match="empty list"):
        p.set_images([])
    with pytest.raises(InvalidInputError, match="max_hole_area"):
        ImagePredictor(model, max_hole_area=-1)
    with pytest.raises(InvalidInputError, match="Sam2Model"):
        ImagePredictor("sam2.1-hiera-tiny")


def test_no_autograd_state_leaks(predictor):
    masks, iou, low = predictor.predict(**POINT)
    assert not predictor.get_image_embedding().requires_grad
    assert isinstance(masks, np.ndarray) and masks.dtype == bool
