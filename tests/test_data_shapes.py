"""course_lib.data.shapes: captioned shapes, deterministic, with labels that agree with the pixels."""

import pytest
import torch

from course_lib.data import SHAPE_COLORS, SHAPE_KINDS, SHAPE_RGB, make_shapes, render_shape


def test_shapes_and_range():
    x, caps = make_shapes(20, seed=3)
    assert x.shape == (20, 3, 32, 32) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert len(caps) == 20 and all(isinstance(c, str) for c in caps)
    assert make_shapes(4, seed=0, size=16)[0].shape == (4, 3, 16, 16)


def test_deterministic_given_seed():
    a, ca = make_shapes(10, seed=5)
    b, cb = make_shapes(10, seed=5)
    c, cc = make_shapes(10, seed=6)
    assert torch.equal(a, b) and ca == cb
    assert not torch.equal(a, c)


def test_every_caption_names_exactly_one_colour_and_kind_matching_labels():
    _, caps, lab = make_shapes(200, seed=1, return_labels=True)
    for cap, ci, ki in zip(caps, lab["color"], lab["kind"]):
        words = cap.split()
        assert [w for w in words if w in SHAPE_COLORS] == [SHAPE_COLORS[ci]]
        assert [w for w in words if w in SHAPE_KINDS] == [SHAPE_KINDS[ki]]
        if "small" in words or "big" in words:
            assert ("big" in words) == bool(lab["big"][caps.index(cap)])
    # all colours and kinds occur
    assert set(lab["color"].tolist()) == set(range(len(SHAPE_COLORS)))
    assert set(lab["kind"].tolist()) == set(range(len(SHAPE_KINDS)))


def test_labels_agree_with_pixels():
    x, _, lab = make_shapes(50, seed=2, return_labels=True)
    m = lab["mask"]
    assert m.shape == (50, 1, 32, 32) and m.dtype == torch.bool
    for i in range(50):
        rgb = torch.tensor(SHAPE_RGB[SHAPE_COLORS[lab["color"][i]]]) * 2 - 1
        inside = x[i][:, m[i, 0]]  # [3, n] pixels of the shape
        assert inside.shape[1] > 10
        # pixels fully inside the shape have exactly the shape's colour
        assert (inside - rgb[:, None]).abs().min(dim=1).values.max() < 1e-5
        x0, y0, x1, y1 = lab["bbox"][i].tolist()
        assert m[i, 0, y0:y1, x0:x1].sum() == m[i].sum()  # the box holds the whole mask
        assert 0 <= x0 < x1 <= 32 and 0 <= y0 < y1 <= 32
        # outside the box is the plain background
        outside = x[i].clone()
        outside[:, y0:y1, x0:x1] = x[i, :, 0:1, 0:1]
        assert outside.std(dim=(1, 2)).max() < 1e-6


def test_kinds_differ_in_shape():
    _, circle = render_shape("red", "circle", 16, 16, 8)
    _, square = render_shape("red", "square", 16, 16, 8)
    _, tri = render_shape("red", "triangle", 16, 16, 8)
    assert circle.sum() > square.sum() > tri.sum() > 0
    assert square[9, 9] > 0.5 and circle[9, 9] == 0  # a square fills its corners, a circle doesn't
    assert tri[19, 10] > 0.5 and tri[10, 10] == 0  # a triangle is wide at the bottom, narrow at the top


def test_bad_arguments():
    with pytest.raises(ValueError, match="positive int"):
        make_shapes(0)
    with pytest.raises(ValueError, match="size"):
        make_shapes(2, size=4)
    with pytest.raises(ValueError, match="unknown colour"):
        render_shape("pink", "circle", 8, 8, 4)
    with pytest.raises(ValueError, match="unknown shape kind"):
        render_shape("red", "star", 8, 8, 4)


def test_position_labels_follow_the_caption_rule():
    from course_lib.data import SHAPE_POSITIONS, position_phrase

    _, caps, lab = make_shapes(300, seed=8, return_labels=True)
    said = 0
    for cap, p, (cx, cy) in zip(caps, lab["position"], lab["center"].tolist()):
        assert SHAPE_POSITIONS[p] == position_phrase(cx, cy, 32)
        if any(phrase in cap for phrase in SHAPE_POSITIONS):
            said += 1
            assert cap.endswith(SHAPE_POSITIONS[p])
    assert 0 < said < 300 and set(lab["position"].tolist()) == set(range(len(SHAPE_POSITIONS)))
    assert position_phrase(16, 16, 32) == "in the middle" and position_phrase(4, 18, 32) == "on the left"
    assert position_phrase(20, 28, 32) == "at the bottom" and position_phrase(16, 5, 32) == "at the top"


def test_area_and_outline_describe_what_is_drawn():
    from course_lib.data import shape_area, shape_outline

    for kind, corners in (("circle", 96), ("square", 4), ("triangle", 3)):
        _, cover = render_shape("green", kind, 15.3, 16.7, 7.0)
        assert abs(cover.sum().item() - shape_area(kind, 7.0)) < 0.03 * shape_area(kind, 7.0)  # 4×4 sub-pixels
        outline = shape_outline(kind, 15.3, 16.7, 7.0)
        assert outline.shape == (corners, 2)
        x, y = outline[:, 0], outline[:, 1]
        polygon_area = 0.5 * abs((x * (torch.roll(torch.tensor(y), 1).numpy())).sum()
                                 - (y * (torch.roll(torch.tensor(x), 1).numpy())).sum())
        assert abs(polygon_area - shape_area(kind, 7.0)) < 0.01 * shape_area(kind, 7.0)
        assert abs(x.mean() - 15.3) < 1e-9 and abs(y.mean() - 16.7) < 1e-9  # centred on the centroid
    with pytest.raises(ValueError, match="unknown shape kind"):
        shape_area("star", 3.0)
