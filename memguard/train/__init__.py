"""Train or fine-tune diffusion models on (cleaned) webdataset shards, with memorization mitigations."""
