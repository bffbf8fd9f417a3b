"""Solutions to notebook 07's exercises (autoencoders)."""
