"""How much a hit's `band` can be trusted: precision and recall of "good" on labelled test sets.

For each model (`general`, `compact`): the labelled clips of a recipe's val and test splits
(configs/general-data.toml: UrbanSound8K by fold, FSDD's official test speakers, the sfx pool
carved by whole recordings) are embedded window by window, as `earshot index` embeds files; each
held-out query of a split is run against that split's clips as `earshot search` ranks files (each
clip by its best window), and every top-k hit gets the features the Searcher computes at search
time (the raw cosine, and its z-score against the query's scores over a sample of the
catalogue's windows). A logistic calibration is fitted on val (`earshot.confidence`), and on test
the bench reports, for the bands that calibration gives:

- precision of "good": the share of hits marked good that are relevant (same label);
- recall: the share of the relevant hits in the top k that are marked good;
- the same two figures for a plain raw-cosine threshold fitted on val to the same precision, side
  by side, so the z-score's worth is measured, not assumed.

`--write-calibration` stores each fitted calibration as `calibration.json` in the model folder
(what search reads). Without `../shared/data` the bench runs on a synthetic labelled set (tiny
model, seeded tones) so that it always runs; its figures then mean nothing about real sound.

    EARSHOT_SHARED_DIR=../shared HF_HUB_OFFLINE=1 nice python bench/bench_confidence.py
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def log(msg: str) -> None:
    print(f"[bench_confidence] {msg}", file=sys.stderr, flush=True)


def split_windows(model, dataset, cache_dir: Path, batch_size: int = 32):
    """(windows (w, d) float32, window_clip (w,)) for every clip of `dataset`, cached by the
    model id and the clips (path, size, mtime)."""
    from earshot.audio.windows import window_file
    from earshot.errors import AudioDecodeError
    from earshot.model.io import model_id

    digest = hashlib.sha256(model_id(model).encode())
    for clip in dataset.clips:
        st = Path(clip.path).stat()
        digest.update(f"{clip.path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    target = cache_dir / f"confidence-{dataset.split}-{digest.hexdigest()[:16]}.npz"
    if target.is_file():
        with np.load(target) as z:
            return z["windows"], z["window_clip"]
    vectors, owners, pending, pending_owner = [], [], [], []

    def flush():
        v = model.encode_audio(np.stack(pending), batch_size=batch_size).numpy()
        vectors.append(v.astype(np.float32))
        owners.extend(pending_owner)
        pending.clear()
        pending_owner.clear()

    t0 = time.time()
    for i, clip in enumerate(dataset.clips):
        try:
            for w in window_file(clip.path, model.config.audio):
                pending.append(w.samples)
                pending_owner.append(i)
                if len(pending) == batch_size:
                    flush()
        except AudioDecodeError:
            continue
        if i % 200 == 0:
            log(f"{dataset.split}: {i}/{len(dataset.clips)} clips ({time.time() - t0:.0f} s)")
    if pending:
        flush()
    windows = np.concatenate(vectors)
    window_clip = np.asarray(owners, dtype=np.int64)
    cache_dir.mkdir(parents=True, exist_ok=True)
    from earshot.fsutil import atomic_open

    with atomic_open(target) as f:
        np.savez(f, windows=windows, window_clip=window_clip)
    return windows, window_clip


def best_window_scores(queries: np.ndarray, windows: np.ndarray, window_clip: np.ndarray, n: int):
    from earshot.eval.evaluate import clip_scores

    return clip_scores(queries, windows, window_clip, n)


def hit_features(query_vectors, windows, window_clip, clip_labels, query_labels, k, seed=0,
                 exclude=None):  # fmt: skip
    """For every query's top-k clips (search's ranking: each clip by its best window): the
    raw cosine, its z-score over a sample of the catalogue's windows, and relevance."""
    from earshot.confidence import SAMPLE_WINDOWS, score_stats, zscore

    rng = np.random.default_rng(seed)
    take = min(SAMPLE_WINDOWS, len(windows))
    sample = windows[rng.choice(len(windows), take, replace=False)]
    scores = best_window_scores(query_vectors, windows, window_clip, len(clip_labels))
    if exclude is not None:
        scores[np.arange(len(exclude)), exclude] = -np.inf
    labels = np.asarray(clip_labels, dtype=object)
    cos, z, rel, qid = [], [], [], []
    for q in range(len(query_vectors)):
        stats = score_stats(query_vectors[q], sample)
        top = np.argsort(-scores[q], kind="stable")[:k]
        for c in top:
            if not np.isfinite(scores[q, c]):
                continue
            cos.append(float(scores[q, c]))
            z.append(zscore(scores[q, c], stats))
            rel.append(labels[c] == query_labels[q])
            qid.append(q)
    return np.array(cos), np.array(z), np.array(rel, dtype=bool), np.array(qid)


