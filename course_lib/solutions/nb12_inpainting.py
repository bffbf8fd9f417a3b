"""Solutions to notebook 12's exercises (inpainting)."""
