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
    assert len(fig.axes) == 2 * 3 + 1  # the panels and the colour bar
    fig = viz.attention_grid(torch.rand(3, 2, 4, 4))
    assert len(fig.axes) == 3 * 2 + 1
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


# ----------------------------------------------------------------------------- figures every viewer shows


def _gif_frames(bundle):
    import base64
    import io

    from PIL import Image

    im = Image.open(io.BytesIO(base64.b64decode(bundle["image/gif"])))
    frames = []
    for i in range(im.n_frames):
        im.seek(i)
        frames.append(im.convert("L").tobytes())
    return im.format, frames, im.info.get("duration")


def test_figure_png_renders_and_closes():
    fig, ax = plt.subplots(figsize=(2, 1), dpi=50)
    ax.plot([0, 1], [1, 0])
    png = viz.figure_png(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 500
    assert not plt.fignum_exists(fig.number)  # closed: the inline backend will not show it a second time


def test_trajectory_animation_is_a_gif_without_javascript():
    from types import SimpleNamespace

    steps = torch.linspace(-1, 1, 30)[:, None, None, None, None].expand(30, 3, 1, 4, 4)  # [30, B, 1, H, W]
    traj = SimpleNamespace(x_t=steps, x0_pred=-steps, timesteps=list(range(29, -1, -1)))
    out = viz.trajectory_animation(traj, n_samples=2, max_frames=10, interval=100)
    bundle = out._repr_mimebundle_()
    assert set(bundle) == {"image/gif", "text/plain"}  # no text/html: nothing to run, nothing from a CDN
    fmt, frames, duration = _gif_frames(bundle)
    assert fmt == "GIF" and len(frames) == 10 and duration == 100
    assert len(set(frames)) == 10  # every frame shows another step
    with pytest.raises(ValueError, match="greyscale"):
        viz.trajectory_animation(SimpleNamespace(x_t=torch.zeros(3, 1, 3, 4, 4), x0_pred=torch.zeros(3, 1, 3, 4, 4),
                                                 timesteps=[2, 1, 0]))


def test_animation_player_keeps_the_gif_beside_the_widget():
    fig, ax = plt.subplots(figsize=(1, 1), dpi=20)
    im = ax.imshow(torch.zeros(4, 4), vmin=0, vmax=3)
    out = viz.show_animation(fig, lambda i: im.set_data(torch.full((4, 4), float(i))), 4, interval=50, player=True)
    bundle = out._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle and "image/gif" in bundle
    image = out.widget.children[1]
    first = image.value
    out.widget.children[0].children[1].value = 3  # the frame slider
    assert image.value != first
    with pytest.raises(ValueError, match="n_frames must be a positive int"):
        viz.animation_gif(plt.figure(), lambda i: None, 0)


def test_interactive_figure_stores_the_first_state_and_redraws():
    import base64

    import ipywidgets as widgets

    calls = []

    def draw(scale, shift):
        calls.append((scale, shift))
        fig, ax = plt.subplots(figsize=(2, 1), dpi=40)
        ax.plot([0, 1], [shift, shift + scale])
        print(f"scale={scale}")
        return fig

    controls = {"scale": widgets.FloatSlider(value=1.0, min=0.5, max=2.0, description="temperature"),
                "shift": widgets.IntSlider(value=0, min=0, max=3, description="shift")}
    out = viz.interactive_figure(draw, controls)
    bundle = out._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert base64.b64decode(bundle["image/png"])[:4] == b"\x89PNG"
    assert bundle["text/plain"] == "<interactive figure: scale=1.0, shift=0>"
    assert calls == [(1.0, 0)]
    assert controls["scale"].style.description_width == "initial"  # the whole label is shown
    controls["scale"].value = 2.0
    assert calls == [(1.0, 0), (2.0, 0)]
    assert not plt.get_fignums()  # every figure rendered to PNG and closed


def test_interactive_figure_refuses_bad_input():
    import ipywidgets as widgets

    with pytest.raises(ValueError, match="non-empty dict"):
        viz.interactive_figure(lambda: None, {})
    with pytest.raises(TypeError, match=r"controls \['a'\] are not ipywidgets"):
        viz.interactive_figure(lambda a: None, {"a": 3})
    with pytest.raises(TypeError, match="draw must return a matplotlib Figure"):
        viz.interactive_figure(lambda a: None, {"a": widgets.IntSlider()})


def test_visible_token_marks_whitespace():
    from course_lib.viz import visible_token

    assert visible_token(" the\n\tx") == "␣the⏎⇥x"
    import pytest

    with pytest.raises(TypeError):
        visible_token(3)


def test_attention_grid_has_one_shared_colour_bar():
    import matplotlib.pyplot as plt
    import torch

    from course_lib.viz import attention_grid

    w = torch.softmax(torch.randn(2, 3, 5, 5), -1)
    fig = attention_grid(w, vmax=None)
    images = [im for ax in fig.axes for im in ax.images]
    assert len({(im.norm.vmin, im.norm.vmax) for im in images}) == 1  # one scale for every panel
    assert abs(images[0].norm.vmax - float(w.max())) < 1e-6
    assert len(fig.axes) == 2 * 3 + 1  # the panels and one colour bar
    plt.close(fig)


def test_token_distribution_shows_whitespace_tokens_visibly():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    labels = ["\n", " the", "\x07", "a"]
    filtered = torch.tensor([0.625, 0.375, 0.0, 0.0])
    ax = viz.token_distribution(probs, labels, filtered=filtered, top=4)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["⏎", "␣the", "\\x07", "a"]
    assert min(t.get_fontsize() for t in ax.get_xticklabels()) >= 8
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="filtered has 3 entries"):
        viz.token_distribution(probs, labels, filtered=filtered[:3])
