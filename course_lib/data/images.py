"""Offline images: scikit-learn's bundled digits and scikit-image's bundled photographs.

Both ship inside the installed packages, so nothing is downloaded. Images come
back as float tensors in [-1, 1], batch-first ``[N, C, H, W]`` — the range the
autoencoders and diffusion models of the course work in.

* ``load_digits_tensor(size=8)`` -> (images [1797, 1, size, size], labels [1797] int64)
  (UCI optical digits, 8×8 pixels with 17 grey levels; other sizes are resized bilinearly);
* ``load_photo(name="astronaut", size=None)`` -> [1, 3, H, W]
  (``size``: centre-crop to a square, then resize to ``size × size``);
* ``to_display(images)`` -> [N, H, W, C] numpy in [0, 1] for ``plt.imshow``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["load_digits_tensor", "load_photo", "PHOTOS", "to_display"]

# scikit-image photographs bundled with the package (no download needed)
PHOTOS = ("astronaut", "chelsea", "coffee", "camera")


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of [N, C, H, W] to size × size (antialiased when shrinking)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    shrink = size < min(x.shape[-2:])
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)


def _check_size(size) -> None:
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size must be a positive int (pixels per side), got {size!r}")


def load_digits_tensor(size: int = 8, dtype: torch.dtype = torch.float32):
    """scikit-learn's 1,797 handwritten digits as ``(images [N, 1, size, size] in [-1, 1], labels [N])``."""
    from sklearn.datasets import load_digits

    _check_size(size)
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0  # [N, 1, 8, 8] in [0, 1]
    images = _resize(images, size).clamp(0.0, 1.0) * 2.0 - 1.0  # [-1, 1]
    return images.to(dtype), torch.tensor(digits.target, dtype=torch.long)


def load_photo(name: str = "astronaut", size: int | None = None, dtype: torch.dtype = torch.float32):
    """A scikit-image photograph as ``[1, 3, H, W]`` in [-1, 1] (grey ones repeated to 3 channels)."""
    import skimage.data

    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; bundled photos: {', '.join(PHOTOS)}")
    img = np.asarray(getattr(skimage.data, name)(), dtype=np.float32) / 255.0  # [H, W, 3] or [H, W]
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    x = torch.from_numpy(img).permute(2, 0, 1)[None]  # [1, 3, H, W] in [0, 1]
    if size is not None:
        _check_size(size)
        h, w = x.shape[-2:]
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        x = _resize(x[..., top:top + s, left:left + s], size).clamp(0.0, 1.0)
    return (x * 2.0 - 1.0).to(dtype)


def to_display(images: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> numpy [N, H, W, C] in [0, 1] (C=1 squeezed to [N, H, W])."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError("images must be a [N, C, H, W] tensor")
    x = ((images.detach().float().cpu() + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 1).numpy()
    return x[..., 0] if x.shape[-1] == 1 else x
