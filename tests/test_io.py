"""Tests for masklet.io: image loading, saving, palettes and mask overlays."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from masklet.errors import ImageDecodeError, InvalidInputError
from masklet.io import load_image, overlay_masks, palette, save_image, save_mask_png


def _pattern(h: int = 5, w: int = 7) -> np.ndarray:
    """A small RGB image where every pixel differs."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 30, y * 40, (x + y) * 10 + 5], axis=-1).astype(np.uint8)


def _png_bytes(img: Image.Image, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kwargs)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------
# files and bytes
# ------------------------------------------------------------------------------------------


def test_load_image_from_path_str_and_bytes(tmp_path: Path) -> None:
    rgb = _pattern()
    path = tmp_path / "img.png"
    Image.fromarray(rgb).save(path)
    for source in (path, str(path), path.read_bytes(), bytearray(path.read_bytes())):
        out = load_image(source)
        assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
        assert np.array_equal(out, rgb)


def test_load_image_jpeg_and_grayscale_file(tmp_path: Path) -> None:
    flat = np.full((16, 16, 3), (200, 40, 90), np.uint8)
    Image.fromarray(flat).save(tmp_path / "a.jpg", quality=95)
    out = load_image(tmp_path / "a.jpg")
    assert out.shape == (16, 16, 3) and np.abs(out.astype(int) - flat).max() <= 4
    Image.fromarray(np.full((3, 4), 77, np.uint8)).save(tmp_path / "g.png")
    assert np.array_equal(load_image(tmp_path / "g.png"), np.full((3, 4, 3), 77, np.uint8))


def test_load_image_applies_exif_orientation(tmp_path: Path) -> None:
    rgb = _pattern(4, 6)
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    data = _png_bytes(img, exif=exif)
    (tmp_path / "r.png").write_bytes(data)
    expected = np.rot90(rgb, k=-1)
    for source in (tmp_path / "r.png", data):
        out = load_image(source)
        assert out.shape == (6, 4, 3)
        assert np.array_equal(out, expected)
    # A PIL image is used as given: no rotation.
    with Image.open(io.BytesIO(data)) as opened:
        assert load_image(opened).shape == (4, 6, 3)


def test_load_image_16bit_png(tmp_path: Path) -> None:
    values = np.array([[0, 257, 65535], [1000, 32768, 65280]], np.uint16)
    Image.fromarray(values).save(tmp_path / "d.png")
    out = load_image(tmp_path / "d.png")
    expected = np.round(values / 257.0).astype(np.uint8)
    assert np.array_equal(out[..., 0], expected) and np.array_equal(out[..., 2], expected)


def test_load_image_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match="no such file"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(ImageDecodeError, match="bad.png"):
        load_image(tmp_path / "bad.png")
    with pytest.raises(ImageDecodeError, match="directory"):
        load_image(tmp_path)
    data = _png_bytes(Image.fromarray(np.zeros((40, 40, 3), np.uint8) + 9))
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="cut.png"):
        load_image(tmp_path / "cut.png")
    with pytest.raises(ImageDecodeError, match="bytes"):
        load_image(b"\x89PNG garbage")
    with pytest.raises(ImageDecodeError, match="empty bytes"):
        load_image(b"")
    with pytest.raises(ImageDecodeError):
        load_image("x" * 5000)
    assert issubclass(ImageDecodeError, InvalidInputError)


# ------------------------------------------------------------------------------------------
# PIL images
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode, fill, expected",
    [
        ("RGB", (10, 20, 30), (10, 20, 30)),
        ("L", 100, (100, 100, 100)),
        ("LA", (100, 0), (100, 100, 100)),
        ("La", (100, 255), (100, 100, 100)),
        ("RGBA", (10, 20, 30, 0), (10, 20, 30)),
        ("1", 1, (255, 255, 255)),
        ("CMYK", (0, 0, 0, 0), (255, 255, 255)),
        ("I;16", 65535, (255, 255, 255)),
        ("I;16", 257 * 100, (100, 100, 100)),
        ("I;16B", 257 * 7, (7, 7, 7)),
        ("I", 200, (200, 200, 200)),
        ("I", 257 * 40, (40, 40, 40)),
        ("F", 0.5, (128, 128, 128)),
    ],
)
def test_load_image_pil_modes(mode: str, fill: object, expected: tuple[int, int, int]) -> None:
    out = load_image(Image.new(mode, (3, 2), fill))  # type: ignore[arg-type]
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8
    assert out[1, 2].tolist() == list(expected)


def test_load_image_pil_palette_and_transparency() -> None:
    img = Image.new("P", (2, 2), 1)
    img.putpalette([0, 0, 0, 250, 120, 5] + [0] * 762)
    assert load_image(img)[0, 0].tolist() == [250, 120, 5]
    img.info["transparency"] = 1
    assert load_image(img)[0, 0].tolist() == [250, 120, 5]


