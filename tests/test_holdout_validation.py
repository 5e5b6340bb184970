"""scripts/pool_experiment.py's `hold_out` (MODEL_CARD-general.md, "Captions of labels held
out of training"): which clips leave training, and what the gallery and its queries are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from earshot.data.datasets import CaptionDataset, Clip
from earshot.train.features import BackboneFeatures


@pytest.fixture(scope="module")
def pe(pool_experiment):
    return pool_experiment


def split(name, labels, windows_per_clip, offset):
    clips = tuple(
        Clip(f"{src}/{name}{i}.wav", Path(f"{name}{i}.wav"), (f"{lab} sound",), lab)
        for i, (src, lab) in enumerate(labels)
    )
    window_clip = np.repeat(np.arange(len(clips)), windows_per_clip)
    # each window's features name its clip (offset + clip index), so rows can be traced
    feats = (offset + window_clip)[:, None].astype(np.float32) * np.ones((1, 3), np.float32)
    return CaptionDataset(name, name, clips), BackboneFeatures(feats, feats[:, :2], window_clip)


def test_held_out_labels_leave_training_and_make_the_gallery(pe):
    labels = [f"sound {k}" for k in range(40)]
    train_labels = [("sfx", lab) for lab in labels for _ in range(2)] + [("urbansound", "dog")]
    train, tbf = split("train", train_labels, 3, 0)
    val, vbf = split("val", [("sfx", "sound 0"), ("sfx", "other")], 2, 1000)
    # every sfx label has enough mined captions but the last; dog is not an sfx label
    mined = {lab: [f"{lab} caption {j}" for j in range(4)] for lab in labels[:-1]}
    mined["sound 39"] = ["only one"]
    mined["dog"] = [f"dog caption {j}" for j in range(5)]

    new, nbf, gallery, queries = pe.hold_out(train, tbf, val, vbf, mined, 0.3)
    held = set(gallery["labels"])
    assert held and held <= set(labels[:-1])  # never too few captions, never another source
    assert 0.1 < len(held) / 39 < 0.5
    # no clip, and no window (the teacher term samples windows), of a held label is trained on
    assert {c.label for c in new.clips} == {*labels, "dog"} - held
    assert len(nbf.features) == 3 * len(new.clips)
    kept = {int(f) for f in nbf.features[:, 0]}
    assert all(train.clips[i].label not in held for i in kept)
    assert [new.clips[c].label for c in nbf.window_clip] == [
        train.clips[int(f)].label for f in nbf.features[:, 0]
    ]
    # the gallery: val's clips, then the held ones, each window pointing at its clip's label
    assert gallery["clips"] == 2 * len(held)
    assert list(gallery["clip_labels"][:2]) == ["sound 0", "other"]
    for f, c in zip(gallery["features"][:, 0].numpy(), gallery["window_clip"], strict=True):
        source = val.clips[int(f) - 1000] if f >= 1000 else train.clips[int(f)]
        assert gallery["clip_labels"][c] == source.label
    # queries: every mined caption of a held label, then its own words, in that order
    caps = gallery["is_caption"]
    assert len(queries) == len(gallery["query_labels"]) == 5 * len(held)
    assert all(
        q in mined[lab]
        for q, lab in zip(np.array(queries)[caps], gallery["query_labels"][caps], strict=True)
    )
    assert list(np.array(queries)[~caps]) == sorted(held) == gallery["labels"]
    # the pick is a stable hash of the name: the same again
    assert pe.hold_out(train, tbf, val, vbf, mined, 0.3)[2]["labels"] == gallery["labels"]


def test_no_label_picked_is_an_error(pe):
    train, tbf = split("train", [("sfx", "a")], 1, 0)
    val, vbf = split("val", [("sfx", "a")], 1, 1000)
    with pytest.raises(SystemExit, match="no label picked"):
        pe.hold_out(train, tbf, val, vbf, {"a": ["x", "y", "z"]}, 0.0001)


class Heads(torch.nn.Module):
    """What the scorers read of a model: an audio head, a text head, project_text."""

    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.audio_head, self.text_head = torch.nn.Linear(4, 3), torch.nn.Linear(5, 3)

    def project_text(self, x):
        return torch.nn.functional.normalize(self.text_head(x), dim=-1)


def test_the_window_gate_runs_between_the_trained_and_the_start_scores(pe):
    trained, start = Heads(0), Heads(1)
    begun = (start.audio_head.state_dict(), start.text_head.state_dict())
    features, queries, bank = torch.randn(6, 4), torch.randn(2, 5), torch.randn(7, 5)
    window_clip, n = np.array([0, 0, 1, 1, 2, 2]), 3

    def gated(tau, low):
        return pe.window_gate_scorer(trained, begun, bank, tau, low)(
            queries, features, window_clip, n
        )

    as_trained = pe.model_scorer(trained)(queries, features, window_clip, n)
    as_start = pe.model_scorer(start)(queries, features, window_clip, n)
    # every window known (k > -1 always) or the trained share at 1: the trained scores
    assert np.allclose(gated(-10.0, 0.0), as_trained, atol=1e-6)
    assert np.allclose(gated(10.0, 1.0), as_trained, atol=1e-6)
    # no window known and no floor: the start's scores
    assert np.allclose(gated(10.0, 0.0), as_start, atol=1e-6)
    # half and half: between the two, window by window, so not above the best of either
    half = gated(10.0, 0.5)
    assert np.all(half <= np.maximum(as_trained, as_start) + 1e-6)
    assert not np.allclose(half, as_trained) and not np.allclose(half, as_start)
