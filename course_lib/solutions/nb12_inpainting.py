"""Solutions to notebook 12's exercises (inpainting)."""

import torch.nn.functional as F


def my_blend(z_model, z_known, m, noise, alpha_bar_prev):
    """Inside the mask the model's latents; outside, the known ones noised to ᾱ_prev."""
    known = alpha_bar_prev ** 0.5 * z_known + (1 - alpha_bar_prev) ** 0.5 * noise
    return m * z_model + (1 - m) * known


def my_erase(image, pixel_mask):
    """Masked pixels take the mean colour of each image's kept pixels."""
    keep = 1 - pixel_mask  # [B, 1, H, W]
    mean = (image * keep).sum((2, 3), keepdim=True) / keep.sum((2, 3), keepdim=True).clamp(min=1)  # [B, 3, 1, 1]
    return image * keep + mean * pixel_mask


def my_latent_mask(pixel_mask, factor, threshold=0.5):
    """A latent cell is regenerated when at least ``threshold`` of its factor×factor pixels are masked."""
    coverage = F.avg_pool2d(pixel_mask, factor)  # [B, 1, H/f, W/f]
    return (coverage >= threshold).float()


def my_repaint_schedule(n_steps, jump_length, jump_n_sample):
    """Down one index at a time; at each multiple of jump_length below n, walk the last jump_length
    steps again, jump_n_sample − 1 more times."""
    path = [0]
    for i in range(1, n_steps + 1):
        path.append(i)
        if i % jump_length == 0 and i < n_steps:
            for _ in range(jump_n_sample - 1):
                path += list(range(i - jump_length, i + 1))  # back up to i − jump_length, then down to i
    return path
