"""Decisions: the pair rule and clustering, SemDeDup, evaluation against ground truth."""
