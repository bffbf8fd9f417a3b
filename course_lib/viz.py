"""Plots used across the course: attention maps, image grids, loss curves.

Every function takes tensors or NumPy arrays, draws with matplotlib and returns
the matplotlib object it drew on (an ``Axes`` or a ``Figure``), so a notebook
can add to it. Nothing here calls ``plt.show()``; Jupyter shows figures itself.

Other modules' authors: append your plotting functions at the end of this file.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch


def to_numpy(x) -> np.ndarray:
    """A tensor (any device, with or without grad) or array-like -> float NumPy array."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float32).numpy()
    return np.asarray(x, dtype=np.float32)


WHITESPACE_MARKS = {" ": "␣", "\n": "⏎", "\t": "⇥"}


def visible_token(text: str) -> str:
    """A token as a reader can see it: spaces as ␣, newlines as ⏎, tabs as ⇥ (``" the"`` → ``"␣the"``)."""
    if not isinstance(text, str):
        raise TypeError(f"visible_token expects a str, got {type(text).__name__}")
    return "".join(WHITESPACE_MARKS.get(ch, ch) for ch in text)


def _labels(labels, n: int, what: str):
    if labels is None:
        return [str(i) for i in range(n)]
    labels = [str(s) for s in labels]
    if len(labels) != n:
        raise ValueError(f"{what} has {len(labels)} entries but the weights have {n} {what.split('_')[0]}s")
    return labels


# ----------------------------------------------------------------------------- attention


