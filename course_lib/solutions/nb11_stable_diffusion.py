"""Solutions to notebook 11's exercises (Stable Diffusion)."""
