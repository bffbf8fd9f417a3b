"""Procedurally generated captioned shapes: the offline stand-in for image-text pairs.

Every image is one coloured shape (a circle, a square or a triangle) on a plain
dark background, drawn with anti-aliased edges (4x4 supersampling). Every caption
names exactly one colour from ``SHAPE_COLORS`` and one kind from ``SHAPE_KINDS``,
e.g. ``"a red circle"``; a size word ("small", "big") and a position phrase
("on the left", "at the top", "in the middle", ...) may be added, and they are
always true of the picture.

``make_shapes(n, seed)`` is deterministic: the same seed gives the same images,
captions and labels on every machine. With ``return_labels=True`` it also
returns the ground truth a test needs: colour and kind indices, the shape's mask
and bounding box (for inpainting checks).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "SHAPE_COLORS",
    "SHAPE_KINDS",
    "SHAPE_SIZES",
    "SHAPE_POSITIONS",
    "SHAPE_RGB",
    "SHAPE_BACKGROUND",
    "SHAPE_RADIUS",
    "make_shapes",
    "position_phrase",
    "shape_area",
    "shape_outline",
    "render_shape",
    "shape_caption",
]

SHAPE_COLORS = ("red", "green", "blue", "yellow", "purple")
SHAPE_KINDS = ("circle", "square", "triangle")
SHAPE_SIZES = ("small", "big")
SHAPE_POSITIONS = ("on the left", "on the right", "at the top", "at the bottom", "in the middle")

# RGB in [0, 1]; far apart from each other and from the background
SHAPE_RGB = {
    "red": (0.90, 0.15, 0.15),
    "green": (0.15, 0.75, 0.25),
    "blue": (0.20, 0.35, 0.95),
    "yellow": (0.95, 0.85, 0.15),
    "purple": (0.65, 0.25, 0.85),
}
SHAPE_BACKGROUND = (0.12, 0.12, 0.14)

_SUPERSAMPLE = 4  # sub-pixels per pixel side, for smooth (anti-aliased) edges
# radius as a fraction of the image side, for each size word
SHAPE_RADIUS = {"small": (0.16, 0.22), "big": (0.27, 0.34)}


def shape_outline(kind: str, cx: float, cy: float, r: float, circle_points: int = 96) -> np.ndarray:
    """The outline of a shape as a polygon, corners ``[K, 2]`` (x, y) in pixels, clockwise on screen.

    (cx, cy) is the centre (the centroid) and r the "radius": the circle's radius
    (drawn as a ``circle_points``-gon), the square's half-side times 1/0.85, the
    circumradius of the triangle (equilateral, pointing up) divided by 1.2.
    """
    if kind == "circle":
        t = 2 * np.pi * np.arange(circle_points) / circle_points
        return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)
    if kind == "square":
        h = 0.85 * r
        return np.array([(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)])
    if kind == "triangle":
        R = 1.2 * r
        return np.array([(cx, cy - R), (cx + R * np.sqrt(3) / 2, cy + R / 2), (cx - R * np.sqrt(3) / 2, cy + R / 2)])
    raise ValueError(f"unknown shape kind {kind!r}; allowed: {', '.join(SHAPE_KINDS)}")


def _shape_coverage(kind: str, cx: float, cy: float, r: float, size: int) -> np.ndarray:
    """Fraction of each pixel covered by the shape, [size, size] in [0, 1] (see ``shape_outline``)."""
    s = _SUPERSAMPLE
    coords = (np.arange(size * s) + 0.5) / s  # sub-pixel centres, in pixels
    y, x = np.meshgrid(coords, coords, indexing="ij")
    if kind == "circle":  # exactly round, not the polygon
        inside = (x - cx) ** 2 + (y - cy) ** 2 <= r**2
    else:  # a convex polygon: the interior lies on the same side of every edge
        corners = shape_outline(kind, cx, cy, r)
        inside = np.ones_like(x, dtype=bool)
        for (ax, ay), (bx, by) in zip(corners, np.roll(corners, -1, axis=0)):
            inside &= (bx - ax) * (y - ay) - (by - ay) * (x - ax) >= 0
    return inside.reshape(size, s, size, s).mean(axis=(1, 3))


def render_shape(color: str, kind: str, cx: float, cy: float, r: float, size: int = 32,
                 background=SHAPE_BACKGROUND) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one shape; returns ``(image [3, size, size] in [-1, 1], coverage [size, size] in [0, 1])``."""
    if color not in SHAPE_RGB:
        raise ValueError(f"unknown colour {color!r}; allowed: {', '.join(SHAPE_COLORS)}")
    cover = _shape_coverage(kind, cx, cy, r, size)[None]  # [1, H, W]
    fg = np.asarray(SHAPE_RGB[color], dtype=np.float64)[:, None, None]
    bg = np.asarray(background, dtype=np.float64)[:, None, None]
    img = cover * fg + (1 - cover) * bg  # [3, H, W] in [0, 1]
    return torch.from_numpy(img * 2 - 1).float(), torch.from_numpy(cover[0]).float()


