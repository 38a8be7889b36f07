"""``python -m extract``, an entry point above the library: re-run the extraction attack on a trained model and measure memorization.

The code is ``memguard.extract``; this package holds only ``__main__.py``."""
