"""Solutions to notebook 05's exercises (LoRA)."""
