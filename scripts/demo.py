"""The README's first command: index recordings and search them, as a user would.

What it indexes, in this order of choice (`choose_source`):
1. `--audio DIR` (`make demo AUDIO=DIR`): your own folder, with the general model where its
   backbone resolves and the offline one (its student, MODEL_CARD-offline.md) where it does
   not; searched for a few everyday sounds,
   or for the QUERY arguments given after the options.
2. The shared data folder beside the repository (development, CI), with the general model's
   backbone at hand (../shared/weights, the cache, or a download): the sfx pool's test split,
   everyday sounds the general model never trained on (recordings held out, and a tenth of the
   labels held out of training altogether), searched for "rain", "footsteps on gravel",
   "a door slams", "glass breaking"...
3. Neither: sixteen 5 s sounds that earshot synthesises itself (earshot.demo_sounds: a siren,
   rain, a bird, footsteps...; no recordings), written to `<earshot cache>/demo-sounds`, with
   the general model or, offline without its backbone, the offline one (saying so).
Either way it runs the CLI exactly as a user would type it. Set EARSHOT_MODEL to try another
model folder.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
RECIPE = REPO / "configs" / "general-data.toml"
QUERIES = {
    "shared": [
        "rain",
        "footsteps on gravel",
        "a door slams",
        "glass breaking",
        "a dog barking",
        "birds singing",
    ],
    "folder": ["speech", "music", "birds singing", "rain", "a dog barking", "a door slams"],
    # Each describes one of earshot.demo_sounds' files (its `query`).
    "synthetic": [
        "a siren wailing",
        "rain falling",
        "a bird chirping",
        "footsteps",
        "a drum beat",
        "an engine idling",
    ],
}
LIKE = {"synthetic": "bird-chirp.wav"}  # searched by example too


@dataclass(frozen=True)
class Source:
    kind: str  # "folder" (the user's), "shared" (the sfx pool's test split) or "synthetic"
    model: str  # what `earshot index --model` gets
    folder: Path | None = None  # the user's folder; the others are made at run time


def choose_source(
    audio: str | None,
    shared: Path,
    override: str | None,
    general_ok: Callable[[], bool],
    fallback: str = "offline",
) -> Source:
    """What the demo indexes, and with which model (`general_ok` is asked at most once);
    `fallback` names the model used where the general one's backbone does not resolve."""
    model = override or ("general" if general_ok() else fallback)
    if audio:
        return Source("folder", model, Path(audio).expanduser())
    if not override and model == "general" and (shared / "sfx-pool").is_dir():
        return Source("shared", "general")
    return Source("synthetic", model)


def earshot(*args: str) -> None:
    cmd = [str(Path(sys.executable).parent / "earshot"), *args]
    print("$ earshot " + shlex.join(args), flush=True)
    subprocess.run(cmd, check=True)
    print(flush=True)


def fallback_name() -> str:
    """The packaged model `default` falls back to here: `offline`, or `compact` without it."""
    from earshot.model.io import OFFLINE_DIR, fallback_model_dir

    return "offline" if fallback_model_dir() == OFFLINE_DIR else "compact"


def general_available() -> bool:
    """Whether `default` resolves to the general model here (it prints why not, once)."""
    from earshot.model.io import GENERAL_DIR, choose_default_model

    return choose_default_model() == GENERAL_DIR


def sfx_test_split(into: Path) -> Path:
    """Links to the sfx pool's test clips (the general recipe's split) in one folder."""
    import warnings

    from earshot.data.recipe import load_recipe

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        test = load_recipe(RECIPE).dataset("test")
    folder = into / "sfx-test"
    folder.mkdir()
    for clip in test.clips:
        if clip.key.startswith(("sfx/", "sfx-zeroshot/")):
            # By collection: file names repeat across the pool's collections.
            link = folder / clip.path.parent.name / clip.path.name
            link.parent.mkdir(exist_ok=True)
            if not link.exists():
                link.symlink_to(clip.path)
    return folder


def synthetic_sounds() -> Path:
    """earshot.demo_sounds written to <earshot cache>/demo-sounds (kept, so hits can be played)."""
    from earshot.demo_sounds import write_demo_sounds
    from earshot.weights import cache_root

    folder = cache_root() / "demo-sounds"
    paths = write_demo_sounds(folder)
    print(f"indexing {len(paths)} sounds that earshot synthesised itself, not recordings")
    print(f"({folder / 'sounds.csv'} says what each is; AUDIO=DIR indexes your own)\n")
    return folder


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--audio", metavar="DIR", help="index this folder (make demo AUDIO=DIR)")
    p.add_argument("queries", nargs="*", metavar="QUERY", help="search for these instead")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    source = choose_source(
        args.audio or None, SHARED, os.environ.get("EARSHOT_MODEL"), general_available,
        fallback_name(),
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "demo.sqlite")
        if source.kind == "folder":
            folder = source.folder
            if not folder.is_dir():
                sys.exit(f"no folder {folder}: AUDIO= (or --audio) names a folder of recordings")
            shown = str(folder)
        elif source.kind == "shared":
            folder = sfx_test_split(Path(tmp))
            n = sum(1 for _ in folder.glob("*/*"))
            print(f"indexing the sfx pool's test split ({n} clips)\n")
            shown = os.path.relpath(folder)
        else:
            folder = synthetic_sounds()
            shown = str(folder)
        earshot("index", shown, "--db", db, "--model", source.model)
        for query in args.queries or QUERIES[source.kind]:
            earshot("search", query, "-k", "3", "--db", db)
        if source.kind in LIKE and not args.queries:
            example = str(folder / LIKE[source.kind])
            earshot("search", "--like", example, "-k", "3", "--db", db)


if __name__ == "__main__":
    main()
