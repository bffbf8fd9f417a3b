"""Solutions to notebook 04's exercises (training a small GPT)."""
