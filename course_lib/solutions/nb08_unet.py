"""Solutions to notebook 08's exercises (UNet)."""
