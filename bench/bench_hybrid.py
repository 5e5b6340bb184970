"""Does hybrid search (the vector ranking fused with keyword matches, RRF) help once files carry
descriptions? mAP@10 with and without fusion, on a labelled set whose names say nothing.

The set: the test split of `../shared/data/sfx-pool` (the recipe's own carving,
configs/general-data.toml: whole recordings, labels seen in training and zero-shot ones), each
clip decoded and written as a 32 kHz WAV named `s00042.wav` (its name and folder hold none of
its label's words). Every clip gets its label as embedded metadata, as a described library
would carry it: even clips a Broadcast Wave `bext` Description, odd clips an ID3 chunk (TIT2
title, COMM comment), written by `earshot.testing.metadata`; `earshot index` reads them. Then,
for each fraction f of described files (0, 0.25, 0.5, 1: a seeded, nested choice of files),
the records of the other files are emptied (`Catalogue.set_meta(id, {})`, what indexing a file
without metadata stores) and every test label is asked as written (the held-out query of an
auto label), vector-only and hybrid. A hit is relevant when its clip has the query's label.

Without `../shared` (or with `--quick`), the set is synthetic (`earshot.testing` tones and
noise in four labelled kinds) searched with a tiny random model: a smoke test of the code
path, whose figures mean nothing.

Prints one JSON object: per fraction, mAP@10 / R@1 / R@10 for vector, hybrid and the default
(`hybrid=None`: `Searcher.hybrid_by_default` decides per query), the paired
difference hybrid − vector with a 95% bootstrap CI over queries, and mAP@10 over the queries
whose relevant files are all described / none described. The keyword text's folder words are
blanked (the library sits in a temporary folder whose name must not match queries). Last,
`names_kept_no_metadata`: no metadata, and each file's keyword name column set to what its
original name gives (`keyword_text.words`), as a library named rather than described would be.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_hybrid.py            # ~10 min on 2 cores
    .venv/bin/python bench/bench_hybrid.py --quick                     # ~20 s
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
FRACTIONS = (0.0, 0.25, 0.5, 1.0)


def log(*parts) -> None:
    print("bench_hybrid:", *parts, file=sys.stderr, flush=True)


def pool_clips(limit: int | None) -> list[tuple[Path, str]]:
    """(audio path, label) of the sfx pool's test split, as the general recipe carves it."""
    import warnings

    from earshot.data.recipe import load_recipe

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recipe = load_recipe(ROOT / "configs" / "general-data.toml")
        clips = recipe.dataset("test").clips
    pool = (SHARED / "sfx-pool").resolve()
    out = [(c.path, c.label) for c in clips if Path(c.path).resolve().is_relative_to(pool)]
    out.sort(key=lambda t: str(t[0]))
    if limit:
        rng = np.random.default_rng(0)
        out = [out[i] for i in sorted(rng.choice(len(out), min(limit, len(out)), replace=False))]
    return out


def synthetic_clips(folder: Path) -> list[tuple[Path, str]]:
    from earshot.testing.audio import write_noise, write_tone

    folder.mkdir(parents=True, exist_ok=True)
    kinds = {"low hum": 110.0, "high whistle": 3000.0, "white noise": None, "mid beep": 880.0}
    out = []
    for k, (label, freq) in enumerate(kinds.items()):
        for i in range(3):
            path = folder / f"{k}_{i}.wav"
            if freq is None:
                write_noise(path, 1.5, 16000, seed=10 * k + i)
            else:
                write_tone(path, 1.5, 16000, freq=freq * (1 + 0.03 * i), seed=10 * k + i)
            out.append((path, label))
    return out


def write_library(clips: list[tuple[Path, str]], folder: Path, rate: int) -> list[tuple[Path, str]]:
    """Each clip as a mono 16-bit WAV at `rate` named by its index, its label embedded:
    bext Description (even) or ID3 title + comment (odd)."""
    import soundfile as sf

    from earshot.audio.io import load
    from earshot.testing.metadata import add_bext, write_id3

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (source, label) in enumerate(clips):
        path = folder / f"s{i:05d}.wav"
        out.append((path, label))
        if path.is_file():  # a kept library (--keep): the same bytes as last time
            continue
        samples = load(source, rate)
        sf.write(path, np.clip(samples, -1, 1), rate, subtype="PCM_16")
        text = label[0].upper() + label[1:]
        if i % 2 == 0:
            add_bext(path, text, "bench")
        else:
            write_id3(path, {"TIT2": text, "COMM": text}, kind="wav")
    return out


