"""A strict judge of shapes pictures: the rules a careful person applies, no learning.

For a picture in ``make_shapes``'s format ([3, H, W] in [-1, 1], one shape on a dark
background) the judge says which colour, kind, position and size it shows, and
which flaws it sees. Steps (``ShapesJudge.read``):

1. **Segment.** Pixels farther than ``FOREGROUND`` from the background colour (RGB
   distance, colours in [0, 1]) are "paint"; their largest 8-connected region is the
   shape. Other paint regions are *extra blobs* (a flaw when they hold paint worth
   more than ``Thresholds.blob`` pixels).
2. **Colour.** The mean colour of the region's core (eroded by one pixel) is named by
   the nearest of ``SHAPE_RGB``; farther than ``Thresholds.colour`` from it is *off
   colour*.
3. **Coverage.** Each pixel's share of that colour, ``(x − bg)·(c − bg) / |c − bg|²``
   divided by the core's own value of it (a slightly dull or bright shape is still
   whole) and clipped to [0, 1]: the quantity ``make_shapes`` anti-aliases with, so
   soft edges count as partial pixels. Area = Σ coverage; the centroid is
   coverage-weighted.
4. **Kind, from geometry** of the coverage map's ½-contour (marching squares, sub-pixel):
   * the outline: for each kind, the ideal polygon of ``make_shapes``'s shape of that
     kind with the same centroid and area (``shape_outline``, ``shape_area``); the
     kind is the one whose outline the contour follows best (RMS distance in pixels,
     measured both ways) — a polygon fit with the very polygons the data is drawn with;
   * solidity: contour area / convex-hull area: 1 for every true kind, lower for
     pinched sides;
   * holes and fill: no unpainted pixel inside the outline, no faint inside.
   The kind is accepted only when the outline error, solidity and fill reach the
   thresholds of that kind and there is no hole or extra blob; otherwise ``kind`` is
   None and ``flaws`` says why ("misshapen", "concave", "hole", "faint inside",
   "extra blob").
5. **Position** from the centroid with ``make_shapes``'s caption rule
   (``position_phrase``); **size** from the radius that the area implies for the fitted
   kind: the word of the nearest ``SHAPE_RADIUS`` range, or None when the radius is
   farther than ``Thresholds.size_slack`` (a fraction of the side) from both.

The thresholds are not guessed: ``fit_thresholds`` measures real ``make_shapes``
images and slightly blurred copies of them (Gaussian σ up to ``BLUR_SIGMAS``, so a
decoder's soft edges are not punished) and puts each threshold just below the worst
real value (the ``quantile`` of its distribution, less a small ``margin``).

    judge = ShapesJudge.fitted()            # thresholds from real pictures (a few seconds)
    readings = judge.read(images)           # list[Reading]
    scores = score(readings, colors=[...], kinds=[...], positions=[...], sizes=[...])
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from scipy.spatial import ConvexHull
from skimage.measure import find_contours

from course_lib.data.shapes import (SHAPE_BACKGROUND, SHAPE_COLORS, SHAPE_KINDS, SHAPE_RADIUS, SHAPE_RGB,
                                    make_shapes, position_phrase, shape_area, shape_outline)

__all__ = ["ShapesJudge", "Reading", "Thresholds", "fit_thresholds", "features", "score", "blur",
           "FOREGROUND", "BLUR_SIGMAS"]

FOREGROUND = 0.2  # RGB distance from the background (colours in [0, 1]) that counts as paint
BLUR_SIGMAS = (0.0, 0.5, 0.75, 1.0)  # Gaussian blurs (pixels) of the real pictures the thresholds accept
NOISE = 0.02  # and pixel noise (standard deviation, colours in [0, 1]) added to them
SMOOTH = 0.5  # Gaussian smoothing (pixels) of the coverage before solidity: it keeps convex shapes convex
_BG = np.asarray(SHAPE_BACKGROUND, dtype=np.float64)  # [3]
_PALETTE = np.asarray([SHAPE_RGB[c] for c in SHAPE_COLORS], dtype=np.float64)  # [5, 3]
_EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity


@dataclass
class Thresholds:
    """What a well-formed shape must reach. Per-kind entries are keyed by kind name."""

    outline: dict = field(default_factory=lambda: {k: 0.3 for k in SHAPE_KINDS})  # most RMS stray, pixels
    solidity: dict = field(default_factory=lambda: {k: 0.95 for k in SHAPE_KINDS})
    fill: float = 0.8  # least coverage inside the outline (eroded by a pixel)
    colour: float = 0.15  # RGB distance of the core's mean from the named colour (a third of blue–purple)
    blob: float = 1.0  # paint outside the shape, in pixels
    size_slack: float = 0.02  # how far outside a SHAPE_RADIUS range a radius may be, fraction of the side


@dataclass
class Reading:
    """What the judge sees in one picture."""

    color: str | None  # nearest palette colour (None: no shape, or off colour)
    kind: str | None  # None: no shape or a malformed one (see flaws)
    nearest_kind: str | None  # the best-fitting outline even when the shape is malformed
    position: str | None  # one of SHAPE_POSITIONS (None: no shape)
    size: str | None  # one of SHAPE_SIZES (None: no shape, or between/outside the sizes)
    centroid: tuple = (float("nan"), float("nan"))  # (x, y) in pixels
    radius: float = float("nan")  # pixels, from the area and the nearest kind
    area: float = 0.0  # pixels (coverage-weighted)
    outline_error: float = float("inf")  # RMS distance (pixels) of the outline from the nearest kind's
    solidity: float = 0.0
    fill: float = 0.0
    colour_error: float = float("inf")
    blob: float = 0.0
    holes: int = 0
    flaws: tuple = ()

    @property
    def ok(self) -> bool:
        """A clean picture of one well-formed shape of one colour."""
        return not self.flaws


# ---------------------------------------------------------------------------------- measuring

def _to_numpy(images) -> np.ndarray:
    """[N, 3, H, W] (or [3, H, W]) in [-1, 1] -> float64 numpy [N, 3, H, W] in [0, 1]."""
    if not isinstance(images, (torch.Tensor, np.ndarray)):
        raise TypeError(f"images must be a tensor or array [N, 3, H, W] in [-1, 1], got {type(images).__name__}")
    x = images.detach().float().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images, float)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"images must be [N, 3, H, W] or [3, H, W], got {tuple(x.shape)}")
    return (x.astype(np.float64) + 1) / 2


def _contour(cover: np.ndarray) -> np.ndarray | None:
    """The ½-contour of a coverage map [H, W] (marching squares, sub-pixel): [P, 2] (x, y) in pixels."""
    contours = find_contours(np.pad(cover, 1), 0.5)  # (row, col) in the padded array
    if not contours:
        return None
    rc = max(contours, key=len)  # the outer outline
    return rc[:, ::-1] - 0.5  # (x, y); padded index j is the pixel whose centre is at j - 1 + 0.5


def _resample(polygon: np.ndarray, step: float = 0.5) -> np.ndarray:
    """Points every ``step`` pixels (or a little less) along a closed polygon [K, 2]: [P, 2]."""
    a, ab = polygon, np.roll(polygon, -1, axis=0) - polygon  # [K, 2] edge starts and vectors
    n = np.maximum(np.ceil(np.linalg.norm(ab, axis=1) / step).astype(int), 1)  # points per edge [K]
    edge = np.repeat(np.arange(len(a)), n)  # [P] which edge each point is on
    frac = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)  # [P] 0 … n - 1 along its edge
    return a[edge] + ab[edge] * (frac / n[edge])[:, None]


def _distance(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Distance of each point [P, 2] to the edges of a closed polygon [K, 2]: [P]."""
    a, b = polygon, np.roll(polygon, -1, axis=0)  # [K, 2] edge ends
    ab = b - a
    t = ((points[:, None] - a[None]) * ab[None]).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12)  # [P, K]
    nearest = a[None] + np.clip(t, 0.0, 1.0)[..., None] * ab[None]  # [P, K, 2]
    return np.linalg.norm(points[:, None] - nearest, axis=-1).min(axis=1)


