"""Upload checks without Ray or HTTP: each bad file gets its status and a message that says what to send instead."""

import pytest

from meddiff.serving.upload import (UploadError, UploadLimits, body_kind, check_content_length, check_image_id,
                                    content_id, inspect_image)

LIMITS = UploadLimits(max_bytes=50_000, min_side=8, max_side=4096)

REFUSED = [
    # (file, model channels, status, words the message must contain)
    ("empty", 1, 400, "empty"),
    ("text", 1, 415, "not an image"),
    ("json", 1, 415, "JSON"),
    ("pdf", 1, 415, "PDF"),
    ("gif", 1, 415, "GIF is not accepted"),
    ("truncated_png", 1, 422, "truncated"),
    ("truncated_jpeg", 1, 422, "truncated"),
    ("tiny_png", 1, 422, "smallest accepted side is 8"),
    ("huge_header_png", 1, 422, "the budget is data.max_pixels = 36000000 pixels"),
    ("colour_png", 1, 422, "reads grayscale"),
    ("transparent_rgba_png", 1, 422, "alpha"),
    ("cmyk_jpeg", 3, 422, "CMYK"),
    ("good_png", 3, 422, "reads RGB colour"),
]


@pytest.mark.parametrize("name,channels,status,words", REFUSED, ids=[r[0] for r in REFUSED])
def test_bad_files_are_refused_with_status_and_message(image_files, name, channels, status, words):
    with pytest.raises(UploadError) as err:
        inspect_image(image_files[name], channels, LIMITS)
    assert err.value.status == status
    assert words in err.value.message


@pytest.mark.parametrize("name", ["good_png", "good_jpeg", "grey_as_rgb_png", "opaque_rgba_png"])
def test_grayscale_files_are_accepted_by_a_grayscale_model(image_files, name):
    info = inspect_image(image_files[name], 1, LIMITS)
    assert (info.width, info.height) == (28, 28)


def test_colour_file_is_accepted_by_an_rgb_model(image_files):
    assert inspect_image(image_files["colour_png"], 3, LIMITS).format == "PNG"


def test_size_cap_content_type_and_id():
    with pytest.raises(UploadError) as err:
        inspect_image(b"\x89PNG" + b"0" * 60_000, 1, LIMITS)
    assert err.value.status == 413
    with pytest.raises(UploadError) as err:
        check_content_length("60000", LIMITS)
    assert err.value.status == 413 and "50000" in err.value.message
    check_content_length("100", LIMITS)
    assert body_kind("multipart/form-data; boundary=x") == "multipart"
    assert body_kind("image/png") == "raw"
    for bad in (None, "application/json", "text/plain; charset=utf-8"):
        with pytest.raises(UploadError) as err:
            body_kind(bad)
        assert err.value.status == 415 and "multipart/form-data" in err.value.message
    assert check_image_id("pneumoniamnist_balanced/test/00000") == "pneumoniamnist_balanced/test/00000"
    assert check_image_id(None) is None
    for bad in ("", "  ", "x" * 300, "a\nb"):
        with pytest.raises(UploadError) as err:
            check_image_id(bad)
        assert err.value.status == 422
    assert content_id(b"abc") == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def _file_bytes(tmp_path, build, name):
    return build(tmp_path / name).read_bytes()


def test_upload_runs_the_decoders_checks(tmp_path, image_files):
    from tests.hostile.test_decode import animated_png, eps, multipage_tiff, svg
    from tests.serving.conftest import png_with_size

    limits = UploadLimits(max_bytes=2**20, min_side=8, max_side=8192)  # the default sides: 8192 x 8192 passes them
    with pytest.raises(UploadError) as err:
        inspect_image(png_with_size(image_files["good_png"], 8192, 8192), 1, limits)
    assert err.value.status == 422 and "the budget is data.max_pixels = 36000000 pixels" in err.value.message
    over = png_with_size(image_files["good_png"], 8000, 6000)  # 48 M: over the budget, under PIL's own 2x guard
    with pytest.raises(UploadError) as err:
        inspect_image(over, 1, limits)
    assert err.value.status == 422 and "8000 x 6000 = 48000000 pixels" in err.value.message
    with pytest.raises(UploadError) as err:
        inspect_image(png_with_size(image_files["good_png"], 5000, 100), 1, LIMITS)  # within budget, side > 4096
    assert err.value.status == 422 and "largest accepted side is 4096" in err.value.message
    for build, name, status, words in [(eps, "x.eps", 415, "EPS/PostScript is not accepted"),
                                       (svg, "x.svg", 415, "SVG/XML is not accepted"),
                                       (multipage_tiff, "x.tif", 422, "the TIFF file has 3 frames"),
                                       (animated_png, "x.png", 422, "the PNG file has 2 frames")]:
        with pytest.raises(UploadError) as err:
            inspect_image(_file_bytes(tmp_path, build, name), 1, limits)
        assert err.value.status == status and words in err.value.message, name


def test_dicom_uploads(tmp_path):
    import numpy as np

    from tests.dicom_files import write_dicom

    assert body_kind("application/dicom") == "raw"
    grey = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) % 4096
    data = write_dicom(tmp_path / "IM1", grey, bits_stored=12).read_bytes()
    info = inspect_image(data, 1, LIMITS)
    assert (info.format, info.width, info.height, info.mode) == ("DICOM", 32, 32, "MONOCHROME2")
    with pytest.raises(UploadError) as err:
        inspect_image(data, 3, LIMITS)
    assert err.value.status == 422 and "grayscale (1 channel, DICOM MONOCHROME2)" in err.value.message
    colour = np.zeros((32, 32, 3), np.uint8)
    colour[..., 0] = 255
    info = inspect_image(write_dicom(tmp_path / "C1", colour, photometric="RGB").read_bytes(), 3, LIMITS)
    assert info.format == "DICOM" and info.mode == "RGB"
    frames = write_dicom(tmp_path / "F1", np.zeros((2, 32, 32), np.uint16), bits_stored=12).read_bytes()
    with pytest.raises(UploadError) as err:
        inspect_image(frames, 1, LIMITS)
    assert err.value.status == 422 and "multi-frame file with 2 frames" in err.value.message
    with pytest.raises(UploadError) as err:
        inspect_image(data, 1, UploadLimits(max_bytes=50_000, min_side=8, max_side=4096, max_pixels=1000))
    assert err.value.status == 422 and "expected at most 1000" in err.value.message
