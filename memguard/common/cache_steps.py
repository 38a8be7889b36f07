"""Every cache kind's code version and the modules whose code fills its entries.

A kind's key hashes its version (and the versions of the kinds it is built ``after`` but whose keys are
not among its parts), so bumping a version retires its old entries (``prune --stale`` removes them).
Bump a kind's version when its modules change what an entry would hold. ``tests/common/test_cache_steps.py``
fails when a listed module's code (docstrings and comments aside) changes while its kinds' versions stay;
``python tools/cache_steps.py record`` then records the new code, and refuses to unless the version moved.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    version: int
    modules: tuple[str, ...]  # the code that decides what an entry holds (not how it is scheduled or stored)
    after: tuple[str, ...] = ()  # kinds whose output it reads without their key among its key's parts


_READ = ("memguard.corpus.readers", "memguard.corpus.validate", "memguard.corpus.metadata", "memguard.corpus.sample")
_NEIGHBOURS = (
    "memguard.dedup.signals.neighbors",
    "memguard.dedup.signals.neighbor_tasks",
    "memguard.dedup.signals.neighbor_index",
    "memguard.dedup.signals.pairs",
    "memguard.dedup.signals.views",
)

STEPS: dict[str, Step] = {
    "corpus": Step(
        4,
        (
            "memguard.corpus.twemoji",
            "memguard.corpus.inject",
            "memguard.corpus.emoji_names",
            "memguard.corpus.writer",
            "memguard.corpus.validate",
        ),
    ),
    "map": Step(
        8,
        (
            "memguard.dedup.stages.map",
            "memguard.dedup.stages.map_embeddings",
            "memguard.dedup.stages.units",
            "memguard.dedup.signals.precomputed",
            "memguard.corpus.embeddings",
            "memguard.dedup.signals.local_features",
            "memguard.dedup.signals.local_params",
            "memguard.dedup.signals.embed",
            "memguard.dedup.signals.robust",
            "memguard.dedup.signals.robust_kernels",
            "memguard.dedup.signals.robust_align",
            "memguard.dedup.signals.views",
            "memguard.dedup.signals.minhash",
            "memguard.dedup.signals.minhash_kernel",
            "memguard.dedup.signals.normalize",
            "memguard.dedup.signals.pixels",
            "memguard.corpus.discover",
            *_READ,
        ),
    ),
    # The curator's own vectors for an image corpus, by key (dedup.image.embeddings).
    "embedding_lookup": Step(1, ("memguard.dedup.signals.precomputed", "memguard.corpus.embeddings")),
    "joined": Step(4, ("memguard.dedup.stages.map", "memguard.common.mapped")),
    "caption_pairs": Step(2, ("memguard.dedup.signals.lsh", "memguard.dedup.signals.lsh_tasks", "memguard.dedup.signals.pairs")),
    "image_neighbors": Step(7, _NEIGHBOURS),
    # The verified image similarity of each neighbour pair (keyed by the map and the search).
    "verified_pairs": Step(
        5, ("memguard.dedup.signals.local", "memguard.dedup.signals.local_features", "memguard.dedup.signals.local_params")
    ),
    # Pairs whose keypoint descriptors agree (keyed by the map and the local parameters).
    "voted_pairs": Step(
        1, ("memguard.dedup.signals.local_candidates", "memguard.dedup.signals.local_features", "memguard.dedup.signals.local_params")
    ),
    "caption_embeddings": Step(2, ("memguard.dedup.signals.caption_embed", "memguard.common.minilm")),
    "caption_neighbors": Step(3, _NEIGHBOURS),
    "dedup": Step(
        9,
        (
            "memguard.dedup.pipeline",
            "memguard.dedup.params",
            "memguard.dedup.stages.pairs",
            "memguard.dedup.stages.decide",
            "memguard.dedup.stages.apply",
            "memguard.dedup.decide.cluster",
            "memguard.dedup.decide.decision",
            "memguard.dedup.decide.edges",
            "memguard.dedup.decide.groups",
            "memguard.dedup.decide.semdedup",
            "memguard.dedup.decide.evaluate",
            "memguard.dedup.signals.local",
            "memguard.dedup.signals.local_features",
            "memguard.dedup.signals.local_params",
            "memguard.dedup.outputs.clusters",
            "memguard.dedup.outputs.contact_sheet",
            "memguard.dedup.outputs.manifest",
            "memguard.dedup.outputs.manifest_tasks",
            "memguard.dedup.outputs.removals",
            "memguard.dedup.outputs.shards",
            "memguard.dedup.outputs.stats",
            "memguard.corpus.writer",
        ),
        after=("map", "joined", "caption_pairs", "image_neighbors", "voted_pairs", "verified_pairs", "caption_embeddings", "caption_neighbors"),
    ),
    "images": Step(2, ("memguard.diffusion.images", *_READ)),
    "train": Step(
        5,
        (
            "memguard.train.loop",
            "memguard.train.micro_batch",
            "memguard.train.run_state",
            "memguard.train.device_steps",
            "memguard.train.data",
            "memguard.train.stream",
            "memguard.train.mitigations",
            "memguard.train.checkpoint",
            "memguard.train.source",
            "memguard.train.result",
            "memguard.diffusion.models",
            "memguard.diffusion.text",
            "memguard.diffusion.sampling",
            "memguard.diffusion.saved",
        ),
        after=("images",),
    ),
    "audit": Step(
        7,
        (
            "memguard.extract.audit",
            "memguard.extract.attacks",
            "memguard.extract.distances",
            "memguard.extract.featureless",
            "memguard.extract.generations",
            "memguard.extract.membership",
            "memguard.extract.stratify",
            "memguard.extract.wen",
            "memguard.extract.reference",
            "memguard.extract.inputs",
            "memguard.diffusion.sampling",
            "memguard.diffusion.saved",
            "memguard.dedup.signals.embed",
            "memguard.dedup.signals.robust",
            "memguard.dedup.signals.robust_align",
            "memguard.dedup.signals.views",
        ),
        after=("images",),
    ),
}


def version_parts(kind: str) -> list[object]:
    """What a kind's key hashes for its code: its version and, recursively, those of its ``after`` kinds."""
    step = STEPS[kind]
    return [kind, step.version, *[version_parts(upstream) for upstream in step.after]]