def _outline_error(contour: np.ndarray, kind: str, cx: float, cy: float, area: float) -> float:
    """How far (pixels, RMS) an outline strays from ``make_shapes``'s ``kind`` of the same centroid and area.

    Symmetric: the outline's points measured to the ideal polygon's edges and the
    ideal polygon's points to the outline's edges; the worse of the two RMS distances.
    """
    ideal = shape_outline(kind, cx, cy, _radius(kind, area), circle_points=48)
    there = np.sqrt(np.mean(_distance(_resample(contour), ideal) ** 2))
    back = np.sqrt(np.mean(_distance(_resample(ideal), contour) ** 2))
    return float(max(there, back))


def _solidity(contour: np.ndarray) -> float:
    """Area / convex-hull area of a closed outline [P, 2] (1 for a convex shape)."""
    x, y = contour[:, 0], contour[:, 1]
    area = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))  # shoelace
    if len(contour) < 3 or area == 0:
        return 0.0
    return float(area / ConvexHull(contour).volume)  # a 2-D hull's "volume" is its area


def _radius(kind: str, area: float) -> float:
    """The radius whose ``kind`` shape has this area (``shape_area`` is r² times a constant)."""
    return float(np.sqrt(area / shape_area(kind, 1.0)))


def features(image: np.ndarray) -> Reading:
    """Measure one picture [3, H, W] in [0, 1]; flaws and kind are left for the thresholds."""
    size = image.shape[-1]
    dist = np.linalg.norm(image - _BG[:, None, None], axis=0)  # [H, W]
    labels, n = ndimage.label(dist > FOREGROUND, structure=_EIGHT)
    if n == 0:
        return Reading(None, None, None, None, None, flaws=("no shape",))
    counts = np.bincount(labels.ravel())[1:]  # pixels per region
    region = labels == 1 + int(np.argmax(counts))  # [H, W] the shape

    core = ndimage.binary_erosion(region, _EIGHT)
    solid = core.sum() >= 4
    if not solid:  # a thin or tiny shape: its most strongly painted half
        core = region & (dist >= np.median(dist[region]))
    mean = image[:, core].mean(axis=1)  # [3]
    errors = np.linalg.norm(_PALETTE - mean, axis=1)  # [5]
    c = int(np.argmin(errors))

    direction = _PALETTE[c] - _BG  # [3]
    paint = np.einsum("chw,c->hw", image - _BG[:, None, None], direction) / (direction @ direction)  # [H, W]
    full = max(float(np.median(paint[core])), 0.5) if solid else 1.0  # the shape's own strength of colour
    near = ndimage.binary_dilation(region, _EIGHT)  # the shape and its faint anti-aliased rim
    shape = np.clip(paint / full, 0.0, 1.0) * near  # [H, W] coverage: the share of the shape in each pixel
    # paint elsewhere: other regions, in pixels of full paint (by distance from the background)
    blob = float(np.clip(dist / np.linalg.norm(direction), 0.0, 1.0)[(labels > 0) & ~near].sum())

    area = float(shape.sum())
    ys, xs = np.mgrid[0:size, 0:size] + 0.5  # pixel centres
    cx, cy = float((shape * xs).sum() / area), float((shape * ys).sum() / area)

    mask = shape >= 0.5
    filled = ndimage.binary_fill_holes(mask)
    holes = int((filled & ~mask).sum())
    inside = ndimage.binary_erosion(filled, _EIGHT)
    fill = float(shape[inside].min()) if inside.any() else 1.0

    contour = _contour(shape)
    if contour is None or len(contour) < 3:
        return Reading(SHAPE_COLORS[c], None, None, position_phrase(cx, cy, size), None, (cx, cy), area=area,
                       colour_error=float(errors[c]), blob=blob, flaws=("no shape",))
    smooth = _contour(_gaussian(shape, SMOOTH))  # pixel noise must not read as a dent
    solidity = _solidity(smooth) if smooth is not None and len(smooth) >= 3 else 0.0
    fits = {kind: _outline_error(contour, kind, cx, cy, area) for kind in SHAPE_KINDS}
    nearest = min(fits, key=fits.get)
    radius = _radius(nearest, area)
    return Reading(SHAPE_COLORS[c], nearest, nearest, position_phrase(cx, cy, size), _size_word(radius / size),
                   (cx, cy), radius, area, fits[nearest], solidity, fill, float(errors[c]), blob, holes)


