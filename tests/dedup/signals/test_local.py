"""Local features with geometric verification, on real photographs (scikit-learn's two sample photos):
the edits the global descriptor misses verify, different photographs, small tiles of one photograph,
flat images and a shared logo do not."""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw, ImageOps
from sklearn.datasets import load_sample_image

from memguard.common.cache import Cache
from memguard.common.config import ConfigError
from memguard.corpus.sample import Sample
from memguard.corpus.spec import CorpusSpec, open_corpus
from memguard.corpus.writer import ShardWriter
from memguard.dedup.config import dedup_params, dedup_values
from memguard.dedup.executor import ExecutorConfig
from memguard.dedup.params import DedupParams
from memguard.dedup.pipeline import run_dedup
from memguard.dedup.signals.local import Verifier, scored_as_candidates, verified_inliers
from memguard.dedup.signals.local_candidates import vote_pairs
from memguard.dedup.signals.local_features import keypoint_counts, local_features, unpack
from memguard.dedup.signals.local_params import FeatureParams, LocalParams
from memguard.dedup.signals.neighbors import IndexParams, Widen, neighbor_pairs
from memguard.dedup.signals.pairs import PairTable
from memguard.dedup.stages.map import MapParams, map_corpus
from tests.dedup.layouts import Pair, write_folder

PARAMS = LocalParams()
FEATURES = PARAMS.features


def _photo(name: str) -> Image.Image:
    image = Image.fromarray(load_sample_image(name))
    return image.resize((256, round(256 * image.height / image.width)), Image.Resampling.LANCZOS)


CHINA, FLOWER = _photo("china.jpg"), _photo("flower.jpg")


def _verifies(a: Image.Image, b: Image.Image, params: LocalParams = PARAMS) -> bool:
    fa, fb = local_features([np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB"))], params.features)
    ua, ub = unpack(fa, params.features), unpack(fb, params.features)
    return bool(verified_inliers(ua, ub, params) or verified_inliers(ub, ua, params))


def _pasted(image: Image.Image, share: float) -> Image.Image:
    """In a screenshot-like canvas (a title bar, lines of text), taking ``share`` of its area."""
    w, h = image.size
    canvas = Image.new("RGB", (round(w / share**0.5), round(h / share**0.5)), (236, 236, 236))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 0, canvas.width, 14), fill=(40, 60, 120))
    for y in range(20, canvas.height, 16):
        draw.text((4, y), "share if you agree", fill=(20, 20, 20))
    canvas.paste(image, (canvas.width - w - 3, canvas.height - h - 3))
    return canvas


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


