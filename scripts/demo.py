"""The README's first command: index recordings and search them, as a user would.

With the shared data folder beside the repository (development, CI) and the general model's
backbone at hand (../shared/weights, the cache, or a download), it indexes the sfx pool's test
split: everyday sounds the general model never trained on (recordings held out, and a tenth of
the labels held out of training altogether), and searches them for "rain", "footsteps on gravel",
"a door slams", "glass breaking"... Without them, it falls back to the compact model, saying so,
and to the bundled demo recordings (`demo/audio`, credited in demo/CREDITS.md). Either way it
runs the CLI exactly as a user would type it. Set EARSHOT_MODEL to try another model folder.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "demo" / "audio"
SHARED = REPO.parent / "shared" / "data"
RECIPE = REPO / "configs" / "general-data.toml"
QUERIES = {
    "general": [
        "rain",
        "footsteps on gravel",
        "a door slams",
        "glass breaking",
        "a dog barking",
        "birds singing",
    ],
    "compact": [
        "a bird chirps",
        "a whale singing underwater",
        "a woman reading a story aloud",
        "a trumpet playing",
        "a string orchestra",
    ],
}


def earshot(*args: str) -> None:
    cmd = [str(Path(sys.executable).parent / "earshot"), *args]
    print("$ earshot " + shlex.join(args), flush=True)
    subprocess.run(cmd, check=True)
    print(flush=True)


def general_available() -> bool:
    """Whether `default` resolves to the general model here (it prints why not, once)."""
    from earshot.model.io import GENERAL_DIR, choose_default_model

    return choose_default_model() == GENERAL_DIR


def sfx_test_split(into: Path) -> Path:
    """Links to the sfx pool's test clips (the general recipe's split) in one folder."""
    import warnings

    from earshot.train.recipe import load_recipe

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        test = load_recipe(RECIPE).dataset("test")
    folder = into / "sfx-test"
    folder.mkdir()
    for clip in test.clips:
        if clip.key.startswith(("sfx/", "sfx-zeroshot/")):
            link = folder / clip.path.name
            if not link.exists():
                link.symlink_to(clip.path)
    return folder


def main() -> None:
    override = os.environ.get("EARSHOT_MODEL")
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "demo.sqlite")
        if not override and (SHARED / "sfx-pool").is_dir() and general_available():
            kind, folder, model = "general", sfx_test_split(Path(tmp)), ["--model", "general"]
            print(f"indexing the sfx pool's test split ({len(list(folder.iterdir()))} clips)\n")
        else:
            if not DEMO.is_dir():
                sys.exit(f"demo recordings not found in {DEMO}: run this from a clone of earshot")
            kind, folder = "compact", DEMO
            model = ["--model", override or "compact"]
        earshot("index", os.path.relpath(folder), "--db", db, *model)
        for query in QUERIES[kind]:
            earshot("search", query, "-k", "3", "--db", db)
        if kind == "compact":
            robin = next(DEMO.glob("456440_*robin*.ogg"))
            earshot("search", "--like", os.path.relpath(robin), "-k", "3", "--db", db)


if __name__ == "__main__":
    main()
