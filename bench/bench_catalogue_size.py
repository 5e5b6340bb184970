"""What per-window tags add to a catalogue's size: the same catalogue built with and without
tags, side by side, in several layouts (issue #15's target: ≤ 10 % per window, in every case).

Prints one JSON object. For each case the files are decoded and embedded once, as `earshot
index` does (`decode_entry`, `encode_windows`); the catalogue is then written with
`Catalogue.put_file` (what the Indexer calls) once untagged (no vocabulary, no tags) and once
per tag layout, each VACUUMed before its size is read; the size of each SQLite table (dbstat)
says where the bytes went.

Cases:
- `real`: `--real N` files of `../shared/data/sfx-pool` (spread over its list), the general
  model (tags from its AudioSet backbone). Skipped, saying why, without the pool or the backbone.
- `synthetic`: `--synthetic N` one-window clips (0.8 s tones and noise) through the general
  model's layout on 1 s windows around the test suite's stand-in backbone (seeded random
  weights, `earshot.testing.backbone`); its tag logits made confident (standardised per tag,
  shifted per window so that 10 pass 0.3: which ones set by the network, clip by clip): every
  window stores the most tags a window keeps (8) and each file's keyword row all it may hold,
  of AudioSet's 527 names (the labels file where it resolves, else names of the same length).
  The worst case: a one-window file pays for its tags with the least vector beside them.

Layouts (`--layouts`, all by default):
- `v4`: schema 4's, the "before": each window's blob, the file's summary beside it even for a
  one-window file, and up to 16 confident tag names in the keyword row;
- `top3_names`: only the keyword row limited to 3 names a window (16 a file);
- `one_copy`: only a one-window file's tags kept once (in its window's blob, no summary);
- `v5`: both, what earshot writes now;
- `v5_top2`, `v5_no_names`: v5 with 2 names a window, and with none (what the names cost).

`--quick`: a few files (the smoke test in tests/test_bench.py).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# layout → (tag names a window in the keyword row, a one-window file's tags kept once)
LAYOUTS = {
    "v4": (16, False),
    "top3_names": (3, False),
    "one_copy": (16, True),
    "v5": (3, True),
    "v5_top2": (2, True),
    "v5_no_names": (0, True),
}


class Skipped(Exception):
    pass


def catalogue_bytes(path: Path) -> tuple[int, dict[str, int]]:
    """The VACUUMed file's size and each table's (with its indexes and FTS5 shadow tables)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("PRAGMA journal_mode = DELETE")
        db.execute("VACUUM")
        total = (
            db.execute("PRAGMA page_count").fetchone()[0]
            * db.execute("PRAGMA page_size").fetchone()[0]
        )
        try:
            rows = db.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
        except sqlite3.OperationalError:  # an SQLite built without dbstat
            rows = []
    return total, dict(rows)


@contextlib.contextmanager
def layout(names_per_window: int):
    """Write catalogues in this layout (module constants of the schema, for this bench only)."""
    from earshot.index import tag_blobs

    before = tag_blobs.KEYWORD_TAGS_PER_WINDOW
    tag_blobs.KEYWORD_TAGS_PER_WINDOW = names_per_window
    try:
        yield
    finally:
        tag_blobs.KEYWORD_TAGS_PER_WINDOW = before


def write(
    path: Path,
    files: list,
    vectors: np.ndarray,
    tags: np.ndarray | None,
    names,
    one_copy: bool = True,
) -> None:
    from earshot.index.store import Catalogue

    with Catalogue(path) as cat:
        cat.bind_model("bench", vectors.shape[1], {}, tag_names=names if tags is not None else ())
        at = 0
        with cat.batch():
            for record, spans in files:
                n = len(spans)
                segs = [(s, e, v) for (s, e), v in zip(spans, vectors[at : at + n], strict=True)]
                cat.put_file(record, segs, None if tags is None else tags[at : at + n])
                at += n
        if tags is not None and not one_copy:  # schema 4: a one-window file's summary as well
            cat.db.execute(
                "UPDATE files SET tag_probs = (SELECT s.tag_probs FROM segments s "
                "WHERE s.file_id = files.id) WHERE tag_probs IS NULL AND status = 'ok' "
                "AND (SELECT count(*) FROM segments s WHERE s.file_id = files.id) = 1"
            )
        elif tags is not None:
            problems = cat.check()
            if problems:
                raise RuntimeError(f"the catalogue is not sound: {problems}")


