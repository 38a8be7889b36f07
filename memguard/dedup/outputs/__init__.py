"""The apply step: manifest, clusters, cleaned shards, stats and contact sheet."""
