"""The ANN index: exact results against brute force, IVF recall, filters, files, ensure_index."""

from __future__ import annotations

import numpy as np
import pytest

from earshot.index import ann
from earshot.index.ann import AnnIndexError, AnnParams, build, load
from earshot.index.ann_sync import ensure_index
from earshot.testing.vectors import clustered_unit_vectors

DIM = 300


def unit_vectors(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)  # (n, dim)


def brute_force(queries, vectors, ids, k):
    """The slow, obvious reference: every inner product, sorted."""
    scores = queries @ vectors.astype(np.float32).T  # (q, n)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), ids[order]


def recall(found, truth) -> float:
    return float(
        np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])
    )


def small_ivf(n=3000, seed=0):
    ids = np.arange(1, n + 1)
    vectors = unit_vectors(n, seed)
    return ids, vectors, build(ids, vectors, 1, 0, params=AnnParams("ivf", nlist=16, nprobe=4))


@pytest.fixture(scope="module")
def clustered():
    """The benchmark's synthetic set: 40k collection vectors and 200 held-out queries."""
    vectors = clustered_unit_vectors(40_000)
    queries = clustered_unit_vectors(200, stream=1).astype(np.float32)
    return np.arange(1, len(vectors) + 1), vectors, queries


class FakeCatalogue:
    """What ensure_index needs of the catalogue, counting the reads."""

    def __init__(self, n: int, seed: int = 0):
        self.vectors = dict(zip(range(1, n + 1), unit_vectors(n, seed), strict=True))
        self.generation, self.removals, self.next_id, self.reads = 1, 0, n + 1, []

    def add(self, n: int, seed: int) -> None:
        for v in unit_vectors(n, seed):
            self.vectors[self.next_id] = v
            self.next_id += 1
        self.generation += 1

    def remove(self, ids) -> None:
        for i in ids:
            del self.vectors[i]
        self.generation += 1
        self.removals += len(ids)

    def load_vectors(self, since_id: int):
        self.reads.append(since_id)
        ids = np.array(sorted(i for i in self.vectors if i > since_id), dtype=np.int64)
        return ids, np.array([self.vectors[i] for i in ids], dtype=np.float16).reshape(-1, DIM)

    def ensure(self, path, **kwargs):
        top = max(self.vectors, default=0)
        return ensure_index(path, self.generation, self.removals, top, self.load_vectors, **kwargs)


# --- search -------------------------------------------------------------------------------------


def test_exact_equals_brute_force():
    ids = np.arange(10, 1010) * 3  # not 0..n-1: results must be the caller's ids
    vectors = unit_vectors(1000)
    queries = unit_vectors(20, seed=1).astype(np.float32)
    index = build(ids, vectors, generation=1, removals=0)
    assert index.params.kind == "exact"
    scores, found = index.search(queries, 10)
    want_scores, want_ids = brute_force(queries, vectors, ids, 10)
    assert scores.dtype == np.float32 and found.dtype == np.int64
    np.testing.assert_array_equal(found, want_ids)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)


def test_ivf_recall_at_the_chosen_params(clustered):
    ids, vectors, queries = clustered
    params = AnnParams("ivf", nlist=ann.IVF_NLIST, nprobe=ann.IVF_NPROBE)
    ivf = build(ids, vectors, 1, 0, params=params)
    truth = build(ids, vectors, 1, 0).search(queries, 10)[1]
    assert recall(ivf.search(queries, 10)[1], truth) >= 0.98


def test_ivf_build_is_reproducible():
    ids, vectors, first = small_ivf()
    second = build(ids, vectors, 1, 0, params=first.params)
    queries = unit_vectors(10, seed=5).astype(np.float32)
    for a, b in zip(first.search(queries, 10), second.search(queries, 10), strict=True):
        np.testing.assert_array_equal(a, b)


def test_allowed_ids_exact_equals_brute_force_over_the_subset():
    ids = np.arange(1, 2001)
    vectors = unit_vectors(2000)
    queries = unit_vectors(10, seed=1).astype(np.float32)
    allowed = np.random.default_rng(2).choice(ids, 300, replace=False)
    scores, found = build(ids, vectors, 1, 0).search(queries, 10, allowed_ids=allowed)
    rows = np.isin(ids, allowed)
    want_scores, want_ids = brute_force(queries, vectors[rows], ids[rows], 10)
    np.testing.assert_array_equal(found, want_ids)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)