def test_load_image_pil_mode_errors() -> None:
    with pytest.raises(InvalidInputError, match=r"mode 'I' with values in \[-5, -5\]"):
        load_image(Image.new("I", (2, 2), -5))
    with pytest.raises(InvalidInputError, match=r"float image with values in \[3, 3\]"):
        load_image(Image.new("F", (2, 2), 3.0))
    with pytest.raises(InvalidInputError, match="empty"):
        load_image(Image.new("RGB", (0, 3)))


# ------------------------------------------------------------------------------------------
# numpy arrays and tensors
# ------------------------------------------------------------------------------------------


def test_load_image_numpy_layouts_and_dtypes() -> None:
    rgb = _pattern()
    assert np.array_equal(load_image(rgb), rgb)
    gray = rgb[..., 0]
    assert np.array_equal(load_image(gray), np.repeat(gray[..., None], 3, axis=2))
    assert np.array_equal(load_image(gray[..., None]), np.repeat(gray[..., None], 3, axis=2))
    rgba = np.concatenate([rgb, np.full((5, 7, 1), 3, np.uint8)], axis=2)
    assert np.array_equal(load_image(rgba), rgb)
    assert np.array_equal(load_image(np.asfortranarray(rgb)), rgb)
    assert np.array_equal(load_image(rgb[:, ::-1]), rgb[:, ::-1])
    assert np.array_equal(load_image(rgb.astype(np.float32) / 255.0), rgb)
    assert np.array_equal(load_image(rgb.astype(np.float64) / 255.0), rgb)
    assert np.array_equal(load_image(rgb.astype(np.uint16) * 257), rgb)
    assert load_image(np.ones((2, 2), bool)).tolist() == [[[255] * 3] * 2] * 2
    edges = load_image(np.array([[0.0, 1.0]], np.float16))
    assert edges.tolist() == [[[0] * 3, [255] * 3]]


