"""`earshot search` cold from a shell: wall time per call, by phase, beside the old path.

Prints one JSON object on stdout (progress on stderr). It writes earshot's synthetic demo
sounds (`earshot.demo_sounds`, `--copies` seeded sets of 16 five-second WAVs) and indexes them
with the packaged compact model (what `EARSHOT_DEFAULT_MODEL=compact` picks), then times, each
in a fresh process, `--runs` times, alternating which goes first:

- `cli`: the whole command, as a user types it: `earshot search "QUERY" --db CAT --json` and
  `earshot search --like FILE --db CAT --json`, wall time from the parent. `new` is the
  command as it is; `old` is the same command with the model loaded as before this benchmark
  existed: the JointModel (torch) with its sentence-transformers text encoder, for --like too.
  `old/new` is the median of per-round ratios.
- `phases`: a driver doing what the command does, step by step, timing each: `import_s`
  (every module the path needs, earshot.cli included), `model_load_s` (the catalogue opened,
  the model resolved and loaded, the Searcher made), `encode_s` (the query vector: the text
  encoder, or decoding and embedding the example), `search_s` (the ANN, loaded from its file
  beside the catalogue, and the catalogue rows), and `startup_exit_s` (the interpreter's start
  and exit: the process's wall time less the four).
- `imports`: which heavy modules (torch, sentence-transformers, transformers, fastapi, h5py,
  faiss ...) a real `earshot search` run had imported when it finished, per kind of query.
- `reference`: `python -c pass` and `python -c "import torch"`, timed the same way: the floor
  of any command, and what the text path no longer pays.

All processes see a warm page cache (a warm-up run of each first; its .ann file is then
written), so these are CPU figures: on a busy 2-core machine each figure moves with the load,
`env.load_avg_1m_*` says how busy it was, and ratios move less. Target: the text search
≤ 1.5 s wall (`target`). A default run (7 rounds) takes 3-5 minutes on 2 busy cores, nearly
all of it in the old path; `--quick` (1 round, one set of sounds, no warm-up of the old path)
1-2 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_TEXT_S = 1.5
HEAVY = ("torch", "sentence_transformers", "transformers", "fastapi", "uvicorn", "h5py", "faiss")

# `earshot search` with the model loaded the old way: the full JointModel and its
# sentence-transformers encoder whatever the query (commands/search.py looks these up per call).
OLD_CLI = """
import sys
import earshot.api as api
full = api.resolve_model
api.resolve_model = lambda model, catalogue=None, **_: full(model, catalogue)
api.resolve_query_model = lambda model, catalogue=None, **_: full(model, catalogue)
from earshot.cli import main
sys.exit(main(sys.argv[1:]))
"""

# A real `earshot search` (new path), reporting the heavy modules it imported.
IMPORTS_CLI = """
import contextlib, io, json, sys
from earshot.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    code = main(sys.argv[1:])
print(json.dumps({"code": code, "loaded": [m for m in HEAVY if m in sys.modules]}))
""".replace("HEAVY", repr(HEAVY))

PHASES = """
import json, sys, time
t0 = time.perf_counter()
mode, kind, db, query = sys.argv[1:5]
import numpy as np
import earshot.cli
import earshot.index.ann
from earshot.api import resolve_model, resolve_query_model
from earshot.index.store import Catalogue
from earshot.search import Searcher
if mode == "old" or kind == "like":
    import torch
    import earshot.model.dual, earshot.audio.io, earshot.audio.windows
if mode == "old":
    import sentence_transformers
else:
    import tokenizers, threadpoolctl
    import earshot.encoders.lean_text, earshot.model.query
t1 = time.perf_counter()
cat = Catalogue(db)
if mode == "old":
    model = resolve_model(None, cat)
elif kind == "like":
    model = resolve_model(None, cat, with_text=False)
else:
    model = resolve_query_model(None, cat)
searcher = Searcher(cat, model)
t2 = time.perf_counter()
if kind == "text":
    vector = np.asarray(model.encode_text([query]).numpy()[0])
    own = None
else:
    vector = searcher.embed_example(query, None, None)
    own = cat.file_id_for_path(query)
t3 = time.perf_counter()
hits = searcher.search_vector(vector, 10, exclude_file=own)
t4 = time.perf_counter()
cat.close()
print(json.dumps({"import_s": t1 - t0, "model_load_s": t2 - t1, "encode_s": t3 - t2,
                  "search_s": t4 - t3, "inside_s": t4 - t0, "hits": len(hits),
                  "model": type(model).__name__}))
