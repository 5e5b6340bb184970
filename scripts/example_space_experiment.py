"""Search by example in other spaces than the general model's joint one, on a split of
configs/general-data.toml (val by default: never test), scored as `earshot evaluate` scores
search by example (`eval/examples.py`): mAP@10 overall and per source.

Rows: the joint space (what `earshot search --like` uses); mn04's pooled embedding, as it is
and centred on the split's mean; its tag probabilities, as they are and square-rooted; the joint
vector concatenated with the centred embedding at weight w; and query expansion in the joint
space (the example's vector plus beta times the mean of its top m clips' best windows, the
example's own clip left out, then searched again).

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/example_space_experiment.py [--split val]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-9)).astype(np.float32)


@torch.no_grad()
def window_spaces(model, store, batch: int = 64) -> dict[str, np.ndarray]:
    """Each window in the joint space, mn04's pooled embedding and its tag probabilities."""
    joint, emb, probs = [], [], []
    for i in range(0, len(store), batch):
        logmel = store.logmel(np.arange(i, min(i + batch, len(store))))
        features, logits = model.audio_features(logmel)
        joint.append(F.normalize(model.audio_head(features), dim=-1).numpy())
        emb.append(model.audio_encoder(logmel)[0].float().numpy())
        probs.append(torch.sigmoid(logits).numpy())
    return {"joint": np.concatenate(joint), "emb": np.concatenate(emb), "p": np.concatenate(probs)}


def expanded(examples, windows, window_clip, m: int, beta: float) -> np.ndarray:
    """Each example plus `beta` x the mean best window of its top `m` other clips."""
    from earshot.eval.evaluate import clip_scores

    n = len(examples)
    scores = clip_scores(examples, windows, window_clip, n)
    np.fill_diagonal(scores, -np.inf)  # the example's own clip
    sims = examples @ windows.T
    out = examples.astype(np.float64).copy()
    for i in range(n):
        best = []
        for c in np.argsort(-scores[i])[:m]:
            own = np.flatnonzero(window_clip == c)
            best.append(windows[own[np.argmax(sims[i, own])]])
        out[i] += beta * np.mean(best, axis=0)
    return unit(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", default="val", choices=("train", "val", "test"))
    p.add_argument("--cache-dir", default=".earshot-cache")
    args = p.parse_args(argv)
    from earshot.data.cache import build_feature_cache
    from earshot.data.datasets import load_dataset
    from earshot.eval.examples import example_report, example_vectors
    from earshot.model.io import load_model

    model = load_model("general").eval()
    dataset = load_dataset("configs/general-data.toml", args.split, None)
    store = build_feature_cache(dataset, model.config.audio, args.cache_dir, progress=False)
    spaces = window_spaces(model, store)
    clips = dataset.clips
    labels = [c.label for c in clips]
    recordings = [c.recording or c.key for c in clips]
    groups = [c.key.split("/", 1)[0] for c in clips]
    wc = store.window_clip

    def row(name, windows, examples=None):
        r = example_report(windows, wc, labels, recordings, groups, 0, 50, examples=examples)
        sources = {
            k[7:]: round(v["mAP@10"]["value"], 3) for k, v in r.items() if k[:7] == "source "
        }
        print(json.dumps({"row": name, "mAP@10": round(r["mAP@10"]["value"], 3), **sources}))

    joint, emb = unit(spaces["joint"]), spaces["emb"]
    centred = unit(emb - emb.mean(0))
    row("joint", joint)
    row("backbone embedding", unit(emb))
    row("backbone embedding, centred", centred)
    row("tag probabilities", unit(spaces["p"]))
    row("tag probabilities, square root", unit(np.sqrt(spaces["p"])))
    for w in (0.3, 0.5, 0.7):
        row(
            f"joint + centred embedding, w {w}",
            unit(np.hstack([np.sqrt(1 - w) * joint, np.sqrt(w) * centred])),
        )
    base = example_vectors(joint, wc, len(clips))
    for m in (3, 5, 10):
        for beta in (0.5, 1.0):
            row(f"query expansion, m {m}, beta {beta}", joint, expanded(base, joint, wc, m, beta))


if __name__ == "__main__":
    main()
