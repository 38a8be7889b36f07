"""Everything a dedup run needs besides the corpus, checked on construction."""

from __future__ import annotations

from dataclasses import dataclass, field

from memguard.common.config import ConfigError, in_range, one_of
from memguard.dedup.decide.cluster import ClusterRule
from memguard.dedup.decide.semdedup import SemDedupParams
from memguard.dedup.outputs.manifest import POLICIES
from memguard.dedup.signals.caption_embed import CaptionSemanticParams
from memguard.dedup.signals.embed import EmbedderParams
from memguard.dedup.signals.local_params import LocalParams
from memguard.dedup.signals.lsh import LshParams
from memguard.dedup.signals.minhash import MinHashParams
from memguard.dedup.signals.neighbors import IndexParams


@dataclass(frozen=True)
class DedupParams:
    """Everything the dedup stage needs besides the corpus. policy: remove | reweight | keep | semdedup.
    caption_enabled: false → image-only dedup (identical pixels and image cosine); captions are neither
    required nor compared. local: the image signal's second stage, local features with geometric
    verification (``local.enabled=false``: the global descriptor alone). embeddings: for an image corpus,
    a folder (local or remote) of the clip-retrieval / img2dataset embedding layout whose vectors stand in
    for the embedder's, joined to the samples by key (``embeddings_id``: the metadata column holding it;
    null → ``key``, else ``image_path``); a sample it has no single vector for is a ``no_embedding`` row."""

    minhash: MinHashParams = field(default_factory=MinHashParams)
    lsh: LshParams = field(default_factory=LshParams)
    caption_semantic: CaptionSemanticParams = field(default_factory=CaptionSemanticParams)
    embedder: EmbedderParams = field(default_factory=EmbedderParams)
    local: LocalParams = field(default_factory=LocalParams)
    index: IndexParams = field(default_factory=IndexParams)
    rule: ClusterRule = field(default_factory=ClusterRule)
    policy: str = "remove"
    semdedup: SemDedupParams = field(default_factory=SemDedupParams)
    shard_size: int = 10_000
    write_shards: bool = True
    sheet_clusters: int = 12
    caption_enabled: bool = True
    embeddings: str | None = None
    embeddings_id: str | None = None

    def __post_init__(self) -> None:
        one_of("dedup.policy", self.policy, POLICIES)
        if self.embeddings_id is not None and self.embeddings is None:
            raise ConfigError("dedup.image.embeddings_id names a column of dedup.image.embeddings, which is not set")
        if not self.caption_enabled and self.caption_semantic.enabled:
            raise ConfigError("dedup.caption.semantic.enabled=true needs dedup.caption.enabled=true")
        if self.write_shards:
            in_range("dedup.shard_size (with dedup.write_shards=true)", self.shard_size, lo=1)
        in_range("dedup.sheet_clusters", self.sheet_clusters, lo=0)
        semantic = self.rule.caption_semantic_threshold
        if semantic is not None and not self.caption_semantic.enabled:
            raise ConfigError("rule.caption_semantic_threshold is set but caption_semantic.enabled is false")
        if semantic is not None and semantic < self.caption_semantic.floor:
            raise ConfigError(
                f"dedup.caption.semantic.threshold {semantic} < dedup.caption.semantic.floor {self.caption_semantic.floor}"
            )
        if self.rule.caption_threshold < self.lsh.threshold:
            raise ConfigError(
                f"dedup.caption.threshold {self.rule.caption_threshold} < dedup.caption.lsh_threshold {self.lsh.threshold}: "
                "candidates below the LSH floor were never kept"
            )
        if self.rule.image_threshold < self.index.min_sim or self.rule.loose_image_threshold < self.index.min_sim:
            # Pairs below index.min_sim were never searched for; a lower threshold would silently find fewer.
            raise ConfigError(
                f"dedup.image.threshold and loose_threshold ({self.rule.image_threshold}, "
                f"{self.rule.loose_image_threshold}) must be >= dedup.image.index.min_sim ({self.index.min_sim})"
            )