def figures(confidence: np.ndarray, relevant: np.ndarray, good: float, weak: float) -> dict:
    is_good = confidence >= good
    is_weak = (confidence >= weak) & ~is_good
    n_rel = int(relevant.sum())
    return {
        "hits": len(relevant),
        "relevant": n_rel,
        "good": int(is_good.sum()),
        "weak": int(is_weak.sum()),
        "precision_good": round(float(relevant[is_good].mean()), 4) if is_good.any() else None,
        "recall_good": round(float(relevant[is_good].sum() / n_rel), 4) if n_rel else None,
        "precision_weak": round(float(relevant[is_weak].mean()), 4) if is_weak.any() else None,
        "precision_none": round(float(relevant[~is_good & ~is_weak].mean()), 4)
        if (~is_good & ~is_weak).any()
        else None,
    }


def cosine_threshold(cos: np.ndarray, relevant: np.ndarray, precision: float) -> float:
    """The lowest raw-cosine threshold whose val precision reaches `precision`."""
    order = np.argsort(-cos)
    hits = np.cumsum(relevant[order]) / np.arange(1, len(order) + 1)
    ok = np.flatnonzero(hits >= precision)
    return float(cos[order][ok[-1]]) if len(ok) else float(cos.max())


def calibrate(kind: str, val, test, k: int) -> dict:
    """Fit on val, report on test: the calibrated bands and a raw-cosine threshold."""
    from earshot.confidence import Calibration, fit

    a, b, c = fit(val[0], val[1], val[2])
    cal = Calibration(a, b, c)
    conf_val = np.array([cal.confidence(x, y) for x, y in zip(val[0], val[1], strict=True)])
    conf_test = np.array([cal.confidence(x, y) for x, y in zip(test[0], test[1], strict=True)])
    val_fig = figures(conf_val, val[2], cal.good, cal.weak)
    test_fig = figures(conf_test, test[2], cal.good, cal.weak)
    # Side by side: the raw cosine alone, at the threshold that gives val the same precision.
    t = cosine_threshold(val[0], val[2], val_fig["precision_good"] or 1.0)
    raw_test = test[0] >= t
    n_rel = int(test[2].sum())
    # The z-score alone (no fitted weights, earshot.confidence.DEFAULT).
    from earshot.confidence import DEFAULT

    conf_default = np.array(
        [DEFAULT.confidence(x, y) for x, y in zip(test[0], test[1], strict=True)]
    )
    return {
        "calibration": {**cal.as_dict(), "fitted_on": f"val, top {k} hits of each {kind} query"},
        "val": val_fig,
        "test": test_fig,
        "test_raw_cosine_threshold": {
            "threshold": round(t, 4),
            "precision_good": round(float(test[2][raw_test].mean()), 4) if raw_test.any() else None,
            "recall_good": round(float(test[2][raw_test].sum() / n_rel), 4) if n_rel else None,
        },
        "test_default_calibration": figures(conf_default, test[2], DEFAULT.good, DEFAULT.weak),
    }


def _embed_all_windows(model, samples: np.ndarray) -> np.ndarray:
    from earshot.audio.windows import windows

    a = model.config.audio
    ws = np.stack([w.samples for w in windows([samples], a.sample_rate, a.window_s, a.hop_s)])
    return model.encode_audio(ws).numpy()


