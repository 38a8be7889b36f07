"""The dedup stages, in the order ``memguard.dedup.pipeline.run_dedup`` runs them:

1. ``map``    — one read and one decode of every unit, per part (cached per part, on the executor):
               validation, pixel hash, normalised caption, MinHash signature, image embedding.
2. ``pairs``  — the global candidate searches over the joined map outputs (each cached): caption pairs
               (MinHash LSH), image neighbours (faiss), optional caption-embedding neighbours.
3. ``decide`` — the cluster rule over the candidates (or SemDeDup): one ``Decision`` per valid sample.
4. ``apply``  — the policy turns the decision into the outputs: manifest, clusters, cleaned shards (a
               second read of each part, on the executor), contact sheet, stats.

Every stage follows ``memguard.dedup.stages.contract``: plain inputs and parameters in, a record out, its cache
entries keyed by its inputs' keys and its parameters.
"""
