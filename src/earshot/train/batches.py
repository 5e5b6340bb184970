"""Training batches: which window, which caption, what counts as a match, and augmentation.

Matching is by tags. Every clip has a set of tags and every caption has one; a caption matches
a clip when the clip's tags include all of the caption's. A clip without tags gets its own key
as its only tag (so only its own captions match); a labelled clip gets its label. Recipe clips
carry richer tags ("dog_bark", "dog", "animal"), so "a dog" matches a barking dog and a howling
one, and "a siren wails while a dog barks" matches only a mixture holding both.

Augmentation works on cached log-mel (dB), where it is cheap and exact enough:
- gain: a constant in dB added to every bin;
- time shift: a circular roll of the frames;
- frequency shift: the mel bins moved up or down a few places (roughly a pitch shift);
- filter: a random smooth equaliser curve in dB (another microphone or room), after the noise;
- background noise and two-clip mixtures: a sum of powers, 10·log10(10^(a/10) + 10^(b/10)),
  which is what the mel power of two independent sounds adds up to on average.
SpecAugment and mixup stay after bn0, in the training step, as PANNs does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from earshot.audio.features import LogMel, power_sum_db
from earshot.config import AudioConfig
from earshot.data.cache import FeatureStore
from earshot.data.datasets import CaptionDataset
from earshot.train import augment

DB_FLOOR = -100.0  # the frontend's floor: 10·log10(amin=1e-10)
_DB = math.log(10) / 10  # dB → natural log of power


def mean_power_db(x: torch.Tensor) -> torch.Tensor:
    """(batch, ...) log-mel → (batch,) the mean power over all bins, in dB."""
    flat = x.reshape(len(x), -1) * _DB
    return (torch.logsumexp(flat, dim=1) - math.log(flat.shape[1])) / _DB


def noise_bank(audio: AudioConfig, n: int = 12, seed: int = 0) -> torch.Tensor:
    """(n, frames, n_mels) log-mel of white, pink and brown noise, one window long each."""
    rng = np.random.default_rng(seed)
    length = audio.window_samples
    freqs = np.fft.rfftfreq(length, 1 / audio.sample_rate)
    freqs[0] = freqs[1]
    waves = []
    for i in range(n):
        colour = i % 3  # 0 white, 1 pink (1/f power), 2 brown (1/f²)
        spec = np.fft.rfft(rng.standard_normal(length)) / freqs ** (colour / 2)
        wave = np.fft.irfft(spec, n=length)
        waves.append(0.1 * wave / (np.abs(wave).max() + 1e-12))
    with torch.no_grad():
        mel = LogMel(audio)(torch.from_numpy(np.stack(waves).astype(np.float32)))
    return mel[:, 0]


@dataclass
class Draw:
    """One batch: log-mel (B,1,T,F), caption rows into the bank (B,), positives mask (B,B),
    and the tags each (possibly mixed) clip now holds (B, n_tags)."""

    logmel: torch.Tensor
    captions: np.ndarray
    same: torch.Tensor
    audio_tags: np.ndarray


class BatchMaker:
    def __init__(
        self,
        dataset: CaptionDataset,
        store: FeatureStore,
        audio: AudioConfig,
        generator: torch.Generator,
        mixtures: Sequence[tuple[str, frozenset[str]]] = (),
        mix_prob: float = 0.0,
        gain_db: float = 0.0,
        time_shift: bool = False,
        noise_prob: float = 0.0,
        freq_shift: int = 0,
        filter_db: float = 0.0,
    ):
        self.dataset, self.store, self.gen = dataset, store, generator
        self.freq_shift, self.filter_db = freq_shift, filter_db
        self.mix_prob, self.gain_db = mix_prob, gain_db
        self.time_shift, self.noise_prob = time_shift, noise_prob
        clip_tags = [_clip_tags(c) for c in dataset.clips]
        pairs = [
            (caption, tags)
            for clip, ctags in zip(dataset.clips, clip_tags, strict=True)
            for caption, tags in zip(clip.captions, _caption_tags(clip, ctags), strict=True)
        ]
        vocab = sorted({t for tags in clip_tags for t in tags} | {t for _, ts in pairs for t in ts})
        vocab = sorted(set(vocab) | {t for _, ts in mixtures for t in ts})
        self.tag_index = {t: i for i, t in enumerate(vocab)}
        self.clip_mask = self._masks(clip_tags)
        # The caption bank: each distinct (caption, tags) once; clips point into it.
        bank: dict[tuple[str, frozenset[str]], int] = {}
        for pair in [*pairs, *mixtures]:
            bank.setdefault(pair, len(bank))
        self.captions = [c for c, _ in bank]
        self.caption_mask = self._masks([t for _, t in bank])
        rows, start = [], 0
        for clip in dataset.clips:
            rows.append(np.array([bank[p] for p in pairs[start : start + len(clip.captions)]]))
            start += len(clip.captions)
        self.clip_captions = rows
        self.mixture_rows: dict[frozenset[str], np.ndarray] = {}
        for caption, tags in mixtures:
            self.mixture_rows.setdefault(tags, []).append(bank[(caption, tags)])
        self.mixture_rows = {k: np.array(v) for k, v in self.mixture_rows.items()}
        labels = [c.label for c in dataset.clips]
        mixable = {t for pair in self.mixture_rows for t in pair}
        self.mixable = np.array(
            [i for i, lab in enumerate(labels) if lab in mixable and len(store.clip_windows[i])]
        )
        self.labels = labels
        self.noise = noise_bank(audio) if noise_prob > 0 else None
        self.class_names, self.class_rows = self._class_captions(clip_tags, [t for _, t in bank])

    def _class_captions(
        self, clip_tags: Sequence[frozenset[str]], bank_tags: Sequence[frozenset[str]]
    ) -> tuple[list[str], list[np.ndarray]]:
        """Each label's own captions: bank rows that match its clips and no other label's.

        "a dog barks" belongs to dog_bark; "a dog" (also a howl) and mixture captions belong to
        no single label. Labels without a caption of their own are left out.
        """
        by_tags: dict[frozenset[str], set[str]] = {}
        for clip, tags in zip(self.dataset.clips, clip_tags, strict=True):
            if clip.label is not None:
                by_tags.setdefault(tags, set()).add(str(clip.label))
        if not by_tags:
            return [], []
        sets = list(by_tags)
        set_mask = self._masks(sets)
        match = holds(set_mask, self.caption_mask).T  # (caption rows, tag sets)
        owners: dict[str, list[int]] = {}
        for r in range(len(bank_tags)):
            labels = set().union(*(by_tags[sets[k]] for k in np.flatnonzero(match[r])))
            if len(labels) == 1:
                owners.setdefault(labels.pop(), []).append(r)
        names = sorted(owners)
        return names, [np.array(owners[n]) for n in names]

    def draw_class_captions(self) -> np.ndarray:
        """(n_classes,) one random caption row of each label's own captions."""
        return np.array([rows[self._randint(len(rows))] for rows in self.class_rows])

    def class_targets(self, audio_tags: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(B, n_classes) bool: clip i holds every tag of caption rows[c] (a mixture, two)."""
        return holds(audio_tags, self.caption_mask[rows])

    def _masks(self, tag_sets: Sequence[frozenset[str]]) -> np.ndarray:
        mask = np.zeros((len(tag_sets), len(self.tag_index)), dtype=bool)
        for i, tags in enumerate(tag_sets):
            mask[i, [self.tag_index[t] for t in tags]] = True
        return mask

    def _randint(self, n: int) -> int:
        return int(torch.randint(n, (1,), generator=self.gen))

    def _uniform(self, n: int, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=self.gen)

    def draw(self, clips: np.ndarray) -> Draw:
        windows = self.store.clip_windows
        picks = np.array([windows[c][self._randint(len(windows[c]))] for c in clips])
        logmel = self.store.logmel(picks)[:, 0]  # (B, T, F)
        rows = np.array(
            [self.clip_captions[c][self._randint(len(self.clip_captions[c]))] for c in clips]
        )
        audio_mask = self.clip_mask[clips].copy()
        if self.mix_prob > 0 and len(self.mixable):
            logmel, rows = self._mix(clips, logmel, rows, audio_mask)
        if self.gain_db > 0:
            gain = self._uniform(len(clips), -self.gain_db, self.gain_db)
            logmel = (logmel + gain[:, None, None]).clamp(min=DB_FLOOR)
        if self.time_shift:
            frames = logmel.shape[1]
            shifts = torch.randint(frames, (len(clips),), generator=self.gen).tolist()
            logmel = torch.stack(
                [torch.roll(x, s, dims=0) for x, s in zip(logmel, shifts, strict=True)]
            )
        if self.freq_shift > 0:
            logmel = augment.frequency_shift(logmel, self.gen, self.freq_shift)
        if self.noise is not None:
            logmel = self._add_noise(logmel)
        if self.filter_db > 0:
            logmel = augment.filter_augment(logmel, self.gen, self.filter_db).clamp(min=DB_FLOOR)
        same = holds(audio_mask, self.caption_mask[rows])
        return Draw(logmel.unsqueeze(1), rows, torch.from_numpy(same), audio_mask)

    def _mix(self, clips, logmel, rows, audio_mask):
        chosen = torch.rand(len(clips), generator=self.gen) < self.mix_prob
        for i in np.flatnonzero(chosen.numpy()):
            own = self.labels[clips[i]]
            partner = int(self.mixable[self._randint(len(self.mixable))])
            key = frozenset([own, self.labels[partner]])
            if key not in self.mixture_rows:
                continue  # same label, or a label without mixture captions: leave it single
            windows = self.store.clip_windows[partner]
            other = self.store.logmel(np.array([windows[self._randint(len(windows))]]))[0, 0]
            # The partner sits 0-6 dB below the clip: both stay audible.
            level = float(self._uniform(1, -6.0, 0.0))
            logmel[i] = power_sum_db(logmel[i], other + level)
            options = self.mixture_rows[key]
            rows[i] = options[self._randint(len(options))]
            audio_mask[i] |= self.clip_mask[partner]
        return logmel, rows

    def _add_noise(self, logmel: torch.Tensor) -> torch.Tensor:
        chosen = torch.rand(len(logmel), generator=self.gen) < self.noise_prob
        which = torch.randint(len(self.noise), (len(logmel),), generator=self.gen)
        snr = self._uniform(len(logmel), 10.0, 30.0)
        noise = self.noise[which]
        offset = mean_power_db(logmel) - mean_power_db(noise) - snr
        noisy = power_sum_db(logmel, noise + offset[:, None, None])
        return torch.where(chosen[:, None, None], noisy, logmel)


def holds(audio_tags: np.ndarray, caption_tags: np.ndarray) -> np.ndarray:
    """(A, n_tags), (C, n_tags) bool → (A, C): audio a has every tag caption c asks for."""
    return ~(caption_tags[None, :, :] & ~audio_tags[:, None, :]).any(-1)


def _clip_tags(clip) -> frozenset[str]:
    if clip.tags:
        return clip.tags
    return frozenset([f"label:{clip.label}" if clip.label is not None else f"clip:{clip.key}"])


def _caption_tags(clip, clip_tags: frozenset[str]) -> list[frozenset[str]]:
    if clip.caption_tags:
        return list(clip.caption_tags)
    return [clip_tags] * len(clip.captions)
