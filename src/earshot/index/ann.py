"""Nearest-neighbour search over the catalogue's segment vectors: a derived, rebuildable cache.

The catalogue (SQLite) is the source of truth for every segment's unit vector; this module keeps
a FAISS index over them so that a query need not score them all, saved as one file beside the
catalogue (its byte layout: `earshot.index.annfile`), kept in step with the catalogue by
`earshot.index.ann_sync.ensure_index`.

Kinds (`choose_params`; the figures behind each constant are from `bench/bench_search.py`):
- "exact": every vector scored. Vectors stored as float16 (scalar quantizer) — the catalogue's
  own precision, so exact means exact — in half the memory of `IndexFlatIP` and faster.
- "ivf": an inverted file of float16 codes; k-means on a seeded sample picks `nlist` cells and a
  query scores the vectors of its `nprobe` nearest cells only.
Scores are inner products, i.e. cosine similarities of unit vectors. Missing results (k larger
than what can be found) have id -1 and score -inf.

Vectors are zero-padded to a multiple of 16 dimensions: FAISS's SIMD scalar-quantizer code only
runs when the dimension is one (300 is not), and padding leaves inner products unchanged.
Exact search over 100k (bench `exact_kinds`): float16 codes at 300-d 32 ms, at 304-d 3.2 ms and
616 bytes per segment; `IndexFlatIP` (float32) 8.8 ms and 1208 bytes.

Threads: searches of a few queries run on one OpenMP thread. A parallel region ends when its
slowest thread does, and on a shared 2-core machine the second thread can wait a whole scheduler
tick for a core: while another job ran, one query over 20k vectors (`IndexFlatIP`) took 0.6 ms
on one thread and 24 ms on two, and one over 100k float16 codes 32 ms on one and 60 ms on two.
Builds, adds and large batches of queries use every core this process may run on (2 here). Add
and search must not run at the same time on one `AnnIndex`.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from earshot.index import annfile
from earshot.index.annfile import FORMAT, FORMAT_VERSION, AnnIndexError

# Figures from `bench/bench_search.py` on 2 shared cores (single query, k=10, 300-d, synthetic
# vectors on which IVF needs a few more probes than on real Clotho caption embeddings).
#
# Exact below this many segments. Exact p50: 0.16 ms at 10k, 1.2 ms at 50k, 3.3 ms at 100k,
# 31.5 ms at 1M; IVF at 50k: 0.09 ms, recall@10 0.994, built in 2 s. 50k is the largest n whose
# exact p50 stays within 2 ms, a tenth of the 20 ms query target: below it exact costs nothing
# worth saving, needs no training and never misses.
EXACT_MAX = 50_000
# IVF, float16 codes. Sweep over nlist 256–4096 × nprobe 1–128 × {fp16, 8bit} at 100k and 1M:
# the fastest setting with recall@10 ≥ 0.98 is nlist 1024 / nprobe 8 at both sizes (0.984 and
# 0.991; 0.08 and 0.30 ms). nprobe 16 buys a margin for real text → audio queries, which are
# further from the collection than synthetic ones: 0.996 / 0.998 at 0.11 / 0.54 ms. 2048 cells
# were no faster by more than 0.1 ms and built 2.5x slower; 4096 took 93 s to build at 1M.
# 8-bit codes halve memory (313–325 B) but recall stalls at 0.986 (100k) and 0.974 (1M).
# Memory per segment: 617–629 B on disk, 619–641 B of RSS once loaded.
IVF_NLIST = 1024
IVF_NPROBE = 16
# k-means training sample: FAISS asks for ≥ 39 points per cell; with 64, 1024 cells train and
# 1M vectors are added in 7–17 s.
TRAIN_POINTS_PER_LIST = 64
TRAIN_SEED = 1234
# Queries per search call from which OpenMP may use more than one thread (see the docstring).
PARALLEL_MIN_QUERIES = 32

_QUANTIZERS = {"fp16": "SQfp16", "8bit": "SQ8"}
_CHUNK_ROWS = 65_536  # rows padded to float32 at a time: ~80 MB at 304-d


@dataclass(frozen=True)
class AnnParams:
    kind: str = "exact"  # "exact" | "ivf"
    quantizer: str = "fp16"  # how each vector is stored: "fp16" | "8bit"
    nlist: int = 0  # ivf only: k-means cells
    nprobe: int = 0  # ivf only: cells scored per query

    def __post_init__(self) -> None:
        if self.kind not in ("exact", "ivf"):
            raise ValueError(f"unknown ANN index kind {self.kind!r}; use 'exact' or 'ivf'")
        if self.quantizer not in _QUANTIZERS:
            raise ValueError(f"unknown quantizer {self.quantizer!r}; use one of {[*_QUANTIZERS]}")
        if self.kind == "exact" and self.quantizer != "fp16":
            raise ValueError("the exact kind stores float16, the catalogue's own precision")
        if self.kind == "ivf" and not 1 <= self.nprobe <= self.nlist:
            raise ValueError(f"ivf needs 1 <= nprobe <= nlist, got {self.nprobe} and {self.nlist}")

    def factory(self) -> str:
        if self.kind == "exact":
            return f"IDMap,{_QUANTIZERS[self.quantizer]}"
        return f"IVF{self.nlist},{_QUANTIZERS[self.quantizer]}"


def choose_params(n: int) -> AnnParams:
    """The kind and parameters for a collection of `n` segments (see the constants above)."""
    if n < EXACT_MAX:
        return AnnParams("exact")
    return AnnParams("ivf", nlist=IVF_NLIST, nprobe=IVF_NPROBE)


def padded_dim(dim: int) -> int:
    return -(-dim // 16) * 16


class AnnIndex:
    """A FAISS index over segment ids, stamped with the catalogue state it was built from."""

    def __init__(
        self,
        index,
        dim: int,
        params: AnnParams,
        generation: int,
        removals: int,
        max_id: int,
        identity: Mapping[str, str | None] | None = None,
        last: str | None = None,
    ):
        self.index = index
        self.dim = dim
        self.params = params
        self.generation = generation
        self.removals = removals
        self.max_id = max_id  # largest segment id held; 0 when empty
        # What it was built from: the catalogue and model (see `ensure_index`), and the
        # fingerprint of segment `max_id` there. None: not known (files from before).
        self.identity = dict(identity) if identity is not None else None
        self.last = last

    def __repr__(self) -> str:
        return (
            f"AnnIndex({self.params.kind}, {self.count} × {self.dim}-d, "
            f"generation {self.generation}, removals {self.removals}, max_id {self.max_id})"
        )

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Extend with new segments; ids (n,) must all exceed `max_id` (ids only grow)."""
        ids, vectors = _check_batch(ids, vectors, self.dim)
        if len(ids) == 0:
            return
        if ids.min() <= self.max_id:
            raise ValueError(
                f"segment ids must grow: got {int(ids.min())}, index already holds up to "
                f"{self.max_id}"
            )
        with _omp_threads(_cpu_count()):
            for start in range(0, len(ids), _CHUNK_ROWS):
                stop = start + _CHUNK_ROWS
                self.index.add_with_ids(_padded(vectors[start:stop]), ids[start:stop])
        self.max_id = int(ids.max())

    def search(
        self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product: (scores float32 (q, k), ids int64 (q, k)), best first.

        `allowed_ids` restricts results to those ids. IVF then probes nprobe / f cells, f being
        the allowed fraction of the collection, so that a query meets about as many allowed
        vectors as it would unrestricted; a row still short of results (an allowed set that is
        tiny or far from the query) is searched again over every cell, which is exact.
        """
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(
                f"queries must be (q, {self.dim}) for this {self.dim}-d index, "
                f"got shape {queries.shape}"
            )
        if not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        nq = len(queries)
        scores = np.full((nq, k), -np.inf, dtype=np.float32)
        ids = np.full((nq, k), -1, dtype=np.int64)
        bitmap, n_allowed, sel = None, self.count, None
        if allowed_ids is not None and self.max_id > SPARSE_IDS * max(self.count, 1):
            # Sparse ids (a shard's file_id << 20 | window): a bitmap up to max_id would not
            # fit; a batch of the allowed ids does.
            bitmap = np.unique(np.asarray(allowed_ids, dtype=np.int64).ravel())
            bitmap = bitmap[(bitmap >= 1) & (bitmap <= self.max_id)]
            n_allowed = len(bitmap)
            sel = faiss.IDSelectorBatch(len(bitmap), faiss.swig_ptr(bitmap))
        elif allowed_ids is not None:
            bitmap, n_allowed = _bitmap(allowed_ids, self.max_id)
            # The selector reads `bitmap` in place: it stays referenced until the searches end.
            sel = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))
        reachable = min(self.count, n_allowed)
        if nq == 0 or reachable == 0:
            return scores, ids
        kk = min(k, reachable)
        padded = _padded(queries)
        nprobe = self.params.nprobe
        if self.params.kind == "ivf" and n_allowed < self.count:
            nprobe = min(self.params.nlist, math.ceil(nprobe * self.count / n_allowed))
        with _omp_threads(_cpu_count() if nq >= PARALLEL_MIN_QUERIES else 1):
            d, i = self.index.search(padded, kk, params=self._params(sel, nprobe))
            short = np.flatnonzero((i < 0).any(axis=1))
            if self.params.kind == "ivf" and nprobe < self.params.nlist and len(short):
                full = self._params(sel, self.params.nlist)
                d[short], i[short] = self.index.search(padded[short], kk, params=full)
        scores[:, :kk] = np.where(i < 0, -np.inf, d)
        ids[:, :kk] = i
        return scores, ids

    def _params(self, sel, nprobe: int):
        if self.params.kind == "ivf":
            return faiss.SearchParametersIVF(sel=sel, nprobe=nprobe)
        return faiss.SearchParameters(sel=sel) if sel is not None else None

    def save(self, path: str | Path) -> None:
        """Write atomically (temporary file + rename): readers see the old file or the new one."""
        annfile.write(path, self.metadata(), self.index)

    def metadata(self) -> dict:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "dim": self.dim,
            "count": self.count,
            "max_id": self.max_id,
            "generation": self.generation,
            "removals": self.removals,
            "params": asdict(self.params),
            "faiss": faiss.__version__,
            "identity": self.identity,
            "last": self.last,
        }


def build(
    ids: np.ndarray,
    vectors: np.ndarray,
    generation: int,
    removals: int,
    params: AnnParams | None = None,
    seed: int = TRAIN_SEED,
) -> AnnIndex:
    """An index over `vectors` (n, d) float16|float32 with segment `ids` (n,) int64.

    The kind follows `choose_params(n)` unless `params` is given. IVF trains on a sample drawn
    with `seed`, so the same vectors give the same index.
    """
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[1] < 1:
        raise ValueError(f"vectors must be (n, dim), got shape {vectors.shape}")
    ids, vectors = _check_batch(ids, vectors, vectors.shape[1])
    if len(np.unique(ids)) != len(ids):
        raise ValueError("segment ids must be unique")
    n, dim = vectors.shape
    params = params or choose_params(n)
    index = faiss.index_factory(padded_dim(dim), params.factory(), faiss.METRIC_INNER_PRODUCT)
    if params.kind == "ivf":
        if n < params.nlist:
            raise ValueError(f"an IVF index of {params.nlist} cells needs ≥ that many vectors")
        index.by_residual = False  # float16 codes lose nothing to residuals, and add is faster
        index.nprobe = params.nprobe
        index.cp.seed = seed
        sample = min(n, TRAIN_POINTS_PER_LIST * params.nlist)
        rows = np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))
        with _omp_threads(_cpu_count()):
            index.train(_padded(vectors[rows]))
    ann = AnnIndex(index, dim, params, generation, removals, max_id=0)
    ann.add(ids, vectors)
    return ann


def load(path: str | Path) -> AnnIndex:
    """Read a file written by `AnnIndex.save`; AnnIndexError if it cannot be used as it is."""
    path = Path(path)
    meta, index = annfile.read(path)
    try:
        params = AnnParams(**meta["params"])
        stamp = {key: int(meta[key]) for key in ("dim", "generation", "removals", "max_id")}
        identity, last = meta.get("identity"), meta.get("last")
        if not (identity is None or isinstance(identity, dict)) or not (
            last is None or isinstance(last, str)
        ):
            raise ValueError("identity or last is not what a header holds")
        ann = AnnIndex(index, params=params, identity=identity, last=last, **stamp)
    except (KeyError, TypeError, ValueError) as e:
        raise AnnIndexError(path, f"its header is incomplete ({type(e).__name__}: {e})") from None
    is_ivf = isinstance(index, faiss.IndexIVF)
    if (
        ann.count != meta["count"]
        or index.d != padded_dim(ann.dim)
        or is_ivf != (params.kind == "ivf")
    ):
        raise AnnIndexError(path, "its header does not match the index it holds")
    if is_ivf:
        faiss.extract_index_ivf(index).nprobe = params.nprobe
    return ann


# --- helpers ----------------------------------------------------------------------------------


def _check_batch(ids, vectors, dim: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.asarray(ids)
    vectors = np.asarray(vectors)
    if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
        raise ValueError(f"ids must be a 1-d integer array, got {ids.dtype} {ids.shape}")
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(f"vectors must be (n, {dim}), got shape {vectors.shape}")
    if not np.issubdtype(vectors.dtype, np.floating):
        raise ValueError(f"vectors must be float16 or float32, got {vectors.dtype}")
    if len(ids) != len(vectors):
        raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
    ids = ids.astype(np.int64, copy=False)
    if len(ids) and ids.min() < 1:
        raise ValueError(f"segment ids start at 1, got {int(ids.min())}")
    return ids, vectors


def _padded(x: np.ndarray) -> np.ndarray:
    out = np.zeros((len(x), padded_dim(x.shape[1])), dtype=np.float32)  # (n, padded_dim)
    out[:, : x.shape[1]] = x
    return out


# Ids sparser than this many per indexed vector are filtered by an id batch, not a bitmap.
SPARSE_IDS = 64


def _bitmap(allowed, max_id: int) -> tuple[np.ndarray, int]:
    """Bit i set for each allowed id i ≤ max_id, and how many are set.

    A bitmap of every id rather than a hash set of the allowed ones: segment ids are dense from
    1, and at 300k ids it built in 0.02–0.2 ms where `IDSelectorBatch` took 0.01–8.5 ms (100 to
    150k ids allowed), and a full IVF scan that tests every id ran 1.4–2x faster with it.
    """
    allowed = np.asarray(allowed, dtype=np.int64).ravel()
    bits = np.zeros(max_id + 1, dtype=bool)
    bits[allowed[(allowed >= 1) & (allowed <= max_id)]] = True
    return np.packbits(bits, bitorder="little"), int(np.count_nonzero(bits))


@contextlib.contextmanager
def _omp_threads(n: int) -> Iterator[None]:
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
