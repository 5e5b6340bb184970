"""A small demo set of sounds that earshot synthesises itself: no recordings, nobody's licence.

`write_demo_sounds(folder)` writes one 5 s WAV per entry of `SOUNDS` (a siren, rain, a bird...)
and `sounds.csv` and `README.txt` saying that they are synthetic; numpy makes them from a seed,
so one seed writes byte-identical files. They are caricatures, made to give the demo something
to find, not a benchmark: a model trained on recordings recognises some and misses others.
"""

from __future__ import annotations

import csv
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from earshot.fsutil import atomic_open, atomic_path, atomic_write_text

SAMPLE_RATE = 32_000
SECONDS = 5.0
PEAK = 0.6
Synth = Callable[[np.ndarray, np.random.Generator], np.ndarray]  # (frames,) times -> (frames,)


@dataclass(frozen=True)
class DemoSound:
    file: str  # the WAV's name in the folder
    query: str  # a search that describes it
    description: str  # what was synthesised, for sounds.csv (the synth's docstring)
    synth: Synth


SOUNDS: dict[str, DemoSound] = {}  # file name -> sound, in the order they are defined


def _sound(file: str, query: str) -> Callable[[Synth], Synth]:
    def register(synth: Synth) -> Synth:
        SOUNDS[file] = DemoSound(file, query, (synth.__doc__ or "").strip(), synth)
        return synth

    return register


