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
    ("gif", 1, 415, "GIF images are not accepted"),
    ("truncated_png", 1, 422, "truncated"),
    ("truncated_jpeg", 1, 422, "truncated"),
    ("tiny_png", 1, 422, "smallest accepted side is 8"),
    ("huge_header_png", 1, 422, "largest accepted side is 4096"),
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
