"""Caption normalisation and shingling, shared by MinHash and exact caption hashing."""

from __future__ import annotations

import re
import unicodedata

_NON_WORD = re.compile(r"[^\w\s]+", re.UNICODE)
_SPACE = re.compile(r"\s+")


def normalize_caption(text: str) -> str:
    """NFKC, case-folded, punctuation removed, whitespace collapsed: variants that differ only there agree."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _NON_WORD.sub(" ", text.replace("_", " "))
    return _SPACE.sub(" ", text).strip()


def shingles(normalized: str, ngram: int, char_ngrams: bool = False) -> list[str]:
    """Word n-grams (or character n-grams) of a normalised caption.

    A caption shorter than ``ngram`` becomes one shingle of all of it, so short captions still hash;
    an empty caption has no shingles (callers keep those out of the index).
    """
    if char_ngrams:
        if len(normalized) <= ngram:
            return [normalized] if normalized else []
        return [normalized[i : i + ngram] for i in range(len(normalized) - ngram + 1)]
    words = normalized.split()
    if len(words) <= ngram:
        return [" ".join(words)] if words else []
    return [" ".join(words[i : i + ngram]) for i in range(len(words) - ngram + 1)]