EDITS = {
    "rotate 12° filled": lambda im: im.rotate(12, resample=Image.Resampling.BICUBIC, fillcolor=(0, 128, 255)),
    "crop 60% off-centre": lambda im: im.crop((0, 10, round(im.width * 0.77), 10 + round(im.height * 0.78))),
    "pasted at 55%": lambda im: _pasted(im, 0.55),
    "border 12% red": lambda im: ImageOps.expand(im, border=round(im.width * 0.12), fill=(200, 0, 0)),
    "mirrored + JPEG 40": lambda im: _jpeg(ImageOps.mirror(im), 40),
    "resized to 40%": lambda im: im.resize((round(im.width * 0.4), round(im.height * 0.4)), Image.Resampling.BICUBIC),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_edits_the_global_descriptor_misses_verify(edit: str) -> None:
    assert _verifies(EDITS[edit](CHINA), CHINA)
    assert _verifies(EDITS[edit](FLOWER), FLOWER)


def test_different_photographs_do_not_verify() -> None:
    assert not _verifies(CHINA, FLOWER)
    assert not _verifies(EDITS["pasted at 55%"](CHINA), FLOWER)


def test_a_small_tile_of_a_photograph_is_not_its_copy() -> None:
    """A tile of a fifth of the area matches its photograph exactly, but covers under a third of it."""
    tile = CHINA.crop((60, 40, 60 + 114, 40 + 76)).resize((256, 171), Image.Resampling.BICUBIC)
    assert not _verifies(tile, CHINA)
    loose = LocalParams(min_overlap=0.05, features=FeatureParams(keypoints=512))
    assert _verifies(tile, CHINA, loose)  # the match is real: only the coverage rule keeps them apart


def test_flat_images_have_no_keypoints_and_never_verify() -> None:
    ramp = np.tile(np.linspace(40, 200, 256, dtype=np.float32), (171, 1))
    gradient = Image.fromarray(np.stack([ramp, ramp * 0.5, 255 - ramp], axis=2).astype(np.uint8))
    other = ImageOps.mirror(gradient).rotate(3)
    assert len(unpack(local_features([np.asarray(gradient)], FEATURES)[0], FEATURES).points) < PARAMS.min_inliers
    assert not _verifies(gradient, other)
    assert not _verifies(gradient, EDITS["crop 60% off-centre"](gradient))


def test_a_shared_logo_does_not_join_two_photographs() -> None:
    """The same textured badge on two different photographs: its keypoints match exactly, but the
    matches gather on the badge, not over what the two images share."""
    rng = np.random.default_rng(0)
    badge = Image.fromarray(rng.integers(0, 256, (44, 44, 3), dtype=np.uint8))
    ImageDraw.Draw(badge).text((6, 14), "NEWS", fill=(255, 255, 255))
    a, b = CHINA.copy(), FLOWER.resize(CHINA.size)
    a.paste(badge, (200, 120))
    b.paste(badge, (200, 120))
    assert not _verifies(a, b)


def test_the_verifier_raises_verified_pairs_and_caps_textured_pairs_that_fail() -> None:
    images = [np.asarray(CHINA), np.asarray(EDITS["pasted at 55%"](CHINA)), np.asarray(FLOWER)]
    verifier = Verifier(local_features(images, FEATURES), PARAMS)
    left, right = np.array([0, 0, 1, 0, 0]), np.array([1, 2, 2, 2, 0])
    sims = np.array([0.4, 0.5, 0.6, 0.99, 1.0], np.float32)
    combined = verifier.combined(sims, left, right)
    assert combined[0] >= PARAMS.verified_similarity  # pasted copy: verified
    assert combined[1:3].tolist() == pytest.approx([0.5, 0.6])  # different photographs stay where they were
    assert combined[3] == pytest.approx(PARAMS.unverified_cap)  # globally alike, textured, not verified
    assert combined[4] == 1.0  # at or above trust_global: not verified


def test_a_pair_table_overrides_only_the_pairs_it_holds() -> None:
    table = PairTable.of(np.array([[0, 3], [2, 1]]), np.array([0.99, 0.5]), 4)
    out = table.override(np.array([3, 1, 0, 2]), np.array([0, 2, 1, 2]), np.array([0.1, 0.2, 0.3, 1.0]))
    assert out.tolist() == pytest.approx([0.99, 0.5, 0.3, 1.0])


def test_local_params_travel_through_the_config_vocabulary() -> None:
    params = DedupParams(local=LocalParams(features=FeatureParams(keypoints=64), min_overlap=0.4))
    assert dedup_params(dedup_values(params)) == params
    values = dedup_values(DedupParams())
    values["image"]["local"]["features"]["keypoints"] = 2
    with pytest.raises(ConfigError, match="keypoints"):
        dedup_params(values)


def test_image_only_dedup_finds_edited_copies_only_with_verification(tmp_path, cache_dir) -> None:  # type: ignore[no-untyped-def]
    """End to end through the stages: two photographs and their pasted, rotated and cropped copies,
    each with its own caption. The global descriptor alone misses copies; the default puts every copy in
    its photograph's cluster and keeps the two photographs apart."""
    edits = {"china": ("pasted at 55%", "rotate 12° filled", "crop 60% off-centre"),
             "flower": ("rotate 12° filled", "crop 60% off-centre", "border 12% red")}  # fmt: skip
    pairs = []
    for name, image in (("china", CHINA), ("flower", FLOWER)):
        pairs.append(Pair(name, _png(image), "png", f"a photograph called {name}"))
        pairs += [Pair(f"{name}_{e.split()[0]}", _png(EDITS[e](image)), "png", f"caption {e}") for e in edits[name]]
    corpus = open_corpus(CorpusSpec(kind="folder", path=str(write_folder(tmp_path / "photos", pairs, layout="txt"))), cache_dir)
    clusters = {}
    for local in (True, False):
        params = DedupParams(write_shards=False, caption_enabled=False, local=LocalParams(enabled=local))
        result = run_dedup(corpus, params, out_dir=tmp_path / f"out_{local}", cache=Cache(tmp_path / "cache"))
        rows = pq.read_table(result.manifest).to_pylist()
        assert {r["status"] for r in rows} <= {"kept", "duplicate"}
        clusters[local] = {_name(r["key"]): _name(r["duplicate_of"] or r["key"]) for r in rows}
    for name in ("china", "flower"):
        members = [k for k in clusters[True] if k.startswith(name)]
        assert len(members) == 4 and len({clusters[True][k] for k in members}) == 1
        assert len({clusters[False][k] for k in members}) > 1  # the global descriptor alone splits them
    assert clusters[True]["china"] != clusters[True]["flower"]


def _name(key: str) -> str:
    return key.rsplit("__", 1)[-1]  # the folder reader's key is the path with "__" for "/"


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def test_images_below_the_minimum_side_carry_no_keypoints() -> None:
    small = np.asarray(CHINA.resize((64, 43)))
    rows = local_features([small, np.asarray(CHINA)], FEATURES)
    assert len(unpack(rows[0], FEATURES).points) == 0 and len(unpack(rows[1], FEATURES).points) >= PARAMS.textured_keypoints
    verifier = Verifier(rows, PARAMS)
    assert verifier.combined(np.array([0.98], np.float32), np.array([0]), np.array([1]))[0] == pytest.approx(0.98)


def test_keypoint_counts_match_the_unpacked_rows() -> None:
    images = [np.asarray(CHINA), np.asarray(CHINA.resize((64, 43))), np.zeros((128, 128, 3), np.uint8)]
    rows = local_features(images, FEATURES)
    counts = keypoint_counts(rows, FEATURES, block=2)
    assert counts.tolist() == [len(unpack(r, FEATURES).points) for r in rows]
    assert counts[0] > 0 and counts[1] == counts[2] == 0


def test_the_joined_map_holds_each_samples_own_features(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Three shards of photographs, small copies (no keypoints) and a key repeated in a later shard
    (dropped at the join): each valid sample's joined row is the features of its own image."""
    images = {"china": CHINA, "tiny": CHINA.resize((60, 40)), "flower": FLOWER, "rot": EDITS["rotate 12° filled"](FLOWER),
              "tiny2": FLOWER.resize((50, 33)), "paste": EDITS["pasted at 55%"](CHINA)}  # fmt: skip
    keys = ["china", "tiny", "flower", "rot", "china", "tiny2", "paste"]  # the second "china" repeats a key
    with ShardWriter(tmp_path / "shards", max_count=3) as writer:
        for n, key in enumerate(keys):
            writer.write(Sample(key, f"caption {n}", _png(images[key]), "test", "png"))
    corpus = open_corpus(CorpusSpec(kind="shards", path=str(tmp_path / "shards")), tmp_path / "corpus_cache")
    defaults = DedupParams(local=LocalParams(enabled=True))
    params = MapParams(corpus.limits, corpus.captions, defaults.minhash, defaults.embedder, defaults.local.features if defaults.local.enabled else None)
    mapped = map_corpus(corpus, params, cache=Cache(tmp_path / "cache"), executor=ExecutorConfig(workers=1))
    valid = mapped.valid_units.column("key").to_pylist()
    assert valid == ["china", "tiny", "flower", "rot", "tiny2", "paste"] and mapped.parts == 3
    assert [int(r) for r in mapped.feature_rows] == [0, -1, 1, 2, -1, 3]
    expected = local_features([np.asarray(images[k].convert("RGB")) for k in valid], defaults.local.features)
    for sample, row in enumerate(mapped.feature_rows):
        if row >= 0:
            assert np.array_equal(mapped.features[row], expected[sample])


def test_descriptor_votes_find_a_pasted_copy_and_nothing_without_keypoints() -> None:
    """(In a corpus of three, unrelated photographs may gather votes too: verification decides.)"""
    images = [np.asarray(CHINA), np.asarray(FLOWER), np.asarray(EDITS["pasted at 55%"](CHINA)), np.asarray(CHINA.resize((60, 40)))]
    rows = local_features(images, FEATURES)
    present = keypoint_counts(rows, FEATURES) > 0
    feature_rows = np.where(present, np.cumsum(present) - 1, -1)
    pairs = vote_pairs(rows[present], feature_rows, PARAMS).tolist()
    assert [0, 2] in pairs and all(3 not in p for p in pairs)
    assert vote_pairs(rows[:0], np.full(3, -1), PARAMS).shape == (0, 2)


def test_the_search_widens_only_between_samples_with_keypoints() -> None:
    """Pairs between min_sim and the floor are kept only when both samples are widened rows."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(1, 16))
    vectors = np.concatenate([base + rng.normal(scale=s, size=(1, 16)) for s in (0.0, 0.9, 0.9, 0.9)])
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    params = IndexParams(k=3, min_sim=0.9)
    plain = {tuple(p) for p in neighbor_pairs(vectors, params)[0].tolist()}
    rows = np.array([True, True, False, True])
    widened, sims = neighbor_pairs(vectors, params, widen=Widen(rows, floor=-1.0))
    found = {tuple(p) for p in widened.tolist()}
    assert plain < found
    for (i, j), sim in zip(widened.tolist(), sims, strict=True):
        assert sim >= 0.9 or (rows[i] and rows[j])
    assert (0, 1) in found and (0, 3) in found and (1, 3) in found


def test_pairs_the_candidates_lack_are_verified_where_they_are_scored() -> None:
    """The cluster pass scores pairs the candidate search never listed: they get the same combined
    similarity (two textured photographs alike globally capped, a pasted copy raised)."""
    images = [np.asarray(CHINA), np.asarray(CHINA), np.asarray(FLOWER), np.asarray(EDITS["pasted at 55%"](CHINA))]
    verifier = Verifier(local_features(images, FEATURES), PARAMS)
    known = PairTable.of(np.array([[0, 1]]), np.array([0.5]), 4)
    left, right = np.array([0, 0, 0]), np.array([1, 2, 3])
    out = scored_as_candidates(np.array([0.99, 0.99, 0.4], np.float32), left, right, known=known, verifier=verifier)
    assert out[0] == pytest.approx(0.5)  # as the candidates scored it
    assert out[1] == pytest.approx(PARAMS.unverified_cap)
    assert out[2] >= PARAMS.verified_similarity
    assert scored_as_candidates(np.array([0.99], np.float32), left[:1], right[1:2], known=None, verifier=None)[0] == pytest.approx(0.99)