def shape_area(kind: str, r: float) -> float:
    """Area (in square pixels) of a shape of "radius" ``r`` drawn by ``render_shape``.

    circle π r²; square (2 · 0.85 r)²; triangle (3√3 / 4) R² with circumradius R = 1.2 r.
    """
    if kind == "circle":
        return float(np.pi * r**2)
    if kind == "square":
        return float((1.7 * r) ** 2)
    if kind == "triangle":
        return float(3 * np.sqrt(3) / 4 * (1.2 * r) ** 2)
    raise ValueError(f"unknown shape kind {kind!r}; allowed: {', '.join(SHAPE_KINDS)}")


def position_phrase(cx: float, cy: float, size: int) -> str:
    """Which of SHAPE_POSITIONS describes a centre (cx, cy) (in pixels) best: the captions' rule.

    "in the middle" within 10% of the side from the centre (in x and y); otherwise the
    side of the picture the centre is nearest to.
    """
    dx, dy = cx / size - 0.5, cy / size - 0.5
    if max(abs(dx), abs(dy)) < 0.1:
        return "in the middle"
    if abs(dx) >= abs(dy):
        return "on the left" if dx < 0 else "on the right"
    return "at the top" if dy < 0 else "at the bottom"


def shape_caption(color: str, kind: str, size_word: str | None = None, position: str | None = None) -> str:
    """``"a [size] <colour> <kind> [position]"``, e.g. ``"a big red circle on the left"``."""
    words = ["a"] + ([size_word] if size_word else []) + [color, kind] + ([position] if position else [])
    return " ".join(words)


def make_shapes(n: int, seed: int = 0, size: int = 32, return_labels: bool = False):
    """``n`` captioned shape images, deterministic given ``seed``.

    Returns ``(images [N, 3, size, size] float32 in [-1, 1], captions: list[str])``,
    and with ``return_labels=True`` a third item, a dict of tensors:

    * ``color`` [N] (index into SHAPE_COLORS), ``kind`` [N] (index into SHAPE_KINDS),
      ``big`` [N] bool, ``position`` [N] (index into SHAPE_POSITIONS: where the shape is,
      whether or not the caption says it);
    * ``center`` [N, 2] (x, y) and ``radius`` [N], in pixels;
    * ``mask`` [N, 1, H, W] bool: pixels at least half covered by the shape;
    * ``bbox`` [N, 4] ints (x0, y0, x1, y1), x1/y1 exclusive: the box around every pixel
      the shape touches (anti-aliased edges included), so outside it is pure background.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an int >= 8 (pixels per side), got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    rng = np.random.default_rng(seed)
    images = torch.empty(n, 3, size, size)
    covers = torch.empty(n, 1, size, size)
    captions: list[str] = []
    color_idx = rng.integers(len(SHAPE_COLORS), size=n)
    kind_idx = rng.integers(len(SHAPE_KINDS), size=n)
    big = rng.random(n) < 0.5
    centers, radii = np.empty((n, 2)), np.empty(n)
    position_idx = np.empty(n, dtype=np.int64)
    for i in range(n):
        lo, hi = SHAPE_RADIUS["big" if big[i] else "small"]
        r = rng.uniform(lo, hi) * size
        margin = 1.2 * r + 1  # keep the whole shape inside the picture
        cx, cy = rng.uniform(margin, size - margin, size=2)
        centers[i], radii[i] = (cx, cy), r
        color, kind = SHAPE_COLORS[color_idx[i]], SHAPE_KINDS[kind_idx[i]]
        images[i], covers[i, 0] = render_shape(color, kind, cx, cy, r, size)
        position = position_phrase(cx, cy, size)
        position_idx[i] = SHAPE_POSITIONS.index(position)
        say_size, say_pos = rng.random(2) < 0.5
        captions.append(shape_caption(color, kind, SHAPE_SIZES[int(big[i])] if say_size else None,
                                      position if say_pos else None))
    if not return_labels:
        return images, captions
    mask = covers >= 0.5  # [N, 1, H, W]
    touched = covers[:, 0] > 0  # [N, H, W] every pixel the shape reaches, edges included
    rows, cols = touched.any(dim=2), touched.any(dim=1)  # [N, H], [N, W]
    ar = torch.arange(size)
    bbox = torch.stack([
        torch.where(cols, ar, size).min(1).values, torch.where(rows, ar, size).min(1).values,
        torch.where(cols, ar, -1).max(1).values + 1, torch.where(rows, ar, -1).max(1).values + 1,
    ], dim=1)  # [N, 4] (x0, y0, x1, y1)
    labels = {
        "color": torch.from_numpy(color_idx).long(),
        "kind": torch.from_numpy(kind_idx).long(),
        "big": torch.from_numpy(big),
        "position": torch.from_numpy(position_idx),
        "center": torch.from_numpy(centers).float(),
        "radius": torch.from_numpy(radii).float(),
        "mask": mask,
        "bbox": bbox,
    }
    return images, captions, labels
