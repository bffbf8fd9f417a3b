"""course_lib.viz smoke tests: every figure builds headless (Agg) and bad input is refused."""

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


def test_attention_heatmap():
    w = torch.softmax(torch.randn(4, 5), -1)
    ax = viz.attention_heatmap(w, list("abcd"), ["the", "cat", "sat", "on", "mat"], title="t", annotate=True)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["the", "cat", "sat", "on", "mat"]
    with pytest.raises(ValueError, match=r"expects weights \[T_q, T_k\]"):
        viz.attention_heatmap(torch.rand(2, 4, 5))
    with pytest.raises(ValueError, match="q_labels has 3 entries"):
        viz.attention_heatmap(w, list("abc"))


def test_attention_grid_from_list_and_tensor():
    maps = [torch.softmax(torch.randn(2, 3, 6, 6), -1) for _ in range(2)]  # [B, H, T, T] per layer
    fig = viz.attention_grid(maps, labels=list("abcdef"), title="grid")
    assert len(fig.axes) == 2 * 3
    fig = viz.attention_grid(torch.rand(3, 2, 4, 4))
    assert len(fig.axes) == 3 * 2
    with pytest.raises(ValueError, match="layer 0"):
        viz.attention_grid([torch.rand(4, 4)])


@pytest.mark.parametrize("shape,lo", [((5, 1, 8, 8), 0.0), ((3, 3, 8, 8), -1.0)])
def test_image_grid(shape, lo):
    images = torch.rand(*shape) * (1 - lo) + lo
    fig = viz.image_grid(images, nrow=2, titles=[str(i) for i in range(shape[0])])
    assert len(fig.axes) == 2 * ((shape[0] + 1) // 2)


def test_image_grid_errors():
    with pytest.raises(ValueError, match="C = 1 or 3"):
        viz.image_grid(torch.rand(2, 2, 8, 8))
    with pytest.raises(ValueError, match=r"must lie in \[-1, 1\] or \[0, 1\]"):
        viz.image_grid(torch.rand(2, 3, 8, 8) * 255)
    with pytest.raises(ValueError, match="got 1 titles for 2 images"):
        viz.image_grid(torch.rand(2, 3, 8, 8), titles=["a"])


def test_loss_curve():
    history = {"train_loss": [3.0 / (i + 1) for i in range(50)], "lr": [1e-3] * 50,
               "val_loss": [(10, 0.5), (50, 0.2)]}
    ax = viz.loss_curve(history, log=True, smooth=5)
    assert ax.get_yscale() == "log"
    assert len(ax.get_lines()) == 3  # raw + smoothed train, val
    viz.loss_curve([1.0, 0.5, 0.25])
    with pytest.raises(ValueError, match="not in history"):
        viz.loss_curve(history, keys=["test_loss"])
