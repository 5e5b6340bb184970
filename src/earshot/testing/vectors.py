"""Synthetic embedding vectors for tests and benchmarks of the ANN index: seeded, made in chunks."""

from __future__ import annotations

import numpy as np

DIM = 300
_CHUNK = 50_000  # rows drawn per generator: part of the seeding, so changing it changes the output


def clustered_unit_vectors(
    n: int, seed: int = 0, stream: int = 0, dim: int = DIM, clusters: int = 1000
) -> np.ndarray:
    """(n, dim) float16 unit vectors clustered on a low-dimensional manifold, like embeddings.

    latent = √0.7·centre + √0.3·noise (one of `clusters` centres, Zipf-like weights), scaled
    by a decaying spectrum, rotated at random, shifted by a common mean and normalised. The
    spectrum and mean follow 29.6k Clotho captions embedded by all-MiniLM-L6-v2 and projected
    384 → 300 at random (random pairs: cosine 0.18 ± 0.15 real, 0.18 ± 0.14 here; participation
    ratio ~44); IVF needs a little more nprobe here than on those captions (`calibration` in
    `bench/bench_search.py`). `seed` fixes the space, `stream` the draws: stream 0 for the
    collection, 1 for queries. Made in chunks, so memory is the float16 result plus ~60 MB.
    """
    space = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(space.standard_normal((dim, dim)))
    i = np.arange(dim)
    spectrum = np.sqrt(np.exp(-i / 80) / (1 + i / 6))
    mixing = (spectrum / np.linalg.norm(spectrum))[:, None] * rotation.T  # (dim, dim)
    mean = space.standard_normal(dim)
    mean *= 0.45 / np.linalg.norm(mean)
    centres = space.standard_normal((clusters, dim))
    weights = 1.0 / np.arange(1, clusters + 1) ** 0.7
    out = np.empty((n, dim), dtype=np.float16)
    for c, start in enumerate(range(0, n, _CHUNK)):
        m = min(_CHUNK, n - start)
        rng = np.random.default_rng([seed, stream, c])
        which = rng.choice(clusters, size=m, p=weights / weights.sum())
        latent = np.sqrt(0.7) * centres[which] + np.sqrt(0.3) * rng.standard_normal((m, dim))
        x = latent @ mixing + mean
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def put_synthetic_files(cat, record, vectors: np.ndarray, per_file: int, path_for) -> None:
    """Store `vectors` in catalogue `cat` as files of `per_file` 10 s windows (hop 5 s).

    `record` is a template file record; `path_for(file_number)` names each file. Commits every
    20k windows, like a real indexing run; benchmarks fill 100k-1M windows this way in seconds.
    """
    n = len(vectors)
    for start in range(0, n, 20_000):
        with cat.batch():
            for f in range(start, min(n, start + 20_000), per_file):
                path = path_for(f // per_file)
                # Each file its own bytes: search groups files of one content hash into a hit.
                digest = f"{record.content_hash}-{f // per_file}"
                rec = record.__class__(**{**record.__dict__, "path": path, "content_hash": digest})
                windows = [
                    (5.0 * i, 5.0 * i + 10, vectors[f + i]) for i in range(min(per_file, n - f))
                ]
                cat.put_file(rec, windows)
