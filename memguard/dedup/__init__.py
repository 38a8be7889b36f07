"""Find and remove near-duplicate image-caption pairs before a diffusion model memorizes them."""
