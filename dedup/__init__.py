"""``python -m dedup``, an entry point above the library: find and remove near-duplicate image-caption pairs before a diffusion model memorizes them.

The code is ``memguard.dedup``; this package holds only ``__main__.py``."""