def _noise(n: int, rng: np.random.Generator, lo: float, hi: float, tilt: float = 0.0):
    """Gaussian noise band-passed to lo..hi Hz by FFT, its spectrum tilted by f**tilt."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    shape = ((f >= lo) & (f <= hi)) * np.maximum(f, 1.0) ** tilt
    out = np.fft.irfft(spec * shape, n)
    return out / (np.abs(out).max() + 1e-12)


def _bursts(t: np.ndarray, onsets, decay_s: float) -> np.ndarray:
    """Exponentially decaying hits from each onset (seconds), cut at 12 time constants."""
    env = np.zeros_like(t)
    for onset in onsets:
        lo = int(np.searchsorted(t, onset))
        hi = min(len(t), lo + int(12 * decay_s * SAMPLE_RATE))
        env[lo:hi] += np.exp(-(t[lo:hi] - onset) / decay_s)
    return env


def _tone(t: np.ndarray, f0: float, partials=(1.0,)) -> np.ndarray:
    return sum(a * np.sin(2 * np.pi * f0 * (k + 1) * t) for k, a in enumerate(partials))


@_sound("siren.wav", "a siren wailing")
def _siren(t, rng):
    """A tone wailing between 600 and 1,400 Hz every 2 s."""
    f = 1000 + 400 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f) / SAMPLE_RATE
    return np.sin(phase) + 0.3 * np.sin(2 * phase) + 0.1 * np.sin(3 * phase)


@_sound("clock-ticking.wav", "a clock ticking")
def _clock(t, rng):
    """Alternating high and low clicks, two a second."""
    ticks = np.arange(0.1, SECONDS, 0.5)
    click = _noise(len(t), rng, 2000, 6000) * _bursts(t, ticks[::2], 0.004)
    tock = _noise(len(t), rng, 800, 3000) * _bursts(t, ticks[1::2], 0.006)
    return click + 0.8 * tock


@_sound("rain.wav", "rain falling")
def _rain(t, rng):
    """Broadband noise with 400 random drop clicks."""
    drops = rng.uniform(0, SECONDS, 400)
    patter = _noise(len(t), rng, 1000, 12000) * _bursts(t, drops, 0.002)
    return 0.6 * _noise(len(t), rng, 200, 14000, tilt=-0.5) + patter


@_sound("wind.wav", "wind blowing")
def _wind(t, rng):
    """Low-passed noise swelling in slow gusts."""
    gust = 0.6 + 0.4 * np.sin(2 * np.pi * 0.23 * t + rng.uniform(0, 6)) ** 2
    return gust * _noise(len(t), rng, 80, 1500, tilt=-1.0)


@_sound("ocean-waves.wav", "waves on a beach")
def _waves(t, rng):
    """Noise that swells and draws back every 2.5 s."""
    swell = np.sin(np.pi * t / 2.5) ** 4
    return swell * _noise(len(t), rng, 100, 8000, tilt=-0.7) + 0.05 * _noise(len(t), rng, 50, 400)


@_sound("alarm-beeping.wav", "an alarm beeping")
def _alarm(t, rng):
    """A 2 kHz beep four times a second."""
    on = (t % 0.25) < 0.12
    return on * _tone(t, 2000, (1.0, 0.0, 0.3))


@_sound("dial-tone.wav", "a telephone dial tone")
def _dial_tone(t, rng):
    """350 Hz and 440 Hz together, steady."""
    return _tone(t, 350) + _tone(t, 440)


@_sound("bird-chirp.wav", "a bird chirping")
def _bird(t, rng):
    """Quick trilled whistles around 3.5 kHz (frequency-modulated)."""
    out = np.zeros_like(t)
    calls = np.arange(0.2, SECONDS - 0.3, 0.6)
    for onset in calls + rng.uniform(0, 0.1, len(calls)):
        span = (t >= onset) & (t < onset + 0.15)
        u = (t[span] - onset) / 0.15
        f = 3500 + 1500 * np.sin(2 * np.pi * 3 * u) + 800 * u
        phase = 2 * np.pi * np.cumsum(f) / SAMPLE_RATE
        out[span] = np.sin(phase) * np.sin(np.pi * u)
    return out


@_sound("engine-hum.wav", "an engine idling")
def _engine(t, rng):
    """Harmonics of 32 Hz throbbing 8 times a second."""
    hum = _tone(t, 32, (1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2, 0.15))
    throb = 1 + 0.3 * np.sin(2 * np.pi * 8 * t)  # cylinders firing
    return hum * throb + 0.2 * _noise(len(t), rng, 30, 800)


@_sound("footsteps.wav", "footsteps")
def _footsteps(t, rng):
    """Muffled thuds of filtered noise, about two a second."""
    steps = np.arange(0.2, SECONDS - 0.2, 0.55)
    steps = steps + rng.uniform(-0.03, 0.03, len(steps))
    return _noise(len(t), rng, 60, 2500, tilt=-0.5) * _bursts(t, steps, 0.03)


@_sound("drum-beat.wav", "a drum beat")
def _drums(t, rng):
    """Kick, snare and hi-hat at 100 bpm."""
    beat = 60 / 100
    kick_at = np.arange(0, SECONDS, beat * 2)
    snare_at = kick_at + beat
    hat_at = np.arange(0, SECONDS, beat / 2)
    kick_f = 50 + 100 * _bursts(t, kick_at, 0.03)
    kick = np.sin(2 * np.pi * np.cumsum(kick_f) / SAMPLE_RATE) * _bursts(t, kick_at, 0.15)
    snare = _noise(len(t), rng, 200, 8000) * _bursts(t, snare_at, 0.07)
    hat = _noise(len(t), rng, 7000, 15000) * _bursts(t, hat_at, 0.015)
    return kick + 0.7 * snare + 0.3 * hat


@_sound("piano-chords.wav", "piano chords")
def _piano(t, rng):
    """C, F, G, C chords of decaying harmonic tones."""
    out = np.zeros_like(t)
    c, f, g = (261.6, 329.6, 392.0), (349.2, 440.0, 523.3), (392.0, 493.9, 587.3)
    for i, chord in enumerate((c, f, g, c)):  # each struck and left to ring
        onset = 1.2 * i
        env = _bursts(t, [onset], 0.8) * (t < onset + 1.2)
        for note in chord:
            out += env * _tone(t - onset, note, (1.0, 0.5, 0.25, 0.12, 0.06))
    return out


@_sound("doorbell.wav", "a doorbell ringing")
def _doorbell(t, rng):
    """Ding-dong: two struck bell tones, E then C."""
    bell = (1.0, 2.76, 5.4)  # a struck bar's inharmonic partials
    ding = sum(np.sin(2 * np.pi * 659 * r * t) / (k + 1) for k, r in enumerate(bell))
    dong = sum(np.sin(2 * np.pi * 523 * r * t) / (k + 1) for k, r in enumerate(bell))
    return ding * _bursts(t, [0.3], 0.6) * (t < 1.0) + dong * _bursts(t, [1.0], 1.2)


@_sound("car-horn.wav", "a car horn honking")
def _car_horn(t, rng):
    """Two blasts of buzzy 400 + 500 Hz tones."""
    on = ((t > 0.5) & (t < 1.3)) | ((t > 1.7) & (t < 3.2))
    partials = (1.0, 0.7, 0.5, 0.35, 0.25, 0.15)
    return on * (_tone(t, 400, partials) + _tone(t, 500, partials))


@_sound("heartbeat.wav", "a heartbeat")
def _heartbeat(t, rng):
    """Low lub-dub thumps at 70 beats a minute."""
    lub = np.arange(0.3, SECONDS, 60 / 70)
    thump = _bursts(t, lub, 0.05) + 0.7 * _bursts(t, lub + 0.25, 0.04)
    return _noise(len(t), rng, 20, 150) * thump


@_sound("water-dripping.wav", "water dripping")
def _dripping(t, rng):
    """Short rising-pitch blips, one every 0.7 s or so."""
    out = np.zeros_like(t)
    drops = np.arange(0.3, SECONDS - 0.3, 0.7)
    for onset in drops + rng.uniform(0, 0.2, len(drops)):
        span = (t >= onset) & (t < onset + 0.06)
        u = t[span] - onset
        f = 800 + 20000 * u  # a drop's pitch rises as its bubble closes
        out[span] = np.sin(2 * np.pi * np.cumsum(f) / SAMPLE_RATE) * np.exp(-u / 0.015)
    return out


README = """\
These sounds are SYNTHETIC. earshot made them itself (earshot.demo_sounds, seed {seed}) from
sine waves, filtered noise and envelopes: none of them is a recording, and none comes from
anyone else. sounds.csv lists what each file is. `make demo` indexes this folder when it has
no real audio to index; regenerate it with earshot.demo_sounds.write_demo_sounds(folder).
"""


def synthesise(sound: DemoSound, seed: int = 0) -> np.ndarray:
    """One sound's samples: (frames,) float32, peak PEAK, faded in and out over 10 ms."""
    t = np.arange(int(SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
    # Each sound draws from its own stream, keyed by its name: adding one changes no other.
    x = sound.synth(t, np.random.default_rng([seed, zlib.crc32(sound.file.encode())]))
    x = x * np.minimum(1.0, np.minimum(t, SECONDS - t) / 0.01)
    return (PEAK * x / np.abs(x).max()).astype(np.float32)


def write_demo_sounds(folder: str | Path, seed: int = 0) -> list[Path]:
    """Write every sound in SOUNDS as 16-bit mono WAV into `folder`, with sounds.csv and
    README.txt beside them; returns the WAVs' paths."""
    import soundfile as sf

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for sound in SOUNDS.values():
        path = folder / sound.file
        with atomic_path(path) as tmp:  # a watcher indexing the folder never sees half a WAV
            sf.write(tmp, synthesise(sound, seed), SAMPLE_RATE, subtype="PCM_16", format="WAV")
        paths.append(path)
    with atomic_open(folder / "sounds.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["file", "synthesised", "description", "query"])
        for sound in SOUNDS.values():
            out.writerow([sound.file, "yes, by earshot", sound.description, sound.query])
    atomic_write_text(folder / "README.txt", README.format(seed=seed))
    return paths