"""


def log(message: str) -> None:
    print(f"bench_cli: {message}", file=sys.stderr, flush=True)


def load_avg() -> float:
    return round(os.getloadavg()[0], 2)


def stats(values: list[float], digits: int = 3) -> dict:
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def timed(argv: list[str], env: dict) -> tuple[float, str]:
    t = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise RuntimeError(f"{argv[:4]}... exited {done.returncode}: {done.stderr[-2000:]}")
    return wall, done.stdout


def earshot_command() -> list[str]:
    script = Path(sys.executable).parent / "earshot"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from earshot.cli import main; sys.exit(main())"]


def build_catalogue(workdir: Path, copies: int) -> tuple[Path, Path, dict]:
    from earshot.demo_sounds import SOUNDS, write_demo_sounds
    from earshot.index.build import Indexer
    from earshot.index.store import Catalogue
    from earshot.model.io import load_model

    for i in range(copies):
        write_demo_sounds(workdir / "sounds" / f"set{i}", seed=i)
    db = workdir / "catalogue.sqlite"
    model = load_model("compact", with_text=False)
    with Catalogue(db) as cat:
        Indexer(cat, model, workers=0, progress=False).run([str(workdir / "sounds")])
        stats_ = cat.stats()
    example = workdir / "sounds" / "set0" / next(iter(SOUNDS))
    info = {
        "files": stats_["files_ok"],
        "segments": stats_["segments"],
        "model": "compact",
        "model_source": model.source,
        "sounds": "earshot.demo_sounds (synthetic)",
    }
    return db, example, info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=7, help="rounds of every timing (default 7)")
    ap.add_argument("--copies", type=int, default=2, help="seeded sets of the 16 demo sounds")
    ap.add_argument("--quick", action="store_true", help="1 round, 1 set: a smoke test")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()
    if args.quick:
        args.runs, args.copies = 1, 1

    import numpy as np

    from earshot.demo_sounds import SOUNDS

    env_vars = {**os.environ, "HF_HUB_OFFLINE": "1", "EARSHOT_DEFAULT_MODEL": "compact"}
    env_vars.pop("EARSHOT_MODEL", None)
    env = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpus": os.cpu_count(),
        "runs": args.runs,
        "quick": args.quick,
        "load_avg_1m_start": load_avg(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    try:
        from harness import git_revision

        env["git"] = git_revision()
    except ImportError:
        pass
    queries = [s.query for s in SOUNDS.values()]
    result: dict = {"benchmark": "cli", "env": env}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        log(f"indexing {16 * args.copies} synthetic sounds with the compact model")
        db, example, result["catalogue"] = build_catalogue(workdir, args.copies)
        new_cli = earshot_command()
        old_cli = [sys.executable, "-c", OLD_CLI]

        def cli_argv(cli: list[str], kind: str, r: int) -> list[str]:
            what = [queries[r % len(queries)]] if kind == "text" else ["--like", str(example)]
            return [*cli, "search", *what, "--db", str(db), "--json", "-k", "10"]

        def phases_argv(mode: str, kind: str, r: int) -> list[str]:
            what = queries[r % len(queries)] if kind == "text" else str(example)
            return [sys.executable, "-c", PHASES, mode, kind, str(db), what]

        log("warming up (this also writes the catalogue's .ann file)")
        for kind in ("text", "like"):
            # --quick warms only the new path: each old call costs 10-20 s of imports.
            for cli in (new_cli,) if args.quick else (new_cli, old_cli):
                timed(cli_argv(cli, kind, 0), env_vars)
        imports = {}
        for kind in ("text", "like"):
            _, out = timed([sys.executable, "-c", IMPORTS_CLI, *cli_argv([], kind, 0)], env_vars)
            imports[kind] = json.loads(out.splitlines()[-1])["loaded"]
        result["imports"] = imports

        walls: dict = {k: {"new": [], "old": []} for k in ("text", "like")}
        phases: dict = {k: {"new": [], "old": []} for k in ("text", "like")}
        reference: dict = {"python_startup_s": [], "torch_import_s": []}
        for r in range(args.runs):
            log(f"round {r + 1}/{args.runs} (load {load_avg()})")
            order = ("new", "old") if r % 2 == 0 else ("old", "new")
            for kind in ("text", "like"):
                for mode in order:
                    cli = new_cli if mode == "new" else old_cli
                    walls[kind][mode].append(timed(cli_argv(cli, kind, r), env_vars)[0])
                    wall, out = timed(phases_argv(mode, kind, r), env_vars)
                    entry = json.loads(out.splitlines()[-1])
                    entry["wall_s"] = wall
                    phases[kind][mode].append(entry)
            reference["python_startup_s"].append(timed([sys.executable, "-c", "pass"], env_vars)[0])
            reference["torch_import_s"].append(
                timed([sys.executable, "-c", "import torch"], env_vars)[0]
            )
        env["load_avg_1m_end"] = load_avg()

    result["cli"] = {
        kind: {
            "new": {"wall_s": stats(walls[kind]["new"])},
            "old": {"wall_s": stats(walls[kind]["old"])},
            "old/new": stats(
                [o / n for o, n in zip(walls[kind]["old"], walls[kind]["new"], strict=True)], 2
            ),
        }
        for kind in walls
    }
    result["phases"] = {
        kind: {mode: summarise(runs) for mode, runs in by_mode.items()}
        for kind, by_mode in phases.items()
    }
    result["reference"] = {k: stats(v) for k, v in reference.items()}
    median = result["cli"]["text"]["new"]["wall_s"]["median"]
    result["target"] = {"cli_text_s": TARGET_TEXT_S, "median_s": median, "met": median <= 1.5}
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


def summarise(runs: list[dict]) -> dict:
    out = {}
    for key in ("import_s", "model_load_s", "encode_s", "search_s"):
        out[key] = stats([r[key] for r in runs])
    out["startup_exit_s"] = stats([r["wall_s"] - r["inside_s"] for r in runs])
    out["wall_s"] = stats([r["wall_s"] for r in runs])
    out["model"] = runs[0]["model"]
    out["hits"] = runs[0]["hits"]
    return out


if __name__ == "__main__":
    main()
