"""Issue #15 experiment: trainable temporal pooling over the frozen mn04's frame features.

The shipped general model's audio head reads [mn04's pooled embedding ; sigmoid(logits)²], both
global averages over a 10 s window. This script caches, once, what the frozen backbone gives
per frame (the last feature map averaged over frequency: 384 channels x ~32 frames of 0.32 s,
fp16) for the train and val splits of configs/general-data.toml, and trains variants of the
audio head that pool those frames over time with a small trainable module (attention pooling
over the frame features, or over per-frame tag probabilities from the frozen classifier), by
the same loss and schedule as `earshot train` (`train/heads.py` `fit_heads`: teacher start,
multi-positive InfoNCE + teacher-space term). Every variant is scored on the validation split
only, per source and on the real-caption queries of the val labels: the columns of
MODEL_CARD-general.md's "Choices measured on validation" table.

    python scripts/pool_experiment.py extract            # the frame cache (once)
    python scripts/pool_experiment.py run reference attn_emb ...   # rows of the table

Short clips (issue #15's second question): what mn04 sees of a clip shorter than its 10 s window.
`extract-short` runs the frozen backbone once more over the train and val audio, for the windows
that are not a whole 10 s of signal, in every mode of SHORT_MODES at once (one decoding pass):
`unpadded` (the window at its own length, at least MIN_S, since mn04's pooling is global; a long
file's last window likewise) and `repeatT` (a clip shorter than T seconds tiled to fill the
window, every other window zero-padded as shipped). `run reference --short MODE` then trains the
reference recipe on that mode's features and scores val in the same mode; `--short-val MODE`
keeps the padded training and changes only what validation sees (an inference-only change).

    python scripts/pool_experiment.py extract-short
    python scripts/pool_experiment.py run reference --short unpadded --out rows.jsonl

Keeping the teacher start (issue #15's third question): `run reference --wise A ... --fuse W ...`
also scores the trained heads interpolated with their start in weight space (WiSE-FT) and fused
with it in score (what `model/fusion.py` ships), a row each. `--mining N` trains on N mined
captions a label instead of the recipe's (0: none, as every table before the fusion one).

Captions of sounds never trained on (issue #15's zero-shot captions): the val split holds only
74 caption queries of untrained labels, too few to choose by. `run ... --holdout F` takes a share
F of the trained sfx labels that have mined captions out of training for that run (`hold_out`)
and scores their mined captions (a few hundred) and their own words against val's clips and
theirs: the holdout_* columns.

    python scripts/pool_experiment.py run reference --hidden 1024 --text-lr 0 --holdout 0.25 ...

CPU, one thread (the machine is shared); the frame cache lives in .earshot-cache (gitignored).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
# A worktree beside the main checkout reads the main checkout's recipe (same file, its root
# ../../shared/data resolves there); EARSHOT_EXPERIMENT_DATA names another.
DATA = Path(os.environ.get("EARSHOT_EXPERIMENT_DATA", ROOT / "configs" / "general-data.toml"))
CONFIG = ROOT / "configs" / "general.toml"
FRAMES_VERSION = 1


def cache_dir() -> Path:
    env = os.environ.get("EARSHOT_EXPERIMENT_CACHE")
    if env:
        return Path(env)
    # The worktree shares the main checkout's cache (the backbone features are there).
    main = Path("/work/main/.earshot-cache")
    return main if main.is_dir() else ROOT / ".earshot-cache"


# -- the frame cache ----------------------------------------------------------------------
def frames_folder(model) -> Path:
    enc = model.config.encoder
    key = hashlib.sha256(
        json.dumps(
            [FRAMES_VERSION, model.config.audio.__dict__, enc.name, enc.weights.sha256],
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()[:16]
    return cache_dir() / f"frames-{key}"


def clip_file(folder: Path, path: Path) -> Path:
    st = path.stat()
    key = hashlib.sha1(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()
    return folder / key[:2] / f"{key}.npz"


@torch.no_grad()
def frame_features(encoder, logmel: torch.Tensor) -> torch.Tensor:
    """(batch, 1, mels, frames) → (batch, frames', 384): the last feature map, mean over
    frequency (its mean over time is the pooled embedding)."""
    x = encoder.features(logmel)  # (batch, 384, f', t')
    return x.mean(dim=2).transpose(1, 2)


@torch.no_grad()
def extract(model, dataset, batch: int = 16) -> None:
    from earshot.audio.windows import window_file
    from earshot.errors import AudioDecodeError
    from earshot.fsutil import atomic_open

    folder = frames_folder(model)
    todo = [c for c in dataset.clips if not clip_file(folder, c.path).is_file()]
    print(f"{dataset.split}: {len(todo)} of {len(dataset)} clips to extract", file=sys.stderr)
    enc = model.audio_encoder.eval()
    pending, owners, done = [], [], {}
    t0 = time.perf_counter()

    def flush():
        f = frame_features(enc, model.frontend(torch.from_numpy(np.stack(pending))))
        for row, (clip, last, seconds) in enumerate(owners):
            done.setdefault(clip.key, []).append((f[row].numpy().astype(np.float16), seconds))
            if last:
                target = clip_file(folder, clip.path)
                target.parent.mkdir(parents=True, exist_ok=True)
                got = done.pop(clip.key)
                with atomic_open(target) as fh:
                    np.savez(
                        fh,
                        frames=np.stack([g[0] for g in got]),
                        seconds=np.array([g[1] for g in got], dtype=np.float32),
                    )
        pending.clear()
        owners.clear()

    for n, clip in enumerate(todo):
        try:
            wins = list(window_file(clip.path, model.config.audio))
        except AudioDecodeError:
            wins = []
        for j, w in enumerate(wins):
            pending.append(w.samples)
            owners.append((clip, j == len(wins) - 1, w.end_s - w.start_s))
            if len(pending) >= batch:
                flush()
        if n % 200 == 0:
            print(f"  {n}/{len(todo)} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    if pending:
        flush()


def load_frames(model, dataset) -> tuple[list[np.ndarray | None], int]:
    folder = frames_folder(model)
    out = []
    for c in dataset.clips:
        p = clip_file(folder, c.path)
        if p.is_file():
            with np.load(p) as z:
                out.append((z["frames"], z["seconds"]))
        else:
            out.append(None)
    return out


# -- short clips: what the backbone sees of a window shorter than 10 s ------------------------
SHORT_VERSION = 1
MIN_S = 1.0  # the shortest input `unpadded` gives mn04 (shorter: zero-padded to this)
SHORT_MODES = ("unpadded", "repeat1.5", "repeat2.5")


def short_folder(model) -> Path:
    enc = model.config.encoder
    key = hashlib.sha256(
        json.dumps(
            [SHORT_VERSION, MIN_S, model.config.audio.__dict__, enc.name, enc.weights.sha256],
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()[:16]
    return cache_dir() / f"short-{key}"


def short_inputs(wins: list, rate: int, window: int, mode: str) -> dict[int, np.ndarray]:
    """{window index: the samples mode gives it} for the windows `mode` changes; the rest stay
    as shipped (10 s, zero-padded at the end)."""
    out: dict[int, np.ndarray] = {}
    if mode == "unpadded":
        for j, w in enumerate(wins):
            n = round((w.end_s - w.start_s) * rate)
            if n < window:
                x = w.samples[: max(n, round(MIN_S * rate))]  # beyond n: the zero padding
                out[j] = np.ascontiguousarray(x)
    elif mode.startswith("repeat"):
        limit = float(mode[len("repeat") :])
        n = round((wins[-1].end_s - wins[0].start_s) * rate) if wins else 0
        if len(wins) == 1 and 0 < n < min(window, round(limit * rate)):
            out[0] = np.resize(wins[0].samples[:n], window)  # tiled, cut at the window's end
    else:
        raise ValueError(f"unknown short mode '{mode}' (one of {SHORT_MODES})")
    return out


@torch.no_grad()
def extract_short(model, dataset, reverse: bool = False) -> None:
    """Each clip's changed windows in every SHORT_MODES mode: features [embedding ; tags²] and
    logits, as `backbone_features` caches them, eager (one window at a time: lengths differ)."""
    from earshot.audio.windows import window_file
    from earshot.errors import AudioDecodeError
    from earshot.fsutil import atomic_open
    from earshot.model.dual import audio_head_inputs
    from earshot.train.features import _clip_file, features_folder

    folder = short_folder(model)
    # The shipped (zero-padded) features too, into `backbone_features`' own cache, in the same
    # decoding pass: that cache is keyed by each file's mtime, so a fresh copy of the data
    # needs both.
    shipped = features_folder(model, cache_dir(), model.config.encoder.weights.sha256)
    todo = [
        c
        for c in dataset.clips
        if not (clip_file(folder, c.path).is_file() and _clip_file(shipped, c.path).is_file())
    ]
    print(f"{dataset.split}: {len(todo)} of {len(dataset)} clips to extract", file=sys.stderr)
    model.eval()
    rate = model.config.audio.sample_rate
    window = round(model.config.audio.window_s * rate)
    width = audio_head_inputs(model.config)
    tags = model.config.encoder.n_tags
    t0 = time.perf_counter()
    if reverse:  # a second process from the other end; each skips what the other wrote
        todo.reverse()
    for n, clip in enumerate(todo):
        target = _clip_file(shipped, clip.path)
        if clip_file(folder, clip.path).is_file() and target.is_file():
            continue
        try:
            wins = list(window_file(clip.path, model.config.audio))
        except AudioDecodeError:
            wins = []
        if wins and not target.is_file():
            model.fast_inference = True  # as backbone_features runs it: 10 s windows
            f, lg = [], []
            for i in range(0, len(wins), 16):
                batch = np.stack([w.samples for w in wins[i : i + 16]])
                a, b = model.audio_features(model.frontend(torch.from_numpy(batch)))
                f.append(a.numpy())
                lg.append(b.numpy())
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(target) as fh:
                np.savez(
                    fh,
                    features=np.concatenate(f).astype(np.float32),
                    logits=np.concatenate(lg).astype(np.float32),
                )
        model.fast_inference = False  # eager: the traced copy is checked on one shape only
        arrays: dict[str, np.ndarray] = {"windows": np.array(len(wins))}
        seen: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # modes often agree
        for mode in SHORT_MODES:
            changed = short_inputs(wins, rate, window, mode)
            idx = sorted(changed)
            feats, logits = [], []
            for j in idx:
                x = changed[j]
                hit = next((s for s in seen if s[0].shape == x.shape and (s[0] == x).all()), None)
                if hit is None:
                    f, lg = model.audio_features(model.frontend(torch.from_numpy(x)[None]))
                    hit = (x, f[0].numpy(), lg[0].numpy())
                    seen.append(hit)
                feats.append(hit[1])
                logits.append(hit[2])
            arrays[f"{mode}/index"] = np.array(idx, dtype=np.int64)
            arrays[f"{mode}/features"] = np.array(feats, dtype=np.float32).reshape(len(idx), width)
            arrays[f"{mode}/logits"] = np.array(logits, dtype=np.float32).reshape(len(idx), tags)
        target = clip_file(folder, clip.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(target) as fh:
            np.savez(fh, **arrays)
        if n % 500 == 0:
            print(f"  {n}/{len(todo)} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)


def short_features(model, dataset, bf, mode: str):
    """`bf` (the shipped, zero-padded features of `dataset`) with `mode`'s windows swapped in."""
    from earshot.train.features import BackboneFeatures

    folder = short_folder(model)
    features, logits = bf.features.copy(), bf.logits.copy()
    changed = 0
    for i in np.unique(bf.window_clip):
        p = clip_file(folder, dataset.clips[i].path)
        if not p.is_file():
            raise SystemExit(f"short-clip cache lacks {dataset.clips[i].path}: run extract-short")
        rows = np.flatnonzero(bf.window_clip == i)
        with np.load(p) as z:
            if int(z["windows"]) != len(rows):
                raise SystemExit(f"{dataset.clips[i].path}: window count differs from the cache")
            idx = z[f"{mode}/index"]
            features[rows[idx]] = z[f"{mode}/features"]
            logits[rows[idx]] = z[f"{mode}/logits"]
        changed += len(idx)
    print(
        f"{dataset.split}: {mode} changes {changed} of {len(bf.window_clip)} windows",
        file=sys.stderr,
    )
    return BackboneFeatures(features, logits, bf.window_clip)


# -- pooling heads ------------------------------------------------------------------------
class FrameStore:
    """Every window's frames (fp16), valid-frame mask and per-frame squared tag probabilities,
    train then val; a window's row in `fit_heads`' feature matrix carries its index here."""

    def __init__(self, frames: torch.Tensor, mask: torch.Tensor, frame_p2: torch.Tensor | None):
        self.frames, self.mask, self.frame_p2 = frames, mask, frame_p2


class PooledAudioHead(nn.Module):
    """A variant's audio head: the shipped head's Linear over [embedding ; tags²] (the teacher
    start) plus a trainable temporal pooling of the window's frames, whose output columns
    start at zero, so step 0 is the teacher start exactly.

    Its input rows are [window index ; embedding ; tags²] (`fit_heads` and `score_split` read
    the tags² at the end, and pass rows through unchanged); the frames come from `store`."""

    def __init__(self, base: nn.Linear, kind: str, store: FrameStore, embed_dim: int = 384):
        super().__init__()
        self.kind = kind
        self.base = base
        self._store = [store]  # not a module or buffer: stays out of the state dict
        joint = base.out_features
        heads = 4 if "_mh" in kind else 1
        self.heads = heads
        if kind.startswith("attn"):
            self.score = nn.Linear(embed_dim, heads)
            nn.init.zeros_(self.score.weight)
            nn.init.zeros_(self.score.bias)
        width = 527 if "tags" in kind else embed_dim
        self.extra = nn.Linear(width * heads, joint, bias=False)
        nn.init.zeros_(self.extra.weight)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        store = self._store[0]
        idx = rows[:, 0].round().long()
        y = self.base(rows[:, 1:])
        frames = store.frames[idx].float()  # (B, T, 384)
        mask = store.mask[idx]  # (B, T)
        if "nomask" in self.kind:  # padding frames are frames too: the attention must learn
            mask = torch.ones_like(mask)
        values = store.frame_p2[idx].float() if "tags" in self.kind else frames
        if self.kind.startswith("attn"):
            s = self.score(frames).masked_fill(~mask[..., None], float("-inf"))
            w = torch.softmax(s, dim=1)  # (B, T, H)
            pooled = torch.einsum("bth,btc->bhc", w, values).flatten(1)
        elif self.kind.startswith("max"):
            pooled = values.masked_fill(~mask[..., None], 0.0).amax(1)
        elif self.kind.startswith("mean"):
            m = mask[..., None].float()
            pooled = (values * m).sum(1) / m.sum(1)
        else:
            raise ValueError(self.kind)
        return y + self.extra(pooled)


# -- training and scoring ------------------------------------------------------------------
AUTO_MINING = """
include = "{base}"

[auto_mining]
corpora = [
    ["clotho-captions/development.csv", "raw_text"],
    ["audiocaps-captions/train.csv", "caption"],
]
per_label = {per_label}
"""


def recipe_path(mining: int | None) -> Path:
    """The recipe as it is (None: configs/general-data.toml mines 20 captions a label), or with
    `mining` captions a label instead (0: none, the recipe before [auto_mining] was used)."""
    if mining is None:
        return DATA
    path = cache_dir() / f"pool-experiment-mining{mining}.toml"
    # beside the cache, the include's root is resolved from the included file's folder
    path.write_text(AUTO_MINING.format(base=DATA.resolve(), per_label=mining))
    return path


def frame_mask(seconds: np.ndarray, frames: int, window_s: float) -> np.ndarray:
    """(windows, frames) bool: frames that hold some of the signal (not only zero padding)."""
    valid = np.ceil(seconds / window_s * frames).astype(np.int64).clip(1, frames)
    return np.arange(frames)[None, :] < valid[:, None]


@torch.no_grad()
def frame_tag_p2(classifier: nn.Module, frames: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """(N, T, 384) fp16 → (N, T, 527) fp16: each frame through mn04's frozen classifier (its
    Linear - Hardswish - Linear, as the pooled embedding goes), squared sigmoid."""
    layers = nn.Sequential(*list(classifier.children())[2:]).eval()
    flat = frames.reshape(-1, frames.shape[-1])
    out = torch.empty((flat.shape[0], 527), dtype=torch.float16)
    for i in range(0, len(flat), chunk):
        out[i : i + chunk] = torch.sigmoid(layers(flat[i : i + chunk].float())).square().half()
    return out.reshape(*frames.shape[:2], 527)


class Experiment:
    def __init__(self, mining: int | None = None, holdout: float = 0.0, tag_power: float = 2.0):
        from earshot.data.cache import TextCache
        from earshot.data.datasets import load_dataset
        from earshot.data.recipe import recipe_for
        from earshot.encoders.text import load_text_encoder
        from earshot.model.dual import JointModel
        from earshot.model.pretrained import attach_backbone, pretrained_config
        from earshot.model.teacher import init_teacher_heads, pca_basis, teacher_matrix
        from earshot.train.features import BackboneFeatures, backbone_features

        torch.manual_seed(0)
        self.mining = mining
        data = recipe_path(mining)
        text_encoder = load_text_encoder("all-MiniLM-L6-v2")
        config = pretrained_config("mn04", "all-MiniLM-L6-v2", text_encoder.dim, 300, 10.0, 5.0)
        model = JointModel(config)
        attach_backbone(model, progress=False)
        model.attach_text_encoder(text_encoder)
        model.eval()
        self.model = model
        self.train_ds = load_dataset(data, "train")
        self.val_ds = load_dataset(data, "val")
        # real-caption queries of the val labels (the recipe without mining: same queries)
        recipe = recipe_for(DATA)
        val_labels = {c.label for c in self.val_ds.clips}
        self.train_labels = {c.label for c in self.train_ds.clips}
        self.caption_queries = {
            k: v for k, v in recipe.caption_queries().items() if k in val_labels
        }
        cq = [q for qs in self.caption_queries.values() for q in qs]
        cache = TextCache(cache_dir() / "text.sqlite")
        try:
            captions = list(
                dict.fromkeys(c for ds in (self.train_ds, self.val_ds) for c, _ in ds.captions())
            )
            vectors = cache.embed(text_encoder, captions)
            cq_vectors = cache.embed(text_encoder, cq)
        finally:
            cache.close()
        self.text = dict(zip(captions, vectors, strict=True))
        self.cq_text = torch.from_numpy(cq_vectors)
        self.teacher = teacher_matrix(model)
        basis = pca_basis(np.concatenate([self.teacher.numpy(), vectors]), 300)
        init_teacher_heads(model, self.teacher, basis)
        self.start = (
            {k: v.clone() for k, v in model.audio_head.state_dict().items()},
            {k: v.clone() for k, v in model.text_head.state_dict().items()},
        )
        backbone = config.encoder.weights.sha256
        cdir = cache_dir()
        self.bf = {
            "train": backbone_features(model, self.train_ds, cdir, backbone, progress=False),
            "val": backbone_features(model, self.val_ds, cdir, backbone, progress=False),
        }
        if tag_power != 2.0:  # the head reads p(c)^power (shipped: p²); the start follows
            for name, bf in self.bf.items():
                feats = bf.features.copy()
                probs = 1.0 / (1.0 + np.exp(-bf.logits.astype(np.float64)))
                feats[:, -probs.shape[1] :] = (probs**tag_power).astype(np.float32)
                self.bf[name] = BackboneFeatures(feats, bf.logits, bf.window_clip)
        self._store = None
        self.holdout = None
        if holdout:
            self._hold_out(recipe_for(data), holdout)

    def _hold_out(self, recipe, fraction: float) -> None:
        """`hold_out` on this experiment's splits: the training split loses the held-out
        labels, and `self.holdout` scores them (`columns`' holdout_* figures)."""
        from earshot.data.cache import TextCache

        self.train_ds, self.bf["train"], self.holdout, queries = hold_out(
            self.train_ds, self.bf["train"], self.val_ds, self.bf["val"], recipe.auto_mined(),
            fraction,
        )  # fmt: skip
        self.train_labels = {c.label for c in self.train_ds.clips}
        self.holdout_sentences = set(queries)
        cache = TextCache(cache_dir() / "text.sqlite")
        try:
            self.holdout["queries"] = torch.from_numpy(
                cache.embed(self.model.text_encoder, queries)
            )
        finally:
            cache.close()
        h = self.holdout
        print(
            f"held out of training: {len(h['labels'])} labels, {h['clips']} clips, "
            f"{int(h['is_caption'].sum())} captions",
            file=sys.stderr,
        )

    def caption_bank(self) -> torch.Tensor:
        """The relational term's bank: every sentence of the recipe's `[auto_mining]` corpora
        (the training splits of Clotho and AudioCaps), less the held-out labels' queries, which
        come from the same files; as sentence vectors (cached)."""
        from earshot.data.cache import TextCache
        from earshot.data.recipe import recipe_for

        recipe = recipe_for(recipe_path(self.mining))
        sentences = recipe._corpus_sentences(recipe.auto_mining.get("corpora", []))
        held = getattr(self, "holdout_sentences", set())
        bank = [s for s in dict.fromkeys(sentences) if s and s not in held]
        cache = TextCache(cache_dir() / "text.sqlite")
        try:
            vectors = cache.embed(self.model.text_encoder, bank)
        finally:
            cache.close()
        print(f"caption bank: {len(bank)} sentences", file=sys.stderr)
        return torch.from_numpy(vectors)

    def store(self) -> FrameStore:
        """The frame store (train windows, then val), checked against the backbone cache."""
        if self._store is not None:
            return self._store
        frames, masks = [], []
        for name, ds in (("train", self.train_ds), ("val", self.val_ds)):
            bf = self.bf[name]
            per = load_frames(self.model, ds)
            for i in np.unique(bf.window_clip):
                got = per[i]
                n = int((bf.window_clip == i).sum())
                if got is None or len(got[0]) != n:
                    raise SystemExit(f"frame cache lacks {ds.clips[i].path}: run `extract`")
                frames.append(got[0])
                masks.append(frame_mask(got[1], got[0].shape[1], 10.0))
            emb = np.concatenate(frames[-len(np.unique(bf.window_clip)) :]).astype(np.float32)
            gap = np.abs(emb.mean(1) - bf.features[:, :384]).max()
            print(
                f"{name}: frames' mean vs cached embedding, max |diff| {gap:.4f}", file=sys.stderr
            )
        f = torch.from_numpy(np.concatenate(frames))
        m = torch.from_numpy(np.concatenate(masks))
        p2 = frame_tag_p2(self.model.audio_encoder.classifier, f)
        self._store = FrameStore(f, m, p2)
        return self._store

    def splits(self, indexed: bool):
        from earshot.train.features import BackboneFeatures
        from earshot.train.heads import _Split

        out = []
        offset = 0
        for name, ds in (("train", self.train_ds), ("val", self.val_ds)):
            bf = self.bf[name]
            feats = bf.features
            if indexed:
                idx = np.arange(offset, offset + len(feats), dtype=np.float32)[:, None]
                feats = np.concatenate([idx, feats], axis=1)
            offset += len(bf.features)
            out.append(_Split(ds, BackboneFeatures(feats, bf.logits, bf.window_clip), self.text))
        return out

    def fresh_model(self, kind: str, hidden: int = 0):
        """The one model at its teacher start, its audio head a `kind` (reference: the shipped
        head, linear, or with `hidden` the residual MLP of model/heads.py, its branch at zero:
        the same start). Seeded by the caller (torch.manual_seed): the branch's first layer."""
        import dataclasses

        from earshot.model.heads import audio_head

        model = self.model
        model.config = dataclasses.replace(model.config, audio_hidden=hidden)
        base = audio_head(911, 300, hidden)  # [embedding 384 ; tags² 527] → joint 300
        base.load_state_dict(self.start[0], strict=not hidden)
        model.text_head.load_state_dict(self.start[1])
        if kind != "reference":
            if hidden:
                raise SystemExit("--hidden is for the reference head")
            base = PooledAudioHead(base, kind, self.store())
        model.audio_head = base
        return model

    @torch.no_grad()
    def columns(self, model, val, scorer=None) -> dict[str, float]:
        """The table's columns for `model` on val (and the held-out labels, with --holdout).
        `scorer(queries, features, window_clip, n_clips)` → (queries, n_clips) clip scores
        from sentence vectors and backbone features; `model_scorer(model)` by default."""
        from earshot.eval.metrics import per_query_metrics

        scorer = scorer or model_scorer(model)
        n = len(val.dataset)
        keep = np.flatnonzero(val.usable)
        scores = scorer(val.text, val.features, val.window_clip, n)[:, keep]
        rel = val.positives(np.arange(len(val.captions)), keep)
        has = rel.any(axis=1)
        m = per_query_metrics(scores[has], relevance=rel[has])["mAP@10"]
        source = np.array([val.dataset.clips[c].key.split("/")[0] for c in val.caption_clip])[has]
        out = {"all": float(m.mean())}
        for s in sorted(set(source)):
            out[s] = float(m[source == s].mean())
        # real captions of the val labels: relevant = clips of that label
        labels = [lab for lab, qs in self.caption_queries.items() for _ in qs]
        cs = scorer(self.cq_text, val.features, val.window_clip, n)[:, keep]
        crel = np.array([[val.dataset.clips[k].label == lab for k in keep] for lab in labels])
        ok = crel.any(axis=1)
        cm = per_query_metrics(cs[ok], relevance=crel[ok])["mAP@10"]
        out["captions"] = float(cm.mean())
        out["caption_queries"] = int(ok.sum())
        # split by whether the label was trained on: unseen labels' captions are what the test
        # set's sfx-zeroshot captions ask (val-only labels, and val labels with no train clip)
        unseen = np.array([lab not in self.train_labels for lab in labels])[ok]
        out["captions_seen"] = float(cm[~unseen].mean())
        out["captions_unseen"] = float(cm[unseen].mean())
        out["caption_queries_unseen"] = int(unseen.sum())
        if self.holdout is not None:
            h = self.holdout
            hs = scorer(h["queries"], h["features"], h["window_clip"], len(h["clip_labels"]))
            hrel = h["query_labels"][:, None] == h["clip_labels"][None, :]
            hm = per_query_metrics(hs, relevance=hrel)["mAP@10"]
            caps = h["is_caption"]
            out["holdout_captions"] = float(hm[caps].mean())
            # each label once: a label with 20 mined captions would outweigh one with 3
            ql = h["query_labels"][caps]
            out["holdout_captions_macro"] = float(
                np.mean([hm[caps][ql == lab].mean() for lab in h["labels"]])
            )
            out["holdout_labels"] = float(hm[~caps].mean())
            out["holdout_queries"] = int(caps.sum())
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}


def model_scorer(model):
    """Clip scores as the model ranks: its unit window vectors against its unit query vectors,
    each clip by its best window."""
    from earshot.eval.evaluate import clip_scores

    @torch.no_grad()
    def score(queries, features, window_clip, n):
        model.eval()
        windows = F.normalize(model.audio_head(features), dim=-1).numpy()
        return clip_scores(model.project_text(queries).numpy(), windows, window_clip, n)

    return score


def window_gate_scorer(model, start, bank, tau: float, low: float, width: float = 0.03):
    """Score fusion weighted per window (`run --window-gate`): w · cos(trained) +
    (1 − w) · cos(start), w = low + (1 − low) · sigmoid((k − tau) / width), where k is the
    window's largest cosine, through the trained heads, to any of the `bank` sentence vectors
    (the training captions): how well the trained head knows the window. `start`: the (audio,
    text) state dicts the heads began from (their linear parts)."""
    from earshot.model.heads import linear_part

    s_audio, s_text = (
        nn.Linear(*model.audio_head.weight.shape[::-1]),
        nn.Linear(*model.text_head.weight.shape[::-1]),
    )
    s_audio.load_state_dict(linear_part(start[0]))
    s_text.load_state_dict(linear_part(start[1]))

    @torch.no_grad()
    def score(queries, features, window_clip, n):
        model.eval()
        a_t = F.normalize(model.audio_head(features), dim=-1)
        a_s = F.normalize(s_audio(features), dim=-1)
        known = (a_t @ model.project_text(bank).T).max(dim=1).values
        w = (low + (1 - low) * torch.sigmoid((known - tau) / width))[None, :]
        q_t, q_s = model.project_text(queries), F.normalize(s_text(queries), dim=-1)
        sims = (w * (q_t @ a_t.T) + (1 - w) * (q_s @ a_s.T)).numpy()
        out = np.full((len(sims), n), -np.inf, dtype=np.float32)
        np.maximum.at(out.T, window_clip, sims.T)  # each clip by its best window
        return out

    return score


def hold_out(train_ds, train_bf, val_ds, val_bf, mined: dict, fraction: float):
    """Labels taken out of training for one run, to score captions of sounds the heads never
    learned on more queries than the val split has: `fraction` of the trained sfx labels that
    have at least HOLDOUT_MIN_CAPTIONS auto-mined captions (`mined`, label → sentences; picked
    by a stable hash of the name). Their clips leave the training split (and with them the
    teacher term's windows) and join val's clips as the gallery; their mined captions (from
    Clotho development / AudioCaps train, used by nothing else once the label is out) and their
    own words are the queries, relevant = the clips of that label. (The teacher start's PCA
    basis is fitted before this, on every caption, theirs too: unsupervised, one basis for
    every run.)

    Returns (train dataset, train features, the gallery: labels, features, window_clip,
    clip_labels, query_labels, is_caption, clips; the query sentences, in query order)."""
    from earshot.data.datasets import CaptionDataset
    from earshot.data.splits import stable_hash
    from earshot.train.features import BackboneFeatures

    sfx = {c.label for c in train_ds.clips if c.key.startswith("sfx/")}
    pool = sorted(lab for lab in sfx if len(mined.get(lab, ())) >= HOLDOUT_MIN_CAPTIONS)
    held = sorted(lab for lab in pool if stable_hash(f"holdout:{lab}") % 1000 < fraction * 1000)
    if not held:
        raise SystemExit(f"--holdout {fraction}: no label picked")
    keep = np.array([c.label not in held for c in train_ds.clips])
    rows = keep[train_bf.window_clip]  # the windows that stay
    new_index = np.cumsum(keep) - 1
    train = CaptionDataset(
        train_ds.name,
        train_ds.split,
        tuple(c for c, k in zip(train_ds.clips, keep, strict=True) if k),
    )
    features = BackboneFeatures(
        train_bf.features[rows], train_bf.logits[rows], new_index[train_bf.window_clip[rows]]
    )
    # the gallery: val's clips, then the held-out labels' (clip indices after val's)
    out = np.flatnonzero(~keep)
    out_index = np.full(len(train_ds.clips), -1)
    out_index[out] = np.arange(len(out)) + len(val_ds)
    captions = [(q, lab) for lab in held for q in mined[lab]]
    queries = captions + [(lab, lab) for lab in held]
    gallery = {
        "labels": held,
        "clips": len(out),
        "features": torch.from_numpy(np.concatenate([val_bf.features, train_bf.features[~rows]])),
        "window_clip": np.concatenate([val_bf.window_clip, out_index[train_bf.window_clip[~rows]]]),
        "clip_labels": np.array(
            [c.label for c in val_ds.clips] + [train_ds.clips[i].label for i in out]
        ),
        "query_labels": np.array([lab for _, lab in queries]),
        "is_caption": np.arange(len(queries)) < len(captions),
    }
    return train, features, gallery, [q for q, _ in queries]


def blend_rows(
    exp, kind, heads, val, wise, fuse, hidden: int = 0, gate=None, gated=None
) -> list[dict]:
    """Scores on val of the trained heads blended with the teacher start: `wise` weight-space
    interpolations θ = (1 − α)·θ_start + α·θ_trained (WiSE-FT, Wortsman et al. 2022; the same
    linear heads, no cost at search time) and `fuse` score fusions w · cos(trained) +
    (1 − w) · cos(start), built by `earshot.model.fusion.fuse_with_start` as the shipped model
    is (its `fusion` = 1 − w); `gate` (tau, low): that fusion weighted per window
    (`window_gate_scorer`, scoring only: no model ships it); `gated`, each (tau, low, width, top):
    the trained audio head gated per window by the training windows, as `earshot train`'s
    `window_gate` ships it (`earshot.model.fusion.gate_with_start`, `GatedHead`)."""
    from earshot.model.fusion import fuse_with_start

    if (wise or fuse) and kind != "reference":
        raise SystemExit("--wise and --fuse blend the reference head (plain linear heads)")
    if wise and hidden:
        raise SystemExit("--wise interpolates linear heads: not with --hidden")

    def trained():  # the one model, its heads the run's trained ones
        model = exp.fresh_model(kind, hidden)
        model.audio_head.load_state_dict(heads[0])
        model.text_head.load_state_dict(heads[1])
        return model

    rows = []
    for alpha in wise or ():
        model = exp.fresh_model(kind)
        for head, trained in ((model.audio_head, heads[0]), (model.text_head, heads[1])):
            start = head.state_dict()
            head.load_state_dict({k: (1 - alpha) * start[k] + alpha * trained[k] for k in start})
        rows.append({"wise": alpha, "val": exp.columns(model, val)})
    for w in fuse or ():
        model = trained()
        fused = fuse_with_start(model, exp.start, 1.0 - w)
        rows.append({"fuse": w, "val": exp.columns(fused, val)})
    if gate:
        if kind != "reference":
            raise SystemExit("--window-gate blends the reference head")
        model = trained()
        captions = dict.fromkeys(c for c, _ in exp.train_ds.captions())
        bank = torch.from_numpy(np.stack([exp.text[c] for c in captions]))
        scorer = window_gate_scorer(model, exp.start, bank, *gate)
        rows.append({"gate": list(gate), "val": exp.columns(model, val, scorer)})
    for one in gated or ():
        from earshot.model.fusion import gate_with_start

        if kind != "reference":
            raise SystemExit("--gated gates the reference head")
        model = trained()
        tau, low, width, top = one
        bank = torch.as_tensor(exp.bf["train"].features)  # the run's training windows
        shipped = gate_with_start(model, exp.start[0], bank, tau, low, width, int(top), "audio")
        rows.append({"gated": list(one), "val": exp.columns(shipped, val)})
    exp.fresh_model(kind)  # leave the one model at its start
    return rows


def score_folder(folder: Path, holdout: float = 0.0) -> dict:
    """The table's columns for a trained model folder's heads (as `earshot train` wrote them),
    on the cached backbone features: the same scoring as `run`'s rows."""
    from safetensors.torch import load_file

    config = json.loads((folder / "config.json").read_text())
    if config.get("fusion"):
        raise SystemExit(f"{folder}: fused heads; `score` reads unfused ones")
    exp = Experiment(None, holdout)
    model = exp.fresh_model("reference", int(config.get("audio_hidden") or 0))
    state = load_file(str(folder / "model.safetensors"))
    for name, head in (("audio_head.", model.audio_head), ("text_head.", model.text_head)):
        head.load_state_dict({k[len(name) :]: v for k, v in state.items() if k.startswith(name)})
    _, val = exp.splits(indexed=False)
    return exp.columns(model, val)


def run_variants(
    variants: list[str],
    steps: int,
    out: str | None,
    mining: int | None,
    short: str | None = None,
    short_val: list[str] | None = None,
    wise: list[float] | None = None,
    fuse: list[float] | None = None,
    hidden: int = 0,
    seed: int = 0,
    distill: float = 0.3,
    text_lr: float = 1.0,
    holdout: float = 0.0,
    temperature: float = 0.05,
    gate: list[float] | None = None,
    gated: list[list[float]] | None = None,
    relational: float = 0.0,
    bank_size: int = 1024,
    tag_power: float = 2.0,
) -> None:
    from earshot.train.heads import HeadSettings, _Split, fit_heads

    if hidden and (short or short_val):
        raise SystemExit("--hidden is not measured with --short / --short-val")
    if holdout and (short or short_val or any(k != "reference" for k in variants)):
        # the held-out gallery is scored on the cached padded features, by the reference head
        raise SystemExit("--holdout is for the reference head, without --short / --short-val")
    if gated and text_lr != 0:
        raise SystemExit("--gated scores both audio heads with one query: it needs --text-lr 0")
    exp = Experiment(mining, holdout, tag_power)
    if short:  # train and validate on what the backbone gives in that mode
        for name, ds in (("train", exp.train_ds), ("val", exp.val_ds)):
            exp.bf[name] = short_features(exp.model, ds, exp.bf[name], short)
    # Trained (and its step chosen) as shipped, then also scored on val in each of these modes:
    # the inference-only change, one row each beside the run's own.
    scored = {}
    if short_val:
        if short or any(k != "reference" for k in variants):
            raise SystemExit("--short-val is for the reference head trained as shipped")
        for mode in short_val:
            bf = short_features(exp.model, exp.val_ds, exp.bf["val"], mode)
            scored[mode] = _Split(exp.val_ds, bf, exp.text)
    settings = HeadSettings(
        steps=steps,
        batch_size=256,
        lr=1e-3,
        weight_decay=1e-4,
        temperature=temperature,
        distill=distill,
        text_lr=text_lr,
        eval_every=100,
        seed=seed,
        relational=relational,
        bank_size=bank_size,
    )
    bank = exp.caption_bank() if relational else None
    for kind in variants:
        t0 = time.perf_counter()
        train, val = exp.splits(indexed=kind != "reference")
        torch.manual_seed(seed)  # as `earshot train`: the seed, then the model is built
        model = exp.fresh_model(kind, hidden)
        start_cols = exp.columns(model, val)
        log = fit_heads(model, train, val, exp.teacher, settings, progress=False, bank=bank)
        base = {
            "variant": kind,
            "mining": "recipe" if mining is None else mining,
            "short": short or "",
            "short_val": "",
            "hidden": hidden,
            "seed": seed,
            "distill": distill,
            "text_lr": text_lr,
            "holdout": holdout,
            "temperature": temperature,
            "relational": relational,
            "bank_size": bank_size,
            "tag_power": tag_power,
            "steps": steps,
            "best_step": log["best_step"],
            "start": start_cols,
            "val": exp.columns(model, val),
            "seconds": round(time.perf_counter() - t0),
            "curve": [h["val_mAP@10"] for h in log["history"]],
        }
        rows = [base]
        # fresh_model resets the one model's heads: keep the trained ones first
        heads = (
            {k: v.clone() for k, v in model.audio_head.state_dict().items()},
            {k: v.clone() for k, v in model.text_head.state_dict().items()},
        )
        for mode, split in scored.items():
            start = exp.columns(exp.fresh_model(kind), split)  # the teacher start, that mode
            trained = exp.fresh_model(kind)
            trained.audio_head.load_state_dict(heads[0])
            trained.text_head.load_state_dict(heads[1])
            cols = exp.columns(trained, split)
            rows.append({**base, "short_val": mode, "start": start, "val": cols})
        for blended in blend_rows(exp, kind, heads, val, wise, fuse, hidden, gate, gated):
            rows.append({**base, **blended})
        for row in rows:
            print(json.dumps(row), flush=True)
            if out:
                with open(out, "a") as f:
                    f.write(json.dumps(row) + "\n")


COLUMNS = ("all", "sfx", "sfx-zeroshot", "instruments", "urbansound", "fsdd", "captions")
# `table --captions-split`: the caption column by whether its label was trained on
SPLIT_COLUMNS = (*COLUMNS, "captions_seen", "captions_unseen")
# `run --holdout F`: labels held out of training for the run (Experiment._hold_out)
HOLDOUT_COLUMNS = (*SPLIT_COLUMNS, "holdout_captions", "holdout_captions_macro", "holdout_labels")
HOLDOUT_MIN_CAPTIONS = 3


def table(rows_file: str, split_captions: bool = False) -> None:
    """The JSON lines of `run --out` as rows of the card's validation table (markdown)."""
    lines = Path(rows_file).read_text().splitlines()
    columns = SPLIT_COLUMNS if split_captions else COLUMNS
    if any(json.loads(line).get("holdout") for line in lines):
        columns = HOLDOUT_COLUMNS
    print("| variant | best step | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for line in lines:
        row = json.loads(line)
        name = row["variant"] + (
            f" + mining {row['mining']}" if row.get("mining") not in (None, "recipe") else ""
        )
        if row.get("hidden"):
            name += f" + MLP hidden {row['hidden']}"
        if row.get("distill", 0.3) != 0.3:
            name += f" + distill {row['distill']}"
        text_lr = row.get("text_lr", 1.0)
        if text_lr == 0:
            name += " + text head frozen"
        elif text_lr != 1:
            name += f" + text head lr × {text_lr}"
        if row.get("temperature", 0.05) != 0.05:
            name += f" + temperature {row['temperature']:g}"
        if row.get("tag_power", 2.0) != 2.0:
            name += f" + tags^{row['tag_power']:g}"
        if row.get("relational"):
            name += f" + relational {row['relational']:g} (bank {row['bank_size']})"
        if row.get("holdout"):
            name += f" + {row['holdout']:g} of captioned labels held out"
        if row.get("seed"):
            name += f" (seed {row['seed']})"
        if row.get("short"):
            name += f" + short clips {row['short']} (train and val)"
        if row.get("short_val"):
            name += f" + short clips {row['short_val']} (val only)"
        if "wise" in row:
            name += f" + WiSE α {row['wise']}"
        if "fuse" in row:
            name += f" + fused w {row['fuse']}"
        if "gate" in row:
            name += " + fused per window (τ {:g}, w ≥ {:g})".format(*row["gate"])
        if "gated" in row:
            name += " + gated by training windows (τ {:g}, w ≥ {:g}, width {:g}, top {:g})".format(
                *row["gated"]
            )
        cells = [f"{row['val'].get(c, float('nan')):.3f}" for c in columns]
        print(f"| {name} | {row['best_step']} | " + " | ".join(cells) + " |")


def main() -> None:
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("extract")
    es = sub.add_parser("extract-short", help="the short-clip modes' backbone features (once)")
    es.add_argument("--reverse", action="store_true", help="train first, clips last to first")
    r = sub.add_parser("run")
    r.add_argument(
        "variants",
        nargs="+",
        help="reference (the shipped head), or POOL_VALUES[_mh][_nomask]: POOL attn | max | "
        "mean over time, VALUES emb (the frames) | tags (per-frame tag probabilities²), _mh "
        "four attention heads, _nomask the padding frames pooled too; e.g. attn_emb",
    )
    r.add_argument("--steps", type=int, default=1000)
    r.add_argument("--out", default=None, help="append the rows (JSON lines) here")
    r.add_argument(
        "--mining",
        type=int,
        default=None,
        help="[auto_mining] captions a label instead of the recipe's (0: none)",
    )
    r.add_argument(
        "--short",
        choices=SHORT_MODES,
        default=None,
        help="train and validate on the backbone's features in this short-clip mode",
    )
    r.add_argument(
        "--short-val",
        choices=SHORT_MODES,
        nargs="+",
        default=None,
        help="train as shipped, also score validation in these short-clip modes (inference "
        "only; a row each)",
    )
    r.add_argument(
        "--wise",
        type=float,
        nargs="+",
        default=None,
        help="also score each trained head interpolated with its teacher start at these α "
        "(weight space; a row each)",
    )
    r.add_argument(
        "--fuse",
        type=float,
        nargs="+",
        default=None,
        help="also score w · trained cosine + (1 − w) · teacher-start cosine (a row each)",
    )
    r.add_argument(
        "--hidden",
        type=int,
        default=0,
        help="the reference head with a residual MLP of this width (model/heads.py; 0: linear)",
    )
    r.add_argument("--seed", type=int, default=0, help="training seed (as [train] seed)")
    r.add_argument("--distill", type=float, default=0.3, help="as [train] distill")
    r.add_argument(
        "--text-lr",
        type=float,
        default=1.0,
        help="as [train] text_head_lr: the text head's lr as a share of lr (0: frozen)",
    )
    r.add_argument(
        "--holdout",
        type=float,
        default=0.0,
        help="take this share of the trained sfx labels with mined captions out of training "
        "for the run, and score their captions and words (the holdout_* columns)",
    )
    r.add_argument("--temperature", type=float, default=0.05, help="as [train] temperature")
    r.add_argument(
        "--window-gate",
        type=float,
        nargs=2,
        metavar=("TAU", "LOW"),
        default=None,
        help="also score the trained heads fused with their start per window, the trained "
        "share LOW + (1 - LOW) * sigmoid((k - TAU) / 0.03), k the window's best cosine to a "
        "training caption (a row)",
    )
    r.add_argument(
        "--gated",
        type=float,
        nargs=4,
        metavar=("TAU", "LOW", "WIDTH", "TOP"),
        action="append",
        default=None,
        help="also score the trained audio head gated per window as `window_gate` ships it: "
        "the trained share LOW + (1 - LOW) * sigmoid((k - TAU) / WIDTH), k the mean of the "
        "window's TOP best cosines to the training windows (a row; repeat it for more rows "
        "from the one run)",
    )
    r.add_argument(
        "--relational",
        type=float,
        default=0.0,
        help="weight of the relational teacher term (HeadSettings.relational): each step, "
        "BANK sentences of the corpora's training splits rank the step's windows as the "
        "teacher start does (KL)",
    )
    r.add_argument("--bank-size", type=int, default=1024, help="sentences drawn a step")
    r.add_argument(
        "--tag-power",
        type=float,
        default=2.0,
        help="the audio head reads the tag probabilities to this power (shipped: 2), and the "
        "teacher start sums the class sentences by it",
    )
    r.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    sc = sub.add_parser("score", help="a model folder's heads scored on val: the columns")
    sc.add_argument(
        "model", help="a general model folder (unfused), e.g. src/earshot/models/general"
    )
    sc.add_argument("--holdout", type=float, default=0.0, help="as `run --holdout`")
    t = sub.add_parser("table")
    t.add_argument("rows", help="the JSON lines `run --out` wrote")
    t.add_argument(
        "--captions-split",
        action="store_true",
        help="also the caption queries of trained and of untrained val labels apart",
    )
    args = ap.parse_args()
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    if args.cmd == "table":
        table(args.rows, args.captions_split)
        return
    from earshot.data.datasets import load_dataset
    from earshot.model.io import load_model

    if args.cmd == "score":
        print(json.dumps(score_folder(Path(args.model), args.holdout)))
        return
    if args.cmd == "extract":
        model = load_model("general")
        for split in ("val", "train"):
            extract(model, load_dataset(DATA, split))
        return
    if args.cmd == "extract-short":
        model = load_model("general")
        for split in ("train", "val") if args.reverse else ("val", "train"):
            extract_short(model, load_dataset(DATA, split), reverse=args.reverse)
        return
    run_variants(
        args.variants,
        args.steps,
        args.out,
        args.mining,
        args.short,
        args.short_val,
        args.wise,
        args.fuse,
        args.hidden,
        args.seed,
        args.distill,
        args.text_lr,
        args.holdout,
        args.temperature,
        args.window_gate,
        args.gated,
        args.relational,
        args.bank_size,
        args.tag_power,
    )


if __name__ == "__main__":
    main()