def attention_heatmap(weights, q_labels=None, k_labels=None, ax=None, title=None,
                      cmap: str = "viridis", vmax: float | None = 1.0, colorbar: bool = True,
                      annotate: bool = False):
    """One attention map: rows are queries, columns are keys.

    weights: [T_q, T_k] (rows of softmax weights, each summing to 1).
    q_labels / k_labels: the tokens of the queries / keys (default: positions).
    vmax: top of the colour scale (1.0 by default so maps are comparable;
    ``None`` scales to the largest weight). ``annotate`` writes each weight in its cell.
    Returns the ``Axes``.
    """
    w = to_numpy(weights)
    if w.ndim != 2:
        raise ValueError(f"attention_heatmap expects weights [T_q, T_k], got shape {w.shape}; "
                         f"select one batch element and head first, e.g. weights[0, h]")
    t_q, t_k = w.shape
    q_labels = _labels(q_labels, t_q, "q_labels")
    k_labels = _labels(k_labels, t_k, "k_labels")
    if ax is None:
        size = min(8.0, 1.0 + 0.35 * max(t_q, t_k))
        _, ax = plt.subplots(figsize=(size + (1.0 if colorbar else 0.0), size), dpi=80)
    im = ax.imshow(w, cmap=cmap, vmin=0.0, vmax=vmax, aspect="auto")
    ax.set_xticks(range(t_k), k_labels, rotation=90 if max(map(len, k_labels)) > 2 else 0, fontsize=9)
    ax.set_yticks(range(t_q), q_labels, fontsize=9)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    if annotate:
        top = w.max() if vmax is None else vmax
        for i in range(t_q):
            for j in range(t_k):
                ax.text(j, i, f"{w[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="black" if w[i, j] > 0.6 * top else "white")
    if title:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return ax


def attention_grid(weights_per_layer, labels=None, k_labels=None, title=None,
                   cell_size: float = 2.2, vmax: float | None = 1.0, cmap: str = "viridis",
                   batch_index: int = 0):
    """A layers × heads grid of attention maps.

    weights_per_layer: a list (one entry per layer) of [H, T_q, T_k] or
    [B, H, T_q, T_k] tensors (``batch_index`` picks the sequence), or one
    tensor [L, H, T_q, T_k]. labels: the query tokens (also used for the keys
    unless ``k_labels`` is given). Tick labels are drawn on the outer edge only.
    Every panel shares one colour scale (0 … ``vmax``; ``None``: the largest weight
    in the grid), shown by one colour bar. Returns the ``Figure``.
    """
    if isinstance(weights_per_layer, (torch.Tensor, np.ndarray)):
        if weights_per_layer.ndim != 4:
            raise ValueError(f"a single tensor must be [L, H, T_q, T_k], got shape {tuple(weights_per_layer.shape)}")
        weights_per_layer = list(weights_per_layer)
    layers = []
    for i, w in enumerate(weights_per_layer):
        w = to_numpy(w)
        if w.ndim == 4:
            w = w[batch_index]
        if w.ndim != 3:
            raise ValueError(f"layer {i}: expected [H, T_q, T_k] or [B, H, T_q, T_k], got shape {w.shape}")
        layers.append(w)
    if not layers:
        raise ValueError("weights_per_layer is empty")
    n_layers, n_heads = len(layers), max(w.shape[0] for w in layers)
    t_q, t_k = layers[0].shape[1:]
    q_labels = _labels(labels, t_q, "labels")
    k_labels = _labels(k_labels if k_labels is not None else (labels if t_k == t_q else None), t_k, "k_labels")
    vmax = max(float(w.max()) for w in layers) if vmax is None else vmax
    fig, axes = plt.subplots(n_layers, n_heads, figsize=(cell_size * n_heads + 1.6, cell_size * n_layers + 0.8),
                             dpi=80, squeeze=False)  # + room for the tick labels, titles and colour bar
    image = None
    for li, w in enumerate(layers):
        for h in range(n_heads):
            ax = axes[li, h]
            if h >= w.shape[0]:
                ax.axis("off")
                continue
            image = ax.imshow(w[h], cmap=cmap, vmin=0.0, vmax=vmax)
            ax.set_xticks([]), ax.set_yticks([])
            if li == n_layers - 1:
                ax.set_xticks(range(t_k), k_labels, fontsize=8, rotation=90 if max(map(len, k_labels)) > 2 else 0)
            if h == 0:
                ax.set_yticks(range(t_q), q_labels, fontsize=8)
                ax.set_ylabel(f"layer {li}")
            if li == 0:
                ax.set_title(f"head {h}", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if image is not None:  # one colour bar for the shared scale
        fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.02, pad=0.02, label="attention weight")
    return fig


# ----------------------------------------------------------------------------- images


def image_grid(images, nrow: int = 8, titles=None, cell_size: float = 1.5, title=None, cmap: str = "gray"):
    """Show images [N, C, H, W] (C = 1 or 3) in a grid with ``nrow`` images per row.

    Values in [-1, 1] (what diffusion models produce) or [0, 1] are accepted; a
    batch with any value below 0 is read as [-1, 1] and mapped to [0, 1].
    Values outside [-1, 1] are an error rather than silently clipped.
    titles: optional list of N strings. Returns the ``Figure``.
    """
    x = to_numpy(images)
    if x.ndim == 3:  # a single image [C, H, W]
        x = x[None]
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images must be [N, C, H, W] with C = 1 or 3, got shape {x.shape}")
    if not isinstance(nrow, int) or nrow < 1:
        raise ValueError(f"nrow must be a positive int, got {nrow!r}")
    lo, hi = float(x.min()), float(x.max())
    tol = 1e-3
    if lo < -1 - tol or hi > 1 + tol:
        raise ValueError(f"image values must lie in [-1, 1] or [0, 1], got range [{lo:.3g}, {hi:.3g}]")
    if lo < 0:
        x = (x + 1) / 2
    x = np.clip(x, 0.0, 1.0)  # only rounding noise (within tol) is clipped here
    n = x.shape[0]
    if titles is not None and len(titles) != n:
        raise ValueError(f"got {len(titles)} titles for {n} images")
    ncol = min(nrow, n)
    rows = math.ceil(n / ncol)
    extra = 0.3 if titles is not None else 0.0
    fig, axes = plt.subplots(rows, ncol, figsize=(cell_size * ncol, (cell_size + extra) * rows), dpi=80,
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = x[i]
        if img.shape[0] == 1:
            ax.imshow(img[0], cmap=cmap, vmin=0.0, vmax=1.0)
        else:
            ax.imshow(img.transpose(1, 2, 0))
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- training


def _series(values):
    """A list of floats -> (x = 0.., y); a list of (step, value) pairs -> (steps, values)."""
    arr = to_numpy(values) if len(values) else np.zeros((0,), np.float32)
    if arr.ndim == 1:
        return np.arange(len(arr)), arr
    if arr.ndim == 2 and arr.shape[1] == 2:
        return arr[:, 0], arr[:, 1]
    raise ValueError(f"a curve must be a list of numbers or of (step, value) pairs, got shape {arr.shape}")


def loss_curve(history, keys=None, ax=None, log: bool = False, smooth: int = 0, title=None,
               xlabel: str = "step", ylabel: str = "loss"):
    """Plot training (and validation) curves.

    history: a list of losses (one per step), or a dict such as the one
    ``course_lib.train.train`` returns: ``{"train_loss": [...], "val_loss":
    [(step, value), ...], ...}``. Each entry is a list of numbers (x = its index)
    or of (step, value) pairs. ``keys`` picks entries (default: every key with
    "loss" in its name). ``smooth`` > 1 adds a moving average over that many
    points (the raw curve is kept, faded). ``log`` uses a log-scale y axis.
    Returns the ``Axes``.
    """
    if not isinstance(history, dict):
        history = {"train_loss": history}
    if keys is None:
        keys = [k for k in history if "loss" in k]
    missing = [k for k in keys if k not in history]
    if missing:
        raise ValueError(f"keys {missing} not in history; available: {list(history)}")
    if not keys:
        raise ValueError(f"no curve to plot; history has keys {list(history)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5), dpi=80)
    for k in keys:
        x, y = _series(history[k])
        if smooth and smooth > 1 and len(y) >= smooth:
            line, = ax.plot(x, y, alpha=0.3)
            kernel = np.ones(smooth) / smooth
            ax.plot(x[smooth - 1:], np.convolve(y, kernel, mode="valid"), color=line.get_color(),
                    label=f"{k} (avg of {smooth})")
        else:
            ax.plot(x, y, marker="o" if len(y) < 30 else None, markersize=3, label=k)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return ax


# ----------------------------------------------------------------------------- appended by other modules


# ----------------------------------------------------------------------------- sampling (06)


def token_distribution(probs, labels=None, filtered=None, top: int = 20, ax=None, title=None):
    """Bar plot of a next-token distribution, before and (optionally) after a filter.

    probs: [V] probabilities (softmax of the logits). filtered: [V] the
    distribution the sampler actually draws from (zeros where a token was
    removed, the rest renormalised). Shows the ``top`` most likely tokens of
    ``probs``, in that order: grey bars before, coloured bars after; removed
    tokens are marked with an ×. labels: a string per vocabulary entry (e.g.
    decoded tokens), or None for ids. Returns the ``Axes``.
    """
    p = to_numpy(probs).reshape(-1)
    if filtered is not None:
        q = to_numpy(filtered).reshape(-1)
        if q.shape != p.shape:
            raise ValueError(f"filtered has {q.size} entries but probs has {p.size}")
    if not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be a positive int, got {top!r}")
    order = np.argsort(-p, kind="stable")[: min(top, p.size)]
    names = [repr(labels[i])[1:-1] if labels is not None else str(i) for i in order]
    x = np.arange(len(order))
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3), dpi=80)
    width = 0.4 if filtered is not None else 0.8
    ax.bar(x - (width / 2 if filtered is not None else 0), p[order], width, color="0.65", label="model")
    if filtered is not None:
        ax.bar(x + width / 2, q[order], width, color="C0", label="after filter")
        removed = q[order] == 0
        ax.scatter(x[removed] + width / 2, np.zeros(removed.sum()), marker="x", color="C3",
                   zorder=3, label="removed")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("probability")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


# ----------------------------------------------------------------------------- diffusion (09, 10)


def schedule_plot(schedules: dict, axes=None):
    """ᾱ_t and log-SNR(t) of several noise schedules, side by side.

    schedules: ``{name: betas [N]}`` (e.g. from ``course_lib.diffusion.make_betas``).
    Returns the ``Figure``.
    """
    from .schedules import alpha_bar, log_snr

    if not isinstance(schedules, dict) or not schedules:
        raise ValueError("schedules must be a non-empty dict {name: betas}")
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), dpi=80)
    fig = axes[0].figure
    for name, betas in schedules.items():
        ab = alpha_bar(torch.as_tensor(betas, dtype=torch.float32)).double()
        axes[0].plot(to_numpy(ab), label=name)
        axes[1].plot(to_numpy(log_snr(ab)), label=name)
    axes[0].set(xlabel="timestep t", ylabel=r"$\bar\alpha_t$", title=r"signal left: $\bar\alpha_t$")
    axes[1].set(xlabel="timestep t", ylabel=r"$\log\,\bar\alpha_t/(1-\bar\alpha_t)$", title="log-SNR")
    axes[1].axhline(0.0, color="0.6", lw=0.8, ls="--")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _pick_steps(n: int, n_cols: int) -> list[int]:
    if not isinstance(n_cols, int) or n_cols < 1:
        raise ValueError(f"n_cols must be a positive int, got {n_cols!r}")
    return sorted(set(np.linspace(0, n - 1, min(n_cols, n)).round().astype(int).tolist()))


