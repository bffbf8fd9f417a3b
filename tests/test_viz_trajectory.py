"""The stored denoising animation of notebook 09: frames tall enough to read, a caption per frame."""

import base64
import io
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from course_lib import viz


def _trajectory(n_steps=12, batch=10):
    x = torch.linspace(-1, 1, n_steps)[:, None, None, None, None].expand(n_steps, batch, 1, 8, 8)  # [n, B, 1, 8, 8]
    return SimpleNamespace(x_t=x, x0_pred=-x, timesteps=list(range(n_steps - 1, -1, -1)))


def _frames(out):
    im = Image.open(io.BytesIO(base64.b64decode(out._repr_mimebundle_()["image/gif"])))
    frames = []
    for i in range(im.n_frames):
        im.seek(i)
        frames.append(im.convert("L"))
    return frames


def test_frames_are_at_least_256_px_tall_and_the_caption_changes():
    frames = _frames(viz.trajectory_animation(_trajectory(), n_samples=10, max_frames=6))
    assert len(frames) == 6 and all(f.height >= 256 for f in frames)
    assert frames[0].width >= 10 * 100  # ten images side by side, each about 110 px
    caption = [f.crop((0, 0, f.width, 30)).tobytes() for f in frames]  # the caption strip at the top
    assert len(set(caption)) == 6  # each frame names its own step


def test_smaller_cells_and_a_title_are_allowed_and_bad_sizes_refused():
    frames = _frames(viz.trajectory_animation(_trajectory(), n_samples=2, max_frames=3, cell_size=0.5, dpi=60,
                                              title="DDPM"))
    assert frames[0].height < 100
    with pytest.raises(ValueError, match="cell_size"):
        viz.trajectory_animation(_trajectory(), cell_size=0)
