"""Diffusion models and the images they see: build/save/load, the text condition, sampling, image sets."""
