"""Every bad input of docs/RELIABILITY.md gets exactly one manifest row with the expected reason; no crash."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from memguard.common.cache import Cache
from memguard.corpus.sample import Reason
from memguard.corpus.spec import CorpusSpec, open_corpus
from memguard.corpus.validate import Invalid, Limits, decode_image
from memguard.dedup.params import DedupParams
from memguard.dedup.pipeline import run_dedup
from tests.conftest import add_member, count_units, encode, random_rgb

GOOD = encode(random_rgb(0), "PNG")


def _exif_jpeg(orientation: int) -> bytes:
    image = Image.fromarray(np.zeros((16, 32, 3), np.uint8) + 128)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", exif=exif.tobytes())


def _animated(fmt: str) -> bytes:
    frames = [random_rgb(i, 16) for i in range(3)]
    out = io.BytesIO()
    frames[0].save(out, format=fmt, save_all=True, append_images=frames[1:], duration=50)
    return out.getvalue()


def _palette_transparent() -> bytes:
    image = Image.new("P", (16, 16), 0)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.info["transparency"] = 0
    return encode(image, "PNG", transparency=0)


# (key, members) → expected status/reason of the single manifest row for that key.
CASES: list[tuple[str, dict[str, bytes], str]] = [
    ("trunc_jpeg", {"jpg": encode(random_rgb(1, 64), "JPEG")[:300], "txt": b"x y"}, Reason.TRUNCATED),
    ("trunc_png", {"png": encode(random_rgb(2, 64))[:400], "txt": b"x y"}, Reason.TRUNCATED),
    ("zero_bytes", {"jpg": b"", "txt": b"x y"}, Reason.UNDECODABLE),
    ("not_image", {"jpg": b"<html>not an image</html>", "txt": b"x y"}, Reason.UNDECODABLE),
    ("cmyk", {"jpg": encode(Image.new("CMYK", (16, 16), (0, 50, 100, 0)), "JPEG"), "txt": b"cmyk"}, "valid"),
    ("sixteen_bit", {"png": encode(Image.fromarray(np.full((16, 16), 40000, np.uint16))), "txt": b"16 bit"}, "valid"),
    ("palette_trns", {"png": _palette_transparent(), "txt": b"palette"}, "valid"),
    ("rgba", {"png": encode(Image.new("RGBA", (16, 16), (255, 0, 0, 0))), "txt": b"rgba"}, "valid"),
    ("la", {"png": encode(Image.new("LA", (16, 16), (10, 128))), "txt": b"la"}, "valid"),
    ("gray", {"png": encode(Image.new("L", (16, 16), 77)), "txt": b"gray"}, "valid"),
    *[(f"exif{o}", {"jpg": _exif_jpeg(o), "txt": f"exif {o}".encode()}, "valid") for o in range(2, 9)],
    ("anim_gif", {"gif": _animated("GIF"), "txt": b"gif"}, Reason.ANIMATED),
    ("anim_webp", {"webp": _animated("WEBP"), "txt": b"webp"}, Reason.ANIMATED),
    ("latin1", {"png": GOOD, "txt": "caf\xe9".encode("latin-1")}, Reason.CAPTION_NOT_UTF8),
    ("nul", {"png": GOOD, "txt": b"a\x00b"}, Reason.CAPTION_CONTROL_CHARS),
    ("empty_caption", {"png": GOOD, "txt": b""}, Reason.EMPTY_CAPTION),
    ("space_caption", {"png": GOOD, "txt": b" \t\n "}, Reason.EMPTY_CAPTION),
    ("huge_caption", {"png": GOOD, "txt": b"word " * 200_000}, Reason.CAPTION_TOO_LONG),
    ("no_image", {"txt": b"caption only"}, Reason.INCOMPLETE_SAMPLE),
    ("no_caption", {"png": GOOD}, Reason.INCOMPLETE_SAMPLE),
    ("bad_json", {"png": GOOD, "txt": b"ok", "json": b"{not json"}, Reason.BAD_META),
    ("unicode_ключ", {"png": GOOD, "txt": b"unicode key"}, "valid"),
    ("k" * 150, {"png": GOOD, "txt": b"long key"}, "valid"),
    ("k" * 250, {"png": GOOD, "txt": b"too long key"}, Reason.BAD_KEY),
    ("upper_ext", {"JPEG": encode(random_rgb(5), "JPEG"), "txt": b"upper"}, "valid"),
    ("webp", {"webp": encode(random_rgb(6), "WEBP"), "txt": b"webp"}, "valid"),
    ("black", {"png": encode(Image.new("RGB", (16, 16))), "txt": b"all black"}, "valid"),
    ("bomb", {"png": encode(Image.new("1", (12_000, 12_000))), "txt": b"bomb"}, Reason.TOO_LARGE),
]


def _write_bad_shard(path: Path) -> dict[str, str]:
    """Writes CASES plus key-level traps; returns the expected reason per (key, occurrence) row label."""
    expected: dict[str, str] = {}
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for key, members, want in CASES:
            for ext, data in members.items():
                add_member(tar, f"{key}.{ext}", data)
            expected[key] = str(want)
        # Duplicate keys: adjacent (same member names twice in a row) and not adjacent.
        for _ in range(2):
            add_member(tar, "dup_adjacent.png", GOOD)
            add_member(tar, "dup_adjacent.txt", b"dup")
        add_member(tar, "dup_far.png", GOOD)
        add_member(tar, "dup_far.txt", b"dup far")
        add_member(tar, "between.png", GOOD)
        add_member(tar, "between.txt", b"between")
        add_member(tar, "dup_far.png", GOOD)
        add_member(tar, "dup_far.txt", b"dup far again")
        add_member(tar, "a.b.jpg", GOOD)  # webdataset: key "a", extension "b.jpg"
        add_member(tar, "a.b.txt", b"dotted")
        add_member(tar, "../escape.png", GOOD)
        add_member(tar, "../escape.txt", b"traversal")
        add_member(tar, "evil.pyd", b"\x80\x04pickle")
        add_member(tar, "evil.pth", b"\x80\x04pickle")
        add_member(tar, "noextension", b"data")
        link = tarfile.TarInfo("symlink.png")
        link.type, link.linkname = tarfile.SYMTYPE, "between.png"
        tar.addfile(link)
        hard = tarfile.TarInfo("hardlink.png")
        hard.type, hard.linkname = tarfile.LNKTYPE, "between.png"
        tar.addfile(hard)
        dev = tarfile.TarInfo("device.png")
        dev.type = tarfile.CHRTYPE
        tar.addfile(dev)
    return expected


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], list[dict[str, object]], int]:
    root = tmp_path_factory.mktemp("bad")
    shard = root / "shards" / "bad-000000.tar"
    shard.parent.mkdir()
    expected = _write_bad_shard(shard)
    # Truncated shards: cut mid-member (inside data) and mid-header.
    png = encode(random_rgb(10))
    member_blocks = 512 + (len(png) + 511) // 512 * 512  # header + padded data of the image member
    for name, cut in (
        ("cut-member", 2 * (member_blocks + 1024) + 512 + 100),
        ("cut-header", 2 * (member_blocks + 1024) + 200),
    ):
        good = root / f"{name}.tar"
        with tarfile.open(good, "w") as tar:
            for i in range(3):
                add_member(tar, f"{name}{i}.png", png)
                add_member(tar, f"{name}{i}.txt", b"truncated shard sample")
        (root / "shards" / f"{name}-000000.tar").write_bytes(good.read_bytes()[:cut])
    (root / "shards" / "not-a-tar-000000.tar").write_bytes(b"garbage" * 10)
    independent = sum(count_units(p) for p in (root / "shards").glob("*.tar") if "not-a-tar" not in p.name) + 1
    corpus = open_corpus(CorpusSpec(kind="shards", path=str(root / "shards")), root / "cache", Limits())
    result = run_dedup(corpus, DedupParams(shard_size=100), out_dir=root / "out", cache=Cache(root / "cache"))
    rows = pq.read_table(result.manifest).to_pylist()
    return root, expected, rows, independent


def test_each_bad_sample_has_one_row_with_its_reason(bad_run) -> None:  # type: ignore[no-untyped-def]
    _, expected, rows, _ = bad_run
    bad_shard_rows = [r for r in rows if r["source"].endswith("bad-000000.tar")]
    for key, want in expected.items():
        mine = [r for r in bad_shard_rows if r["key"] == key]
        assert len(mine) == 1, (key, mine)
        # "valid": read and decoded (kept, or a duplicate of a valid sample); otherwise the rejection reason.
        got = mine[0]["reason"] if mine[0]["status"] == "rejected" else "valid"
        assert got == want, (key, mine[0])


def test_key_level_traps(bad_run) -> None:  # type: ignore[no-untyped-def]
    _, _, rows, _ = bad_run
    by_key: dict[str, list[dict[str, object]]] = {}
    for r in rows:
        by_key.setdefault(str(r["key"]), []).append(r)
    for key in ("dup_adjacent", "dup_far"):
        assert [r["reason"] for r in by_key[key]][1:] == [str(Reason.DUPLICATE_KEY)]
        assert by_key[key][0]["status"] != "rejected"
    assert by_key["a"][0]["reason"] == str(Reason.INCOMPLETE_SAMPLE)
    assert by_key["../escape"][0]["reason"] == str(Reason.BAD_KEY)
    assert {by_key[k][0]["reason"] for k in ("evil.pyd", "evil.pth")} == {str(Reason.UNSAFE_MEMBER)}
    assert by_key["noextension"][0]["reason"] == str(Reason.UNKNOWN_MEMBER)
    assert {by_key[k][0]["reason"] for k in ("symlink.png", "hardlink.png", "device.png")} == {
        str(Reason.NOT_REGULAR_FILE)
    }


def test_truncated_and_unreadable_shards_are_recorded_with_offsets(bad_run) -> None:  # type: ignore[no-untyped-def]
    _, _, rows, _ = bad_run
    for name in ("cut-member", "cut-header"):
        mine = [r for r in rows if name in str(r["source"])]
        truncated = [r for r in mine if r["reason"] == str(Reason.SHARD_TRUNCATED)]
        assert len(truncated) == 1 and int(truncated[0]["offset"]) > 0, mine
        assert sum(r["status"] != "rejected" for r in mine) == 2  # the two samples before the cut survive
    unreadable = [r for r in rows if "not-a-tar" in str(r["source"])]
    assert [r["reason"] for r in unreadable] == [str(Reason.SHARD_UNREADABLE)]


def test_nothing_lost(bad_run) -> None:  # type: ignore[no-untyped-def]
    root, _, rows, independent = bad_run
    # kept + duplicate + rejected = units counted from raw tar headers (+1: the shard that is no tar).
    assert len(rows) == independent
    statuses = {r["status"] for r in rows}
    assert statuses <= {"kept", "duplicate", "rejected"}
    kept = [r["key"] for r in rows if r["status"] == "kept"]
    from memguard.corpus.readers import read_shards

    written = [s.key for s in read_shards(str(root / "out" / "shards"))]
    assert sorted(written) == sorted(kept)


def test_decode_normalises_modes_and_orientation() -> None:
    rotated = decode_image(_exif_jpeg(6))  # 32x16 stored, orientation 6 = rotate 90°
    assert rotated.shape == (32, 16, 3)
    flipped = decode_image(_exif_jpeg(2))
    assert flipped.shape == (16, 32, 3)
    white = decode_image(encode(Image.new("RGBA", (16, 16), (255, 0, 0, 0))))
    assert (white == 255).all()  # fully transparent red composited on white
    sixteen = decode_image(encode(Image.fromarray(np.full((16, 16), 65535, np.uint16))))
    assert (sixteen == 255).all()
    with pytest.raises(Invalid) as err:
        decode_image(encode(random_rgb(0, 200)), Limits(max_pixels=10_000))
    assert err.value.reason == Reason.TOO_LARGE
