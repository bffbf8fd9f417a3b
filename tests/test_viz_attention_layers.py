"""viz.attention_patterns / attention_by_layer / head_table (notebooks 03 and 04)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from course_lib import viz  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def causal_uniform(t):
    return torch.ones(t, t).tril() / torch.arange(1, t + 1)[:, None]  # row i: 1/(i+1) on keys 0..i


def test_attention_patterns_finds_previous_token_and_first_token_heads():
    t = 7
    prev = torch.zeros(t, t)
    prev[0, 0] = 1
    prev[torch.arange(1, t), torch.arange(t - 1)] = 1  # every query on the token before it
    first = torch.zeros(t, t)
    first[:, 0] = 1  # every query on the first token
    maps = torch.stack([torch.stack([prev, first]), torch.stack([causal_uniform(t), causal_uniform(t)])])  # [2, 2, T, T]
    p = viz.attention_patterns(maps)
    assert p["previous_token"].shape == p["first_token"].shape == (2, 2)
    assert p["previous_token"][0, 0] == 1 and p["first_token"][0, 0] == 0
    assert p["first_token"][0, 1] == 1 and p["previous_token"][0, 1] == 0
    expected_uniform = sum(1 / (i + 1) for i in range(2, t)) / (t - 2)
    assert p["uniform"] == pytest.approx(expected_uniform)
    assert torch.allclose(p["previous_token"][1], torch.full((2,), expected_uniform))
    assert torch.allclose(p["first_token"][1], torch.full((2,), expected_uniform))


def test_attention_patterns_refuses_bad_shapes():
    with pytest.raises(ValueError, match=r"\[L, H, T, T\]"):
        viz.attention_patterns(torch.rand(2, 5, 5))
    with pytest.raises(ValueError, match="at least 3 positions"):
        viz.attention_patterns(torch.rand(1, 1, 2, 2))


def test_attention_by_layer_one_panel_per_layer_one_colour_bar():
    maps = torch.stack([causal_uniform(5)] * 6)  # [6, T, T]
    fig = viz.attention_by_layer(maps, labels=["a", "␣b", "c", "d", "e"], ncols=4, title="t")
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 6  # one per layer; the two empty cells of the 2 × 4 grid are blank
    assert len({(im.norm.vmin, im.norm.vmax) for ax in panels for im in ax.images}) == 1
    assert [ax.get_ylabel() for ax in fig.axes].count("attention weight") == 1  # one colour bar
    titled = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titled == [f"layer {i}" for i in range(6)]
    labelled = [ax for ax in fig.axes if [t.get_text() for t in ax.get_xticklabels()] == ["a", "␣b", "c", "d", "e"]]
    assert len(labelled) == 4  # the lowest panel of each column
    assert all(t.get_fontsize() >= 8 for ax in labelled for t in ax.get_xticklabels())
    with pytest.raises(ValueError, match="average the heads first"):
        viz.attention_by_layer(torch.rand(2, 3, 5, 5))
    with pytest.raises(ValueError, match="labels has 2 entries"):
        viz.attention_by_layer(maps, labels=["a", "b"])
    with pytest.raises(ValueError, match="ncols"):
        viz.attention_by_layer(maps, ncols=0)


def test_head_table_writes_values_and_has_a_colour_bar():
    values = torch.tensor([[0.1, 0.95], [0.5, 1.0]])
    ax = viz.head_table(values, title="first token", label="mean weight")
    assert sorted(t.get_text() for t in ax.texts) == [".10", ".50", ".95", "1.0"]
    assert len(ax.figure.axes) == 2 and ax.figure.axes[1].get_ylabel() == "mean weight"
    with pytest.raises(ValueError, match=r"\[layers, heads\]"):
        viz.head_table(torch.rand(3))