def negation(model, ds_val, ds_test, lambdas, k: int, per_pair: int = 3, seed: int = 0):
    """Semantic negation measured on mixtures: for urban-sound classes A and B, the query
    "A..., no B" over the split's clips plus two-clip mixtures of every pair (equal RMS).
    Relevant: clips holding A and not B (pure A clips, A+C mixtures). "whole sentence" is today's
    search (the sentence encoded as typed); lambda=L encodes "A..." alone and subtracts
    L·max(0, cos(window, B)) from every window's score (lambda=0: the split alone)."""
    from earshot.audio.io import load
    from earshot.eval.metrics import per_query_metrics

    out = {}
    for name, ds in (("val", ds_val), ("test", ds_test)):
        clips = [c for c in ds.clips if c.key.startswith("urbansound")]
        by_label: dict[str, list] = {}
        for c in clips:
            by_label.setdefault(c.label, []).append(c)
        labels = sorted(by_label)
        rng = np.random.default_rng(seed)
        rate = model.config.audio.sample_rate
        items: list[frozenset] = []  # the labels each catalogue item holds
        window_rows: list[np.ndarray] = []
        window_owner: list[int] = []

        def add(labels_held, samples, items=items, rows=window_rows, owner=window_owner):
            v = _embed_all_windows(model, samples)
            rows.append(v)
            owner.extend([len(items)] * len(v))
            items.append(frozenset(labels_held))

        for lab in labels:
            for c in by_label[lab][:12]:
                add({lab}, load(c.path, rate))
        for i, la in enumerate(labels):
            for lb in labels[i + 1 :]:
                for _ in range(per_pair):
                    ca = by_label[la][rng.integers(len(by_label[la]))]
                    cb = by_label[lb][rng.integers(len(by_label[lb]))]
                    xa, xb = load(ca.path, rate), load(cb.path, rate)
                    n = min(len(xa), len(xb))
                    xa, xb = xa[:n], xb[:n]
                    ra = np.sqrt(np.mean(xa**2)) + 1e-9
                    rb = np.sqrt(np.mean(xb**2)) + 1e-9
                    add({la, lb}, 0.5 * (xa / ra + xb / rb) * min(ra, rb))
        windows = np.concatenate(window_rows)
        owner = np.array(window_owner)
        words = {lab: lab.replace("_", " ") for lab in labels}
        pos_texts, full_texts, neg_texts, rel = [], [], [], []
        for la in labels:
            for lb in labels:
                if la == lb:
                    continue
                pos_texts.append(f"{words[la]}")
                neg_texts.append(words[lb])
                full_texts.append(f"{words[la]}, no {words[lb]}")
                rel.append([la in s and lb not in s for s in items])
        relevance = np.array(rel)
        enc = lambda t: np.asarray(model.encode_text(t))  # noqa: E731
        pos, neg, full = enc(pos_texts), enc(neg_texts), enc(full_texts)
        from earshot.eval.evaluate import clip_scores

        row = {"queries": len(pos_texts), "items": len(items), "mixtures": len(items) - sum(
            len(s) == 1 for s in items)}  # fmt: skip
        base = clip_scores(full, windows, owner, len(items))
        row["whole sentence (today)"] = round(
            float(per_query_metrics(base, relevance=relevance)["mAP@10"].mean()), 4
        )
        sims_pos = pos @ windows.T
        sims_neg = np.maximum(0.0, neg @ windows.T)
        for lam in lambdas:
            penal = sims_pos - lam * sims_neg
            scores = np.full((len(pos), len(items)), -np.inf, dtype=np.float32)
            np.maximum.at(scores.T, owner, penal.T)
            m = per_query_metrics(scores, relevance=relevance)["mAP@10"].mean()
            row[f"lambda={lam:g}"] = round(float(m), 4)
        out[name] = row
    return out


