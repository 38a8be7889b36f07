"""Hydra configs, shipped inside the wheel so that a non-editable install finds them."""
