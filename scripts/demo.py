"""The README's first command: index sample recordings and search them with earshot's CLI.

Indexes ../shared/data/librosa-examples (music, speech, a whale, a robin, a dog) where it is,
else two synthetic sounds, then runs text and example queries. It uses the model in
$EARSHOT_MODEL or runs/urbansound-small when one has been trained
(`earshot train --config configs/urbansound-small.toml`); otherwise an untrained, randomly
initialised CNN10, said loudly: then the hits show the pipeline working, not search quality.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "data" / "librosa-examples" / "audio"
TRAINED = REPO / "runs" / "urbansound-small"


def earshot(*args: str) -> None:
    cmd = [str(Path(sys.executable).parent / "earshot"), *args]
    print("$ earshot " + shlex.join(args), flush=True)
    subprocess.run(cmd, check=True)
    print(flush=True)


def main() -> None:
    tmp = tempfile.TemporaryDirectory()
    folder = SAMPLES
    if not SAMPLES.is_dir():
        from earshot.testing.audio import write_noise, write_tone

        print(f"({SAMPLES} not found: indexing synthetic sounds)\n")
        folder = Path(tmp.name) / "sounds"
        folder.mkdir()
        write_tone(folder / "tone.wav", 12.0, 44100)
        write_noise(folder / "noise.flac", 3.0, 22050)
    model_dir = os.environ.get("EARSHOT_MODEL") or (str(TRAINED) if TRAINED.is_dir() else None)
    model = ["--model", model_dir] if model_dir else ["--random-init", "--encoder", "cnn10"]
    if not model_dir:
        print(
            "No trained model yet: using UNTRAINED weights. For real results run\n"
            "  .venv/bin/earshot train --config configs/urbansound-small.toml\n"
            "and then `make demo` again.\n",
            flush=True,
        )
    db = str(Path(tmp.name) / "demo.sqlite")
    earshot("index", str(folder), "--db", db, *model)
    earshot("search", "a dog howls", "-k", "3", "--db", db, *model)
    earshot("search", "a bird chirps", "-k", "3", "--db", db, *model)
    example = next(iter(sorted(folder.glob("*.ogg"))) or sorted(folder.glob("*.*")))
    earshot("search", "--like", str(example), "-k", "3", "--db", db, *model)
    tmp.cleanup()


if __name__ == "__main__":
    main()