def compare(files: list, vectors: np.ndarray, tags: np.ndarray, names, layouts: list[str]) -> dict:
    """The catalogue without tags against each layout's with tags."""
    from earshot.index.tag_blobs import CONFIDENT_TAG, MAX_TAGS, TAG_FLOOR

    windows = len(vectors)
    out: dict = {
        "files": len(files),
        "windows": windows,
        "one_window_files": sum(len(spans) == 1 for _, spans in files),
        "stored_tags_per_window": round(
            float(np.minimum((tags >= TAG_FLOOR).sum(axis=1), MAX_TAGS).mean()), 2
        ),
        "confident_tags_per_window": round(float((tags >= CONFIDENT_TAG).sum(axis=1).mean()), 2),
    }
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp) / "untagged.sqlite", files, vectors, None, ())
        base, base_tables = catalogue_bytes(Path(tmp) / "untagged.sqlite")
        out["untagged_bytes"] = base
        out["untagged_bytes_per_window"] = round(base / windows, 1)
        out["layouts"] = {}
        for name in layouts:
            per_window, one_copy = LAYOUTS[name]
            path = Path(tmp) / f"{name}.sqlite"
            with layout(per_window):
                write(path, files, vectors, tags, names, one_copy)
            size, tables = catalogue_bytes(path)
            added = {
                t: (tables.get(t, 0) - base_tables.get(t, 0)) / windows
                for t in sorted(set(tables) | set(base_tables))
            }
            out["layouts"][name] = {
                "bytes": size,
                "added_bytes_per_window": round((size - base) / windows, 1),
                "added_share": round((size - base) / base, 4),
                "added_bytes_per_window_by_table": {
                    t: round(v, 1) for t, v in added.items() if abs(v) >= 0.05
                },
            }
    if "v4" in out["layouts"] and "v5" in out["layouts"]:
        out["v5_over_v4_added"] = round(
            out["layouts"]["v5"]["added_bytes_per_window"]
            / max(1e-9, out["layouts"]["v4"]["added_bytes_per_window"]),
            3,
        )
    return out


def decode(model, entries: list) -> tuple[list, list[np.ndarray]]:
    """Decode files as the Indexer does: (record, spans) per file, and their windows."""
    from earshot.index.decoding import decode_entry

    files, waves = [], []
    for entry in entries:
        d = decode_entry(entry, model.config.audio)
        if d.error or d.windows is None:
            continue
        files.append((d.record, d.spans))
        waves.append(d.windows)
    return files, waves


