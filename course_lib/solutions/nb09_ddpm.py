"""Solutions to notebook 09's exercises (DDPM)."""
