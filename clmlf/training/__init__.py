"""Training: published recipes (presets) and the trainer (two stages, DDP, AMP, resume)."""