def trajectory_grid(trajectory, n_cols: int = 8, n_samples: int = 4, cmap: str = "gray", cell_size: float = 0.9,
                    title=None):
    """Denoising trajectory: rows = samples, columns = steps; each cell shows x_t and x̂₀ side by side.

    trajectory: a ``course_lib.diffusion.Trajectory`` (``x_t``, ``x0_pred`` ``[n, B, C, H, W]``,
    ``timesteps``). Images are drawn on the fixed range [-1, 1]: noisy x_t values beyond
    it show as full black/white (the data is not changed). Returns the ``Figure``.
    """
    xt, x0 = to_numpy(trajectory.x_t), to_numpy(trajectory.x0_pred)
    if xt.ndim != 5 or xt.shape != x0.shape or xt.shape[2] not in (1, 3):
        raise ValueError(f"trajectory tensors must be [steps, B, C, H, W] with C = 1 or 3, got {xt.shape}")
    steps = _pick_steps(xt.shape[0], n_cols)
    rows = min(n_samples, xt.shape[1])
    fig, axes = plt.subplots(rows, 2 * len(steps), figsize=(cell_size * 2 * len(steps), cell_size * rows + 0.5),
                             dpi=80, squeeze=False)
    for r in range(rows):
        for c, s in enumerate(steps):
            for k, (arr, name) in enumerate(((xt, "x_t"), (x0, "x̂₀"))):
                ax = axes[r, 2 * c + k]
                img = arr[s, r]
                if img.shape[0] == 1:
                    ax.imshow(img[0], cmap=cmap, vmin=-1, vmax=1)
                else:
                    ax.imshow(np.clip((img.transpose(1, 2, 0) + 1) / 2, 0, 1))
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(f"{name}\nt={trajectory.timesteps[s]}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def trajectory_animation(trajectory, n_samples: int = 8, max_frames: int = 25, interval: int = 150,
                         cmap: str = "gray", dpi: int = 50, player: bool = False):
    """Sampling as an animated GIF (top row x_t, bottom row x̂₀), for a notebook.

    At most ``max_frames`` evenly spaced steps are drawn, at low dpi, so the stored
    image stays small. Returns ``show_animation``'s output: an image every viewer
    shows, plus a frame slider when ``player=True``.
    """
    xt, x0 = to_numpy(trajectory.x_t), to_numpy(trajectory.x0_pred)
    if xt.ndim != 5 or xt.shape[2] != 1:
        raise ValueError(f"trajectory_animation draws greyscale trajectories [steps, B, 1, H, W], got {xt.shape}")
    frames = _pick_steps(xt.shape[0], max_frames)
    n = min(n_samples, xt.shape[1])
    fig, axes = plt.subplots(2, n, figsize=(0.8 * n, 1.9), dpi=dpi, squeeze=False)
    ims = []
    for j in range(n):
        for i, arr in enumerate((xt, x0)):
            axes[i, j].axis("off")
            ims.append(axes[i, j].imshow(arr[frames[0], j, 0], cmap=cmap, vmin=-1, vmax=1))
    axes[0, 0].set_title("x_t", fontsize=8, loc="left")
    axes[1, 0].set_title("x̂₀", fontsize=8, loc="left")
    label = fig.suptitle("", fontsize=8)

    def draw(f):
        s = frames[f]
        for j in range(n):
            ims[2 * j].set_data(xt[s, j, 0])
            ims[2 * j + 1].set_data(x0[s, j, 0])
        label.set_text(f"step {s + 1}/{xt.shape[0]}, t = {trajectory.timesteps[s]}")

    return show_animation(fig, draw, len(frames), interval=interval, player=player)


