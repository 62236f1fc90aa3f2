"""Photos in every shape users have them: rotated JPEGs, transparent PNGs, 16-bit, CMYK."""

from __future__ import annotations

import pytest
import torch
from PIL import Image, features

from oneword.core.data import (
    find_photos,
    load_masks,
    load_photos,
    masked_photo_batch,
    photo_batch,
    photo_crops,
    read_photo,
)
from oneword.errors import OnewordError

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def _close(pixel, expected, tol=8):
    return all(abs(a - b) <= tol for a, b in zip(pixel, expected))


def _two_halves(width=40, height=20) -> Image.Image:
    """Left half red, right half blue."""
    image = Image.new("RGB", (width, height), BLUE)
    image.paste(RED, (0, 0, width // 2, height))
    return image


# -- finding -------------------------------------------------------------------------------
def test_find_photos_folder_is_sorted_non_recursive_and_case_insensitive(tmp_path):
    for name in ("b.PNG", "a.jpg", "c.JpEg", "d.webp", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "e.jpg").write_bytes(b"x")
    assert [p.name for p in find_photos([tmp_path])] == ["a.jpg", "b.PNG", "c.JpEg", "d.webp"]


def test_find_photos_takes_files_as_given_and_names_a_missing_path(tmp_path):
    photo = tmp_path / "one.png"
    photo.write_bytes(b"x")
    assert find_photos([photo, str(photo)]) == [photo]
    with pytest.raises(OnewordError, match="nope.jpg"):
        find_photos([tmp_path / "nope.jpg"])


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(OnewordError, match="no usable photos in .*JPEG/PNG/WebP"):
        load_photos([tmp_path])


# -- reading -------------------------------------------------------------------------------
def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "phone.jpg"
    _two_halves().save(path, exif=exif, quality=95)
    image = read_photo(path)
    assert image.size == (20, 40)
    assert _close(image.getpixel((10, 2)), RED)  # the left half is now on top
    assert _close(image.getpixel((10, 37)), BLUE)


def test_transparency_becomes_white(tmp_path):
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    rgba.save(tmp_path / "a.png")
    la = Image.new("LA", (4, 4), (0, 0))
    la.save(tmp_path / "b.png")
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0])
    palette.info["transparency"] = 0
    palette.save(tmp_path / "c.png", transparency=0)
    images, warnings = load_photos([tmp_path])
    assert warnings == []
    assert [im.mode for im in images] == ["RGB"] * 3
    assert images[0].getpixel((3, 3)) == WHITE and images[0].getpixel((0, 0)) == RED
    assert images[1].getpixel((1, 1)) == WHITE
    assert images[2].getpixel((1, 1)) == WHITE


def test_grayscale_cmyk_and_16_bit_become_correct_rgb(tmp_path):
    Image.new("L", (4, 4), 100).save(tmp_path / "a_gray.png")
    Image.new("CMYK", (4, 4), (255, 0, 0, 0)).save(tmp_path / "b_cmyk.jpg", quality=95)
    deep = Image.new("I;16", (4, 1))
    for x, value in enumerate((65535, 32768, 1028, 0)):
        deep.putpixel((x, 0), value)
    deep.save(tmp_path / "c_deep.png")
    assert Image.open(tmp_path / "c_deep.png").mode.startswith("I")
    gray, cmyk, sixteen = load_photos([tmp_path])[0]
    assert gray.getpixel((0, 0)) == (100, 100, 100)
    assert _close(cmyk.getpixel((1, 1)), (0, 255, 255))  # full cyan
    assert [sixteen.getpixel((x, 0)) for x in range(4)] == [
        (255, 255, 255),
        (128, 128, 128),
        (4, 4, 4),
        (0, 0, 0),
    ]


def test_32_bit_gray_in_8_bit_range_is_kept(tmp_path):
    from oneword.core.data import to_rgb

    assert to_rgb(Image.new("I", (2, 2), 200)).getpixel((0, 0)) == (200, 200, 200)
    assert to_rgb(Image.new("F", (2, 2), 0.5)).getpixel((0, 0)) == (128, 128, 128)


@pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WebP")
def test_webp_is_read(tmp_path):
    Image.new("RGB", (6, 6), RED).save(tmp_path / "x.webp", lossless=True)
    images, _ = load_photos([tmp_path / "x.webp"])
    assert images[0].getpixel((3, 3)) == RED


