"""Random weights for reference-equivalence tests.

Every parameter is drawn at random — norm scales around 1, biases and shifts
around 0, weights ~ N(0, 1/fan_in) — so a conversion that forgets or swaps
any tensor (a LayerNorm/GroupNorm included) shows up in the outputs.
"""

import torch


def randomise(model, seed=0):
    """Overwrite every parameter of ``model`` in place with seeded random values; return it."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.3 * r)
            elif p.dim() <= 1:  # biases, shifts and scalars (CLIP's logit_scale)
                p.copy_(0.2 * r)
            else:
                p.copy_(r / p[0].numel() ** 0.5)
    return model
