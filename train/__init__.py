"""``python -m train``, an entry point above the library: train or fine-tune diffusion models on (cleaned) webdataset shards, with memorization mitigations.

The code is ``memguard.train``; this package holds only ``__main__.py``."""
