"""Solutions to notebook 10's exercises (DDIM and guidance)."""
