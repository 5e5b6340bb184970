"""Heads on a frozen pretrained backbone: the general model's training.

The backbone (EfficientAT's AudioSet MobileNet) is named by the model folder and never trained
here, so every training window goes through it once: its pooled embedding and its 527 tag
logits are cached (`train/features.py`), and training fits the two linear heads on those
features, a few thousand steps of small matrix products that take minutes on 2 CPU cores.

Start: the teacher space (`earshot.model.teacher`): a window's vector is the sum of the sentence
vectors of AudioSet's class names, weighted by its squared tag probabilities, and queries go
through the sentence encoder as they are, both projected to `joint_dim` by one PCA basis. That
start already knows AudioSet's 527 classes; the heads then learn our labelled sounds with a
multi-positive InfoNCE over in-batch captions (a caption is positive for every clip whose tags
hold all of its tags), while a distillation term (`distill`) keeps every window's vector near
the text head's image of its teacher vector, so the breadth beyond our labels is not traded
away. `text_lr` slows the text head (0: it stays at its start and only the audio head learns),
so queries stay near where the sentence encoder puts them and a caption of a sound our labels
never named is not bent toward those labels. Validation (text→audio mAP@10 on the val split,
clips scored by their best window, as `earshot evaluate` scores them) picks the step that
lands in the model folder; step 0, the teacher start, is scored too, so a run that cannot beat
it says so.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from earshot.data.datasets import CaptionDataset
from earshot.errors import EarshotError
from earshot.eval.evaluate import clip_scores
from earshot.eval.metrics import per_query_metrics
from earshot.model.dual import JointModel
from earshot.train.batches import _caption_tags, _clip_tags
from earshot.train.features import BackboneFeatures, backbone_features, reads_tags

LOG_FILE = "heads-log.json"


@dataclass(frozen=True)
class HeadSettings:
    steps: int = 3000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    temperature: float = 0.05
    distill: float = 1.0  # weight of the teacher-space term; 0 turns it off
    # Weight of the relational teacher term: for a draw of `bank_size` sentences of a caption
    # bank (fit_heads' `bank`), the softmax over the step's windows of their scores against
    # each sentence is pulled towards the teacher start's (KL), so how any sentence ranks the
    # audio, not only our captions, stays the teacher's where training does not teach it.
    relational: float = 0.0
    bank_size: int = 1024
    # The text head's learning rate as a share of `lr`; 0 keeps it at its start (the sentence
    # encoder's PCA) and only the audio head learns, so a query our labels never taught is
    # placed as the sentence encoder places it (a fully trained text head lost the untrained
    # labels' captions on validation).
    text_lr: float = 1.0
    # A student's (fit_student): the caption InfoNCE's weight beside the teacher term; 0 = off.
    caption_loss: float = 1.0
    eval_every: int = 250
    seed: int = 0


class _Split:
    """A split's windows, clips, captions and their text features, as tensors for training."""

    def __init__(self, dataset: CaptionDataset, bf: BackboneFeatures, text: dict[str, np.ndarray]):
        self.dataset = dataset
        self.features = torch.from_numpy(bf.features)
        self.window_clip = bf.window_clip
        n = len(dataset)
        self.clip_windows = [np.flatnonzero(bf.window_clip == i) for i in range(n)]
        self.usable = np.array([len(w) > 0 for w in self.clip_windows])
        pairs = dataset.captions()
        self.captions = [c for c, _ in pairs]
        self.caption_clip = np.array([i for _, i in pairs])
        self.text = torch.from_numpy(np.stack([text[c] for c in self.captions]))
        # tags: each clip's, each caption's (a caption matches clips holding all of its tags)
        vocab = sorted({t for c in dataset.clips for t in _clip_tags(c)})
        index = {t: i for i, t in enumerate(vocab)}
        self.clip_tags = np.zeros((n, len(vocab)), dtype=bool)
        for i, c in enumerate(dataset.clips):
            self.clip_tags[i, [index[t] for t in _clip_tags(c)]] = True
        cap_tags = [t for c in dataset.clips for t in _caption_tags(c, _clip_tags(c))]
        self.caption_tags = np.zeros((len(cap_tags), len(vocab)), dtype=bool)
        for j, tags in enumerate(cap_tags):
            self.caption_tags[j, [index[t] for t in tags if t in index]] = True
        # A caption holds for a clip when none of its tags is missing from the clip's: one
        # matrix product (captions x tags) @ (tags x clips) instead of a 3-d boolean test.
        self.caption_tags_f = torch.from_numpy(self.caption_tags.astype(np.float32))
        self.clip_missing_f = torch.from_numpy((~self.clip_tags).astype(np.float32))
        first = np.zeros(n + 1, dtype=np.int64)
        np.add.at(first, self.caption_clip + 1, 1)
        self.caption_start = np.cumsum(first)  # clip i's captions: [start[i], start[i + 1])

    def positives(self, captions: np.ndarray, clips: np.ndarray) -> np.ndarray:
        """(len(captions), len(clips)) bool: caption c holds for clip a (as `batches.holds`)."""
        missing = self.caption_tags_f[captions] @ self.clip_missing_f[clips].T
        return (missing == 0).numpy()


