"""Training batches: tag positives, two-sound mixtures, gain, shift, noise; a recipe run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from earshot.config import AudioConfig
from earshot.data.cache import build_feature_cache
from earshot.data.datasets import CaptionDataset, Clip
from earshot.data.recipe import mixture_captions_for
from earshot.errors import EarshotError
from earshot.model.io import load_model
from earshot.testing.audio import write_noise, write_tone
from earshot.testing.datasets import write_labels_dataset
from earshot.train.batches import (
    DB_FLOOR,
    BatchMaker,
    mean_power_db,
    noise_bank,
    power_sum_db,
)
from earshot.train.config import ConfigError, TrainConfig, load_train_config
from earshot.train.loop import Trainer

SR = 16000
# A small frontend: one-second windows, so every clip below is exactly one window.
AUDIO = AudioConfig(
    sample_rate=SR, n_fft=512, hop_length=160, n_mels=32, fmax=8000.0, window_s=1.0, hop_s=1.0
)

# --- dB arithmetic --------------------------------------------------------------------------


def reference_power_sum(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return 10 * np.log10(10 ** (a / 10) + 10 ** (b / 10))


def test_power_sum_db_is_the_sum_of_powers():
    a = np.array([0.0, -20.0, 10.0, 60.0, -100.0, -100.0, 30.0, -45.5])
    b = np.array([0.0, -23.0, -80.0, -100.0, -100.0, -90.0, 30.0, 12.25])
    expected = reference_power_sum(a, b)
    got64 = power_sum_db(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(got64, expected, rtol=0, atol=1e-9)
    got32 = power_sum_db(torch.from_numpy(a).float(), torch.from_numpy(b).float()).numpy()
    np.testing.assert_allclose(got32, expected, rtol=0, atol=1e-4)
    # Two equal powers add 3.01 dB; the floor plus the floor is 3 dB above the floor.
    assert got64[0] == pytest.approx(10 * np.log10(2), abs=1e-9)
    assert got64[4] == pytest.approx(DB_FLOOR + 10 * np.log10(2), abs=1e-9)
    # A level 160 dB down changes nothing visible; the sum is never below either part.
    assert got64[3] == pytest.approx(60.0, abs=1e-9)
    assert np.all(got64 >= np.maximum(a, b))
    assert np.all(got64 <= np.maximum(a, b) + 10 * np.log10(2) + 1e-9)


def test_power_sum_db_is_symmetric_and_broadcasts():
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(3, 5, 4, generator=gen, dtype=torch.float64) * 120 - 100
    b = torch.rand(5, 4, generator=gen, dtype=torch.float64) * 120 - 100
    assert torch.allclose(power_sum_db(a, b), power_sum_db(b, a))
    np.testing.assert_allclose(
        power_sum_db(a, b).numpy(), reference_power_sum(a.numpy(), b.numpy()[None]), atol=1e-9
    )


def test_mean_power_db():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(4, 6, 5, generator=gen, dtype=torch.float64) * 80 - 70
    x[1] = -100.0  # silence: the mean power is the floor
    x[2] = 7.0  # a constant level is its own mean
    expected = 10 * np.log10((10 ** (x.numpy() / 10)).reshape(4, -1).mean(axis=1))
    got = mean_power_db(x)
    assert got.shape == (4,)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-9)
    assert got[1] == pytest.approx(-100.0) and got[2] == pytest.approx(7.0)
    np.testing.assert_allclose(mean_power_db(x.float()).numpy(), expected, atol=1e-3)


def test_noise_bank():
    bank = noise_bank(AUDIO, n=6, seed=0)
    frames = 1 + AUDIO.window_samples // AUDIO.hop_length
    assert bank.shape == (6, frames, AUDIO.n_mels) and bank.dtype == torch.float32
    assert torch.isfinite(bank).all() and (bank >= DB_FLOOR).all()
    assert torch.equal(bank, noise_bank(AUDIO, n=6, seed=0))
    assert not torch.equal(bank, noise_bank(AUDIO, n=6, seed=1))
    # White, pink, brown in turn: the redder the noise, the more its low bands outweigh its high.
    tilt = bank[:, :, :4].mean((1, 2)) - bank[:, :, -4:].mean((1, 2))
    assert tilt[0] < tilt[1] < tilt[2] and tilt[3] < tilt[4] < tilt[5]


# --- batches over a hand-built dataset ------------------------------------------------------

DOG, HOWL, SIREN, HUM = "dog_bark", "dog_howl", "siren", "hum"
# Captions are distinct strings except "a dog", which carries the same tags wherever it occurs.
CAPTION_TAGS = {
    "A dog barks": {DOG},
    "A dog howls": {HOWL},
    "a dog": {"dog"},
    "A siren wails": {SIREN},
    "A hum": {HUM},
    "a machine": {"machine"},
    "Silence": {"quiet"},
}
MIXTURES = [
    ("A dog barks while a siren wails", frozenset({DOG, SIREN})),
    ("A siren and a dog", frozenset({DOG, SIREN})),
    ("A hum as a siren wails", frozenset({HUM, SIREN})),
    ("A dog barks and a hum", frozenset({DOG, HUM})),
]
CAPTION_TAGS.update({c: set(t) for c, t in MIXTURES})
LABEL_TAGS = {DOG: {DOG, "dog"}, SIREN: {SIREN}, HUM: {HUM, "machine"}}


def tagged_clip(root: Path, name: str, label: str, tags: set[str], captions: list[str]) -> Clip:
    return Clip(
        name,
        root / name,
        tuple(captions),
        label,
        tags=frozenset(tags),
        caption_tags=tuple(frozenset(CAPTION_TAGS[c]) for c in captions),
    )


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    """Eight one-window clips with recipe-style tags and their feature cache."""
    root = tmp_path_factory.mktemp("batches")
    specs = [
        ("bark-0.wav", DOG, {DOG, "dog"}, ["A dog barks", "a dog"], 300.0),
        ("bark-1.wav", DOG, {DOG, "dog"}, ["A dog barks", "a dog"], 350.0),
        ("howl-0.wav", HOWL, {HOWL, "dog"}, ["A dog howls", "a dog"], 500.0),
        ("siren-0.wav", SIREN, {SIREN}, ["A siren wails"], 1500.0),
        ("siren-1.wav", SIREN, {SIREN}, ["A siren wails"], 1700.0),
        ("hum-0.wav", HUM, {HUM, "machine"}, ["A hum", "a machine"], 120.0),
        ("hum-1.wav", HUM, {HUM, "machine"}, ["A hum", "a machine"], 100.0),
        ("quiet.wav", "silence", {"silence", "quiet"}, ["Silence"], None),
    ]
    clips = []
    for i, (name, label, tags, captions, freq) in enumerate(specs):
        if freq is None:
            write_tone(root / name, 1.0, SR, amplitude=0.0, noise=0.0)  # digital silence
        else:
            write_tone(root / name, 1.0, SR, freq=freq, seed=i, amplitude=0.4)
        clips.append(tagged_clip(root, name, label, tags, captions))
    dataset = CaptionDataset("hand", "train", tuple(clips))
    store = build_feature_cache(dataset, AUDIO, root / "cache", progress=False)
    assert [len(w) for w in store.clip_windows] == [1] * len(clips)
    originals = store.logmel(np.concatenate(store.clip_windows))[:, 0]
    return dataset, store, originals


def maker(dataset, store, seed=0, **kw):
    return BatchMaker(dataset, store, AUDIO, torch.Generator().manual_seed(seed), **kw)


def caption_of(bm: BatchMaker, row) -> str:
    return bm.captions[int(row)]


def expected_same(bm, draw, audio_tags):
    return np.array(
        [[CAPTION_TAGS[caption_of(bm, r)] <= tags for r in draw.captions] for tags in audio_tags]
    )


ALL = np.arange(8)


def test_same_mask_is_caption_tags_within_clip_tags(tagged):
    dataset, store, _ = tagged
    bm = maker(dataset, store)
    seen = set()
    for _ in range(12):
        draw = bm.draw(ALL)
        assert draw.logmel.shape == (8, 1, *store.logmel(np.array([0])).shape[2:])
        assert draw.same.shape == (8, 8) and draw.same.dtype == torch.bool
        drawn = [caption_of(bm, r) for r in draw.captions]
        for clip, caption in zip(dataset.clips, drawn, strict=True):
            assert caption in clip.captions  # a clip draws one of its own captions
        tags = [set(c.tags) for c in dataset.clips]
        assert np.array_equal(draw.same.numpy(), expected_same(bm, draw, tags))
        assert draw.same.diagonal().all()
        seen.update(drawn)
    assert seen == {c for clip in dataset.clips for c in clip.captions}


def test_a_general_caption_matches_every_clip_carrying_its_tag(tagged):
    dataset, store, _ = tagged
    bm = maker(dataset, store)
    howl_drew = set()
    for _ in range(30):
        draw = bm.draw(ALL)
        captions = [caption_of(bm, r) for r in draw.captions]
        howl_drew.add(captions[2])
        if captions[2] == "a dog":  # the howl drew the general caption
            assert draw.same[:, 2].tolist() == [True, True, True] + [False] * 5
        if captions[2] == "A dog howls":
            assert draw.same[:, 2].tolist() == [False, False, True] + [False] * 5
        if captions[0] == "A dog barks":
            assert draw.same[:, 0].tolist() == [True, True] + [False] * 6
    assert howl_drew == {"a dog", "A dog howls"}  # both cases came up


def test_same_mask_for_plain_labels_is_label_equality(tagged, tmp_path):
    dataset, store, _ = tagged
    plain = CaptionDataset(
        "plain",
        "train",
        tuple(Clip(c.key, c.path, c.captions, c.label) for c in dataset.clips),
    )
    bm = maker(plain, store)
    labels = np.array([c.label for c in plain.clips])
    for _ in range(5):
        draw = bm.draw(ALL)
        assert np.array_equal(draw.same.numpy(), labels[:, None] == labels[None, :])
    order = np.array([3, 0, 5, 4])
    draw = bm.draw(order)
    assert np.array_equal(draw.same.numpy(), labels[order][:, None] == labels[order][None, :])


def test_same_mask_for_unlabelled_clips_is_the_identity(tagged):
    dataset, store, _ = tagged
    bare = CaptionDataset(
        "bare", "train", tuple(Clip(c.key, c.path, c.captions) for c in dataset.clips)
    )
    bm = maker(bare, store)
    for _ in range(3):
        assert torch.equal(bm.draw(ALL).same, torch.eye(8, dtype=torch.bool))


def test_mixing_gives_two_sound_captions_and_masks(tagged):
    dataset, store, originals = tagged
    bm = maker(dataset, store, mixtures=MIXTURES, mix_prob=1.0)
    mixable = {DOG, SIREN, HUM}
    assert sorted(bm.mixable.tolist()) == [0, 1, 3, 4, 5, 6]
    mixture_text = {c for c, _ in MIXTURES}
    n_mixed = 0
    for _ in range(10):
        draw = bm.draw(ALL)
        x = draw.logmel[:, 0]
        captions = [caption_of(bm, r) for r in draw.captions]
        for i, (clip, caption) in enumerate(zip(dataset.clips, captions, strict=True)):
            if caption in mixture_text:
                n_mixed += 1
                tags = CAPTION_TAGS[caption]
                assert clip.label in tags and len(tags) == 2 and tags <= mixable
                partner = next(iter(tags - {clip.label}))
                # The audio now holds the partner too: its mask has the partner's tags.
                assert draw.same[i, i]
                partner_caption = {SIREN: "A siren wails", DOG: "A dog barks", HUM: "A hum"}
                rows = [j for j, c in enumerate(captions) if c == partner_caption[partner]]
                assert all(draw.same[i, j] for j in rows)
                # A power sum only adds: no bin is quieter than before, and some are louder.
                assert (x[i] >= originals[i] - 1e-3).all()
                assert (x[i] > originals[i] + 0.1).any()
            else:
                assert caption in clip.captions
                assert torch.equal(x[i], originals[i])  # nothing else touches the audio
            if clip.label not in mixable:  # the howl and the silence are never mixed
                assert caption in clip.captions
        # A mixed item's audio has its partner's tags too ("dog" with a bark), so only a clip
        # mixed with that very pair matches a mixture caption.
        audio_tags = [
            set(clip.tags).union(*(LABEL_TAGS[t] for t in CAPTION_TAGS[own]))
            if own in mixture_text
            else set(clip.tags)
            for clip, own in zip(dataset.clips, captions, strict=True)
        ]
        assert np.array_equal(draw.same.numpy(), expected_same(bm, draw, audio_tags))
    assert n_mixed >= 20  # six mixable clips, partners of another label most of the time


def test_mix_prob_zero_never_mixes(tagged):
    dataset, store, originals = tagged
    bm = maker(dataset, store, mixtures=MIXTURES, mix_prob=0.0)
    for _ in range(5):
        draw = bm.draw(ALL)
        assert torch.equal(draw.logmel[:, 0], originals)
        assert all(
            caption_of(bm, r) in clip.captions
            for r, clip in zip(draw.captions, dataset.clips, strict=True)
        )


def test_gain_stays_within_bounds_and_respects_the_floor(tagged):
    dataset, store, originals = tagged
    bm = maker(dataset, store, gain_db=6.0)
    gains = []
    for _ in range(10):
        x = bm.draw(ALL).logmel[:, 0]
        assert (x >= DB_FLOOR).all()
        for i in range(7):  # the sounding clips: one constant offset over every bin
            diff = x[i] - originals[i]
            assert diff.max() - diff.min() < 1e-3
            assert -6.0 - 1e-4 <= float(diff.mean()) <= 6.0 + 1e-4
            gains.append(float(diff.mean()))
        # Silence sits at the floor: a cut stays there, a boost lifts it evenly.
        quiet = x[7]
        assert ((originals[7] - DB_FLOOR).abs() < 1e-4).all()
        assert quiet.max() - quiet.min() < 1e-4 and float(quiet.min()) >= DB_FLOOR
    assert min(gains) < -2 and max(gains) > 2  # the range is used, both ways


def test_time_shift_is_a_circular_roll(tagged):
    dataset, store, originals = tagged
    bm = maker(dataset, store, time_shift=True)
    shifts = set()
    frames = originals.shape[1]
    for _ in range(4):
        x = bm.draw(ALL).logmel[:, 0]
        for i in range(7):
            matches = [
                s for s in range(frames) if torch.equal(torch.roll(originals[i], s, 0), x[i])
            ]
            assert matches, i
            shifts.add(matches[0])
            # The same multiset of frames: sort the rows and compare.
            assert torch.equal(
                torch.sort(x[i].sum(1)).values, torch.sort(originals[i].sum(1)).values
            )
    assert len(shifts) > 3


def test_frequency_shift_and_filter_change_the_spectrum_not_the_frames(tagged):
    dataset, store, originals = tagged
    shifted = maker(dataset, store, freq_shift=2).draw(ALL).logmel[:, 0]
    for i in range(8):
        bins = originals.shape[2]
        options = [
            originals[i][:, (torch.arange(bins) - s).clamp(0, bins - 1)] for s in range(-2, 3)
        ]
        assert any(torch.equal(shifted[i], o) for o in options), i
    filtered = maker(dataset, store, filter_db=6.0).draw(ALL).logmel[:, 0]
    curve = filtered[:7] - originals[:7]  # sounding clips: one curve, the same in every frame
    assert (curve - curve[:, :1]).abs().max() < 1e-3
    assert 0 < curve.abs().max() <= 6.0 + 1e-3
    assert float(filtered.min()) >= DB_FLOOR  # a cut never goes below the frontend's floor
    # Off, they draw nothing: a run without them replays the draws it made before they existed.
    plain, off = (
        maker(dataset, store, gain_db=6.0),
        maker(dataset, store, gain_db=6.0, freq_shift=0),
    )
    assert torch.equal(plain.draw(ALL).logmel, off.draw(ALL).logmel)


def test_noise_lowers_nothing_and_changes_the_items(tagged):
    dataset, store, originals = tagged
    bm = maker(dataset, store, noise_prob=1.0)
    assert bm.noise is not None and bm.noise.shape[1:] == originals.shape[1:]
    for _ in range(3):
        x = bm.draw(ALL).logmel[:, 0]
        assert torch.isfinite(x).all()
        assert (x >= originals - 1e-3).all()
        for i in range(7):  # every sounding clip (noise under silence may be below 0.01 dB)
            assert (x[i] > originals[i] + 1e-2).any(), i
    assert maker(dataset, store, noise_prob=0.0).noise is None


def test_noise_sits_10_to_30_db_below_the_clip(tagged):
    dataset, store, originals = tagged
    bm = maker(dataset, store, noise_prob=1.0)
    x = bm.draw(ALL).logmel[:, 0]
    # Added power over own power: 10^(-30/10) to 10^(-10/10) of the clip's mean power.
    added = 10 ** (mean_power_db(x.double()) / 10) - 10 ** (mean_power_db(originals.double()) / 10)
    ratio_db = 10 * torch.log10(added[:7] / 10 ** (mean_power_db(originals[:7].double()) / 10))
    assert ((ratio_db > -30.5) & (ratio_db < -9.5)).all(), ratio_db


def test_same_seed_same_draws(tagged):
    dataset, store, _ = tagged
    settings = dict(
        mixtures=MIXTURES,
        mix_prob=0.5,
        gain_db=6.0,
        time_shift=True,
        noise_prob=0.5,
        freq_shift=2,
        filter_db=6.0,
    )
    a, b = maker(dataset, store, seed=7, **settings), maker(dataset, store, seed=7, **settings)
    c = maker(dataset, store, seed=8, **settings)
    differs = False
    for _ in range(4):
        da, db, dc = a.draw(ALL), b.draw(ALL), c.draw(ALL)
        assert torch.equal(da.logmel, db.logmel)
        assert np.array_equal(da.captions, db.captions)
        assert torch.equal(da.same, db.same)
        differs |= not torch.equal(da.logmel, dc.logmel)
    assert differs


def test_caption_bank_holds_each_pair_once(tagged):
    dataset, store, _ = tagged
    bm = maker(dataset, store, mixtures=MIXTURES, mix_prob=1.0)
    expected = {
        (c, frozenset(t))
        for clip in dataset.clips
        for c, t in zip(clip.captions, clip.caption_tags, strict=True)
    } | set(MIXTURES)
    assert len(bm.captions) == len(expected)
    assert set(bm.captions) == {c for c, _ in expected}
    for i, clip in enumerate(dataset.clips):
        assert [bm.captions[r] for r in bm.clip_captions[i]] == list(clip.captions)


# --- a tiny recipe trains end to end --------------------------------------------------------

TRAIN_RECIPE = """
root = "data"
val_captions = 3