def test_load_image_returns_a_fresh_array() -> None:
    rgb = _pattern()
    out = load_image(rgb)
    out[:] = 0
    assert rgb.any() and out.flags.c_contiguous


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((4,), np.uint8), r"shape \(4,\)"),
        (np.zeros((2, 2, 2, 3), np.uint8), r"shape \(2, 2, 2, 3\)"),
        (np.zeros((4, 4, 2), np.uint8), r"C in \{1, 3, 4\}"),
        (np.zeros((0, 4, 3), np.uint8), "empty"),
        (np.zeros((4, 4, 3), np.int64), "unsupported dtype int64"),
        (np.zeros((4, 4, 3), np.complex64), "unsupported dtype complex64"),
        (np.full((4, 4, 3), 1.5, np.float32), r"values in \[1.5, 1.5\]"),
        (np.full((4, 4, 3), -0.1, np.float64), "must lie in"),
        (np.full((4, 4), np.nan, np.float32), "NaN"),
    ],
)
def test_load_image_numpy_errors(bad: np.ndarray, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        load_image(bad)


def test_load_image_torch_tensors() -> None:
    rgb = _pattern()
    chw = torch.from_numpy(rgb).permute(2, 0, 1)
    assert np.array_equal(load_image(chw), rgb)
    assert np.array_equal(load_image(torch.from_numpy(rgb)), rgb)  # HWC (last dim 3, first 5)
    assert np.array_equal(load_image(chw.float() / 255.0), rgb)
    assert np.array_equal(load_image(chw.to(torch.bfloat16) * 0 + 1), np.full_like(rgb, 255))
    assert np.array_equal(load_image(chw[:1]), np.repeat(rgb[..., :1], 3, axis=2))
    assert np.array_equal(load_image(chw[0]), np.repeat(rgb[..., :1], 3, axis=2))
    rgba = torch.cat([chw, torch.zeros(1, 5, 7, dtype=torch.uint8)])
    assert np.array_equal(load_image(rgba), rgb)
    with pytest.raises(InvalidInputError, match="unsupported dtype int32"):
        load_image(chw.int())
    with pytest.raises(InvalidInputError, match="must lie in"):
        load_image(chw.float())
    with pytest.raises(InvalidInputError, match=r"C in \{1, 3, 4\}"):
        load_image(torch.zeros(2, 5, 7))


@pytest.mark.parametrize("bad", [None, 3, [[1, 2], [3, 4]], {"a": 1}])
def test_load_image_rejects_unknown_types(bad: object) -> None:
    with pytest.raises(InvalidInputError, match=f"unsupported type {type(bad).__name__}"):
        load_image(bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# saving
# ------------------------------------------------------------------------------------------


def test_save_mask_png_round_trip(tmp_path: Path) -> None:
    mask = np.zeros((6, 9), bool)
    mask[1:4, 2:8] = True
    save_mask_png(mask, tmp_path / "m.png")
    save_mask_png(torch.from_numpy(mask), tmp_path / "t.png")
    for name in ("m.png", "t.png"):
        with Image.open(tmp_path / name) as img:
            assert img.format == "PNG" and img.mode == "L"
            arr = np.asarray(img)
        assert set(np.unique(arr).tolist()) == {0, 255}
        assert np.array_equal(arr == 255, mask)


def test_save_mask_png_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"mask: expected shape \(H, W\)"):
        save_mask_png(np.zeros((1, 4, 4), bool), tmp_path / "x.png")
    with pytest.raises(InvalidInputError, match="mask: expected bool or integer"):
        save_mask_png(np.zeros((4, 4), np.float32), tmp_path / "x.png")
    with pytest.raises(InvalidInputError, match="mask: expected a numpy array"):
        save_mask_png([[True]], tmp_path / "x.png")  # type: ignore[arg-type]
    assert not (tmp_path / "x.png").exists()


def test_save_image_round_trip(tmp_path: Path) -> None:
    rgb = _pattern()
    save_image(rgb, tmp_path / "a.png")
    assert np.array_equal(load_image(tmp_path / "a.png"), rgb)
    save_image(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255, tmp_path / "b.png")
    assert np.array_equal(load_image(tmp_path / "b.png"), rgb)
    save_image(rgb, tmp_path / "c.jpg")
    with Image.open(tmp_path / "c.jpg") as img:
        assert img.format == "JPEG" and img.size == (7, 5)
    match = r"path: cannot choose an image format for .*\.what"
    with pytest.raises(InvalidInputError, match=match):
        save_image(rgb, tmp_path / "a.what")
    with pytest.raises(InvalidInputError, match="unsupported dtype"):
        save_image(rgb.astype(np.int32), tmp_path / "d.png")


# ------------------------------------------------------------------------------------------
# palette and overlays
# ------------------------------------------------------------------------------------------


def test_palette_is_distinct_deterministic_voc() -> None:
    p = palette(300)
    assert p.shape == (300, 3) and p.dtype == np.uint8
    assert len({tuple(c) for c in p.tolist()}) == 300
    assert not (p == 0).all(axis=1).any()
    assert p[:4].tolist() == [[128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]
    assert np.array_equal(palette(5), p[:5])
    assert palette(0).shape == (0, 3)
    for bad in (-1, 2.5, True, "3", 1 << 24):
        with pytest.raises(InvalidInputError, match="n: expected an int"):
            palette(bad)  # type: ignore[arg-type]


def test_overlay_masks_blends_interior_and_outlines_edges() -> None:
    image = np.full((10, 12, 3), 100, np.uint8)
    masks = np.zeros((2, 10, 12), bool)
    masks[0, 1:6, 1:6] = True
    masks[1, 5:9, 7:11] = True
    before = image.copy()
    out = overlay_masks(image, masks, alpha=0.5)
    assert np.array_equal(image, before)
    assert out.shape == image.shape and out.dtype == np.uint8
    colors = palette(2).astype(float)
    assert out[3, 3].tolist() == np.floor(0.5 * 100 + 0.5 * colors[0] + 0.5).tolist()
    assert out[1, 3].tolist() == colors[0].tolist()  # top edge of mask 0
    assert out[6, 8].tolist() == np.floor(0.5 * 100 + 0.5 * colors[1] + 0.5).tolist()
    assert out[5, 7].tolist() == colors[1].tolist()  # corner of mask 1
    outside = ~masks.any(axis=0)
    assert np.array_equal(out[outside], image[outside])


def test_overlay_masks_options() -> None:
    image = _pattern(8, 8)
    mask = np.zeros((8, 8), bool)
    mask[2:7, 2:7] = True
    clear = overlay_masks(image, mask, alpha=0.0, colors=[(255, 0, 255)])
    assert np.array_equal(clear[4, 4], image[4, 4])  # interior untouched at alpha 0
    assert clear[2, 4].tolist() == [255, 0, 255]  # outline always drawn
    chw = torch.from_numpy(image).permute(2, 0, 1)
    solid = overlay_masks(chw, torch.from_numpy(mask)[None], 1.0, np.array([[0, 255, 0]]))
    assert solid[4, 4].tolist() == [0, 255, 0]
    empty = overlay_masks(image, np.zeros((0, 8, 8), bool))
    assert np.array_equal(empty, image)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"masks": np.zeros((1, 7, 8), bool)},
            r"masks: mask size \(7, 8\) does not match the image size \(8, 8\)",
        ),
        ({"masks": np.zeros((1, 8, 8), np.float32)}, "masks: expected bool or integer"),
        ({"masks": np.zeros((1, 1, 8, 8), bool)}, r"masks: expected shape \(H, W\) or \(N, H, W\)"),
        ({"alpha": 1.5}, r"alpha: expected a float in \[0, 1\], got 1.5"),
        ({"colors": [(1, 2, 3), (4, 5, 6)]}, "colors: expected 1 RGB triples"),
        ({"colors": [(1, 2, 300)]}, "values in 0..255"),
    ],
)
def test_overlay_masks_errors(kwargs: dict, match: str) -> None:
    args = {"image": _pattern(8, 8), "masks": np.ones((1, 8, 8), bool)} | kwargs
    with pytest.raises(InvalidInputError, match=match):
        overlay_masks(**args)
