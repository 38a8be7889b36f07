"""The record every reader yields (``Sample``, or a ``Rejection`` with a reason from the closed list).

Downstream of ingest the dedup steps pass arrays aligned with the valid samples (their ``sample_index``
in ``units.parquet``, see ``memguard.dedup.stages.map``), and the decide step hands ``memguard.dedup.decide.decision.Decision``
to the outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


@dataclass(frozen=True)
class Sample:
    """One image-caption pair as read from a corpus.

    key: unique across the corpus (readers reject repeats as ``duplicate_key``).
    caption: decoded, validated text.
    image: the encoded bytes exactly as stored (never re-encoded, so kept samples stay bit-identical).
    source: the shard or folder the sample came from.
    meta: the sample's JSON sidecar (img2dataset writes url, width, ...), plus reader extras.
    offset: byte offset of the sample's first member header in its tar (-1: not read from a tar).
    """

    key: str
    caption: str
    image: bytes
    source: str
    image_ext: str = "jpg"
    meta: dict[str, Any] = field(default_factory=dict)
    offset: int = -1


class Reason(StrEnum):
    """Why an input unit was rejected. Closed list: every rejection carries one of these."""

    TRUNCATED = "truncated"  # image bytes end early
    UNDECODABLE = "undecodable"  # not an image Pillow can decode, zero bytes
    FORMAT_NOT_ALLOWED = "format_not_allowed"  # decodes, but not an allow-listed format
    TOO_LARGE = "too_large"  # pixel count above the limit (checked before decoding)
    TOO_SMALL = "too_small"
    EXTREME_ASPECT = "extreme_aspect"  # long side over max_aspect times the short one (checked before decoding)
    ANIMATED = "animated"  # more than one frame: which frame is "the" image is ambiguous
    BAD_MODE = "bad_mode"  # a pixel mode we cannot convert to RGB faithfully
    EMPTY_CAPTION = "empty_caption"
    CAPTION_NOT_UTF8 = "caption_not_utf8"
    CAPTION_CONTROL_CHARS = "caption_control_chars"  # NUL and other C0 controls
    CAPTION_TOO_LONG = "caption_too_long"
    DUPLICATE_KEY = "duplicate_key"
    INCOMPLETE_SAMPLE = "incomplete_sample"  # image or caption member missing
    BAD_KEY = "bad_key"  # path traversal, empty, too long
    BAD_META = "bad_meta"  # a .json sidecar that is not a JSON object; an unusable metadata row or file
    NOT_DOWNLOADED = "not_downloaded"  # an img2dataset parquet row whose status is not success
    NOT_REGULAR_FILE = "not_regular_file"  # symlink, hardlink, device member in a tar
    UNSAFE_MEMBER = "unsafe_member"  # .pyd/.pth/.pkl and friends: pickles are never loaded
    UNKNOWN_MEMBER = "unknown_member"  # a member with no extension we read
    SHARD_TRUNCATED = "shard_truncated"  # tar ends mid-header or mid-member; rows carry the offset
    SHARD_UNREADABLE = "shard_unreadable"  # not a tar at all / cannot be opened
    UNREADABLE = "unreadable"  # a file or folder the reader may not open (permissions, I/O error)
    READ_ERROR = "read_error"  # anything else that went wrong reading one unit (the exception in detail)
    NON_FINITE_EMBEDDING = "non_finite_embedding"  # an embedder returned NaN/Inf
    NO_EMBEDDING = "no_embedding"  # dedup.image.embeddings has no vector for the key, or more than one


@dataclass(frozen=True)
class Rejection:
    """One input unit that did not become a Sample. ``key`` may be empty when none could be read."""

    key: str
    source: str
    reason: Reason
    detail: str = ""
    offset: int = -1  # byte offset in the shard, for units that are not whole samples


def printable(name: str) -> str:
    """A name as valid UTF-8 text: tarfile and os hand back bytes that are not UTF-8 as surrogate escapes,
    which pyarrow and ``str.encode`` refuse; they are recorded backslash-escaped instead (``\\xff``)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