def _size_word(fraction: float, slack: float = float("inf")) -> str | None:
    """The SHAPE_RADIUS range nearest to ``fraction`` (radius / side); None if farther than ``slack``."""
    gaps = {w: max(lo - fraction, 0.0, fraction - hi) for w, (lo, hi) in SHAPE_RADIUS.items()}
    word = min(gaps, key=gaps.get)
    return word if gaps[word] <= slack else None


def _judge(reading: Reading, th: Thresholds, size: int) -> Reading:
    """Apply the thresholds: name the flaws, withhold kind/colour/size where they fail."""
    if reading.nearest_kind is None:
        return reading
    k = reading.nearest_kind
    checks = [("misshapen", reading.outline_error > th.outline[k]), ("concave", reading.solidity < th.solidity[k]),
              ("hole", reading.holes > 0), ("faint inside", reading.fill < th.fill),
              ("extra blob", reading.blob > th.blob), ("off colour", reading.colour_error > th.colour)]
    flaws = tuple(name for name, failed in checks if failed)
    shape_flaws = set(flaws) - {"off colour"}
    return dataclasses.replace(
        reading, flaws=flaws,
        kind=None if shape_flaws else k,
        color=None if "off colour" in flaws else reading.color,
        size=_size_word(reading.radius / size, th.size_slack))


# ---------------------------------------------------------------------------------- thresholds