def encode(model, waves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Vectors and tag probabilities of every window, as the Indexer computes them."""
    from earshot.embed import encode_windows

    vectors, tags = [], []
    for at in range(0, len(waves), 32):  # bounded memory: 32 files of windows at a time
        v, t = encode_windows(model, np.concatenate(waves[at : at + 32]), 8, "fp32")
        vectors.append(v)
        tags.append(t)
    return np.concatenate(vectors), np.concatenate(tags)


def scan_entries(paths: list[Path]) -> list:
    from earshot.index.scan import ScanEntry

    out = []
    for p in paths:
        st = p.stat()
        out.append(ScanEntry(str(p), st.st_size, st.st_mtime_ns))
    return out


def real_case(n: int, layouts: list[str], tmp: Path) -> dict:
    from earshot.weights import shared_dir

    shared = shared_dir()
    pool = (shared / "data" / "sfx-pool") if shared else Path("../shared/data/sfx-pool")
    if not (pool / "labels.csv").is_file():
        raise Skipped(f"no sfx pool at {pool} (the shared data folder beside the repository)")
    sys.path.insert(0, str(Path(__file__).parent))
    import bench_index

    try:
        model = bench_index.build("general", tmp)
    except bench_index.Skipped as e:
        raise Skipped(str(e)) from e
    with open(pool / "labels.csv", newline="") as f:
        rows = sorted(r["file"] for r in csv.DictReader(f))
    step = max(1, len(rows) // n)
    paths = [pool / r for r in rows[::step][:n]]
    t = time.perf_counter()
    files, waves = decode(model, scan_entries(paths))
    vectors, tags = encode(model, waves)
    out = {"source": f"{pool} (every {step}th of {len(rows)} files)", "model": "general"}
    out |= compare(files, vectors, tags, model.tag_names, layouts)
    out["embed_s"] = round(time.perf_counter() - t, 1)
    return out


def tagger(tmp: Path):
    """The general model's layout with 1 s windows and the test suite's stand-in backbone
    (`earshot.testing.backbone`: seeded random weights in EfficientAT's layout), AudioSet's
    tag names."""
    import torch

    from earshot.errors import ModelLoadError
    from earshot.model.io import build_model
    from earshot.model.pretrained import pretrained_config
    from earshot.testing.backbone import write_fake_backbone
    from earshot.weights import read_audioset_labels, resolve_weights

    config = pretrained_config("mn04", joint_dim=300, window_s=1.0, hop_s=0.5)
    model = build_model(config, seed=0)
    weights, _ = write_fake_backbone(tmp / "fake-backbone")
    state = torch.load(tmp / "fake-backbone" / weights.file, weights_only=True)
    model.audio_encoder.load_state_dict(state)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # its head's layers at unit gain (EfficientAT starts them at 0.01)
        for layer in (model.audio_encoder.classifier[2], model.audio_encoder.classifier[-1]):
            fan_in = layer.weight.shape[1]
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) / fan_in**0.5)
    try:
        labels = resolve_weights(config.encoder.labels, progress=False)
        model.tag_names = tuple(read_audioset_labels(labels, config.encoder.n_tags))
        origin = "AudioSet's names (its labels file)"
    except ModelLoadError:
        # 13 characters, 3 words: AudioSet's display names average 11 and 1.7.
        model.tag_names = tuple(f"Sound tag {i:03d}" for i in range(config.encoder.n_tags))
        origin = "synthetic names of AudioSet's length (no labels file here)"
    return model, origin


def confident_tags(model, waves: list[np.ndarray], confident: int = 10) -> np.ndarray:
    """Tag probabilities from the stand-in's tag logits, made confident: each tag's logit
    standardised over these windows (spread 2), then shifted per window so that its
    `confident`-th likeliest tag sits at p = 0.3 (`confident` tags a window pass 0.3, which
    ones set by the network, different from clip to clip)."""
    import torch

    with torch.no_grad():
        x = torch.from_numpy(np.concatenate(waves))
        logits = (
            torch.cat(
                [model.audio_features(model.frontend(x[i : i + 8]))[1] for i in range(0, len(x), 8)]
            )
            .double()
            .numpy()
        )
    z = (logits - logits.mean(axis=0)) / (logits.std(axis=0) + 1e-12) * 2.0
    z += np.log(0.3 / 0.7) - np.sort(z, axis=1)[:, [-confident]]  # that tag at p = 0.3
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def synthetic_case(n: int, layouts: list[str], tmp: Path) -> dict:
    from earshot.testing.audio import write_noise, write_tone

    model, origin = tagger(tmp)
    folder = tmp / "synthetic"
    paths = []
    for i in range(n):
        name = folder / f"day {i // 300}" / f"take_{i:05d}.wav"
        name.parent.mkdir(parents=True, exist_ok=True)
        if i % 3 == 2:
            paths.append(write_noise(name, 0.8, 32000, seed=i))
        else:
            paths.append(write_tone(name, 0.8, 32000, freq=150 + (37 * i) % 5000, seed=i))
    files, waves = decode(model, scan_entries(paths))
    vectors, _ = encode(model, waves)
    tags = confident_tags(model, waves)
    out = {
        "source": f"{n} one-window clips written here",
        "model": "mn04 layout, the test suite's random stand-in backbone",
        "tags": "its logits, standardised per tag, shifted per window: 10 pass 0.3",
        "tag_names": origin,
    }
    out |= compare(files, vectors, tags, model.tag_names, layouts)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--real", type=int, default=600, help="sfx-pool files (0: none)")
    ap.add_argument("--synthetic", type=int, default=3000, help="one-window clips (0: none)")
    ap.add_argument("--layouts", default=",".join(LAYOUTS), help="comma-separated")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--quick", action="store_true", help="a few files: a smoke test")
    args = ap.parse_args()
    layouts = args.layouts.split(",")
    unknown = [x for x in layouts if x not in LAYOUTS]
    if unknown:
        ap.error(f"unknown layout(s) {', '.join(unknown)}; known: {', '.join(LAYOUTS)}")
    if args.quick:
        args.real, args.synthetic = min(args.real, 8), min(args.synthetic, 200)
    import torch

    torch.set_num_threads(args.threads)
    result: dict = {
        "benchmark": "earshot bench/bench_catalogue_size.py",
        "env": {
            "torch": torch.__version__,
            "sqlite": sqlite3.sqlite_version,
            "load_avg_start": [round(x, 2) for x in os.getloadavg()],
        },
        "target_added_share": 0.10,
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, n, case in (
            ("real", args.real, real_case),
            ("synthetic", args.synthetic, synthetic_case),
        ):
            if n <= 0:
                continue
            print(f"{name}: {n} files...", file=sys.stderr)
            try:
                result[name] = case(n, layouts, Path(tmp))
            except Skipped as e:
                result[name] = {"skipped": str(e)}
                print(f"{name}: skipped: {e}", file=sys.stderr)
    worst = {
        lay: max(
            result[c]["layouts"][lay]["added_share"]
            for c in ("real", "synthetic")
            if "layouts" in result.get(c, {})
        )
        for lay in layouts
        if any("layouts" in result.get(c, {}) for c in ("real", "synthetic"))
    }
    result["worst_added_share"] = worst
    result["env"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