[templates]
np = ["{np}", "the sound of {np}"]
s = ["{s}", "{s} nearby"]
mixture = ["{s1} while {s2}", "{np1} and {np2}"]

[[source]]
name = "synth"
folder = "synth"
train = "fold=1"
test = "fold=2"
val = { group = "file", fraction = 0.3 }
weight = 2.0

[[source]]
name = "extra"
folder = "extra"
weight = 0.5
tags = ["noisy"]

[tags]
noisy = ["a noisy recording"]
machine = ["a machine"]

[labels.low_hum]
np = ["a low hum"]
s = ["something hums"]
tags = ["machine"]
mix = true
queries = ["a deep droning tone", "a bass drone"]

[labels.high_whistle]
np = ["a high whistle"]
s = ["someone whistles"]
mix = true
queries = ["a shrill piercing tone"]

[labels.static_noise]
np = ["static noise"]
s = ["static hisses"]
mix = true
queries = ["white noise hissing"]

[labels.buzz]
np = ["a buzz"]
s = ["something buzzes"]
"""


def write_train_recipe(root: Path) -> Path:
    data = root / "data"
    write_labels_dataset(data / "synth", per_class={"1": 4, "2": 2}, seconds=1.0)
    extra = data / "extra"
    extra.mkdir(parents=True)
    rows = ["file,label"]
    for i in range(3):
        write_noise(extra / f"buzz-{i}.wav", 1.0, SR, seed=i, level=0.05)
        rows.append(f"buzz-{i}.wav,buzz")
    (extra / "labels.csv").write_text("\n".join(rows) + "\n")
    path = root / "recipe.toml"
    path.write_text(TRAIN_RECIPE)
    return path


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory, tiny_text_dir):
    root = tmp_path_factory.mktemp("recipe-run")
    path = write_train_recipe(root)
    cfg = recipe_settings(path, root / "model", tiny_text_dir)
    trainer = Trainer(cfg)
    return path, trainer, trainer.fit()


def recipe_settings(path: Path, out: Path, text_dir: Path, **over) -> TrainConfig:
    base = dict(
        dataset=str(path),
        train_split="train",
        val_split="val",
        encoder="cnn10",
        widths=(4, 8, 8, 16),
        embed_dim=16,
        joint_dim=8,
        text_model=str(text_dir),
        window_s=1.0,
        hop_s=1.0,
        epochs=2,
        steps_per_epoch=2,
        batch_size=4,
        warmup_epochs=1,
        mix_prob=0.5,
        gain_db=6.0,
        time_shift=True,
        noise_prob=0.5,
        freq_shift=2,
        filter_db=6.0,
        out=str(out),
        cache_dir=str(out.parent / "cache"),
        progress=False,
        patience=10,
    )
    base.update(over)
    return load_train_config(None, base)


def test_a_recipe_run_with_every_augmentation_writes_a_model(recipe_run):
    _, trainer, result = recipe_run
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert all(np.isfinite(h["loss"]) and h["loss"] > 0 for h in result.history)
    model = load_model(result.out)
    assert model.config.joint_dim == 8 and model.config.audio.window_s == 1.0
    config = json.loads((result.out / "train_config.json").read_text())
    assert (config["mix_prob"], config["gain_db"], config["time_shift"], config["noise_prob"]) == (
        0.5,
        6.0,
        True,
        0.5,
    )
    assert (config["freq_shift"], config["filter_db"]) == (2, 6.0)
    assert (trainer.data.batches.freq_shift, trainer.data.batches.filter_db) == (2, 6.0)
    assert (result.out / "validation.json").is_file()
    # The recipe's mixtures and weights reached the batch maker and the sampler.
    assert trainer.data.batches.mixture_rows and trainer.data.batches.noise is not None
    assert trainer.data.draw_p is not None
    weights = {c.key.split("/", 1)[0]: c.weight for c in trainer.data.train_set.clips}
    assert weights == {"synth": 2.0, "extra": 0.5}
    p = trainer.data.draw_p.numpy()
    keys = [trainer.data.train_set.clips[c].key for c in trainer.data.train_clips]
    synth = [pi for pi, k in zip(p, keys, strict=True) if k.startswith("synth/")]
    extra = [pi for pi, k in zip(p, keys, strict=True) if k.startswith("extra/")]
    assert p.sum() == pytest.approx(1.0)
    assert synth[0] == pytest.approx(4 * extra[0])  # weight 2.0 against 0.5


def test_mix_prob_needs_a_recipe(tmp_path, tiny_text_dir):
    data = write_labels_dataset(tmp_path / "plain", per_class={"1": 2, "2": 1}, seconds=1.0)
    cfg = recipe_settings(
        data, tmp_path / "m", tiny_text_dir, train_split="fold=1", val_split="fold=2"
    )
    with pytest.raises(EarshotError, match=r"mix_prob > 0 needs a recipe dataset \(\.toml\)"):
        Trainer(cfg)
    with pytest.raises(EarshotError, match="needs a recipe"):
        mixture_captions_for(cfg.dataset)


@pytest.mark.parametrize(
    "bad",
    [
        {"mix_prob": -0.1},
        {"mix_prob": 1.5},
        {"noise_prob": 2.0},
        {"noise_prob": -1e-9},
        {"gain_db": -3.0},
    ],
)
def test_config_rejects_out_of_range_augmentation(bad):
    with pytest.raises(ConfigError, match=r"mix_prob and noise_prob must lie in \[0, 1\]"):
        TrainConfig(**bad)
    with pytest.raises(ConfigError):
        load_train_config(None, bad)


@pytest.mark.parametrize("bad", [{"freq_shift": -1}, {"filter_db": -0.5}])
def test_config_rejects_negative_spectral_augmentation(bad):
    with pytest.raises(ConfigError, match="freq_shift .mel bins. and filter_db .dB. must be >= 0"):
        TrainConfig(**bad)


def test_config_accepts_the_edges():
    cfg = TrainConfig(mix_prob=1.0, noise_prob=0.0, gain_db=0.0)
    assert (cfg.mix_prob, cfg.noise_prob, cfg.gain_db, cfg.time_shift) == (1.0, 0.0, 0.0, False)
    assert TrainConfig(mix_prob=0.0, noise_prob=1.0).noise_prob == 1.0


# --- each label's own captions (the class-caption loss) --------------------------------------


def test_each_label_owns_the_captions_that_match_it_alone(tagged):
    dataset, store, _ = tagged
    bm = maker(dataset, store, mixtures=MIXTURES, mix_prob=1.0)
    owned = {
        name: sorted(caption_of(bm, r) for r in rows)
        for name, rows in zip(bm.class_names, bm.class_rows, strict=True)
    }
    # "a dog" is a bark and a howl, mixtures are two labels: nobody owns them. "a machine"
    # only ever describes the hum clips, so it is the hum's.
    assert owned == {
        DOG: ["A dog barks"],
        HOWL: ["A dog howls"],
        HUM: ["A hum", "a machine"],
        "silence": ["Silence"],
        SIREN: ["A siren wails"],
    }
    seen = set()
    for _ in range(20):
        rows = bm.draw_class_captions()
        assert len(rows) == 5
        seen.add(caption_of(bm, rows[2]))
        assert all(r in own for r, own in zip(rows, bm.class_rows, strict=True))
    assert seen == {"A hum", "a machine"}


def test_class_targets_follow_the_audio_including_mixtures(tagged):
    dataset, store, _ = tagged
    bm = maker(dataset, store, mixtures=MIXTURES, mix_prob=1.0)
    labels = [c.label for c in dataset.clips]
    mixture_text = {c: t for c, t in MIXTURES}
    n_mixed = 0
    for _ in range(10):
        draw = bm.draw(ALL)
        rows = bm.draw_class_captions()
        held = bm.class_targets(draw.audio_tags, rows)
        assert held.shape == (8, 5) and held.dtype == bool
        for i, row in enumerate(draw.captions):
            caption = caption_of(bm, row)
            expected = set(mixture_text.get(caption, {labels[i]}))
            n_mixed += caption in mixture_text
            assert {bm.class_names[c] for c in np.flatnonzero(held[i])} == expected
    assert n_mixed > 0


def test_a_dataset_without_labels_owns_no_captions(tagged):
    dataset, store, _ = tagged
    bare = CaptionDataset(
        "bare", "train", tuple(Clip(c.key, c.path, c.captions) for c in dataset.clips)
    )
    bm = maker(bare, store)
    assert bm.class_names == [] and bm.class_rows == []


def test_class_loss_trains_a_recipe_and_is_refused_without_labels(tmp_path, tiny_text_dir):
    path = write_train_recipe(tmp_path)
    cfg = recipe_settings(path, tmp_path / "model", tiny_text_dir, class_loss=1.0, epochs=1)
    trainer = Trainer(cfg)
    assert trainer.data.batches.class_names == ["buzz", "high_whistle", "low_hum", "static_noise"]
    losses = [trainer.step(np.arange(4)) for _ in range(3)]
    assert all(np.isfinite(v) and v > 0 for v in losses)
    # The class term is in the loss: the same draw scores higher with it than without.
    with_class = Trainer(cfg)
    without = Trainer(recipe_settings(path, tmp_path / "m2", tiny_text_dir, epochs=1))
    assert with_class.step(np.arange(4)) > without.step(np.arange(4))
    # One label has nothing to tell apart: the setting is refused before training starts.
    data = write_labels_dataset(tmp_path / "one", per_class={"1": 2, "2": 1}, seconds=1.0)
    table = (data / "labels.csv").read_text().splitlines()
    kept = [r for r in table if r.startswith("file,") or ",low_hum," in r]
    (data / "labels.csv").write_text("\n".join(kept) + "\n")
    one = recipe_settings(
        data,
        tmp_path / "m3",
        tiny_text_dir,
        train_split="fold=1",
        val_split="fold=2",
        mix_prob=0.0,
        class_loss=1.0,
    )
    with pytest.raises(EarshotError, match="class_loss needs labelled clips of at least 2"):
        Trainer(one)


def test_config_checks_the_class_loss_settings():
    with pytest.raises(ConfigError, match="class_loss must be >= 0"):
        TrainConfig(class_loss=-1.0)
    with pytest.raises(ConfigError, match="class_temperature > 0"):
        TrainConfig(class_temperature=0.0)
