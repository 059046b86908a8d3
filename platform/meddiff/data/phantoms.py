"""Synthetic two-class chest phantoms, rendered on demand so a machine without data still runs the demo.

Class 0 "normal": a bright elliptical body with two dark elliptical lung fields, a brighter mediastinum between them,
smooth low-frequency noise and pixel noise; every size and position is jittered.
Class 1 "abnormal": the same anatomy plus a bright blurred opacity (a consolidation) inside one lung field.

Everything except the opacity is drawn from a generator seeded by (seed, index) only, so the two classes of one index
differ exactly by the opacity; its contrast and size vary (some are faint), so the classes are separable but not trivially.
Nothing is stored: a manifest row ``phantom://<seed>`` + index + label is the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from meddiff.errors import DataError

PHANTOM_SCHEME = "phantom://"
PHANTOM_SIZE = 64  # native side in pixels; the decoder resizes like any other image
CLASS_NAMES = ("normal", "abnormal")


@dataclass(frozen=True)
class Ellipse:
    """Centre (cx, cy) and radii (rx, ry) in unit image coordinates (0..1, y down)."""

    cx: float
    cy: float
    rx: float
    ry: float


@dataclass(frozen=True)
class PhantomGeometry:
    """The random anatomy of one phantom and where its opacity goes if it has one."""

    body: Ellipse
    lungs: tuple[Ellipse, Ellipse]
    opacity_lung: int  # 0 or 1: which lung field holds the opacity
    opacity: Ellipse  # centre and spread (Gaussian sigma per axis)
    opacity_contrast: float  # added intensity at the opacity centre, before the lung mask


def phantom_uri(seed: int) -> str:
    return f"{PHANTOM_SCHEME}{seed}"


def parse_phantom_uri(uri: str) -> int:
    """The seed of a ``phantom://<seed>`` URI."""
    text = uri[len(PHANTOM_SCHEME):] if uri.startswith(PHANTOM_SCHEME) else ""
    if not text.isdigit():
        raise DataError(f"{uri}: not a phantom URI; expected phantom://<non-negative integer seed>")
    return int(text)


def phantom_geometry(seed: int, index: int) -> PhantomGeometry:
    """Draw the jittered anatomy of phantom ``index`` of ``seed`` (deterministic)."""
    rng = np.random.default_rng([seed, index, 0])
    body = Ellipse(0.5 + rng.normal(0, 0.02), 0.53 + rng.normal(0, 0.02), rng.uniform(0.36, 0.44), rng.uniform(0.40, 0.46))
    half_gap = rng.uniform(0.14, 0.19)
    lung_cy = body.cy - rng.uniform(0.04, 0.09)
    lungs = tuple(
        Ellipse(body.cx + side * half_gap + rng.normal(0, 0.01), lung_cy + rng.normal(0, 0.01),
                rng.uniform(0.09, 0.13), rng.uniform(0.20, 0.27))
        for side in (-1, 1)
    )
    which = int(rng.integers(2))
    lung = lungs[which]
    # Keep the opacity centre well inside the lung field: within 60 % of its radii.
    angle, radius = rng.uniform(0, 2 * np.pi), np.sqrt(rng.uniform(0, 1)) * 0.6
    sigma = rng.uniform(0.035, 0.08)
    opacity = Ellipse(lung.cx + radius * lung.rx * np.cos(angle), lung.cy + radius * lung.ry * np.sin(angle),
                      sigma * rng.uniform(0.7, 1.3), sigma * rng.uniform(0.7, 1.3))
    return PhantomGeometry(body, lungs, which, opacity, float(rng.uniform(0.12, 0.4)))


def render_phantom(seed: int, index: int, label: int, size: int = PHANTOM_SIZE) -> np.ndarray:
    """The phantom image: uint8 [size, size] grayscale. label 0 = normal, 1 = abnormal (with opacity)."""
    if label not in (0, 1):
        raise DataError(f"{phantom_uri(seed)}#{index}: phantom label must be 0 (normal) or 1 (abnormal), got {label!r}")
    geometry = phantom_geometry(seed, index)
    noise_rng = np.random.default_rng([seed, index, 1])
    y, x = _grid(size)
    body = _soft_ellipse(geometry.body, x, y, size)
    lungs = np.maximum(*(_soft_ellipse(lung, x, y, size) for lung in geometry.lungs))
    image = 0.06 + 0.60 * body - 0.38 * lungs + 0.12 * body * _mediastinum(geometry, x, y)
    image = image + 0.06 * _smooth_noise(noise_rng, size) + noise_rng.normal(0, 0.025, (size, size))
    if label == 1:
        image = image + opacity_map(geometry, size)
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def opacity_map(geometry: PhantomGeometry, size: int = PHANTOM_SIZE) -> np.ndarray:
    """Additive intensity of the opacity, float [size, size]: a blurred blob confined to its lung field."""
    y, x = _grid(size)
    o = geometry.opacity
    blob = np.exp(-0.5 * (((x - o.cx) / o.rx) ** 2 + ((y - o.cy) / o.ry) ** 2))
    return geometry.opacity_contrast * blob * _soft_ellipse(geometry.lungs[geometry.opacity_lung], x, y, size)


def opacity_mask(seed: int, index: int, size: int = PHANTOM_SIZE) -> np.ndarray:
    """bool [size, size]: where phantom ``index`` would carry its opacity (the blob's core), whatever its label."""
    geometry = phantom_geometry(seed, index)
    return opacity_map(geometry, size) > 0.5 * geometry.opacity_contrast


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = (np.arange(size, dtype=np.float64) + 0.5) / size
    return np.meshgrid(coords, coords, indexing="ij")


def _soft_ellipse(e: Ellipse, x: np.ndarray, y: np.ndarray, size: int) -> np.ndarray:
    """1 inside, 0 outside, with an edge about two pixels wide (a hard edge would alias when resized)."""
    r = np.sqrt(((x - e.cx) / e.rx) ** 2 + ((y - e.cy) / e.ry) ** 2)
    width = 2.0 / (size * min(e.rx, e.ry))
    return np.clip((1.0 - r) / width + 0.5, 0.0, 1.0)


def _mediastinum(geometry: PhantomGeometry, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    centre = 0.5 * (geometry.lungs[0].cx + geometry.lungs[1].cx)
    return np.exp(-0.5 * ((x - centre) / 0.04) ** 2)


def _smooth_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: a 6 x 6 Gaussian field upsampled bilinearly (mimics soft tissue)."""
    coarse = rng.normal(0, 1, (6, 6)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BILINEAR), dtype=np.float64)