@pytest.mark.parametrize("size", [3, 40, 1500])
def test_allowed_ids_ivf_returns_only_allowed_and_complete_rows(size):
    ids, vectors, index = small_ivf()
    queries = unit_vectors(10, seed=1).astype(np.float32)
    allowed = np.random.default_rng(size).choice(ids, size, replace=False)
    scores, found = index.search(queries, 10, allowed_ids=allowed)
    kept = found[found >= 0]
    assert np.isin(kept, allowed).all()
    assert (found >= 0).sum(axis=1).tolist() == [min(10, size)] * 10  # never short of results
    assert (np.diff(scores[:, : min(10, size)], axis=1) <= 0).all()
    if size == 3:  # a tiny set is searched exactly
        rows = np.isin(ids, allowed)
        np.testing.assert_array_equal(
            found[:, :3], brute_force(queries, vectors[rows], allowed, 3)[1]
        )


def test_allowed_ids_outside_the_index_and_empty():
    index = small_ivf()[2]
    queries = unit_vectors(2, seed=1).astype(np.float32)
    scores, found = index.search(queries, 5, allowed_ids=np.array([7, -1, 10**9]))
    assert found[:, 0].tolist() == [7, 7] and (found[:, 1:] == -1).all()
    assert np.isneginf(scores[:, 1:]).all()
    assert (index.search(queries, 5, allowed_ids=[])[1] == -1).all()


def test_k_larger_than_n():
    vectors = unit_vectors(5)
    scores, found = build(np.arange(1, 6), vectors, 1, 0).search(vectors[:2].astype(np.float32), 8)
    assert found.shape == (2, 8)
    assert sorted(found[0, :5]) == [1, 2, 3, 4, 5] and (found[:, 5:] == -1).all()
    assert np.isneginf(scores[:, 5:]).all() and np.isfinite(scores[:, :5]).all()


def test_empty_index_searches_saves_and_grows(tmp_path):
    index = build(np.zeros(0, np.int64), np.zeros((0, DIM), np.float16), 0, 0)
    scores, found = index.search(unit_vectors(3).astype(np.float32), 4)
    assert index.count == 0 and (found == -1).all() and np.isneginf(scores).all()
    index.save(tmp_path / "empty.ann")
    loaded = load(tmp_path / "empty.ann")
    assert (loaded.count, loaded.max_id) == (0, 0)
    loaded.add(np.array([4, 9]), unit_vectors(2))
    assert loaded.search(unit_vectors(1).astype(np.float32), 3)[1][0].tolist() == [4, 9, -1]


def test_dimension_and_argument_errors():
    index = build(np.arange(1, 11), unit_vectors(10), 1, 0)
    with pytest.raises(ValueError, match=r"queries must be \(q, 300\)"):
        index.search(np.zeros((1, 384), np.float32), 5)
    with pytest.raises(ValueError, match=r"queries must be"):
        index.search(np.zeros(300, np.float32), 5)
    with pytest.raises(ValueError, match=r"vectors must be \(n, 300\)"):
        index.add(np.array([11]), unit_vectors(1, dim=384))
    with pytest.raises(ValueError, match="k must be a positive integer"):
        index.search(np.zeros((1, 300), np.float32), 0)
    with pytest.raises(ValueError, match="segment ids must grow"):
        index.add(np.array([10]), unit_vectors(1))
    with pytest.raises(ValueError, match="must be unique"):
        build(np.array([1, 1]), unit_vectors(2), 1, 0)
    with pytest.raises(ValueError, match="2 ids for 3 vectors"):
        build(np.array([1, 2]), unit_vectors(3), 1, 0)
    with pytest.raises(ValueError, match="start at 1"):
        build(np.array([0, 1]), unit_vectors(2), 1, 0)


# --- files --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["exact", "ivf"])
def test_save_load_round_trip(tmp_path, kind):
    ids, vectors, index = small_ivf()
    if kind == "exact":
        index = build(ids, vectors, 1, 0)
    index.generation, index.removals = 7, 2
    index.save(tmp_path / "segments.ann")
    loaded = load(tmp_path / "segments.ann")
    assert loaded.metadata() == index.metadata()
    assert (loaded.params, loaded.count, loaded.max_id) == (index.params, 3000, 3000)
    queries = unit_vectors(5, seed=3).astype(np.float32)
    for a, b in zip(loaded.search(queries, 10), index.search(queries, 10), strict=True):
        np.testing.assert_array_equal(a, b)
    assert [p.name for p in tmp_path.iterdir()] == ["segments.ann"]  # no temporary left