def described_at(paths: list[Path], fraction: float, seed: int = 0) -> set[str]:
    """A nested seeded share of the files: those described at `fraction`."""
    order = np.random.default_rng(seed).permutation(len(paths))
    return {str(paths[i]) for i in order[: round(fraction * len(paths))]}


def ap_at_10(found: list[int], relevant: set[int]) -> float:
    hits = np.array([f in relevant for f in found[:10]], dtype=bool)
    if not relevant:
        return 0.0
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1) if len(hits) else hits
    return float((precision * hits).sum() / min(10, len(relevant)))


def bootstrap(diff: np.ndarray, n: int = 2000, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(n, len(diff)))].mean(axis=1)
    return [round(float(np.percentile(means, 2.5)), 4), round(float(np.percentile(means, 97.5)), 4)]


def evaluate(searcher, queries, relevant, hybrid: bool) -> dict[str, np.ndarray]:
    ap, r1, r10 = [], [], []
    for q in queries:
        ids = [h.file_id for h in searcher.search_text(q, k=10, hybrid=hybrid)]
        rel = relevant[q]
        ap.append(ap_at_10(ids, rel))
        r1.append(float(bool(ids) and ids[0] in rel))
        r10.append(float(bool(set(ids) & rel)))
    return {"ap": np.array(ap), "r1": np.array(r1), "r10": np.array(r10)}


class CachedText:
    """The model, its text vectors computed once per sentence: every condition asks the same
    queries, and encoding them again would be most of the run's time."""

    def __init__(self, model):
        self._model, self._seen = model, {}

    def __getattr__(self, name):
        return getattr(self._model, name)

    def encode_text(self, sentences, *args, **kwargs):
        key = tuple(sentences)
        if key not in self._seen:
            self._seen[key] = np.asarray(self._model.encode_text(list(sentences), *args, **kwargs))
        return self._seen[key]


