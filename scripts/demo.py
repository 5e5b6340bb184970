"""The README's first command: index the bundled demo recordings and search them.

Runs offline with the default model shipped inside the package: `earshot index` over
`demo/audio` (a few public-domain and CC BY recordings, credited in demo/CREDITS.md) into a
temporary catalogue, then text queries and a "more like this" query through the CLI, exactly
as a user would type them. Set EARSHOT_MODEL to try another model folder instead.
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
QUERIES = [
    "a bird chirps",
    "a whale singing underwater",
    "a woman reading a story aloud",
    "a trumpet playing",
    "a string orchestra",
]


def earshot(*args: str) -> None:
    cmd = [str(Path(sys.executable).parent / "earshot"), *args]
    print("$ earshot " + shlex.join(args), flush=True)
    subprocess.run(cmd, check=True)
    print(flush=True)


def main() -> None:
    if not DEMO.is_dir():
        sys.exit(f"demo recordings not found in {DEMO}: run this from a full clone of earshot")
    model = ["--model", os.environ["EARSHOT_MODEL"]] if os.environ.get("EARSHOT_MODEL") else []
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "demo.sqlite")
        earshot("index", os.path.relpath(DEMO), "--db", db, *model)
        for query in QUERIES:
            earshot("search", query, "-k", "3", "--db", db)
        robin = next(DEMO.glob("456440_*robin*.ogg"))
        earshot(
            "search",
            "--like",
            os.path.relpath(robin),
            "-k",
            "3",
            "--db",
            db,
        )


if __name__ == "__main__":
    main()
