"""The README's first command: embed real recordings and a few sentences with earshot's CLI.

Uses the recordings in ../shared/data/librosa-examples where they are, else writes two synthetic
sounds. Until a trained model ships, it runs an untrained, randomly initialised CNN10 (said so
loudly): the vectors show the pipeline working end to end, not search quality.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "data" / "librosa-examples" / "audio"
PICKS = ["456440__inspectorj__bird-whistling-robin-single-13.ogg", "198-209-0000.ogg"]


def earshot(*args: str) -> None:
    cmd = [str(Path(sys.executable).parent / "earshot"), *args]
    print("$ earshot " + shlex.join(args), flush=True)
    subprocess.run(cmd, check=True)
    print(flush=True)


def main() -> None:
    files = [SAMPLES / name for name in PICKS if (SAMPLES / name).is_file()]
    tmp = tempfile.TemporaryDirectory()
    if not files:
        from earshot.testing.audio import write_noise, write_tone

        print(f"({SAMPLES} not found: using synthetic sounds)\n")
        files = [
            write_tone(Path(tmp.name) / "tone.wav", 12.0, 44100),
            write_noise(Path(tmp.name) / "noise.flac", 3.0, 22050),
        ]
    model = ["--random-init", "--encoder", "cnn10"]
    earshot("info", *model)
    earshot("embed", *model, "--audio", *map(str, files))
    earshot("embed", *model, "--text", "a bird sings", "a man reads a story aloud")
    tmp.cleanup()


if __name__ == "__main__":
    main()