def test_unreadable_files_are_skipped_with_a_warning(tmp_path):
    Image.new("RGB", (6, 6), RED).save(tmp_path / "good.png")
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    good = (tmp_path / "good.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(good[: len(good) // 2])
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    images, warnings = load_photos([tmp_path, notes])
    assert len(images) == 1
    assert len(warnings) == 3
    for name, line in zip(("corrupt.jpg", "truncated.png", "notes.txt"), warnings):
        assert line.startswith(f"skipped {tmp_path / name}: ") and "\n" not in line


def test_only_unreadable_files_is_an_error(tmp_path):
    (tmp_path / "corrupt.png").write_bytes(b"nope")
    with pytest.raises(OnewordError, match="no usable photos"):
        load_photos([tmp_path])


# -- crops ---------------------------------------------------------------------------------
def _gradient(width, height) -> Image.Image:
    image = Image.new("RGB", (width, height))
    image.putdata(
        [
            ((x * 7) % 256, (y * 11) % 256, (x + y) % 256)
            for y in range(height)
            for x in range(width)
        ]
    )
    return image


def test_center_crop_shape_range_and_position():
    image = Image.new("RGB", (64, 32), BLUE)
    image.paste(RED, (16, 0, 48, 32))  # the middle square is red
    crops = photo_crops(image, 16, "center", count=5, generator=torch.Generator().manual_seed(0))
    assert crops.shape == (1, 3, 16, 16) and crops.dtype == torch.float32
    assert torch.allclose(
        crops[0, :, 2:-2, 2:-2],
        torch.tensor([1.0, -1.0, -1.0])[:, None, None].expand(3, 12, 12),
        atol=0.05,
    )


def test_random_crops_are_deterministic_per_generator_and_in_range():
    image = _gradient(48, 24)
    a = photo_crops(image, 16, "random", 6, torch.Generator().manual_seed(1))
    b = photo_crops(image, 16, "random", 6, torch.Generator().manual_seed(1))
    c = photo_crops(image, 16, "random", 6, torch.Generator().manual_seed(2))
    assert a.shape == (6, 3, 16, 16)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= -1.0 and a.max() <= 1.0


def test_photo_crops_rejects_bad_options():
    with pytest.raises(OnewordError, match="--crop"):
        photo_crops(_gradient(8, 8), 8, "middle", 1, torch.Generator())


def test_photo_batch_counts_and_flips_are_mirrors():
    images = [_gradient(40, 20), _gradient(20, 30)]
    batch = photo_batch(
        images, 16, "random", 3, flip=True, generator=torch.Generator().manual_seed(0)
    )
    assert batch.shape == (2 * 3 * 2, 3, 16, 16)
    assert torch.equal(batch[6:], batch[:6].flip(-1))
    plain = photo_batch(
        images, 16, "center", 3, flip=False, generator=torch.Generator().manual_seed(0)
    )
    assert plain.shape == (2, 3, 16, 16)


# -- masks ---------------------------------------------------------------------------------
def _marked(height=32, width=48) -> tuple[Image.Image, torch.Tensor]:
    """A dark photo with a white block off-center, and a mask of that very block."""
    gen = torch.Generator().manual_seed(3)
    pixels = (torch.rand(height, width, 3, generator=gen) * 100).to(torch.uint8)
    mask = torch.zeros(height, width)
    pixels[4:20, 30:44] = 255
    mask[4:20, 30:44] = 1.0
    return Image.fromarray(pixels.numpy()), mask


@pytest.mark.parametrize("crop", ["center", "random"])
def test_masks_follow_the_crops_and_flips_of_their_photo(crop):
    image, mask = _marked()  # the short side is the resolution: the crops need no resize
    crops, masks = masked_photo_batch(
        [image, image], [mask, mask], 32, crop, 3, True, torch.Generator().manual_seed(5)
    )
    count = 2 * (3 if crop == "random" else 1)
    assert crops.shape == (2 * count, 3, 32, 32) and masks.shape == (2 * count, 1, 32, 32)
    white = (crops > 0.99).all(dim=1, keepdim=True)
    assert torch.equal(white, masks > 0.5)
    assert torch.equal(masks[count:], masks[:count].flip(-1))
    if crop == "random":  # the drawn crops are at several places, and the mask went along
        assert any(not torch.equal(masks[0], m) for m in masks[1:count])


def test_masked_crops_are_the_crops_of_the_photos_alone():
    image, mask = _marked(40, 60)
    gen = torch.Generator().manual_seed(1)
    plain = photo_batch([image], 16, "random", 4, True, gen)
    crops, masks = masked_photo_batch(
        [image], [mask], 16, "random", 4, True, torch.Generator().manual_seed(1)
    )
    assert torch.equal(crops, plain)
    assert masks.min() >= 0 and masks.max() <= 1


def test_a_resized_mask_keeps_its_area_share():
    image, mask = _marked(64, 96)
    _, masks = masked_photo_batch([image], [mask], 32, "center")
    # the 2x downscale averages 2x2 blocks; the block lies inside the center crop
    assert masks.sum().item() == pytest.approx(mask.sum().item() / 4)


def _save_mask(path, mask: torch.Tensor) -> None:
    Image.fromarray((mask * 255).round().to(torch.uint8).numpy()).save(path)


def test_masks_are_found_beside_in_a_folder_or_in_the_alpha_channel(tmp_path):
    image, mask = _marked()
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a", "b"):
        image.save(photos / f"{name}.jpg")
    _save_mask(photos / "a.mask.png", mask)
    rgba = image.convert("RGBA")
    rgba.putalpha(Image.fromarray((mask * 128).to(torch.uint8).numpy()))  # soft: grey 128
    rgba.save(photos / "c.png")
    folder = tmp_path / "masks"
    folder.mkdir()
    _save_mask(folder / "b.png", 1 - mask)
    files = find_photos([photos])
    assert [f.name for f in files] == ["a.jpg", "b.jpg", "c.png"]  # a.mask.png is no photo
    a, b, c = load_masks(files, [photos], folder)
    assert a.source == photos / "a.mask.png" and torch.equal(a.weight, mask)
    assert b.source == folder / "b.png" and torch.equal(b.weight, 1 - mask)
    assert c.alpha and torch.allclose(c.weight, mask * 128 / 255)
    with pytest.raises(OnewordError, match=r"b\.jpg: no mask.*b\.mask\.png"):
        load_masks(files, [photos])
