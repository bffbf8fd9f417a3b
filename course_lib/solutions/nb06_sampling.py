"""Solutions to notebook 06's exercises (sampling)."""