def synthetic_split(rng, n_labels: int = 12, per_label: int = 20, dim: int = 64):
    """A labelled set of unit vectors: every label a random direction, its clips' windows and
    its queries that direction plus noise (queries noisier), a fifth of the queries for a label
    the catalogue does not hold (no relevant clip). Geometry only: what the pipeline does."""
    centres = rng.standard_normal((n_labels + 3, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    windows, owner, labels = [], [], []
    for lab in range(n_labels):
        for _ in range(per_label):
            n = int(rng.integers(1, 4))
            v = centres[lab] + 0.8 * rng.standard_normal((n, dim)) / np.sqrt(dim)
            windows.append(v / np.linalg.norm(v, axis=1, keepdims=True))
            owner += [len(labels)] * n
            labels.append(f"label{lab}")
    qlab = [f"label{i % (n_labels + 3)}" for i in range(5 * (n_labels + 3))]
    q = np.stack([centres[int(lab[5:])] for lab in qlab])
    q = q + 1.2 * rng.standard_normal(q.shape) / np.sqrt(dim)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return np.concatenate(windows).astype(np.float32), np.array(owner), labels, q, qlab


def synthetic_report(k: int) -> dict:
    rng = np.random.default_rng(0)
    rows = {}
    for split in ("val", "test"):
        w, wc, labels, q, qlab = synthetic_split(rng)
        rows[split] = hit_features(q.astype(np.float32), w, wc, labels, qlab, k)
    return {
        "synthetic": True,
        "note": "no labelled audio (../shared/data): seeded vectors only, figures mean nothing "
        "about real sound",
        "k": k,
        "models": {"synthetic": {"text": calibrate("text", rows["val"], rows["test"], k)}},
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default=str(ROOT / "configs" / "general-data.toml"))
    p.add_argument("--models", default="general,compact")
    p.add_argument("--cache-dir", default=str(ROOT / ".earshot-cache"))
    p.add_argument("-k", type=int, default=10, help="hits per query (default: 10)")
    p.add_argument("--embed-only", action="store_true")
    p.add_argument(
        "--synthetic",
        "--quick",
        action="store_true",
        help="seeded vectors, no audio (~1 s): a smoke test",
    )
    p.add_argument("--negation", action="store_true", help="also measure semantic negation")
    p.add_argument(
        "--write-calibration",
        action="store_true",
        help="store each fitted calibration as calibration.json in its model folder",
    )
    args = p.parse_args(argv)
    recipe_root_ok = True
    if not args.synthetic:
        from earshot.errors import DatasetError

        try:
            from earshot.data.recipe import recipe_for as _probe

            _probe(args.recipe)
        except DatasetError as e:
            log(f"no labelled audio ({e}); running the synthetic set instead")
            recipe_root_ok = False
    if args.synthetic or not recipe_root_ok:
        print(json.dumps(synthetic_report(args.k), indent=2))
        return 0
    from earshot.data.datasets import load_dataset
    from earshot.data.recipe import recipe_for
    from earshot.model.io import load_model, model_id

    recipe = recipe_for(args.recipe)
    # Val: its paraphrases (the urban sounds, digits) and, for every other val label, its name as
    # written, the way the test split queries the pool's labels: so that the calibration set
    # holds both kinds of query the test set does (many relevant clips, and one or two).
    val_labels = set(load_dataset(args.recipe, "val").labels)
    written = {lab: q for lab, q in recipe.queries().items() if lab in val_labels}
    queries = {"val": {**written, **recipe.val_queries()}, "test": recipe.queries()}
    report: dict = {"recipe": str(args.recipe), "k": args.k, "models": {}}
    for name in args.models.split(","):
        t0 = time.time()
        model = load_model(name)
        data = {}
        for split in ("val", "test"):
            ds = load_dataset(args.recipe, split)
            w, wc = split_windows(model, ds, Path(args.cache_dir))
            data[split] = (ds, w, wc)
            log(f"{name} {split}: {len(ds)} clips, {len(w)} windows")
        if args.embed_only:
            continue
        text_rows, example_rows = {}, {}
        for split, (ds, w, wc) in data.items():
            qs = queries[split]
            texts = [q for qq in qs.values() for q in qq]
            qlab = [lab for lab, qq in qs.items() for _ in qq]
            qv = np.asarray(model.encode_text(texts), dtype=np.float32)
            text_rows[split] = hit_features(qv, w, wc, ds.labels, qlab, args.k)
            # Search by example: a clip (the mean of its windows) against the others.
            rng = np.random.default_rng(1)
            pick = rng.choice(len(ds.clips), min(400, len(ds.clips)), replace=False)
            ev = np.stack([w[wc == i].mean(0) for i in pick])
            ev /= np.linalg.norm(ev, axis=1, keepdims=True)
            example_rows[split] = hit_features(
                ev, w, wc, ds.labels, [ds.labels[i] for i in pick], args.k, exclude=pick
            )
        entry = {
            "model_id": model_id(model),
            "text": calibrate("text", text_rows["val"], text_rows["test"], args.k),
            "example": calibrate("example", example_rows["val"], example_rows["test"], args.k),
        }
        if args.negation:
            entry["negation_mAP@10"] = negation(
                model, data["val"][0], data["test"][0], [0.0, 0.25, 0.5, 0.75, 1.0], args.k
            )
        entry["seconds"] = round(time.time() - t0, 1)
        report["models"][name] = entry
        if args.write_calibration:
            from earshot.fsutil import atomic_write_text

            doc = {
                "model_id": entry["model_id"],
                "written_by": "bench/bench_confidence.py --write-calibration",
                "recipe": Path(args.recipe).name,
                "text": entry["text"]["calibration"],
                "example": entry["example"]["calibration"],
            }
            target = Path(model.source) / "calibration.json"
            atomic_write_text(target, json.dumps(doc, indent=2) + "\n")
            log(f"wrote {target}")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
