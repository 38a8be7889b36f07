"""Mutation fuzz of the one image decoder (and the tar reader): how many inputs, how many escapes.

    python bench/fuzz_decode.py [--seconds 60] [--seed 0] [--save-crashers DIR]

Seeds are small valid images of every allowed format (JPEG with an EXIF block, PNG, WebP, TIFF, GIF,
BMP); each input is a seed with 1-8 random byte flips, insertions, deletions or truncations. The decoder
must turn every input into pixels or an ``Invalid`` with a reason: anything else escaping is a crash of
the run it would be part of. Inputs the per-sample boundary had to catch (exception types other than the
ones Pillow documents) are counted by type; ``--save-crashers`` keeps one input of each type.
The reader half wraps mutated images (and mutated tar bytes) in shards and reads them.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tarfile
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from memguard.corpus.readers import read_tar
from memguard.corpus.validate import Invalid, decode_image

DOCUMENTED = ("OSError", "SyntaxError", "ValueError", "EOFError", "UnidentifiedImageError", "DecompressionBombError")


def seeds() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    out: dict[str, bytes] = {}
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation
    exif[0x010F] = "memguard"  # make
    for fmt, kw in (
        ("JPEG", {"exif": exif.tobytes(), "quality": 80}),
        ("PNG", {}),
        ("WEBP", {"quality": 80}),
        ("TIFF", {"exif": exif.tobytes()}),
        ("GIF", {}),
        ("BMP", {}),
    ):
        buf = io.BytesIO()
        image.save(buf, format=fmt, **kw)
        out[fmt] = buf.getvalue()
    return out


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        op = int(rng.integers(0, 4))
        pos = int(rng.integers(0, max(1, len(buf))))
        if op == 0 and buf:
            buf[pos % len(buf)] = int(rng.integers(0, 256))
        elif op == 1:
            buf[pos:pos] = bytes(rng.integers(0, 256, int(rng.integers(1, 16)), dtype=np.uint8))
        elif op == 2 and buf:
            del buf[pos : pos + int(rng.integers(1, 16))]
        elif op == 3:
            del buf[pos:]
    return bytes(buf)


def fuzz_decoder(seconds: float, seed: int, save: Path | None) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    bases = seeds()
    names = sorted(bases)
    tried, escapes, caught = 0, Counter[str](), Counter[str]()
    outcomes = Counter[str]()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        fmt = names[int(rng.integers(0, len(names)))]
        data = mutate(bases[fmt], rng)
        tried += 1
        try:
            decode_image(data)
            outcomes["decoded"] += 1
        except Invalid as err:
            outcomes[str(err.reason)] += 1
            kind = err.detail.split(":", 1)[0]
            if err.__cause__ is not None and type(err.__cause__).__name__ not in DOCUMENTED:
                kind = type(err.__cause__).__name__
                caught[f"{fmt}:{kind}"] += 1
                if save is not None and caught[f"{fmt}:{kind}"] == 1:
                    save.mkdir(parents=True, exist_ok=True)
                    (save / f"{fmt.lower()}-{kind}.bin").write_bytes(data)
        except Exception as err:  # an escape: the run would crash
            escapes[f"{fmt}:{type(err).__name__}"] += 1
    return {
        "inputs": tried,
        "escapes": sum(escapes.values()),
        "escapes_by_type": dict(escapes),
        "caught_beyond_documented": dict(caught),
        "outcomes": dict(outcomes),
    }


def fuzz_reader(seconds: float, seed: int) -> dict[str, object]:
    """Shards of mutated images, and mutated shard bytes, read end to end."""
    rng = np.random.default_rng(seed + 1)
    bases = list(seeds().values())
    tried, escapes = 0, Counter[str]()
    deadline = time.perf_counter() + seconds
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.tar"
        while time.perf_counter() < deadline:
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for i in range(3):
                    for name, data in ((f"k{i}.jpg", mutate(bases[i % len(bases)], rng)), (f"k{i}.txt", b"a caption")):
                        info = tarfile.TarInfo(name)
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
            raw = buf.getvalue()
            path.write_bytes(mutate(raw, rng) if rng.random() < 0.5 else raw)
            tried += 1
            try:
                for item in read_tar(str(path)):
                    image = getattr(item, "image", None)
                    if image is not None:
                        with contextlib.suppress(Invalid):
                            decode_image(image)
            except Exception as err:
                escapes[type(err).__name__] += 1
    return {"shards": tried, "escapes": sum(escapes.values()), "escapes_by_type": dict(escapes)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0, help="per half (decoder, reader)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-crashers", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # Pillow warns on every corrupt EXIF block; the counts are the report
    report = {
        "seconds_each": args.seconds,
        "seed": args.seed,
        "decoder": fuzz_decoder(args.seconds, args.seed, args.save_crashers),
        "reader": fuzz_reader(args.seconds, args.seed),
    }
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
