"""memguard's shared packages: common utilities, configs, corpus I/O, diffusion models, the main job.

The entry points stay top-level: ``python -m dedup``, ``python -m train``, ``python -m extract``."""