# ----------------------------------------------------------------------------- figures every viewer shows
#
# A stored notebook is read without a live kernel: on GitHub, in nbviewer, and in JupyterLab
# before Run All, where outputs the reader has not produced are untrusted, so widgets and
# JavaScript are not rendered (a widget shows its text repr, a JS player a broken image).
# The helpers below therefore always store an image output: a GIF for animations, a PNG of
# the first state beside each interactive widget. Live widgets come on top, never instead.


def figure_png(fig, dpi: float | None = None) -> bytes:
    """The PNG of a matplotlib figure (tight bounding box, as Jupyter's inline backend draws it); closes it."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def animation_gif(fig, draw, n_frames: int, interval: int = 150) -> bytes:
    """An animated GIF (looping, ``interval`` ms per frame) of ``draw(i)`` for i in 0..n_frames-1; closes ``fig``.

    ``draw(i)`` updates the artists of ``fig`` for frame ``i``.
    """
    import io

    from PIL import Image

    if not isinstance(n_frames, int) or n_frames < 1:
        raise ValueError(f"n_frames must be a positive int, got {n_frames!r}")
    if not isinstance(interval, int) or interval < 20:
        raise ValueError(f"interval must be an int of at least 20 ms per frame, got {interval!r}")
    frames = []
    for i in range(n_frames):
        draw(i)
        fig.canvas.draw()
        rgb = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())).convert("RGB")
        frames.append(rgb.convert("P", palette=Image.Palette.ADAPTIVE))
    plt.close(fig)
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=interval, loop=0)
    return buf.getvalue()


class StoredBundle:
    """A display object with a fixed MIME bundle: ``display(b)``, or a cell's last expression.

    ``bundle`` maps MIME types to data (``image/*`` as base64 text); a viewer shows the
    richest one it can render, so a live widget and its stored image can share one output.
    """

    def __init__(self, bundle: dict, widget=None):
        self.bundle, self.widget = bundle, widget

    def _repr_mimebundle_(self, include=None, exclude=None):
        return dict(self.bundle)


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")


def show_animation(fig, draw, n_frames: int, interval: int = 150, player: bool = False) -> StoredBundle:
    """An animation as an ``image/gif`` output (shown everywhere, no JavaScript, no CDN).

    ``draw(i)`` updates ``fig`` for frame ``i`` (see ``animation_gif``). With ``player=True``
    the output is also a live frame player (ipywidgets ``Play`` + slider + image) where a kernel
    runs; viewers without one show the GIF of the same output.
    """
    gif = animation_gif(fig, draw, n_frames, interval)
    bundle = {"image/gif": _b64(gif), "text/plain": f"<animation: {n_frames} frames, {interval} ms each>"}
    if not player:
        return StoredBundle(bundle)
    import io

    import ipywidgets as widgets
    from PIL import Image

    pictures = []
    with Image.open(io.BytesIO(gif)) as im:
        for i in range(n_frames):
            im.seek(i)
            buf = io.BytesIO()
            im.convert("RGB").save(buf, format="PNG")
            pictures.append(buf.getvalue())
    image = widgets.Image(value=pictures[0], format="png")
    play = widgets.Play(min=0, max=n_frames - 1, interval=interval)
    frame = widgets.IntSlider(min=0, max=n_frames - 1, description="frame")
    widgets.jslink((play, "value"), (frame, "value"))
    frame.observe(lambda change: setattr(image, "value", pictures[change["new"]]), names="value")
    box = widgets.VBox([widgets.HBox([play, frame]), image])
    return StoredBundle({**bundle, **box._repr_mimebundle_(), "text/plain": bundle["text/plain"]}, widget=box)


def interactive_figure(draw, controls: dict, columns: int = 2) -> StoredBundle:
    """Controls that redraw a figure, stored so that every viewer sees the figure.

    ``draw(**values)`` makes a matplotlib figure from the controls' values and returns it
    (it may also print: the text is shown under the figure). ``controls`` maps each
    argument name to an ipywidget (a slider ...), laid out ``columns`` per row with room for
    their whole labels. The figure is rendered to PNG here, not by the inline backend, so
    the first display is the complete figure.

    Returns one output that holds both the live widget (where a kernel runs: JupyterLab,
    Colab, VS Code) and a PNG of the first state, which viewers without a live widget show
    (GitHub, nbviewer, a notebook opened before it is run).
    """
    import contextlib
    import io

    import ipywidgets as widgets
    from IPython.display import Image, display

    if not isinstance(controls, dict) or not controls:
        raise ValueError("controls must be a non-empty dict {argument name: ipywidget}")
    bad = [name for name, w in controls.items() if not isinstance(w, widgets.ValueWidget)]
    if bad:
        raise TypeError(f"controls {bad} are not ipywidgets with a value (e.g. widgets.FloatSlider)")
    if not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns must be a positive int, got {columns!r}")
    out = widgets.Output()
    first = {}

    def render():
        values = {name: w.value for name, w in controls.items()}
        text = io.StringIO()
        with contextlib.redirect_stdout(text):
            fig = draw(**values)
        if not isinstance(fig, plt.Figure):
            raise TypeError(f"draw must return a matplotlib Figure, got {type(fig).__name__}")
        png = figure_png(fig)
        first.setdefault("png", png)
        out.clear_output(wait=True)
        with out:
            display(Image(png))
            print(text.getvalue(), end="")

    for w in controls.values():
        w.style.description_width = "initial"  # the whole label ("temperature", not "temperat…")
        w.observe(lambda change: render(), names="value")
    render()
    rows = list(controls.values())
    box = widgets.VBox([widgets.HBox(rows[i:i + columns]) for i in range(0, len(rows), columns)] + [out])
    state = ", ".join(f"{name}={w.value}" for name, w in controls.items())
    return StoredBundle({**box._repr_mimebundle_(), "image/png": _b64(first["png"]),
                         "text/plain": f"<interactive figure: {state}>"}, widget=box)
