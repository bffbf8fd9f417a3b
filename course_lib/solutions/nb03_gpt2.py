"""Solutions to notebook 03's exercises (GPT-2)."""
