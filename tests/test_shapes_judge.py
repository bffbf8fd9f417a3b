"""benchmarks/shapes_judge.py: real pictures pass, hand-made flawed ones are seen for what they are."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from course_lib.data.shapes import SHAPE_BACKGROUND, SHAPE_COLORS, SHAPE_KINDS, SHAPE_POSITIONS, SHAPE_RGB, make_shapes

_spec = importlib.util.spec_from_file_location(
    "shapes_judge", Path(__file__).resolve().parents[1] / "benchmarks" / "shapes_judge.py")
sj = sys.modules["shapes_judge"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sj)

SIZE = 32


@pytest.fixture(scope="module")
def judge():
    return sj.ShapesJudge.fitted(n=150)


def draw(inside, color="red", size=SIZE, ss=8):
    """A picture [3, size, size] in [-1, 1] of the region ``inside(x, y) -> bool`` (pixel units), anti-aliased."""
    c = (np.arange(size * ss) + 0.5) / ss
    y, x = np.meshgrid(c, c, indexing="ij")
    cover = inside(x, y).reshape(size, ss, size, ss).mean(axis=(1, 3))[None]  # [1, H, W]
    fg = np.asarray(SHAPE_RGB[color])[:, None, None]
    bg = np.asarray(SHAPE_BACKGROUND)[:, None, None]
    return torch.from_numpy((cover * fg + (1 - cover) * bg) * 2 - 1).float()


def disc(cx, cy, r):
    return lambda x, y: (x - cx) ** 2 + (y - cy) ** 2 <= r ** 2


def box(cx, cy, h):
    return lambda x, y: (abs(x - cx) <= h) & (abs(y - cy) <= h)


def test_real_pictures_are_read_right(judge):
    x, _, lab = make_shapes(120, seed=4242, return_labels=True)  # not the pictures the thresholds came from
    for sigma in (0.0, 0.6):
        readings = judge.read(sj.blur(x, sigma))
        s = sj.score(readings, colors=lab["color"], kinds=lab["kind"], positions=lab["position"],
                     sizes=lab["big"].long())
        assert s["both"] >= 0.99 and s["size"] >= 0.99 and s["clean"] >= 0.99
        assert s["position"] >= 0.97  # a centre right on a border between two phrases may go either way


def test_reads_position_and_size_by_the_caption_rules(judge):
    (left,) = judge.read(draw(disc(8, 16, 5.5), "green"))
    assert (left.color, left.kind, left.position, left.size) == ("green", "circle", "on the left", "small")
    (bottom,) = judge.read(draw(box(16, 24, 0.85 * 5.5), "blue"))
    assert (bottom.kind, bottom.position, bottom.size) == ("square", "at the bottom", "small")
    (big,) = judge.read(draw(disc(16, 16, 10), "yellow"))
    assert (big.kind, big.position, big.size) == ("circle", "in the middle", "big")
    (between,) = judge.read(draw(disc(16, 16, 0.245 * SIZE)))  # between the small and the big range
    assert between.ok and between.size is None


@pytest.mark.parametrize("half_side", [5.0, 8.0])
def test_concave_square_is_rejected(judge, half_side):
    square = box(16, 16, half_side)
    off = half_side + 3.5 - 1.0  # a disc of radius 3.5 bites 1 pixel deep into the middle of each side
    bites = [disc(16 + dx * off, 16 + dy * off, 3.5) for dx, dy in ((-1, 0), (1, 0), (0, -1), (0, 1))]
    pinched = lambda x, y: square(x, y) & ~np.logical_or.reduce([b(x, y) for b in bites])  # noqa: E731
    (ok,) = judge.read(draw(square))
    assert ok.ok and ok.kind == "square"
    (r,) = judge.read(draw(pinched))
    assert r.kind is None and "concave" in r.flaws and r.nearest_kind == "square"


def triangle(cx, cy, R):
    """Upright equilateral triangle with centroid (cx, cy) and circumradius R."""
    corners = [(cx, cy - R), (cx + R * np.sqrt(3) / 2, cy + R / 2), (cx - R * np.sqrt(3) / 2, cy + R / 2)]

    def inside(x, y):
        out = np.ones_like(x, dtype=bool)
        for (ax, ay), (bx, by) in zip(corners, corners[1:] + corners[:1]):
            out &= (bx - ax) * (y - ay) - (by - ay) * (x - ax) >= 0
        return out

    return inside


def test_concave_triangle_is_rejected(judge):
    R = 11.0
    tri = triangle(16, 16, R)
    # a disc bitten out of the middle of each side: the sides bend inwards
    mids = [(16, 16 + R / 2 + 2.5), (16 + R * np.sqrt(3) / 4 + 2.2, 16 - R / 4 - 1.2),
            (16 - R * np.sqrt(3) / 4 - 2.2, 16 - R / 4 - 1.2)]
    pinched = lambda x, y: tri(x, y) & ~np.logical_or.reduce([disc(mx, my, 3.5)(x, y) for mx, my in mids])  # noqa: E731
    (ok,) = judge.read(draw(tri))
    assert ok.ok and ok.kind == "triangle"
    (r,) = judge.read(draw(pinched))
    assert r.kind is None and {"concave", "misshapen"} & set(r.flaws)


def test_ring_is_rejected(judge):
    ring = lambda x, y: disc(16, 16, 9)(x, y) & ~disc(16, 16, 4.5)(x, y)  # noqa: E731
    (r,) = judge.read(draw(ring, "purple"))
    assert r.kind is None and "hole" in r.flaws
    faint = draw(disc(16, 16, 9), "purple")
    faint[:, 13:19, 13:19] = faint[:, 13:19, 13:19] * 0.55 + (torch.tensor(SHAPE_BACKGROUND) * 2 - 1)[:, None, None] * 0.45
    (r,) = judge.read(faint)
    assert r.kind is None and {"faint inside", "hole"} & set(r.flaws)


def test_two_blobs_are_rejected(judge):
    (r,) = judge.read(draw(lambda x, y: disc(10, 16, 5.5)(x, y) | disc(23, 16, 4)(x, y)))
    assert r.kind is None and "extra blob" in r.flaws
    other = draw(disc(10, 16, 5.5), "red")
    other[:, 14:18, 24:28] = (torch.tensor(SHAPE_RGB["blue"]) * 2 - 1)[:, None, None]  # a blue speck elsewhere
    (r,) = judge.read(other)
    assert r.kind is None and "extra blob" in r.flaws


def test_lump_is_rejected(judge):
    def lump(x, y):  # a circle with three bulges
        t = np.arctan2(y - 16, x - 16)
        return np.hypot(x - 16, y - 16) <= 8 * (1 + 0.18 * np.sin(3 * t))

    (r,) = judge.read(draw(lump, "yellow"))
    assert r.kind is None and {"misshapen", "concave"} & set(r.flaws)


def test_rounded_square_is_not_a_square(judge):
    def rounded(x, y, h=7.5, rc=5.0):  # corners rounded with radius 5 of a half-side 7.5: a "squircle"
        dx, dy = np.maximum(abs(x - 16) - (h - rc), 0), np.maximum(abs(y - 16) - (h - rc), 0)
        return np.hypot(dx, dy) <= rc

    (r,) = judge.read(draw(rounded))
    assert r.kind != "square"


def test_wrong_colour_and_mixed_colour(judge):
    (r,) = judge.read(draw(disc(16, 16, 7), "blue"))
    assert r.color == "blue"
    half = draw(disc(16, 16, 7), "red")
    half[:, :, 16:] = draw(disc(16, 16, 7), "yellow")[:, :, 16:]
    (r,) = judge.read(half)
    assert not r.ok  # a two-coloured shape is not "a red circle" nor "a yellow circle"


def test_empty_picture():
    (r,) = sj.ShapesJudge().read(draw(lambda x, y: np.zeros_like(x, dtype=bool)))
    assert r.kind is None and r.color is None and r.flaws == ("no shape",)


def test_score_and_errors(judge):
    readings = judge.read(torch.stack([draw(disc(8, 16, 5.5), "green"), draw(box(16, 16, 5), "red")]))
    s = sj.score(readings, colors=["green", "blue"], kinds=["circle", "square"],
                 positions=["on the left", "on the left"])
    assert s["colour"] == 0.5 and s["kind"] == 1.0 and s["both"] == 0.5 and s["position"] == 0.5
    assert set(s["mean_solidity"]) == {"circle", "square"}
    with pytest.raises(ValueError, match="unknown color 'pink'"):
        sj.score(readings, colors=["pink", "red"])
    with pytest.raises(ValueError, match="got 1 kinds for 2 readings"):
        sj.score(readings, kinds=["circle"])
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        judge.read(torch.zeros(2, 1, 32, 32))
    with pytest.raises(TypeError, match="tensor or array"):
        judge.read([1, 2])
    assert SHAPE_POSITIONS and SHAPE_COLORS and SHAPE_KINDS
