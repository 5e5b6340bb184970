"""For tests of export and playback: recordings in the formats browsers cannot play, indexed.

`write_unplayable(base)` writes them into `base`/library/odd, where `build_library(base, ...)`,
called next, indexes them with its own recordings (one indexing run); it returns {name: path}.
"""

from __future__ import annotations

from pathlib import Path

# name → (seconds, rate, channels, soundfile format, subtype); PyAV writes the .wma.
UNPLAYABLE = {
    "gull é.aiff": (3.0, 48000, 2, "AIFF", "PCM_24"),
    "tern.aif": (2.0, 44100, 1, "AIFF", "PCM_16"),
    "heron.caf": (2.0, 44100, 2, "CAF", "PCM_16"),
    "stork.wav": (2.0, 22050, 1, "WAV", "DOUBLE"),
    "choir.wav": (2.0, 16000, 4, "WAV", "PCM_16"),  # plays; 4 channels
    "quad.caf": (1.0, 32000, 4, "CAF", "FLOAT"),  # transcoded to mono
    "crane.wma": (2.0, 44100, 2, None, None),
}


def write_unplayable(base: str | Path) -> dict[str, Path]:
    from earshot.testing.audio import write_av, write_tone

    folder = Path(base) / "library" / "odd"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for i, (name, (seconds, rate, channels, fmt, subtype)) in enumerate(UNPLAYABLE.items()):
        path = folder / name
        if fmt is None:
            write_av(path, seconds, rate, channels=channels, freq=600.0 + 100 * i, seed=10 + i)
        else:
            write_tone(
                path, seconds, rate, channels=channels, freq=600.0 + 100 * i,
                subtype=subtype, format=fmt, seed=10 + i,
            )  # fmt: skip
        paths[name] = path
    return paths