def _flip_byte(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda b: b[: len(b) // 2], "truncated"),
        (lambda b: _flip_byte(b, len(b) // 2), "checksum mismatch"),
        (lambda b: b"<html>not an index</html>", "not an earshot ANN index"),
        (lambda b: b"", "not an earshot ANN index"),
        (lambda b: b.replace(b'"version": 1', b'"version": 9'), "format version 9"),
        (lambda b: b.replace(b'"count": 3000', b'"count": 3001'), "does not match"),
        (lambda b: b.replace(b'"dim": 300', b'"dim": "x"'), "header is incomplete"),
    ],
)
def test_damaged_file_raises_ann_index_error(tmp_path, damage, reason):
    path = tmp_path / "segments.ann"
    small_ivf()[2].save(path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(AnnIndexError, match=reason) as error:
        load(path)
    assert str(path) in str(error.value) and "rebuild" in str(error.value)


def test_missing_file_raises_ann_index_error(tmp_path):
    with pytest.raises(AnnIndexError, match="does not exist"):
        load(tmp_path / "nothing.ann")


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "segments.ann"
    old = build(np.arange(1, 11), unit_vectors(10), 1, 0)
    old.save(path)

    def broken(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ann.faiss, "write_index", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        build(np.arange(1, 21), unit_vectors(20), 2, 0).save(path)
    assert load(path).count == 10
    assert [p.name for p in tmp_path.iterdir()] == ["segments.ann"]


# --- ensure_index -------------------------------------------------------------------------------


def test_ensure_index_builds_then_loads_current_without_reading(tmp_path):
    catalogue = FakeCatalogue(300)
    first = catalogue.ensure(tmp_path / "a.ann")
    assert (first.count, first.generation, catalogue.reads) == (300, 1, [0])
    again = catalogue.ensure(tmp_path / "a.ann")
    assert again.count == 300 and catalogue.reads == [0]  # current: nothing read


def test_ensure_index_extends_when_segments_were_only_added(tmp_path):
    path = tmp_path / "a.ann"
    catalogue = FakeCatalogue(300)
    queries = unit_vectors(5, seed=9).astype(np.float32)
    before = catalogue.ensure(path).search(queries, 10)
    catalogue.add(50, seed=1)
    grown = catalogue.ensure(path)
    assert catalogue.reads == [0, 300]  # only the new segments were read
    assert (grown.count, grown.max_id, grown.generation) == (350, 350, 2)
    after = grown.search(queries, 10, allowed_ids=np.arange(1, 301))
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)
    assert load(path).count == 350  # re-saved
    assert set(grown.search(unit_vectors(50, seed=1).astype(np.float32), 1)[1][:, 0]) == set(
        range(301, 351)
    )


def test_ensure_index_rebuilds_after_removals(tmp_path):
    path = tmp_path / "a.ann"
    catalogue = FakeCatalogue(300)
    catalogue.ensure(path)
    gone = list(range(1, 301, 3))
    deleted = np.array([catalogue.vectors[i] for i in gone], dtype=np.float32)
    catalogue.remove(gone)
    index = catalogue.ensure(path)
    assert catalogue.reads == [0, 0] and index.count == 200 and index.removals == 100
    found = index.search(deleted, 300)[1]  # every segment, nearest to the deleted ones first
    assert not np.isin(found, gone).any() and (found >= 0).sum(axis=1).tolist() == [200] * 100


def test_ensure_index_rebuilds_when_the_kind_should_change(tmp_path, monkeypatch):
    monkeypatch.setattr(ann, "EXACT_MAX", 400)
    monkeypatch.setattr(ann, "IVF_NLIST", 8)
    monkeypatch.setattr(ann, "IVF_NPROBE", 8)
    catalogue = FakeCatalogue(300)
    assert catalogue.ensure(tmp_path / "a.ann").params.kind == "exact"
    catalogue.add(200, seed=1)
    index = catalogue.ensure(tmp_path / "a.ann")
    assert index.params == AnnParams("ivf", nlist=8, nprobe=8) and index.count == 500
    assert catalogue.reads == [0, 300, 0]
    assert load(tmp_path / "a.ann").params.kind == "ivf"


@pytest.mark.parametrize("problem", ["damaged", "dimension"])
def test_ensure_index_rebuilds_an_unusable_file(tmp_path, problem):
    path = tmp_path / "a.ann"
    catalogue = FakeCatalogue(100)
    catalogue.ensure(path)
    if problem == "damaged":
        path.write_bytes(path.read_bytes()[:-100])
    index = catalogue.ensure(path, dim=384 if problem == "dimension" else None)
    assert catalogue.reads == [0, 0] and index.count == 100