def summary(result: dict[str, np.ndarray]) -> dict:
    return {
        "mAP@10": round(float(result["ap"].mean()), 4),
        "R@1": round(float(result["r1"].mean()), 4),
        "R@10": round(float(result["r10"].mean()), 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="synthetic set, tiny model")
    parser.add_argument("--model", default=None, help="general | compact | DIR (default: general)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many test clips")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--keep", default=None, help="build the library in this folder, kept")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)

    from earshot.index.build import Indexer
    from earshot.index.store import Catalogue
    from earshot.search import Searcher

    start = time.perf_counter()
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="eh"))
    quick = args.quick or not (SHARED / "sfx-pool" / "labels.csv").is_file()
    if quick:
        from earshot.model.io import load_model, save_model
        from earshot.testing.models import tiny_model, write_tiny_text_model

        text = write_tiny_text_model(tmp / "text")
        save_model(tiny_model(text_model=str(text), text_dim=16), tmp / "model")
        model, model_name = load_model(tmp / "model"), "tiny (random)"
        clips = synthetic_clips(tmp / "src")
    else:
        from earshot.model.io import load_model

        model_name = args.model or "general"
        model = load_model(model_name)
        clips = pool_clips(args.limit)
    log(f"{len(clips)} clips; model {model_name}")
    rate = model.config.audio.sample_rate
    library = write_library(clips, tmp / "lib", rate)
    written_s = time.perf_counter() - start

    db = tmp / "bench.sqlite"
    if not args.keep:
        for p in (db, db.with_name(db.name + ".ann")):
            p.unlink(missing_ok=True)
    with Catalogue(db) as cat:
        if args.keep and cat.model_id is not None:
            # A kept catalogue, changed by the last run's conditions: its files' metadata is
            # read again by the indexer below and their names' keyword text restored.
            from earshot.index.keyword_text import words

            with cat.batch():
                cat.db.execute("UPDATE files SET meta = NULL")
                for fid, path in cat.db.execute("SELECT id, path FROM files").fetchall():
                    cat.db.execute(
                        "UPDATE files_fts SET name = ?, meta = '' WHERE rowid = ?",
                        (words(Path(path).stem), fid),
                    )
        t0 = time.perf_counter()
        indexed = Indexer(cat, model, workers=args.workers, progress=False).run([tmp / "lib"])
        index_s = time.perf_counter() - t0
        log(f"indexed {indexed.added} files, read the metadata of {indexed.metadata_read} "
            f"unchanged ones, in {index_s:.0f} s")  # fmt: skip
        # Names are stripped; so are folders: the library's folder (a temporary one) must not
        # lend its words ("tmp", "scratch"...) to every file's keyword text.
        with cat.batch():
            cat.db.execute("UPDATE files_fts SET folder = ''")
        ids = {str(p): cat.file_id_for_path(str(p)) for p, _ in library}
        label_of = {ids[str(p)]: label for p, label in library if ids[str(p)] is not None}
        read = sum(bool(cat.file(f)["meta"].get("description") or cat.file(f)["meta"].get("title"))
                   for f in label_of)  # fmt: skip
        stored = {f: cat.file(f)["meta"] for f in label_of}
        queries = sorted(set(label_of.values()))
        relevant = {q: {f for f, lab in label_of.items() if lab == q} for q in queries}
        searcher = Searcher(cat, CachedText(model))
        vector = evaluate(searcher, queries, relevant, hybrid=False)
        conditions = {}
        paths = [p for p, _ in library]
        for fraction in FRACTIONS:
            keep = described_at(paths, fraction)
            with cat.batch():
                for p in paths:
                    fid = ids[str(p)]
                    if fid is not None:
                        cat.set_meta(fid, stored[fid] if str(p) in keep else {})
            hybrid = evaluate(searcher, queries, relevant, hybrid=True)
            default = evaluate(searcher, queries, relevant, hybrid=None)
            diff = hybrid["ap"] - vector["ap"]
            kept_ids = {ids[str(p)] for p in keep}
            all_in = [i for i, q in enumerate(queries) if relevant[q] <= kept_ids]
            none_in = [i for i, q in enumerate(queries) if not relevant[q] & kept_ids]
            conditions[str(fraction)] = {
                "described_files": len(keep),
                "vector": summary(vector),
                "hybrid": summary(hybrid),
                "default": summary(default),
                "mAP@10_diff": round(float(diff.mean()), 4),
                "mAP@10_diff_ci95": bootstrap(diff),
                "default_mAP@10_diff_ci95": bootstrap(default["ap"] - vector["ap"]),
                "queries_all_described": {
                    "n": len(all_in),
                    "vector": round(float(vector["ap"][all_in].mean()), 4) if all_in else None,
                    "hybrid": round(float(hybrid["ap"][all_in].mean()), 4) if all_in else None,
                },
                "queries_none_described": {
                    "n": len(none_in),
                    "vector": round(float(vector["ap"][none_in].mean()), 4) if none_in else None,
                    "hybrid": round(float(hybrid["ap"][none_in].mean()), 4) if none_in else None,
                },
            }
            log(f"f={fraction}: vector {summary(vector)['mAP@10']}, hybrid "
                f"{summary(hybrid)['mAP@10']}, default {summary(default)['mAP@10']}")  # fmt: skip
        # The same files under their own names (the pool's names hold their labels' words)
        # and no metadata: what hybrid does for a library named, not described. The keyword
        # text's name column is what indexing those names would store (`keyword_text.words`).
        from earshot.index.keyword_text import words

        with cat.batch():
            for (p, _), (source, _) in zip(library, clips, strict=True):
                fid = ids[str(p)]
                if fid is not None:
                    cat.set_meta(fid, {})
                    cat.db.execute(
                        "UPDATE files_fts SET name = ? WHERE rowid = ?",
                        (words(Path(source).stem), fid),
                    )
        named = evaluate(searcher, queries, relevant, hybrid=True)
        default = evaluate(searcher, queries, relevant, hybrid=None)
        diff = named["ap"] - vector["ap"]
        conditions["names_kept_no_metadata"] = {
            "vector": summary(vector),
            "hybrid": summary(named),
            "default": summary(default),
            "mAP@10_diff": round(float(diff.mean()), 4),
            "mAP@10_diff_ci95": bootstrap(diff),
            "default_mAP@10_diff_ci95": bootstrap(default["ap"] - vector["ap"]),
        }
        log(f"names kept: vector {summary(vector)['mAP@10']}, hybrid {summary(named)['mAP@10']}, "
            f"default {summary(default)['mAP@10']}")  # fmt: skip
    result = {
        "bench": "hybrid",
        "quick": quick,
        "model": model_name,
        "set": "synthetic" if quick else "sfx-pool test split (configs/general-data.toml)",
        "clips": len(library),
        "queries": len(queries),
        "labels_per_query": dict(Counter(len(r) for r in relevant.values()).most_common(5)),
        "metadata_read": read,
        "indexed": indexed.added,
        "metadata_read_unchanged": indexed.metadata_read,
        "index_s": round(index_s, 1),
        "write_s": round(written_s, 1),
        "fractions": conditions,
        "seconds": round(time.perf_counter() - start, 1),
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