def _gaussian(cover: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur (σ in pixels) of maps [..., H, W] that are 0 outside the picture."""
    if sigma <= 0:
        return cover
    return ndimage.gaussian_filter(cover, sigma, mode="constant", truncate=3.0, axes=(-2, -1))


def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of images [N, 3, H, W] in [-1, 1] (σ in pixels; background colour beyond the edges)."""
    bg = torch.tensor(SHAPE_BACKGROUND, dtype=torch.float64)[None, :, None, None] * 2 - 1
    soft = _gaussian((images.double() - bg).numpy(), sigma)
    return (torch.from_numpy(soft) + bg).to(images.dtype)


def fit_thresholds(n: int = 300, seed: int = 12345, sigmas=BLUR_SIGMAS, noise: float = NOISE,
                   quantile: float = 0.002, margin: float = 0.01) -> Thresholds:
    """Thresholds that accept real ``make_shapes`` pictures blurred by ``sigmas``, with pixel ``noise``.

    Per kind, the outline threshold is the ``1 − quantile`` quantile of the outline
    errors on those pictures plus ``margin`` (pixels), the solidity threshold the
    ``quantile`` less ``margin``; the fill threshold likewise over all kinds. Colour,
    blob and size-slack tolerances stay the rules of ``Thresholds``.
    """
    images, _, labels = make_shapes(n, seed=seed, return_labels=True)
    g = torch.Generator().manual_seed(seed)
    values = {k: {"outline": [], "solidity": []} for k in SHAPE_KINDS}
    fills = []
    for sigma in sigmas:
        pictures = blur(images, sigma) + 2 * noise * torch.randn(images.shape, generator=g)  # [-1, 1] units
        for i, x in enumerate(_to_numpy(pictures)):
            r = features(x)
            kind = SHAPE_KINDS[int(labels["kind"][i])]
            values[kind]["outline"].append(r.outline_error if r.nearest_kind == kind else np.inf)
            values[kind]["solidity"].append(r.solidity)
            fills.append(r.fill)
    return Thresholds(
        outline={k: float(np.quantile(v["outline"], 1 - quantile)) + margin for k, v in values.items()},
        solidity={k: float(np.quantile(v["solidity"], quantile)) - margin for k, v in values.items()},
        fill=float(np.quantile(fills, quantile)) - margin)


class ShapesJudge:
    """``judge.read(images) -> list[Reading]`` with the given (or fitted) thresholds."""

    def __init__(self, thresholds: Thresholds | None = None):
        self.thresholds = thresholds if thresholds is not None else Thresholds()

    @classmethod
    def fitted(cls, **kwargs) -> "ShapesJudge":
        """A judge with ``fit_thresholds(**kwargs)``."""
        return cls(fit_thresholds(**kwargs))

    def read(self, images) -> list[Reading]:
        """Readings for images [N, 3, H, W] (or one [3, H, W]) in [-1, 1]."""
        x = _to_numpy(images)
        return [_judge(features(img), self.thresholds, x.shape[-1]) for img in x]


# ---------------------------------------------------------------------------------- scoring

def _names(values, allowed, what):
    """Indices or names -> names (checked)."""
    out = []
    for v in values:
        v = allowed[int(v)] if not isinstance(v, str) else v
        if v not in allowed:
            raise ValueError(f"unknown {what} {v!r}; allowed: {', '.join(allowed)}")
        out.append(v)
    return out


def score(readings: list[Reading], colors=None, kinds=None, positions=None, sizes=None) -> dict:
    """Fractions of readings that match what was asked (names or indices; None = not asked).

    ``colour``, ``kind``, ``both`` (colour and kind), ``position``, ``size``, ``all`` (every
    attribute asked), ``clean`` (no flaw at all), and the mean solidity per asked kind.
    """
    from course_lib.data.shapes import SHAPE_POSITIONS, SHAPE_SIZES

    n = len(readings)
    asked = {}
    for key, values, allowed in (("color", colors, SHAPE_COLORS), ("kind", kinds, SHAPE_KINDS),
                                 ("position", positions, SHAPE_POSITIONS), ("size", sizes, SHAPE_SIZES)):
        if values is None:
            continue
        values = list(values)
        if len(values) != n:
            raise ValueError(f"got {len(values)} {key}s for {n} readings")
        asked[key] = _names(values, allowed, key)
    right = {key: np.array([getattr(r, key) == v for r, v in zip(readings, want)]) for key, want in asked.items()}
    out = {f"{'colour' if k == 'color' else k}": round(float(v.mean()), 4) for k, v in right.items()}
    if "color" in right and "kind" in right:
        out["both"] = round(float((right["color"] & right["kind"]).mean()), 4)
    if right:
        out["all"] = round(float(np.logical_and.reduce(list(right.values())).mean()), 4)
    out["clean"] = round(float(np.mean([r.ok for r in readings])), 4)
    if "kind" in asked:
        out["mean_solidity"] = {k: round(float(np.mean([r.solidity for r, w in zip(readings, asked["kind"])
                                                        if w == k])), 4)
                                for k in SHAPE_KINDS if k in asked["kind"]}
    flaws = {}
    for r in readings:
        for f in r.flaws:
            flaws[f] = flaws.get(f, 0) + 1
    out["flaws"] = dict(sorted(flaws.items()))
    return out