@torch.no_grad()
def score_split(model: JointModel, split: _Split) -> float:
    """Text→audio mAP@10 over the split's captions, relevant = clips holding the caption's tags,
    clips scored by their best window."""
    model.eval()
    windows = F.normalize(model.audio_head(split.features), dim=-1).numpy()
    text = model.project_text(split.text).numpy()
    scores = clip_scores(text, windows, split.window_clip, len(split.dataset))
    keep = np.flatnonzero(split.usable)
    rel = split.positives(np.arange(len(split.captions)), keep)  # (captions, clips)
    scores = scores[:, keep]
    has = rel.any(axis=1)
    return float(per_query_metrics(scores[has], relevance=rel[has])["mAP@10"].mean())


def fit_heads(
    model: JointModel,
    train: _Split,
    val: _Split,
    teacher: torch.Tensor,
    settings: HeadSettings,
    progress: bool = True,
    bank: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Fit `model`'s two heads in place; leaves the best validation step's weights in it.

    `teacher` (n_tags, text_dim): the sentence vector of each tag's name, the teacher space.
    `bank` (sentences, text_dim): the sentence vectors the relational term draws from.
    """
    if settings.relational > 0 and (bank is None or not len(bank)):
        raise ValueError("the relational teacher term needs a caption bank")
    if settings.relational > 0 and settings.distill <= 0:
        raise ValueError("the relational teacher term rides on the teacher term (distill > 0)")
    gen = torch.Generator().manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    groups = [{"params": [*model.audio_head.parameters()]}]
    if settings.text_lr > 0:
        groups.append(
            {"params": [*model.text_head.parameters()], "lr": settings.lr * settings.text_lr}
        )
    model.text_head.requires_grad_(settings.text_lr > 0)
    opt = torch.optim.AdamW(groups, lr=settings.lr, weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=settings.steps)
    n_tags = teacher.shape[0]
    # The teacher vector of every training window: Σ_c p(c)² · sentence(c), in the text space.
    tag_p2 = train.features[:, -n_tags:] if reads_tags(model) else None
    if tag_p2 is None:
        raise ValueError("fit_heads needs a model whose audio head reads the tag probabilities")
    teacher_text = F.normalize(tag_p2 @ teacher, dim=-1)  # (windows, text_dim)
    weights = clip_weights(train)
    validation = Validation(model, val, progress)
    bs = min(settings.batch_size, int(train.usable.sum()))
    for step in range(1, settings.steps + 1):
        model.train()
        clips, wins, caps = draw_batch(train, weights, rng, bs)
        a = F.normalize(model.audio_head(train.features[wins]), dim=-1)
        loss = caption_nce(model, train, a, clips, caps, settings.temperature)
        if settings.distill > 0:
            # Every window of the batch, plus as many others: the teacher term sees all audio.
            extra = torch.randint(len(train.features), (bs,), generator=gen).numpy()
            rows = np.concatenate([wins, extra])
            a_all = F.normalize(model.audio_head(train.features[rows]), dim=-1)
            target = model.project_text(teacher_text[rows])
            loss = loss + settings.distill * (1.0 - (a_all * target).sum(-1)).mean()
            if settings.relational > 0:
                draw = torch.randint(len(bank), (settings.bank_size,), generator=gen)
                loss = loss + settings.relational * relational_kl(
                    a_all, target.detach(), model.project_text(bank[draw]), settings.temperature
                )
        validation.descend(loss, opt, sched, step, settings)
    return validation.keep_best()


def relational_kl(
    a: torch.Tensor, teacher: torch.Tensor, sentences: torch.Tensor, temperature: float
) -> torch.Tensor:
    """KL(teacher ‖ trained) of each sentence's softmax over the windows, mean over sentences:
    `a` and `teacher` (windows, d) unit window vectors, trained and the teacher's; `sentences`
    (n, d) unit sentence vectors. Text→audio search ranks windows for a sentence, so that is
    the axis the softmax runs along."""
    log_t = F.log_softmax(sentences @ teacher.T / temperature, dim=1)
    log_a = F.log_softmax(sentences @ a.T / temperature, dim=1)
    return (log_t.exp() * (log_t - log_a)).sum(1).mean()


def clip_weights(train: _Split) -> np.ndarray:
    """Each training clip's chance to be drawn: its recipe weight, 0 for clips not decoded."""
    weights = np.array([c.weight for c in train.dataset.clips], dtype=np.float64)
    weights[~train.usable] = 0.0
    return weights / weights.sum()


def draw_batch(train: _Split, weights: np.ndarray, rng: np.random.Generator, bs: int):
    """`bs` distinct clips by weight, a window of each and a caption of each: three arrays."""
    clips = rng.choice(len(weights), size=bs, replace=False, p=weights)
    wins = np.array([rng.choice(train.clip_windows[c]) for c in clips])
    lo, hi = train.caption_start[clips], train.caption_start[clips + 1]
    caps = lo + (rng.random(bs) * (hi - lo)).astype(np.int64)
    return clips, wins, caps


def caption_nce(
    model: JointModel, train: _Split, a: torch.Tensor, clips, caps, temperature: float
) -> torch.Tensor:
    """The symmetric multi-positive InfoNCE between the batch's unit window vectors `a` and
    its captions (a caption is positive for every clip of the batch it holds for)."""
    t = model.project_text(train.text[caps])
    pos = torch.from_numpy(train.positives(caps, clips).T.copy())  # (clips, captions)
    logits = a @ t.T / temperature
    return 0.5 * (_multi_positive_nce(logits, pos) + _multi_positive_nce(logits.T, pos.T))


class Validation:
    """The heads scored on the val split (step 0 at once), the history, the best step's heads."""

    def __init__(self, model: JointModel, val: _Split, progress: bool = True):
        self.model, self.val, self.progress = model, val, progress
        self.history: list[dict[str, Any]] = [
            {"step": 0, "val_mAP@10": round(score_split(model, val), 4)}
        ]
        self.best = (self.history[0]["val_mAP@10"], 0, _heads_state(model))
        self.start = time.perf_counter()

    def score(self, step: int, loss: float) -> None:
        score = score_split(self.model, self.val)
        self.history.append({"step": step, "loss": round(loss, 4), "val_mAP@10": round(score, 4)})
        if self.progress:
            print(
                f"step {step}: loss {loss:.4f}, val mAP@10 {score:.4f} "
                f"({time.perf_counter() - self.start:.0f} s)",
                file=sys.stderr,
            )
        if score > self.best[0]:
            self.best = (score, step, _heads_state(self.model))

    def descend(self, loss, opt, sched, step: int, settings: HeadSettings) -> None:
        """One optimiser and schedule step on `loss`; then the val score, every
        `settings.eval_every` steps and at the last."""
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % settings.eval_every == 0 or step == settings.steps:
            self.score(step, float(loss.detach()))

    def keep_best(self) -> dict[str, Any]:
        """Put the best step's heads back into the model (in eval mode); the run's log."""
        self.model.audio_head.load_state_dict(self.best[2][0])
        self.model.text_head.load_state_dict(self.best[2][1])
        self.model.text_head.requires_grad_(True)
        self.model.eval()
        return {
            "best_step": self.best[1],
            "best_val_mAP@10": round(self.best[0], 4),
            "history": self.history,
        }


def _with_audio_hidden(model: JointModel, hidden: int) -> JointModel:
    """`model` (a linear audio head) with a residual MLP of `hidden` beside that head: the
    same vectors, since the branch starts at zero (model/heads.py); backbone shared."""
    wider = model.with_heads(dataclasses.replace(model.config, audio_hidden=hidden))
    with torch.no_grad():
        wider.audio_head.weight.copy_(model.audio_head.weight)
        wider.audio_head.bias.copy_(model.audio_head.bias)
        wider.text_head.load_state_dict(model.text_head.state_dict())
    return wider


def _heads_state(model: JointModel):
    return (
        {k: v.detach().clone() for k, v in model.audio_head.state_dict().items()},
        {k: v.detach().clone() for k, v in model.text_head.state_dict().items()},
    )


def _multi_positive_nce(logits: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """-log of the softmax mass on each row's positives (rows without one are skipped)."""
    has = pos.any(dim=1)
    log_all = torch.logsumexp(logits, dim=1)
    log_pos = torch.logsumexp(logits.masked_fill(~pos, float("-inf")), dim=1)
    return (log_all - log_pos)[has].mean()


def train_general(cfg, progress: bool = True) -> dict[str, Any]:
    """`earshot train` for a config with `backbone` set: the frozen backbone, the teacher
    start, the heads fitted on cached backbone features; the model folder lands in `cfg.out`."""
    from earshot.data.cache import TextCache
    from earshot.data.datasets import load_dataset
    from earshot.encoders.text import load_text_encoder
    from earshot.model.io import load_model, model_id, save_model
    from earshot.model.pretrained import attach_backbone, has_backbone, pretrained_config
    from earshot.model.teacher import init_teacher_heads, pca_basis, teacher_matrix

    torch.manual_seed(cfg.seed)
    if cfg.init:
        # Start from a model folder on a named backbone (its heads, e.g. a teacher folder
        # written by `earshot init-model --efficientat`), not from the teacher start.
        model = load_model(cfg.init)
        if not has_backbone(model.config) or not reads_tags(model):
            raise EarshotError(
                f"init '{cfg.init}' is not a model on a named tagging backbone; "
                "heads-only training needs one (earshot init-model DIR --efficientat mn04)"
            )
        if cfg.audio_hidden and cfg.audio_hidden != model.config.audio_hidden:
            if model.config.audio_hidden:
                raise EarshotError(
                    f"audio_hidden {cfg.audio_hidden} differs from init '{cfg.init}''s "
                    f"({model.config.audio_hidden}): an init keeps its own residual MLP; "
                    "leave audio_hidden out, or init from a model with a linear audio head"
                )
            model = _with_audio_hidden(model, cfg.audio_hidden)
        if model.config.fusion or model.config.window_gate is not None:
            raise EarshotError(
                f"init '{cfg.init}' has fused heads (fusion {model.config.fusion}, window_gate "
                f"{'set' if model.config.window_gate else 'unset'}): train from its recipe "
                "instead (its training config sets them), or init from an "
                "unfused model folder"
            )
        if cfg.tag_power != 2.0 and cfg.tag_power != model.config.encoder.tag_power:
            raise EarshotError(
                f"tag_power {cfg.tag_power:g} differs from init '{cfg.init}''s "
                f"({model.config.encoder.tag_power:g}): an init keeps the tag columns its heads "
                "were fitted on; leave tag_power out, or set it to the init's"
            )
        text_encoder = model.text_encoder
    else:
        text_encoder = load_text_encoder(cfg.text_model)
        config = pretrained_config(
            cfg.encoder, cfg.text_model, text_encoder.dim, cfg.joint_dim, cfg.window_s,
            cfg.hop_s, tag_power=cfg.tag_power,
        )  # fmt: skip
        if cfg.audio_hidden:
            config = dataclasses.replace(config, audio_hidden=cfg.audio_hidden)
        model = JointModel(config)
        attach_backbone(model, progress=progress)
        model.attach_text_encoder(text_encoder)
    config = model.config
    model.eval()
    train_ds = load_dataset(cfg.dataset, cfg.train_split, cfg.audio_dir)
    val_ds = load_dataset(cfg.dataset, cfg.val_split, cfg.audio_dir)
    cache = TextCache(Path(cfg.cache_dir) / "text.sqlite")
    try:
        captions = list(dict.fromkeys(c for ds in (train_ds, val_ds) for c, _ in ds.captions()))
        vectors = cache.embed(text_encoder, captions)
    finally:
        cache.close()
    text = dict(zip(captions, vectors, strict=True))
    teacher = teacher_matrix(model)
    if not cfg.init:
        # One basis for both sides: the directions our captions and AudioSet's classes span.
        basis = pca_basis(np.concatenate([teacher.numpy(), vectors]), config.joint_dim)
        init_teacher_heads(model, teacher, basis)
    backbone = config.encoder.weights.sha256 or config.encoder.weights.id
    bf_train = backbone_features(model, train_ds, cfg.cache_dir, backbone, progress=progress)
    bf_val = backbone_features(model, val_ds, cfg.cache_dir, backbone, progress=progress)
    settings = HeadSettings(
        steps=cfg.epochs * (cfg.steps_per_epoch or 100),
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        temperature=cfg.temperature,
        distill=cfg.distill,
        text_lr=cfg.text_head_lr,
        eval_every=cfg.steps_per_epoch or 100,
        seed=cfg.seed,
    )
    start = _heads_state(model)  # where the heads began: fused with them below, if asked
    log = fit_heads(
        model,
        _Split(train_ds, bf_train, text),
        _Split(val_ds, bf_val, text),
        teacher,
        settings,
        progress=progress,
    )
    if cfg.fusion:
        from earshot.model.fusion import fuse_with_start

        model = fuse_with_start(model, start, cfg.fusion)
        log["fusion"] = cfg.fusion
    if cfg.window_gate:
        from earshot.model.fusion import gate_with_start

        # the bank: every training window, as the trained audio head places it
        tau, low, width, top = cfg.window_gate
        bank = torch.as_tensor(bf_train.features)
        model = gate_with_start(model, start[0], bank, tau, low, width, int(top), side="audio")
        log["window_gate"] = list(cfg.window_gate)
    out = save_model(model, cfg.out)
    log.update(
        model_id=model_id(model),
        train_clips=len(train_ds),
        train_windows=len(bf_train.window_clip),
        val_clips=len(val_ds),
        settings=settings.__dict__,
        config=cfg.to_dict(),
    )
    (out / LOG_FILE).write_text(json.dumps(log, indent=2) + "\n")
    return {"out": out, **log}
