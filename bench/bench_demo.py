"""What the demo's searches find, model beside model: the figures the README and the model cards
give for `make demo`, regenerated.

Two sets, each indexed once per model with `earshot.Index`:
- `synthetic`: the sixteen 5 s sounds of `earshot.demo_sounds` (seed 0, what `make demo` writes
  with neither `../shared` nor an `AUDIO` folder). Each sound's own query (`DemoSound.query`)
  is searched by sound alone (`hybrid=False`: the files' names hold the queries' words) and the
  sound's rank among the sixteen kept; `first` counts the sounds ranked first, `demo_first`
  those of `scripts/demo.py`'s six synthetic queries.
- `sfx` (needs `../shared`): the sfx pool's test split (`configs/general-data.toml`, 1,163
  clips of recordings never trained on), searched for `scripts/demo.py`'s six queries; the
  top `--k` hits' labels, by sound alone (`--no-hybrid`) and as the demo searches (the
  default: `Searcher.hybrid_by_default` decides), with each hit's score (what ranks),
  similarity (the best window's cosine, what `earshot search` shows), band (what `make demo`'s
  `earshot search -k 3` shows: the weak tail after the last good hit folds) and tags.

Prints one JSON object, {"synthetic": {model: ...}, "sfx": {model: {query: ...}}}.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_demo.py                       # ~10 min
    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_demo.py --sets synthetic      # ~1 min
    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_demo.py --models offline,compact --sets sfx
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RECIPE = ROOT / "configs" / "general-data.toml"
SETS = ("synthetic", "sfx")


def log(*parts) -> None:
    print("bench_demo:", *parts, file=sys.stderr, flush=True)


@functools.cache
def demo_queries() -> dict[str, list[str]]:
    """scripts/demo.py's queries, by source kind (the script is not a package module)."""
    spec = importlib.util.spec_from_file_location("earshot_demo", ROOT / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module.QUERIES


def synthetic_ranks(model, folder: Path) -> dict:
    """Each demo sound's rank (1 = first) among the sixteen for its own query, by sound alone."""
    import earshot
    from earshot.demo_sounds import SOUNDS, write_demo_sounds

    paths = write_demo_sounds(folder)
    ranks = {}
    with earshot.Index(folder / "demo.sqlite", model=model) as idx:
        idx.add(paths)
        for sound in SOUNDS.values():
            hits = idx.search(sound.query, k=len(paths), hybrid=False)
            names = [Path(h.path).name for h in hits]
            ranks[sound.file] = names.index(sound.file) + 1 if sound.file in names else None
    by_query = {s.query: s.file for s in SOUNDS.values()}
    demo = [by_query[q] for q in demo_queries()["synthetic"]]
    return {
        "first": sorted(f for f, r in ranks.items() if r == 1),
        "of": len(ranks),
        "demo_first": [f for f in demo if ranks[f] == 1],
        "ranks": ranks,
    }


def sfx_test_clips() -> list:
    from earshot.data.recipe import load_recipe

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        test = load_recipe(RECIPE).dataset("test")
    return [c for c in test.clips if c.key.startswith(("sfx/", "sfx-zeroshot/"))]


def sfx_results(model, clips: list, folder: Path, k: int) -> dict:
    """The demo's six queries among the sfx test clips: the top k labels, by sound alone and
    with the default (hybrid where a query word picks files out by name)."""
    import earshot

    label_of = {str(c.path.resolve()): c.label for c in clips}
    out = {}
    with earshot.Index(folder / "demo.sqlite", model=model) as idx:
        idx.add([c.path for c in clips])
        for query in demo_queries()["shared"]:
            out[query] = {}
            for name, hybrid in (("sound", False), ("default", None)):
                hits = idx.search(query, k=k, hybrid=hybrid)
                out[query][name] = [
                    {
                        "label": label_of.get(str(Path(h.path).resolve()), "?"),
                        "file": Path(h.path).name,
                        "score": round(float(h.score), 3),  # what ranks (hybrid: RRF)
                        # what `earshot search` shows: the best window's cosine
                        "similarity": None
                        if h.similarity is None
                        else round(float(h.similarity), 3),
                        "band": h.band,  # `earshot search` folds the weak tail after the good
                        "by_name": h.by_name,  # good only by its name, not its sound
                        "tags": [[t, round(float(p), 2)] for t, p in (h.tags or [])[:2]],
                    }
                    for h in hits
                ]
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="general,offline,compact", help="comma-separated")
    p.add_argument("--sets", default="synthetic,sfx", help="comma-separated: synthetic, sfx")
    p.add_argument("--k", type=int, default=5, help="hits kept per sfx query")
    args = p.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    args.sets = [s for s in args.sets.split(",") if s]
    unknown = sorted(set(args.sets) - set(SETS))
    if unknown:
        p.error(f"unknown set(s) {', '.join(unknown)}: the sets are {', '.join(SETS)}")
    return args


def main(argv: list[str] | None = None) -> dict:
    from earshot.model.io import load_model, resolve_model_dir

    args = parse_args(argv)
    if "sfx" in args.sets and not (SHARED / "sfx-pool").is_dir():
        sys.exit(f"the sfx set needs {SHARED / 'sfx-pool'}: run with --sets synthetic")
    clips = sfx_test_clips() if "sfx" in args.sets else []
    result: dict = {name: {} for name in args.sets}
    for name in args.models:
        model = load_model(resolve_model_dir(name), lean_text=True)
        for which in args.sets:
            log(f"{which} with {name}")
            with tempfile.TemporaryDirectory() as tmp:
                if which == "synthetic":
                    result[which][name] = synthetic_ranks(model, Path(tmp))
                else:
                    result[which][name] = sfx_results(model, clips, Path(tmp), args.k)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
