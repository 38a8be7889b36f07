"""The candidate edges every signal proposes, before the cluster rule."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Edges:
    """Candidate edges before the rule: all arrays aligned with ``pairs`` (M, 2), i < j."""

    pairs: np.ndarray
    image_sim: np.ndarray
    caption_jaccard: np.ndarray  # NaN where the pair is not a caption candidate
    exact: np.ndarray  # bool
    caption_sim: np.ndarray  # caption-embedding cosine; NaN without the semantic signal or caption

    def subset(self, mask: np.ndarray) -> Edges:
        return Edges(
            self.pairs[mask], self.image_sim[mask], self.caption_jaccard[mask], self.exact[mask], self.caption_sim[mask]
        )
