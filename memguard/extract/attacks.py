"""The extraction attacks: Carlini's unconditional attack and the generate-and-filter clique test."""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np

from memguard.extract.distances import normalized_l2, pairwise_l2, tiled_l2


@dataclass(frozen=True)
class UncondResult:
    score: np.ndarray  # normalized ℓ2 per generation
    nearest: np.ndarray  # index of the nearest reference image (group id when grouped)
    l2: np.ndarray  # ℓ2 to it


def unconditional_attack(
    generated: np.ndarray,
    reference: np.ndarray,
    *,
    alpha: float = 0.5,
    n: int = 50,
    device: str | None = None,
    groups: np.ndarray | None = None,
) -> UncondResult:
    """Carlini's CIFAR-10 attack: a generation is extracted if its normalized ℓ2 to the training set is
    below δ (callers choose δ and report several). ``groups`` marks copies of one image (see
    ``normalized_l2``); ``nearest`` is then a group id."""
    score, nearest, dmin = normalized_l2(generated, reference, alpha=alpha, n=n, device=device, groups=groups)
    return UncondResult(score, nearest, dmin)


def largest_clique(distances: np.ndarray, tau: float) -> list[int]:
    """Largest clique of the graph with an edge between generations i ≠ j when distances[i, j] < τ
    (networkx's exact maximum-clique search)."""
    graph = nx.Graph()
    graph.add_nodes_from(range(len(distances)))
    ii, jj = np.nonzero(np.triu(distances < tau, k=1))
    graph.add_edges_from(zip(ii.tolist(), jj.tolist(), strict=True))
    clique, _ = nx.max_weight_clique(graph, weight=None)
    return sorted(clique)


@dataclass(frozen=True)
class PromptVerdict:
    flagged: bool  # a clique of ≥ m near-identical generations
    clique: list[int]
    best_generation: int  # the generation closest to the prompt's training image(s)
    best_l2: float
    best_image: int  # which of the training images (copies) it is closest to
    extracted: bool  # flagged and that generation is within ℓ2 ≤ verify_l2 of a training image


def generate_and_filter(
    generations: np.ndarray,
    training_images: np.ndarray,
    *,
    tau: float,
    min_clique: int,
    verify_l2: float = 0.15,
    grid: int = 4,
) -> PromptVerdict:
    """One prompt's verdict: tiled ℓ2 between its G generations, a clique ≥ m flags it, and a flagged
    generation within ℓ2 ≤ 0.15 of the caption's training image(s) counts as extracted."""
    clique = largest_clique(tiled_l2(generations, generations, grid), tau)
    flagged = len(clique) >= min_clique
    d = pairwise_l2(generations[clique] if flagged else generations, training_images)
    pool = clique if flagged else list(range(len(generations)))
    best, image = np.unravel_index(int(np.argmin(d)), d.shape)
    best_l2 = float(d[best, image])
    return PromptVerdict(flagged, clique, pool[best], best_l2, int(image), flagged and best_l2 <= verify_l2)
