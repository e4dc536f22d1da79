"""The demo's images: a coloured shape of one of ten classes on a noisy background.

The noise keeps the images from compressing (lzf stores them at 100% of their size), like
real photographs, so the demo's files are as big as their data.
"""

from __future__ import annotations

import numpy as np

CLASSES = (
    "disc",
    "square",
    "ring",
    "plus",
    "cross",
    "h-stripes",
    "v-stripes",
    "triangle",
    "checker",
    "diamond",
)
IMAGE_SHAPE = (32, 32, 3)

_YY, _XX = np.mgrid[0:32, 0:32].astype(np.float32)


def _shape_masks(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Boolean masks ``(n, 32, 32)`` of one shape per image, of class ``labels[i]``.

    Each shape gets a random centre, size and (for stripes and checkers) period.
    """
    n = len(labels)
    cy = rng.uniform(11, 21, n).astype(np.float32)[:, None, None]
    cx = rng.uniform(11, 21, n).astype(np.float32)[:, None, None]
    r = rng.uniform(6, 10, n).astype(np.float32)[:, None, None]
    period = rng.uniform(4, 7, n).astype(np.float32)[:, None, None]
    out = np.zeros((n, 32, 32), bool)
    for c in range(len(CLASSES)):
        i = np.flatnonzero(labels == c)
        if len(i):
            out[i] = _mask(c, _YY - cy[i], _XX - cx[i], r[i], period[i])
    return out


def _mask(c: int, dy: np.ndarray, dx: np.ndarray, r: np.ndarray, period: np.ndarray) -> np.ndarray:
    """The mask of class ``c`` given offsets from the centre, radius and stripe period."""
    ady, adx, w = np.abs(dy), np.abs(dx), r / 3.5
    dist = np.sqrt(dy * dy + dx * dx)
    if c == 0:  # disc
        return dist <= r
    if c == 1:  # square
        return np.maximum(ady, adx) <= 0.8 * r
    if c == 2:  # ring
        return np.abs(dist - 0.8 * r) <= 0.8 * w
    if c == 3:  # plus
        return (np.minimum(ady, adx) <= 0.7 * w) & (np.maximum(ady, adx) <= r)
    if c == 4:  # cross
        return (np.abs(ady - adx) <= 0.9 * w) & (dist <= 1.2 * r)
    if c == 7:  # triangle
        return (dy <= 0.7 * r) & (dy >= 1.6 * adx - r)
    if c == 9:  # diamond
        return ady + adx <= r
    rows_on = np.mod(dy, period) < period / 2  # stripes and checkers
    cols_on = np.mod(dx, period) < period / 2
    if c == 5:
        return rows_on
    if c == 6:
        return cols_on
    return rows_on ^ cols_on


def synthetic_images(labels: np.ndarray, rng: np.random.Generator, noise: int = 96) -> np.ndarray:
    """uint8 images ``(n, 32, 32, 3)``: a shape of class ``labels[i]`` on a noisy background.

    Foreground and background colours are random (each channel differs by at least 40), so
    a model has to learn the shapes, not the colours; the noise (``±noise/2``) makes the
    images nearly incompressible, like real photographs.

    Parameters
    ----------
    labels : numpy.ndarray
        One class number (an index into :data:`CLASSES`) per image.
    rng : numpy.random.Generator
        The source of every random choice (same generator state, same images).
    noise : int
        The width of the uniform noise added to every pixel.

    Returns
    -------
    numpy.ndarray
        ``uint8`` array of shape ``(len(labels), 32, 32, 3)``.

    Examples
    --------
    >>> import numpy as np
    >>> images = synthetic_images(np.arange(10), np.random.default_rng(0))
    >>> images.shape, images.dtype
    ((10, 32, 32, 3), dtype('uint8'))
    >>> CLASSES[3]
    'plus'
    """
    n = len(labels)
    mask = _shape_masks(np.asarray(labels), rng)
    bg = rng.integers(0, 256, (n, 3), dtype=np.int16)
    fg = (bg + rng.integers(40, 217, (n, 3), dtype=np.int16)) % 256
    img = np.where(mask[..., None], fg[:, None, None, :], bg[:, None, None, :])
    img += rng.integers(-noise // 2, noise // 2 + 1, img.shape, dtype=np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)
